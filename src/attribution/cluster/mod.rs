//! The attribution engine as a Kafka consumer-group member (`pixeld
//! attribute`), the way a Kafka Streams application is built: the impression,
//! click and conversion topics are co-partitioned by user ([`topics`]), the
//! group's `range` assignor gives one member partition p of each, and each
//! partition's state ([`partition`]) is kept in memory and written to a
//! compacted changelog ([`changelog`]) from which the next owner restores it.
//!
//! One thread runs the member: poll, order by event time, apply (the same
//! [`crate::attribution::Engine`] and rules as `pixeld serve`), produce
//! records. Every `commit_interval` it writes each changed user's state to
//! the changelog, waits until Kafka acknowledged everything produced so
//! far, and only then commits the input offsets. A crash replays inputs
//! from the last commit against a state that may be ahead of them; touches
//! are idempotent and a conversion already decided answers from its stored
//! decision, so a replay can duplicate a record but never change one.

pub mod changelog;
pub mod partition;
pub mod replay;
pub mod topics;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tracing::{error, info, warn};

use self::partition::{Out, PartitionWork, CONVERSIONS, SOURCES};
pub use self::topics::ClusterTopics;
use crate::attribution::Input;
use crate::config::Catalog;
use crate::event::EventType;
use crate::ids::UserId;
use crate::telemetry::{metric, now_ms, RateLimit};

/// Why a member could not start or had to stop.
#[derive(Debug)]
pub enum ClusterError {
    /// The brokers or a client (`kafka.brokers`, `kafka.librdkafka`).
    Kafka(String),
    /// The topics are not co-partitioned, or missing.
    Topics(String),
    /// Kafka gave up on a record or changelog write: the inputs behind it
    /// are not committed; restarting replays them.
    Delivery(String),
    /// A changelog value this pixeld cannot read.
    Changelog(String),
}

impl std::fmt::Display for ClusterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClusterError::Kafka(e) => write!(f, "kafka: {e}"),
            ClusterError::Topics(e) => write!(f, "{e}"),
            ClusterError::Delivery(e) => write!(
                f,
                "kafka did not acknowledge attribution output ({e}); stopping without committing, a restart replays the inputs"
            ),
            ClusterError::Changelog(e) => write!(f, "attribution changelog: {e}"),
        }
    }
}

impl std::error::Error for ClusterError {}

/// What a member needs to know.
#[derive(Clone)]
pub struct Settings {
    /// The producer of records and changelog: `serve`'s settings (brokers,
    /// compression, the murmur2 partitioner, the operator's table).
    pub producer: ClientConfig,
    /// Brokers, `client.id` and the operator's table, for the consumers and
    /// the admin client (no producer settings, which librdkafka warns about).
    pub consumer: ClientConfig,
    pub group_id: String,
    pub topics: ClusterTopics,
    pub grace_ms: u64,
    pub commit_interval: Duration,
    pub sweep_interval: Duration,
    pub session_timeout_ms: u32,
    /// `attribution.max_users`, per owned partition.
    pub max_users: usize,
}

/// Readiness and progress, read by the member's HTTP listener and tests.
#[derive(Default)]
pub struct Status {
    /// True once the member took part in a rebalance.
    pub joined: AtomicBool,
    /// True while a partition is restored from the changelog.
    pub restoring: AtomicBool,
}

impl Status {
    pub fn ready(&self) -> bool {
        self.joined.load(Ordering::Relaxed) && !self.restoring.load(Ordering::Relaxed)
    }
}

/// Counts the producer's outcomes: a failure stops the member before it
/// commits anything that depended on the failed write.
struct ProduceCtx {
    failed: AtomicU64,
    /// The first failure, for the error.
    first_failure: Mutex<Option<String>>,
    log: RateLimit,
}

impl ClientContext for ProduceCtx {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        crate::telemetry::librdkafka_log(&self.log, level, fac, message);
    }
}

