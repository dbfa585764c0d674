//! The serving threads: `server.threads` threads, each with a runtime of its
//! own (tokio's current-thread scheduler) and a listener of its own on
//! `server.listen`. A connection is accepted, read, answered and journaled
//! on one thread from start to end: no work stealing, no task woken from
//! another thread, nothing handed across threads per request.
//!
//! Each thread's listener is a socket of its own on the same port
//! (`SO_REUSEPORT`: the kernel spreads new connections over them) when the
//! first one was bound by [`bind_public`]; a listener bound some other way
//! is shared (each thread polls the same socket, and whichever accepts a
//! connection keeps it). Which of the two is logged at start.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::info;

use super::{App, Limits, Role};

/// The serving threads `threads` asks for: 0 is one per core this process
/// may run on (its CPU affinity, so `taskset -c 0` gives one).
pub fn thread_count(threads: usize) -> usize {
    if threads > 0 {
        return threads;
    }
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Binds the public listener so that each serving thread can have a socket
/// of its own on the same port. The address is first bound once without
/// `SO_REUSEPORT`, so that a port another process already holds (a second
/// pixeld, whose sockets allow sharing too) is refused as in use rather
/// than silently shared with it. Two processes of the same user starting
/// at the same instant could both pass that check and share the port.
/// Needs no runtime.
pub fn bind_public(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let probe = std::net::TcpListener::bind(addr)?;
    let bound = probe.local_addr()?;
    drop(probe);
    reuse_port_listener(bound)
}

/// A non-blocking listener on `addr` that other sockets may share.
fn reuse_port_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// One listener per thread: the first is `first`; the others are sockets of
/// their own on its port when it allows that, else copies of it.
fn listeners(
    first: std::net::TcpListener,
    n: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    let addr = first.local_addr()?;
    let mut out = Vec::with_capacity(n);
    let mut copies = 0;
    for _ in 1..n {
        // A listener bound without SO_REUSEPORT refuses every own socket;
        // after the first refusal the rest share it too.
        let own = (copies == 0)
            .then(|| reuse_port_listener(addr))
            .and_then(Result::ok);
        match own {
            Some(l) => out.push(l),
            None => {
                copies += 1;
                out.push(first.try_clone()?);
            }
        }
    }
    out.insert(0, first);
    info!(
        %addr,
        threads = n,
        own_sockets = n - copies,
        sharing_the_first = copies,
        "serving threads (own sockets: SO_REUSEPORT)"
    );
    Ok(out)
}

/// The running serving threads.
pub struct ServingThreads {
    stop: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
}

impl ServingThreads {
    /// Starts `n` serving threads on `listener` (which must be in
    /// non-blocking mode, as every tokio listener is). What can fail is
    /// done before any thread starts ([`ServingThread::prepare`]), but for
    /// the threads themselves: if one cannot start, those started are
    /// stopped and joined.
    pub fn start(
        listener: std::net::TcpListener,
        app: Arc<App>,
        limits: Limits,
        n: usize,
    ) -> std::io::Result<ServingThreads> {
        let (stop, stopped) = watch::channel(false);
        let open = Arc::new(AtomicUsize::new(0));
        let ready = listeners(listener, n.max(1))?
            .into_iter()
            .map(ServingThread::prepare)
            .collect::<std::io::Result<Vec<_>>>()?;
        let mut serving = ServingThreads {
            stop,
            threads: Vec::with_capacity(n),
        };
        for (i, thread) in ready.into_iter().enumerate() {
            let (app, stopped, open) = (app.clone(), stopped.clone(), open.clone());
            let started = std::thread::Builder::new()
                .name(format!("serve-{i}"))
                .spawn(move || thread.serve(app, limits, open, stopped));
            match started {
                Ok(thread) => serving.threads.push(thread),
                Err(e) => {
                    serving.stop();
                    return Err(e);
                }
            }
        }
        Ok(serving)
    }

    /// Stops accepting on every thread, lets in-flight requests finish
    /// (within `limits.shutdown_timeout`) and waits for the threads.
    pub fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// One serving thread, before it starts: its runtime, and its listener
/// registered with that runtime. Both can fail, so both are made before
/// any thread starts, and a failure stops start-up instead of leaving a
/// thread fewer.
pub struct ServingThread {
    /// The runtime and the listener registered with it: taken by
    /// [`ServingThread::serve`]; a thread never started lets them go in
    /// [`Drop`].
    parts: Option<(tokio::runtime::Runtime, TcpListener)>,
}

impl Drop for ServingThread {
    /// A runtime dropped inside another (start-up runs in the main one,
    /// and a thread that could not start is dropped there) must be let go
    /// without waiting, or tokio panics instead of start-up failing
    /// cleanly.
    fn drop(&mut self) {
        if let Some((runtime, listener)) = self.parts.take() {
            drop(listener);
            runtime.shutdown_background();
        }
    }
}

impl ServingThread {
    /// `listener` must be in non-blocking mode, as every tokio listener is.
    pub fn prepare(listener: std::net::TcpListener) -> std::io::Result<ServingThread> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // Registered with this runtime's reactor, which the thread that
        // later runs the runtime drives.
        let registered = {
            let _entered = runtime.enter();
            TcpListener::from_std(listener)
        };
        match registered {
            Ok(listener) => Ok(ServingThread {
                parts: Some((runtime, listener)),
            }),
            Err(e) => {
                runtime.shutdown_background();
                Err(e)
            }
        }
    }

    /// Serves on the calling thread until `stopped` turns true, then lets
    /// in-flight requests finish (within `limits.shutdown_timeout`). Open
    /// connections are counted in `open`, against `limits.max_connections`.
    /// This is each serving thread's whole body; a test runs it on a thread
    /// of its own to count what that thread does.
    pub fn serve(
        mut self,
        app: Arc<App>,
        limits: Limits,
        open: Arc<AtomicUsize>,
        mut stopped: watch::Receiver<bool>,
    ) {
        let Some((runtime, listener)) = self.parts.take() else {
            return;
        };
        runtime.block_on(async move {
            // Dropped when serving ends, writing what the lane still holds.
            let _lane = app.delivery.open_lane();
            let stop = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            super::server::run_counted(listener, app, Role::Public, limits, open, stop).await;
        });
    }
}
