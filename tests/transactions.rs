//! `attribution.transactions` (issue 21) on the two brokers these tests
//! have: tansu 0.6.0, which registers a transactional id but has no
//! `EndTxn`, and librdkafka's mock cluster, which takes every transactional
//! request but stores none of a transaction's offsets and hides no aborted
//! message from `read_committed` readers
//! (`pixeld::attribution::cluster::broker_quirks`, items 4 and 5). On both
//! the member's probe must find that out: `auto` runs at least once and
//! says so (log and `attribution_exactly_once` 0), `required` stops
//! start-up naming the key. The transactional commit cycle itself (abort,
//! fencing) is tested on the mock in `attribution::cluster::commit`.
//!
//! Exactly once across a `kill -9` needs a broker with Kafka's
//! transactional semantics: noida-db (PyPI; `scripts/kafka.sh` installs and
//! starts it), a Kafka-protocol broker whose transactions, fencing and
//! `read_committed` behave as Kafka's (checked 2026-12-07), or any broker
//! named by `PIXELD_TXN_BROKERS`.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::cluster::*;
use common::*;
use pixeld::event::EventType;
use pixeld::ids::{EventId, UserId};
use rdkafka::mocking::MockCluster;
use serde_json::{json, Value};

/// Every input topic of a member. The mock cluster answers no CreateTopics
/// (the member's request for a missing one times out), so the tests create
/// them all, as an operator would on brokers that refuse it.
const INPUTS: [&str; 7] = [
    "pixel.impressions",
    "pixel.clicks",
    "pixel.conversions",
    "pixel.segments",
    "pixel.adjustments",
    "pixel.orders",
    "pixel.adjustments-by-user",
];

/// A member's config on `brokers` with `transactions`.
fn config(brokers: &str, status: u16, transactions: &str) -> std::path::PathBuf {
    write_config(&cluster_config(
        brokers,
        free_tcp_port(),
        status,
        &[("transactions", q(transactions))],
    ))
}

/// Runs a member that must stop by itself: its exit code and log.
fn exits(config: &Path) -> (Option<i32>, String) {
    let log = fresh_dir().join("attribute.log");
    let mut m = Member::spawn(config, free_tcp_port(), &log);
    let deadline = Instant::now() + Duration::from_secs(60);
    let code = loop {
        if let Some(s) = m.child.try_wait().unwrap() {
            break s.code();
        }
        assert!(
            Instant::now() < deadline,
            "pixeld attribute kept running:\n{}",
            m.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    (code, m.log_text())
}

/// What a member that runs at least once logs and exposes; `why` is in
/// the reason it gives.
fn assert_at_least_once(member: &Member, why: &str) {
    let text = member.log_text();
    let line = text
        .lines()
        .find(|l| l.contains("joining the group"))
        .unwrap_or_else(|| panic!("no start line:\n{text}"));
    assert!(
        line.contains("guarantee=\"at least once, every repeat identical"),
        "{line}"
    );
    let warned = text
        .lines()
        .find(|l| l.contains("Kafka transactions are not available"))
        .unwrap_or_else(|| panic!("no reason given:\n{text}"));
    assert!(warned.contains(why), "{warned}");
    let metrics = member.metrics();
    assert!(
        metrics.lines().any(|l| l == "attribution_exactly_once 0"),
        "{metrics}"
    );
}

fn tansu_with_topics() -> Broker {
    let broker = Broker::start_sqlite();
    let topics: Vec<(&str, i32)> = INPUTS.iter().map(|t| (*t, PARTITIONS)).collect();
    create_topics(&broker.addr, &topics);
    broker
}

#[test]
fn required_on_tansu_stops_start_up_naming_the_key_and_the_fix() {
    let _turn = turn();
    let broker = tansu_with_topics();
    let (code, text) = exits(&config(&broker.addr, free_tcp_port(), "required"));
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("attribution.transactions = \"required\", but"),
        "{text}"
    );
    assert!(text.contains("EndTxn"), "names what tansu lacks: {text}");
    assert!(
        text.contains("attribution.transactions = \"auto\""),
        "{text}"
    );
}

#[test]
fn auto_on_tansu_runs_at_least_once_and_says_why() {
    let _turn = turn();
    let broker = tansu_with_topics();
    let status = free_tcp_port();
    let started = Instant::now();
    let member = Member::start(&config(&broker.addr, status, "auto"), status);
    assert_at_least_once(&member, "EndTxn");
    // The probe costs a start-up well under the session timeout.
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn off_runs_at_least_once_without_a_probe() {
    let _turn = turn();
    let broker = tansu_with_topics();
    let status = free_tcp_port();
    let member = Member::start(&config(&broker.addr, status, "off"), status);
    let text = member.log_text();
    assert!(text.contains("guarantee=\"at least once"), "{text}");
    assert!(!text.contains("transactions are not available"), "{text}");
    assert!(member
        .metrics()
        .lines()
        .any(|l| l == "attribution_exactly_once 0"));
}

#[test]
fn a_bad_value_stops_start_up_naming_the_key_and_the_values() {
    let (code, text) = exits(&config("127.0.0.1:1", free_tcp_port(), "yes"));
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("attribution.transactions"), "{text}");
    assert!(text.contains("auto, required, off"), "{text}");
}

/// A mock cluster in this process with the members' topics; a member
/// process connects to it over localhost.
fn mock_with_topics() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let mock = MockCluster::new(1).unwrap();
    for topic in INPUTS
        .iter()
        .chain(&["pixel.attribution-state", "pixel.attributions"])
    {
        mock.create_topic(topic, PARTITIONS, 1).unwrap();
    }
    mock
}

