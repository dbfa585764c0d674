//! Event time, not arrival time: one partition's inputs held until they can
//! be applied in `ts` order (ties by event id), the order the single-node
//! engine would have seen them in had they arrived sorted.
//!
//! Inputs come from several sources (the input topic-partitions of one
//! partition number), each roughly in time order but arriving interleaved
//! and late. A source's frontier is the latest `ts` read from it, or, if
//! later, the time up to which it is known to have been read through (a
//! fresh end-offset check found the reader at its end: everything appended
//! before that time was read). The partition's watermark is the lowest
//! frontier less the grace. Held inputs are released in (ts, event id)
//! order while the watermark has passed them.
//!
//! **The late rule.** An input whose `ts` is at or below what was already
//! released is late. It is not applied at once: it waits like any input,
//! until the watermark has passed the frontier of the moment it was read
//! (one grace, in the sources' own progress), and it holds back every input
//! after it in time order meanwhile. So late inputs that arrive within the
//! grace of each other are applied in event-time order, whichever topic was
//! polled first; a late conversion's record says `late`.
//!
//! This is the building block of the cluster engine (`pixeld attribute`,
//! partitioned over Kafka); it keeps no clock of its own (times are passed
//! in) so it is tested with explicit times.

use std::collections::BTreeMap;

use crate::event::AttributionInput;
use crate::ids::EventId;

/// One input waiting for its turn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub ts_ms: u64,
    pub event_id: EventId,
    pub input: AttributionInput,
    /// Which source it came from (index into the buffer's sources).
    pub source: usize,
    /// Its offset in that source (what to commit once it is applied).
    pub offset: i64,
    /// Late: its `ts` was at or below what was released when it was read.
    pub late: bool,
    /// Not released before the watermark reaches this (its `ts`, or for a
    /// late input the frontier when it was read).
    pub not_before: u64,
}

impl Held {
    /// An input as read; [`Reorder::push`] decides whether it is late.
    pub fn new(input: AttributionInput, source: usize, offset: i64) -> Held {
        Held {
            ts_ms: input.ts_ms(),
            event_id: input.event_id(),
            input,
            source,
            offset,
            late: false,
            not_before: 0,
        }
    }
}

/// What [`Reorder::push`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Held until the watermark passes it.
    OnTime,
    /// Older than what was already released: held one grace, flagged late.
    Late,
}

/// Per source: how far it has been read.
#[derive(Clone, Copy, Debug, Default)]
struct Source {
    /// The latest `ts` seen from it (None before its first input).
    latest_ms: Option<u64>,
    /// Everything appended to the source before this time (ms) was read.
    read_through_ms: Option<u64>,
    /// The next offset to read, once everything before it is applied.
    next_offset: Option<i64>,
}

/// One partition's event-time buffer.
pub struct Reorder {
    grace_ms: u64,
    sources: Vec<Source>,
    /// Waiting inputs by (ts, event id, source): released in this order. A
    /// message read twice from one source is held once; one event from two
    /// sources (a conversion and its copy on the orders topic) twice.
    held: BTreeMap<(u64, u128, usize), Held>,
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
    pub fn push(&mut self, mut held: Held) -> Pushed {
        let s = &mut self.sources[held.source];
        s.latest_ms = Some(s.latest_ms.map_or(held.ts_ms, |l| l.max(held.ts_ms)));
        self.skip(held.source, held.offset);
        let late = self.released_ms.is_some_and(|r| held.ts_ms <= r);
        held.late = late;
        held.not_before = match (late, self.frontier()) {
            (true, Some(f)) => f,
            _ => held.ts_ms,
        };
        self.held
            .insert((held.ts_ms, held.event_id.0, held.source), held);
        if late {
            Pushed::Late
        } else {
            Pushed::OnTime
        }
    }

    /// Everything appended to `source` before `at_ms` has been read: it
    /// holds the watermark back no further than that.
    pub fn read_through(&mut self, source: usize, at_ms: u64) {
        let s = &mut self.sources[source];
        s.read_through_ms = Some(s.read_through_ms.map_or(at_ms, |r| r.max(at_ms)));
    }

