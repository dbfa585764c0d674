//! The shipper: reads the journal in order, produces each record to Kafka
//! with its original payload, and moves the checkpoint only past records the
//! broker acknowledged. Poison records go to a dead-letter file. Segments
//! that are shipped (and replayed into the attribution snapshot) are deleted.

use std::collections::VecDeque;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender};
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientConfig;
use tracing::{info, warn};

use super::{Cursor, Position, Record, Shared};
use crate::sink::Topic;
use crate::telemetry::{now_ms, RateLimit};

const CHECKPOINT: &str = "journal.checkpoint";
/// Records handed to librdkafka and not yet acknowledged, at most.
const MAX_IN_FLIGHT: usize = 100_000;

/// The shipped watermark saved on disk (0 when none or unreadable).
pub fn load_checkpoint(dir: &Path) -> u64 {
    let Ok(bytes) = fs::read(dir.join(CHECKPOINT)) else {
        return 0;
    };
    if bytes.len() != 12 {
        warn!("journal checkpoint unreadable; shipping the whole journal again");
        return 0;
    }
    let (seq, crc) = bytes.split_at(8);
    if crc32fast::hash(seq).to_le_bytes() != crc {
        warn!("journal checkpoint corrupt; shipping the whole journal again");
        return 0;
    }
    u64::from_le_bytes(seq.try_into().unwrap_or_default())
}

fn save_checkpoint(dir: &Path, seq: u64) -> std::io::Result<()> {
    let mut bytes = seq.to_le_bytes().to_vec();
    bytes.extend_from_slice(&crc32fast::hash(&seq.to_le_bytes()).to_le_bytes());
    let tmp = dir.join("journal.checkpoint.tmp");
    fs::write(&tmp, bytes)?;
    fs::rename(tmp, dir.join(CHECKPOINT))
}

/// Routes librdkafka's delivery reports to the shipper.
struct Reports {
    tx: Sender<(u64, Result<(), KafkaError>)>,
    errors: RateLimit,
    /// One librdkafka warning per 10 s at most.
    librdkafka_log: RateLimit,
}

impl ClientContext for Reports {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        crate::telemetry::librdkafka_log(&self.librdkafka_log, level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        crate::telemetry::kafka_client_error(&self.errors, &error, reason);
    }
}

impl ProducerContext for Reports {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: usize) {
        let r = match result {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(e.clone()),
        };
        let _ = self.tx.send((seq as u64, r));
    }
}

/// Errors the broker will never accept the record for.
fn is_permanent(code: Option<RDKafkaErrorCode>) -> bool {
    matches!(
        code,
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::InvalidTopic
        )
    )
}

