//! One assigned partition number: its state (the same [`Engine`] and rules
//! as `pixeld serve`), its event-time buffer over the three input
//! topic-partitions, the decisions not yet safe to forget, and the users
//! whose changelog value is stale.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::changelog::{Decided, UserState};
use crate::attribution::order::{Held, Pushed, Reorder};
use crate::attribution::{Attribution, Engine, Input, State};
use crate::config::Catalog;
use crate::ids::UserId;
use crate::telemetry::metric;

/// The inputs of one partition number, by source index.
pub const IMPRESSIONS: usize = 0;
pub const CLICKS: usize = 1;
pub const CONVERSIONS: usize = 2;
pub const SOURCES: usize = 3;

/// A record ready to publish, with when its conversion arrived (for the
/// decision-delay histogram).
pub struct Out {
    pub record: Attribution,
    pub arrived_ms: u64,
}

/// The work of one partition number.
pub struct PartitionWork {
    pub partition: i32,
    engine: Engine,
    /// Inputs waiting for the watermark.
    reorder: Reorder,
    /// When each held conversion arrived, by its event id.
    arrivals: HashMap<u128, u64, ahash::RandomState>,
    /// Per user, conversions decided whose offsets are not committed yet.
    decided: HashMap<UserId, Vec<Decided>, ahash::RandomState>,
    /// (conversion offset, user) in decision order, to forget them once the
    /// committed offset passes.
    decided_order: VecDeque<(i64, UserId)>,
    /// Users whose state changed since the last changelog write.
    dirty: HashSet<UserId, ahash::RandomState>,
    /// Next offset to read per source, once known (from the group's
    /// committed offset, then from each message read).
    pub position: [Option<i64>; SOURCES],
    /// When each source last gave a message (ms).
    pub last_read_ms: [u64; SOURCES],
    /// Whether each source gave a message since the assignment.
    pub started: [bool; SOURCES],
    /// The offset each source was last sought back to after the client
    /// skipped past it: sought once, read past if the gap is real.
    pub sought: [Option<i64>; SOURCES],
}

impl PartitionWork {
    pub fn new(
        partition: i32,
        catalog: Arc<ArcSwap<Catalog>>,
        grace_ms: u64,
        max_users: usize,
    ) -> PartitionWork {
        PartitionWork {
            partition,
            engine: Engine::new(Arc::new(State::bounded(max_users, true)), catalog),
            reorder: Reorder::new(SOURCES, grace_ms),
            arrivals: HashMap::default(),
            decided: HashMap::default(),
            decided_order: VecDeque::new(),
            dirty: HashSet::default(),
            position: [None; SOURCES],
            last_read_ms: [0; SOURCES],
            started: [false; SOURCES],
            sought: [None; SOURCES],
        }
    }

    /// The same state for a new assignment: the buffer starts over (its
    /// inputs were not committed and are read again).
    pub fn reset(mut self, grace_ms: u64) -> PartitionWork {
        self.reorder = Reorder::new(SOURCES, grace_ms);
        self.arrivals.clear();
        self.position = [None; SOURCES];
        self.started = [false; SOURCES];
        self.sought = [None; SOURCES];
        self
    }

    pub fn state(&self) -> &State {
        &self.engine.state
    }

    /// Loads one changelog message (`None`: a tombstone).
    pub fn restore(&mut self, uid: UserId, value: Option<&[u8]>) -> Result<(), String> {
        let user = match value {
            Some(v) => UserState::decode(v)?,
            None => UserState::default(),
        };
        self.engine.state.set_user(uid, &user.touches, &user.marks);
        if user.decided.is_empty() {
            self.decided.remove(&uid);
        } else {
            for d in &user.decided {
                self.decided_order.push_back((d.offset, uid));
            }
            self.decided.insert(uid, user.decided);
        }
        Ok(())
    }

