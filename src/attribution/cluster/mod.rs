//! The attribution engine as a Kafka consumer-group member (`pixeld
//! attribute`), the way a Kafka Streams application is built: the input
//! topics (impressions, clicks, conversions, the segments topic for
//! opt-outs, adjustments, and the two topics of adjustments by order id
//! alone, [`order_index`]) are co-partitioned ([`topics`]), the group's `range`
//! assignor gives one member partition p of each, and each partition's state
//! ([`partition`]) is kept in memory and written to a compacted changelog
//! ([`changelog`]) from which the next owner restores it ([`restore`]).
//!
//! One thread runs the member ([`poll`]): poll, order by event time
//! ([`crate::attribution::order`]), apply (the same
//! [`crate::attribution::Engine`] and rules as `pixeld serve`), produce
//! records ([`output`]). Every `commit_interval` ([`commit`]) it produces
//! the records decided so far, writes each changed user's state to the
//! changelog and commits the input offsets; a revoke in the middle of a
//! batch does the same before the partitions go ([`membership`]).
//!
//! Which guarantee that gives is decided at start ([`guarantee`]): where
//! the brokers have Kafka transactions, records, changelog writes and
//! offsets commit in one transaction (exactly once for `read_committed`
//! readers; an aborted transaction drops the state and restores the
//! partitions). Elsewhere the member waits until Kafka acknowledged the
//! writes before it commits the offsets: a crash replays inputs from the
//! last commit against a state that may be ahead of them; touches are
//! idempotent and a conversion already decided answers from its stored
//! decision, so a replay can duplicate a record but never change one.
//!
//! Rooms: [`member`] (start and stop), [`guarantee`] (the probe),
//! [`membership`] (rebalances), [`poll`] (the loop), [`commit`],
//! [`restore`], [`output`] (the member's producer, on the sink's producer
//! seam), [`work`] (what the thread and the callbacks share),
//! [`inputs`] (the input topics as an enum), [`order_index`] (the first
//! hop of an adjustment by order id alone), [`error`], and
//! [`broker_quirks`], the one place that works around a broker's behaviour.

pub mod broker_quirks;
pub mod changelog;
mod commit;
mod error;
mod guarantee;
pub mod inputs;
mod member;
mod membership;
mod order_index;
mod output;
pub mod partition;
mod poll;
pub mod replay;
mod restore;
pub mod topics;
mod work;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rdkafka::ClientConfig;

pub use self::error::ClusterError;
pub use self::guarantee::Guarantee;
pub use self::inputs::{InputTopic, PerInput};
pub use self::member::Member;
pub use self::topics::ClusterTopics;

/// What a member needs to know.
#[derive(Clone)]
pub struct Settings {
    /// The producer of records and changelog: `serve`'s settings (brokers,
    /// compression, the murmur2 partitioner, the operator's table).
    pub producer: ClientConfig,
    /// Brokers, `client.id` and the operator's table, for the consumers and
    /// the admin client (no producer settings, which librdkafka warns about).
    pub consumer: ClientConfig,
    pub group_id: String,
    pub topics: ClusterTopics,
    pub grace_ms: u64,
    /// `attribution.max_future_ms`.
    pub max_future_ms: u64,
    pub commit_interval: Duration,
    pub sweep_interval: Duration,
    pub session_timeout_ms: u32,
    /// `attribution.max_users`, per owned partition.
    pub max_users: usize,
    /// `attribution.transactions`.
    pub transactions: crate::config::Transactions,
    /// The producer's `transactional.id` when transactions are tried
    /// (see `attribute::transactional_id` for why it is this one).
    pub transactional_id: String,
}

/// Readiness and progress, read by the member's HTTP listener and tests.
#[derive(Default)]
pub struct Status {
    /// True once the member took part in a rebalance.
    pub joined: AtomicBool,
    /// True while a partition is restored from the changelog.
    pub restoring: AtomicBool,
    /// Partitions that no live member of the group owns, as this member
    /// last found the group ([`broker_quirks::Coverage`]): 0 when every
    /// partition has an owner.
    pub orphaned: AtomicUsize,
}

impl Status {
    pub fn ready(&self) -> bool {
        self.joined.load(Ordering::Relaxed)
            && !self.restoring.load(Ordering::Relaxed)
            && self.orphaned.load(Ordering::Relaxed) == 0
    }
}