/// Owns the shipper thread.
pub struct Shipper {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// What the shipper needs besides the journal.
pub struct ShipSettings {
    /// The producer's settings ([`crate::sink::kafka::client_config`]).
    pub client: ClientConfig,
    /// Topic name per [`Topic`], in `Topic::ALL` order.
    pub topics: [String; 6],
    /// Poison records are appended here, one JSON line each.
    pub dead_letter: PathBuf,
    /// On stop, how long to keep shipping what is left.
    pub drain_timeout: Duration,
    /// How long librdkafka retries a record before reporting it failed and
    /// the shipper produces it again (`message.timeout.ms`; 30 s unless the
    /// `[kafka.librdkafka]` table sets it).
    pub retry_after: Duration,
}

impl Shipper {
    pub fn start(shared: Arc<Shared>, settings: ShipSettings) -> Result<Shipper, String> {
        let (tx, rx) = unbounded();
        let mut client = settings.client.clone();
        // The journal holds the record; librdkafka retries for a while, then
        // the shipper produces it again, for as long as it takes.
        client.set(
            "message.timeout.ms",
            settings.retry_after.as_millis().to_string(),
        );
        let producer: ThreadedProducer<Reports> = client
            .create_with_context(Reports {
                tx,
                errors: RateLimit::new(10_000),
                librdkafka_log: RateLimit::new(10_000),
            })
            .map_err(|e| format!("journal shipper producer: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let from = shared.shipped.load(Ordering::Relaxed);
        let mut ship = Ship {
            cursor: Cursor::new(shared.clone(), from),
            reread: Cursor::new(shared.clone(), from),
            shared,
            producer,
            acks: rx,
            topics: settings.topics,
            in_flight: VecDeque::new(),
            retry: VecDeque::new(),
            dead_letter: settings.dead_letter,
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
    /// and stops.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
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
    /// Acknowledged (or dead-lettered): the checkpoint may pass it.
    done: bool,
}

/// What became of one produce call.
enum Sent {
    /// librdkafka has it; its delivery report will tell.
    Queued,
    /// Refused for good (e.g. too large): dead-lettered.
    Dead,
    /// Refused for now (queue full): produce it again later.
    Later,
}

struct Ship {
    shared: Arc<Shared>,
    cursor: Cursor,
    /// Reads an in-flight record back (to produce it again, or to
    /// dead-letter it) at the position `cursor` saw it.
    reread: Cursor,
    producer: ThreadedProducer<Reports>,
    acks: Receiver<(u64, Result<(), KafkaError>)>,
    topics: [String; 6],
    /// In sequence order (gaps only where a damaged segment was skipped);
    /// the checkpoint is the first not done.
    in_flight: VecDeque<InFlight>,
    /// Sequence numbers to produce again (retriable failures).
    retry: VecDeque<u64>,
    dead_letter: PathBuf,
    /// The checkpoint last written to disk.
    saved: u64,
    log: RateLimit,
    drain_timeout: Duration,
}

impl Ship {
    fn run(&mut self, stop: &AtomicBool) {
        let mut last_save = Instant::now();
        let mut draining_since: Option<Instant> = None;
        loop {
            let stopping = stop.load(Ordering::Relaxed);
            if stopping && draining_since.is_none() {
                draining_since = Some(Instant::now());
            }
            self.take_acks(Duration::ZERO);
            let produced = self.produce();
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
                    self.in_flight.is_empty() && self.cursor.next_seq >= self.shared.written();
                if all_done || since.elapsed() > self.drain_timeout {
                    if !all_done {
                        warn!(
                            behind = self.shared.written().saturating_sub(watermark),
                            "stopping with unshipped records; they stay in the journal and ship at the next start"
                        );
                    }
                    self.save(self.watermark());
                    return;
                }
            }
            if produced == 0 {
                // Nothing new: wait for acknowledgements or for the writer.
                if self.in_flight.is_empty() {
                    self.shared
                        .wait_for(self.cursor.next_seq, Duration::from_millis(50));
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
            None => self.cursor.next_seq,
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
                Err(e) if is_permanent(e.rdkafka_error_code()) => {
                    self.dead_on_delivery(seq, &e.to_string())
                }
                Err(e) => {
                    metrics::counter!("journal_ship_retries_total").increment(1);
                    if let Some(held) = self.log.check() {
                        warn!(error = %e, suppressed = held, "delivery failed; the record will be produced again");
                    }
                    self.retry.push_back(seq);
                }
            }
        }
        metrics::counter!("journal_shipped_total").increment(shipped);
        // Drop the acknowledged prefix.
        while self.in_flight.front().is_some_and(|f| f.done) {
            self.in_flight.pop_front();
        }
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
                    send(producer, topics, log, dead_letter, &r)
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
            if reread.seek(seq, at) {
                reread.read_each(1, |r| {
                    if r.seq == seq {
                        sent = Some(send(producer, topics, log, dead_letter, &r));
                    }
                });
            }
            match sent {
                Some(Sent::Queued) => produced += 1,
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
            topics,
            dead_letter: path,
            in_flight,
            ..
        } = self;
        if reread.seek(seq, in_flight[i].at) {
            reread.read_each(1, |r| {
                if r.seq == seq {
                    found = true;
                    dead_letter(path, topics, &r, reason);
                }
            });
        }
        if !found {
            warn!(
                seq,
                reason, "a refused record could not be read back from the journal"
            );
        }
    }

    fn save(&mut self, watermark: u64) {
        self.shared.shipped.store(watermark, Ordering::Relaxed);
        if let Err(e) = save_checkpoint(&self.shared.dir, watermark) {
            warn!(error = %e, "cannot save the journal checkpoint");
            return;
        }
        self.saved = watermark;
        self.delete_shipped();
    }

    /// Deletes segments whose every record is shipped and covered by the
    /// attribution snapshot (never the one being written).
    fn delete_shipped(&mut self) {
        let keep_from = self
            .saved
            .min(self.shared.engine_snapshot.load(Ordering::Relaxed));
        let segs = self.shared.segments();
        for pair in segs.windows(2) {
            let ((_, path), (next_first, _)) = (&pair[0], &pair[1]);
            if *next_first <= keep_from {
                if let Ok(meta) = fs::metadata(path) {
                    if fs::remove_file(path).is_ok() {
                        self.shared.bytes.fetch_sub(meta.len(), Ordering::Relaxed);
                    }
                }
            } else {
                break;
            }
        }
    }

    fn report(&self) {
        let shipped = self.watermark();
        metrics::gauge!("journal_bytes").set(self.shared.bytes() as f64);
        metrics::gauge!("journal_records_behind")
            .set(self.shared.written().saturating_sub(shipped) as f64);
        let oldest = self.in_flight.iter().find(|f| !f.done).map(|f| f.ts_ms);
        let age = oldest.map_or(0.0, |ts| now_ms().saturating_sub(ts) as f64 / 1000.0);
        metrics::gauge!("journal_oldest_unshipped_age_seconds").set(age);
    }
}

impl Drop for Ship {
    fn drop(&mut self) {
        let _ = self.producer.flush(Duration::from_secs(1));
        info!(checkpoint = self.saved, "journal shipper stopped");
    }
}

/// Hands one record to librdkafka.
fn send(
    producer: &ThreadedProducer<Reports>,
    topics: &[String; 6],
    log: &RateLimit,
    dead_letter_file: &Path,
    r: &Record<'_>,
) -> Sent {
    let topic = &topics[Topic::ALL.iter().position(|t| *t == r.topic).unwrap_or(0)];
    let headers = OwnedHeaders::new_with_capacity(1).insert(Header {
        key: "type",
        value: Some(r.kind.as_str()),
    });
    let record = BaseRecord::with_opaque_to(topic, r.seq as usize)
        .key(r.key)
        .payload(r.payload)
        .headers(headers);
    match producer.send(record).map_err(|(e, _)| e) {
        Ok(()) => Sent::Queued,
        Err(e) if is_permanent(e.rdkafka_error_code()) => {
            dead_letter(dead_letter_file, topics, r, &e.to_string());
            Sent::Dead
        }
        Err(e) => {
            if e.rdkafka_error_code() != Some(RDKafkaErrorCode::QueueFull) {
                if let Some(held) = log.check() {
                    warn!(error = %e, suppressed = held, "produce refused; will retry");
                }
            }
            Sent::Later
        }
    }
}

/// Appends the record to the dead-letter file, one JSON line, with the
/// reason: the checkpoint may then pass it.
fn dead_letter(path: &Path, topics: &[String; 6], r: &Record<'_>, reason: &str) {
    let mut line = Vec::with_capacity(r.payload.len() + 128);
    let mut w = crate::event::JsonWriter::object(&mut line);
    w.u64("seq", r.seq);
    w.u64("ts", r.ts_ms);
    w.str("reason", reason);
    w.str(
        "topic",
        &topics[Topic::ALL.iter().position(|t| *t == r.topic).unwrap_or(0)],
    );
    w.str("key", &String::from_utf8_lossy(r.key));
    w.str("payload", &String::from_utf8_lossy(r.payload));
    w.end();
    line.push(b'\n');
    let written = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut file| file.write_all(&line));
    metrics::counter!("journal_dead_letters_total").increment(1);
    let seq = r.seq;
    match written {
        Ok(()) => {
            warn!(seq, reason, file = %path.display(), "record refused by the broker for good; written to the dead-letter file")
        }
        Err(e) => {
            warn!(seq, reason, error = %e, "record refused by the broker for good, and the dead-letter file cannot be written")
        }
    }
}
