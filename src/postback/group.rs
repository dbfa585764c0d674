//! `pixeld forward` in its consumer group: the context that hears
//! rebalances, and the group's and the log's offsets as Kafka reports them
//! (for the lag and for partitions no live instance owns).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{info, warn};

use crate::telemetry::RateLimit;

/// What `/readyz` reports.
#[derive(Default)]
pub struct Status {
    /// An assignment has been received (perhaps empty: more instances
    /// than partitions).
    pub joined: AtomicBool,
    /// Partitions owned by no live instance, as last seen.
    pub orphaned: AtomicUsize,
    /// The loop ended (an error, or a finished drain).
    pub finished: AtomicBool,
}

/// A rebalance as the loop handles it, after the poll that ran it.
#[derive(Debug)]
pub enum Change {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
    /// A failed rebalance: rdkafka unassigns everything.
    Lost,
}

pub struct GroupCtx {
    pub changes: Mutex<Vec<Change>>,
    pub status: Arc<Status>,
    pub log: RateLimit,
}

impl ClientContext for GroupCtx {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        crate::telemetry::librdkafka_log(&self.log, level, fac, message);
    }

    fn stats(&self, _: rdkafka::Statistics) {}

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        crate::telemetry::kafka_client_error(&self.log, &error, reason);
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<i32> {
    let mut v: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
    v.sort_unstable();
    v.dedup();
    v
}

impl ConsumerContext for GroupCtx {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let change = match rebalance {
            Rebalance::Assign(tpl) => {
                self.status.joined.store(true, Ordering::Relaxed);
                info!(partitions = ?partitions(tpl), "forward partitions assigned");
                Change::Assigned(partitions(tpl))
            }
            Rebalance::Revoke(tpl) => {
                // Not ready until the next assignment (or while out of the group).
                self.status.joined.store(false, Ordering::Relaxed);
                Change::Revoked(partitions(tpl))
            }
            Rebalance::Error(e) => {
                warn!(error = %e, "consumer-group rebalance failed; every partition is dropped");
                self.status.joined.store(false, Ordering::Relaxed);
                Change::Lost
            }
        };
        self.changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(change);
    }
}

/// ((), partition) → offset, the shape [`crate::attribution::cluster::broker_quirks::Coverage`] reads.
pub type Offsets = HashMap<((), i32), i64>;

/// The log end of each partition, asked of the broker now.
pub fn ends(consumer: &BaseConsumer<GroupCtx>, topic: &str, count: i32) -> Option<Offsets> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..count {
        let _ = tpl.add_partition_offset(topic, p, Offset::End);
    }
    let found = consumer
        .offsets_for_times(tpl, Duration::from_secs(5))
        .map_err(|e| warn!(error = %e, "asking Kafka for the end offsets failed"))
        .ok()?;
    Some(collect(&found))
}

/// The group's committed offsets (a partition never committed is absent).
pub fn committed(consumer: &BaseConsumer<GroupCtx>, topic: &str, count: i32) -> Option<Offsets> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..count {
        let _ = tpl.add_partition(topic, p);
    }
    let found = consumer
        .committed_offsets(tpl, Duration::from_secs(5))
        .ok()?;
    Some(collect(&found))
}

fn collect(tpl: &TopicPartitionList) -> Offsets {
    tpl.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) if o >= 0 => Some((((), e.partition()), o)),
            _ => None,
        })
        .collect()
}

/// The partition count of `topic`, from the broker's metadata.
pub fn partition_count(consumer: &BaseConsumer<GroupCtx>, topic: &str) -> Option<i32> {
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .ok()?;
    let t = md.topics().iter().find(|t| t.name() == topic)?;
    (t.error().is_none() && !t.partitions().is_empty()).then(|| t.partitions().len() as i32)
}