#[test]
fn required_on_the_mock_cluster_stops_start_up_it_drops_transaction_offsets() {
    let _turn = turn();
    let mock = mock_with_topics();
    let (code, text) = exits(&config(
        &mock.bootstrap_servers(),
        free_tcp_port(),
        "required",
    ));
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("attribution.transactions = \"required\", but"),
        "{text}"
    );
    assert!(text.contains("did not apply the offset"), "{text}");
}

/// On the mock, `auto` falls back to at least once and the member still
/// credits every conversion once (no fault here, so no repeat).
#[test]
fn auto_on_the_mock_cluster_runs_at_least_once_and_credits_every_conversion() {
    let _turn = turn();
    let mock = mock_with_topics();
    let brokers = mock.bootstrap_servers();
    let status = free_tcp_port();
    let text = cluster_config(
        &brokers,
        free_tcp_port(),
        status,
        &[("grace_ms", "5000".into())],
    );
    let member = Member::start(&write_config(&text), status);
    assert_at_least_once(&member, "did not apply the offset");

    let cfg = parsed(&text);
    let t0 = pixeld::telemetry::now_ms() - 1_000;
    let mut events = Vec::new();
    for i in 0..50u64 {
        let uid = UserId::generate().to_hex().as_str().to_string();
        events.push((EventType::Impression, event("impression", t0 + i, &uid)));
        events.push((EventType::Conversion, event("conversion", t0 + i + 1, &uid)));
    }
    publish(&producer(&brokers), &cfg.kafka.topics, &events);
    let want = reference(&cfg, &events);
    let read = read_all(
        &brokers,
        "pixel.attributions",
        |r| r.len() >= want.len(),
        Duration::from_secs(60),
        Duration::from_secs(2),
    );
    let mut got: HashMap<String, Value> = HashMap::new();
    for r in &read {
        let json = r.json();
        let c = json["conversion_event_id"].as_str().unwrap().to_string();
        assert!(got.insert(c, json).is_none(), "a repeat without a fault");
    }
    assert_eq!(got.len(), want.len(), "a record for every conversion");
    for (c, record) in &want {
        assert_eq!(got.get(c), Some(record), "conversion {c}");
    }
}

fn event(kind: &str, ts: u64, uid: &str) -> Value {
    let id = EventId::new_v7(ts).to_hyphenated().as_str().to_string();
    match kind {
        "impression" => json!({"event_id": id, "type": "impression", "ts": ts, "uid": uid,
            "tracker_id": 2766, "line_item_id": 5001, "publisher_id": 777, "placement_id": 4242}),
        _ => json!({"event_id": id, "type": "conversion", "ts": ts, "uid": uid,
            "pixel_id": 7313, "advertiser_id": 100}),
    }
}

