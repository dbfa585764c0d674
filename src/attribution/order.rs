//! Event time, not arrival time: one partition's inputs held until they can
//! be applied in `ts` order (ties by event id), the order the single-node
//! engine would have seen them in had they arrived sorted.
//!
//! Inputs come from several sources (the impression, click and conversion
//! topic-partitions of one partition number), each roughly in time order
//! but arriving interleaved and late. The partition's watermark is the
//! lowest latest-seen time over its sources, less the grace; a source that
//! is caught up (nothing more to read) advances with the clock instead of
//! holding everything back. Inputs at or below the watermark are released in
//! order. An input older than what was already released is late: it is
//! applied at once and flagged.
//!
//! This is the building block of the cluster engine (`pixeld attribute`,
//! partitioned over Kafka); it keeps no clock of its own (`now_ms` is
//! passed in) so it is tested with explicit times.

use std::collections::BTreeMap;

use crate::event::AttributionInput;
use crate::ids::EventId;

/// One input waiting for its turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    pub ts_ms: u64,
    pub event_id: EventId,
    pub input: AttributionInput,
    /// Which source it came from (index into the buffer's sources).
    pub source: usize,
    /// Its offset in that source (what to commit once it is applied).
    pub offset: i64,
}

/// What [`Reorder::push`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Held until the watermark passes it.
    Held,
    /// Older than what was already released: apply it now, flagged late.
    Late(Box<Held>),
}

/// Per source: how far it has been read.
#[derive(Clone, Copy, Debug, Default)]
struct Source {
    /// The latest `ts` seen from it (None before its first input).
    latest_ms: Option<u64>,
    /// Nothing more to read right now (the consumer hit its end).
    caught_up: bool,
    /// The next offset to read, once everything before it is applied.
    next_offset: Option<i64>,
}

/// One partition's event-time buffer.
pub struct Reorder {
    grace_ms: u64,
    sources: Vec<Source>,
    /// Waiting inputs by (ts, event id): released in this order.
    held: BTreeMap<(u64, u128), Held>,
    /// Everything at or below this was released: later arrivals below it
    /// are late.
    released_ms: Option<u64>,
}

impl Reorder {
    pub fn new(sources: usize, grace_ms: u64) -> Reorder {
        Reorder {
            grace_ms,
            sources: vec![Source::default(); sources],
            held: BTreeMap::new(),
            released_ms: None,
        }
    }

    /// An input read from `held.source` at `held.offset`.
    pub fn push(&mut self, held: Held) -> Pushed {
        let s = &mut self.sources[held.source];
        s.latest_ms = Some(s.latest_ms.map_or(held.ts_ms, |l| l.max(held.ts_ms)));
        s.caught_up = false;
        self.skip(held.source, held.offset);
        if self.released_ms.is_some_and(|r| held.ts_ms <= r) {
            return Pushed::Late(Box::new(held));
        }
        self.held.insert((held.ts_ms, held.event_id.0), held);
        Pushed::Held
    }

    /// `source` has nothing more to read for now: it no longer holds the
    /// watermark back.
    pub fn caught_up(&mut self, source: usize) {
        self.sources[source].caught_up = true;
    }

    /// The time at or below which every input may be released.
    pub fn watermark(&self, now_ms: u64) -> Option<u64> {
        let mut low: Option<u64> = None;
        for s in &self.sources {
            let at = match (s.caught_up, s.latest_ms) {
                (true, l) => now_ms.max(l.unwrap_or(0)),
                (false, Some(l)) => l,
                // A source that has said nothing yet holds everything back.
                (false, None) => return None,
            };
            low = Some(low.map_or(at, |x| x.min(at)));
        }
        low.map(|l| l.saturating_sub(self.grace_ms))
    }

    /// Every held input at or below the watermark, in (ts, event id) order.
    pub fn release(&mut self, now_ms: u64) -> Vec<Held> {
        let Some(mark) = self.watermark(now_ms) else {
            return Vec::new();
        };
        let rest = self.held.split_off(&(mark + 1, 0));
        let out: Vec<Held> = std::mem::replace(&mut self.held, rest)
            .into_values()
            .collect();
        self.released_ms = Some(self.released_ms.map_or(mark, |r| r.max(mark)));
        out
    }

    /// Inputs waiting.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// A message of `source` that is no input (an anonymous touch, a HEAD
    /// request): the next offset to read moves past it.
    pub fn skip(&mut self, source: usize, offset: i64) {
        let s = &mut self.sources[source];
        s.next_offset = Some(s.next_offset.map_or(offset + 1, |n| n.max(offset + 1)));
    }

