//! The one seam to a Kafka producer, shared by the direct sink and the
//! journal's shipper: one client context (logs, errors, delivery counts),
//! one header builder, one key rule, one error classification, one topic
//! table; [`super::transactional`] builds the attribution member's producer
//! (named topics, chosen partitions, Kafka transactions) from the same
//! parts. [`Produce`] is the trait the sink and the shipper use, so the
//! shipper's retry, dead-letter and checkpoint logic is unit-tested with
//! `mock::MockProducer` (tests only), which fails on demand.

use std::time::Duration;

use crossbeam_channel::Sender;
use rdkafka::bindings as rdsys;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{Producer, ProducerContext, ThreadedProducer};
use tracing::warn;

use super::Topic;
use crate::config::TopicsConfig;
use crate::telemetry::{metric, RateLimit};

/// One message to produce, borrowed for the call.
#[derive(Clone, Copy, Debug)]
pub struct Outgoing<'a> {
    pub topic: Topic,
    /// The partitioning key: the user id; empty for anonymous events,
    /// produced with a NULL key.
    pub key: &'a [u8],
    pub headers: &'a [(&'a str, &'a [u8])],
    pub payload: &'a [u8],
}

/// Why a message was refused, at `send` or in its delivery report (which
/// carries a code and the client's words, not a `KafkaError`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ProduceError {
    pub kind: Refusal,
    /// The client's words, for logs and the dead-letter file.
    pub message: String,
}

/// What to do about a refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The client's queue is full: try again shortly.
    QueueFull,
    /// The broker will never take this message (too large, invalid).
    Permanent,
    /// Anything else: the broker is slow, gone, or electing; try again.
    Retriable,
}

impl ProduceError {
    pub fn from_kafka(e: &KafkaError) -> ProduceError {
        let kind = match e.rdkafka_error_code() {
            Some(RDKafkaErrorCode::QueueFull) => Refusal::QueueFull,
            Some(
                RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::InvalidTopic,
            ) => Refusal::Permanent,
            _ => Refusal::Retriable,
        };
        ProduceError {
            kind,
            message: e.to_string(),
        }
    }
}

/// What a failed transactional call leaves: librdkafka's own verdict on
/// the error, which is the only one that knows the producer's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnRefusal {
    /// The producer can never commit again (fenced by a newer producer with
    /// the same `transactional.id`, or a broker that refused the protocol):
    /// stop publishing.
    Fatal,
    /// This transaction is lost: abort it; the producer may start another.
    Abortable,
    /// Timed out or the coordinator moved: the same call may be repeated.
    Retriable,
}

impl TxnRefusal {
    pub fn of(e: &KafkaError) -> TxnRefusal {
        match e {
            KafkaError::Transaction(t) if t.is_fatal() => TxnRefusal::Fatal,
            KafkaError::Transaction(t) if t.txn_requires_abort() => TxnRefusal::Abortable,
            KafkaError::Transaction(t) if t.is_retriable() => TxnRefusal::Retriable,
            // Anything else from a transactional call (a state error, say)
            // cannot be reasoned about: treat the producer as unusable.
            _ => TxnRefusal::Fatal,
        }
    }
}

/// The key rule: an empty key (an anonymous event) is produced as Kafka's
/// NULL key, which the partitioner spreads; an empty key would hash every
/// anonymous event of the fleet to one fixed partition.
pub fn key_or_null(key: &[u8]) -> Option<&[u8]> {
    (!key.is_empty()).then_some(key)
}

/// The header builder for producers that go through rdkafka's records
/// ([`super::transactional`]); [`KafkaProducer::send`] writes the same
/// pairs straight into librdkafka's headers.
pub fn headers(pairs: &[(&str, &[u8])]) -> rdkafka::message::OwnedHeaders {
    pairs.iter().fold(
        rdkafka::message::OwnedHeaders::new_with_capacity(pairs.len()),
        |h, (key, value)| {
            h.insert(rdkafka::message::Header {
                key,
                value: Some(*value),
            })
        },
    )
}

/// A delivery report: the `opaque` given to [`Produce::send`], and how it went.
pub type Report = (u64, Result<(), ProduceError>);

