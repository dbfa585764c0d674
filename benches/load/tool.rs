//! Helpers for `benches/load/compare.sh` that need pixeld's own code or a
//! Kafka client (Debian's kcat cannot talk to tansu):
//!
//!   load-tool cookies SECRET N        N signed `uid=...` cookies, one per line
//!   load-tool count BROKERS TOPIC...  consume each topic from the start and
//!                                     print {"topic": [messages, distinct event ids]}

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
        _ => {
            eprintln!("usage: load-tool cookies SECRET N | load-tool count BROKERS TOPIC...");
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

/// Every partition from the beginning until nothing arrived for 3 s: the
/// broker's high watermark is not a reliable count on tansu.
fn count_topic(brokers: &str, topic: &str) -> (u64, usize) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "pixeld-load-count")
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
