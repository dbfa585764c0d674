//! The consumer loop of `pixeld forward`, on its own thread: read a record,
//! queue its calls (one per destination that takes it), pause the
//! partition while a queue is full, and commit the offsets of records
//! every destination has finished with, once their dead letters and
//! delivery-log messages are in Kafka.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::destination::Currencies;
use super::group::{self, Change, GroupCtx, Status};
use super::log::About;
use super::progress::Progress;
use super::record::ForwardRecord;
use super::worker::{Finished, Job, Queue, Shared};
use super::ForwardError;
use crate::attribution::cluster::broker_quirks::Coverage;
use crate::telemetry::{metric, RateLimit};

/// A partition whose calls wait for room in a full queue, and the
/// records read after it meanwhile.
#[derive(Default)]
struct Held {
    jobs: VecDeque<(usize, Job)>,
    backlog: VecDeque<OwnedMessage>,
}

pub struct Loop {
    pub consumer: BaseConsumer<GroupCtx>,
    pub topic: String,
    pub partitions: i32,
    pub queues: Vec<Queue>,
    pub currencies: Currencies,
    pub shared: Arc<Shared>,
    pub finished: crossbeam_channel::Receiver<Finished>,
    pub stop_calls: watch::Sender<bool>,
    pub status: Arc<Status>,
    pub commit_interval: Duration,
    pub coverage: Coverage<()>,
    pub progress: Progress,
    held: HashMap<i32, Held>,
    last_commit: Instant,
    last_watch: Instant,
    errors: RateLimit,
}

