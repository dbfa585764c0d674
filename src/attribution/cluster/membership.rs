//! The member in its group: the rebalance callback (commit what is safe
//! before partitions go, restore what comes), a rejoin (a fresh assignment),
//! and the group's and the log's progress as Kafka reports it.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{info, warn};

use super::commit::Committed;
use super::inputs::InputTopic;
use super::poll::{BrokerTrouble, Liveness};
use super::work::Work;
use super::ClusterError;
use crate::telemetry::{metric, RateLimit};

/// The member's consumer context: rebalances reach the [`Work`] through it.
pub struct MemberCtx {
    pub work: Arc<Mutex<Work>>,
    pub log: RateLimit,
    /// Whether the member thread stalled past the session timeout: a
    /// revoke then commits nothing ([`Liveness`]).
    pub liveness: Arc<Liveness>,
    /// Set when every broker is down ([`BrokerTrouble`]).
    pub trouble: Arc<BrokerTrouble>,
}

impl ClientContext for MemberCtx {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        crate::telemetry::librdkafka_log(&self.log, level, fac, message);
    }

    /// Not logged (rdkafka's default logs the whole statistics at INFO);
    /// the producer's are exported as metrics.
    fn stats(&self, _: rdkafka::Statistics) {}

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        // Only a lost cluster counts: single connections drop and come
        // back routinely (idle timeouts) without producers falling behind.
        if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown) {
            self.trouble.now();
        }
        crate::telemetry::kafka_client_error(&self.log, &error, reason);
    }
}

impl ConsumerContext for MemberCtx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut work = self.work.lock().unwrap_or_else(|e| e.into_inner());
        work.status.joined.store(true, Ordering::Relaxed);
        match rebalance {
            Rebalance::Revoke(tpl) => {
                metric::cluster_rebalance("revoke");
                tracing::debug!(
                    partitions = tpl.count(),
                    lost = consumer.assignment_lost(),
                    "revoked"
                );
                // Produce and commit what is safe before the partitions go;
                // a member that lost its assignment commits nothing and
                // keeps nothing: another member owns the partitions now.
                let clean = match work.commit(consumer, || self.liveness.owner()) {
                    Ok(Committed::Done | Committed::Unchanged) => true,
                    Ok(Committed::Failed | Committed::NotOwner | Committed::Aborted) => false,
                    Err(e) => {
                        warn!(error = %e, "writing before a revoke failed; the next owner redoes it");
                        false
                    }
                };
                if let Err(e) = work.revoke(clean) {
                    // The member thread's next write meets the same dead
                    // producer and stops the member.
                    warn!(error = %e, "aborting the transaction before a revoke failed");
                }
            }
            Rebalance::Assign(tpl) => {
                metric::cluster_rebalance("assign");
                let mut parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                parts.sort_unstable();
                parts.dedup();
                info!(partitions = ?parts, "attribution partitions assigned");
                // Restored after the poll that assigned them returns, before
                // any of their messages is handled.
                work.pending = Some(parts);
                work.reassigned = true;
                work.status.restoring.store(true, Ordering::Relaxed);
            }
            Rebalance::Error(e) => warn!(error = %e, "consumer-group rebalance failed"),
        }
    }
}

/// Leaves the group and joins it again: a fresh generation and a fresh
/// assignment computed over the members alive now.
pub fn rejoin<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topics: &[&str],
    why: &str,
) -> Result<(), ClusterError> {
    warn!(why, "leaving and rejoining the attribution group");
    consumer.unsubscribe();
    // The revoke (and the LeaveGroup) run inside a poll.
    for _ in 0..5 {
        let _ = consumer.poll(Duration::from_millis(100));
    }
    consumer
        .subscribe(topics)
        .map_err(|e| ClusterError::kafka("subscribe", e))
}

/// (topic, partition) → offset, as Kafka reports it.
pub type Offsets = HashMap<(InputTopic, i32), i64>;

/// How long the member waits for the brokers' end offsets; an answer that
/// does not come within it is trouble with the brokers.
pub const END_OFFSETS_TIMEOUT: Duration = Duration::from_secs(5);

/// The log end of every input partition: one ListOffsets request (latest)
/// for all of them, answered by the broker now (not librdkafka's cache),
/// within [`END_OFFSETS_TIMEOUT`].
pub fn end_offsets<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    names: &super::PerInput<String>,
    partitions: impl Iterator<Item = i32> + Clone,
) -> Option<Offsets> {
    let mut tpl = TopicPartitionList::new();
    for (_, name) in names.iter() {
        for p in partitions.clone() {
            // The "timestamp" -1 asks for the latest offset.
            let _ = tpl.add_partition_offset(name, p, Offset::End);
        }
    }
    match consumer.offsets_for_times(tpl, END_OFFSETS_TIMEOUT) {
        Ok(found) => Some(collect(names, &found)),
        Err(e) => {
            warn!(error = %e, "asking Kafka for the inputs' end offsets failed");
            None
        }
    }
}

/// The group's committed offsets of every input partition (a partition
/// never committed is absent).
pub fn committed_offsets<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    names: &super::PerInput<String>,
    partitions: impl Iterator<Item = i32> + Clone,
) -> Option<Offsets> {
    let mut tpl = TopicPartitionList::new();
    for (_, name) in names.iter() {
        for p in partitions.clone() {
            let _ = tpl.add_partition(name, p);
        }
    }
    consumer
        .committed_offsets(tpl, Duration::from_secs(5))
        .ok()
        .map(|found| collect(names, &found))
}

fn collect(names: &super::PerInput<String>, tpl: &TopicPartitionList) -> Offsets {
    tpl.elements()
        .iter()
        .filter_map(|e| {
            let topic = names.position(e.topic())?;
            match e.offset() {
                Offset::Offset(o) if o >= 0 => Some(((topic, e.partition()), o)),
                _ => None,
            }
        })
        .collect()
}
