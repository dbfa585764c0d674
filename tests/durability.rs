//! The journal's promise, tested with real processes and a real broker:
//! every event whose pixel was answered reaches Kafka at least once with its
//! original event_id, through a kill -9, a frozen broker, a dead broker, a
//! full disk budget and a torn journal tail.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// These tests load the machine hard (and the broker runs at the lowest
/// priority): one at a time, so none starves another's broker.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Starts `pixeld serve` as a process on a free port, shipping to
/// `brokers`, with its config, data and log (`pixeld.log`) in `dir`.
fn start_pixeld(dir: &Path, brokers: &str, extra: &[(&str, String)]) -> Process {
    start_pixeld_with(dir, brokers, extra, "")
}

/// [`start_pixeld`], with `tail` appended to the config (more tables).
fn start_pixeld_with(dir: &Path, brokers: &str, extra: &[(&str, String)], tail: &str) -> Process {
    let port = free_tcp_port();
    let mut overrides = vec![
        ("listen", q(format!("127.0.0.1:{port}"))),
        ("admin_listen", q(format!("127.0.0.1:{}", free_tcp_port()))),
        ("brokers", q(brokers)),
        ("data_dir", q(dir.join("data").display().to_string())),
        ("partitions", "1".to_string()),
        ("flush_timeout_ms", "15000".to_string()),
    ];
    overrides.extend(extra.iter().cloned());
    let path = dir.join("pixeld.toml");
    std::fs::write(&path, config_text(&overrides) + tail).unwrap();
    Process::start(&path, port, &dir.join("pixeld.log"))
}

/// Fires `/imptr` with each cachebuster in `range`; each must be answered
/// with its redirect.
fn fire(port: u16, range: std::ops::RangeInclusive<u64>) {
    for n in range {
        let (status, _) = raw_get(port, &format!("/imptr?id=2766&cachebuster={n}")).unwrap();
        assert_eq!(status, 302, "request {n}");
    }
}

/// Every impression in the broker, read until it has been quiet for 3 s
/// (at most `limit`).
fn impressions(brokers: &str, limit: Duration) -> Vec<Consumed> {
    consume_all(brokers, "pixel.impressions", Duration::from_secs(3), limit)
}

/// cachebuster → the distinct event ids it arrived with.
fn by_cachebuster(events: &[Consumed]) -> HashMap<u64, HashSet<String>> {
    let mut out: HashMap<u64, HashSet<String>> = HashMap::new();
    for e in events {
        if let Some(cb) = e.json["cachebuster"].as_str().and_then(|c| c.parse().ok()) {
            out.entry(cb)
                .or_default()
                .insert(e.json["event_id"].as_str().unwrap().to_string());
        }
    }
    out
}

/// Every answered cachebuster is in Kafka, each under one event id only.
fn assert_all_delivered(answered: &[u64], events: &[Consumed]) {
    let got = by_cachebuster(events);
    let missing: Vec<_> = answered.iter().filter(|n| !got.contains_key(n)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} answered events missing, e.g. {:?}",
        missing.len(),
        answered.len(),
        &missing[..missing.len().min(10)]
    );
    let split: Vec<_> = got.iter().filter(|(_, ids)| ids.len() != 1).collect();
    assert!(
        split.is_empty(),
        "duplicates must share their event_id: {split:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_mid_load_loses_no_answered_event() {
    let _serial = SERIAL.lock().await;
    let broker = Broker::start();
    let dir = fresh_dir();
    let mut p = start_pixeld(&dir, &broker.addr, &[]);
    let port = p.port;
    assert!(p.wait_ready(200, Duration::from_secs(30)));

    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(load(port, 4, Duration::ZERO, stop.clone()));
    tokio::time::sleep(Duration::from_millis(2000)).await;
    p.kill9();
    stop.store(true, Ordering::Relaxed);
    let (answered, _) = load.await.unwrap();
    assert!(
        answered.len() > 200,
        "load too small to mean anything: {}",
        answered.len()
    );

    let mut p = Process::start(&p.config, port, &dir.join("pixeld.log"));
    assert!(p.wait_ready(200, Duration::from_secs(30)));
    assert_eq!(p.stop(), 0);
    let events = impressions(&broker.addr, Duration::from_secs(60));
    eprintln!(
        "kill -9: {} answered, {} consumed (duplicates allowed)",
        answered.len(),
        events.len()
    );
    assert_all_delivered(&answered, &events);
}

