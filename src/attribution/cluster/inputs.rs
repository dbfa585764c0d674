//! The topics a member reads, by name rather than by position: every
//! per-source table ([`PerInput`]) is indexed by [`InputTopic`], so adding a
//! source is a compile error wherever a table or a match forgot it.

use std::ops::{Index, IndexMut};

use rdkafka::message::{Headers, Message};

use crate::event::input::{AttributionInput, TouchKind};
use crate::event::{EventType, Malformed};

crate::indexed::indexed_enum! {
    /// One input topic of the co-partitioned set; its text is for metrics
    /// and logs.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub enum InputTopic {
        Impressions => "impressions",
        Clicks => "clicks",
        Conversions => "conversions",
        /// The segments topic: its `optout` events erase a user's state; its
        /// segment events are read past.
        Segments => "segments",
        /// Retractions and restatements of orders (`POST /v1/adjustments`).
        Adjustments => "adjustments",
        /// Conversions with an order id again, keyed by the order: the
        /// index of who reported which order ([`super::order_index`]).
        Orders => "orders",
        /// Adjustments named by their order alone, sent on by the member
        /// that found their user ([`super::order_index`]).
        AdjustmentsByUser => "adjustments_by_user",
    }
}

impl InputTopic {
    /// Whether `--replay` reads it: the events themselves, not the copies
    /// and hops of adjustments by order id alone (a replay applying the
    /// orders topic's copies would count each such conversion twice).
    pub fn replayed(self) -> bool {
        match self {
            InputTopic::Impressions
            | InputTopic::Clicks
            | InputTopic::Conversions
            | InputTopic::Segments
            | InputTopic::Adjustments => true,
            InputTopic::Orders | InputTopic::AdjustmentsByUser => false,
        }
    }

    /// The input a source index of the event-time buffer stands for.
    pub fn from_index(i: usize) -> InputTopic {
        InputTopic::ALL[i]
    }

    /// The event a message of this topic holds: by topic for the three
    /// event topics, by the `type` header on the segments topic (which also
    /// carries segment events the engine does not read).
    pub fn event_type<M: Message>(self, message: &M) -> Option<EventType> {
        self.read_type(message).ok().flatten()
    }

    /// [`InputTopic::event_type`], with a message on the segments topic
    /// that has no `type` header told apart (`Err`) from a segment event
    /// (`Ok(None)`).
    pub fn read_type<M: Message>(self, message: &M) -> Result<Option<EventType>, Malformed> {
        Ok(match self {
            InputTopic::Impressions => Some(EventType::Impression),
            InputTopic::Clicks => Some(EventType::Click),
            InputTopic::Conversions | InputTopic::Orders => Some(EventType::Conversion),
            InputTopic::Adjustments | InputTopic::AdjustmentsByUser => Some(EventType::Adjustment),
            InputTopic::Segments => {
                let kind = message
                    .headers()
                    .and_then(|headers| {
                        headers.iter().find(|h| h.key == crate::sink::headers::TYPE)
                    })
                    .and_then(|h| h.value)
                    .ok_or(Malformed::NoType)?;
                (kind == EventType::OptOut.as_str().as_bytes()).then_some(EventType::OptOut)
            }
        })
    }
}

impl InputTopic {
    /// The engine's input from the message's `pixeld-input` header, which
    /// `pixeld serve` in cluster mode adds beside the JSON: `Some(None)`
    /// when the header says the event is nothing to the engine. `None`
    /// (read the JSON instead, which [`InputTopic::read_type`] checks)
    /// without the header, when its bytes do not decode, or when they
    /// decode to an input this topic does not carry: a message from an
    /// older `serve`, or from another producer.
    pub fn read_header<M: Message>(self, message: &M) -> Option<Option<AttributionInput>> {
        let headers = message.headers()?;
        let bytes = headers
            .iter()
            .find(|h| h.key == crate::sink::headers::INPUT)?
            .value?;
        if bytes.is_empty() {
            return Some(None);
        }
        let input = AttributionInput::decode(bytes)?;
        self.carries(&input).then_some(Some(input))
    }

