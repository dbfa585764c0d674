//! Telling traffic sources and ad platforms about attributed conversions
//! (`pixeld forward`, the service in [`crate::forward`]):
//!
//! - [`record`]: an attribution record as read back, and its status;
//! - [`destination`]: a `[[destinations]]` entry and the call it makes
//!   for a record, by kind: [`url`] (a postback template), [`meta`]
//!   (Meta's Conversions API) and [`google`] (Google Ads click
//!   conversions);
//! - [`call`]: one attempt, its outcome class, the backoff;
//! - [`worker`]: a destination's queue, its concurrency and rate, retries
//!   and dead letters;
//! - [`log`]: the delivery log and dead-letter topics;
//! - [`progress`]: which offsets may be committed;
//! - [`group`] and [`consumer`]: the consumer group and the loop.

pub mod call;
pub mod consumer;
pub mod destination;
pub mod google;
pub mod group;
pub mod log;
pub mod meta;
pub mod progress;
pub mod record;
pub mod url;
pub mod worker;

/// Why `pixeld forward` stopped.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Kafka gave up on delivery-log or dead-letter messages: committing
    /// past their records would lose what happened to them.
    #[error("Kafka gave up on {0} delivery-log or dead-letter message(s); stopping without committing past them (a restart calls those records again)")]
    LogLost(u64),
    #[error("the forward thread panicked; stopping without committing further (a restart calls the unfinished records again)")]
    Panicked,
    #[error("kafka: {what}: {source}")]
    Kafka {
        what: &'static str,
        #[source]
        source: rdkafka::error::KafkaError,
    },
}