    /// The lowest source frontier; None while a source has said nothing and
    /// was never found at its end.
    fn frontier(&self) -> Option<u64> {
        let mut low: Option<u64> = None;
        for s in &self.sources {
            let at = match (s.latest_ms, s.read_through_ms) {
                (Some(l), Some(r)) => l.max(r),
                (Some(t), None) | (None, Some(t)) => t,
                (None, None) => return None,
            };
            low = Some(low.map_or(at, |x| x.min(at)));
        }
        low
    }

    /// The time at or below which every input may be released.
    pub fn watermark(&self) -> Option<u64> {
        self.frontier().map(|f| f.saturating_sub(self.grace_ms))
    }

    /// Held inputs in (ts, event id) order while the watermark has passed
    /// them; a late input not due yet holds back everything after it.
    pub fn release(&mut self) -> Vec<Held> {
        let Some(mark) = self.watermark() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut blocked_at = None;
        while let Some(entry) = self.held.first_entry() {
            let h = entry.get();
            if h.ts_ms.max(h.not_before) > mark {
                blocked_at = Some(h.ts_ms);
                break;
            }
            out.push(entry.remove());
        }
        // What was released up to: the mark, or short of the input that
        // holds the rest back.
        let through = blocked_at.map_or(mark, |b| b.saturating_sub(1).min(mark));
        self.released_ms = Some(self.released_ms.map_or(through, |r| r.max(through)));
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
            source_click: None,
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
            context: None,
        })
    }

    fn held(source: usize, offset: i64, ts: u64, input: AttributionInput) -> Held {
        Held {
            ts_ms: ts,
            ..Held::new(input, source, offset)
        }
    }

    fn times(out: &[Held]) -> Vec<u64> {
        out.iter().map(|h| h.ts_ms).collect()
    }

    #[test]
    fn inputs_are_released_in_event_time_once_every_source_has_passed_them() {
        let mut r = Reorder::new(3, 100);
        // A conversion arrives before the view it should be credited to.
        assert_eq!(r.push(held(2, 0, 1_000, conversion(1_000))), Pushed::OnTime);
        assert!(r.release().is_empty(), "sources 0 and 1 said nothing yet");
        assert_eq!(r.push(held(0, 0, 900, touch(900))), Pushed::OnTime);
        assert_eq!(r.push(held(1, 0, 1_500, touch(1_500))), Pushed::OnTime);
        // Watermark: min(900, 1500, 1000) - 100 = 800: nothing yet.
        assert!(r.release().is_empty());
        r.push(held(0, 1, 1_200, touch(1_200)));
        // min(1200, 1500, 1000) - 100 = 900: the view at 900.
        assert_eq!(times(&r.release()), [900]);
        r.push(held(2, 1, 2_000, conversion(2_000)));
        // min(1200, 1500, 2000) - 100 = 1100: the conversion at 1000 after the view.
        assert_eq!(times(&r.release()), [1_000]);
        assert_eq!(r.len(), 3);
    }

    /// The orders topic carries a copy of a conversion (same event id and
    /// time): both are applied, while one message read twice from its
    /// source is held once.
    #[test]
    fn one_event_from_two_sources_is_held_twice_and_a_re_read_once() {
        let mut r = Reorder::new(2, 100);
        let c = conversion(1_000);
        r.push(held(0, 0, 1_000, c.clone()));
        r.push(held(0, 0, 1_000, c.clone()));
        r.push(held(1, 0, 1_000, c));
        r.read_through(0, 5_000);
        r.read_through(1, 5_000);
        let sources: Vec<usize> = r.release().iter().map(|h| h.source).collect();
        assert_eq!(sources, [0, 1]);
    }

    #[test]
    fn a_source_read_through_a_time_holds_nothing_back_before_it() {
        let mut r = Reorder::new(2, 100);
        r.push(held(0, 5, 1_000, touch(1_000)));
        assert!(r.release().is_empty(), "source 1 never spoke");
        r.read_through(1, 5_000);
        // Source 1 is read through 5000; source 0 is at 1000.
        assert!(r.release().is_empty(), "1000 - 100 < 1000");
        r.read_through(0, 5_000);
        assert_eq!(r.release().len(), 1);
        // An older check does not move a source back.
        r.read_through(0, 10);
        assert_eq!(r.watermark(), Some(4_900));
    }

    #[test]
    fn an_input_older_than_what_was_released_is_late_and_waits_one_grace() {
        let mut r = Reorder::new(1, 100);
        r.push(held(0, 0, 1_000, touch(1_000)));
        r.read_through(0, 1_100);
        assert_eq!(r.release().len(), 1);
        assert_eq!(r.push(held(0, 1, 999, touch(999))), Pushed::Late);
        assert!(
            r.release().is_empty(),
            "waits until the frontier moved a grace"
        );
        // Above what was released: on time, yet behind the late one.
        assert_eq!(r.push(held(0, 2, 1_050, touch(1_050))), Pushed::OnTime);
        r.read_through(0, 1_199);
        assert!(r.release().is_empty());
        r.read_through(0, 1_200);
        let out = r.release();
        assert_eq!(times(&out), [999, 1_050]);
        assert_eq!(
            out.iter().map(|h| h.late).collect::<Vec<_>>(),
            [true, false]
        );
        assert_eq!(r.push(held(0, 3, 1_300, touch(1_300))), Pushed::OnTime);
    }

    /// The rule that makes the answer independent of which topic was polled
    /// first: a late touch and a late conversion read within one grace of
    /// each other are applied in event-time order, in either arrival order.
    #[test]
    fn late_inputs_of_two_topics_are_applied_in_event_time_whichever_came_first() {
        for conversion_first in [false, true] {
            let mut r = Reorder::new(2, 2_000);
            r.read_through(0, 100_000);
            r.read_through(1, 100_000);
            assert!(r.release().is_empty());
            let view = held(0, 0, 40_000, touch(40_000));
            let buy = held(1, 0, 40_010, conversion(40_010));
            let (a, b) = if conversion_first {
                (buy, view)
            } else {
                (view, buy)
            };
            assert_eq!(r.push(a), Pushed::Late);
            // The other arrives after a release round, a moment later.
            r.read_through(0, 100_500);
            r.read_through(1, 100_500);
            assert!(r.release().is_empty());
            assert_eq!(r.push(b), Pushed::Late);
            r.read_through(0, 102_600);
            r.read_through(1, 102_600);
            let out = r.release();
            assert_eq!(
                times(&out),
                [40_000, 40_010],
                "conversion first: {conversion_first}"
            );
        }
    }

    #[test]
    fn a_late_input_holds_back_the_inputs_after_it_in_time() {
        let mut r = Reorder::new(1, 100);
        r.push(held(0, 0, 1_000, touch(1_000)));
        r.read_through(0, 1_100);
        assert_eq!(r.release().len(), 1);
        // Late, read at the frontier 1100: due once the watermark is 1100.
        r.push(held(0, 1, 900, touch(900)));
        r.push(held(0, 2, 1_050, touch(1_050)));
        r.read_through(0, 1_160);
        // 1050 is due (1160 - 100 >= 1050) but the late 900 is not: neither
        // goes, so 900 still comes first.
        assert!(r.release().is_empty());
        r.read_through(0, 1_200);
        assert_eq!(times(&r.release()), [900, 1_050]);
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
        let out = r.release();
        let ids: Vec<u128> = out.iter().map(|h| h.event_id.0).collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(ids, sorted, "same millisecond: by event id");
        // Released the two at 1000 and the two at 3000.
        assert_eq!(out.len(), 4);
        assert_eq!(r.committable(), [Some(12), Some(22)]);
    }
}