/// Exactly once across a `kill -9`, as a `read_committed` reader sees it:
/// what a killed member leaves is covered by its committed offsets, and its
/// replacement (the same `transactional.id`: same host, same listener
/// port) gives one record per conversion. On noida-db (see the top of this
/// file), or a fresh broker named by `PIXELD_TXN_BROKERS`; on tansu or the
/// mock the member refuses to start (`required`), and the test fails, as
/// it should.
#[test]
fn a_member_killed_mid_stream_leaves_only_committed_records_and_its_replacement_answers_once() {
    let _turn = turn();
    let noida = std::env::var("PIXELD_TXN_BROKERS")
        .is_err()
        .then(TransactionalBroker::start);
    let brokers = match &noida {
        Some(b) => b.brokers.clone(),
        None => std::env::var("PIXELD_TXN_BROKERS").unwrap(),
    };
    let topics: Vec<(&str, i32)> = INPUTS.iter().map(|t| (*t, PARTITIONS)).collect();
    create_topics(&brokers, &topics);
    let status = free_tcp_port();
    // Static membership (KIP-345): the replacement, with the killed
    // member's instance id, takes its partitions over at once instead of
    // after the session timeout; on noida-db, whose coordinator never
    // evicts a member that died without leaving, only this way.
    let text = cluster_config(
        &brokers,
        free_tcp_port(),
        status,
        &[("grace_ms", "1000".into()), ("transactions", q("required"))],
    ) + "\n[kafka.librdkafka]\n\"group.instance.id\" = \"pixeld-txn-test-member\"\n";
    let cfg = parsed(&text);
    let path = write_config(&text);
    let mut first = Member::start(&path, status);
    assert!(first
        .log_text()
        .contains("guarantee=\"exactly once for read_committed readers"));
    let producer = producer(&brokers);
    let mut events = Vec::new();
    for wave in 0..20u64 {
        let t = pixeld::telemetry::now_ms();
        let mut batch = Vec::new();
        for i in 0..20u64 {
            let uid = UserId::generate().to_hex().as_str().to_string();
            batch.push((EventType::Impression, event("impression", t + i, &uid)));
            batch.push((EventType::Conversion, event("conversion", t + i + 1, &uid)));
        }
        publish(&producer, &cfg.kafka.topics, &batch);
        events.extend(batch);
        if wave == 10 {
            first.kill9();
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    // What the dead member left: only records its committed offsets cover.
    let position = conversion_positions(&brokers, events.len() / 2);
    let committed = committed_conversions(&brokers, &cfg.attribution.group_id);
    let left = read_all(
        &brokers,
        "pixel.attributions",
        |_| false,
        Duration::from_secs(5),
        Duration::ZERO,
    );
    for r in &left {
        let c = r.json()["conversion_event_id"]
            .as_str()
            .unwrap()
            .to_string();
        let (p, o) = position[&c];
        assert!(
            committed.get(&p).is_some_and(|&at| o < at),
            "record of {c} (partition {p}, offset {o}) visible past the committed offsets {committed:?}"
        );
    }
    let second = Member::start(&path, status);
    let want = reference(&cfg, &events);
    let read = read_all(
        &brokers,
        "pixel.attributions",
        |r| r.len() >= want.len(),
        Duration::from_secs(120),
        Duration::from_secs(5),
    );
    let mut got: HashMap<String, Value> = HashMap::new();
    for r in &read {
        let json = r.json();
        let c = json["conversion_event_id"].as_str().unwrap().to_string();
        assert!(got.insert(c.clone(), json).is_none(), "two records for {c}");
    }
    assert_eq!(
        got.len(),
        want.len(),
        "a record for every conversion; the replacement's log:\n{}",
        second.log_text()
    );
}

/// noida-db on a free port, empty, for one test (`scripts/kafka.sh`, which
/// installs it from PyPI on first use); stopped when dropped.
struct TransactionalBroker {
    brokers: String,
}

impl TransactionalBroker {
    fn start() -> TransactionalBroker {
        let port = free_tcp_port();
        let out = std::process::Command::new("bash")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka.sh"))
            .arg(port.to_string())
            .output()
            .expect("scripts/kafka.sh");
        assert!(
            out.status.success(),
            "scripts/kafka.sh could not start noida-db: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        TransactionalBroker {
            brokers: format!("127.0.0.1:{port}"),
        }
    }
}

impl Drop for TransactionalBroker {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka.sh"))
            .arg("stop")
            .output();
    }
}

/// Each conversion's (partition, offset) on the conversions topic.
fn conversion_positions(brokers: &str, n: usize) -> HashMap<String, (i32, i64)> {
    read_all(
        brokers,
        "pixel.conversions",
        |r| r.len() >= n,
        Duration::from_secs(30),
        Duration::ZERO,
    )
    .iter()
    .map(|r| {
        let id = r.json()["event_id"].as_str().unwrap().to_string();
        (id, (r.partition, r.offset))
    })
    .collect()
}

/// The group's committed offset of each conversions partition.
fn committed_conversions(brokers: &str, group: &str) -> HashMap<i32, i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition("pixel.conversions", p);
    }
    c.committed_offsets(tpl, Duration::from_secs(10))
        .unwrap()
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}
