//! The boundary between answering pixels and delivering events: handlers hand
//! encoded events to a [`Sink`] and never wait on it.

pub mod embedded;
pub mod kafka;
#[cfg(any(test, feature = "test-util"))]
pub mod memory;
pub mod partition;
pub mod producer;
pub mod transactional;

use std::time::Duration;

use crate::event::EventType;

/// Where an event goes; the Kafka sink maps each to a configured topic name.
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
}

impl Topic {
    pub const ALL: [Topic; 10] = [
        Topic::Impressions,
        Topic::Clicks,
        Topic::Conversions,
        Topic::Segments,
        Topic::Invalid,
        Topic::Attributions,
        Topic::Adjustments,
        Topic::UserSync,
        Topic::Postbacks,
        Topic::PostbacksDead,
    ];

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

    /// The journal's topic codes and the producer's name table index by
    /// discriminant: a variant out of place in `ALL` would send its events
    /// to another topic.
    #[test]
    fn every_topic_is_at_its_discriminant() {
        for (i, t) in Topic::ALL.iter().enumerate() {
            assert_eq!(*t as usize, i, "{t:?}");
        }
    }
}
