//! The topics a member reads, by name rather than by position: every
//! per-source table ([`PerInput`]) is indexed by [`InputTopic`], so adding a
//! source is a compile error wherever a table or a match forgot it.

use std::ops::{Index, IndexMut};

use rdkafka::message::{Headers, Message};

use crate::event::{EventType, Malformed};

/// One input topic of the co-partitioned set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InputTopic {
    Impressions,
    Clicks,
    Conversions,
    /// The segments topic: its `optout` events erase a user's state; its
    /// segment events are read past.
    Segments,
    /// Retractions and restatements of orders (`POST /v1/adjustments`).
    Adjustments,
}

impl InputTopic {
    /// Every input, in the order of their discriminants.
    pub const ALL: [InputTopic; 5] = [
        InputTopic::Impressions,
        InputTopic::Clicks,
        InputTopic::Conversions,
        InputTopic::Segments,
        InputTopic::Adjustments,
    ];

    /// The number of inputs: derived from the last variant, and
    /// [`InputTopic::index`] is checked against [`InputTopic::ALL`] by a
    /// test, so a new variant cannot be left out of the tables.
    pub const COUNT: usize = InputTopic::Adjustments as usize + 1;

    pub const fn index(self) -> usize {
        self as usize
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

    /// For metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            InputTopic::Impressions => "impressions",
            InputTopic::Clicks => "clicks",
            InputTopic::Conversions => "conversions",
            InputTopic::Segments => "segments",
            InputTopic::Adjustments => "adjustments",
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
    use super::*;

    #[test]
    fn every_input_is_listed_once_at_its_own_index() {
        assert_eq!(InputTopic::ALL.len(), InputTopic::COUNT);
        for (i, t) in InputTopic::ALL.into_iter().enumerate() {
            assert_eq!(t.index(), i, "{t:?}");
            // Exhaustive: a new variant must be named here to compile.
            match t {
                InputTopic::Impressions
                | InputTopic::Clicks
                | InputTopic::Conversions
                | InputTopic::Segments
                | InputTopic::Adjustments => {}
            }
        }
    }
}
