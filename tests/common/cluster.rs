//! The cluster tests' parts: configs for `serve` in cluster mode and for
//! `pixeld attribute` members, members as real processes, topics created and
//! read across all partitions, synthetic events, and the reference: the
//! single-node engine fed the consumed events sorted by time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use pixeld::attribution::{Attribution, Engine, Input, State};
use pixeld::config::{Catalog, Config};
use pixeld::event::EventType;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::DefaultProducerContext;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;

use super::config::{config_text, fresh_dir, q};
use super::process::{raw_get, Background, Process};

pub const PARTITIONS: i32 = 6;

/// One fleet at a time: each test runs a broker, two or three members and
/// serve instances; six of them at once on a 2-core machine starve the
/// members' heartbeats into rebalance storms that no deployment sees.
pub fn turn() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    eprintln!("in-process members log to {}", member_log().display());
    turn
}

/// Where the members started in this test process (`Member::start`) log:
/// a failed test names the file, so its members' own account of the
/// rebalances, restores and commits is there to read.
pub fn member_log() -> &'static Path {
    static LOG: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("pixeld-members-{}.log", std::process::id()));
        let file = std::fs::File::create(&path).expect("member log");
        let _ = tracing_subscriber::fmt()
            .with_env_filter("pixeld=debug,librdkafka=debug,info")
            .with_writer(std::sync::Mutex::new(file))
            .with_ansi(false)
            .try_init();
        path
    })
}

/// The example config for a fleet on `brokers`: serve on `port`, in cluster
/// mode, 6 partitions; a member's listener on `status_port`; `attribution`
/// holds further `[attribution]` lines (`key = value`).
pub fn cluster_config(
    brokers: &str,
    port: u16,
    status_port: u16,
    attribution: &[(&str, String)],
) -> String {
    let data = fresh_dir();
    let mut text = config_text(&[
        ("brokers", q(brokers)),
        ("listen", q(format!("127.0.0.1:{port}"))),
        ("data_dir", q(data.display().to_string())),
        ("partitions", PARTITIONS.to_string()),
        ("linger_ms", "5".into()),
        ("secure", "false".into()),
        ("mode", q("cluster")),
        ("commit_interval_ms", "200".into()),
    ]);
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let at = lines.iter().position(|l| l == "[attribution]").unwrap();
    let mut set = |key: &str, value: String| {
        let i = lines[at..]
            .iter()
            .position(|l| l.starts_with(&format!("{key} =")))
            .map(|i| i + at)
            .unwrap_or_else(|| panic!("no `{key} =` in [attribution]"));
        lines[i] = format!("{key} = {value}");
    };
    set("listen", q(format!("127.0.0.1:{status_port}")));
    for (k, v) in attribution {
        set(k, v.clone());
    }
    text = lines.join("\n");
    text
}

/// Writes `text` to a fresh file.
pub fn write_config(text: &str) -> PathBuf {
    let path = fresh_dir().join("pixeld.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The parsed form of a config text.
pub fn parsed(text: &str) -> Config {
    pixeld::config::parse(text, "test.toml").unwrap()
}

/// `pixeld attribute` as a real process.
pub struct Member(pub Background);

impl Member {
    /// Starts a member and waits until its `/readyz` says ready.
    pub fn start(config: &Path, status_port: u16) -> Member {
        let log = fresh_dir().join("attribute.log");
        let m = Member::spawn(config, status_port, &log);
        m.wait_ready();
        m
    }

    pub fn spawn(config: &Path, status_port: u16, log: &Path) -> Member {
        let env = [("RUST_LOG", "info,pixeld::attribution::cluster=trace")];
        Member(Background::spawn(
            "attribute",
            config,
            status_port,
            log,
            &env,
        ))
    }
}

impl std::ops::Deref for Member {
    type Target = Background;
    fn deref(&self) -> &Background {
        &self.0
    }
}

impl std::ops::DerefMut for Member {
    fn deref_mut(&mut self) -> &mut Background {
        &mut self.0
    }
}

/// `pixeld serve` on a cluster config.
pub fn serve(config_text: &str, port: u16) -> Process {
    let path = write_config(config_text);
    let log = fresh_dir().join("serve.log");
    Process::start(&path, port, &log)
}

/// Creates `topics` (name, partitions) on `brokers`.
pub fn create_topics(brokers: &str, topics: &[(&str, i32)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(t, n)| NewTopic::new(t, *n, TopicReplication::Fixed(1)))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let results = rt
        .block_on(admin.create_topics(&new, &AdminOptions::new()))
        .unwrap();
    for r in results {
        r.unwrap();
    }
}

/// A message of any partition.
#[derive(Debug, Clone)]
pub struct Read {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    /// A NULL key, as the producer gives an event without a user (`key` is
    /// then empty, which an empty key would be too).
    pub key_is_null: bool,
    /// None for a tombstone.
    pub payload: Option<Vec<u8>>,
    pub kind: String,
}

impl Read {
    pub fn json(&self) -> Value {
        serde_json::from_slice(self.payload.as_ref().expect("not a tombstone")).unwrap()
    }
}

/// Reads every partition of `topic` from the beginning until `done` says
/// so (or `limit` passes), then `settle` longer so that extra messages show.
/// `done` is asked after every message: keep it cheap (look at the new ones).
pub fn read_all(
    brokers: &str,
    topic: &str,
    done: impl FnMut(&[Read]) -> bool,
    limit: Duration,
    settle: Duration,
) -> Vec<Read> {
    read_topics(brokers, &[topic], done, limit, settle)
}

/// [`read_all`] over several topics at once.
pub fn read_topics(
    brokers: &str,
    topics: &[&str],
    mut done: impl FnMut(&[Read]) -> bool,
    limit: Duration,
    settle: Duration,
) -> Vec<Read> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "pixeld-tests")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let start = Instant::now();
    let mut settled: Option<Instant> = None;
    loop {
        if settled.is_none() && done(&out) {
            settled = Some(Instant::now() + settle);
        }
        if settled.is_some_and(|s| Instant::now() > s) || start.elapsed() > limit {
            return out;
        }
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let kind = m
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == "type").and_then(|h| h.value))
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            out.push(Read {
                topic: m.topic().to_string(),
                partition: m.partition(),
                offset: m.offset(),
                key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                key_is_null: m.key().is_none(),
                payload: m.payload().map(<[u8]>::to_vec),
                kind,
            });
        }
    }
}

