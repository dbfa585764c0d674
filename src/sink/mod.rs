//! The boundary between answering pixels and delivering events: handlers hand
//! encoded events to a [`Sink`] and never wait on it.

pub mod embedded;
pub mod headers;
pub mod kafka;
#[cfg(any(test, feature = "test-util"))]
pub mod memory;
pub mod partition;
pub mod producer;
pub mod transactional;

use std::time::Duration;

use crate::event::EventType;

crate::indexed::indexed_enum! {
    /// Where an event goes; the Kafka sink maps each to a configured topic
    /// name. The declaration order is the journal's topic code: append,
    /// never reorder.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum Topic {
        Impressions,
        Clicks,
        Conversions,
        Segments,
        Invalid,
        Attributions,
        Adjustments,
        UserSync,
        /// `pixeld forward`'s delivery log.
        Postbacks,
        /// `pixeld forward`'s calls given up on.
        PostbacksDead,
        /// Conversions with an order id again, keyed by the order (cluster
        /// mode: [`crate::event::input::PartitionKey::Order`]).
        Orders,
    }
}

impl Topic {
    pub fn for_event(kind: EventType) -> Topic {
        match kind {
            EventType::Impression => Topic::Impressions,
            EventType::Click => Topic::Clicks,
            EventType::Conversion => Topic::Conversions,
            EventType::Segment | EventType::OptOut => Topic::Segments,
            EventType::Invalid => Topic::Invalid,
            EventType::Attribution => Topic::Attributions,
            EventType::Adjustment => Topic::Adjustments,
            EventType::UserSync => Topic::UserSync,
            EventType::Postback => Topic::Postbacks,
            EventType::PostbackDead => Topic::PostbacksDead,
        }
    }
}

/// One encoded event, borrowed for the duration of [`Sink::publish`].
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    pub topic: Topic,
    /// The partitioning key: the user id, empty for anonymous events.
    pub key: &'a [u8],
    /// The `type` header.
    pub kind: EventType,
    pub payload: &'a [u8],
    /// The engine's input for the `pixeld-input` header ([`headers`]).
    pub input: Option<&'a [u8]>,
}

/// Why a sink could not take a message. Few cases, each with one reaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkError {
    /// The in-memory queue is full (the broker is slow or gone).
    QueueFull,
    /// The message is larger than the broker accepts.
    TooLarge,
    /// The sink is shutting down or misconfigured.
    Unavailable,
}

impl SinkError {
    /// The `reason` label of `events_dropped_total`.
    pub fn reason(self) -> &'static str {
        match self {
            SinkError::QueueFull => "queue_full",
            SinkError::TooLarge => "too_large",
            SinkError::Unavailable => "unavailable",
        }
    }
}

/// Takes encoded events and delivers them in the background.
pub trait Sink: Send + Sync + 'static {
    /// Queues one message; never blocks on the network.
    fn publish(&self, msg: Message<'_>) -> Result<(), SinkError>;
    /// True once the sink has reached its destination (for `/readyz`).
    fn is_ready(&self) -> bool;
    /// Delivers what is queued, waiting at most `timeout`; returns how many
    /// messages were still undelivered when it gave up.
    fn flush(&self, timeout: Duration) -> usize;
}

#[cfg(test)]
mod tests {
    use super::Topic;

    /// Each topic is at its index in `ALL`, the journal's code and the
    /// producer's slot for its name and handle.
    #[test]
    fn every_topic_round_trips_through_its_slot() {
        for (i, t) in Topic::ALL.into_iter().enumerate() {
            assert_eq!(t.index(), i, "{t:?}");
            assert_eq!(Topic::ALL[t.index()], t);
        }
    }

    /// The journal's version-1 and 2 formats store these codes.
    #[test]
    fn the_journal_codes_of_existing_topics_never_move() {
        assert_eq!(Topic::Impressions.index(), 0);
        assert_eq!(Topic::UserSync.index(), 7);
        assert_eq!(Topic::PostbacksDead.index(), 9);
    }
}
