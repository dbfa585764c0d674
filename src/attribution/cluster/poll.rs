//! The member's loop: poll a batch, order it by event time, apply what the
//! watermark passed, produce the records; on their timers, sweep, commit,
//! and look for partitions no live member owns.
//!
//! A source counts as read through a time only when a fresh end-offset
//! request made at that time found the member at the end: librdkafka's
//! cached high watermark is as old as the last fetch response, and tansu's
//! fetches answer up to 500 ms after a produce.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::Offset;
use tracing::{error, info, warn};

use super::broker_quirks::{Coverage, Gap, GapGuard};
use super::commit::Committed;
use super::inputs::InputTopic;
use super::membership::{committed_offsets, end_offsets, rejoin, MemberCtx};
use super::work::Work;
use super::ClusterError;
use crate::attribution::Input;
use crate::event::Malformed;
use crate::telemetry::{metric, now_ms, RateLimit};

/// Messages handled between two looks at the clock and the log ends.
const BATCH: usize = 4096;

/// How often an idle member asks Kafka where the logs end.
const END_CHECK: Duration = Duration::from_millis(100);

/// When the member thread last finished a round: a member that stalled
/// past the session timeout (SIGSTOP, a frozen VM) presumes its partitions
/// were given to another member and neither produces nor commits for them.
pub struct Liveness {
    last_round_ms: AtomicU64,
    session_ms: u64,
}

impl Liveness {
    pub fn new(session_ms: u64) -> Liveness {
        Liveness {
            last_round_ms: AtomicU64::new(now_ms()),
            session_ms,
        }
    }

    pub fn touch(&self) {
        self.last_round_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Still the owner of what it was assigned, as far as this member knows.
    pub fn owner(&self) -> bool {
        now_ms().saturating_sub(self.last_round_ms.load(Ordering::Relaxed)) <= self.session_ms
    }
}

/// How long after trouble with the brokers (a client error, an end-offset
/// request that failed) a member does not count its inputs as
/// read through: the producers (`pixeld serve`'s journals) reconnect on
/// their own backoff, up to librdkafka's `reconnect.backoff.max.ms` (10 s),
/// and ship what they kept meanwhile. Found at their end during that time,
/// the inputs would let the watermark pass touches still in a journal (seen
/// in the fault campaign's broker restarts: conversions decided `no_touch`,
/// their touches stored a second later).
pub const BROKER_TROUBLE_HOLD_MS: u64 = 12_000;

/// When the member last had trouble with the brokers.
#[derive(Default)]
pub struct BrokerTrouble(AtomicU64);

impl BrokerTrouble {
    pub fn now(&self) {
        self.0.store(now_ms(), Ordering::Relaxed);
    }

    /// Whether the last trouble is more than the hold ago.
    pub fn settled(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.0.load(Ordering::Relaxed)) > BROKER_TROUBLE_HOLD_MS
    }
}

pub struct Runner {
    pub consumer: BaseConsumer<MemberCtx>,
    pub work: Arc<Mutex<Work>>,
    pub stop: Arc<AtomicBool>,
    pub liveness: Arc<Liveness>,
    pub trouble: Arc<BrokerTrouble>,
    /// The input topics' names, for (re)subscribing.
    pub names: Vec<String>,
    pub partitions: i32,
    pub gaps: GapGuard,
    pub coverage: Coverage,
}

struct Timers {
    commit: Instant,
    sweep: Instant,
    ends: Instant,
    coverage: Instant,
}

