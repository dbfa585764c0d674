//! Reading pixeld's topics back, as a consumer team would.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;

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

/// (partition, key) of every message of `topic`'s partitions `0..partitions`
/// ([`super::cluster::PARTITIONS`] of them), read until `n` arrived (or 30 s
/// passed).
pub fn keys_by_partition(
    brokers: &str,
    topic: &str,
    partitions: i32,
    n: usize,
) -> Vec<(i32, Option<String>)> {
    assert_eq!(
        partitions,
        super::cluster::PARTITIONS,
        "the readers read six partitions"
    );
    super::cluster::read_all(
        brokers,
        topic,
        |r| r.len() >= n,
        Duration::from_secs(30),
        Duration::ZERO,
    )
    .into_iter()
    .map(|r| (r.partition, (!r.key_is_null).then_some(r.key)))
    .collect()
}
