//! The member's producer: attribution records and changelog writes, with an
//! idempotent producer (no reordering or duplicates from its own retries)
//! and a delivery count that stops the member before it commits anything a
//! failed write covered.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientConfig;

use super::partition::Out;
use super::ClusterError;
use crate::event::EventType;
use crate::telemetry::{metric, now_ms, RateLimit};

/// Counts the producer's outcomes.
pub struct ProduceCtx {
    failed: AtomicU64,
    /// The first failure, for the error.
    first_failure: Mutex<Option<KafkaError>>,
    log: RateLimit,
}

impl ClientContext for ProduceCtx {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        crate::telemetry::librdkafka_log(&self.log, level, fac, message);
    }

    /// Exported as metrics, never logged (rdkafka's default logs the whole
    /// statistics, about 4 KB, at INFO every interval).
    fn stats(&self, s: rdkafka::Statistics) {
        metric::kafka_producer_statistics(&s);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        crate::telemetry::kafka_client_error(&self.log, &error, reason);
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
                first.get_or_insert_with(|| e.clone());
            }
        }
    }
}

pub struct Output {
    producer: ThreadedProducer<ProduceCtx>,
    /// Reused for encoding.
    buf: Vec<u8>,
    /// Delivery failures already accounted for.
    failures_seen: u64,
}

impl Output {
    pub fn new(settings: &ClientConfig) -> Result<Output, ClusterError> {
        let mut config = settings.clone();
        // Changelog writes and records must not be reordered by producer
        // retries (a changelog value overtaken by an older one would restore
        // old state) nor duplicated: an idempotent producer. Where the
        // operator turned idempotence off (`kafka.acks` other than `all`, or
        // the `librdkafka` table: tansu 0.6.0's sqlite engine panics at the
        // first idempotent produce after a restart, see the fault campaign),
        // one request in flight keeps the order, and a retry can at most
        // duplicate a record, which consumers deduplicate by `event_id`.
        config.set("acks", "all");
        if config.get("enable.idempotence") == Some("false") {
            config.set("max.in.flight.requests.per.connection", "1");
        } else {
            config.set("enable.idempotence", "true");
        }
        let producer = config
            .create_with_context(ProduceCtx {
                failed: AtomicU64::new(0),
                first_failure: Mutex::new(None),
                log: RateLimit::new(10_000),
            })
            .map_err(|e| ClusterError::kafka("producer", e))?;
        Ok(Output {
            producer,
            buf: Vec::with_capacity(1024),
            failures_seen: 0,
        })
    }

    /// Produces one message, waiting while librdkafka's queue is full. A
    /// `None` key is Kafka's NULL key (spread by the partitioner), never an
    /// empty one (which hashes to one fixed partition).
    pub fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
    ) -> Result<(), ClusterError> {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic);
        record.key = key;
        record.payload = payload;
        record.partition = partition;
        record.headers = headers;
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => {
                    return Err(ClusterError::Delivery {
                        what: format!("producing to {topic}"),
                        source: Some(e),
                    })
                }
            }
        }
    }

    /// Produces `outs` to the attributions topic, keyed by user.
    pub fn publish(&mut self, topic: &str, outs: &mut Vec<Out>) -> Result<(), ClusterError> {
        let now = now_ms();
        let mut buf = std::mem::take(&mut self.buf);
        let n = outs.len() as u64;
        for out in outs.drain(..) {
            buf.clear();
            metric::attribution_record(out.record.result());
            out.record.encode(&mut buf);
            let hex = out.record.conversion.uid.map(|u| u.to_hex());
            let key = hex.as_ref().map(|h| h.as_str().as_bytes());
            let headers = OwnedHeaders::new().insert(Header {
                key: "type",
                value: Some(EventType::Attribution.as_str()),
            });
            self.send(topic, None, key, Some(&buf), Some(headers))?;
            metric::cluster_decision_delay(now.saturating_sub(out.arrived_ms) as f64 / 1000.0);
        }
        self.buf = buf;
        if n > 0 {
            metric::cluster_produced("attribution", n);
        }
        Ok(())
    }

    /// Waits until Kafka acknowledged everything produced; an error if it
    /// gave up on any of it since the last call.
    pub fn flush(&mut self) -> Result<(), ClusterError> {
        if let Err(e) = self.producer.flush(Duration::from_secs(60)) {
            return Err(ClusterError::Delivery {
                what: "flush".into(),
                source: Some(e),
            });
        }
        let ctx = self.producer.context();
        let failed = ctx.failed.load(Ordering::Relaxed);
        if failed > self.failures_seen {
            self.failures_seen = failed;
            let first = ctx
                .first_failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            return Err(ClusterError::Delivery {
                what: format!("{} message(s) failed", failed),
                source: first,
            });
        }
        Ok(())
    }
}
