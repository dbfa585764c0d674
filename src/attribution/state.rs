//! The engine's memory: per user, the latest view and the latest click per
//! line item; per (user, pixel), when a conversion was last counted.
//!
//! Entries are compact (integer ids, the touch time carried inside its v7
//! event id, no strings) and live in `DashMap`s so that readers (gauges,
//! snapshots, tests) never stop the engine.

use dashmap::DashMap;

use crate::ids::{EventId, LineItemId, PixelId, PlacementId, PublisherId, UserId};

/// Whether a touch was a view (impression) or a click.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TouchKind {
    View,
    Click,
}

/// One stored touch: 28 bytes of `u32` words, so a line item's pair packs
/// without padding. An all-zero mark means "none".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mark {
    /// The event id's four words, most significant first; its top 48 bits
    /// are the touch time in milliseconds.
    event: [u32; 4],
    /// Impression or click tracker id.
    tracker: u32,
    publisher: u32,
    /// 0 when the tracker has no placement (placement ids start at 1).
    placement: u32,
}

impl Mark {
    pub fn new(
        event: EventId,
        tracker: u32,
        publisher: PublisherId,
        placement: Option<PlacementId>,
    ) -> Mark {
        let e = event.0;
        Mark {
            event: [
                (e >> 96) as u32,
                (e >> 64) as u32,
                (e >> 32) as u32,
                e as u32,
            ],
            tracker,
            publisher: publisher.0,
            placement: placement.map_or(0, |p| p.0),
        }
    }

    pub fn is_set(&self) -> bool {
        self.event != [0; 4]
    }

    pub fn event_id(&self) -> EventId {
        let [a, b, c, d] = self.event.map(u128::from);
        EventId(a << 96 | b << 64 | c << 32 | d)
    }

    pub fn ts_ms(&self) -> u64 {
        self.event_id().timestamp_ms()
    }

    pub fn tracker(&self) -> u32 {
        self.tracker
    }

    pub fn publisher(&self) -> PublisherId {
        PublisherId(self.publisher)
    }

    pub fn placement(&self) -> Option<PlacementId> {
        (self.placement != 0).then_some(PlacementId(self.placement))
    }

    /// Later time wins; at the same millisecond the larger event id, so the
    /// choice never depends on arrival order.
    pub fn is_after(&self, other: &Mark) -> bool {
        (self.ts_ms(), self.event_id()) > (other.ts_ms(), other.event_id())
    }
}

/// The latest view and click of one user on one line item.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LineItemTouches {
    pub line_item: u32,
    pub view: Mark,
    pub click: Mark,
}

impl LineItemTouches {
    pub fn get(&self, kind: TouchKind) -> &Mark {
        match kind {
            TouchKind::View => &self.view,
            TouchKind::Click => &self.click,
        }
    }

    fn get_mut(&mut self, kind: TouchKind) -> &mut Mark {
        match kind {
            TouchKind::View => &mut self.view,
            TouchKind::Click => &mut self.click,
        }
    }
}

/// All attribution state.
#[derive(Default)]
pub struct State {
    /// Per user, one entry per line item touched (usually one or two), in a
    /// boxed slice so the map slot stays small.
    pub touches: DashMap<UserId, Box<[LineItemTouches]>>,
    /// When a conversion on (user, pixel) was last counted, in ms.
    pub counted: DashMap<(UserId, PixelId), u64>,
}

impl State {
    /// Records a touch unless a later one of the same kind is already there.
    pub fn touch(&self, uid: UserId, line_item: LineItemId, kind: TouchKind, mark: Mark) {
        let mut entry = self.touches.entry(uid).or_insert_with(|| Box::new([]));
        let list = entry.value_mut();
        if let Some(t) = list.iter_mut().find(|t| t.line_item == line_item.0) {
            let slot = t.get_mut(kind);
            if !slot.is_set() || mark.is_after(slot) {
                *slot = mark;
            }
            return;
        }
        let mut new = LineItemTouches {
            line_item: line_item.0,
            ..Default::default()
        };
        *new.get_mut(kind) = mark;
        let mut grown = Vec::with_capacity(list.len() + 1);
        grown.extend_from_slice(list);
        grown.push(new);
        *list = grown.into_boxed_slice();
    }

    /// A copy of a user's touches (empty when none).
    pub fn touches_of(&self, uid: UserId) -> Vec<LineItemTouches> {
        self.touches
            .get(&uid)
            .map(|t| t.to_vec())
            .unwrap_or_default()
    }

    pub fn last_counted(&self, uid: UserId, pixel: PixelId) -> Option<u64> {
        self.counted.get(&(uid, pixel)).map(|v| *v)
    }

    pub fn mark_counted(&self, uid: UserId, pixel: PixelId, ts_ms: u64) {
        self.counted.insert((uid, pixel), ts_ms);
    }

