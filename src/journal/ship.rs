//! The shipper: reads the journal in order, produces each record to Kafka
//! with its original payload, and moves the checkpoint only past records the
//! broker acknowledged (learnt per range from a delivery barrier, since its
//! producer reports failures only: [`Ship::confirm`]). Poison records go to a dead-letter file. Segments
//! that are shipped (and replayed into the attribution snapshot) are deleted.
//!
//! Here: the thread and its loop (what is in flight, acknowledgements,
//! retries, the checkpoint). [`produce`]: one record to the producer, and
//! the dead-letter file.

mod produce;

use std::collections::VecDeque;
use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver};
use rdkafka::ClientConfig;
use tracing::{info, warn};

use super::{checkpoint, Cursor, Position, Shared};
use crate::sink::producer::{KafkaProducer, Produce, Refusal, Report, Topics};
use crate::telemetry::{metric, now_ms, RateLimit};
use produce::{dead_letter, send, Sent};

/// Records handed to librdkafka and not yet acknowledged, at most.
const MAX_IN_FLIGHT: usize = 100_000;

/// A round that produced fewer records than this waits [`ROUND_PAUSE`]
/// before the next (a busy journal ships in rounds of thousands).
const WORTH_A_ROUND: usize = 1024;
const ROUND_PAUSE: Duration = Duration::from_millis(5);

/// Owns the shipper thread.
pub struct Shipper {
    stop: Arc<AtomicBool>,
    /// Returns the records it left unshipped.
    thread: Option<JoinHandle<u64>>,
}

/// What the shipper needs besides the journal and a producer.
pub struct ShipSettings {
    /// Topic names, for the producer and the dead-letter lines.
    pub topics: Topics,
    /// Poison records are appended here, one JSON line each.
    pub dead_letter: PathBuf,
    /// On stop, how long to keep shipping what is left.
    pub drain_timeout: Duration,
}

impl Shipper {
    /// Ships with a librdkafka producer made from `client` (the sink's
    /// settings, [`crate::sink::kafka::client_config`]). `retry_after` is how
    /// long librdkafka retries a record before reporting it failed and the
    /// shipper produces it again (`message.timeout.ms`).
    pub fn start(
        shared: Arc<Shared>,
        client: &ClientConfig,
        retry_after: Duration,
        settings: ShipSettings,
    ) -> Result<Shipper, String> {
        let (tx, rx) = unbounded();
        let mut client = client.clone();
        // The journal holds the record; librdkafka retries for a while, then
        // the shipper produces it again, for as long as it takes.
        client.set("message.timeout.ms", retry_after.as_millis().to_string());
        // No report for a success: a range is confirmed at once by the
        // delivery barrier (`Ship::confirm`), instead of one report, one
        // channel message and one lookup per record.
        client.set("delivery.report.only.error", "true");
        let producer = KafkaProducer::new(&client, settings.topics.clone(), Some(tx))
            .map_err(|e| format!("journal shipper producer: {e}"))?;
        Shipper::start_with(shared, Box::new(producer), rx, settings)
    }

    /// Ships through any producer whose delivery reports arrive on `reports`.
    pub fn start_with(
        shared: Arc<Shared>,
        producer: Box<dyn Produce>,
        reports: Receiver<Report>,
        settings: ShipSettings,
    ) -> Result<Shipper, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let from = shared.shipped();
        let mut ship = Ship {
            cursor: Cursor::new(shared.clone(), from),
            reread: Cursor::new(shared.clone(), from),
            shared,
            producer,
            acks: reports,
            in_flight: VecDeque::new(),
            awaiting: None,
            retry: VecDeque::new(),
            dead_letter: settings.dead_letter,
            topics: settings.topics,
            saved: from,
            log: RateLimit::new(10_000),
            drain_timeout: settings.drain_timeout,
        };
        let flag = stop.clone();
        let thread = crate::background::spawn("journal-shipper", move || ship.run(&flag))
            .map_err(|e| e.to_string())?;
        Ok(Shipper {
            stop,
            thread: Some(thread),
        })
    }

    /// Ships what is left (within the drain timeout), saves the checkpoint
    /// and stops; returns how many records stay in the journal unshipped
    /// (they ship at the next start).
    pub fn stop(mut self) -> u64 {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => t.join().unwrap_or(u64::MAX),
            None => 0,
        }
    }
}

