//! What `pixeld forward` writes to Kafka: one delivery-log message per
//! attempt's outcome (`pixel.postbacks`) and one dead letter per call given
//! up on (`pixel.postbacks.dead`), through the one producer path
//! ([`crate::sink::producer`]). A dead letter must be in Kafka before its
//! record's offset is committed: every message gets a sequence number, and
//! [`Log::settled`] says whether every message sent before it was called is
//! acknowledged (messages sent meanwhile, for other calls, do not hold the
//! commit back), and counts what Kafka gave up on.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use rdkafka::config::ClientConfig;

use super::call::Outcome;
use super::destination::{Call, Destination};
use crate::config::HttpMethod;
use crate::event::{EventType, JsonWriter, VERSION};
use crate::ids::EventId;
use crate::sink::producer::{KafkaProducer, Outgoing, Produce, Report, Topics};
use crate::sink::Topic;
use crate::telemetry::now_ms;

/// A dead letter's URL and body are cut to this: a hostile record's
/// values must not make a message the broker refuses (which would stop
/// forward before it commits, again after every restart).
const DEAD_LETTER_FIELD_MAX: usize = 65_536;

/// The record a call is for.
#[derive(Clone, Copy, Debug)]
pub struct About {
    pub record: EventId,
    pub conversion: EventId,
}

pub struct Log {
    producer: KafkaProducer,
    reports: Receiver<Report>,
    /// The next message's sequence number (its delivery opaque).
    next: AtomicU64,
    /// Sequence numbers sent and not acknowledged yet.
    outstanding: Mutex<BTreeSet<u64>>,
    /// Messages Kafka refused or gave up on since start.
    failed: AtomicU64,
}

impl Log {
    pub fn new(client: &ClientConfig, topics: Topics) -> Result<Log, rdkafka::error::KafkaError> {
        let (tx, reports) = crossbeam_channel::unbounded();
        let producer = KafkaProducer::new(client, topics, Some(tx))?;
        Ok(Log {
            producer,
            reports,
            next: AtomicU64::new(1),
            outstanding: Mutex::new(BTreeSet::new()),
            failed: AtomicU64::new(0),
        })
    }

    /// One attempt's outcome.
    pub fn attempt(
        &self,
        d: &Destination,
        about: About,
        call: &Call,
        n: u32,
        outcome: &Outcome,
        latency: Duration,
    ) {
        let mut buf = Vec::with_capacity(384);
        let mut w = head(&mut buf, EventType::Postback, d, about, call);
        w.u64("attempt", n as u64);
        w.str("result", outcome.label());
        w.opt_u64("http_status", outcome.status().map(u64::from));
        w.opt_str(
            "error",
            match outcome {
                Outcome::Retry { error, .. } => error.as_deref(),
                _ => None,
            },
        );
        w.u64("latency_ms", latency.as_millis() as u64);
        w.end();
        self.send(Topic::Postbacks, EventType::Postback, about, &buf);
    }

    /// A call given up on: what was sent and how it last ended.
    pub fn dead(&self, d: &Destination, about: About, call: &Call, attempts: u32, last: &Outcome) {
        let mut buf = Vec::with_capacity(512 + call.body.as_ref().map_or(0, Vec::len));
        let mut w = head(&mut buf, EventType::PostbackDead, d, about, call);
        w.u64("attempts", attempts as u64);
        w.str("last_result", last.label());
        w.opt_u64("last_http_status", last.status().map(u64::from));
        w.str(
            "method",
            match call.method {
                HttpMethod::Get => "GET",
                HttpMethod::Post => "POST",
            },
        );
        w.str("url", capped(&call.url));
        let body = call.body.as_deref().map(String::from_utf8_lossy);
        w.opt_str("body", body.as_deref().map(capped));
        let cut = call.url.len() > DEAD_LETTER_FIELD_MAX
            || call
                .body
                .as_ref()
                .is_some_and(|b| b.len() > DEAD_LETTER_FIELD_MAX);
        w.bool("truncated", cut);
        w.end();
        self.send(Topic::PostbacksDead, EventType::PostbackDead, about, &buf);
    }

    fn send(&self, topic: Topic, kind: EventType, about: About, payload: &[u8]) {
        // Keyed by the record: its attempts stay in order on one partition.
        let key = about.record.to_hyphenated();
        let msg = Outgoing {
            topic,
            key: key.as_str().as_bytes(),
            headers: &[("type", kind.as_str().as_bytes())],
            payload,
        };
        let seq = self.next.fetch_add(1, Ordering::SeqCst);
        // Listed before it is sent, so its report cannot come first.
        self.outstanding_set().insert(seq);
        if self.producer.send(&msg, seq).is_err() {
            // Refused at once (queue full for 300 s of backlog, too
            // large): counted like a failed delivery, so nothing commits.
            self.outstanding_set().remove(&seq);
            self.failed.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn outstanding_set(&self) -> std::sync::MutexGuard<'_, BTreeSet<u64>> {
        self.outstanding.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether every message sent before this call is acknowledged
    /// (waiting at most `timeout`), and how many Kafka refused or gave up
    /// on since start. Reports are read here, on the caller's thread, so a
    /// failure is counted before the answer says "settled".
    pub fn settled(&self, timeout: Duration) -> (bool, u64) {
        let before = self.next.load(Ordering::SeqCst);
        let deadline = Instant::now() + timeout;
        loop {
            for (seq, outcome) in self.reports.try_iter() {
                self.outstanding_set().remove(&seq);
                if outcome.is_err() {
                    self.failed.fetch_add(1, Ordering::SeqCst);
                }
            }
            let done = self.outstanding_set().range(..before).next().is_none();
            if done || Instant::now() >= deadline {
                return (done, self.failed.load(Ordering::SeqCst));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// `text` cut to [`DEAD_LETTER_FIELD_MAX`] bytes on a character boundary.
fn capped(text: &str) -> &str {
    if text.len() <= DEAD_LETTER_FIELD_MAX {
        return text;
    }
    let mut end = DEAD_LETTER_FIELD_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn head<'b>(
    buf: &'b mut Vec<u8>,
    kind: EventType,
    d: &Destination,
    about: About,
    call: &Call,
) -> JsonWriter<'b> {
    let mut w = JsonWriter::object(buf);
    w.u64("v", VERSION as u64);
    w.str(
        "event_id",
        EventId::new_v7(now_ms()).to_hyphenated().as_str(),
    );
    w.str("type", kind.as_str());
    w.u64("ts", now_ms());
    w.str("destination", &d.id);
    w.str("kind", d.kind.as_str());
    w.str("record_event_id", about.record.to_hyphenated().as_str());
    w.str(
        "conversion_event_id",
        about.conversion.to_hyphenated().as_str(),
    );
    w.str("idempotency_key", &call.idempotency_key);
    w
}
