//! Shared helpers for the integration tests: a real tansu broker on a free
//! port, pixeld in-process on port 0, an HTTP client, a Kafka consumer and
//! the JSON Schemas.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pixeld::config::Config;
use pixeld::serve::Outputs;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;
use tokio::sync::oneshot;

/// A tansu broker on its own free port; killed on drop.
pub struct Broker {
    /// The broker process.
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Broker {
    /// Starts tansu with in-memory storage. The test command installs it;
    /// a missing binary is a failure, never a skip.
    pub fn start() -> Broker {
        Self::spawn(
            "memory://tansu/",
            std::env::temp_dir().as_path(),
            free_port(),
        )
    }

    /// A broker that keeps its data in sqlite under `dir` (it survives a
    /// restart), on `port` (0: a free one).
    pub fn start_persistent(dir: &std::path::Path, port: u16) -> Broker {
        let port = if port == 0 { free_port() } else { port };
        Self::spawn("sqlite://tansu.db", dir, port)
    }

    fn spawn(storage: &str, cwd: &std::path::Path, port: u16) -> Broker {
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new("nice")
            .args([
                "-n",
                "19",
                "tansu",
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", storage])
            .current_dir(cwd)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu must be on PATH: run the README's test command, which installs it");
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not start listening on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker { child, addr }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The repository's example config, pointed at `brokers`, one partition per
/// topic so consumed order is produced order.
pub fn example_config(brokers: &str) -> Config {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/pixeld.toml"))
        .unwrap();
    let mut cfg = pixeld::config::parse(&text, "config/pixeld.toml").unwrap();
    cfg.kafka.brokers = brokers.to_string();
    cfg.kafka.partitions = 1;
    cfg.kafka.linger_ms = 1;
    cfg.server.data_dir = fresh_dir();
    cfg.cookie.secret = Some(COOKIE_SECRET.into());
    cfg
}

/// The `cookie.secret` of every test config, so tests can sign ids.
pub const COOKIE_SECRET: &str = "7e57c00c1e5ec7e77e57c00c1e5ec7e7";

/// The `Cookie` header a browser holding `uid` (32 hex) sends to a test
/// server: the id signed as pixeld signs it.
pub fn uid_cookie(uid: &str) -> String {
    let cfg = pixeld::config::CookieConfig {
        secret: Some(COOKIE_SECRET.into()),
        ..Default::default()
    };
    let secret = pixeld::http::cookie::Secret::generate();
    let uid = pixeld::ids::UserId::parse(uid).expect("32 lowercase hex");
    format!(
        "uid={}",
        pixeld::http::cookie::Cookies::new(&cfg, secret).value(uid)
    )
}

/// A new empty directory that outlives the test (for `data_dir`).
pub fn fresh_dir() -> std::path::PathBuf {
    tempfile::Builder::new()
        .prefix("pixeld-test-")
        .tempdir()
        .unwrap()
        .keep()
}

/// pixeld serving in this process; shut down gracefully on drop.
pub struct Server {
    pub addr: SocketAddr,
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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            pixeld::serve::serve(&cfg, listener, &outputs, async {
                let _ = rx.await;
            })
            .await;
        });
        let client = Client::builder(TokioExecutor::new()).build_http();
        Server {
            addr,
            stop: Some(tx),
            task: Some(task),
            client,
        }
    }

    pub async fn request(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{}", self.addr, path));
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

/// A message as a consumer of pixeld's topics sees it.
#[derive(Debug, Clone)]
pub struct Consumed {
    pub key: String,
    /// The `type` header.
    pub kind: String,
    pub json: Value,
}

/// A consumer reading partition 0 of `topic` from the beginning, without a
/// consumer group (tansu does not need one for this).
fn partition_reader(brokers: &str, topic: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "pixeld-tests")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        // Small fetches: tansu's sqlite storage answers a large one slowly.
        .set("max.partition.fetch.bytes", "262144")
        .set("fetch.max.bytes", "1048576")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    consumer
}

fn consumed(m: &rdkafka::message::BorrowedMessage<'_>) -> Consumed {
    let kind = m
        .headers()
        .and_then(|h| h.iter().find(|h| h.key == "type").and_then(|h| h.value))
        .map(|v| String::from_utf8(v.to_vec()).unwrap())
        .unwrap_or_default();
    let key = String::from_utf8(m.key().unwrap_or_default().to_vec()).unwrap();
    let json: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
    Consumed { key, kind, json }
}

/// Reads `topic` from the beginning until `n` messages arrived (or 30 s
/// passed), then keeps listening briefly so that extra messages show up too.
pub fn consume(brokers: &str, topic: &str, n: usize) -> Vec<Consumed> {
    let consumer = partition_reader(brokers, topic);
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut settle: Option<Instant> = None;
    loop {
        if out.len() >= n && settle.is_none() {
            settle = Some(Instant::now() + Duration::from_millis(700));
        }
        if settle.is_some_and(|s| Instant::now() > s) || Instant::now() > deadline {
            break;
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push(consumed(&m)),
            Some(Err(e)) => panic!("consuming {topic}: {e}"),
            None => {}
        }
    }
    out
}

/// The committed JSON Schemas, by event type.
pub fn schemas() -> HashMap<String, jsonschema::Validator> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/event/schemas");
    let mut out = HashMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        out.insert(name, jsonschema::validator_for(&schema).unwrap());
    }
    out
}

/// Fails unless `event` is valid against the schema of its `type`.
pub fn assert_schema(event: &Value) {
    let schemas = schemas();
    let kind = event["type"].as_str().unwrap();
    let validator = schemas
        .get(kind)
        .unwrap_or_else(|| panic!("no schema for {kind}"));
    let errors: Vec<String> = validator
        .iter_errors(event)
        .map(|e| e.to_string())
        .collect();
    assert!(
        errors.is_empty(),
        "{kind} event {event} breaks its schema: {errors:?}"
    );
}

/// Asserts the fields every event has, and returns the event id.
pub fn assert_common(event: &Value, kind: &str) -> String {
    assert_eq!(event["v"], 1);
    assert_eq!(event["type"], kind);
    let id = event["event_id"].as_str().unwrap();
    assert_eq!(id.len(), 36);
    assert_eq!(&id[14..15], "7", "event ids are UUIDv7");
    let ts = event["ts"].as_u64().unwrap();
    let now = pixeld::telemetry::now_ms();
    assert!(ts <= now && now - ts < 120_000, "ts {ts} is not recent");
    assert_schema(event);
    id.to_string()
}

impl Broker {
    pub fn port(&self) -> u16 {
        self.addr.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// SIGSTOP: the broker hangs with its connections open.
    pub fn freeze(&self) {
        signal(self.child.id(), "STOP");
    }

    /// SIGCONT.
    pub fn thaw(&self) {
        signal(self.child.id(), "CONT");
    }
}

pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// The example config as text, with `key = value` lines replaced (the first
/// line starting with each key).
pub fn config_text(overrides: &[(&str, String)]) -> String {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/pixeld.toml"))
        .unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let at = lines.iter().position(|l| l == "[cookie]").unwrap();
    lines.insert(at + 1, format!("secret = \"{COOKIE_SECRET}\""));
    for (key, value) in overrides {
        let line = lines
            .iter_mut()
            .find(|l| l.starts_with(&format!("{key} =")))
            .unwrap_or_else(|| panic!("no `{key} =` line in the example config"));
        *line = format!("{key} = {value}");
    }
    lines.join("\n")
}

/// `pixeld serve` as a real process.
pub struct Process {
    pub child: Child,
    pub port: u16,
    pub config: std::path::PathBuf,
}

impl Process {
    /// Starts the binary on `config` and waits for `/healthz`.
    pub fn start(config: &std::path::Path, port: u16, log: &std::path::Path) -> Process {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_pixeld"))
            .args(["serve", "--config"])
            .arg(config)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let p = Process {
            child,
            port,
            config: config.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while raw_get(port, "/healthz").is_none_or(|(s, _)| s != 200) {
            assert!(Instant::now() < deadline, "pixeld did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }

    pub fn kill9(&mut self) {
        signal(self.child.id(), "KILL");
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> i32 {
        signal(self.child.id(), "TERM");
        self.child.wait().unwrap().code().unwrap_or(-1)
    }

    /// Waits until `/readyz` answers `status`.
    pub fn wait_ready(&self, status: u16, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if raw_get(self.port, "/readyz").is_some_and(|(s, _)| s == status) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One GET over a fresh connection: (status, body), None if it failed.
pub fn raw_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.get(9..12)?.parse().ok()?;
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

pub fn free_tcp_port() -> u16 {
    free_port()
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

/// Reads every message of partition 0 of `topic` until `quiet` passes with
/// nothing new after the first one (or `limit` passes).
pub fn consume_all(brokers: &str, topic: &str, quiet: Duration, limit: Duration) -> Vec<Consumed> {
    let consumer = partition_reader(brokers, topic);
    let mut out = Vec::new();
    let start = Instant::now();
    let mut last = Instant::now();
    while start.elapsed() < limit && (out.is_empty() || last.elapsed() < quiet) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push(consumed(&m));
            last = Instant::now();
        }
    }
    out
}

/// The sum of a metric's samples (every label set whose line starts with
/// `name`) in a Prometheus text body.
pub fn metric_sum(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// p-th percentile (0..=100) of latencies, in ms.
pub fn percentile_ms(lat: &mut [Duration], p: f64) -> f64 {
    if lat.is_empty() {
        return 0.0;
    }
    lat.sort();
    let i = ((lat.len() - 1) as f64 * p / 100.0).round() as usize;
    lat[i].as_secs_f64() * 1000.0
}

/// The example config's `App` over a memory sink, without a journal: for
/// tests that call the router directly, with no server or broker.
pub fn memory_app() -> pixeld::app::App {
    let mut cfg = example_config("unused:9092");
    cfg.journal.durability = "memory".into();
    let catalog = std::sync::Arc::new(arc_swap::ArcSwap::new(pixeld::config::Catalog::new(&cfg)));
    let sink = std::sync::Arc::new(pixeld::sink::memory::MemorySink::default());
    pixeld::app::App::new(&cfg, sink, catalog, None, None)
}
