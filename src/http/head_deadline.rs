//! The request-head deadline (`server.header_read_timeout_ms`): a
//! connection must deliver a whole request head within that time of being
//! ready for one (just opened, or done answering the request before). A
//! slow client (slowloris) and an idle keep-alive connection are closed
//! when it passes.
//!
//! hyper has this deadline too, but its timer boxes a new sleep for every
//! request (`TokioTimer::sleep_until`), an allocation per request on the
//! pixel path. This one keeps a single sleep per connection, inside the
//! connection's task, and resets it.
//!
//! One difference from hyper's: the deadline starts when the answer is
//! handed to hyper, not once hyper has written it, so a reader too slow to
//! take a large answer (the admin `/metrics`) within the timeout is cut
//! off. A pixel's answer fits the socket's buffer at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// Waiting for a head, with the deadline set.
const WAITING: u8 = 0;
/// A head arrived; its request is being answered: no deadline.
const ANSWERING: u8 = 1;
/// Answered: waiting for the next head, whose deadline is not yet set.
const ANSWERED: u8 = 2;

/// The connection's side of the deadline, told by its service when a head
/// has arrived and when its answer is done. (An atomic rather than a cell,
/// as hyper's service must be `Send`; only one thread ever touches it.)
#[derive(Clone)]
pub struct HeadClock(Arc<AtomicU8>);

impl Default for HeadClock {
    fn default() -> HeadClock {
        HeadClock::new()
    }
}

impl HeadClock {
    /// A new connection's clock, waiting for its first head.
    pub fn new() -> HeadClock {
        HeadClock(Arc::new(AtomicU8::new(WAITING)))
    }

    /// A head arrived (the service was called): the deadline is off.
    pub fn head_arrived(&self) {
        self.0.store(ANSWERING, Ordering::Relaxed);
    }

    /// The answer is handed to hyper: the next head's deadline starts.
    pub fn answered(&self) {
        self.0.store(ANSWERED, Ordering::Relaxed);
    }
}

/// How a connection ended.
#[derive(Debug)]
pub enum Ended {
    /// hyper ended it, cleanly or with its error.
    Served(hyper::Result<()>),
    /// No whole head within the deadline: closed.
    HeadTimedOut,
}

pin_project_lite::pin_project! {
    /// A connection's future, closed when a head does not arrive in time.
    pub struct HeadDeadline<C> {
        #[pin]
        connection: C,
        #[pin]
        deadline: Sleep,
        state: Arc<AtomicU8>,
        timeout: Duration,
    }
}

impl<C> HeadDeadline<C> {
    /// `connection`, whose first head must arrive within `timeout` from
    /// now, and each next one within `timeout` of its service telling
    /// `clock` the answer before it is done.
    pub fn new(connection: C, clock: &HeadClock, timeout: Duration) -> HeadDeadline<C> {
        HeadDeadline {
            connection,
            deadline: tokio::time::sleep(timeout),
            state: clock.0.clone(),
            timeout,
        }
    }
}

impl<C: Future<Output = hyper::Result<()>>> Future for HeadDeadline<C> {
    type Output = Ended;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Ended> {
        let mut this = self.project();
        if let Poll::Ready(served) = this.connection.poll(cx) {
            return Poll::Ready(Ended::Served(served));
        }
        // The service runs inside the connection's poll, so whatever it
        // told the clock is seen here, before the task sleeps.
        match this.state.load(Ordering::Relaxed) {
            ANSWERED => {
                let now = Instant::now();
                // A timeout too large to add is no deadline (as tokio's own
                // `sleep` takes it).
                let far = now + Duration::from_secs(30 * 365 * 86_400);
                let deadline = now.checked_add(*this.timeout).unwrap_or(far);
                this.deadline.as_mut().reset(deadline);
                this.state.store(WAITING, Ordering::Relaxed);
            }
            WAITING => {}
            _ => return Poll::Pending,
        }
        match this.deadline.poll(cx) {
            Poll::Ready(()) => Poll::Ready(Ended::HeadTimedOut),
            Poll::Pending => Poll::Pending,
        }
    }
}