    /// After a restore: decisions the group has committed past are final.
    pub fn restored(&mut self) {
        let mut order: Vec<(i64, UserId)> = self.decided_order.drain(..).collect();
        order.sort_unstable();
        order.dedup();
        self.decided_order = order.into();
        if let Some(committed) = self.position[CONVERSIONS] {
            self.forget_decided(committed);
        }
    }

    /// An input read from `source` at `offset`; a late conversion's record
    /// comes back at once.
    pub fn push(&mut self, source: usize, offset: i64, input: Input, now_ms: u64) -> Option<Out> {
        self.read(source, offset, now_ms);
        let (ts_ms, event_id) = (input.ts_ms(), input.event_id());
        let held = Held {
            ts_ms,
            event_id,
            input,
            source,
            offset,
        };
        if source == CONVERSIONS {
            tracing::trace!(partition = self.partition, offset, "conversion read");
        }
        match self.reorder.push(held) {
            Pushed::Held => {
                if source == CONVERSIONS {
                    self.arrivals.insert(event_id.0, now_ms);
                }
                None
            }
            Pushed::Late(held) => {
                metric::cluster_late(match held.input {
                    Input::Touch(_) => "touch",
                    Input::Conversion(_) => "conversion",
                    Input::Forget(_) => "optout",
                });
                self.apply(*held, true).map(|record| Out {
                    record,
                    arrived_ms: now_ms,
                })
            }
        }
    }

    /// A message that is no input of the engine (an anonymous touch, a
    /// HEAD request): only the position moves.
    pub fn skip(&mut self, source: usize, offset: i64, now_ms: u64) {
        self.read(source, offset, now_ms);
        self.reorder.skip(source, offset);
    }

    /// `source` gave the message at `offset`.
    fn read(&mut self, source: usize, offset: i64, now_ms: u64) {
        self.last_read_ms[source] = now_ms;
        self.position[source] =
            Some(self.position[source].map_or(offset + 1, |p| p.max(offset + 1)));
    }

    /// `source` has nothing more to read for now.
    pub fn caught_up(&mut self, source: usize) {
        self.reorder.caught_up(source);
    }

    /// Applies, in event-time order, everything the watermark has passed.
    pub fn release(&mut self, now_ms: u64, out: &mut Vec<Out>) {
        for held in self.reorder.release(now_ms) {
            let arrived_ms = self.arrivals.remove(&held.event_id.0).unwrap_or(now_ms);
            if let Some(record) = self.apply(held, false) {
                out.push(Out { record, arrived_ms });
            }
        }
        let age = self
            .reorder
            .watermark(now_ms)
            .map_or(0.0, |w| now_ms.saturating_sub(w) as f64 / 1000.0);
        metric::cluster_partition(self.partition, self.reorder.len(), age);
    }

    fn apply(&mut self, held: Held, late: bool) -> Option<Attribution> {
        match held.input {
            Input::Forget(f) => {
                self.engine.apply(held.input);
                self.dirty.insert(f.uid);
                None
            }
            Input::Touch(t) => {
                self.engine.apply(held.input);
                self.dirty.insert(t.uid);
                // Evicted users' changelog values go too (tombstones, or
                // what is left of them), or a restore would bring them back.
                self.dirty.extend(self.engine.state.take_evicted());
                None
            }
            Input::Conversion(c) => {
                tracing::trace!(
                    partition = self.partition,
                    offset = held.offset,
                    late,
                    "conversion applied"
                );
                let Some(uid) = c.uid else {
                    // No state, so nothing a re-read could answer differently.
                    let mut record = self.engine.apply(held.input)?;
                    record.late = late;
                    return Some(record);
                };
                let earlier = self
                    .decided
                    .get(&uid)
                    .and_then(|list| list.iter().find(|d| d.conversion == c.event_id));
                if let Some(d) = earlier {
                    // Decided before (a re-read): the same answer, whatever
                    // the state has learned since.
                    return Some(Attribution {
                        conversion: c,
                        decision: d.decision,
                        late: d.late,
                    });
                }
                let mut record = self.engine.apply(held.input)?;
                record.late = late;
                self.decided.entry(uid).or_default().push(Decided {
                    conversion: c.event_id,
                    offset: held.offset,
                    decision: record.decision,
                    late,
                });
                self.decided_order.push_back((held.offset, uid));
                self.dirty.insert(uid);
                Some(record)
            }
        }
    }

