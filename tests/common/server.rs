//! pixeld in this process, an HTTP client, the memory-sink `App`, and a load
//! generator.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pixeld::config::Config;
use pixeld::serve::Outputs;
use tokio::sync::oneshot;

use super::config::{example_config, uid_cookie};

/// pixeld serving in this process; shut down gracefully on drop.
pub struct Server {
    pub addr: SocketAddr,
    /// The admin listener (`/metrics`, `POST /-/reload`).
    pub admin: SocketAddr,
    /// Resolves the server's shutdown future.
    stop: Option<oneshot::Sender<()>>,
    /// The serving task, awaited by [`Server::stop`].
    task: Option<tokio::task::JoinHandle<()>>,
    pub client: Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
}

/// A response, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// The user id this response set, if it set one.
    pub fn set_uid(&self) -> Option<String> {
        let v = self.cookie()?;
        let (id, _tag) = v.strip_prefix("uid=")?.split_once('.')?;
        Some(id.to_string())
    }

    /// The `Cookie` header a browser would send back after this response.
    pub fn cookie(&self) -> Option<String> {
        let c = self.header("set-cookie")?;
        Some(c.split(';').next()?.to_string())
    }
}

impl Server {
    /// Serves `cfg` into its real Kafka sink and waits until `/readyz` is 200.
    pub async fn start(cfg: Config) -> Server {
        let (outputs, embedded) = pixeld::serve::outputs(&cfg).unwrap();
        assert!(embedded.is_none(), "tests use a real broker");
        Self::start_with(cfg, outputs).await
    }

    /// Serves `cfg` into `outputs` and waits until `/readyz` is 200.
    pub async fn start_with(cfg: Config, outputs: Outputs) -> Server {
        let server = Self::spawn(cfg, outputs).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if server.get("/readyz", &[]).await.status == StatusCode::OK {
                break;
            }
            assert!(Instant::now() < deadline, "pixeld did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server
    }

    /// Serves without waiting for readiness.
    pub async fn spawn(cfg: Config, outputs: Outputs) -> Server {
        // Bound as `pixeld serve` binds it: a socket per serving thread.
        let public = pixeld::http::bind_public("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = tokio::net::TcpListener::from_std(public).unwrap();
        let addr = listener.local_addr().unwrap();
        let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = admin_listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let mut cfg = cfg;
        // In-process tests stop at once: no drain window.
        cfg.server.drain_ms = 0;
        let task = tokio::spawn(async move {
            pixeld::serve::serve(&cfg, listener, admin_listener, &outputs, async {
                let _ = rx.await;
            })
            .await
            .expect("pixeld starts");
        });
        let client = Client::builder(TokioExecutor::new()).build_http();
        Server {
            addr,
            admin,
            stop: Some(tx),
            task: Some(task),
            client,
        }
    }

    pub async fn request(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.request_to(self.addr, method, path, headers).await
    }

    /// GET on the admin listener (`/metrics`).
    pub async fn admin_get(&self, path: &str) -> Reply {
        self.request_to(self.admin, Method::GET, path, &[]).await
    }

    async fn request_to(
        &self,
        addr: SocketAddr,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .client
            .request(req.body(Empty::new()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.request(Method::GET, path, headers).await
    }

    /// Graceful shutdown: stop accepting, finish requests, flush Kafka.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Fires uniquely numbered impressions from `tasks` keep-alive connections
/// until `stop` is set, each task pausing `pace` between requests. Returns
/// the cachebusters that got a 200 or 302, and every answered request's
/// (start time, latency).
pub async fn load(
    port: u16,
    tasks: usize,
    pace: Duration,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (Vec<u64>, Vec<(Instant, Duration)>) {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1));
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (next, stop) = (next.clone(), stop.clone());
        handles.push(tokio::spawn(async move {
            let client: Client<_, Empty<Bytes>> =
                Client::builder(TokioExecutor::new()).build_http();
            let mut ok = Vec::new();
            let mut lat = Vec::new();
            let cookie = uid_cookie("0123456789abcdef0123456789abcdef");
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let uri = format!("http://127.0.0.1:{port}/imptr?id=2766&cachebuster={n}");
                let started = Instant::now();
                let req = Request::get(uri)
                    .header("cookie", &cookie)
                    .body(Empty::new())
                    .unwrap();
                let fut = client.request(req);
                match tokio::time::timeout(Duration::from_secs(10), fut).await {
                    Ok(Ok(resp)) if resp.status() == 200 || resp.status() == 302 => {
                        let _ = resp.into_body().collect().await;
                        lat.push((started, started.elapsed()));
                        ok.push(n);
                    }
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
                if !pace.is_zero() {
                    tokio::time::sleep(pace).await;
                }
            }
            (ok, lat)
        }));
    }
    let mut ok = Vec::new();
    let mut lat = Vec::new();
    for h in handles {
        let (o, l) = h.await.unwrap();
        ok.extend(o);
        lat.extend(l);
    }
    (ok, lat)
}

/// The example config's `App` over a memory sink, without a journal: for
/// tests that call the router directly, with no server or broker.
pub fn memory_app() -> pixeld::http::App {
    use std::sync::Arc;
    let mut cfg = example_config("unused:9092");
    cfg.journal.durability = pixeld::config::Durability::Memory;
    let catalog = Arc::new(arc_swap::ArcSwap::new(
        pixeld::config::Catalog::new(&cfg).unwrap(),
    ));
    let sink = Arc::new(pixeld::sink::memory::MemorySink::default());
    let delivery = Arc::new(pixeld::delivery::Delivery::direct(sink, None));
    let secret = cfg.cookie.secret.unwrap();
    pixeld::http::App::new(&cfg, catalog, delivery, secret)
}