/// Produces messages; delivery reports arrive later, on the channel the
/// producer was made with (if any).
pub trait Produce: Send + Sync {
    /// Queues one message; never blocks on the network.
    fn send(&self, msg: &Outgoing<'_>, opaque: u64) -> Result<(), ProduceError>;
    /// Waits at most `timeout` for queued messages; returns how many are
    /// still undelivered.
    fn flush(&self, timeout: Duration) -> usize;
    /// Messages sent whose outcome is not known yet, without waiting. 0 is
    /// the shipper's delivery barrier: every message sent before was either
    /// acknowledged or its failure report is already on the reports
    /// channel (so a producer that reports only failures still tells when
    /// a range is durable).
    fn unresolved(&self) -> usize;
}

/// Topic name per [`Topic`], at its index.
#[derive(Clone, Debug)]
pub struct Topics([String; Topic::COUNT]);

impl Topics {
    /// The configured names (`[kafka.topics]`).
    pub fn from_config(cfg: &TopicsConfig) -> Topics {
        Topics(Topic::ALL.map(|t| configured(cfg, t).to_string()))
    }

    pub fn name(&self, topic: Topic) -> &str {
        &self.0[topic.index()]
    }

    /// Every name, in `Topic::ALL` order.
    pub fn names(&self) -> &[String; Topic::COUNT] {
        &self.0
    }
}

/// The `[kafka.topics]` entry of `topic`: a match, so a new topic without
/// its entry does not compile (a list "in the same order" once could).
fn configured(cfg: &TopicsConfig, topic: Topic) -> &str {
    match topic {
        Topic::Impressions => &cfg.impressions,
        Topic::Clicks => &cfg.clicks,
        Topic::Conversions => &cfg.conversions,
        Topic::Segments => &cfg.segments,
        Topic::Invalid => &cfg.invalid,
        Topic::Attributions => &cfg.attributions,
        Topic::Adjustments => &cfg.adjustments,
        Topic::UserSync => &cfg.usersync,
        Topic::Postbacks => &cfg.postbacks,
        Topic::PostbacksDead => &cfg.postbacks_dead,
        Topic::Orders => &cfg.orders,
    }
}

/// Logs without flooding, counts deliveries, forwards reports.
pub struct Context {
    /// Where delivery reports go (the shipper); None when nobody waits.
    reports: Option<Sender<Report>>,
    /// One failure line per 10 s at most.
    failure_log: RateLimit,
    /// One client-error line per 10 s at most.
    error_log: RateLimit,
    /// One librdkafka warning per 10 s at most.
    librdkafka_log: RateLimit,
}

impl Context {
    /// Delivery reports go to `reports`, if given.
    pub fn new(reports: Option<Sender<Report>>) -> Context {
        Context {
            reports,
            failure_log: RateLimit::new(10_000),
            error_log: RateLimit::new(10_000),
            librdkafka_log: RateLimit::new(10_000),
        }
    }
}

impl ClientContext for Context {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        crate::telemetry::librdkafka_log(&self.librdkafka_log, level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        crate::telemetry::kafka_client_error(&self.error_log, &error, reason);
    }

    /// librdkafka's statistics (every `statistics.interval.ms`): the
    /// producer's queue, and per broker the round trip and transmit errors.
    fn stats(&self, s: rdkafka::Statistics) {
        metric::kafka_producer_statistics(&s);
    }
}

impl ProducerContext for Context {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        let outcome = match result {
            Ok(m) => {
                // CreateTime, set by the producer when the record was sent.
                let latency = rdkafka::Message::timestamp(m).to_millis().map(|sent| {
                    let ms = crate::telemetry::now_ms().saturating_sub(sent.max(0) as u64);
                    ms as f64 / 1000.0
                });
                metric::kafka_delivered(latency);
                Ok(())
            }
            Err((error, _)) => {
                metric::kafka_delivery_failed();
                if self.reports.is_none() {
                    if let Some(held) = self.failure_log.check() {
                        warn!(%error, suppressed = held, "event delivery failed");
                    }
                }
                Err(ProduceError::from_kafka(error))
            }
        };
        if let Some(tx) = &self.reports {
            let _ = tx.send((opaque as u64, outcome));
        }
    }
}

/// librdkafka's handle on one topic, made once. Producing by name (what
/// `BaseProducer::send` does) costs every message a C string and a lookup
/// under the client's lock.
struct TopicHandle(*mut rdsys::rd_kafka_topic_t);

// SAFETY: librdkafka's topic handles are reference-counted and safe to use
// from any thread; this one is only destroyed on drop.
unsafe impl Send for TopicHandle {}
unsafe impl Sync for TopicHandle {}

impl Drop for TopicHandle {
    fn drop(&mut self) {
        // SAFETY: made by `rd_kafka_topic_new`, destroyed once, here.
        unsafe { rdsys::rd_kafka_topic_destroy(self.0) }
    }
}

/// A librdkafka producer behind [`Produce`].
pub struct KafkaProducer {
    /// Per [`Topic`], at its index. Declared before `producer` so they are
    /// released before the client is.
    handles: Vec<TopicHandle>,
    producer: ThreadedProducer<Context>,
}

