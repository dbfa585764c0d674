//! The accept loop: one task per connection, HTTP/1.1 with keep-alive, a
//! header read timeout, and graceful shutdown.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tracing::{info, warn};

use super::head_deadline::{Ended, HeadClock, HeadDeadline};
use super::no_store::NoStore;
use super::router::Role;
use super::App;
use crate::telemetry::RateLimit;

/// Connection limits, from `[server]`.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The whole request head must arrive within this.
    pub header_read_timeout: Duration,
    /// Largest request head buffered (at least 8192).
    pub max_header_bytes: usize,
    /// In-flight requests get this long after shutdown starts.
    pub shutdown_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
}

/// Counts an open connection; the count drops when the connection ends.
struct Open(Arc<AtomicUsize>, &'static str);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        crate::telemetry::metric::http_connections(self.1, -1.0);
    }
}

/// Why a connection was closed, as a refusal reason; None for an ordinary
/// end.
fn refusal(ended: &Ended) -> Option<&'static str> {
    match ended {
        Ended::HeadTimedOut => Some("header_timeout"),
        Ended::Served(Err(e)) if e.is_parse_too_large() => Some("head_too_large"),
        Ended::Served(Err(e)) if e.is_parse() => Some("malformed_request"),
        Ended::Served(_) => None,
    }
}

/// Runs a connection to its end, counting a refusal before the socket is
/// closed: whoever sees the close and then reads the metrics finds it.
async fn finish(connection: impl Future<Output = Ended>, open: Open) {
    let _open = open;
    tokio::pin!(connection);
    if let Some(reason) = refusal(&(&mut connection).await) {
        crate::telemetry::metric::http_refused(reason);
    }
}

/// The next connection; a failed accept (out of file descriptors and the
/// like) backs off briefly rather than spinning.
/// `log` keeps its lines to one a second (out of descriptors, every accept
/// fails at once); the rest are counted into the next.
async fn accept(
    listener: &TcpListener,
    name: &'static str,
    log: &RateLimit,
) -> (tokio::net::TcpStream, std::net::SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(a) => return a,
            Err(e) => {
                crate::telemetry::metric::http_refused("accept_failed");
                if let Some(suppressed) = log.check() {
                    warn!(listener = name, error = %e, suppressed, "accept failed (out of file descriptors?); backing off");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Open connections of one listener, against its cap.
struct Connections {
    open: Arc<AtomicUsize>,
    max: usize,
    name: &'static str,
}

impl Connections {
    fn new(max: usize, name: &'static str) -> Connections {
        Connections::counted_in(Arc::new(AtomicUsize::new(0)), max, name)
    }

    /// Counted in `open`, which other listeners of the same cap share (the
    /// serving threads' sockets: `max_connections` is the whole server's).
    fn counted_in(open: Arc<AtomicUsize>, max: usize, name: &'static str) -> Connections {
        Connections { open, max, name }
    }

    /// A guard counting `stream` as open, or `None` when the listener is at
    /// its cap: the stream then gets a short 503 and is closed, and the
    /// open ones are untouched.
    fn admit(&self, stream: tokio::net::TcpStream) -> Result<(Open, tokio::net::TcpStream), ()> {
        // Counted first, then checked: serving threads accepting at once
        // can never all pass a check made before any of them counted.
        if self.open.fetch_add(1, Ordering::Relaxed) >= self.max {
            self.open.fetch_sub(1, Ordering::Relaxed);
            crate::telemetry::metric::http_refused("too_many_connections");
            tokio::spawn(async move {
                let mut stream = stream;
                let _ = tokio::io::AsyncWriteExt::write_all(
                    &mut stream,
                    b"HTTP/1.1 503 Service Unavailable\r\nCache-Control: no-store\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                )
                .await;
            });
            return Err(());
        }
        crate::telemetry::metric::http_connections(self.name, 1.0);
        Ok((Open(self.open.clone(), self.name), stream))
    }
}

/// hyper's HTTP/1.1 settings for a listener with `limits`. The head's
/// deadline is [`HeadDeadline`]'s, not hyper's (which allocates a timer
/// per request).
fn http1(limits: &Limits) -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
}

/// Serves a small status listener (`pixeld attribute`'s `/readyz` and
/// `/metrics`) with the same header timeout, connection cap and accept
/// back-off as serve's listeners, answering each request with `answer`.
pub async fn run_status<F>(listener: TcpListener, limits: Limits, name: &'static str, answer: F)
where
    F: Fn(
            &hyper::Request<hyper::body::Incoming>,
        ) -> hyper::Response<http_body_util::Full<bytes::Bytes>>
        + Clone
        + Send
        + Sync
        + 'static,
{
    let builder = http1(&limits);
    let connections = Connections::new(limits.max_connections, name);
    let accept_log = RateLimit::new(1_000);
    loop {
        let (stream, _) = accept(&listener, name, &accept_log).await;
        let Ok((guard, stream)) = connections.admit(stream) else {
            continue;
        };
        let answer = answer.clone();
        let clock = HeadClock::new();
        let service_clock = clock.clone();
        let service = service_fn(move |req| {
            service_clock.head_arrived();
            let resp = answer(&req);
            service_clock.answered();
            async move { Ok::<_, std::convert::Infallible>(resp) }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let conn = HeadDeadline::new(conn, &clock, limits.header_read_timeout);
        tokio::spawn(finish(conn, guard));
    }
}

/// Serves until `shutdown` resolves, then stops accepting and lets in-flight
/// requests finish (within `limits.shutdown_timeout`).
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    role: Role,
    limits: Limits,
    shutdown: impl Future,
) {
    let open = Arc::new(AtomicUsize::new(0));
    run_counted(listener, app, role, limits, open, shutdown).await
}

/// [`run`], counting open connections in `open` (shared by the serving
/// threads' listeners, against one `limits.max_connections`).
pub async fn run_counted(
    listener: TcpListener,
    app: Arc<App>,
    role: Role,
    limits: Limits,
    open: Arc<AtomicUsize>,
    shutdown: impl Future,
) {
    let name = match role {
        Role::Public => "public",
        Role::Admin => "admin",
    };
    let graceful = GracefulShutdown::new();
    let builder = http1(&limits);
    let connections = Connections::counted_in(open, limits.max_connections, name);
    let accept_log = RateLimit::new(1_000);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            (stream, peer) = accept(&listener, name, &accept_log) => {
                let _ = stream.set_nodelay(true);
                // The address the client reached: what the admin listener
                // takes as its own in `Host` (the listener may be 0.0.0.0); unknown,
                // an address no client names, so the check fails closed.
                let local = stream
                    .local_addr()
                    .unwrap_or(std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
                let Ok((guard, stream)) = connections.admit(stream) else {
                    continue;
                };
                let app = app.clone();
                let clock = HeadClock::new();
                let service_clock = clock.clone();
                let service = service_fn(move |req| {
                    service_clock.head_arrived();
                    let answer = super::router::serve(req, peer, local, &app, role);
                    let clock = service_clock.clone();
                    async move {
                        let answered = answer.await;
                        clock.answered();
                        answered
                    }
                });
                let conn = builder.serve_connection(TokioIo::new(NoStore::new(stream)), service);
                let conn = HeadDeadline::new(graceful.watch(conn), &clock, limits.header_read_timeout);
                tokio::spawn(finish(conn, guard));
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    info!(
        listener = name,
        "stopped accepting; finishing in-flight requests"
    );
    if tokio::time::timeout(limits.shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("in-flight requests did not finish within the shutdown timeout");
    }
}
