//! One assigned partition number: its state (the same [`Engine`] and rules
//! as `pixeld serve`), its event-time buffer over the input
//! topic-partitions, the decisions not yet safe to forget, and the users
//! whose changelog value is stale.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::changelog::{Decided, UserState};
use super::inputs::{InputTopic, PerInput};
use super::order_index::{OrderIndex, OrderKey, Owner};
use crate::attribution::order::{Held, Pushed, Reorder};
use crate::attribution::source_click::SourceClickMark;
use crate::attribution::state::OrderMark;
use crate::attribution::{Attribution, Engine, Input, State};
use crate::config::Catalog;
use crate::event::AdjustmentInput;
use crate::ids::UserId;
use crate::telemetry::metric;

/// How long a decision is kept after its conversion's time, committed or
/// not ([`PartitionWork::forget_decided`]).
pub const MEMO_KEEP_MS: u64 = 10 * 60_000;

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
    /// Next offset to read per input, once known (from the group's
    /// committed offset, then from each message read).
    position: PerInput<Option<i64>>,
    /// Inputs dated further ahead of the clock than this are applied as
    /// they arrive (`attribution.max_future_ms`).
    max_future_ms: u64,
    /// When this assignment's buffer started: the watermark's age counts
    /// from here until every input has been read through once, so a
    /// partition that never gets a watermark shows as stalled, not as 0.
    buffer_since_ms: u64,
    /// Who reported the orders whose keys fall on this partition.
    orders: OrderIndex,
    /// Adjustments named by their order alone whose user the index knows,
    /// with that user: to send on at the next commit.
    routed: Vec<(UserId, AdjustmentInput)>,
    max_users: usize,
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
            reorder: Reorder::new(InputTopic::COUNT, grace_ms),
            arrivals: HashMap::default(),
            decided: HashMap::default(),
            decided_order: VecDeque::new(),
            dirty: HashSet::default(),
            position: PerInput::default(),
            max_future_ms: 300_000,
            buffer_since_ms: crate::telemetry::now_ms(),
            orders: OrderIndex::default(),
            routed: Vec::new(),
            max_users,
        }
    }

    /// With `attribution.max_future_ms`.
    pub fn max_future(mut self, ms: u64) -> PartitionWork {
        self.max_future_ms = ms;
        self
    }

    /// The same state for a new assignment: the buffer starts over (its
    /// inputs were not committed and are read again).
    pub fn reset(mut self, grace_ms: u64) -> PartitionWork {
        self.reorder = Reorder::new(InputTopic::COUNT, grace_ms);
        self.arrivals.clear();
        self.position = PerInput::default();
        self.buffer_since_ms = crate::telemetry::now_ms();
        self
    }

    pub fn state(&self) -> &State {
        &self.engine.state
    }

    /// Loads one changelog message of the order index (`None`: a tombstone).
    pub fn restore_order(&mut self, key: OrderKey, value: Option<&[u8]>) -> Result<(), String> {
        self.orders.restore(key, value)
    }

    /// Loads one changelog message (`None`: a tombstone).
    pub fn restore(&mut self, uid: UserId, value: Option<&[u8]>) -> Result<(), String> {
        let user = match value {
            Some(v) => UserState::decode(v)?,
            None => UserState::default(),
        };
        self.engine.state.set_user(uid, &user.touches, &user.marks);
        self.engine.state.set_orders(uid, &user.orders);
        // After the touches: only the ids of clicks kept are taken.
        self.engine
            .state
            .set_source_clicks(uid, &user.source_clicks);
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

    /// After a restore, from the group's committed offsets: reading resumes
    /// there, and decisions the group has committed past are final.
    pub fn restored(&mut self, committed: PerInput<Option<i64>>) {
        self.position = committed;
        let mut order: Vec<(i64, UserId)> = self.decided_order.drain(..).collect();
        order.sort_unstable();
        order.dedup();
        self.decided_order = order.into();
        if let Some(committed) = self.position[InputTopic::Conversions] {
            self.forget_decided(committed, crate::telemetry::now_ms());
        }
    }

    /// The next offset this partition expects from `topic`, once known.
    pub fn position(&self, topic: InputTopic) -> Option<i64> {
        self.position[topic]
    }

    /// An input read from `topic` at `offset`; it waits for the watermark
    /// (a late one too: [`crate::attribution::order`]'s late rule). One
    /// dated beyond `max_future_ms` is applied at once: held, it would hold
    /// back everything after it, and its offset every commit, for good. Its
    /// record comes back in `out`.
    pub fn push(
        &mut self,
        topic: InputTopic,
        offset: i64,
        input: Input,
        now_ms: u64,
        out: &mut Vec<Out>,
    ) {
        // Read before the input moves into the buffer. An order's copy is
        // no decision to wait for.
        let is_conversion =
            matches!(input, Input::Conversion(_)) && topic == InputTopic::Conversions;
        let kind = match input {
            Input::Touch(_) => "touch",
            Input::Conversion(_) => "conversion",
            Input::Forget(_) => "optout",
            Input::Adjustment(_) => "adjustment",
        };
        let held = Held::new(input, topic.index(), offset);
        if held.ts_ms > now_ms.saturating_add(self.max_future_ms) {
            self.skip(topic, offset);
            metric::cluster_future_input();
            tracing::debug!(
                partition = self.partition,
                topic = topic.as_str(),
                offset,
                ts = held.ts_ms,
                "input dated beyond attribution.max_future_ms; applied at once"
            );
            if let Some(record) = self.apply(Held { late: true, ..held }) {
                out.push(Out {
                    record,
                    arrived_ms: now_ms,
                });
            }
            return;
        }
        self.read(topic, offset);
        let event_id = held.event_id;
        if self.reorder.push(held) == Pushed::Late {
            metric::cluster_late(kind);
        }
        if is_conversion {
            self.arrivals.insert(event_id.0, now_ms);
        }
    }

    /// A message that is no input of the engine (an anonymous touch, a
    /// segment event): only the position moves.
    pub fn skip(&mut self, topic: InputTopic, offset: i64) {
        self.read(topic, offset);
        self.reorder.skip(topic.index(), offset);
    }

    fn read(&mut self, topic: InputTopic, offset: i64) {
        let p = &mut self.position[topic];
        *p = Some(p.map_or(offset + 1, |p| p.max(offset + 1)));
    }

    /// Everything appended to `topic` before `at_ms` has been read.
    pub fn read_through(&mut self, topic: InputTopic, at_ms: u64) {
        self.reorder.read_through(topic.index(), at_ms);
    }

    /// Applies, in event-time order, everything the watermark has passed.
    pub fn release(&mut self, now_ms: u64, out: &mut Vec<Out>) {
        for held in self.reorder.release() {
            let arrived_ms = self.arrivals.remove(&held.event_id.0).unwrap_or(now_ms);
            if let Some(record) = self.apply(held) {
                out.push(Out { record, arrived_ms });
            }
        }
        let since = self.reorder.watermark().unwrap_or(self.buffer_since_ms);
        let age = now_ms.saturating_sub(since) as f64 / 1000.0;
        metric::cluster_partition(self.partition, self.reorder.len(), age);
    }

    fn apply(&mut self, held: Held) -> Option<Attribution> {
        let late = held.late;
        match (InputTopic::from_index(held.source), held.input) {
            (InputTopic::Orders, Input::Conversion(c)) => {
                self.index_order(&c);
                None
            }
            (InputTopic::Adjustments, Input::Adjustment(a))
                if a.conversion.state_user().is_none() =>
            {
                self.route(a, late)
            }
            (InputTopic::AdjustmentsByUser, Input::Adjustment(a)) => {
                // Late by construction (it was sent on after its first hop
                // applied it in time): its answer is the in-process one
                // unless the same order was reported again after it.
                self.adjust_routed(a)
            }
            (_, input) => self.apply_input(Held { input, ..held }),
        }
    }

    /// An order's copy: who reported it, and when.
    fn index_order(&mut self, c: &crate::event::ConversionInput) {
        if let (Some(order), Some(user)) = (c.order_id, c.state_user()) {
            let owner = Owner {
                ts_ms: c.ts_ms,
                user,
            };
            self.orders.note((c.pixel, order.fingerprint()), owner);
        }
    }

    /// An adjustment named by its order alone: sent on to its user's
    /// member when the index knows the order, else answered here
    /// (`unknown_order`, unless this partition's own state has it).
    fn route(&mut self, a: AdjustmentInput, late: bool) -> Option<Attribution> {
        let owner = a
            .conversion
            .order_id
            .and_then(|o| self.orders.owner((a.conversion.pixel, o.fingerprint())));
        match owner {
            Some(user) => {
                self.routed.push((user, a));
                None
            }
            None => {
                let user = self.engine.adjustment_user(&a);
                self.adjust(user, a, late)
            }
        }
    }

    /// Its answer is kept with the order (the outcome's memo of applied
    /// adjustments), which the changelog carries, so a re-read answers
    /// the same.
    fn adjust(
        &mut self,
        user: Option<UserId>,
        a: AdjustmentInput,
        late: bool,
    ) -> Option<Attribution> {
        let mut record = self.engine.adjust_for(user, a);
        record.late = late;
        if let Some(uid) = user {
            self.dirty.insert(uid);
        }
        Some(record)
    }

    /// A second hop: the first put the order index's user in the input's
    /// `uid` ([`super::output::Output::send_on`]); the record names no user,
    /// as the in-process engine's does.
    fn adjust_routed(&mut self, mut a: AdjustmentInput) -> Option<Attribution> {
        // None from an older member, which sent the input as it came.
        let user = match a.conversion.uid.take() {
            Some(user) => Some(user),
            None => self.engine.adjustment_user(&a),
        };
        self.adjust(user, a, false)
    }

    fn apply_input(&mut self, held: Held) -> Option<Attribution> {
        let late = held.late;
        match held.input {
            Input::Forget(f) => {
                // Erasure: the touches and marks go with the engine's
                // forget, the memos of decisions here; the user's changelog
                // value becomes a tombstone at the next commit.
                self.engine.apply(held.input);
                self.decided.remove(&f.uid);
                self.dirty.insert(f.uid);
                None
            }
            Input::Touch(ref t) => {
                let uid = t.uid;
                self.engine.apply(held.input);
                self.dirty.insert(uid);
                // Evicted users' changelog values go too (tombstones, or
                // what is left of them), or a restore would bring them back.
                self.dirty.extend(self.engine.state.take_evicted());
                None
            }
            Input::Adjustment(a) => {
                let user = self.engine.adjustment_user(&a);
                self.adjust(user, a, late)
            }
            Input::Conversion(c) => {
                tracing::trace!(
                    partition = self.partition,
                    offset = held.offset,
                    late,
                    "conversion applied"
                );
                // The user whose state the conversion reads and writes
                // (`crate::event::input::partition_user` puts it on that
                // user's partition).
                let Some(uid) = c.state_user() else {
                    // No state, so nothing a re-read could answer differently.
                    let mut record = self.engine.apply(Input::Conversion(c))?;
                    record.late = late;
                    return Some(record);
                };
                let earlier = self
                    .decided
                    .get(&uid)
                    .and_then(|list| list.iter().find(|d| d.conversion == c.event_id));
                if let Some(d) = earlier {
                    // Decided before (a re-read): the same answer, whatever
                    // the state has learned since. A click's source click
                    // id never changes, so looking it up again gives the
                    // first record's, unless its click has left the state.
                    let source = self.engine.source_click_of(&c, d.decision.credit.as_ref());
                    return Some(Attribution {
                        late: d.late,
                        ..Attribution::of(c, d.decision).with_source_click(source)
                    });
                }
                let conversion = c.event_id;
                let mut record = self.engine.apply(Input::Conversion(c))?;
                record.late = late;
                self.decided.entry(uid).or_default().push(Decided {
                    conversion,
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
    pub fn committable(&self) -> PerInput<Option<i64>> {
        // The buffer knows every message read since the assignment; before
        // the first, the group's committed offset stands.
        let read = self.reorder.committable();
        PerInput::from_fn(|t| read[t.index()].or(self.position[t]))
    }

    /// The group committed `offset` on the conversions: decisions before it
    /// will not be re-read, unless the committed offset moves back, which a
    /// broker that does not fence stale members allows (tansu 0.6.0 takes
    /// any commit from anyone): a member frozen inside its commit and
    /// resumed after its partitions moved committed old offsets, and the
    /// next owner then decided a conversion again without its memo (a
    /// `repeat` after a counted `post_view`, fault campaign 2026-12-04). So
    /// a decision is also kept until its conversion is [`MEMO_KEEP_MS`] old
    /// (`now_ms`).
    pub fn forget_decided(&mut self, offset: i64, now_ms: u64) {
        let cutoff = now_ms.saturating_sub(MEMO_KEEP_MS);
        let done = |d: &Decided| d.offset < offset && d.conversion.timestamp_ms() < cutoff;
        while let Some(&(o, uid)) = self.decided_order.front() {
            let old_enough = self
                .decided
                .get(&uid)
                .and_then(|list| list.iter().find(|d| d.offset == o))
                .is_none_or(done);
            if o >= offset || !old_enough {
                break;
            }
            self.decided_order.pop_front();
            if let Some(list) = self.decided.get_mut(&uid) {
                list.retain(|d| !done(d));
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

    /// Drops expired state; users of whom nothing is left become
    /// tombstones, and so do orders of the index older than their pixel's
    /// `dedup_minutes` or past `max_users` entries.
    pub fn sweep(&mut self, now_ms: u64) -> usize {
        let mut emptied = Vec::new();
        let dropped = self.engine.sweep_users(now_ms, &mut emptied);
        self.dirty.extend(emptied);
        let catalog = self.engine.catalog();
        let dedup_ms = |p| catalog.dedup_ms(p);
        dropped + self.orders.sweep(now_ms, dedup_ms, self.max_users)
    }

    /// The adjustments to send on, each with its user.
    pub fn take_routed(&mut self) -> Vec<(UserId, AdjustmentInput)> {
        std::mem::take(&mut self.routed)
    }

    /// Calls `write` once per changed entry of the order index (`None`: a
    /// tombstone).
    pub fn drain_dirty_orders(&mut self, write: impl FnMut(OrderKey, Option<[u8; 25]>)) {
        self.orders.drain_dirty(write);
    }

    /// The order index (tests).
    pub fn order_index(&self) -> &OrderIndex {
        &self.orders
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
                orders: self.engine.state.orders_of(uid),
                source_clicks: self.engine.state.source_clicks_of(uid),
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
        for (uid, order) in self.engine.state.all_orders() {
            users.entry(uid).or_default().orders.push(order);
        }
        for (uid, mark) in self.engine.state.all_source_clicks() {
            users.entry(uid).or_default().source_clicks.push(mark);
        }
        let mut out: Vec<(UserId, UserState)> = users.into_iter().collect();
        for (_, s) in out.iter_mut() {
            s.touches.sort_by_key(|t| t.line_item);
            s.marks.sort_unstable();
            s.decided.sort_by_key(|d| d.offset);
            s.orders.sort_unstable_by_key(OrderMark::sort_key);
            s.source_clicks
                .sort_unstable_by_key(SourceClickMark::sort_key);
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
    use crate::attribution::tests::{catalog, json, RULES};
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
            source_click: None,
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
            context: None,
        })
    }

    /// Pushes, then releases everything (every source caught up).
    /// Pushes, then reads every source through a time far enough ahead
    /// that everything is due (later each call: a late input waits a grace
    /// past the time it was read).
    fn run(w: &mut PartitionWork, inputs: &[(InputTopic, i64, Input)]) -> Vec<Attribution> {
        thread_local!(static CLOCK: std::cell::Cell<u64> = const { std::cell::Cell::new(T0) });
        let now = CLOCK.with(|c| {
            c.set(c.get() + 1_000_000);
            c.get()
        });
        let mut outs = Vec::new();
        for (topic, offset, input) in inputs {
            w.push(*topic, *offset, input.clone(), now, &mut outs);
        }
        for t in InputTopic::ALL {
            w.read_through(t, now);
        }
        w.release(now, &mut outs);
        outs.into_iter().map(|o| o.record).collect()
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
            &[
                (InputTopic::Impressions, 0, view(T0)),
                (InputTopic::Conversions, 0, conversion(103, T0 + 10, id)),
            ],
        );
        assert_eq!(first.len(), 1);
        assert!(first[0].decision.counted);
        assert_eq!(first[0].decision.credit.unwrap().kind, CreditKind::PostView);

        // The member dies before committing; the next owner restores and
        // reads the conversion again. The state now says "already counted",
        // yet the answer is the first one.
        let mut next = restored_from(&mut w);
        let again = run(
            &mut next,
            &[(InputTopic::Conversions, 0, conversion(103, T0 + 10, id))],
        );
        assert_eq!(again, first);

        // Once the group committed past it, it is forgotten: the rules
        // alone then call a new read a repeat (which is why it is kept).
        next.forget_decided(1, T0 + 10 + MEMO_KEEP_MS + 1);
        let third = run(
            &mut next,
            &[(InputTopic::Conversions, 0, conversion(103, T0 + 10, id))],
        );
        assert_eq!(third[0].decision.reason, Some(Reason::Repeat));
    }

    #[test]
    fn commits_never_pass_a_held_input_and_skips_move_the_position() {
        let mut w = work();
        w.push(
            InputTopic::Impressions,
            5,
            view(T0 + 50),
            T0,
            &mut Vec::new(),
        );
        w.skip(InputTopic::Clicks, 7);
        assert_eq!(
            w.committable().0,
            [Some(5), Some(8), None, None, None, None, None]
        );
        run(&mut w, &[]);
        assert_eq!(
            w.committable().0,
            [Some(6), Some(8), None, None, None, None, None]
        );
    }

    #[test]
    fn an_expired_user_is_written_as_a_tombstone() {
        let mut w = work();
        run(&mut w, &[(InputTopic::Impressions, 0, view(T0))]);
        let mut first = Vec::new();
        w.drain_dirty(&mut Vec::new(), |uid, v| first.push((uid, v.is_some())));
        assert_eq!(first, [(U, true)]);
        w.sweep(T0 + 100 * 24 * 3_600_000);
        let mut second = Vec::new();
        w.drain_dirty(&mut Vec::new(), |uid, v| second.push((uid, v.is_some())));
        assert_eq!(second, [(U, false)]);
    }

    #[test]
    fn an_opt_out_erases_touches_marks_and_memos_and_becomes_a_tombstone() {
        let mut w = work();
        let id = EventId::new_v7(T0 + 10);
        run(
            &mut w,
            &[
                (InputTopic::Impressions, 0, view(T0)),
                (InputTopic::Conversions, 0, conversion(103, T0 + 10, id)),
            ],
        );
        let mut first = Vec::new();
        w.drain_dirty(&mut Vec::new(), |uid, v| first.push((uid, v.is_some())));
        assert_eq!(first, [(U, true)]);
        let forget = Input::Forget(crate::event::ForgetInput {
            uid: U,
            event_id: EventId::new_v7(T0 + 20),
        });
        run(&mut w, &[(InputTopic::Segments, 0, forget)]);
        assert!(w.dump().is_empty(), "nothing of the user is kept");
        let mut second = Vec::new();
        w.drain_dirty(&mut Vec::new(), |uid, v| second.push((uid, v.is_some())));
        assert_eq!(second, [(U, false)], "a tombstone");
    }

    /// One conversion dated in 2100 kept a partition's commit at its offset
    /// for good (issue 25): beyond `max_future_ms` it is applied at once.
    #[test]
    fn an_input_dated_far_ahead_is_applied_at_once_and_never_pins_the_commit() {
        let mut w = work().max_future(300_000);
        let year_2100 = 4_102_444_800_000;
        let mut outs = Vec::new();
        let id = EventId::new_v7(year_2100);
        w.push(
            InputTopic::Conversions,
            25,
            conversion(103, year_2100, id),
            T0,
            &mut outs,
        );
        assert_eq!(outs.len(), 1, "decided as it arrived");
        assert!(outs[0].record.late, "and flagged");
        assert_eq!(w.held(), 0);
        w.push(InputTopic::Impressions, 3, view(T0), T0, &mut outs);
        assert_eq!(w.committable()[InputTopic::Conversions], Some(26));
    }

    /// A click as the member reads it off the clicks topic (its JSON, with
    /// a source click id), then a conversion: the record carries the id,
    /// the changelog value carries it to the next owner, and there a
    /// conversion read again gets the same record and a new one the id.
    #[test]
    fn a_source_click_id_read_off_the_topic_reaches_the_record_and_the_next_owner() {
        let mut w = work();
        let json = format!(
            r#"{{"event_id":"{}","type":"click","ts":{T0},"uid":"{}","tracker_id":31,"line_item_id":10,"publisher_id":1,"placement_id":null,"source_click_id":"aff-7781","source_click_kind":"source"}}"#,
            EventId::new_v7(T0).to_hyphenated().as_str(),
            U.to_hex().as_str()
        );
        let click = Input::read_json(crate::event::EventType::Click, json.as_bytes());
        let click = click.unwrap().expect("a click of a user with an id");
        let id = EventId::new_v7(T0 + 10);
        let first = run(
            &mut w,
            &[
                (InputTopic::Clicks, 0, click),
                (InputTopic::Conversions, 0, conversion(100, T0 + 10, id)),
            ],
        );
        let source = first[0].source_click.clone().expect("the click's id");
        assert_eq!((&*source.id, source.kind.as_str()), ("aff-7781", "source"));
        let mut next = restored_from(&mut w);
        assert_eq!(next.dump(), w.dump(), "the id restored with its click");
        let again = run(
            &mut next,
            &[(InputTopic::Conversions, 0, conversion(100, T0 + 10, id))],
        );
        assert_eq!(again, first);
        let later = EventId::new_v7(T0 + 20);
        let later = run(
            &mut next,
            &[(InputTopic::Conversions, 1, conversion(100, T0 + 20, later))],
        );
        assert_eq!(later[0].source_click, Some(source));
    }

    /// A commit that moves back (a frozen member's stale commit, which
    /// tansu accepts) re-reads a conversion whose offset was committed: its
    /// decision is still kept while the conversion is recent.
    #[test]
    fn a_recent_decision_outlives_its_commit() {
        let mut w = work();
        let id = EventId::new_v7(T0 + 10);
        let first = run(
            &mut w,
            &[
                (InputTopic::Impressions, 0, view(T0)),
                (InputTopic::Conversions, 0, conversion(103, T0 + 10, id)),
            ],
        );
        w.forget_decided(1, T0 + 10 + MEMO_KEEP_MS - 1);
        let mut next = restored_from(&mut w);
        let again = run(
            &mut next,
            &[(InputTopic::Conversions, 0, conversion(103, T0 + 10, id))],
        );
        assert_eq!(again, first, "the first answer, not a repeat");
    }

    fn sale(ts: u64, order: &str) -> Input {
        let Input::Conversion(c) = conversion(100, ts, EventId::new_v7(ts)) else {
            unreachable!()
        };
        Input::Conversion(ConversionInput {
            order_id: crate::event::OrderId::new(order),
            value_micros: Some(50_000_000),
            ..c
        })
    }

    fn retract_by_order(ts: u64, order: &str) -> Input {
        let Input::Conversion(c) = sale(ts, order) else {
            unreachable!()
        };
        Input::Adjustment(AdjustmentInput {
            kind: crate::event::AdjustmentKind::Retract,
            conversion: ConversionInput {
                uid: None,
                value_micros: None,
                ..c
            },
        })
    }

    /// What the second hop reads: the adjustment with the index's user
    /// as its `uid` (`Output::send_on`).
    fn hop((user, a): &(UserId, AdjustmentInput)) -> Input {
        let mut a = a.clone();
        a.conversion.uid = Some(*user);
        Input::Adjustment(a)
    }

    /// Two users of one partition report one order id, U before the
    /// refund and V after it. The first hop routes the refund to U; the
    /// hop reaches U's member after V's report was applied there, and must
    /// still retract U's order, as the in-process engine does.
    #[test]
    fn the_second_hop_answers_for_the_index_s_user_not_a_later_owner() {
        const V: UserId = UserId(43);
        let (mut first_hop, mut users) = (work(), work());
        let sold_by_u = sale(T0 + 10, "R1");
        let Input::Conversion(c) = sale(T0 + 30, "R1") else {
            unreachable!()
        };
        let sold_by_v = Input::Conversion(ConversionInput { uid: Some(V), ..c });
        run(
            &mut users,
            &[(InputTopic::Conversions, 0, sold_by_u.clone())],
        );
        run(&mut first_hop, &[(InputTopic::Orders, 0, sold_by_u)]);
        let retract = retract_by_order(T0 + 20, "R1");
        run(&mut first_hop, &[(InputTopic::Adjustments, 0, retract)]);
        let routed = first_hop.take_routed();
        assert_eq!(routed[0].0, U);
        run(&mut users, &[(InputTopic::Conversions, 1, sold_by_v)]);
        let answer = run(
            &mut users,
            &[(InputTopic::AdjustmentsByUser, 0, hop(&routed[0]))],
        );
        assert_eq!(json(&answer[0])["retracted"], true);
        assert_eq!(
            json(&answer[0])["uid"],
            serde_json::Value::Null,
            "no user named"
        );
        let retracted = |uid: UserId| {
            let dump = users.dump();
            let user = &dump.iter().find(|(u, _)| *u == uid).unwrap().1;
            user.orders[0].outcome.unwrap().retracted
        };
        assert!(retracted(U), "U's order, which the index named");
        assert!(!retracted(V), "not V's later one");
    }

    /// An adjustment named by its order alone, in a fleet: the member
    /// owning the order's key learns from the orders topic whose order it
    /// is and sends the adjustment on; the user's member answers it as the
    /// in-process engine would. A member taking the order's key over finds
    /// the order in the changelog; an order nobody reported is answered at
    /// the first hop.
    #[test]
    fn an_adjustment_by_order_alone_reaches_the_order_s_user_through_the_index() {
        let (mut first_hop, mut users) = (work(), work());
        run(&mut users, &[(InputTopic::Impressions, 0, view(T0))]);
        let sold = sale(T0 + 10, "R1");
        let original = run(&mut users, &[(InputTopic::Conversions, 0, sold.clone())]);
        assert!(original[0].decision.counted);
        assert!(run(&mut first_hop, &[(InputTopic::Orders, 0, sold)]).is_empty());

        let retract = retract_by_order(T0 + 20, "R1");
        let here = run(&mut first_hop, &[(InputTopic::Adjustments, 0, retract)]);
        assert!(here.is_empty(), "no record at the first hop: {here:?}");
        let routed = first_hop.take_routed();
        assert_eq!(routed.len(), 1);
        assert_eq!(routed[0].0, U, "sent on to the order's user");
        assert!(first_hop.take_routed().is_empty(), "taken once");

        let answer = run(
            &mut users,
            &[(InputTopic::AdjustmentsByUser, 0, hop(&routed[0]))],
        );
        let j = json(&answer[0]);
        assert_eq!(j["adjusts"], original[0].event_id().to_string());
        assert_eq!(j["retracted"], true);
        assert_eq!(j["conversions_delta"], -1);
        assert_eq!(j["late"], false);
        assert!(
            users.dump()[0].1.orders[0].outcome.unwrap().retracted,
            "the user's changelog value carries the retraction"
        );

        // The next owner of the order's key restores the index.
        let mut values = Vec::new();
        first_hop.drain_dirty_orders(|k, v| values.push((k, v)));
        assert_eq!(values.len(), 1);
        let mut next = work();
        for (k, v) in &values {
            next.restore_order(*k, v.as_ref().map(|b| &b[..])).unwrap();
        }
        assert_eq!(next.order_index().dump(), first_hop.order_index().dump());
        let again = run(
            &mut next,
            &[(InputTopic::Adjustments, 1, retract_by_order(T0 + 30, "R1"))],
        );
        assert!(again.is_empty());
        assert_eq!(next.take_routed()[0].0, U);

        // Never reported: unknown_order, answered where it arrived.
        let unknown = run(
            &mut next,
            &[(
                InputTopic::Adjustments,
                2,
                retract_by_order(T0 + 40, "NEVER"),
            )],
        );
        assert_eq!(unknown[0].decision.reason, Some(Reason::UnknownOrder));
        assert!(next.take_routed().is_empty());
    }
}