/// Loads pixeld for `before`, runs `outage`, loads for `after`; returns what
/// was answered and the p99 latency inside and outside the outage window.
async fn load_through(
    port: u16,
    pace: Duration,
    before: Duration,
    outage: impl FnOnce() -> (Instant, Instant),
    after: Duration,
) -> (Vec<u64>, f64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(load(port, 4, pace, stop.clone()));
    tokio::time::sleep(before).await;
    let (from, to) = tokio::task::block_in_place(outage);
    tokio::time::sleep(after).await;
    stop.store(true, Ordering::Relaxed);
    let (answered, lat) = load.await.unwrap();
    let (mut during, mut outside): (Vec<_>, Vec<_>) =
        lat.into_iter().partition(|(t, _)| *t >= from && *t <= to);
    let mut during: Vec<Duration> = during.drain(..).map(|(_, d)| d).collect();
    let mut outside: Vec<Duration> = outside.drain(..).map(|(_, d)| d).collect();
    assert!(
        during.len() > 100,
        "too few requests during the outage: {}",
        during.len()
    );
    (
        answered,
        percentile_ms(&mut during, 99.0),
        percentile_ms(&mut outside, 99.0),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_broker_loses_nothing_and_does_not_slow_pixels() {
    let _serial = SERIAL.lock().await;
    let broker = Broker::start();
    let mut p = start_pixeld(&fresh_dir(), &broker.addr, &[]);
    let port = p.port;
    assert!(p.wait_ready(200, Duration::from_secs(30)));
    let b = &broker;
    let (answered, p99_during, p99_outside) = load_through(
        port,
        Duration::ZERO,
        Duration::from_secs(3),
        || {
            b.freeze();
            let from = Instant::now();
            std::thread::sleep(Duration::from_secs(20));
            let to = Instant::now();
            b.thaw();
            (from, to)
        },
        Duration::from_secs(3),
    )
    .await;
    eprintln!("broker frozen 20 s: {} answered; p99 {p99_during:.2} ms during, {p99_outside:.2} ms outside", answered.len());
    wait_shipped(&p, Duration::from_secs(60));
    assert_eq!(p.stop(), 0);
    let events = impressions(&broker.addr, Duration::from_secs(90));
    assert_all_delivered(&answered, &events);
    assert!(
        p99_during <= 3.0 * p99_outside + 25.0,
        "p99 during the outage {p99_during:.2} ms vs {p99_outside:.2} ms"
    );
}

/// tansu with sqlite storage keeps what it acknowledged across a restart, so
/// every answered event can be checked, not only the ones after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_and_restarted_on_the_same_port_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let store = fresh_dir();
    let broker = Broker::start_persistent(&store, 0);
    let broker_port = broker.port();
    let addr = broker.addr.clone();
    let mut p = start_pixeld(&fresh_dir(), &addr, &[]);
    let port = p.port;
    assert!(p.wait_ready(200, Duration::from_secs(30)));
    let mut slot = Some(broker);
    let replacement = std::sync::Mutex::new(None);
    // Paced: tansu's sqlite storage reads back tens of thousands of records
    // very slowly, and the point here is the restart, not the volume.
    let (answered, p99_during, p99_outside) = load_through(
        port,
        Duration::from_millis(5),
        Duration::from_secs(2),
        || {
            drop(slot.take()); // SIGKILL
            let from = Instant::now();
            std::thread::sleep(Duration::from_secs(8));
            let to = Instant::now();
            *replacement.lock().unwrap() = Some(Broker::start_persistent(&store, broker_port));
            (from, to)
        },
        Duration::from_secs(3),
    )
    .await;
    eprintln!("broker killed for 8 s: {} answered; p99 {p99_during:.2} ms during, {p99_outside:.2} ms outside", answered.len());
    wait_shipped(&p, Duration::from_secs(60));
    assert_eq!(p.stop(), 0);
    let events = impressions(&addr, Duration::from_secs(90));
    assert_all_delivered(&answered, &events);
    drop(replacement);
}

/// Waits until `p` has shipped its journal (at most `within`): a test of
/// an outage checks that nothing answered is lost, not how fast a slow
/// machine catches up within the shutdown's drain time.
fn wait_shipped(p: &Process, within: Duration) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if metric(p, "journal_records_behind") == 0.0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A metric of `p`, from its admin listener.
fn metric(p: &Process, name: &str) -> f64 {
    metric_sum(&raw_get(p.admin, "/metrics").unwrap().1, name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_budget_keeps_answering_counts_drops_and_recovers() {
    let _serial = SERIAL.lock().await;
    let broker_port = free_tcp_port();
    let mut p = start_pixeld(
        &fresh_dir(),
        &format!("127.0.0.1:{broker_port}"),
        &[
            ("max_bytes", "65536".into()),
            ("segment_bytes", "4096".into()),
            ("snapshot_interval_secs", "1".into()),
            ("flush_timeout_ms", "2000".into()),
        ],
    );
    let port = p.port;
    // No broker yet: the journal is the only place events can go.
    for n in 1..=400 {
        let (status, _) = raw_get(port, &format!("/imptr?id=2766&cachebuster={n}")).unwrap();
        assert!(status == 302 || status == 200, "request {n} got {status}");
    }
    let dropped = metric(&p, "events_dropped_total{reason=\"journal_full\"}");
    assert!(dropped > 0.0);
    let (status, body) = raw_get(port, "/readyz").unwrap();
    assert_eq!(status, 503);
    assert!(body.contains("journal is full"), "{body}");

    let broker = Broker::start_persistent(&fresh_dir(), broker_port);
    let started = Instant::now();
    assert!(
        p.wait_ready(200, Duration::from_secs(120)),
        "ready again once the shipper freed space: {:?}",
        raw_get(port, "/readyz")
    );
    eprintln!(
        "ready again {:?} after the broker started",
        started.elapsed()
    );
    fire(port, 1001..=1010);
    assert_eq!(p.stop(), 0);
    let events = impressions(&broker.addr, Duration::from_secs(60));
    let got = by_cachebuster(&events);
    assert!(
        (1001..=1010).all(|n| got.contains_key(&n)),
        "events after recovery are kept"
    );
    let kept = (1..=400).filter(|n| got.contains_key(n)).count();
    assert!(
        kept > 0 && kept < 400,
        "some were kept, the rest dropped and counted: {kept}"
    );
    // Each answered event is either in Kafka or counted once as dropped.
    assert_eq!(
        kept as f64 + dropped,
        400.0,
        "{kept} kept and {dropped} counted as dropped of 400 answered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_journal_tail_is_reported_and_everything_before_it_shipped() {
    let _serial = SERIAL.lock().await;
    let dir = fresh_dir();
    let broker_port = free_tcp_port();
    let mut p = start_pixeld(
        &dir,
        &format!("127.0.0.1:{broker_port}"),
        &[("flush_timeout_ms", "500".into())],
    );
    let port = p.port;
    fire(port, 1..=10);
    assert_eq!(p.stop(), 0);
    // Cut the last record in half, as a crash mid-write would.
    let last = &segment_with_the_newest_record(&dir.join("data/journal"));
    let len = std::fs::metadata(last).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(last)
        .unwrap()
        .set_len(len - 20)
        .unwrap();

    let broker = Broker::start();
    let mut p = start_pixeld(&dir, &broker.addr, &[]);
    assert!(metric(&p, "journal_torn_bytes_total") > 0.0);
    assert!(p.wait_ready(200, Duration::from_secs(30)));
    assert_eq!(p.stop(), 0);
    let log = std::fs::read_to_string(dir.join("pixeld.log")).unwrap();
    assert!(
        log.contains("journal tail is torn or corrupt"),
        "start-up reports it"
    );
    let events = impressions(&broker.addr, Duration::from_secs(60));
    let got = by_cachebuster(&events);
    let mut shipped: Vec<u64> = got.keys().copied().collect();
    shipped.sort();
    assert_eq!(shipped, (1..=9).collect::<Vec<_>>());
}

/// The segment holding the record with the highest sequence number (each
/// serving thread writes segments of its own, so the last name is not
/// necessarily the last record).
fn segment_with_the_newest_record(journal: &std::path::Path) -> std::path::PathBuf {
    use pixeld::journal::frame::{decode_frame, Frame};
    let last_seq = |bytes: &[u8]| {
        let (mut at, mut seq) = (0, None);
        while let Frame::Ok(r, len) = decode_frame(&bytes[at..]) {
            seq = Some(r.seq);
            at += len;
        }
        seq
    };
    std::fs::read_dir(journal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .max_by_key(|p| last_seq(&std::fs::read(p).unwrap()))
        .unwrap()
}

const API_KEY: &str = "durable-shop-key-0123456789";

/// Batches of 10 server conversions, each item an order of its own, until
/// `stop` or the server is gone: the event ids of the accepted items, taken
/// only from answers that arrived whole (a 200 whose results parse).
fn post_batches(port: u16, stop: Arc<AtomicBool>) -> Vec<String> {
    let mut accepted = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let items: Vec<serde_json::Value> = (0..10)
            .map(|_| {
                n += 1;
                serde_json::json!({"pixel_id": 7313, "uid": format!("{n:032x}"), "order_id": format!("K{n}")})
            })
            .collect();
        let body = serde_json::json!({ "conversions": items }).to_string();
        let head = format!(
            "POST /v1/conversions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {API_KEY}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let Some(out) = raw_exchange(port, head.as_bytes()) else {
            break;
        };
        let answer = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .unwrap_or_default();
        let Ok(json) = serde_json::from_str::<serde_json::Value>(answer) else {
            continue;
        };
        for r in json["results"].as_array().into_iter().flatten() {
            if r["status"] == "accepted" {
                accepted.push(r["event_id"].as_str().unwrap().to_string());
            }
        }
    }
    accepted
}

/// `POST /v1/conversions` keeps the journal's promise: an item answered
/// `accepted` is in Kafka after a `kill -9` right after the 200 and a
/// restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_conversions_answered_accepted_survive_a_kill_9() {
    let _serial = SERIAL.lock().await;
    let broker = Broker::start();
    let dir = fresh_dir();
    let keys = format!(
        "\n[[api_keys]]\nid = \"durable-shop\"\nsecret = \"{API_KEY}\"\nadvertisers = [100]\n"
    );
    let mut p = start_pixeld_with(&dir, &broker.addr, &[], &keys);
    let port = p.port;
    assert!(p.wait_ready(200, Duration::from_secs(30)));
    let stop = Arc::new(AtomicBool::new(false));
    let posting = {
        let stop = stop.clone();
        std::thread::spawn(move || post_batches(port, stop))
    };
    tokio::time::sleep(Duration::from_millis(2000)).await;
    p.kill9();
    stop.store(true, Ordering::Relaxed);
    let accepted = posting.join().unwrap();
    assert!(
        accepted.len() >= 100,
        "too few accepted: {}",
        accepted.len()
    );

    let mut p = Process::start(&p.config, port, &dir.join("pixeld.log"));
    assert!(p.wait_ready(200, Duration::from_secs(30)));
    assert_eq!(p.stop(), 0);
    let events = consume_all(
        &broker.addr,
        "pixel.conversions",
        Duration::from_secs(3),
        Duration::from_secs(60),
    );
    let got: HashSet<&str> = events
        .iter()
        .filter_map(|e| e.json["event_id"].as_str())
        .collect();
    let missing: Vec<&String> = accepted
        .iter()
        .filter(|id| !got.contains(id.as_str()))
        .collect();
    eprintln!(
        "kill -9 of the API: {} accepted, {} in Kafka",
        accepted.len(),
        events.len()
    );
    assert!(
        missing.is_empty(),
        "{} of {} accepted items missing, e.g. {:?}",
        missing.len(),
        accepted.len(),
        &missing[..missing.len().min(5)]
    );
}
