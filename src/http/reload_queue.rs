//! Reloads, coalesced: at most one runs and one waits. A request that comes
//! while one runs queues the next; any later one joins that queued reload
//! and gets its answer, since it reads the same file. The reload runs on a
//! blocking thread, never on a worker serving pixels, and runs start at
//! least [`MIN_GAP`] apart, so a flood of requests costs a bounded share of
//! one core whatever its size.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::app::Reload;

/// What `POST /-/reload` answers: the line of [`Reload::reload`].
pub type Answer = Result<String, String>;

/// The least time from the end of one reload to the start of the next.
pub const MIN_GAP: Duration = Duration::from_millis(100);

/// One reload's answer, shared by every request that joined it.
pub struct Ticket(watch::Receiver<Option<Answer>>);

impl Ticket {
    pub async fn answer(mut self) -> Answer {
        match self.0.wait_for(Option::is_some).await {
            Ok(answer) => answer.clone().unwrap_or_else(|| Err(String::new())),
            Err(_) => {
                Err("the reload stopped before it answered; the running config stays\n".into())
            }
        }
    }
}

#[derive(Clone, Default)]
pub struct ReloadQueue {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// A reload is running (or about to, on its blocking thread).
    running: bool,
    /// The next reload's answer, shared by everyone who asked since the
    /// running one started.
    queued: Option<watch::Sender<Option<Answer>>>,
    /// When the last reload ended.
    last_done: Option<Instant>,
    /// Reloads run, for tests.
    runs: u64,
}

impl ReloadQueue {
    /// A reload of `reloader`, joined or queued; must be called within a
    /// tokio runtime (the reload runs on its blocking pool).
    pub fn request(&self, reloader: &Arc<dyn Reload>) -> Ticket {
        let mut s = self.lock();
        if let Some(queued) = &s.queued {
            return Ticket(queued.subscribe());
        }
        let (tx, rx) = watch::channel(None);
        if s.running {
            s.queued = Some(tx);
            return Ticket(rx);
        }
        s.running = true;
        drop(s);
        let runner = Runner {
            queue: self.clone(),
            reloader: reloader.clone(),
            next: Some(tx),
        };
        tokio::task::spawn_blocking(move || runner.run());
        Ticket(rx)
    }

    /// How many reloads have run.
    pub fn runs(&self) -> u64 {
        self.lock().runs
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs reloads on a blocking thread until none is queued.
struct Runner {
    queue: ReloadQueue,
    reloader: Arc<dyn Reload>,
    /// The answer the next run sends.
    next: Option<watch::Sender<Option<Answer>>>,
}

impl Runner {
    fn run(mut self) {
        while let Some(tx) = self.next.take() {
            let since = self.queue.lock().last_done.map(|t| t.elapsed());
            if let Some(wait) = since.and_then(|s| MIN_GAP.checked_sub(s)) {
                std::thread::sleep(wait);
            }
            let reloader = &self.reloader;
            let answer =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reloader.reload()))
                    .unwrap_or_else(|_| {
                        Err("the reload failed (a bug); the running config stays\n".into())
                    });
            let mut s = self.queue.lock();
            s.runs += 1;
            s.last_done = Some(Instant::now());
            // Taken under the lock that queues, so no request joins an
            // answer already sent, nor queues behind a runner that stops.
            self.next = s.queued.take();
            if self.next.is_none() {
                s.running = false;
            }
            drop(s);
            tx.send_replace(Some(answer));
        }
    }
}

impl Drop for Runner {
    /// A runner dropped before it ran (the runtime shutting down) frees the
    /// queue, so the next request starts a new runner instead of queueing
    /// behind this one; its waiters get an error answer.
    fn drop(&mut self) {
        if self.next.is_some() {
            let mut s = self.queue.lock();
            s.running = false;
            s.queued = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A reload that blocks until the test lets it finish.
    struct Gate {
        release: Mutex<std::sync::mpsc::Receiver<()>>,
        started: AtomicU64,
    }

    impl Reload for Gate {
        fn reload(&self) -> Answer {
            let n = self.started.fetch_add(1, Ordering::SeqCst) + 1;
            let _ = self.release.lock().unwrap().recv();
            Ok(format!("reload {n}\n"))
        }
        fn reload_if_changed(&self) {}
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_runs_one_waits_and_the_rest_join_the_waiting_one() {
        let (release, rx) = std::sync::mpsc::channel();
        let gate = Arc::new(Gate {
            release: Mutex::new(rx),
            started: AtomicU64::new(0),
        });
        let reloader: Arc<dyn Reload> = gate.clone();
        let queue = ReloadQueue::default();
        let first = queue.request(&reloader);
        while gate.started.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // The first is running and blocked: these 50 are one queued reload.
        let rest: Vec<Ticket> = (0..50).map(|_| queue.request(&reloader)).collect();
        release.send(()).unwrap();
        release.send(()).unwrap();
        assert_eq!(first.answer().await, Ok("reload 1\n".into()));
        for t in rest {
            assert_eq!(t.answer().await, Ok("reload 2\n".into()));
        }
        assert_eq!(queue.runs(), 2);
        assert_eq!(gate.started.load(Ordering::SeqCst), 2);
        // Idle again: the next request runs a reload of its own.
        release.send(()).unwrap();
        assert_eq!(
            queue.request(&reloader).answer().await,
            Ok("reload 3\n".into())
        );
        assert_eq!(queue.runs(), 3);
    }
}