    /// Per source, the offset it is safe to commit: the lowest offset still
    /// held from it, else the next one to read. None where nothing was read.
    pub fn committable(&self) -> Vec<Option<i64>> {
        let mut out: Vec<Option<i64>> = self.sources.iter().map(|s| s.next_offset).collect();
        for h in self.held.values() {
            let slot = &mut out[h.source];
            *slot = Some(slot.map_or(h.offset, |o| o.min(h.offset)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ConversionInput, TouchInput, TouchKind};
    use crate::ids::{AdvertiserId, LineItemId, PixelId, PublisherId, UserId};

    fn touch(ts: u64) -> AttributionInput {
        AttributionInput::Touch(TouchInput {
            uid: UserId(1),
            kind: TouchKind::View,
            line_item: LineItemId(1),
            event_id: EventId::new_v7(ts),
            tracker: 1,
            publisher: PublisherId(1),
            placement: None,
        })
    }

    fn conversion(ts: u64) -> AttributionInput {
        AttributionInput::Conversion(ConversionInput {
            click: None,
            uid: Some(UserId(1)),
            event_id: EventId::new_v7(ts),
            ts_ms: ts,
            pixel: PixelId(1),
            advertiser: AdvertiserId(1),
            order_id: None,
            value_micros: None,
        })
    }

    fn held(source: usize, offset: i64, ts: u64, input: AttributionInput) -> Held {
        let event_id = input.event_id();
        Held {
            ts_ms: ts,
            event_id,
            input,
            source,
            offset,
        }
    }

    #[test]
    fn inputs_are_released_in_event_time_once_every_source_has_passed_them() {
        let mut r = Reorder::new(3, 100);
        // A conversion arrives before the view it should be credited to.
        assert_eq!(r.push(held(2, 0, 1_000, conversion(1_000))), Pushed::Held);
        assert!(r.release(0).is_empty(), "sources 0 and 1 said nothing yet");
        assert_eq!(r.push(held(0, 0, 900, touch(900))), Pushed::Held);
        assert_eq!(r.push(held(1, 0, 1_500, touch(1_500))), Pushed::Held);
        // Watermark: min(900, 1500, 1000) - 100 = 800: nothing yet.
        assert!(r.release(0).is_empty());
        r.push(held(0, 1, 1_200, touch(1_200)));
        // min(1200, 1500, 1000) - 100 = 900: the view at 900.
        let out = r.release(0);
        assert_eq!(out.iter().map(|h| h.ts_ms).collect::<Vec<_>>(), [900]);
        r.push(held(2, 1, 2_000, conversion(2_000)));
        // min(1200, 1500, 2000) - 100 = 1100: the conversion at 1000 after the view.
        let out = r.release(0);
        assert_eq!(out.iter().map(|h| h.ts_ms).collect::<Vec<_>>(), [1_000]);
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn a_caught_up_source_advances_with_the_clock() {
        let mut r = Reorder::new(2, 100);
        r.push(held(0, 5, 1_000, touch(1_000)));
        assert!(r.release(5_000).is_empty(), "source 1 never spoke");
        r.caught_up(1);
        // Source 1 idles at the clock (5000); source 0 is at 1000.
        assert!(r.release(5_000).is_empty(), "1000 - 100 < 1000");
        r.caught_up(0);
        assert_eq!(r.release(5_000).len(), 1);
    }

    #[test]
    fn an_input_older_than_what_was_released_is_late() {
        let mut r = Reorder::new(1, 0);
        r.push(held(0, 0, 1_000, touch(1_000)));
        assert_eq!(r.release(0).len(), 1);
        match r.push(held(0, 1, 999, touch(999))) {
            Pushed::Late(h) => assert_eq!(h.ts_ms, 999),
            other => panic!("{other:?}"),
        }
        assert_eq!(r.push(held(0, 2, 1_001, touch(1_001))), Pushed::Held);
    }

    #[test]
    fn ties_go_by_event_id_and_commits_never_pass_a_held_input() {
        let mut r = Reorder::new(2, 0);
        let a = held(0, 10, 1_000, touch(1_000));
        let b = held(1, 20, 1_000, conversion(1_000));
        r.push(b);
        r.push(a);
        // Held: offsets 10 and 20 are not applied yet.
        assert_eq!(r.committable(), [Some(10), Some(20)]);
        r.push(held(0, 11, 3_000, touch(3_000)));
        r.push(held(1, 21, 3_000, touch(3_000)));
        let out = r.release(0);
        let ids: Vec<u128> = out.iter().map(|h| h.event_id.0).collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(ids, sorted, "same millisecond: by event id");
        // Released the two at 1000 and the two at 3000.
        assert_eq!(out.len(), 4);
        assert_eq!(r.committable(), [Some(12), Some(22)]);
    }
}