    /// Per source, the offset it is safe to commit once what was produced
    /// so far is acknowledged.
    pub fn committable(&self) -> [Option<i64>; SOURCES] {
        // The buffer knows every message read since the assignment; before
        // the first, the group's committed offset stands.
        let read = self.reorder.committable();
        std::array::from_fn(|i| read[i].or(self.position[i]))
    }

    /// The group committed `offset` on the conversions: decisions before it
    /// will never be re-read (barring a duplicate far behind).
    pub fn forget_decided(&mut self, offset: i64) {
        while let Some(&(o, uid)) = self.decided_order.front() {
            if o >= offset {
                break;
            }
            self.decided_order.pop_front();
            if let Some(list) = self.decided.get_mut(&uid) {
                list.retain(|d| d.offset >= offset);
                if list.is_empty() {
                    self.decided.remove(&uid);
                }
            }
        }
        // Decisions live one commit interval: size the tables for that.
        self.decided.shrink_to(self.decided.len().max(1024));
        self.decided_order
            .shrink_to(self.decided_order.len().max(1024));
        self.arrivals.shrink_to(self.arrivals.len().max(1024));
    }

    /// Drops expired state; users of whom nothing is left become tombstones.
    pub fn sweep(&mut self, now_ms: u64) -> usize {
        let mut emptied = Vec::new();
        let dropped = self.engine.sweep_users(now_ms, &mut emptied);
        self.dirty.extend(emptied);
        dropped
    }

    /// Calls `write` once per changed user with their whole state (`None`
    /// when nothing is left: a tombstone), and forgets that they changed.
    pub fn drain_dirty(&mut self, buf: &mut Vec<u8>, mut write: impl FnMut(UserId, Option<&[u8]>)) {
        let changed = self.dirty.len();
        for uid in self.dirty.drain() {
            let user = UserState {
                touches: self.engine.state.touches_of(uid),
                marks: self.engine.state.repeat_marks_of(uid),
                decided: self.decided.get(&uid).cloned().unwrap_or_default(),
            };
            if user.is_empty() {
                write(uid, None);
            } else {
                buf.clear();
                user.encode(buf);
                write(uid, Some(buf));
            }
        }
        // A backlog's burst of changed users must not keep its table: the
        // set is sized for what one interval changes.
        self.dirty.shrink_to(changed.max(1024));
    }

    /// Everything kept, as the changelog would restore it (for tests):
    /// users sorted by id, their lists sorted.
    pub fn dump(&self) -> Vec<(UserId, UserState)> {
        let mut users: HashMap<UserId, UserState> = HashMap::new();
        for (uid, touches) in self.engine.state.users_touches() {
            users.entry(uid).or_default().touches = touches;
        }
        for ((uid, pixel), ts) in self.engine.state.repeat_marks() {
            users.entry(uid).or_default().marks.push((pixel, ts));
        }
        for (uid, decided) in &self.decided {
            users.entry(*uid).or_default().decided = decided.clone();
        }
        let mut out: Vec<(UserId, UserState)> = users.into_iter().collect();
        for (_, s) in out.iter_mut() {
            s.touches.sort_by_key(|t| t.line_item);
            s.marks.sort_unstable();
            s.decided.sort_by_key(|d| d.offset);
        }
        out.sort_by_key(|(u, _)| *u);
        out
    }

