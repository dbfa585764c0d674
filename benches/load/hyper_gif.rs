//! The ceiling of the load comparison (`benches/load/compare.sh`): hyper
//! answering every request with the 1x1 GIF and nothing else, on the same
//! runtime and connection settings pixeld uses. Whatever pixeld does beyond
//! this costs throughput; this server shows how much there is to spend.
//!
//!   cargo run --release --example hyper-gif -- 127.0.0.1:8081

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Response;
use hyper_util::rt::TokioIo;
use pixeld::http::response::GIF;

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8081".into());
    // The same runtime as `pixeld serve`: one worker per CPU it may run on.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|_req| async {
                    let mut resp = Response::new(Full::new(Bytes::from_static(GIF)));
                    resp.headers_mut()
                        .insert(CONTENT_TYPE, HeaderValue::from_static("image/gif"));
                    Ok::<_, Infallible>(resp)
                });
                let _ = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}