impl ProducerContext for ProduceCtx {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => metric::kafka_delivered(None),
            Err((e, _)) => {
                metric::kafka_delivery_failed();
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_failure.lock().unwrap_or_else(|e| e.into_inner());
                first.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// The member's context: rebalances reach the [`Work`] through it.
struct MemberCtx {
    work: Arc<Mutex<Work>>,
    log: RateLimit,
}

impl ClientContext for MemberCtx {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        crate::telemetry::librdkafka_log(&self.log, level, fac, message);
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
                // Commit what is safe before the partitions go; if this
                // member's assignment was already lost, another member owns
                // them and nothing may be committed.
                let clean = !consumer.assignment_lost() && work.commit(consumer).is_ok();
                work.revoke(clean);
            }
            Rebalance::Assign(tpl) => {
                metric::cluster_rebalance("assign");
                let mut parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                parts.sort_unstable();
                parts.dedup();
                // Restored after the poll that assigned them returns, before
                // any of their messages is handled.
                work.pending = Some(parts);
                work.status.restoring.store(true, Ordering::Relaxed);
            }
            Rebalance::Error(e) => warn!(error = %e, "consumer-group rebalance failed"),
        }
    }
}

/// Everything the member thread and its rebalance callbacks share.
struct Work {
    settings: Settings,
    catalog: Arc<ArcSwap<Catalog>>,
    status: Arc<Status>,
    producer: ThreadedProducer<ProduceCtx>,
    /// The partitions owned, by number.
    partitions: BTreeMap<i32, PartitionWork>,
    /// Kept from a clean revoke: if the same partition comes back in the
    /// next assignment, its state is current and needs no restore.
    parked: BTreeMap<i32, PartitionWork>,
    /// Assigned, not restored yet.
    pending: Option<Vec<i32>>,
    /// Records decided and not produced yet: produced before any commit,
    /// including the one a revoke makes in the middle of a batch.
    outs: Vec<Out>,
    /// Reused for encoding.
    buf: Vec<u8>,
    value: Vec<u8>,
    /// Delivery failures already accounted for.
    failures_seen: u64,
    /// The offsets of the last successful commit: an idle member does not
    /// commit the same offsets every interval.
    last_committed: Vec<(String, i32, i64)>,
}

impl Work {
    fn topic_of(&self, source: usize) -> &str {
        &self.settings.topics.inputs[source]
    }