impl Drop for Shipper {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// A record handed to librdkafka. No copy of it is kept (librdkafka has
/// one): a retry reads it again from the journal, at `at`.
struct InFlight {
    seq: u64,
    /// For the oldest-unshipped-age gauge.
    ts_ms: u64,
    at: Position,
    /// The producer has its latest attempt: the next barrier confirms it.
    /// False while it waits in `retry` to be produced again.
    sent: bool,
    /// Acknowledged (or dead-lettered): the checkpoint may pass it.
    done: bool,
}

/// A range of records produced and not confirmed yet. No record is produced
/// while one awaits: the barrier is the producer having nothing unresolved,
/// which a producer given more every round would never reach.
struct Awaiting {
    /// When it was produced (the delivery-latency metric).
    since: Instant,
    /// It filled `MAX_IN_FLIGHT` (a backlog): flushed rather than left to
    /// linger, since the next range is ready now.
    full: bool,
}

struct Ship {
    shared: Arc<Shared>,
    cursor: Cursor,
    /// Reads an in-flight record back (to produce it again, or to
    /// dead-letter it) at the position `cursor` saw it.
    reread: Cursor,
    producer: Box<dyn Produce>,
    acks: Receiver<Report>,
    /// Topic names, for dead-letter lines.
    topics: Topics,
    /// In sequence order (gaps only where a damaged segment was skipped);
    /// the checkpoint is the first not done.
    in_flight: VecDeque<InFlight>,
    /// The range produced last, until the barrier confirms it.
    awaiting: Option<Awaiting>,
    /// Sequence numbers to produce again (retriable failures).
    retry: VecDeque<u64>,
    dead_letter: PathBuf,
    /// The checkpoint last written to disk.
    saved: u64,
    log: RateLimit,
    drain_timeout: Duration,
}

impl Ship {
    /// Returns the records left unshipped when it stopped.
    fn run(&mut self, stop: &AtomicBool) -> u64 {
        let mut last_save = Instant::now();
        let mut draining_since: Option<Instant> = None;
        loop {
            let stopping = stop.load(Ordering::Relaxed);
            if stopping && draining_since.is_none() {
                draining_since = Some(Instant::now());
            }
            self.take_acks(Duration::ZERO);
            self.confirm();
            let produced = if self.awaiting.is_none() {
                self.produce()
            } else {
                0
            };
            if produced > 0 {
                let full = self.in_flight.len() >= MAX_IN_FLIGHT;
                let since = Instant::now();
                self.awaiting = Some(Awaiting { since, full });
            }
            let watermark = self.watermark();
            if last_save.elapsed() > Duration::from_millis(200) || stopping {
                if watermark != self.saved {
                    self.save(watermark);
                } else {
                    // The engine's snapshot may have moved on since the last
                    // save: segments it no longer needs can go now.
                    self.delete_shipped();
                }
                last_save = Instant::now();
            }
            self.report();
            if let Some(since) = draining_since {
                let all_done =
                    self.in_flight.is_empty() && self.cursor.next_seq() >= self.shared.written();
                if all_done || since.elapsed() > self.drain_timeout {
                    let watermark = self.watermark();
                    self.save(watermark);
                    return self.shared.written().saturating_sub(watermark);
                }
            }
            if produced < WORTH_A_ROUND && draining_since.is_none() {
                // Little new: wait a few milliseconds for more rather than
                // waking for every group the writer writes or every report
                // librdkafka sends. Per round, the shipper's and librdkafka's
                // costs are per batch; shipping 5 ms later costs nothing
                // (librdkafka lingers `linger_ms` anyway).
                if self.in_flight.is_empty() {
                    self.shared
                        .wait_for(self.cursor.next_seq(), Duration::from_millis(50));
                } else if self.awaiting.as_ref().is_some_and(|a| a.full) {
                    self.producer.flush(ROUND_PAUSE);
                } else {
                    std::thread::sleep(ROUND_PAUSE);
                }
            } else if produced == 0 {
                // Draining: wait only for the barrier (flushing, so the last
                // batches do not linger) or a failure report.
                if self.awaiting.is_some() {
                    self.producer.flush(Duration::from_millis(20));
                } else {
                    self.take_acks(Duration::from_millis(20));
                }
            }
        }
    }

