//! Reading topics from the start. tansu's high watermarks are no count (they
//! can stop inside the last batch), so the reader keeps one consumer per
//! topic: the partition-EOF events it reports then name their topic, and a
//! topic is caught up once each of its partitions reported EOF.

use std::collections::HashSet;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

/// One message, owned.
pub struct Msg {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub payload: Vec<u8>,
}

struct TopicReader {
    topic: String,
    consumer: BaseConsumer,
    partitions: usize,
    at_eof: HashSet<i32>,
}

/// Every partition of some topics from the beginning.
pub struct Reader {
    topics: Vec<TopicReader>,
}

impl Reader {
    /// Fails when a topic's metadata cannot be had (the broker is down or
    /// broken).
    pub fn new(brokers: &str, topics: &[&str]) -> Result<Reader, String> {
        let topics = topics.iter().map(|t| topic_reader(brokers, t));
        Ok(Reader {
            topics: topics.collect::<Result<_, _>>()?,
        })
    }

    /// The next message of any topic, waiting up to 100 ms for one.
    pub fn poll(&mut self) -> Option<Msg> {
        for _ in 0..2 {
            for t in &mut self.topics {
                if let Some(m) = t.poll() {
                    return Some(m);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Every partition of every topic reported EOF at least once.
    pub fn caught_up(&self) -> bool {
        self.topics
            .iter()
            .all(|t| t.partitions > 0 && t.at_eof.len() >= t.partitions)
    }
}

impl TopicReader {
    fn poll(&mut self) -> Option<Msg> {
        loop {
            match self.consumer.poll(Duration::ZERO)? {
                Ok(m) => {
                    return Some(Msg {
                        topic: self.topic.clone(),
                        partition: m.partition(),
                        offset: m.offset(),
                        payload: m.payload().unwrap_or_default().to_vec(),
                    })
                }
                Err(KafkaError::PartitionEOF(p)) => {
                    self.at_eof.insert(p);
                }
                // Broker restarts and the like: the client reconnects itself.
                Err(e) => eprintln!("fleet-check: reading {}: {e}", self.topic),
            }
        }
    }
}

fn topic_reader(brokers: &str, topic: &str) -> Result<TopicReader, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "pixeld-fleet-check")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .expect("a consumer");
    let meta = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .map_err(|e| format!("metadata of {topic}: {e}"))?;
    let mut tpl = TopicPartitionList::new();
    for t in meta.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .expect("partition");
        }
    }
    consumer.assign(&tpl).expect("assign");
    Ok(TopicReader {
        topic: topic.to_string(),
        consumer,
        partitions: tpl.count(),
        at_eof: HashSet::new(),
    })
}
