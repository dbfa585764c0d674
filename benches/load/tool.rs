//! Helpers for `benches/load/compare.sh` that need pixeld's own code or a
//! Kafka client (Debian's kcat cannot talk to tansu):
//!
//!   load-tool cookies SECRET N        N signed `uid=...` cookies, one per line
//!   load-tool count BROKERS TOPIC...  consume each topic from the start and
//!                                     print {"topic": [messages, distinct event ids]}
//!   load-tool inputs BROKERS USERS    create the attribution input topics (6
//!                                     partitions) and produce USERS users' events
//!                                     (an impression each, a click for one in
//!                                     two, a conversion for one in four), an
//!                                     hour old; print the counts
//!   load-tool changelog BROKERS TOPIC consume a changelog and print messages,
//!                                     bytes (keys and values), distinct keys

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use pixeld::config::CookieConfig;
use pixeld::http::cookie::{Cookies, Secret};
use pixeld::ids::UserId;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("cookies") if args.len() == 3 => cookies(&args[1], args[2].parse().expect("N")),
        Some("count") if args.len() >= 3 => count(&args[1], &args[2..]),
        Some("inputs") if args.len() == 3 => inputs(&args[1], args[2].parse().expect("USERS")),
        Some("changelog") if args.len() == 3 => changelog(&args[1], &args[2]),
        _ => {
            eprintln!("usage: load-tool cookies SECRET N | count BROKERS TOPIC... | inputs BROKERS USERS | changelog BROKERS TOPIC");
            std::process::exit(2);
        }
    }
}

fn cookies(secret: &str, n: usize) {
    let cfg = CookieConfig {
        secret: pixeld::config::Secret::parse(secret),
        ..CookieConfig::default()
    };
    let jar = Cookies::new(&cfg, Secret::generate());
    for _ in 0..n {
        println!("uid={}", jar.value(UserId::generate()));
    }
}

fn count(brokers: &str, topics: &[String]) {
    let mut out = BTreeMap::new();
    for topic in topics {
        out.insert(topic.clone(), count_topic(brokers, topic));
    }
    println!("{}", serde_json::to_string(&out).expect("json"));
}

/// A consumer of every partition of `topic` from the beginning.
fn reader(brokers: &str, topic: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "pixeld-load-tool")
        .set("enable.auto.commit", "false")
        .create()
        .expect("a consumer");
    let meta = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    for t in meta.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .expect("partition");
        }
    }
    consumer.assign(&tpl).expect("assign");
    consumer
}

/// Every partition from the beginning until nothing arrived for 3 s: the
/// broker's high watermark is not a reliable count on tansu.
fn count_topic(brokers: &str, topic: &str) -> (u64, usize) {
    let consumer = reader(brokers, topic);
    let (mut messages, mut ids) = (0u64, HashSet::new());
    let mut last = Instant::now();
    while last.elapsed() < Duration::from_secs(3) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            messages += 1;
            last = Instant::now();
            let id = m
                .payload()
                .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
                .and_then(|j| j["event_id"].as_str().map(String::from));
            ids.insert(id.unwrap_or_default());
        }
    }
    (messages, ids.len())
}

const INPUTS: [&str; 3] = ["pixel.impressions", "pixel.clicks", "pixel.conversions"];

fn inputs(brokers: &str, users: u64) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin");
    let new: Vec<NewTopic<'_>> = INPUTS
        .iter()
        .map(|t| NewTopic::new(t, 6, TopicReplication::Fixed(1)))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _ = rt.block_on(admin.create_topics(&new, &AdminOptions::new()));
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "50")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("compression.type", "lz4")
        .create()
        .expect("producer");
    let t0 = pixeld::telemetry::now_ms() - 3_600_000;
    let started = Instant::now();
    let mut counts = [0u64; 3];
    for i in 0..users {
        let uid = UserId::generate().to_hex();
        let uid = uid.as_str();
        let ts = t0 + i * 3_000_000 / users.max(1);
        let mut send = |kind: usize, ts: u64, body: String| {
            let mut record = BaseRecord::to(INPUTS[kind]).key(uid).payload(&body);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((_, r)) => {
                        record = r;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
            counts[kind] += 1;
            let _ = ts;
        };
        let id = |ts: u64| pixeld::ids::EventId::new_v7(ts).to_hyphenated();
        send(
            0,
            ts,
            format!(
                r#"{{"v":1,"event_id":"{}","type":"impression","ts":{ts},"uid":"{uid}","tracker_id":2766,"line_item_id":5001,"publisher_id":777,"placement_id":4242,"warnings":[]}}"#,
                id(ts).as_str()
            ),
        );
        if i % 2 == 0 {
            let t = ts + 1;
            send(
                1,
                t,
                format!(
                    r#"{{"v":1,"event_id":"{}","type":"click","ts":{t},"uid":"{uid}","tracker_id":21378,"line_item_id":5001,"publisher_id":777,"placement_id":4242,"warnings":[]}}"#,
                    id(t).as_str()
                ),
            );
        }
        if i % 4 == 0 {
            let t = ts + 2;
            send(
                2,
                t,
                format!(
                    r#"{{"v":1,"event_id":"{}","type":"conversion","ts":{t},"uid":"{uid}","pixel_id":7313,"advertiser_id":100,"order_id":"O{i}","value_micros":1000000,"warnings":[]}}"#,
                    id(t).as_str()
                ),
            );
        }
    }
    producer.flush(Duration::from_secs(300)).expect("flush");
    println!(
        r#"{{"users":{users},"impressions":{},"clicks":{},"conversions":{},"inputs":{},"produce_seconds":{:.2}}}"#,
        counts[0],
        counts[1],
        counts[2],
        counts.iter().sum::<u64>(),
        started.elapsed().as_secs_f64()
    );
}

fn changelog(brokers: &str, topic: &str) {
    let consumer = reader(brokers, topic);
    let (mut messages, mut bytes, mut keys) = (0u64, 0u64, HashSet::new());
    let mut last = Instant::now();
    while last.elapsed() < Duration::from_secs(3) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            messages += 1;
            last = Instant::now();
            bytes += (m.key_len() + m.payload_len()) as u64;
            keys.insert(m.key().unwrap_or_default().to_vec());
        }
    }
    println!(
        r#"{{"messages":{messages},"bytes":{bytes},"keys":{}}}"#,
        keys.len()
    );
}