    /// Produces one message, waiting while librdkafka's queue is full.
    fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        payload: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
    ) -> Result<(), ClusterError> {
        let mut record = BaseRecord::to(topic).key(key);
        if let Some(p) = payload {
            record = record.payload(p);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if let Some(h) = headers {
            record = record.headers(h);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(ClusterError::Delivery(e.to_string())),
            }
        }
    }

    /// Produces the records waiting in `outs`.
    fn publish(&mut self) -> Result<(), ClusterError> {
        let now = now_ms();
        let mut buf = std::mem::take(&mut self.buf);
        let mut outs = std::mem::take(&mut self.outs);
        let n = outs.len() as u64;
        for out in outs.drain(..) {
            buf.clear();
            metric::attribution_record(out.record.result());
            out.record.encode(&mut buf);
            let hex = out.record.conversion.uid.map(|u| u.to_hex());
            let key = hex.as_ref().map_or(&b""[..], |h| h.as_str().as_bytes());
            let headers = OwnedHeaders::new().insert(Header {
                key: "type",
                value: Some(EventType::Attribution.as_str()),
            });
            let topic = self.settings.topics.attributions.clone();
            self.send(&topic, None, key, Some(&buf), Some(headers))?;
            metric::cluster_decision_delay(now.saturating_sub(out.arrived_ms) as f64 / 1000.0);
        }
        self.buf = buf;
        self.outs = outs;
        if n > 0 {
            metric::cluster_produced("attribution", n);
        }
        Ok(())
    }

    /// Changed users to the changelog, then wait for Kafka to acknowledge
    /// everything produced, then commit the inputs those writes cover.
    fn commit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), ClusterError> {
        let changelog = self.settings.topics.changelog.clone();
        let mut value = std::mem::take(&mut self.value);
        let mut writes: Vec<(i32, UserId, Option<Vec<u8>>)> = Vec::new();
        let mut offsets = TopicPartitionList::new();
        for (p, work) in self.partitions.iter_mut() {
            work.drain_dirty(&mut value, |uid, v| {
                writes.push((*p, uid, v.map(<[u8]>::to_vec)))
            });
            for (source, offset) in work.committable().iter().enumerate() {
                if let Some(o) = offset {
                    let _ = offsets.add_partition_offset(
                        &self.settings.topics.inputs[source],
                        *p,
                        Offset::Offset(*o),
                    );
                }
            }
        }
        self.value = value;
        let (mut states, mut tombstones) = (0u64, 0u64);
        for (p, uid, v) in &writes {
            let hex = uid.to_hex();
            self.send(
                &changelog,
                Some(*p),
                hex.as_str().as_bytes(),
                v.as_deref(),
                None,
            )?;
            if v.is_some() {
                states += 1;
            } else {
                tombstones += 1;
            }
        }
        metric::cluster_produced("changelog", states);
        metric::cluster_produced("tombstone", tombstones);
        if let Err(e) = self.producer.flush(Duration::from_secs(60)) {
            return Err(ClusterError::Delivery(format!("flush: {e}")));
        }
        let failed = self.producer.context().failed.load(Ordering::Relaxed);
        if failed > self.failures_seen {
            self.failures_seen = failed;
            let first = self
                .producer
                .context()
                .first_failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .unwrap_or_default();
            return Err(ClusterError::Delivery(first));
        }
        let listed: Vec<(String, i32, i64)> = offsets
            .elements()
            .iter()
            .map(|e| {
                let o = match e.offset() {
                    Offset::Offset(o) => o,
                    _ => -1,
                };
                (e.topic().to_string(), e.partition(), o)
            })
            .collect();
        if listed.is_empty() || listed == self.last_committed {
            return Ok(());
        }
        match consumer.commit(&offsets, rdkafka::consumer::CommitMode::Sync) {
            Ok(()) => {
                metric::cluster_commit(true);
                tracing::debug!(offsets = ?listed, "committed");
                self.last_committed = listed;
                for work in self.partitions.values_mut() {
                    if let Some(o) = work.committable()[CONVERSIONS] {
                        work.forget_decided(o);
                    }
                }
                Ok(())
            }
            Err(e) => {
                // Not fatal: the next commit covers these offsets too.
                metric::cluster_commit(false);
                warn!(error = %e, "committing attribution input offsets failed; retried at the next commit");
                Err(ClusterError::Kafka(e.to_string()))
            }
        }
    }

    fn revoke(&mut self, clean: bool) {
        let parts = std::mem::take(&mut self.partitions);
        self.parked = if clean { parts } else { BTreeMap::new() };
    }

    /// Restores the pending partitions: from the parked state when this
    /// member owned it just before, else from the changelog.
    fn restore_pending<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), ClusterError> {
        let Some(parts) = self.pending.take() else {
            return Ok(());
        };
        let mut parked = std::mem::take(&mut self.parked);
        let mut committed_tpl = TopicPartitionList::new();
        for p in &parts {
            for topic in &self.settings.topics.inputs {
                let _ = committed_tpl.add_partition(topic, *p);
            }
        }
        let committed = loop {
            match consumer.committed_offsets(committed_tpl.clone(), Duration::from_secs(10)) {
                Ok(c) => break c,
                Err(e) => {
                    warn!(error = %e, "reading the group's committed offsets failed; retrying");
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        };
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
            for source in 0..SOURCES {
                let topic = self.topic_of(source).to_string();
                work.position[source] =
                    committed
                        .find_partition(&topic, p)
                        .and_then(|e| match e.offset() {
                            Offset::Offset(o) => Some(o),
                            _ => None,
                        });
            }
            work.restored();
            tracing::debug!(partition = p, positions = ?work.position, "resuming from");
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
        Ok(())
    }
}

/// Reads changelog partition `p` from the beginning to its end into `work`.
fn restore(settings: &Settings, p: i32, work: &mut PartitionWork) -> Result<(), ClusterError> {
    let mut config = settings.consumer.clone();
    config
        .set("group.id", format!("{}-restore", settings.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        // A restore reads one partition start to end: large fetches.
        .set("max.partition.fetch.bytes", "16777216")
        .set("fetch.max.bytes", "67108864")
        .set("queued.min.messages", "1000000");
    let reader: BaseConsumer = config
        .create()
        .map_err(|e| ClusterError::Kafka(format!("changelog reader: {e}")))?;
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
        .map_err(|e| ClusterError::Kafka(e.to_string()))?;
    reader
        .assign(&tpl)
        .map_err(|e| ClusterError::Kafka(e.to_string()))?;
    // The end is the partition-EOF event, which follows the last message.
    // The high watermark only backs it up when the broker stays quiet: some
    // brokers (tansu 0.6) report the last batch's first offset plus one, so
    // "offset + 1 >= high" alone would stop inside the last batch.
    let mut next = low;
    let mut quiet_since = Instant::now();
    loop {
        match reader.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let uid = std::str::from_utf8(m.key().unwrap_or_default())
                    .ok()
                    .and_then(UserId::parse);
                match uid {
                    Some(uid) => work.restore(uid, m.payload()).map_err(|e| {
                        ClusterError::Changelog(format!("{topic}/{p}@{}: {e}", m.offset()))
                    })?,
                    None => warn!(
                        topic,
                        partition = p,
                        offset = m.offset(),
                        "changelog message without a user id key; skipped"
                    ),
                }
                next = m.offset() + 1;
                quiet_since = Instant::now();
            }
            Some(Err(KafkaError::PartitionEOF(_))) => return Ok(()),
            Some(Err(e)) => warn!(error = %e, topic, partition = p, "reading the changelog"),
            None if next >= high && quiet_since.elapsed() > Duration::from_secs(2) => return Ok(()),
            None => {}
        }
    }
}

/// Owns the member thread; [`Member::stop`] finishes the batch in hand,
/// commits, and leaves the group.
pub struct Member {
    pub status: Arc<Status>,
    /// Shared with the member thread (for [`Member::dump`]).
    work: Arc<Mutex<Work>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), ClusterError>>>,
}

