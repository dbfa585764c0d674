//! The small status listener of the background services (`pixeld
//! attribute`, `pixeld forward`): `/readyz` and `/metrics`, with serve's
//! header timeout, a connection cap and accept back-off (issue 25, finding
//! 6: held connections made `/readyz` unreachable and the accept loop spun
//! on EMFILE). Each service says only whether it is ready, and why not.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use tokio::net::TcpListener;

use crate::config::ServerConfig;

/// Connections a status listener takes at most: Prometheus and an
/// orchestrator's probes, not a crowd.
pub const MAX_CONNECTIONS: usize = 64;

/// Serves `/readyz` (200 "ready", or 503 with `ready`'s reason) and
/// `/metrics` on `listener` until the task is dropped.
pub async fn serve<F>(listener: TcpListener, server: &ServerConfig, ready: F)
where
    F: Fn() -> Result<(), String> + Clone + Send + Sync + 'static,
{
    let limits = super::Limits {
        header_read_timeout: Duration::from_millis(server.header_read_timeout_ms),
        max_header_bytes: server.max_header_bytes,
        shutdown_timeout: Duration::ZERO,
        max_connections: MAX_CONNECTIONS,
    };
    super::server::run_status(listener, limits, "status", move |req| {
        answer(req.uri().path(), &ready)
    })
    .await
}

fn answer(path: &str, ready: &impl Fn() -> Result<(), String>) -> Response<Full<Bytes>> {
    let (code, body) = match path {
        "/readyz" => match ready() {
            Ok(()) => (StatusCode::OK, "ready\n".to_string()),
            Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
        },
        "/metrics" => (StatusCode::OK, crate::telemetry::render()),
        _ => (StatusCode::NOT_FOUND, "not found\n".into()),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    r.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    r
}
