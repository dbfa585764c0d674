//! The seam's producer for a writer that names its topics and partitions
//! itself and may write in Kafka transactions: the attribution member
//! (records, and changelog writes to the partition of their user). It is
//! [`super::producer`]'s client context, key rule, header builder and error
//! classification around an rdkafka producer; transactions are rdkafka's
//! calls, each bounded by [`TXN_TIMEOUT`].

use std::time::Duration;

use crossbeam_channel::Receiver;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::TopicPartitionList;

use super::producer::{headers, key_or_null, Context, ProduceError, Report};

/// How long one transactional call may take: a coordinator that does not
/// answer within it counts as a refusal, never as a hang (a member's
/// start-up probe, and each commit, wait at most this long per call).
pub const TXN_TIMEOUT: Duration = Duration::from_secs(10);

/// A producer by topic name, optionally transactional.
pub struct NamedProducer {
    producer: ThreadedProducer<Context>,
    /// Every delivery report, read by [`NamedProducer::failures`].
    reports: Receiver<Report>,
    transactional: bool,
}

impl NamedProducer {
    /// A producer on `client`; with `client`'s `transactional.id` set, a
    /// transactional one (call [`NamedProducer::init`] first).
    pub fn new(client: &ClientConfig) -> Result<NamedProducer, KafkaError> {
        let (tx, reports) = crossbeam_channel::unbounded();
        let producer = client.create_with_context(Context::new(Some(tx)))?;
        Ok(NamedProducer {
            producer,
            reports,
            transactional: client.get("transactional.id").is_some(),
        })
    }

    pub fn transactional(&self) -> bool {
        self.transactional
    }

    /// Queues one message, waiting while librdkafka's queue is full: its
    /// writer holds the inputs behind it until they are acknowledged, so
    /// the wait is the backpressure. `partition` None is the partitioner's.
    pub fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        payload: Option<&[u8]>,
        header_pairs: &[(&str, &[u8])],
    ) -> Result<(), ProduceError> {
        let mut record: BaseRecord<'_, [u8], [u8], usize> = BaseRecord::with_opaque_to(topic, 0);
        record.key = key_or_null(key);
        record.payload = payload;
        record.partition = partition;
        if !header_pairs.is_empty() {
            record.headers = Some(headers(header_pairs));
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(ProduceError::from_kafka(&e)),
            }
        }
    }

    /// Waits at most `timeout` until every queued message is acknowledged.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }

    /// The delivery failures reported since the last call, if any: their
    /// count and the first one.
    pub fn failures(&self) -> Option<(u64, ProduceError)> {
        let mut failed = 0;
        let mut first = None;
        for (_, outcome) in self.reports.try_iter() {
            if let Err(e) = outcome {
                failed += 1;
                first.get_or_insert(e);
            }
        }
        first.map(|e| (failed, e))
    }

    /// Registers the `transactional.id` with its coordinator, which fences
    /// every older producer of that id and aborts its open transaction.
    pub fn init(&self) -> Result<(), KafkaError> {
        self.producer.init_transactions(TXN_TIMEOUT)
    }

    pub fn begin(&self) -> Result<(), KafkaError> {
        self.producer.begin_transaction()
    }

    /// Adds consumed `offsets` of the group `group` describes to the open
    /// transaction: they commit with it or not at all, and only while the
    /// group's coordinator still counts that member and generation.
    pub fn send_offsets(
        &self,
        offsets: &TopicPartitionList,
        group: &ConsumerGroupMetadata,
    ) -> Result<(), KafkaError> {
        self.producer
            .send_offsets_to_transaction(offsets, group, TXN_TIMEOUT)
    }

    /// Flushes and commits the open transaction (librdkafka sends `EndTxn`
    /// only when the transaction holds a message or offsets).
    pub fn commit(&self) -> Result<(), KafkaError> {
        self.producer.commit_transaction(TXN_TIMEOUT)
    }

    pub fn abort(&self) -> Result<(), KafkaError> {
        self.producer.abort_transaction(TXN_TIMEOUT)
    }
}
