//! The commit: records decided so far, then each changed user's state to
//! the changelog, then a wait until Kafka acknowledged all of it, and only
//! then the input offsets those writes cover. Records come first so that no
//! commit, including the one a revoke makes in the middle of a batch, ever
//! passes a conversion whose record is not in Kafka.

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};
use tracing::warn;

use super::inputs::InputTopic;
use super::work::Work;
use super::ClusterError;
use crate::ids::UserId;
use crate::telemetry::metric;

/// What a commit did; none of these stops the member.
#[derive(Debug)]
pub enum Committed {
    /// Offsets committed.
    Done,
    /// Nothing new to commit.
    Unchanged,
    /// The group refused or did not answer: the next interval covers these
    /// offsets too.
    Failed,
    /// This member no longer owns its partitions (its assignment was lost,
    /// or it stalled past the session timeout): nothing was produced or
    /// committed, and its state must not be kept.
    NotOwner,
}

impl Work {
    /// Produces the pending records, writes the changelog, waits for Kafka,
    /// commits. `owner` is false when the member must presume it lost its
    /// partitions.
    pub fn commit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        owner: bool,
    ) -> Result<Committed, ClusterError> {
        if !owner || consumer.assignment_lost() {
            return Ok(Committed::NotOwner);
        }
        self.publish()?;
        let offsets = self.write_changelog()?;
        self.output.flush()?;
        let listed = listed(&offsets);
        if listed.is_empty() || listed == self.last_committed {
            return Ok(Committed::Unchanged);
        }
        match consumer.commit(&offsets, CommitMode::Sync) {
            Ok(()) => {
                metric::cluster_commit(true);
                tracing::debug!(offsets = ?listed, "committed");
                self.last_committed = listed;
                for work in self.partitions.values_mut() {
                    if let Some(o) = work.committable()[InputTopic::Conversions] {
                        work.forget_decided(o);
                    }
                }
                Ok(Committed::Done)
            }
            Err(e) => {
                metric::cluster_commit(false);
                warn!(error = %e, "committing attribution input offsets failed; retried at the next commit");
                Ok(Committed::Failed)
            }
        }
    }

    /// Produces the records waiting in `outs`.
    pub fn publish(&mut self) -> Result<(), ClusterError> {
        let topic = &self.settings.topics.attributions;
        self.output.publish(topic, &mut self.outs)
    }

    /// Every changed user's state (or tombstone) to the changelog; returns
    /// the input offsets this covers.
    fn write_changelog(&mut self) -> Result<TopicPartitionList, ClusterError> {
        let topics = &self.settings.topics;
        let mut value = Vec::with_capacity(256);
        let mut writes: Vec<(i32, UserId, Option<Vec<u8>>)> = Vec::new();
        let mut offsets = TopicPartitionList::new();
        for (p, work) in self.partitions.iter_mut() {
            work.drain_dirty(&mut value, |uid, v| {
                writes.push((*p, uid, v.map(<[u8]>::to_vec)))
            });
            for (topic, offset) in work.committable().iter() {
                if let Some(o) = offset {
                    let _ =
                        offsets.add_partition_offset(&topics.inputs[topic], *p, Offset::Offset(*o));
                }
            }
        }
        let (mut states, mut tombstones) = (0u64, 0u64);
        for (p, uid, v) in &writes {
            let hex = uid.to_hex();
            let key = Some(hex.as_str().as_bytes());
            self.output
                .send(&topics.changelog, Some(*p), key, v.as_deref(), None)?;
            match v {
                Some(_) => states += 1,
                None => tombstones += 1,
            }
        }
        metric::cluster_produced("changelog", states);
        metric::cluster_produced("tombstone", tombstones);
        Ok(offsets)
    }
}

fn listed(offsets: &TopicPartitionList) -> Vec<(String, i32, i64)> {
    offsets
        .elements()
        .iter()
        .map(|e| {
            let o = match e.offset() {
                Offset::Offset(o) => o,
                _ => -1,
            };
            (e.topic().to_string(), e.partition(), o)
        })
        .collect()
}
