//! An assignment's restore: each partition from the state parked at a clean
//! revoke when this member owned it just before, else from the changelog;
//! then reading resumes at the group's committed offsets.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{info, warn};

use super::broker_quirks;
use super::inputs::PerInput;
use super::membership::{self, Offsets};
use super::partition::PartitionWork;
use super::work::Work;
use super::{ClusterError, Settings};
use crate::event::input::PartitionKey;
use crate::ids::UserId;
use crate::telemetry::metric;

impl Work {
    /// Restores the pending partitions; true if there were any (a restore
    /// can take long: the caller's liveness clock must not count it).
    pub fn restore_pending<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<bool, ClusterError> {
        let Some(parts) = self.pending.take() else {
            return Ok(false);
        };
        let mut parked = std::mem::take(&mut self.parked);
        let committed = committed_offsets(consumer, &self.settings, &parts);
        for p in parts {
            let started = Instant::now();
            let (mut work, how) = match parked.remove(&p) {
                Some(w) => (w.reset(self.settings.grace_ms), "kept"),
                None => {
                    let mut w = PartitionWork::new(
                        p,
                        self.catalog.clone(),
                        self.settings.grace_ms,
                        self.settings.max_users,
                    );
                    restore(&self.settings, p, &mut w)?;
                    (w, "changelog")
                }
            };
            work.restored(PerInput::from_fn(|t| committed.get(&(t, p)).copied()));
            let secs = started.elapsed().as_secs_f64();
            metric::cluster_restored(p, secs);
            info!(
                partition = p,
                users = work.state().users(),
                from = how,
                ms = (secs * 1000.0) as u64,
                "attribution partition restored"
            );
            self.partitions.insert(p, work);
        }
        self.status.restoring.store(false, Ordering::Relaxed);
        Ok(true)
    }
}

/// The group's committed offsets of `parts` of every input, retried until
/// the coordinator answers: resuming anywhere else would skip or redo.
fn committed_offsets<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    settings: &Settings,
    parts: &[i32],
) -> Offsets {
    loop {
        match membership::committed_offsets(
            consumer,
            &settings.topics.inputs,
            parts.iter().copied(),
        ) {
            Some(c) => return c,
            None => {
                warn!("reading the group's committed offsets failed; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

/// The changelog reader's context: librdkafka's log and errors as the
/// member's own, less the end of the partition, which the reader asks for
/// (`enable.partition.eof`) and which rdkafka's default context logs at
/// ERROR, six times per restore of six partitions.
struct ReaderCtx {
    log: crate::telemetry::RateLimit,
}

impl Default for ReaderCtx {
    fn default() -> ReaderCtx {
        ReaderCtx {
            log: crate::telemetry::RateLimit::new(10_000),
        }
    }
}

impl rdkafka::ClientContext for ReaderCtx {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        crate::telemetry::librdkafka_log(&self.log, level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(error, KafkaError::PartitionEOF(_)) {
            crate::telemetry::kafka_client_error(&self.log, &error, reason);
        }
    }
}

impl ConsumerContext for ReaderCtx {}

/// Reads changelog partition `p` from the beginning to its end into `work`.
fn restore(settings: &Settings, p: i32, work: &mut PartitionWork) -> Result<(), ClusterError> {
    let reader = changelog_reader(settings)?;
    let topic = &settings.topics.changelog;
    let (low, high) = loop {
        match reader.fetch_watermarks(topic, p, Duration::from_secs(10)) {
            Ok(w) => break w,
            Err(e) => {
                warn!(error = %e, topic, partition = p, "reading the changelog's extent failed; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    };
    if high <= low {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, p, Offset::Beginning)
        .map_err(|e| ClusterError::kafka("changelog assignment", e))?;
    reader
        .assign(&tpl)
        .map_err(|e| ClusterError::kafka("changelog assignment", e))?;
    let mut end = broker_quirks::ChangelogEnd::new(low, high);
    let invalid_log = crate::telemetry::RateLimit::new(10_000);
    loop {
        match reader.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let value = ChangelogValue {
                    topic,
                    partition: p,
                    offset: m.offset(),
                    key: m.key().unwrap_or_default(),
                    payload: m.payload(),
                };
                value.load_into(work, &invalid_log);
                end.read(m.offset());
            }
            Some(Err(KafkaError::PartitionEOF(_))) => return Ok(()),
            Some(Err(e)) => warn!(error = %e, topic, partition = p, "reading the changelog"),
            None if end.reached() => return Ok(()),
            None => {}
        }
    }
}

/// A consumer for reading one changelog partition start to end.
fn changelog_reader(settings: &Settings) -> Result<BaseConsumer<ReaderCtx>, ClusterError> {
    let mut config = settings.consumer.clone();
    config
        // Always `read_committed`: a member running at least once (after a
        // failed probe, or `transactions = "off"`) may follow one that
        // wrote in transactions, whose aborted changelog writes must not
        // come back; on data written without transactions it reads all.
        .set("isolation.level", "read_committed")
        .set("group.id", format!("{}-restore", settings.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        // A restore reads one partition start to end: large fetches.
        .set("max.partition.fetch.bytes", "16777216")
        .set("fetch.max.bytes", "67108864")
        .set("queued.min.messages", "1000000");
    config
        .create_with_context(ReaderCtx::default())
        .map_err(|e| ClusterError::kafka("changelog reader", e))
}

/// One changelog message: a user's state, or an order of the order index.
struct ChangelogValue<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    key: &'a [u8],
    payload: Option<&'a [u8]>,
}

impl ChangelogValue<'_> {
    /// Loads it. One unreadable value (damaged, or written by something
    /// else) must not stop every member: that user or order starts over,
    /// counted and logged.
    fn load_into(&self, work: &mut PartitionWork, invalid_log: &crate::telemetry::RateLimit) {
        let (topic, partition, offset) = (self.topic, self.partition, self.offset);
        if let Some(order) = PartitionKey::parse_order(self.key) {
            if let Err(reason) = work.restore_order(order, self.payload) {
                metric::cluster_changelog_invalid();
                if let Some(held_back) = invalid_log.check() {
                    warn!(
                        topic,
                        partition,
                        offset,
                        reason,
                        held_back,
                        "changelog value of the order index unreadable; the order is forgotten"
                    );
                }
                work.restore_order(order, None).ok();
            }
            return;
        }
        let Some(uid) = std::str::from_utf8(self.key).ok().and_then(UserId::parse) else {
            warn!(
                topic,
                partition, offset, "changelog message without a user id key; skipped"
            );
            return;
        };
        if let Err(reason) = work.restore(uid, self.payload) {
            metric::cluster_changelog_invalid();
            if let Some(held_back) = invalid_log.check() {
                warn!(topic, partition, offset, key = %uid.to_hex().as_str(), reason, held_back, "changelog value unreadable; the user starts with an empty state");
            }
            work.restore(uid, None).ok();
        }
    }
}
