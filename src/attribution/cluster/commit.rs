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
        owner: impl Fn() -> bool,
    ) -> Result<Committed, ClusterError> {
        if !owner() || consumer.assignment_lost() {
            return Ok(Committed::NotOwner);
        }
        self.publish()?;
        let offsets = self.write_changelog()?;
        self.output.flush()?;
        // Asked again: the flush can wait long (a broker restarting), and a
        // member frozen meanwhile must not commit what it held before.
        if !owner() || consumer.assignment_lost() {
            return Ok(Committed::NotOwner);
        }
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
                        work.forget_decided(o, crate::telemetry::now_ms());
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

#[cfg(test)]
mod tests {
    //! On librdkafka's mock cluster (an in-process broker that keeps
    //! Kafka's rules).

    use std::sync::Arc;
    use std::time::Duration;

    use arc_swap::ArcSwap;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::mocking::MockCluster;
    use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

    use super::*;
    use crate::attribution::cluster::output::Output;
    use crate::attribution::cluster::partition::PartitionWork;
    use crate::attribution::cluster::{ClusterTopics, PerInput, Settings, Status};
    use crate::attribution::tests::{catalog, RULES};
    use crate::attribution::Input;
    use crate::event::ConversionInput;
    use crate::ids::{AdvertiserId, EventId, PixelId};

    const NAMES: [&str; InputTopic::COUNT] = ["imp", "clk", "conv", "seg", "adj"];

    fn settings(brokers: &str) -> Settings {
        let mut client = ClientConfig::new();
        client.set("bootstrap.servers", brokers);
        Settings {
            producer: client.clone(),
            consumer: client,
            group_id: "members".into(),
            topics: ClusterTopics {
                inputs: PerInput::from_fn(|t| NAMES[t.index()].to_string()),
                changelog: "state".into(),
                attributions: "records".into(),
            },
            grace_ms: 0,
            max_future_ms: 300_000,
            commit_interval: Duration::from_secs(1),
            sweep_interval: Duration::from_secs(60),
            session_timeout_ms: 10_000,
            max_users: usize::MAX,
        }
    }

    /// A revoke in the middle of a batch commits with records in hand
    /// (decided, not produced yet): before 2026-12-04 the commit passed
    /// their conversions' offsets without producing them, so a member that
    /// died then left those conversions without any record.
    #[test]
    fn a_commit_produces_the_records_in_hand_before_it_commits_their_offsets() {
        let mock = MockCluster::new(1).unwrap();
        for topic in NAMES.iter().chain(&["state", "records"]) {
            mock.create_topic(topic, 1, 1).unwrap();
        }
        let settings = settings(&mock.bootstrap_servers());
        let rules = Arc::new(ArcSwap::new(catalog(RULES)));
        let output = Output::new(&settings.producer).unwrap();
        let status = Arc::new(Status::default());
        let mut work = Work::new(settings.clone(), rules.clone(), status, output);
        let mut partition = PartitionWork::new(0, rules, 0, usize::MAX);
        let ts = crate::telemetry::now_ms();
        let conversion = Input::Conversion(ConversionInput {
            click: None,
            uid: Some(crate::ids::UserId(7)),
            event_id: EventId::new_v7(ts),
            ts_ms: ts,
            pixel: PixelId(101),
            advertiser: AdvertiserId(1),
            order_id: None,
            value_micros: None,
            context: None,
        });
        partition.push(InputTopic::Conversions, 0, conversion, ts, &mut work.outs);
        for t in InputTopic::ALL {
            partition.read_through(t, ts + 1);
        }
        partition.release(ts + 1, &mut work.outs);
        work.partitions.insert(0, partition);
        assert_eq!(work.outs.len(), 1, "one record in hand");

        let consumer: BaseConsumer = settings
            .consumer
            .clone()
            .set("group.id", "members")
            .create()
            .unwrap();
        let done = work.commit(&consumer, || true).unwrap();
        assert!(matches!(done, Committed::Done), "{done:?}");

        let mut tpl = TopicPartitionList::new();
        tpl.add_partition("conv", 0);
        let committed = consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .unwrap();
        let at = committed.find_partition("conv", 0).unwrap().offset();
        assert_eq!(
            at,
            Offset::Offset(1),
            "the conversion's offset is committed"
        );
        let reader: BaseConsumer = settings
            .consumer
            .clone()
            .set("group.id", "reader")
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        reader.subscribe(&["records"]).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let record = loop {
            assert!(std::time::Instant::now() < deadline, "no record in Kafka");
            if let Some(Ok(m)) = reader.poll(Duration::from_millis(100)) {
                break m.detach();
            }
        };
        let json: serde_json::Value = serde_json::from_slice(record.payload().unwrap()).unwrap();
        assert_eq!(json["uid"], crate::ids::UserId(7).to_hex().as_str());
    }

    #[test]
    fn a_member_that_is_not_the_owner_produces_and_commits_nothing() {
        let mock = MockCluster::new(1).unwrap();
        let settings = settings(&mock.bootstrap_servers());
        let rules = Arc::new(ArcSwap::new(catalog(RULES)));
        let output = Output::new(&settings.producer).unwrap();
        let mut work = Work::new(settings.clone(), rules, Arc::new(Status::default()), output);
        let consumer: BaseConsumer = settings
            .consumer
            .clone()
            .set("group.id", "members")
            .create()
            .unwrap();
        let done = work.commit(&consumer, || false).unwrap();
        assert!(matches!(done, Committed::NotOwner), "{done:?}");
    }
}
