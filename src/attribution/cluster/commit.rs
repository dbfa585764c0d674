//! The commit. At least once: records decided so far, then each changed
//! user's state to the changelog, then a wait until Kafka acknowledged all
//! of it, and only then the input offsets those writes cover. Records come
//! first so that no commit, including the one a revoke makes in the middle
//! of a batch, ever passes a conversion whose record is not in Kafka.
//!
//! Transactional (Kafka Streams' `exactly_once_v2`): the same writes join
//! the open transaction, the input offsets are added to it with the
//! consumer's group metadata (the group coordinator refuses them from a
//! member of an older generation, which fences a zombie), and the
//! transaction commits: all of it becomes visible to `read_committed`
//! readers at once, or none of it.

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};
use tracing::warn;

use super::inputs::InputTopic;
use super::output::TxnFailed;
use super::work::Work;
use super::ClusterError;
use crate::event::input::PartitionKey;
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
    /// The transaction was aborted: none of its records, changelog writes
    /// or offsets is visible, but the state in memory applied its inputs,
    /// so it must not be kept: the partitions are restored again from the
    /// changelog and read from the committed offsets.
    Aborted,
}

impl Committed {
    /// Whether the state in memory may be kept: false when this member no
    /// longer owns its partitions or the transaction was aborted (the
    /// state applied inputs whose outputs are gone).
    pub fn state_is_current(&self) -> bool {
        match self {
            Committed::Done | Committed::Unchanged | Committed::Failed => true,
            Committed::NotOwner | Committed::Aborted => false,
        }
    }
}