impl Runner {
    pub fn run(mut self) -> Result<(), ClusterError> {
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

    fn run_inner(&mut self) -> Result<(), ClusterError> {
        let now = Instant::now();
        let mut timers = Timers {
            commit: now,
            sweep: now,
            ends: now,
            coverage: now + self.coverage_every(),
        };
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return self.finish();
            }
            if !self.liveness.owner() {
                self.fence()?;
            }
            self.poll_batch()?;
            if let Some(why) = self.after_batch(&mut timers)? {
                self.coverage.reset();
                self.rejoin(why)?;
            }
            self.liveness.touch();
        }
    }

    fn lock(&self) -> MutexGuard<'_, Work> {
        self.work.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn settings(&self) -> (Duration, Duration, u64) {
        let w = self.lock();
        let s = &w.settings;
        (
            s.commit_interval,
            s.sweep_interval,
            s.session_timeout_ms as u64,
        )
    }

    fn coverage_every(&self) -> Duration {
        Duration::from_millis(self.settings().2)
    }

    /// The member stalled past its session: what it holds may belong to
    /// another member now. Drop it all, unproduced, and rejoin.
    fn fence(&mut self) -> Result<(), ClusterError> {
        warn!("the member thread stalled longer than the session timeout; dropping its partitions unproduced and rejoining");
        self.lock().revoke(false)?;
        self.rejoin("stalled past the session timeout")
    }

    fn rejoin(&mut self, why: &str) -> Result<(), ClusterError> {
        let names: Vec<&str> = self.names.iter().map(String::as_str).collect();
        rejoin(&self.consumer, &names, why)?;
        self.liveness.touch();
        Ok(())
    }

    /// Polls up to [`BATCH`] messages.
    fn poll_batch(&mut self) -> Result<(), ClusterError> {
        let mut handled = 0;
        let mut timeout = Duration::from_millis(100);
        // When this batch's messages arrived: one clock read per batch (a
        // read per message was 5% of the member's CPU).
        let mut arrived = 0;
        while handled < BATCH {
            let Some(msg) = self.consumer.poll(timeout) else {
                return Ok(());
            };
            if timeout != Duration::ZERO {
                arrived = now_ms();
                timeout = Duration::ZERO;
            }
            let work = self.work.clone();
            let mut w = work.lock().unwrap_or_else(|e| e.into_inner());
            // One clock read per batch, not per message (5% of the
            // member's CPU): the round's end touches the liveness clock,
            // and a restore, which may be long, does here.
            if w.restore_pending(&self.consumer)? {
                self.liveness.touch();
            }
            let seek = match &msg {
                Ok(m) => {
                    handled += 1;
                    handle(&mut self.gaps, &mut w, m, arrived)
                }
                Err(KafkaError::PartitionEOF(_)) => None,
                Err(e) => {
                    warn!(error = %e, "consuming attribution inputs");
                    None
                }
            };
            drop(msg);
            if let Some((topic, p, offset)) = seek {
                self.consumer
                    .seek(&topic, p, Offset::Offset(offset), Duration::from_secs(10))
                    .map_err(|e| {
                        ClusterError::kafka(format!("seeking {topic}/{p} to {offset}"), e)
                    })?;
            }
        }
        Ok(())
    }

    /// Release, produce, and the timed work; why the member should rejoin
    /// the group, if it should.
    fn after_batch(&mut self, timers: &mut Timers) -> Result<Option<&'static str>, ClusterError> {
        let (commit_every, sweep_every, session_ms) = self.settings();
        let work = self.work.clone();
        let mut w = work.lock().unwrap_or_else(|e| e.into_inner());
        if w.restore_pending(&self.consumer)? {
            self.liveness.touch();
        }
        let now_i = Instant::now();
        // On a timer, busy or not: a member whose poll never runs dry (a
        // steady load on one input) must still find its idle inputs (the
        // segments topic, say) at their end, or they would hold the
        // watermark back for good. A source still being read is simply not
        // at its end.
        if now_i >= timers.ends {
            self.read_through(&mut w);
            timers.ends = now_i + END_CHECK;
        }
        w.release(now_ms());
        if self.consumer.assignment_lost() {
            w.outs.clear();
        } else {
            w.publish()?;
        }
        if now_i >= timers.sweep {
            for work in w.partitions.values_mut() {
                work.sweep(now_ms());
            }
            timers.sweep = now_i + sweep_every;
        }
        if now_i >= timers.commit {
            timers.commit = Instant::now() + commit_every;
            match w.commit(&self.consumer, || self.liveness.owner())? {
                Committed::NotOwner => {
                    w.revoke(false)?;
                    return Ok(Some("this member no longer owns its partitions"));
                }
                // Rejoining gives a fresh assignment: each partition is
                // restored from the changelog (its committed writes only)
                // and read from its committed offsets, as a new owner would.
                Committed::Aborted => {
                    w.revoke(false)?;
                    return Ok(Some("a transaction was aborted"));
                }
                Committed::Done | Committed::Unchanged | Committed::Failed => {}
            }
        }
        if now_i >= timers.coverage {
            timers.coverage = now_i + Duration::from_millis(session_ms);
            if std::mem::take(&mut w.reassigned) {
                self.coverage.reset();
            }
            if self.orphans(&w) {
                return Ok(Some(
                    "a partition's commit stalled behind its log: no live member owns it",
                ));
            }
        }
        Ok(None)
    }

    /// Asks Kafka where each owned input ends; those the member has read to
    /// the end are read through the time of the question.
    fn read_through(&self, w: &mut Work) {
        let owned: Vec<i32> = w.partitions.keys().copied().collect();
        if owned.is_empty() {
            return;
        }
        let asked_at = now_ms();
        let ends = end_offsets(
            &self.consumer,
            &w.settings.topics.inputs,
            owned.iter().copied(),
        );
        let answered_at = now_ms();
        // A slow answer is still a true end as of the question (the
        // watermark is taken at the time asked); only one that never came
        // within the request's timeout ([`super::membership::END_OFFSETS_TIMEOUT`]: a broker
        // restarting or hung, whose producers may be holding events) is
        // trouble. Until 2026-12-07 an answer slower than 1 s was trouble
        // too: on an overloaded machine (load 10 on 2 cores) every answer
        // took longer, and the members held their inputs for minutes.
        let Some(ends) = ends else {
            self.trouble.now();
            return;
        };
        let settled = self.trouble.settled(answered_at);
        for ((topic, p), end) in ends {
            let Some(work) = w.partitions.get_mut(&p) else {
                continue;
            };
            let at = work.position(topic).unwrap_or(0);
            metric::cluster_lag(&w.settings.topics.inputs[topic], p, end - at);
            if at >= end && settled {
                work.read_through(topic, asked_at);
            }
        }
    }

    /// The partitions no live member owns, published to the status and the
    /// metric; true when there are any.
    fn orphans(&mut self, w: &Work) -> bool {
        let names = &w.settings.topics.inputs;
        let (Some(committed), Some(ends)) = (
            committed_offsets(&self.consumer, names, 0..self.partitions),
            end_offsets(&self.consumer, names, 0..self.partitions),
        ) else {
            return false;
        };
        let owned: Vec<i32> = w.partitions.keys().copied().collect();
        let orphaned = self.coverage.orphaned(&committed, &ends, &owned);
        w.status.orphaned.store(orphaned.len(), Ordering::Relaxed);
        metric::cluster_orphaned(orphaned.len());
        if !orphaned.is_empty() {
            warn!(partitions = ?orphaned, "no live member commits these partitions while their logs grow");
        }
        !orphaned.is_empty()
    }

    /// Stop: apply what the watermark allows, produce, commit, leave.
    fn finish(&mut self) -> Result<(), ClusterError> {
        let mut w = self.lock();
        w.release(now_ms());
        if !w
            .commit(&self.consumer, || self.liveness.owner())?
            .state_is_current()
        {
            w.revoke(false)?;
        }
        info!("attribution member committed and is leaving the group");
        Ok(())
    }
}