    /// Where `seq` is in `in_flight`.
    fn index(&self, seq: u64) -> Option<usize> {
        let front = self.in_flight.front()?.seq;
        let guess = seq.checked_sub(front)? as usize;
        match self.in_flight.get(guess) {
            Some(f) if f.seq == seq => Some(guess),
            _ => self.in_flight.binary_search_by_key(&seq, |f| f.seq).ok(),
        }
    }

    fn entry(&mut self, seq: u64) -> Option<&mut InFlight> {
        let i = self.index(seq)?;
        self.in_flight.get_mut(i)
    }

    fn watermark(&self) -> u64 {
        match self.in_flight.iter().find(|f| !f.done) {
            Some(f) => f.seq,
            None => self.cursor.next_seq(),
        }
    }

    fn take_acks(&mut self, wait: Duration) {
        let first = if wait.is_zero() {
            self.acks.try_recv().ok()
        } else {
            self.acks.recv_timeout(wait).ok()
        };
        let Some(first) = first else { return };
        let reports: Vec<_> = std::iter::once(first).chain(self.acks.try_iter()).collect();
        let mut shipped = 0;
        for (seq, result) in reports {
            match result {
                Ok(()) => {
                    if let Some(f) = self.entry(seq) {
                        f.done = true;
                    }
                    shipped += 1;
                }
                Err(e) if e.kind == Refusal::Permanent => self.dead_on_delivery(seq, &e.message),
                Err(e) => {
                    if let Some(f) = self.entry(seq) {
                        f.sent = false;
                    }
                    metric::journal_ship_retry();
                    if let Some(held) = self.log.check() {
                        warn!(error = %e.message, suppressed = held, "delivery failed; the record will be produced again");
                    }
                    self.retry.push_back(seq);
                }
            }
        }
        metric::journal_shipped(shipped);
        self.drop_done();
    }

    /// Drops the acknowledged prefix.
    fn drop_done(&mut self) {
        while self.in_flight.front().is_some_and(|f| f.done) {
            self.in_flight.pop_front();
        }
    }

    /// The delivery barrier. The producer reports only failures, so a
    /// success is known only this way: once nothing it was given is
    /// unresolved, every record it has the latest attempt of is
    /// acknowledged, except those whose failure report is on the channel,
    /// taken first (they go back to `retry`, not done). Only this thread
    /// produces, and nothing is produced between the check and the marking,
    /// so no record sent after the check is marked. Across partitions and
    /// within one, order does not matter: the barrier covers every message.
    fn confirm(&mut self) {
        let Some(range) = &self.awaiting else { return };
        if self.producer.unresolved() > 0 {
            return;
        }
        let seconds = range.since.elapsed().as_secs_f64();
        self.awaiting = None;
        self.take_acks(Duration::ZERO);
        let mut confirmed = 0;
        for f in self.in_flight.iter_mut().filter(|f| f.sent && !f.done) {
            f.done = true;
            confirmed += 1;
        }
        if confirmed > 0 {
            metric::journal_shipped(confirmed);
            metric::kafka_delivered_range(confirmed, seconds);
        }
        self.drop_done();
    }

    /// Hands records to librdkafka: retries first, then new ones, straight
    /// from the journal's read buffer. Returns how many it produced.
    fn produce(&mut self) -> usize {
        let mut produced = self.resend();
        if !self.retry.is_empty() {
            // librdkafka's queue is full: new records wait too.
            return produced;
        }
        while self.in_flight.len() < MAX_IN_FLIGHT {
            let room = (MAX_IN_FLIGHT - self.in_flight.len()).min(4096);
            let mut full = false;
            let Ship {
                cursor,
                producer,
                topics,
                in_flight,
                retry,
                dead_letter,
                log,
                ..
            } = self;
            let n = cursor.read_each_at(room, |r, at| {
                // Once the queue is full, the rest of this read waits too.
                let sent = if full {
                    Sent::Later
                } else {
                    send(producer.as_ref(), topics, log, dead_letter, &r)
                };
                match sent {
                    Sent::Queued => produced += 1,
                    Sent::Dead => {}
                    Sent::Later => {
                        full = true;
                        retry.push_back(r.seq);
                    }
                }
                in_flight.push_back(InFlight {
                    seq: r.seq,
                    ts_ms: r.ts_ms,
                    at,
                    sent: matches!(sent, Sent::Queued),
                    done: matches!(sent, Sent::Dead),
                });
            });
            if n == 0 || full {
                break;
            }
        }
        produced
    }

