//! The member's producer: attribution records and changelog writes through
//! the sink's producer seam ([`crate::sink::transactional`]), idempotent (no
//! reordering or duplicates from its own retries), and either
//! transactional (everything between two commits, with the input offsets,
//! in one Kafka transaction) or counted: a delivery failure stops the member
//! before it commits anything the failed write covered.

use std::time::Duration;

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, TopicPartitionList};

use super::partition::Out;
use super::ClusterError;
use crate::attribution::Attribution;
use crate::event::{AdjustmentInput, AttributionInput, EventType};
use crate::ids::{HexId, UserId};
use crate::sink::headers::EventHeaders;
use crate::sink::producer::TxnRefusal;
use crate::sink::transactional::NamedProducer;
use crate::telemetry::{metric, now_ms};

/// An attribution record as a message, for the member and `--replay`
/// alike: its JSON, keyed by its user (no user: an empty key, which the
/// seam's key rule makes Kafka's NULL key), with the `type` header.
pub struct RecordMessage {
    user: Option<HexId<32>>,
    headers: EventHeaders<'static>,
}

impl RecordMessage {
    /// Encodes `record` into `buf` (cleared first).
    pub fn encode(record: &Attribution, buf: &mut Vec<u8>) -> RecordMessage {
        buf.clear();
        record.encode(buf);
        RecordMessage {
            user: record.conversion.uid.map(|u| u.to_hex()),
            headers: EventHeaders::new(EventType::Attribution, None),
        }
    }

    pub fn key(&self) -> &[u8] {
        self.user
            .as_ref()
            .map_or(&[][..], |h| h.as_str().as_bytes())
    }

    pub fn headers(&self) -> &[(&str, &[u8])] {
        self.headers.as_slice()
    }
}

/// Why a transaction did not commit.
#[derive(Debug)]
pub enum TxnFailed {
    /// Aborted: nothing of it is visible to a `read_committed` reader, and
    /// the member's state has applied inputs whose outputs are gone.
    Aborted(KafkaError),
    /// The producer can never commit again: the member must stop.
    Fatal(ClusterError),
}

pub struct Output {
    producer: NamedProducer,
    /// Reused for encoding.
    buf: Vec<u8>,
    /// A transaction is open (transactional mode): begun at the first write
    /// after a commit, so an idle member opens none.
    open: bool,
}