impl KafkaProducer {
    /// Creates the producer; its delivery reports go to `reports`, if given.
    pub fn new(
        client: &ClientConfig,
        topics: Topics,
        reports: Option<Sender<Report>>,
    ) -> Result<KafkaProducer, KafkaError> {
        let producer: ThreadedProducer<Context> =
            client.create_with_context(Context::new(reports))?;
        let rk = producer.client().native_ptr();
        let mut handles = Vec::with_capacity(Topic::COUNT);
        for name in topics.names() {
            let c_name = std::ffi::CString::new(name.as_str()).map_err(|_| {
                KafkaError::ClientCreation(format!("topic name {name:?} has a NUL"))
            })?;
            // SAFETY: `rk` is the live client; a null conf takes the defaults.
            let rkt =
                unsafe { rdsys::rd_kafka_topic_new(rk, c_name.as_ptr(), std::ptr::null_mut()) };
            if rkt.is_null() {
                return Err(KafkaError::ClientCreation(format!(
                    "librdkafka refused a handle for topic {name:?}"
                )));
            }
            handles.push(TopicHandle(rkt));
        }
        Ok(KafkaProducer { handles, producer })
    }
}

impl Produce for KafkaProducer {
    fn send(&self, msg: &Outgoing<'_>, opaque: u64) -> Result<(), ProduceError> {
        use rdsys::rd_kafka_vtype_t::*;
        let rkt = self.handles[msg.topic.index()].0;
        let rk = self.producer.client().native_ptr();
        // The key rule ([`key_or_null`]).
        let key_ptr = match key_or_null(msg.key) {
            None => std::ptr::null(),
            Some(key) => key.as_ptr() as *const std::ffi::c_void,
        };
        // SAFETY: every pointer is valid for the call; with F_COPY librdkafka
        // copies key and payload before returning, and on success it owns
        // the headers (freed here when it refuses the message). The opaque
        // is a number, read back as `usize` by the delivery callback.
        let err = unsafe {
            let hdrs = rdsys::rd_kafka_headers_new(msg.headers.len());
            for (name, value) in msg.headers {
                rdsys::rd_kafka_header_add(
                    hdrs,
                    name.as_ptr().cast(),
                    name.len() as isize,
                    value.as_ptr().cast(),
                    value.len() as isize,
                );
            }
            let err = rdsys::rd_kafka_producev(
                rk,
                RD_KAFKA_VTYPE_RKT,
                rkt,
                RD_KAFKA_VTYPE_PARTITION,
                -1i32,
                RD_KAFKA_VTYPE_MSGFLAGS,
                rdsys::RD_KAFKA_MSG_F_COPY,
                RD_KAFKA_VTYPE_VALUE,
                msg.payload.as_ptr() as *mut std::ffi::c_void,
                msg.payload.len(),
                RD_KAFKA_VTYPE_KEY,
                key_ptr,
                msg.key.len(),
                RD_KAFKA_VTYPE_OPAQUE,
                opaque as usize as *mut std::ffi::c_void,
                RD_KAFKA_VTYPE_HEADERS,
                hdrs,
                RD_KAFKA_VTYPE_END,
            );
            if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                rdsys::rd_kafka_headers_destroy(hdrs);
            }
            err
        };
        if err == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            Ok(())
        } else {
            let code = rdkafka::types::RDKafkaErrorCode::from(err);
            Err(ProduceError::from_kafka(&KafkaError::MessageProduction(
                code,
            )))
        }
    }

    /// `rd_kafka_flush` itself, not rdkafka's `flush`: with reports as
    /// events (rdkafka's mode) it waits on librdkafka's condition variable,
    /// linger off, while the producer's thread serves the events; rdkafka's
    /// polls the queue in a loop whose last millisecond spins (the timeout
    /// truncates to 0 ms), which cost the shipper's barrier waits several
    /// µs of CPU per event.
    fn flush(&self, timeout: Duration) -> usize {
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: the live client; flush only waits and wakes brokers.
        unsafe { rdsys::rd_kafka_flush(self.producer.client().native_ptr(), ms) };
        self.unresolved()
    }

    /// `rd_kafka_outq_len`: messages not destroyed yet plus events not
    /// served yet. librdkafka destroys an acknowledged message at once when
    /// only failures are reported (`delivery.report.only.error`), and a
    /// failed one only after its report event was served and dropped, which
    /// is after `Context::delivery` sent it on the channel; so 0 means
    /// every earlier message is acknowledged or its failure is on the
    /// channel.
    fn unresolved(&self) -> usize {
        self.producer.in_flight_count().max(0) as usize
    }
}

