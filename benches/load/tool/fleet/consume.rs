//! Reading topics from the start, or from a time. tansu's high watermarks
//! are no count (they can stop inside the last batch), so the reader keeps
//! one consumer per topic: the partition-EOF events it reports then name
//! their topic, and a topic is caught up once each of its partitions
//! reported EOF.
//!
//! From a time: each check of a long campaign read every topic from the
//! start, so the broker served a little more per cycle until, at cycle 13
//! of 30, it fell behind (benches/results/faults-cluster-2026-12-04.txt). A
//! cycle's users are new, so its check reads from shortly before it. The
//! broker's offset for that time is not trusted: the reader starts one
//! message earlier and requires that message to be older than the time,
//! and else reads that partition from the start.

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
    /// Partitions started from a time whose first message must still show
    /// that nothing after the time was skipped.
    unproven: HashSet<i32>,
    from_ms: i64,
}

/// Every partition of some topics from the beginning.
pub struct Reader {
    topics: Vec<TopicReader>,
}

impl Reader {
    /// Fails when a topic's metadata cannot be had (the broker is down or
    /// broken).
    /// Reads messages from `from_ms` on (0: everything).
    pub fn new(brokers: &str, topics: &[&str], from_ms: u64) -> Result<Reader, String> {
        let topics = topics
            .iter()
            .map(|t| topic_reader(brokers, t, from_ms as i64));
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
                Ok(m) if self.unproven.remove(&m.partition()) && !self.older(&m) => {
                    // The broker's offset for the time skipped messages.
                    let (topic, p) = (self.topic.clone(), m.partition());
                    drop(m);
                    self.at_eof.remove(&p);
                    if let Err(e) =
                        self.consumer
                            .seek(&topic, p, Offset::Beginning, Duration::from_secs(10))
                    {
                        eprintln!("fleet-check: rereading {topic}/{p} from the start: {e}");
                    }
                }
                Ok(m) => {
                    return Some(Msg {
                        topic: self.topic.clone(),
                        partition: m.partition(),
                        offset: m.offset(),
                        payload: m.payload().unwrap_or_default().to_vec(),
                    })
                }
                // At the end before any message: nothing there to prove
                // a skip with, and nothing read after the offset either;
                // the partition is then read from the start.
                Err(KafkaError::PartitionEOF(p)) if self.unproven.remove(&p) => {
                    let topic = self.topic.clone();
                    if let Err(e) =
                        self.consumer
                            .seek(&topic, p, Offset::Beginning, Duration::from_secs(10))
                    {
                        eprintln!("fleet-check: rereading {topic}/{p} from the start: {e}");
                    }
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

impl TopicReader {
    /// Whether `m`, the first message of a partition started from a time,
    /// is older than it (else the start may have skipped messages).
    fn older(&self, m: &rdkafka::message::BorrowedMessage<'_>) -> bool {
        m.offset() == 0 || m.timestamp().to_millis().is_some_and(|t| t < self.from_ms)
    }
}

/// Where each partition starts: one message before the broker's offset for
/// `from_ms` (then unproven), or the beginning.
fn starts(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
    from_ms: i64,
) -> (TopicPartitionList, HashSet<i32>) {
    let mut tpl = TopicPartitionList::new();
    let mut unproven = HashSet::new();
    let mut asked = TopicPartitionList::new();
    for p in partitions {
        asked
            .add_partition_offset(topic, *p, Offset::Offset(from_ms))
            .expect("partition");
    }
    let found = match from_ms {
        0 => None,
        _ => consumer
            .offsets_for_times(asked, Duration::from_secs(30))
            .ok(),
    };
    for p in partitions {
        let at = found
            .as_ref()
            .and_then(|f| f.find_partition(topic, *p))
            .map(|e| e.offset());
        let start = match at {
            Some(Offset::Offset(o)) if o > 0 => {
                unproven.insert(*p);
                Offset::Offset(o - 1)
            }
            _ => Offset::Beginning,
        };
        tpl.add_partition_offset(topic, *p, start)
            .expect("partition");
    }
    (tpl, unproven)
}

fn topic_reader(brokers: &str, topic: &str, from_ms: i64) -> Result<TopicReader, String> {
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
    let ids: Vec<i32> = meta
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let (tpl, unproven) = starts(&consumer, topic, &ids, from_ms);
    consumer.assign(&tpl).expect("assign");
    Ok(TopicReader {
        topic: topic.to_string(),
        consumer,
        partitions: tpl.count(),
        at_eof: HashSet::new(),
        unproven,
        from_ms,
    })
}
