//! Why a member could not start or had to stop. Each variant keeps its
//! source; what is not fatal (a commit the next interval retries) is not an
//! error at all but an outcome ([`super::commit::Committed`]).

use rdkafka::error::KafkaError;

use crate::sink::producer::ProduceError;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A Kafka client could not be created or a call it needs failed.
    #[error("kafka: {what}: {source}")]
    Kafka {
        what: String,
        #[source]
        source: KafkaError,
    },
    /// The brokers did not answer in time (`kafka.brokers`).
    #[error("kafka: {0}; check kafka.brokers and that the brokers are up")]
    Unreachable(String),
    /// The topics are not co-partitioned, or missing: the fix is named.
    #[error("{0}")]
    Topics(String),
    /// Kafka gave up on a record or changelog write: the inputs behind it
    /// are not committed; restarting replays them.
    #[error("kafka did not acknowledge attribution output ({what}); stopping without committing, a restart replays the inputs")]
    Delivery {
        what: String,
        #[source]
        source: Option<KafkaError>,
    },
    /// Kafka refused a record or changelog write, or gave up on it (its
    /// refusal kept): as [`ClusterError::Delivery`].
    #[error("kafka did not take attribution output ({what}): {source}; stopping without committing, a restart replays the inputs")]
    Refused {
        what: String,
        #[source]
        source: ProduceError,
    },
    /// A transactional call failed for good: another producer took this
    /// member's `transactional.id` (a replacement fenced it) or the broker
    /// cannot do transactions. Nothing uncommitted becomes visible; the
    /// member stops publishing.
    #[error("kafka refused this member's transaction for good ({what}): {source}; stopping without committing, a restart replays the inputs")]
    Fenced {
        what: String,
        #[source]
        source: KafkaError,
    },
    /// `attribution.transactions = "required"` and the brokers cannot give
    /// them: start-up stops rather than run with a weaker guarantee.
    #[error("attribution.transactions = \"required\", but {why}; use brokers with Kafka transactions (Kafka 2.5 or later), or set attribution.transactions = \"auto\" to run at least once where they are missing")]
    Guarantee { why: String },
    /// The member's thread could not start, or panicked.
    #[error("the attribution member thread {0}")]
    Thread(String),
}

impl ClusterError {
    /// `failed` messages refused since the last check, `first` the first
    /// refusal.
    /// `failed` messages refused by Kafka, the first for `source`.
    pub fn refused((failed, source): (u64, ProduceError)) -> ClusterError {
        ClusterError::Refused {
            what: format!("{failed} message(s) failed"),
            source,
        }
    }

    pub fn kafka(what: impl Into<String>, source: KafkaError) -> ClusterError {
        ClusterError::Kafka {
            what: what.into(),
            source,
        }
    }

    /// 1 for a failure a restart redoes (delivery), 2 for what the operator
    /// must fix first.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClusterError::Delivery { .. }
            | ClusterError::Refused { .. }
            | ClusterError::Fenced { .. }
            | ClusterError::Thread(_) => 1,
            _ => 2,
        }
    }
}
