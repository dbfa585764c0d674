//! The topics a member reads, by name rather than by position: every
//! per-source table ([`PerInput`]) is indexed by [`InputTopic`], so adding a
//! source is a compile error wherever a table or a match forgot it.

use std::ops::{Index, IndexMut};

use rdkafka::message::{Headers, Message};

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
    }
}

impl InputTopic {
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
            InputTopic::Conversions => Some(EventType::Conversion),
            InputTopic::Adjustments => Some(EventType::Adjustment),
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