impl Loop {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        consumer: BaseConsumer<GroupCtx>,
        topic: String,
        partitions: i32,
        queues: Vec<Queue>,
        currencies: Currencies,
        shared: Arc<Shared>,
        finished: crossbeam_channel::Receiver<Finished>,
        stop_calls: watch::Sender<bool>,
        status: Arc<Status>,
        commit_interval: Duration,
        stall: Duration,
    ) -> Loop {
        Loop {
            consumer,
            topic,
            partitions,
            queues,
            currencies,
            shared,
            finished,
            stop_calls,
            status,
            commit_interval,
            coverage: Coverage::new(stall),
            progress: Progress::default(),
            held: HashMap::new(),
            last_commit: Instant::now(),
            last_watch: Instant::now(),
            errors: RateLimit::new(10_000),
        }
    }

    /// Until `stop`, then the drain: calls in flight finish (within
    /// `drain`), what finished is committed, and the group is left.
    pub fn run(mut self, stop: &AtomicBool, drain: Duration) -> Result<(), ForwardError> {
        let result = self.consume(stop);
        let _ = self.stop_calls.send(true);
        let deadline = Instant::now() + drain;
        while self.shared.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            let _ = self.consumer.poll(Duration::from_millis(50));
            self.apply_changes();
            self.drain_finished();
        }
        let left = self.shared.in_flight.load(Ordering::SeqCst);
        let committed = if result.is_ok() {
            self.commit()
        } else {
            Ok(())
        };
        info!(
            calls_left = left,
            open_calls = self.progress.open_calls(),
            "forward stopped; unfinished records are called again by the next owner"
        );
        self.consumer.unsubscribe();
        self.status.finished.store(true, Ordering::Relaxed);
        result.and(committed)
    }

    fn consume(&mut self, stop: &AtomicBool) -> Result<(), ForwardError> {
        while !stop.load(Ordering::Relaxed) {
            self.retry_held();
            let msg = self
                .consumer
                .poll(Duration::from_millis(100))
                .map(|r| r.map(|m| m.detach()));
            self.apply_changes();
            match msg {
                Some(Ok(m)) => self.take(m),
                Some(Err(e)) => {
                    if let Some(held) = self.errors.check() {
                        warn!(error = %e, suppressed = held, "reading the attributions failed");
                    }
                }
                None => {}
            }
            if self.last_commit.elapsed() >= self.commit_interval {
                self.commit()?;
                self.last_commit = Instant::now();
            }
            if self.last_watch.elapsed() >= Duration::from_secs(2) {
                self.watch();
                self.last_watch = Instant::now();
            }
        }
        Ok(())
    }

    fn apply_changes(&mut self) {
        let changes = std::mem::take(
            &mut *self
                .consumer
                .context()
                .changes
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for change in changes {
            let revoked = match change {
                Change::Assigned(ps) => {
                    for &p in &ps {
                        let epoch = self.progress.assign(p);
                        self.shared.set_epoch(p, Some(epoch));
                        // librdkafka keeps a partition's pause flag across
                        // an unassign: one paused for a full queue before a
                        // rebalance would never be read again.
                        self.pause(p, false);
                    }
                    continue;
                }
                Change::Revoked(ps) => ps,
                Change::Lost => self.progress.owned(),
            };
            for p in revoked {
                self.progress.revoke(p);
                self.shared.set_epoch(p, None);
                self.held.remove(&p);
            }
        }
    }

    fn take(&mut self, m: OwnedMessage) {
        let p = m.partition();
        match self.held.get_mut(&p) {
            Some(h) => h.backlog.push_back(m),
            None => self.handle(m),
        }
    }

    /// The record's calls, queued; a record that is not one is skipped
    /// (and counted) like a record no destination takes.
    fn handle(&mut self, m: OwnedMessage) {
        let (p, offset) = (m.partition(), m.offset());
        let Some(epoch) = self.progress.epoch(p) else {
            return;
        };
        let record = match m.payload().map(serde_json::from_slice::<ForwardRecord>) {
            Some(Ok(r)) => r,
            _ => {
                metric::forward_malformed();
                self.progress.read(p, offset, 0);
                return;
            }
        };
        let about = About {
            record: record.event_id,
            conversion: record.conversion_event_id,
        };
        let mut jobs = VecDeque::new();
        for (i, q) in self.queues.iter().enumerate() {
            match q.destination.call(&record, &self.currencies) {
                Ok(call) => {
                    metric::forward_record(&q.destination.id, "queued");
                    let job = Job {
                        partition: p,
                        offset,
                        epoch,
                        about,
                        call,
                    };
                    jobs.push_back((i, job));
                }
                Err(skip) => metric::forward_record(&q.destination.id, skip.as_str()),
            }
        }
        self.progress.read(p, offset, jobs.len() as u32);
        self.send(p, jobs);
    }

    /// Queues `jobs`; at the first full queue the rest wait and the
    /// partition pauses.
    fn send(&mut self, p: i32, mut jobs: VecDeque<(usize, Job)>) {
        while let Some((i, job)) = jobs.pop_front() {
            let q = &self.queues[i];
            match q.tx.try_send(job) {
                Ok(()) => {
                    q.depth.fetch_add(1, Ordering::Relaxed);
                }
                Err(TrySendError::Full(job)) => {
                    jobs.push_front((i, job));
                    let held = self.held.entry(p).or_default();
                    held.jobs = jobs;
                    self.pause(p, true);
                    return;
                }
                // The workers are gone (shutting down): the record stays
                // unfinished and uncommitted.
                Err(TrySendError::Closed(_)) => return,
            }
        }
    }

    /// Held partitions whose queues have room go on: their jobs, then
    /// what was read after them.
    fn retry_held(&mut self) {
        let partitions: Vec<i32> = self.held.keys().copied().collect();
        for p in partitions {
            let Some(mut h) = self.held.remove(&p) else {
                continue;
            };
            self.send(p, std::mem::take(&mut h.jobs));
            while !self.held.contains_key(&p) {
                let Some(m) = h.backlog.pop_front() else {
                    break;
                };
                self.handle(m);
            }
            match self.held.get_mut(&p) {
                Some(again) => again.backlog.extend(h.backlog),
                None => self.pause(p, false),
            }
        }
    }

    fn pause(&self, p: i32, pause: bool) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, p);
        let result = if pause {
            self.consumer.pause(&tpl)
        } else {
            self.consumer.resume(&tpl)
        };
        if let Err(e) = result {
            warn!(partition = p, pause, error = %e, "pausing or resuming a partition failed");
        }
    }

    fn drain_finished(&mut self) {
        for f in self.finished.try_iter() {
            self.progress.finished(f.partition, f.offset, f.epoch);
        }
    }

    /// Commits what every destination finished with, once the dead
    /// letters and log messages produced for it are in Kafka.
    fn commit(&mut self) -> Result<(), ForwardError> {
        self.drain_finished();
        let todo = self.progress.to_commit();
        if todo.is_empty() {
            return Ok(());
        }
        self.start_positions();
        // Short: the poll loop waits meanwhile; not settled yet is retried
        // at the next interval.
        let (settled, failed) = self.shared.log.settled(Duration::from_secs(2));
        if failed > 0 {
            return Err(ForwardError::LogLost(failed));
        }
        if !settled {
            warn!("the delivery log is not all in Kafka yet; committing later");
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for (p, at) in &todo {
            let _ = tpl.add_partition_offset(&self.topic, *p, Offset::Offset(*at));
        }
        match self.consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => {
                self.progress.committed(&todo);
                metric::forward_commit("ok");
            }
            Err(e) => {
                metric::forward_commit("failed");
                warn!(error = %e, "committing the forwarded records' offsets failed; retrying at the next interval");
            }
        }
        Ok(())
    }

    /// Where a partition that has no record read yet starts (its reset
    /// position, `forward.start_from`): committed like any other, so a
    /// quiet partition of a new group does not look stalled at offset 0
    /// to the other instances' orphan watch.
    fn start_positions(&mut self) {
        let Ok(tpl) = self.consumer.position() else {
            return;
        };
        for e in tpl.elements() {
            if let Offset::Offset(o) = e.offset() {
                self.progress.start_at(e.partition(), o);
            }
        }
    }

    /// Lag, queue depths, and partitions no live instance owns.
    fn watch(&mut self) {
        for q in &self.queues {
            metric::forward_queue_depth(&q.destination.id, q.depth.load(Ordering::Relaxed));
        }
        let (Some(ends), Some(committed)) = (
            group::ends(&self.consumer, &self.topic, self.partitions),
            group::committed(&self.consumer, &self.topic, self.partitions),
        ) else {
            return;
        };
        let owned = self.progress.owned();
        for p in &owned {
            let end = ends.get(&((), *p)).copied().unwrap_or(0);
            let at = committed.get(&((), *p)).copied().unwrap_or(0);
            metric::forward_lag(*p, end - at);
        }
        // Only partitions the group has committed: with start_from =
        // "latest" a quiet partition of a new group has no commit and is no
        // orphan (a dead instance's share of a group that never committed
        // is not detected: said in the README).
        let ends: group::Offsets = ends
            .into_iter()
            .filter(|(k, _)| committed.contains_key(k))
            .collect();
        let orphaned = self.coverage.orphaned(&committed, &ends, &owned);
        self.status
            .orphaned
            .store(orphaned.len(), Ordering::Relaxed);
        metric::forward_orphaned(orphaned.len());
        if !orphaned.is_empty() {
            error!(partitions = ?orphaned, "forward partitions owned by no live instance (their commit stalled behind the log); rejoining the group");
            self.rejoin();
        }
    }

    /// Leave and join again: a new generation over the live instances.
    fn rejoin(&mut self) {
        self.consumer.unsubscribe();
        for _ in 0..5 {
            let _ = self.consumer.poll(Duration::from_millis(100));
            self.apply_changes();
        }
        if let Err(e) = self.consumer.subscribe(&[&self.topic]) {
            warn!(error = %e, "subscribing again failed");
        }
        self.coverage.reset();
    }
}