    pub fn held(&self) -> usize {
        self.reorder.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::tests::{catalog, RULES};
    use crate::attribution::{CreditKind, Reason};
    use crate::event::{ConversionInput, TouchInput, TouchKind};
    use crate::ids::{AdvertiserId, EventId, LineItemId, PixelId, PublisherId};

    const T0: u64 = 1_800_000_000_000;
    const U: UserId = UserId(42);

    fn work() -> PartitionWork {
        PartitionWork::new(0, Arc::new(ArcSwap::new(catalog(RULES))), 100, usize::MAX)
    }

    fn view(ts: u64) -> Input {
        Input::Touch(TouchInput {
            uid: U,
            kind: TouchKind::View,
            line_item: LineItemId(10),
            event_id: EventId::new_v7(ts),
            tracker: 1,
            publisher: PublisherId(1),
            placement: None,
        })
    }

    fn conversion(pixel: u32, ts: u64, id: EventId) -> Input {
        Input::Conversion(ConversionInput {
            click: None,
            uid: Some(U),
            event_id: id,
            ts_ms: ts,
            pixel: PixelId(pixel),
            advertiser: AdvertiserId(1),
            order_id: None,
            value_micros: None,
        })
    }

    /// Pushes, then releases everything (every source caught up).
    fn run(w: &mut PartitionWork, inputs: &[(usize, i64, Input)]) -> Vec<Attribution> {
        let mut out = Vec::new();
        for (source, offset, input) in inputs {
            out.extend(w.push(*source, *offset, *input, T0).map(|o| o.record));
        }
        for s in 0..SOURCES {
            w.caught_up(s);
        }
        let mut outs = Vec::new();
        w.release(T0 + 1_000_000, &mut outs);
        out.extend(outs.into_iter().map(|o| o.record));
        out
    }

    /// The changelog round trip: what a new owner restores.
    fn restored_from(w: &mut PartitionWork) -> PartitionWork {
        let mut values = Vec::new();
        w.drain_dirty(&mut Vec::new(), |uid, v| {
            values.push((uid, v.map(<[u8]>::to_vec)))
        });
        let mut fresh = work();
        for (uid, v) in values {
            fresh.restore(uid, v.as_deref()).unwrap();
        }
        fresh
    }

    #[test]
    fn a_conversion_read_again_after_a_restore_gets_its_first_answer() {
        let mut w = work();
        let id = EventId::new_v7(T0 + 10);
        // One per user (pixel 103, hybrid): counted and credited the first time.
        let first = run(
            &mut w,
            &[(0, 0, view(T0)), (2, 0, conversion(103, T0 + 10, id))],
        );
        assert_eq!(first.len(), 1);
        assert!(first[0].decision.counted);
        assert_eq!(first[0].decision.credit.unwrap().kind, CreditKind::PostView);

        // The member dies before committing; the next owner restores and
        // reads the conversion again. The state now says "already counted",
        // yet the answer is the first one.
        let mut next = restored_from(&mut w);
        let again = run(&mut next, &[(2, 0, conversion(103, T0 + 10, id))]);
        assert_eq!(again, first);

        // Once the group committed past it, it is forgotten: the rules
        // alone then call a new read a repeat (which is why it is kept).
        next.forget_decided(1);
        let third = run(&mut next, &[(2, 0, conversion(103, T0 + 10, id))]);
        assert_eq!(third[0].decision.reason, Some(Reason::Repeat));
    }

    #[test]
    fn commits_never_pass_a_held_input_and_skips_move_the_position() {
        let mut w = work();
        w.push(0, 5, view(T0 + 50), T0);
        w.skip(1, 7, T0);
        assert_eq!(w.committable(), [Some(5), Some(8), None]);
        run(&mut w, &[]);
        assert_eq!(w.committable(), [Some(6), Some(8), None]);
    }

    #[test]
    fn an_expired_user_is_written_as_a_tombstone() {
        let mut w = work();
        run(&mut w, &[(0, 0, view(T0))]);
        let mut first = Vec::new();
        w.drain_dirty(&mut Vec::new(), |uid, v| first.push((uid, v.is_some())));
        assert_eq!(first, [(U, true)]);
        w.sweep(T0 + 100 * 24 * 3_600_000);
        let mut second = Vec::new();
        w.drain_dirty(&mut Vec::new(), |uid, v| second.push((uid, v.is_some())));
        assert_eq!(second, [(U, false)]);
    }
}
