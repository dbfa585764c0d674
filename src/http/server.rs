//! The accept loop: one task per connection, HTTP/1.1 with keep-alive, a
//! header read timeout, and graceful shutdown.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tracing::{info, warn};

use super::no_store::NoStore;
use super::router::Role;
use super::App;

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

/// Why hyper closed a connection, as a refusal reason.
fn refusal(e: &hyper::Error) -> Option<&'static str> {
    if e.is_parse_too_large() {
        Some("head_too_large")
    } else if e.is_timeout() {
        Some("header_timeout")
    } else if e.is_parse() {
        Some("malformed_request")
    } else {
        None
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
    let name = match role {
        Role::Public => "public",
        Role::Admin => "admin",
    };
    let graceful = GracefulShutdown::new();
    let open = Arc::new(AtomicUsize::new(0));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off briefly.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                // The address the client reached: what the admin listener
                // takes as its own in `Host` (the listener may be 0.0.0.0); unknown,
                // an address no client names, so the check fails closed.
                let local = stream
                    .local_addr()
                    .unwrap_or(std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
                if open.load(Ordering::Relaxed) >= limits.max_connections {
                    // Over the cap: a short answer, then close; the open ones are untouched.
                    crate::telemetry::metric::http_refused("too_many_connections");
                    tokio::spawn(async move {
                        let mut stream = stream;
                        let _ = tokio::io::AsyncWriteExt::write_all(
                            &mut stream,
                            b"HTTP/1.1 503 Service Unavailable\r\nCache-Control: no-store\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                        )
                        .await;
                    });
                    continue;
                }
                open.fetch_add(1, Ordering::Relaxed);
                crate::telemetry::metric::http_connections(name, 1.0);
                let guard = Open(open.clone(), name);
                let app = app.clone();
                let service =
                    service_fn(move |req| super::router::serve(req, peer, local, &app, role));
                let conn = builder.serve_connection(TokioIo::new(NoStore::new(stream)), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _guard = guard;
                    if let Err(e) = conn.await {
                        if let Some(reason) = refusal(&e) {
                            crate::telemetry::metric::http_refused(reason);
                        }
                    }
                });
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