impl Work {
    /// Produces the pending records, writes the changelog, commits (with a
    /// wait for Kafka, or in the transaction). `owner` is false when the
    /// member must presume it lost its partitions.
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
        if self.output.transactional() {
            return self.commit_transaction(consumer, owner, &offsets);
        }
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
                self.committed(listed);
                Ok(Committed::Done)
            }
            Err(e) => {
                metric::cluster_commit(false);
                warn!(error = %e, "committing attribution input offsets failed; retried at the next commit");
                Ok(Committed::Failed)
            }
        }
    }

    /// The open transaction, with `offsets` if they moved, committed.
    fn commit_transaction<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        owner: impl Fn() -> bool,
        offsets: &TopicPartitionList,
    ) -> Result<Committed, ClusterError> {
        // The broker fences a member of an older generation; this also
        // keeps a member that knows it stalled from trying.
        if !owner() || consumer.assignment_lost() {
            return Ok(Committed::NotOwner);
        }
        let listed = listed(offsets);
        let moved = !listed.is_empty() && listed != self.last_committed;
        let group = consumer.group_metadata();
        let with = match (&group, moved) {
            (Some(g), true) => Some((offsets, g)),
            (None, true) => {
                // Committing the writes without their offsets would
                // repeat them after a crash: this transaction goes.
                warn!("the consumer has no group metadata; aborting the attribution transaction");
                self.output.abort()?;
                return Ok(Committed::Aborted);
            }
            _ => None,
        };
        match self.output.commit(with) {
            Ok(()) if with.is_some() => {
                metric::cluster_commit(true);
                tracing::debug!(offsets = ?listed, "committed the transaction");
                self.committed(listed);
                Ok(Committed::Done)
            }
            Ok(()) => Ok(Committed::Unchanged),
            Err(TxnFailed::Aborted(e)) => {
                metric::cluster_commit(false);
                warn!(error = %e, "the attribution transaction was aborted; its partitions are restored from the changelog and read again from the committed offsets");
                Ok(Committed::Aborted)
            }
            Err(TxnFailed::Fatal(e)) => Err(e),
        }
    }

    /// `listed` is the group's committed position now.
    fn committed(&mut self, listed: Vec<(String, i32, i64)>) {
        self.last_committed = listed;
        for work in self.partitions.values_mut() {
            if let Some(o) = work.committable()[InputTopic::Conversions] {
                work.forget_decided(o, crate::telemetry::now_ms());
            }
        }
    }

    /// Produces the records waiting in `outs`, and sends on the
    /// adjustments the order index routed to their users' members.
    pub fn publish(&mut self) -> Result<(), ClusterError> {
        let topics = &self.settings.topics;
        self.output.publish(&topics.attributions, &mut self.outs)?;
        let by_user = &topics.inputs[InputTopic::AdjustmentsByUser];
        let mut routed = 0;
        for work in self.partitions.values_mut() {
            for (user, adjustment) in work.take_routed() {
                self.output.send_on(by_user, user, &adjustment)?;
                routed += 1;
            }
        }
        if routed > 0 {
            metric::cluster_produced("adjustment_by_user", routed);
        }
        Ok(())
    }

    /// Every changed user's state (or tombstone) to the changelog; returns
    /// the input offsets this covers.
    fn write_changelog(&mut self) -> Result<TopicPartitionList, ClusterError> {
        let topics = &self.settings.topics;
        let mut value = Vec::with_capacity(256);
        // (partition, key, value): users by their id, orders of the index
        // by their order key.
        let mut writes: Vec<(i32, Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        let mut offsets = TopicPartitionList::new();
        for (p, work) in self.partitions.iter_mut() {
            work.drain_dirty(&mut value, |uid, v| {
                let key = uid.to_hex().as_str().as_bytes().to_vec();
                writes.push((*p, key, v.map(<[u8]>::to_vec)))
            });
            work.drain_dirty_orders(|(pixel, order), v| {
                let key = PartitionKey::Order { pixel, order }.with_bytes(<[u8]>::to_vec);
                writes.push((*p, key, v.map(|v| v.to_vec())))
            });
            for (topic, offset) in work.committable().iter() {
                if let Some(o) = offset {
                    let _ =
                        offsets.add_partition_offset(&topics.inputs[topic], *p, Offset::Offset(*o));
                }
            }
        }
        let (mut states, mut tombstones) = (0u64, 0u64);
        for (p, key, v) in &writes {
            self.output
                .send(&topics.changelog, Some(*p), key, v.as_deref(), &[])?;
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
pub(super) mod tests {
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

    const NAMES: [&str; InputTopic::COUNT] =
        ["imp", "clk", "conv", "seg", "adj", "ord", "adj-by-user"];

    /// A member's settings on `brokers`, for the cluster's unit tests.
    pub(in crate::attribution::cluster) fn settings(brokers: &str) -> Settings {
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
            transactions: crate::config::Transactions::Auto,
            transactional_id: "members-test".into(),
        }
    }

    /// A mock cluster with the test's topics.
    fn mock() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
        let mock = MockCluster::new(1).unwrap();
        for topic in NAMES.iter().chain(&["state", "records"]) {
            mock.create_topic(topic, 1, 1).unwrap();
        }
        mock
    }

    /// A work with one owned partition 0 holding `n` decided conversions
    /// (users 1..=n), not produced yet.
    fn work_with_records(settings: &Settings, output: Output, n: u64) -> Work {
        let rules = Arc::new(ArcSwap::new(catalog(RULES)));
        let status = Arc::new(Status::default());
        let mut work = Work::new(settings.clone(), rules, status, output);
        decide_more(&mut work, 0, n);
        work
    }

    /// Decides `n` more conversions in the owned partition 0 (owned from
    /// offset 0 if it was not yet).
    fn decide_more(work: &mut Work, first: u64, n: u64) {
        let mut partition = work
            .partitions
            .remove(&0)
            .unwrap_or_else(|| PartitionWork::new(0, work.catalog.clone(), 0, usize::MAX));
        add_conversions(work, &mut partition, first, n);
        work.partitions.insert(0, partition);
    }

    /// Pushes conversions of users first+1..=first+n at offsets first.. and
    /// decides them.
    fn add_conversions(work: &mut Work, partition: &mut PartitionWork, first: u64, n: u64) {
        let ts = crate::telemetry::now_ms();
        for i in first..first + n {
            let conversion = Input::Conversion(ConversionInput {
                click: None,
                uid: Some(crate::ids::UserId(i as u128 + 1)),
                event_id: EventId::new_v7(ts),
                ts_ms: ts,
                pixel: PixelId(101),
                advertiser: AdvertiserId(1),
                order_id: None,
                value_micros: None,
                context: None,
            });
            partition.push(
                InputTopic::Conversions,
                i as i64,
                conversion,
                ts,
                &mut work.outs,
            );
        }
        for t in InputTopic::ALL {
            partition.read_through(t, ts + 1);
        }
        partition.release(ts + 1, &mut work.outs);
    }

    fn group_consumer(settings: &Settings) -> BaseConsumer {
        settings
            .consumer
            .clone()
            .set("group.id", "members")
            .create()
            .unwrap()
    }

    fn transactional(settings: &Settings, id: &str) -> Output {
        let output = Output::new(&settings.producer, Some(id)).unwrap();
        output.init().unwrap();
        output
    }

    fn count_records(brokers: &str) -> usize {
        let reader: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "reader")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        reader.subscribe(&["records"]).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut n = 0;
        while std::time::Instant::now() < deadline {
            match reader.poll(Duration::from_millis(100)) {
                Some(Ok(_)) => n += 1,
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => return n,
                _ => {}
            }
        }
        panic!("the records topic never reached its end");
    }

    /// The transactional cycle on the mock, which takes every transactional
    /// request: records and changelog in the transaction, offsets sent to
    /// it, committed. (The mock does not store a transaction's offsets:
    /// `broker_quirks`, item 4; what is asserted here is the cycle.)
    #[test]
    fn a_transactional_commit_produces_in_the_transaction_and_commits_it() {
        let mock = mock();
        let settings = settings(&mock.bootstrap_servers());
        let output = transactional(&settings, "members-a");
        let mut work = work_with_records(&settings, output, 3);
        let consumer = group_consumer(&settings);
        let done = work.commit(&consumer, || true).unwrap();
        assert!(matches!(done, Committed::Done), "{done:?}");
        assert_eq!(count_records(&mock.bootstrap_servers()), 3);
        // Nothing new: no transaction at all.
        let again = work.commit(&consumer, || true).unwrap();
        assert!(matches!(again, Committed::Unchanged), "{again:?}");
    }

    /// A zombie: its replacement registered the same transactional id, so
    /// Kafka answers the old producer's `EndTxn` with `PRODUCER_FENCED`
    /// (injected: the mock hands a second `InitProducerId` a new producer
    /// id and leaves the old one valid, `broker_quirks` item 4). Its commit
    /// stops the member (an error, so the member thread ends) instead of
    /// committing, and the producer refuses everything after.
    #[test]
    fn a_member_fenced_by_its_replacement_stops_instead_of_committing() {
        use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
        let mock = mock();
        let settings = settings(&mock.bootstrap_servers());
        let mut zombie = work_with_records(&settings, transactional(&settings, "members-z"), 1);
        let consumer = group_consumer(&settings);
        assert!(matches!(
            zombie.commit(&consumer, || true).unwrap(),
            Committed::Done
        ));
        mock.request_errors(
            RDKafkaApiKey::EndTxn,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED],
        );
        decide_more(&mut zombie, 1, 1);
        match zombie.commit(&consumer, || true) {
            Err(ClusterError::Fenced { .. }) => {}
            other => panic!("the fenced member went on: {other:?}"),
        }
        decide_more(&mut zombie, 2, 1);
        assert!(
            zombie.commit(&consumer, || true).is_err(),
            "a fenced producer wrote again"
        );
    }

    /// A member that finds it lost its partitions after it produced
    /// records (they joined the open transaction) aborts that transaction
    /// when it drops them, and its producer serves the next one.
    #[test]
    fn a_member_that_lost_its_partitions_aborts_the_open_transaction() {
        let mock = mock();
        let settings = settings(&mock.bootstrap_servers());
        let mut work = work_with_records(&settings, transactional(&settings, "members-l"), 2);
        work.publish().unwrap();
        assert!(work.output.in_transaction());
        let consumer = group_consumer(&settings);
        let lost = work.commit(&consumer, || false).unwrap();
        assert!(matches!(lost, Committed::NotOwner), "{lost:?}");
        assert!(work.output.in_transaction(), "nothing committed");
        work.revoke(false).unwrap();
        assert!(
            !work.output.in_transaction(),
            "the transaction was not aborted"
        );
        decide_more(&mut work, 0, 1);
        let done = work.commit(&consumer, || true).unwrap();
        assert!(matches!(done, Committed::Done), "{done:?}");
    }

    /// The group coordinator refuses the offsets of a member of an older
    /// generation (`ILLEGAL_GENERATION`, how `exactly_once_v2` fences a
    /// zombie; injected here, the mock does not check generations): the
    /// transaction is aborted, the member told to drop its state, and the
    /// producer still serves the next transaction.
    #[test]
    fn offsets_refused_by_the_group_abort_the_transaction_and_the_next_one_commits() {
        use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
        let mock = mock();
        let settings = settings(&mock.bootstrap_servers());
        let mut work = work_with_records(&settings, transactional(&settings, "members-g"), 2);
        let consumer = group_consumer(&settings);
        mock.request_errors(
            RDKafkaApiKey::TxnOffsetCommit,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION],
        );
        let aborted = work.commit(&consumer, || true).unwrap();
        assert!(matches!(aborted, Committed::Aborted), "{aborted:?}");
        work.revoke(false).unwrap();
        assert!(work.partitions.is_empty() && work.parked.is_empty());
        decide_more(&mut work, 0, 2);
        let done = work.commit(&consumer, || true).unwrap();
        assert!(matches!(done, Committed::Done), "{done:?}");
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
        let output = Output::new(&settings.producer, None).unwrap();
        let mut work = work_with_records(&settings, output, 1);
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
        assert_eq!(json["uid"], crate::ids::UserId(1).to_hex().as_str());
    }

    #[test]
    fn a_member_that_is_not_the_owner_produces_and_commits_nothing() {
        let mock = MockCluster::new(1).unwrap();
        let settings = settings(&mock.bootstrap_servers());
        let rules = Arc::new(ArcSwap::new(catalog(RULES)));
        let output = Output::new(&settings.producer, None).unwrap();
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
