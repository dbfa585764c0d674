//! What `pixeld forward` writes to Kafka: one delivery-log message per
//! attempt's outcome (`pixel.postbacks`) and one dead letter per call given
//! up on (`pixel.postbacks.dead`), through the one producer path
//! ([`crate::sink::producer`]). A dead letter must be in Kafka before its
//! record's offset is committed: [`Log::settled`] says whether everything
//! produced so far was acknowledged, and counts what Kafka gave up on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;

use super::call::Outcome;
use super::destination::{Call, Destination};
use crate::config::HttpMethod;
use crate::event::{EventType, JsonWriter, VERSION};
use crate::ids::EventId;
use crate::sink::producer::{KafkaProducer, Outgoing, Produce, Topics};
use crate::sink::Topic;
use crate::telemetry::now_ms;

/// The record a call is for.
#[derive(Clone, Copy, Debug)]
pub struct About {
    pub record: EventId,
    pub conversion: EventId,
}

pub struct Log {
    producer: KafkaProducer,
    /// Messages Kafka reported as failed since start.
    failed: Arc<AtomicU64>,
}

impl Log {
    pub fn new(client: &ClientConfig, topics: Topics) -> Result<Log, rdkafka::error::KafkaError> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let failed = Arc::new(AtomicU64::new(0));
        let producer = KafkaProducer::new(client, topics, Some(tx))?;
        let count = failed.clone();
        // The reports' only reader; ends when the producer (its sender) goes.
        std::thread::Builder::new()
            .name("forward-reports".into())
            .spawn(move || {
                for (_, outcome) in rx {
                    if outcome.is_err() {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
            .map_err(|e| rdkafka::error::KafkaError::ClientCreation(e.to_string()))?;
        Ok(Log { producer, failed })
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
        w.str("url", &call.url);
        let body = call.body.as_deref().map(String::from_utf8_lossy);
        w.opt_str("body", body.as_deref());
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
        if self.producer.send(&msg, 0).is_err() {
            // Refused at once (queue full for 300 s of backlog, too
            // large): counted like a failed delivery, so nothing commits.
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether every message so far is acknowledged (waiting at most
    /// `timeout`), and how many Kafka gave up on since start.
    pub fn settled(&self, timeout: Duration) -> (bool, u64) {
        let left = self.producer.flush(timeout);
        (left == 0, self.failed.load(Ordering::Relaxed))
    }
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