    /// Users with at least one touch.
    pub fn users(&self) -> usize {
        self.touches.len()
    }

    /// Stored touch marks plus repeat marks.
    pub fn entries(&self) -> usize {
        let marks: usize = self
            .touches
            .iter()
            .map(|e| {
                e.value()
                    .iter()
                    .map(|t| t.view.is_set() as usize + t.click.is_set() as usize)
                    .sum::<usize>()
            })
            .sum();
        marks + self.counted.len()
    }

    /// Drops views older than `view_horizon_ms`, clicks older than
    /// `click_horizon_ms`, users left with nothing, and repeat marks whose
    /// pixel's `repeat_horizon` says they no longer matter.
    pub fn sweep(
        &self,
        now_ms: u64,
        view_horizon_ms: u64,
        click_horizon_ms: u64,
        repeat_horizon: impl Fn(PixelId) -> Option<u64>,
    ) -> usize {
        let mut dropped = 0;
        self.touches.retain(|_, list| {
            let mut changed = false;
            for t in list.iter_mut() {
                for (kind, horizon) in [
                    (TouchKind::View, view_horizon_ms),
                    (TouchKind::Click, click_horizon_ms),
                ] {
                    let m = t.get_mut(kind);
                    if m.is_set() && now_ms.saturating_sub(m.ts_ms()) > horizon {
                        *m = Mark::default();
                        dropped += 1;
                        changed = true;
                    }
                }
            }
            if changed {
                let kept: Vec<_> = list
                    .iter()
                    .filter(|t| t.view.is_set() || t.click.is_set())
                    .copied()
                    .collect();
                *list = kept.into_boxed_slice();
            }
            !list.is_empty()
        });
        self.counted.retain(|(_, pixel), ts| {
            let keep = repeat_horizon(*pixel).is_some_and(|h| now_ms.saturating_sub(*ts) <= h);
            dropped += usize::from(!keep);
            keep
        });
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(ts: u64, tracker: u32) -> Mark {
        Mark::new(
            EventId::new_v7(ts),
            tracker,
            PublisherId(7),
            Some(PlacementId(9)),
        )
    }

    #[test]
    fn a_mark_round_trips_its_fields_in_28_bytes() {
        assert_eq!(std::mem::size_of::<Mark>(), 28);
        assert_eq!(std::mem::size_of::<LineItemTouches>(), 60);
        let id = EventId::new_v7(1_700_000_000_000);
        let m = Mark::new(id, 2766, PublisherId(7), None);
        assert_eq!(m.event_id(), id);
        assert_eq!(m.ts_ms(), 1_700_000_000_000);
        assert_eq!(m.placement(), None);
        assert_eq!(m.publisher(), PublisherId(7));
    }

    #[test]
    fn keeps_the_latest_touch_per_line_item_and_kind() {
        let s = State::default();
        let u = UserId(1);
        s.touch(u, LineItemId(1), TouchKind::View, mark(2_000, 1));
        s.touch(u, LineItemId(1), TouchKind::View, mark(1_000, 2));
        s.touch(u, LineItemId(1), TouchKind::Click, mark(1_500, 3));
        s.touch(u, LineItemId(2), TouchKind::View, mark(3_000, 4));
        let t = s.touches_of(u);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].view.tracker(), 1);
        assert_eq!(t[0].click.tracker(), 3);
        assert_eq!(t[1].view.tracker(), 4);
        assert_eq!(s.users(), 1);
        assert_eq!(s.entries(), 3);
    }

    #[test]
    fn sweep_drops_old_touches_empty_users_and_stale_repeat_marks() {
        let s = State::default();
        s.touch(UserId(1), LineItemId(1), TouchKind::View, mark(1_000, 1));
        s.touch(UserId(1), LineItemId(1), TouchKind::Click, mark(1_000, 1));
        s.touch(UserId(2), LineItemId(1), TouchKind::View, mark(9_000, 1));
        s.mark_counted(UserId(1), PixelId(5), 1_000);
        s.mark_counted(UserId(1), PixelId(6), 9_000);
        let dropped = s.sweep(10_000, 5_000, 100_000, |p| {
            (p == PixelId(6)).then_some(5_000)
        });
        assert_eq!(dropped, 2);
        assert_eq!(s.touches_of(UserId(1)).len(), 1);
        assert!(!s.touches_of(UserId(1))[0].view.is_set());
        assert!(s.touches_of(UserId(1))[0].click.is_set());
        assert_eq!(s.last_counted(UserId(1), PixelId(5)), None);
        assert_eq!(s.last_counted(UserId(1), PixelId(6)), Some(9_000));
        let dropped = s.sweep(1_000_000, 5_000, 5_000, |_| Some(0));
        assert_eq!(dropped, 3);
        assert_eq!(s.users(), 0);
        assert_eq!(s.entries(), 0);
    }
}