    /// Produces the records in `retry` again, reading each from the journal
    /// where it was first seen. Returns how many it produced; what librdkafka
    /// cannot take yet stays in `retry`.
    fn resend(&mut self) -> usize {
        if self.retry.is_empty() {
            return 0;
        }
        let mut seqs: Vec<u64> = self.retry.drain(..).collect();
        seqs.sort_unstable();
        seqs.dedup();
        let mut produced = 0;
        for (k, &seq) in seqs.iter().enumerate() {
            let Some(i) = self.index(seq) else { continue };
            if self.in_flight[i].done {
                continue;
            }
            let at = self.in_flight[i].at;
            let mut sent = None;
            let Ship {
                reread,
                producer,
                topics,
                log,
                dead_letter,
                ..
            } = &mut *self;
            reread.read_at(seq, at, |r| {
                sent = Some(send(producer.as_ref(), topics, log, dead_letter, &r));
            });
            match sent {
                Some(Sent::Queued) => {
                    self.in_flight[i].sent = true;
                    produced += 1;
                }
                Some(Sent::Dead) => self.in_flight[i].done = true,
                Some(Sent::Later) => {
                    // Full again: this one and the rest wait for the next round.
                    self.retry.extend(&seqs[k..]);
                    return produced;
                }
                None => warn!(
                    seq,
                    "a record to produce again could not be read back from the journal"
                ),
            }
        }
        produced
    }

    /// A delivery report refused the record for good: read it back and
    /// dead-letter it.
    fn dead_on_delivery(&mut self, seq: u64, reason: &str) {
        let Some(i) = self.index(seq) else { return };
        self.in_flight[i].done = true;
        let mut found = false;
        let Ship {
            reread,
            dead_letter: path,
            topics,
            in_flight,
            ..
        } = self;
        reread.read_at(seq, in_flight[i].at, |r| {
            found = true;
            dead_letter(path, topics, &r, reason);
        });
        if !found {
            warn!(
                seq,
                reason, "a refused record could not be read back from the journal"
            );
        }
    }

    fn save(&mut self, watermark: u64) {
        self.shared.set_shipped(watermark);
        if let Err(e) = checkpoint::save(self.shared.dir(), watermark) {
            warn!(error = %e, "cannot save the journal checkpoint");
            return;
        }
        self.saved = watermark;
        self.delete_shipped();
    }

    /// Deletes segments whose every record is shipped and covered by the
    /// attribution snapshot (never one being written). A segment's records
    /// are all below the next segment of its stream; a stream written by
    /// an earlier process is complete, its records all below where this
    /// one started numbering.
    fn delete_shipped(&mut self) {
        let keep_from = self.saved.min(self.shared.engine_snapshot());
        // Newest first, remembering each stream's next segment.
        let mut next_first: Vec<(u32, u64)> = Vec::new();
        for seg in self.shared.segments().iter().rev() {
            let next = next_first.iter_mut().find(|(s, _)| *s == seg.stream);
            let ends_below = match next {
                Some((_, first)) => std::mem::replace(first, seg.first),
                None => {
                    next_first.push((seg.stream, seg.first));
                    if !self.shared.is_sealed(seg.stream) {
                        continue;
                    }
                    self.shared.sealed_below()
                }
            };
            if ends_below <= keep_from {
                if let Ok(meta) = fs::metadata(&seg.path) {
                    if fs::remove_file(&seg.path).is_ok() {
                        self.shared.segment_deleted(meta.len());
                    }
                }
            }
        }
    }

    fn report(&self) {
        let shipped = self.watermark();
        metric::journal_size(self.shared.bytes());
        let oldest = self.in_flight.iter().find(|f| !f.done).map(|f| f.ts_ms);
        let age = oldest.map_or(0.0, |ts| now_ms().saturating_sub(ts) as f64 / 1000.0);
        metric::journal_backlog(self.shared.written().saturating_sub(shipped), age);
    }
}

impl Drop for Ship {
    fn drop(&mut self) {
        self.producer.flush(Duration::from_secs(1));
        info!(checkpoint = self.saved, "journal shipper stopped");
    }
}

#[cfg(test)]
mod tests;