    /// Whether `input` is an event of this topic.
    fn carries(self, input: &AttributionInput) -> bool {
        match (self, input) {
            (InputTopic::Impressions, AttributionInput::Touch(t)) => t.kind == TouchKind::View,
            (InputTopic::Clicks, AttributionInput::Touch(t)) => t.kind == TouchKind::Click,
            (InputTopic::Conversions | InputTopic::Orders, AttributionInput::Conversion(_))
            | (InputTopic::Segments, AttributionInput::Forget(_))
            | (
                InputTopic::Adjustments | InputTopic::AdjustmentsByUser,
                AttributionInput::Adjustment(_),
            ) => true,
            _ => false,
        }
    }
}

/// One value per input topic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PerInput<T>(pub [T; InputTopic::COUNT]);

impl<T> PerInput<T> {
    pub fn from_fn(mut f: impl FnMut(InputTopic) -> T) -> PerInput<T> {
        PerInput(std::array::from_fn(|i| f(InputTopic::from_index(i))))
    }

    /// (input, value) in the order of [`InputTopic::ALL`].
    pub fn iter(&self) -> impl Iterator<Item = (InputTopic, &T)> {
        InputTopic::ALL.into_iter().zip(self.0.iter())
    }

    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.0.iter()
    }
}

impl<T: PartialEq> PerInput<T> {
    /// The input whose value is `value` (a topic name, say).
    pub fn position<Q>(&self, value: &Q) -> Option<InputTopic>
    where
        T: PartialEq<Q>,
        Q: ?Sized,
    {
        self.iter().find(|(_, v)| *v == value).map(|(t, _)| t)
    }
}

impl<T> Index<InputTopic> for PerInput<T> {
    type Output = T;
    fn index(&self, topic: InputTopic) -> &T {
        &self.0[topic.index()]
    }
}

impl<T> IndexMut<InputTopic> for PerInput<T> {
    fn index_mut(&mut self, topic: InputTopic) -> &mut T {
        &mut self.0[topic.index()]
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::message::{Header, OwnedHeaders, OwnedMessage, Timestamp};

    use super::*;
    use crate::event::input::ConversionInput;
    use crate::ids::{AdvertiserId, EventId, PixelId, UserId};

    fn with_input_header(bytes: &[u8]) -> OwnedMessage {
        let headers = OwnedHeaders::new().insert(Header {
            key: crate::sink::headers::INPUT,
            value: Some(bytes),
        });
        OwnedMessage::new(
            None,
            None,
            "t".into(),
            Timestamp::NotAvailable,
            0,
            0,
            Some(headers),
        )
    }

    /// A header is trusted only for an event of its own topic: a conversion
    /// in the impressions topic's header is read from the JSON instead
    /// (which names it for what it is, or is counted malformed).
    #[test]
    fn a_header_input_counts_only_on_the_topic_that_carries_its_kind() {
        let conversion = AttributionInput::Conversion(ConversionInput {
            click: None,
            uid: Some(UserId(7)),
            event_id: EventId::new_v7(1_000),
            ts_ms: 1_000,
            pixel: PixelId(101),
            advertiser: AdvertiserId(1),
            order_id: None,
            value_micros: None,
            context: None,
        });
        let mut bytes = Vec::new();
        conversion.encode(&mut bytes);
        let m = with_input_header(&bytes);
        assert_eq!(
            InputTopic::Conversions.read_header(&m),
            Some(Some(conversion))
        );
        assert_eq!(InputTopic::Impressions.read_header(&m), None);
        assert_eq!(InputTopic::Adjustments.read_header(&m), None);
        let nothing = with_input_header(b"");
        assert_eq!(InputTopic::Clicks.read_header(&nothing), Some(None));
        assert_eq!(
            InputTopic::Clicks.read_header(&with_input_header(b"\xff")),
            None
        );
    }
}