impl Output {
    /// An at-least-once producer, or with `transactional_id` a
    /// transactional one (not initialised: [`Output::init`]).
    pub fn new(
        settings: &ClientConfig,
        transactional_id: Option<&str>,
    ) -> Result<Output, ClusterError> {
        let mut config = settings.clone();
        // Changelog writes and records must not be reordered by producer
        // retries (a changelog value overtaken by an older one would restore
        // old state) nor duplicated: an idempotent producer. Where the
        // operator turned idempotence off (`kafka.acks` other than `all`, or
        // the `librdkafka` table: tansu 0.6.0's sqlite engine panics at the
        // first idempotent produce after a restart, see the fault campaign),
        // one request in flight keeps the order, and a retry can at most
        // duplicate a record, which consumers deduplicate by `event_id`.
        // Transactions need idempotence ([`super::guarantee`] refuses them
        // where it is off).
        config.set("acks", "all");
        if config.get("enable.idempotence") == Some("false") {
            config.set("max.in.flight.requests.per.connection", "1");
        } else {
            config.set("enable.idempotence", "true");
        }
        if let Some(id) = transactional_id {
            // librdkafka refuses a message timeout above the transaction's
            // (a message still in flight when the broker aborts its
            // transaction). A minute, librdkafka's default, unless the
            // `librdkafka` table says otherwise: the broker aborts a dead
            // member's open transaction after it, and `read_committed`
            // readers of its partitions wait at most that long.
            let txn_ms: u64 = config
                .get("transaction.timeout.ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(60_000);
            let message_ms: u64 = config
                .get("message.timeout.ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(300_000);
            config
                .set("transactional.id", id)
                .set("transaction.timeout.ms", txn_ms.to_string())
                .set("message.timeout.ms", message_ms.min(txn_ms).to_string());
        }
        let producer =
            NamedProducer::new(&config).map_err(|e| ClusterError::kafka("producer", e))?;
        Ok(Output {
            producer,
            buf: Vec::with_capacity(1024),
            open: false,
        })
    }

    pub fn transactional(&self) -> bool {
        self.producer.transactional()
    }

    /// A transaction is open (tests: the mock cluster cannot show an
    /// abort, since it hides no aborted message).
    #[cfg(test)]
    pub fn in_transaction(&self) -> bool {
        self.open
    }

    /// Registers the transactional id (fencing its older producers).
    pub fn init(&self) -> Result<(), KafkaError> {
        self.producer.init()
    }

    /// Produces one message, waiting while librdkafka's queue is full; an
    /// empty key is Kafka's NULL key (the seam's key rule). In
    /// transactional mode the message joins the open transaction.
    pub fn send(
        &mut self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        payload: Option<&[u8]>,
        headers: &[(&str, &[u8])],
    ) -> Result<(), ClusterError> {
        if self.transactional() && !self.open {
            self.producer
                .begin()
                .map_err(|e| fatal("beginning a transaction", e))?;
            self.open = true;
        }
        self.producer
            .send(topic, partition, key, payload, headers)
            .map_err(|source| ClusterError::Refused {
                what: format!("producing to {topic}"),
                source,
            })
    }

    /// Produces `outs` to the attributions topic, keyed by user.
    pub fn publish(&mut self, topic: &str, outs: &mut Vec<Out>) -> Result<(), ClusterError> {
        let now = now_ms();
        let mut buf = std::mem::take(&mut self.buf);
        let n = outs.len() as u64;
        for out in outs.drain(..) {
            metric::attribution_record(out.record.result());
            let message = RecordMessage::encode(&out.record, &mut buf);
            self.send(topic, None, message.key(), Some(&buf), message.headers())?;
            metric::cluster_decision_delay(now.saturating_sub(out.arrived_ms) as f64 / 1000.0);
        }
        self.buf = buf;
        if n > 0 {
            metric::cluster_produced("attribution", n);
        }
        Ok(())
    }

    /// Sends `adjustment` on to the member holding `user`'s orders: keyed
    /// by the user, the engine's input (with `user` as its `uid`) in the
    /// `pixeld-input` header, which that member reads, and a line of JSON
    /// for people reading the topic.
    pub fn send_on(
        &mut self,
        topic: &str,
        user: UserId,
        adjustment: &AdjustmentInput,
    ) -> Result<(), ClusterError> {
        // The user the order index found rides in the input's `uid` (the
        // adjustment named none): the second hop must answer for that
        // user, not for whoever its own state thinks owns the order.
        let mut routed = adjustment.clone();
        routed.conversion.uid = Some(user);
        let mut input = Vec::with_capacity(128);
        AttributionInput::Adjustment(routed).encode(&mut input);
        let key = user.to_hex();
        let payload = format!(
            r#"{{"type":"adjustment_by_user","event_id":"{}","user":"{}"}}"#,
            adjustment.conversion.event_id,
            key.as_str()
        );
        let headers = EventHeaders::new(EventType::Adjustment, Some(&input));
        self.send(
            topic,
            None,
            key.as_str().as_bytes(),
            Some(payload.as_bytes()),
            headers.as_slice(),
        )
    }

    /// At-least-once mode: waits until Kafka acknowledged everything
    /// produced; an error if it gave up on any of it since the last call.
    pub fn flush(&mut self) -> Result<(), ClusterError> {
        if let Err(e) = self.producer.flush(Duration::from_secs(60)) {
            return Err(ClusterError::Delivery {
                what: "flush".into(),
                source: Some(e),
            });
        }
        match self.producer.failures() {
            None => Ok(()),
            Some(failed) => Err(ClusterError::refused(failed)),
        }
    }

    /// Transactional mode: adds `offsets` (if any) to the open transaction,
    /// beginning one if none is, and commits it.
    pub fn commit(
        &mut self,
        offsets: Option<(&TopicPartitionList, &ConsumerGroupMetadata)>,
    ) -> Result<(), TxnFailed> {
        if offsets.is_none() && !self.open {
            return Ok(());
        }
        if !self.open {
            self.producer
                .begin()
                .map_err(|e| TxnFailed::Fatal(fatal("beginning a transaction", e)))?;
            self.open = true;
        }
        if let Some((tpl, group)) = offsets {
            self.retried(|p| p.send_offsets(tpl, group))
                .map_err(|e| self.failed("adding the input offsets to the transaction", e))?;
        }
        let result = self.retried(NamedProducer::commit);
        // Delivery reports of a committed (or aborted) transaction are
        // librdkafka's to judge: commit fails if any message failed.
        let _ = self.producer.failures();
        match result {
            Ok(()) => {
                self.open = false;
                Ok(())
            }
            Err(e) => Err(self.failed("committing the transaction", e)),
        }
    }

    /// `call`, again while librdkafka calls its failure retriable (a
    /// timeout, a coordinator moving): the call resumes the same
    /// operation, and nothing else (an abort included) may run until it
    /// ends. Three tries, each bounded by the transactional timeout.
    fn retried(
        &self,
        call: impl Fn(&NamedProducer) -> Result<(), KafkaError>,
    ) -> Result<(), KafkaError> {
        let mut tries = 1;
        loop {
            match call(&self.producer) {
                Err(e) if tries < 3 && TxnRefusal::of(&e) == TxnRefusal::Retriable => tries += 1,
                other => return other,
            }
        }
    }

    /// Aborts the open transaction, if any: none of its messages or
    /// offsets becomes visible to a `read_committed` reader.
    pub fn abort(&mut self) -> Result<(), ClusterError> {
        if !std::mem::take(&mut self.open) {
            return Ok(());
        }
        let _ = self.producer.failures();
        self.producer
            .abort()
            .map_err(|e| fatal("aborting the transaction", e))
    }

    /// Sorts a failed transactional call by librdkafka's verdict: an
    /// abortable one is aborted here; one still retriable after its tries
    /// leaves the producer inside a call it cannot leave, so it is fatal.
    fn failed(&mut self, what: &str, e: KafkaError) -> TxnFailed {
        match TxnRefusal::of(&e) {
            TxnRefusal::Fatal | TxnRefusal::Retriable => TxnFailed::Fatal(fatal(what, e)),
            TxnRefusal::Abortable => match self.abort() {
                Ok(()) => TxnFailed::Aborted(e),
                Err(ClusterError::Fenced {
                    what: aborting,
                    source,
                }) => TxnFailed::Fatal(fatal(&format!("{what}: {e}; then {aborting}"), source)),
                Err(other) => TxnFailed::Fatal(other),
            },
        }
    }
}

fn fatal(what: &str, source: KafkaError) -> ClusterError {
    ClusterError::Fenced {
        what: what.to_string(),
        source,
    }
}