/// One input message; a seek to make when the client skipped.
fn handle(
    gaps: &mut GapGuard,
    w: &mut Work,
    m: &BorrowedMessage<'_>,
    arrived: u64,
) -> Option<(String, i32, i64)> {
    let topic = w.settings.topics.inputs.position(m.topic())?;
    let Some(work) = w.partitions.get_mut(&m.partition()) else {
        warn!(
            topic = m.topic(),
            partition = m.partition(),
            "message of a partition this member does not own; ignored"
        );
        return None;
    };
    match gaps.check(m.partition(), topic, work.position(topic), m.offset()) {
        Gap::Repeat => return None,
        Gap::SeekTo(o) => return Some((m.topic().to_string(), m.partition(), o)),
        Gap::InOrder | Gap::ReadOn => {}
    }
    let input = match topic.read_header(m) {
        Some(input) => Ok(input),
        None => topic.read_type(m).and_then(|kind| match kind {
            Some(kind) => Input::read_json(kind, m.payload().unwrap_or_default()),
            None => Ok(None),
        }),
    };
    match input {
        Ok(Some(input)) => work.push(topic, m.offset(), input, arrived, &mut w.outs),
        Ok(None) => work.skip(topic, m.offset()),
        Err(why) => {
            work.skip(topic, m.offset());
            malformed(topic, m, why);
        }
    }
    None
}

/// A message no pixeld producer writes: skipped (holding it would stall the
/// partition for good), counted, and logged at most once a second.
fn malformed(topic: InputTopic, m: &BorrowedMessage<'_>, why: Malformed) {
    static LOG: RateLimit = RateLimit::new(1_000);
    metric::cluster_malformed_input(topic.as_str(), why.label());
    if let Some(suppressed) = LOG.check() {
        warn!(
            topic = m.topic(),
            partition = m.partition(),
            offset = m.offset(),
            reason = why.label(),
            suppressed,
            "input message is not a pixeld event of its kind; skipped"
        );
    }
}
