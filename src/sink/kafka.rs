//! The Kafka sink: one librdkafka producer, polled by its own thread, so a
//! handler's `publish` only copies the message into librdkafka's queue.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;
use tracing::{info, warn};

use super::producer::{KafkaProducer, Outgoing, Produce, Refusal, Topics};
use super::{Message, Sink, SinkError};
use crate::config::{KafkaAcks, KafkaConfig};
use crate::telemetry::RateLimit;

/// Publishes to Kafka.
pub struct KafkaSink {
    /// The one producer; librdkafka batches across all handlers.
    producer: KafkaProducer,
    /// Set once a broker answered and every topic exists.
    ready: Arc<AtomicBool>,
}

/// The librdkafka settings pixeld uses, with the `librdkafka` table on top.
pub fn client_config(cfg: &KafkaConfig, brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("client.id", &cfg.client_id)
        .set("compression.type", cfg.compression.as_str())
        .set("linger.ms", cfg.linger_ms.to_string())
        .set("acks", cfg.acks.as_str())
        .set(
            "enable.idempotence",
            if cfg.acks == KafkaAcks::All {
                "true"
            } else {
                "false"
            },
        )
        .set(
            "queue.buffering.max.messages",
            cfg.queue_max_messages.to_string(),
        )
        .set("queue.buffering.max.kbytes", "1048576")
        // The Java client's partitioner: one user's events land on the same
        // partition number of every topic, whoever produced them.
        .set("partitioner", "murmur2_random")
        .set("batch.num.messages", "10000")
        .set("message.timeout.ms", "300000")
        // Queue depth, round trips and transmit errors on /metrics.
        .set("statistics.interval.ms", "10000");
    apply_table(&mut c, cfg);
    c
}

/// For consumers and admin clients: the brokers, `client.id` and the
/// `librdkafka` table, without the producer settings (librdkafka warns about
/// each one a consumer is given).
pub fn consumer_config(cfg: &KafkaConfig, brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("client.id", &cfg.client_id);
    apply_table(&mut c, cfg);
    c
}

/// The operator's `librdkafka` table, last, so that it wins.
fn apply_table(c: &mut ClientConfig, cfg: &KafkaConfig) {
    for (key, value) in &cfg.librdkafka {
        let v = match value {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        c.set(key, v);
    }
}

impl KafkaSink {
    /// Creates the producer and, in the background, waits for a broker and
    /// creates any missing topic. `brokers` overrides `cfg.brokers` (the
    /// embedded cluster's address).
    pub fn start(cfg: &KafkaConfig, brokers: &str) -> Result<KafkaSink, String> {
        let topics = Topics::from_config(&cfg.topics);
        let producer = KafkaProducer::new(&client_config(cfg, brokers), topics.clone(), None)
            .map_err(|e| format!("kafka producer: {e}"))?;
        let admin: AdminClient<DefaultClientContext> = client_config(cfg, brokers)
            .create()
            .map_err(|e| format!("kafka admin client: {e}"))?;
        let ready = Arc::new(AtomicBool::new(false));
        let setup = TopicSetup {
            admin,
            topics: topics.names().to_vec(),
            partitions: cfg.partitions,
            replication: cfg.replication_factor,
            ready: ready.clone(),
        };
        std::thread::Builder::new()
            .name("kafka-setup".into())
            .spawn(move || setup.run())
            .map_err(|e| format!("kafka setup thread: {e}"))?;
        Ok(KafkaSink { producer, ready })
    }
}

impl Sink for KafkaSink {
    fn publish(&self, msg: Message<'_>) -> Result<(), SinkError> {
        let headers = super::headers::EventHeaders::new(msg.kind, msg.input);
        let out = Outgoing {
            topic: msg.topic,
            key: msg.key,
            headers: headers.as_slice(),
            payload: msg.payload,
        };
        self.producer.send(&out, 0).map_err(|e| match e.kind {
            Refusal::QueueFull => SinkError::QueueFull,
            Refusal::Permanent => SinkError::TooLarge,
            Refusal::Retriable => SinkError::Unavailable,
        })
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    fn flush(&self, timeout: Duration) -> usize {
        self.producer.flush(timeout)
    }
}

/// Waits for a broker, then creates the topics that do not exist yet.
struct TopicSetup {
    /// Used for metadata and CreateTopics; dropped when setup is done.
    admin: AdminClient<DefaultClientContext>,
    /// Every topic pixeld writes to.
    topics: Vec<String>,
    /// Settings for the topics it creates.
    partitions: i32,
    replication: i32,
    /// Flipped to true when done.
    ready: Arc<AtomicBool>,
}

impl TopicSetup {
    fn run(self) {
        let log = RateLimit::new(30_000);
        loop {
            match self.try_once() {
                Ok(created) => {
                    if !created.is_empty() {
                        info!(topics = ?created, "created missing kafka topics");
                    }
                    info!("kafka is reachable; ready");
                    self.ready.store(true, Ordering::Relaxed);
                    return;
                }
                Err(e) => {
                    if let Some(held) = log.check() {
                        warn!(error = %e, suppressed = held, "kafka not reachable yet; /readyz answers 503");
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    }

    fn try_once(&self) -> Result<Vec<String>, String> {
        let metadata = self
            .admin
            .inner()
            .fetch_metadata(None, Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        let missing: Vec<&String> = self
            .topics
            .iter()
            .filter(|t| {
                !metadata
                    .topics()
                    .iter()
                    .any(|m| m.name() == t.as_str() && m.error().is_none())
            })
            .collect();
        if missing.is_empty() {
            return Ok(Vec::new());
        }
        let new: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|t| {
                NewTopic::new(
                    t,
                    self.partitions,
                    TopicReplication::Fixed(self.replication),
                )
            })
            .collect();
        create_topics(&self.admin, &new)?;
        Ok(missing.into_iter().cloned().collect())
    }
}

/// Creates `new` and waits for the answer; a topic that exists meanwhile
/// is no error.
pub fn create_topics(
    admin: &AdminClient<DefaultClientContext>,
    new: &[NewTopic<'_>],
) -> Result<(), String> {
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(15)));
    let results = block_on(admin.create_topics(new, &opts)).map_err(|e| e.to_string())?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(format!("creating topic {topic}: {code}")),
        }
    }
    Ok(())
}

/// Drives one future to completion on this (non-async) thread. The admin
/// client's futures are completed by its own background thread, so a simple
/// park/unpark loop is enough.
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}