#[cfg(any(test, feature = "test-util"))]
pub mod mock {
    //! A producer that keeps what it is given and fails on demand.

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use super::*;

    /// How the failing call fails.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Failure {
        /// `send` answers queue-full (nothing is queued).
        QueueFull,
        /// `send` refuses the message for good.
        PermanentAtSend,
        /// The delivery report says a retriable error.
        RetriableReport,
        /// The delivery report says a permanent error.
        PermanentReport,
        /// Taken, but its delivery report never comes (a broker that hangs).
        NoReport,
    }

    /// One message the mock took.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Taken {
        pub topic: Topic,
        pub key: Vec<u8>,
        pub headers: Vec<(String, Vec<u8>)>,
        pub payload: Vec<u8>,
    }

    /// Acknowledges every message at once (reports go out inside `send`),
    /// except the `n`-th call (counting from 0), which fails as told.
    pub struct MockProducer {
        reports: Sender<Report>,
        fail_at: Option<(usize, Failure)>,
        /// Like `delivery.report.only.error`: no report for a success.
        errors_only: bool,
        calls: AtomicUsize,
        /// Messages taken whose report never comes ([`Failure::NoReport`]).
        hung: AtomicUsize,
        /// Messages acknowledged, in order.
        pub delivered: Mutex<Vec<Taken>>,
    }

    impl MockProducer {
        pub fn new(reports: Sender<Report>) -> MockProducer {
            MockProducer {
                reports,
                fail_at: None,
                errors_only: false,
                calls: AtomicUsize::new(0),
                hung: AtomicUsize::new(0),
                delivered: Mutex::new(Vec::new()),
            }
        }

        pub fn new_failing_at(n: usize, failure: Failure, reports: Sender<Report>) -> MockProducer {
            MockProducer {
                fail_at: Some((n, failure)),
                ..MockProducer::new(reports)
            }
        }

        /// Reports failures only, as the shipper's producer does
        /// (`delivery.report.only.error`).
        pub fn errors_only(self) -> MockProducer {
            MockProducer {
                errors_only: true,
                ..self
            }
        }

        pub fn delivered(&self) -> Vec<Taken> {
            self.delivered
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        }
    }

    fn error(kind: Refusal) -> ProduceError {
        ProduceError {
            kind,
            message: format!("mock {kind:?}"),
        }
    }

    impl Produce for MockProducer {
        fn send(&self, msg: &Outgoing<'_>, opaque: u64) -> Result<(), ProduceError> {
            let call = self.calls.fetch_add(1, Ordering::Relaxed);
            let failure = self.fail_at.filter(|(n, _)| *n == call).map(|(_, f)| f);
            match failure {
                Some(Failure::QueueFull) => return Err(error(Refusal::QueueFull)),
                Some(Failure::PermanentAtSend) => return Err(error(Refusal::Permanent)),
                Some(Failure::RetriableReport) => {
                    let _ = self.reports.send((opaque, Err(error(Refusal::Retriable))));
                    return Ok(());
                }
                Some(Failure::PermanentReport) => {
                    let _ = self.reports.send((opaque, Err(error(Refusal::Permanent))));
                    return Ok(());
                }
                Some(Failure::NoReport) => {
                    self.hung.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                None => {}
            }
            self.delivered
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Taken {
                    topic: msg.topic,
                    key: msg.key.to_vec(),
                    headers: msg
                        .headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_vec()))
                        .collect(),
                    payload: msg.payload.to_vec(),
                });
            if !self.errors_only {
                let _ = self.reports.send((opaque, Ok(())));
            }
            Ok(())
        }

        fn flush(&self, timeout: Duration) -> usize {
            // A hung message never resolves: the whole timeout goes by.
            if self.unresolved() > 0 {
                std::thread::sleep(timeout);
            }
            self.unresolved()
        }

        fn unresolved(&self) -> usize {
            self.hung.load(Ordering::Relaxed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Topic, Topics};
    use crate::config::TopicsConfig;

    /// Each topic finds its own configured name in its slot: no two topics
    /// share one (the defaults are all different).
    #[test]
    fn every_topic_round_trips_through_the_name_table() {
        let topics = Topics::from_config(&TopicsConfig::default());
        for t in Topic::ALL {
            let name = topics.name(t);
            let found: Vec<Topic> = Topic::ALL
                .into_iter()
                .filter(|o| topics.name(*o) == name)
                .collect();
            assert_eq!(found, [t], "{name}");
            assert_eq!(topics.names()[t.index()], name);
        }
        assert_eq!(topics.name(Topic::Impressions), "pixel.impressions");
        assert_eq!(topics.name(Topic::PostbacksDead), "pixel.postbacks.dead");
    }
}