/// The attribution engine's input of a consumed event, with its topic's type.
pub fn input_of(kind: EventType, json: &Value) -> Option<Input> {
    Input::from_json(kind, json.to_string().as_bytes())
}

/// What the single-node engine publishes when fed `events` sorted by time
/// (ties by event id): the record of each conversion, as JSON, by
/// `conversion_event_id`.
pub fn reference(cfg: &Config, events: &[(EventType, Value)]) -> HashMap<String, Value> {
    let mut inputs: Vec<Input> = events.iter().filter_map(|(k, j)| input_of(*k, j)).collect();
    inputs.sort_by_key(|i| (i.ts_ms(), i.event_id()));
    let catalog = Arc::new(ArcSwap::new(Catalog::new(cfg).unwrap()));
    let engine = Engine::new(Arc::new(State::default()), catalog);
    let mut out = HashMap::new();
    for input in inputs {
        if let Some(record) = engine.apply(input) {
            out.insert(
                record
                    .conversion
                    .event_id
                    .to_hyphenated()
                    .as_str()
                    .to_string(),
                json_of(&record),
            );
        }
    }
    out
}

pub fn json_of(record: &Attribution) -> Value {
    let mut buf = Vec::new();
    record.encode(&mut buf);
    serde_json::from_slice(&buf).unwrap()
}

/// A producer keyed like pixeld's (the Java client's murmur2).
pub fn producer(brokers: &str) -> ThreadedProducer<Deliveries> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .create_with_context(Deliveries::default())
        .unwrap()
}

/// The test producer's failed deliveries, by the message's index: a flush
/// only says the queue is empty, not that the broker took every message. A
/// test that blamed the member for inputs the broker never stored would
/// hunt the wrong bug (seen 3 of 10 runs under stress-ng and two builds: the
/// member found every input partition empty 10 s after the publish).
#[derive(Default)]
pub struct Deliveries {
    failed: std::sync::Mutex<Vec<(usize, String)>>,
}

impl rdkafka::ClientContext for Deliveries {}

impl rdkafka::producer::ProducerContext for Deliveries {
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, index: usize) {
        if let Err((e, m)) = result {
            let what = format!("{}/{}: {e}", m.topic(), m.partition());
            self.failed.lock().unwrap().push((index, what));
        }
    }
}

/// Flushes `producer` and asserts that the broker took every message.
pub fn flushed(producer: &ThreadedProducer<Deliveries>) {
    producer.flush(Duration::from_secs(30)).unwrap();
    let failed = producer.context().failed.lock().unwrap();
    assert!(
        failed.is_empty(),
        "the broker refused test messages: {failed:?}"
    );
}

/// Publishes `events` in the given order to their topics, keyed by uid,
/// and makes sure the broker stored every one: a failed message is sent
/// again (at most five rounds), as a producer with retries would.
pub fn publish(
    producer: &ThreadedProducer<Deliveries>,
    topics: &pixeld::config::TopicsConfig,
    events: &[(EventType, Value)],
) {
    let mut todo: Vec<usize> = (0..events.len()).collect();
    for round in 0..5 {
        for &i in &todo {
            let (kind, json) = &events[i];
            let topic = match kind {
                EventType::Impression => &topics.impressions,
                EventType::Click => &topics.clicks,
                _ => &topics.conversions,
            };
            let key = json["uid"].as_str().unwrap_or_default().to_string();
            let payload = json.to_string();
            // The record's time is the event's, as pixeld's producers set it.
            let ts = json["ts"].as_i64().unwrap_or_default();
            let record = BaseRecord::with_opaque_to(topic, i)
                .key(&key)
                .payload(&payload)
                .timestamp(ts);
            producer.send(record).map_err(|(e, _)| e).unwrap();
        }
        producer.flush(Duration::from_secs(30)).unwrap();
        let failed = std::mem::take(&mut *producer.context().failed.lock().unwrap());
        if failed.is_empty() {
            return;
        }
        eprintln!(
            "publish round {round}: the broker refused {} inputs, first {:?}",
            failed.len(),
            failed[0]
        );
        todo = failed.into_iter().map(|(i, _)| i).collect();
        todo.sort_unstable();
        std::thread::sleep(Duration::from_secs(1));
    }
    panic!("the broker refused {} test inputs five times", todo.len());
}