impl Member {
    /// Checks the topics, joins the group and starts consuming.
    pub fn start(
        settings: Settings,
        catalog: Arc<ArcSwap<Catalog>>,
        replication: i32,
    ) -> Result<Member, ClusterError> {
        let partitions = topics::check(
            &settings.consumer,
            &settings.topics,
            replication,
            Duration::from_secs(30),
        )?;
        info!(
            partitions,
            group = %settings.group_id,
            "attribution topics are co-partitioned; joining the group"
        );
        let status = Arc::new(Status::default());
        let mut producer_config = settings.producer.clone();
        // Changelog writes and records must not be reordered or duplicated by
        // producer retries.
        producer_config
            .set("enable.idempotence", "true")
            .set("acks", "all");
        let producer: ThreadedProducer<ProduceCtx> = producer_config
            .create_with_context(ProduceCtx {
                failed: AtomicU64::new(0),
                first_failure: Mutex::new(None),
                log: RateLimit::new(10_000),
            })
            .map_err(|e| ClusterError::Kafka(format!("producer: {e}")))?;
        let work = Arc::new(Mutex::new(Work {
            settings: settings.clone(),
            catalog,
            status: status.clone(),
            producer,
            partitions: BTreeMap::new(),
            parked: BTreeMap::new(),
            pending: None,
            outs: Vec::new(),
            buf: Vec::with_capacity(1024),
            value: Vec::with_capacity(256),
            failures_seen: 0,
            last_committed: Vec::new(),
        }));
        let mut consumer_config = settings.consumer.clone();
        consumer_config
            .set("group.id", &settings.group_id)
            .set("partition.assignment.strategy", "range")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set(
                "session.timeout.ms",
                settings.session_timeout_ms.to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                (settings.session_timeout_ms / 4).max(100).to_string(),
            );
        let consumer: BaseConsumer<MemberCtx> = consumer_config
            .create_with_context(MemberCtx {
                work: work.clone(),
                log: RateLimit::new(10_000),
            })
            .map_err(|e| ClusterError::Kafka(format!("consumer: {e}")))?;
        let names: Vec<&str> = settings.topics.inputs.iter().map(String::as_str).collect();
        consumer
            .subscribe(&names)
            .map_err(|e| ClusterError::Kafka(format!("subscribe: {e}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let runner = Runner {
            consumer,
            work: work.clone(),
            stop: stop.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("attribute".into())
            .spawn(move || runner.run())
            .map_err(|e| ClusterError::Kafka(format!("thread: {e}")))?;
        Ok(Member {
            status,
            work,
            stop,
            thread: Some(thread),
        })
    }

    /// Every owned partition's state as its changelog would restore it, by
    /// partition number (tests compare a member's memory with a restore).
    pub fn dump(&self) -> Vec<(i32, Vec<(UserId, changelog::UserState)>)> {
        let work = self.work.lock().unwrap_or_else(|e| e.into_inner());
        work.partitions
            .iter()
            .map(|(p, w)| (*p, w.dump()))
            .collect()
    }

    /// True once the member thread ended on its own (an error).
    pub fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Finishes the batch in hand, commits, leaves the group.
    pub fn stop(mut self) -> Result<(), ClusterError> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(ClusterError::Kafka("the member thread panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Runner {
    consumer: BaseConsumer<MemberCtx>,
    work: Arc<Mutex<Work>>,
    stop: Arc<AtomicBool>,
}

/// How long a source must give nothing before it counts as caught up.
const QUIET_MS: u64 = 500;

/// Messages handled between two looks at the clock and the watermarks.
const BATCH: usize = 4096;

impl Runner {
    fn run(self) -> Result<(), ClusterError> {
        let result = self.run_inner();
        if let Err(e) = &result {
            error!(error = %e, "attribution member stopped");
        }
        // Leaves the group at once, so the partitions move without waiting
        // for the session timeout.
        self.consumer.unsubscribe();
        let _ = self.consumer.poll(Duration::from_millis(100));
        result
    }

    fn run_inner(&self) -> Result<(), ClusterError> {
        let (commit_every, sweep_every) = {
            let w = self.lock();
            (w.settings.commit_interval, w.settings.sweep_interval)
        };
        let mut next_commit = Instant::now() + commit_every;
        let mut next_sweep = Instant::now() + sweep_every;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                let mut w = self.lock();
                // Apply what the watermark allows, then commit.
                let now = now_ms();
                let w = &mut *w;
                for work in w.partitions.values_mut() {
                    work.release(now, &mut w.outs);
                }
                w.publish()?;
                match w.commit(&self.consumer) {
                    Ok(()) | Err(ClusterError::Kafka(_)) => {}
                    Err(e) => return Err(e),
                }
                info!("attribution member committed and is leaving the group");
                return Ok(());
            }
            let mut handled = 0;
            let mut timeout = Duration::from_millis(100);
            // Whether poll ran dry: only then is "position >= high" a sign
            // that a source is caught up (the rest of a fetched batch may
            // still be queued locally otherwise).
            let mut drained = false;
            // When this batch's messages arrived: one clock read per batch
            // (a read per message was 5% of the member's CPU).
            let mut arrived = 0;
            while handled < BATCH {
                let Some(msg) = self.consumer.poll(timeout) else {
                    drained = true;
                    break;
                };
                if timeout != Duration::ZERO {
                    arrived = now_ms();
                }
                timeout = Duration::ZERO;
                let mut w = self.lock();
                w.restore_pending(&self.consumer)?;
                match msg {
                    Ok(m) => {
                        handled += 1;
                        let source =
                            match w.settings.topics.inputs.iter().position(|t| t == m.topic()) {
                                Some(s) => s,
                                None => continue,
                            };
                        let kind = [
                            EventType::Impression,
                            EventType::Click,
                            EventType::Conversion,
                        ][source];
                        let input = m.payload().and_then(|p| Input::from_json(kind, p));
                        let Some(work) = w.partitions.get_mut(&m.partition()) else {
                            warn!(
                                topic = m.topic(),
                                partition = m.partition(),
                                "message of a partition this member does not own; ignored"
                            );
                            continue;
                        };
                        let first = !work.started[source];
                        work.started[source] = true;
                        // Every message must be the one the state expects
                        // next: the input topics are neither compacted nor
                        // transactional, so their offsets have no gaps.
                        // Inputs read before a rebalance and discarded with
                        // the buffer come again only if the client resumes
                        // there, which librdkafka does not always do on
                        // tansu; a record skipped mid-stream would be a
                        // touch or a conversion lost. Either is sought back
                        // to, once per offset (a real gap, should a broker
                        // make one, is then read past).
                        let expected = work.position[source].filter(|e| m.offset() > *e);
                        if let Some(expected) = expected {
                            if work.sought[source] == Some(expected) {
                                warn!(
                                    topic = m.topic(),
                                    partition = m.partition(),
                                    offset = m.offset(),
                                    expected,
                                    "the offsets have a gap even after seeking back; reading on"
                                );
                            } else {
                                work.sought[source] = Some(expected);
                                metric::cluster_resumed_ahead();
                                warn!(
                                    topic = m.topic(),
                                    partition = m.partition(),
                                    offset = m.offset(),
                                    expected,
                                    first,
                                    "the client skipped past the expected offset; seeking back"
                                );
                                let topic = m.topic().to_string();
                                let p = m.partition();
                                drop(m);
                                if let Err(e) = self.consumer.seek(
                                    &topic,
                                    p,
                                    Offset::Offset(expected),
                                    Duration::from_secs(10),
                                ) {
                                    return Err(ClusterError::Kafka(format!(
                                        "seeking {topic}/{p} back to {expected}: {e}"
                                    )));
                                }
                                continue;
                            }
                        }
                        match input {
                            Some(input) => {
                                if let Some(out) = work.push(source, m.offset(), input, arrived) {
                                    w.outs.push(out);
                                }
                            }
                            None => {
                                tracing::debug!(
                                    topic = m.topic(),
                                    partition = m.partition(),
                                    offset = m.offset(),
                                    "not an input; skipped"
                                );
                                work.skip(source, m.offset(), arrived)
                            }
                        }
                    }
                    Err(KafkaError::PartitionEOF(_)) => {}
                    Err(e) => warn!(error = %e, "consuming attribution inputs"),
                }
            }
            let mut w = self.lock();
            w.restore_pending(&self.consumer)?;
            let now = now_ms();
            if drained {
                self.mark_caught_up(&mut w);
            }
            let w = &mut *w;
            for work in w.partitions.values_mut() {
                work.release(now, &mut w.outs);
            }
            w.publish()?;
            let now_i = Instant::now();
            if now_i >= next_sweep {
                for work in w.partitions.values_mut() {
                    work.sweep(now);
                }
                next_sweep = now_i + sweep_every;
            }
            if now_i >= next_commit {
                match w.commit(&self.consumer) {
                    Ok(()) | Err(ClusterError::Kafka(_)) => {}
                    Err(e) => return Err(e),
                }
                next_commit = Instant::now() + commit_every;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Work> {
        self.work.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A source whose next offset reaches the end librdkafka last saw has
    /// nothing more to read: it stops holding the watermark back.
    fn mark_caught_up(&self, w: &mut Work) {
        let topics = w.settings.topics.inputs.clone();
        let now = now_ms();
        for (p, work) in w.partitions.iter_mut() {
            for (source, topic) in topics.iter().enumerate() {
                let Some((low, high)) = cached_watermarks(&self.consumer, topic, *p) else {
                    continue;
                };
                // Nothing read and no committed offset: at the start.
                let Some(at) = work.position[source].or(low) else {
                    continue;
                };
                metric::cluster_lag(topic, *p, high - at);
                // Quiet for a moment as well: some brokers (tansu 0.6) report
                // a high watermark short of the log's end, so reaching it
                // alone does not prove the source has nothing more.
                let quiet = now.saturating_sub(work.last_read_ms[source]) >= QUIET_MS;
                if at >= high && quiet {
                    work.caught_up(source);
                }
            }
        }
    }
}

/// The partition's low and high offsets as librdkafka last saw them (no
/// request: the high one is updated with every fetch). The low one is
/// unknown (None) until librdkafka had a reason to ask; the high one must be
/// known.
fn cached_watermarks<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
) -> Option<(Option<i64>, i64)> {
    let name = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid for the consumer's lifetime; the
    // call only reads librdkafka's cached offsets into the two locals.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            name.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some(((low >= 0).then_some(low), high))
}
