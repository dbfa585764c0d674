//! The engine's memory: per user, the latest view and the latest click per
//! line item; per (user, pixel), when a conversion was last counted.
//!
//! Entries are compact (integer ids, the touch time carried inside its v7
//! event id, no strings; the few clicks that carry a traffic source's click
//! id keep it in a map of its own, [`super::source_click`]). Users live in
//! shards that each own theirs, so a reader (gauges, snapshots, tests)
//! holds up the engine only for one shard.

use dashmap::DashMap;

use super::source_click::{SourceClickMark, SourceClicks};
use crate::event::OwnedSourceClick;
use crate::ids::{EventId, LineItemId, PixelId, PlacementId, PublisherId, UserId};
use crate::telemetry::metric;

pub use crate::event::TouchKind;

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

    pub fn get_mut(&mut self, kind: TouchKind) -> &mut Mark {
        match kind {
            TouchKind::View => &mut self.view,
            TouchKind::Click => &mut self.click,
        }
    }
}

/// A slab node: one line item's touches, chained per user.
#[derive(Clone, Copy, Debug)]
struct Node {
    touches: LineItemTouches,
    /// The user's next node, or [`NONE`].
    next: u32,
}

const NONE: u32 = u32::MAX;

/// A user id as a map key: 8-byte aligned, so a map slot is 24 bytes.
type Key = [u64; 2];

fn key(uid: UserId) -> Key {
    [(uid.0 >> 64) as u64, uid.0 as u64]
}

fn uid_of(k: &Key) -> UserId {
    UserId((k[0] as u128) << 64 | k[1] as u128)
}

/// The users whose id hashes to this shard: an index into a slab of nodes,
/// so a user with one line item costs one map slot and one 64-byte node, and
/// no allocation of its own.
#[derive(Default)]
struct Shard {
    /// User → first node.
    index: std::collections::HashMap<Key, u32, ahash::RandomState>,
    /// The nodes; freed ones are reused through `free`.
    nodes: Vec<Node>,
    /// Indices of freed nodes.
    free: Vec<u32>,
}

impl Shard {
    fn alloc(&mut self, touches: LineItemTouches, next: u32) -> u32 {
        let node = Node { touches, next };
        match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = node;
                i
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        }
    }

    fn chain(&self, first: u32) -> impl Iterator<Item = u32> + '_ {
        std::iter::successors(Some(first).filter(|i| *i != NONE), move |i| {
            Some(self.nodes[*i as usize].next).filter(|n| *n != NONE)
        })
    }

    /// Drops the `n` users whose latest touch is oldest; returns them.
    fn evict_oldest(&mut self, n: usize) -> Vec<Key> {
        let mut ages: Vec<(u64, Key)> = self
            .index
            .iter()
            .map(|(k, first)| {
                let latest = self
                    .chain(*first)
                    .map(|i| {
                        let t = &self.nodes[i as usize].touches;
                        t.view.ts_ms().max(t.click.ts_ms())
                    })
                    .max()
                    .unwrap_or(0);
                (latest, *k)
            })
            .collect();
        let n = n.min(ages.len());
        if n == 0 {
            return Vec::new();
        }
        ages.select_nth_unstable_by_key(n - 1, |a| a.0);
        ages.truncate(n);
        let mut gone = Vec::with_capacity(n);
        for (_, k) in ages {
            if let Some(first) = self.index.remove(&k) {
                let chain: Vec<u32> = self.chain(first).collect();
                self.free.extend(chain);
                gone.push(k);
            }
        }
        gone
    }

    fn list(&self, first: u32) -> Vec<LineItemTouches> {
        self.chain(first)
            .map(|i| self.nodes[i as usize].touches)
            .collect()
    }

    /// [`State::sweep_users`] on this shard's touches.
    fn sweep(&mut self, now_ms: u64, view_horizon_ms: u64, click_horizon_ms: u64, out: &mut Swept) {
        let expired =
            |m: &Mark, horizon: u64| m.is_set() && now_ms.saturating_sub(m.ts_ms()) > horizon;
        let users: Vec<(Key, u32)> = self.index.iter().map(|(k, v)| (*k, *v)).collect();
        for (k, first) in users {
            let chain: Vec<u32> = self.chain(first).collect();
            let mut kept = Vec::with_capacity(chain.len());
            for i in chain {
                let t = &mut self.nodes[i as usize].touches;
                for (kind, horizon) in [
                    (TouchKind::View, view_horizon_ms),
                    (TouchKind::Click, click_horizon_ms),
                ] {
                    let m = t.get_mut(kind);
                    if expired(m, horizon) {
                        if kind == TouchKind::Click && out.track_clicks {
                            out.clicks.push((uid_of(&k), m.event_id()));
                        }
                        *m = Mark::default();
                        out.dropped += 1;
                    }
                }
                if t.view.is_set() || t.click.is_set() {
                    kept.push(i);
                } else {
                    self.free.push(i);
                }
            }
            // Relink what is left.
            let mut next = NONE;
            for &i in kept.iter().rev() {
                self.nodes[i as usize].next = next;
                next = i;
            }
            if next == NONE {
                self.index.remove(&k);
                out.emptied.push(uid_of(&k));
            } else {
                self.index.insert(k, next);
            }
        }
    }
}

/// What a sweep of the touches dropped.
#[derive(Default)]
struct Swept {
    dropped: usize,
    /// Users left without touches.
    emptied: Vec<UserId>,
    /// Whether to list the expired clicks: only when some click has a
    /// source click id, whose entry must go with it.
    track_clicks: bool,
    clicks: Vec<(UserId, EventId)>,
}

/// What storing a touch did, for the source click ids kept beside it.
struct Touched {
    /// The touch is now the user's mark of its kind on its line item.
    stored: bool,
    /// The mark it replaced, if one was set.
    replaced: Option<EventId>,
    /// Users evicted to make room.
    evicted: Vec<Key>,
}

const SHARDS: usize = 16;

/// An order id a conversion pixel saw for a user: its fingerprint (a
/// 64-bit SipHash of the id, [`crate::event::OrderId::fingerprint`]), when,
/// and what became of the conversion that reported it, so an adjustment
/// can name that conversion and carry its credit (`size_of` is measured in
/// `tests::an_order_mark_is_measured`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderMark {
    pub pixel: PixelId,
    pub order: u64,
    pub ts_ms: u64,
    /// `None` for marks restored from a release before adjustments.
    pub outcome: Option<OrderOutcome>,
}

impl OrderMark {
    /// The order in which a user's marks are written out.
    pub fn sort_key(&self) -> (PixelId, u64, u64) {
        (self.pixel, self.order, self.ts_ms)
    }
}

/// An event id kept in 8-byte words: a `u128` would align every order
/// mark to 16 bytes and pad it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredId([u64; 2]);

impl From<EventId> for StoredId {
    fn from(id: EventId) -> StoredId {
        StoredId([(id.0 >> 64) as u64, id.0 as u64])
    }
}

impl StoredId {
    pub fn get(self) -> EventId {
        EventId(u128::from(self.0[0]) << 64 | u128::from(self.0[1]))
    }
}

/// The conversion that first reported an order, as decided, and the
/// order's standing since (restatements, a retraction).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderOutcome {
    /// The original conversion's event id.
    pub conversion: StoredId,
    pub decision: super::rules::Decision,
    /// The order's value now.
    pub value_micros: Option<u64>,
    pub retracted: bool,
    /// The latest adjustments applied, newest first, each with the order's
    /// standing before it: an adjustment read again (the cluster engine
    /// re-reads what it had not committed) gets the same answer.
    pub applied: [Option<AppliedAdjustment>; 2],
}

/// One adjustment applied to an order, and the order's standing before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppliedAdjustment {
    pub adjustment: StoredId,
    pub value_before: Option<u64>,
    pub retracted_before: bool,
}

/// All attribution state, in shards that each own their users; a reader
/// locks one shard briefly, never the whole state.
pub struct State {
    /// Users by a keyed hash of their id.
    shards: Box<[std::sync::Mutex<Shard>]>,
    /// Picks the shard; keyed per process, so crafted ids cannot pile up.
    shard_hasher: ahash::RandomState,
    /// Per user, when a conversion on each pixel was last counted (ms).
    /// Keyed by user so a user's whole state can be written out at once
    /// (the cluster engine's changelog); few users convert, so the list is
    /// short.
    counted: DashMap<UserId, Vec<(PixelId, u64)>>,
    /// Per user, the order ids seen within their pixel's `dedup_minutes`.
    orders: DashMap<UserId, Vec<OrderMark>>,
    /// Whose order each (pixel, order fingerprint) is, for an adjustment
    /// that names its order alone, with that mark's time; kept with
    /// `orders`. The latest mark owns it (ties: the larger user id), so a
    /// snapshot or changelog reload, in whatever order, picks the same one.
    order_owners: DashMap<(PixelId, u64), (u64, UserId)>,
    /// The traffic source's click ids of kept click marks. Locked only
    /// ever on its own, never while a shard is: a shard's lock is released
    /// before this map is touched.
    source_clicks: SourceClicks,
    /// Users a shard holds at most (`attribution.max_users` / shards): a
    /// cookieless crowd or a bot flood evicts the least recently touched
    /// instead of growing the process until it dies.
    max_per_shard: usize,
    /// Users evicted since the last [`State::take_evicted`], when someone
    /// needs to know (the cluster engine writes them to its changelog).
    evicted: Option<std::sync::Mutex<Vec<UserId>>>,
}

impl Default for State {
    fn default() -> Self {
        State::bounded(usize::MAX, false)
    }
}

impl State {
    /// At most `max_users` users (rounded up to a multiple of the shard
    /// count); `record_evicted` keeps the evicted ids for
    /// [`State::take_evicted`].
    pub fn bounded(max_users: usize, record_evicted: bool) -> State {
        State {
            shards: (0..SHARDS).map(|_| Default::default()).collect(),
            shard_hasher: ahash::RandomState::new(),
            counted: DashMap::new(),
            orders: DashMap::new(),
            order_owners: DashMap::new(),
            source_clicks: SourceClicks::default(),
            max_per_shard: max_users.div_ceil(SHARDS).max(1),
            evicted: record_evicted.then(Default::default),
        }
    }

    /// Drops everything kept of `uid` (an opt-out).
    pub fn forget(&self, uid: UserId) {
        let mut shard = self.shard(uid);
        let shard = &mut *shard;
        if let Some(first) = shard.index.remove(&key(uid)) {
            let chain: Vec<u32> = shard.chain(first).collect();
            shard.free.extend(chain);
        }
        drop(self.counted.remove(&uid));
        if let Some((_, marks)) = self.orders.remove(&uid) {
            self.disown(uid, &marks);
        }
        self.source_clicks.forget(uid);
    }

    /// Whether `pixel` saw `order` for `uid` at a time within `window_ms`
    /// of `ts_ms`.
    pub fn order_seen(
        &self,
        uid: UserId,
        pixel: PixelId,
        order: u64,
        ts_ms: u64,
        window_ms: u64,
    ) -> bool {
        self.orders.get(&uid).is_some_and(|list| {
            list.iter().any(|m| {
                m.pixel == pixel && m.order == order && m.ts_ms.abs_diff(ts_ms) <= window_ms
            })
        })
    }

    /// Remembers an order id (its first sighting: a duplicate does not
    /// move the window).
    pub fn remember_order(&self, uid: UserId, mark: OrderMark) {
        self.claim_order(uid, &mark);
        self.orders.entry(uid).or_default().push(mark);
    }

    /// Makes `uid` the owner of `mark`'s order unless a later mark (or an
    /// equal one of a larger user id) already is.
    fn claim_order(&self, uid: UserId, mark: &OrderMark) {
        let claim = (mark.ts_ms, uid);
        self.order_owners
            .entry((mark.pixel, mark.order))
            .and_modify(|owner| *owner = (*owner).max(claim))
            .or_insert(claim);
    }

    /// The user whose order `order` (a fingerprint) on `pixel` is.
    pub fn order_owner(&self, pixel: PixelId, order: u64) -> Option<UserId> {
        self.order_owners.get(&(pixel, order)).map(|owner| owner.1)
    }

    /// Drops `uid`'s claim on the orders of `marks`.
    fn disown(&self, uid: UserId, marks: &[OrderMark]) {
        for m in marks {
            self.order_owners
                .remove_if(&(m.pixel, m.order), |_, owner| owner.1 == uid);
        }
    }

    /// One user's order marks, sorted.
    pub fn orders_of(&self, uid: UserId) -> Vec<OrderMark> {
        let mut list = self.orders.get(&uid).map_or_else(Vec::new, |v| v.clone());
        list.sort_unstable_by_key(OrderMark::sort_key);
        list
    }

    /// Calls `f` with the latest mark of `order` on `pixel` for `uid` that
    /// knows its conversion's outcome (`None` when there is none).
    pub fn with_order<R>(
        &self,
        uid: UserId,
        pixel: PixelId,
        order: u64,
        f: impl FnOnce(Option<&mut OrderOutcome>) -> R,
    ) -> R {
        let Some(mut list) = self.orders.get_mut(&uid) else {
            return f(None);
        };
        let latest = list
            .iter_mut()
            .filter(|m| m.pixel == pixel && m.order == order && m.outcome.is_some())
            .max_by_key(|m| m.ts_ms);
        f(latest.and_then(|m| m.outcome.as_mut()))
    }

    /// Every order mark (for snapshots).
    pub fn all_orders(&self) -> Vec<(UserId, OrderMark)> {
        let mut out = Vec::with_capacity(self.orders.len());
        for e in self.orders.iter() {
            out.extend(e.value().iter().map(|m| (*e.key(), *m)));
        }
        out
    }

    /// Replaces a user's order marks (a changelog value).
    pub fn set_orders(&self, uid: UserId, orders: &[OrderMark]) {
        let before = if orders.is_empty() {
            self.orders.remove(&uid).map(|(_, marks)| marks)
        } else {
            self.orders.insert(uid, orders.to_vec())
        };
        if let Some(before) = before {
            self.disown(uid, &before);
        }
        for m in orders {
            self.claim_order(uid, m);
        }
    }

    /// The users evicted since the last call (empty unless recording).
    pub fn take_evicted(&self) -> Vec<UserId> {
        self.evicted.as_ref().map_or_else(Vec::new, |e| {
            std::mem::take(&mut *e.lock().unwrap_or_else(|p| p.into_inner()))
        })
    }

    fn shard(&self, uid: UserId) -> std::sync::MutexGuard<'_, Shard> {
        let i = self.shard_hasher.hash_one(uid.0) as usize % SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a touch unless a later one of the same kind is already there.
    pub fn touch(&self, uid: UserId, line_item: LineItemId, kind: TouchKind, mark: Mark) {
        self.touch_with(uid, line_item, kind, mark, None);
    }

    /// [`State::touch`], keeping a click's source click id while the click
    /// is the line item's kept click mark.
    pub fn touch_with(
        &self,
        uid: UserId,
        line_item: LineItemId,
        kind: TouchKind,
        mark: Mark,
        source: Option<OwnedSourceClick>,
    ) {
        let touched = self.touch_shard(uid, line_item, kind, mark);
        for k in &touched.evicted {
            self.source_clicks.forget(uid_of(k));
        }
        // A replaced click without an id of its own still takes its
        // predecessor's along; a view leaves them be.
        if kind == TouchKind::Click
            && touched.stored
            && (source.is_some() || touched.replaced.is_some())
        {
            self.source_clicks
                .replace(uid, touched.replaced, mark.event_id(), source);
        }
    }

    /// Stores the mark under the shard's lock (evicting when the shard is
    /// full) and says what it did.
    fn touch_shard(
        &self,
        uid: UserId,
        line_item: LineItemId,
        kind: TouchKind,
        mark: Mark,
    ) -> Touched {
        let mut shard = self.shard(uid);
        let shard = &mut *shard;
        let first = shard.index.get(&key(uid)).copied().unwrap_or(NONE);
        let existing = shard
            .chain(first)
            .find(|i| shard.nodes[*i as usize].touches.line_item == line_item.0);
        let mut touched = Touched {
            stored: true,
            replaced: None,
            evicted: Vec::new(),
        };
        if let Some(i) = existing {
            let slot = shard.nodes[i as usize].touches.get_mut(kind);
            touched.stored = !slot.is_set() || mark.is_after(slot);
            if touched.stored {
                touched.replaced = slot.is_set().then(|| slot.event_id());
                *slot = mark;
            }
            return touched;
        }
        if first == NONE && shard.index.len() >= self.max_per_shard {
            // A sixteenth at a time: the scan that finds them is paid once
            // per that many new users.
            touched.evicted = shard.evict_oldest((self.max_per_shard / 16).max(1));
            metric::attribution_evicted(touched.evicted.len());
            if let Some(e) = &self.evicted {
                e.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(touched.evicted.iter().map(uid_of));
            }
        }
        let mut touches = LineItemTouches {
            line_item: line_item.0,
            ..Default::default()
        };
        *touches.get_mut(kind) = mark;
        let node = shard.alloc(touches, first);
        shard.index.insert(key(uid), node);
        touched
    }

    /// The source click id of `uid`'s kept click `click`, if it had one.
    pub fn source_click(&self, uid: UserId, click: EventId) -> Option<OwnedSourceClick> {
        self.source_clicks.get(uid, click)
    }

    /// The source click ids of the clicks the engine keeps
    /// ([`super::source_click::credited`] looks one up).
    pub fn source_clicks(&self) -> &SourceClicks {
        &self.source_clicks
    }

    /// One user's source click ids, sorted by click.
    pub fn source_clicks_of(&self, uid: UserId) -> Vec<SourceClickMark> {
        self.source_clicks.of(uid)
    }

    /// Every source click id (for snapshots).
    pub fn all_source_clicks(&self) -> Vec<(UserId, SourceClickMark)> {
        self.source_clicks.all()
    }

    /// Replaces a user's source click ids (a changelog value), keeping only
    /// those whose click is one of the user's kept click marks: set the
    /// touches first.
    pub fn set_source_clicks(&self, uid: UserId, list: &[SourceClickMark]) {
        let kept = self.kept_clicks(uid);
        let list = list
            .iter()
            .filter(|m| kept.contains(&m.click.get()))
            .cloned()
            .collect();
        self.source_clicks.set(uid, list);
    }

    /// Adds one source click id (loading a snapshot), if its click is kept.
    pub fn remember_source_click(&self, uid: UserId, mark: SourceClickMark) {
        if self.kept_clicks(uid).contains(&mark.click.get()) {
            let mut list = self.source_clicks.of(uid);
            list.retain(|m| m.click != mark.click);
            list.push(mark);
            self.source_clicks.set(uid, list);
        }
    }

    /// The event ids of a user's kept click marks.
    fn kept_clicks(&self, uid: UserId) -> Vec<EventId> {
        self.with_touches(uid, |t| {
            t.iter()
                .filter(|t| t.click.is_set())
                .map(|t| t.click.event_id())
                .collect()
        })
    }

    /// Calls `f` with a user's touches (empty when none), under the shard lock.
    pub fn with_touches<R>(&self, uid: UserId, f: impl FnOnce(&[LineItemTouches]) -> R) -> R {
        let shard = self.shard(uid);
        match shard.index.get(&key(uid)) {
            None => f(&[]),
            Some(&first) if shard.nodes[first as usize].next == NONE => {
                f(std::slice::from_ref(&shard.nodes[first as usize].touches))
            }
            Some(&first) => f(&shard.list(first)),
        }
    }

    /// A copy of a user's touches (empty when none).
    pub fn touches_of(&self, uid: UserId) -> Vec<LineItemTouches> {
        self.with_touches(uid, <[LineItemTouches]>::to_vec)
    }

    /// Every user with their touches (for snapshots).
    pub fn users_touches(&self) -> Vec<(UserId, Vec<LineItemTouches>)> {
        let mut out = Vec::with_capacity(self.users());
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            out.extend(
                shard
                    .index
                    .iter()
                    .map(|(k, first)| (uid_of(k), shard.list(*first))),
            );
        }
        out
    }

    /// Replaces a user's touches (for loading snapshots); their source
    /// click ids go with the old ones (the caller sets the new ones').
    pub fn set_touches(&self, uid: UserId, list: &[LineItemTouches]) {
        self.source_clicks.forget(uid);
        let mut shard = self.shard(uid);
        let shard = &mut *shard;
        if let Some(first) = shard.index.remove(&key(uid)) {
            let old: Vec<u32> = shard.chain(first).collect();
            shard.free.extend(old);
        }
        let mut next = NONE;
        for t in list.iter().rev() {
            next = shard.alloc(*t, next);
        }
        if next != NONE {
            shard.index.insert(key(uid), next);
        }
    }

    /// Every repeat mark (for snapshots).
    pub fn repeat_marks(&self) -> Vec<((UserId, PixelId), u64)> {
        let mut out = Vec::with_capacity(self.counted.len());
        for e in self.counted.iter() {
            out.extend(e.value().iter().map(|(p, ts)| ((*e.key(), *p), *ts)));
        }
        out
    }

    /// One user's repeat marks.
    pub fn repeat_marks_of(&self, uid: UserId) -> Vec<(PixelId, u64)> {
        self.counted.get(&uid).map_or_else(Vec::new, |v| v.clone())
    }

    pub fn last_counted(&self, uid: UserId, pixel: PixelId) -> Option<u64> {
        let marks = self.counted.get(&uid)?;
        marks.iter().find(|(p, _)| *p == pixel).map(|(_, ts)| *ts)
    }

    pub fn mark_counted(&self, uid: UserId, pixel: PixelId, ts_ms: u64) {
        let mut marks = self.counted.entry(uid).or_default();
        match marks.iter_mut().find(|(p, _)| *p == pixel) {
            Some(m) => m.1 = ts_ms,
            None => marks.push((pixel, ts_ms)),
        }
    }

    /// Replaces everything known of a user (loading the changelog); empty
    /// lists remove the user.
    pub fn set_user(&self, uid: UserId, touches: &[LineItemTouches], marks: &[(PixelId, u64)]) {
        self.set_touches(uid, touches);
        if marks.is_empty() {
            self.counted.remove(&uid);
        } else {
            self.counted.insert(uid, marks.to_vec());
        }
    }

    /// Whether anything is kept of a user.
    pub fn knows(&self, uid: UserId) -> bool {
        self.counted.contains_key(&uid)
            || self.orders.contains_key(&uid)
            || self.shard(uid).index.contains_key(&key(uid))
    }

    /// Users with at least one touch.
    pub fn users(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).index.len())
            .sum()
    }

    /// Stored touch marks, repeat marks, order marks and source click ids.
    pub fn entries(&self) -> usize {
        let mut marks = 0;
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            for first in shard.index.values() {
                for i in shard.chain(*first) {
                    let t = &shard.nodes[i as usize].touches;
                    marks += t.view.is_set() as usize + t.click.is_set() as usize;
                }
            }
        }
        marks
            + self.counted.iter().map(|e| e.value().len()).sum::<usize>()
            + self.orders.iter().map(|e| e.value().len()).sum::<usize>()
            + self.source_clicks.len()
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
        let mut emptied = Vec::new();
        self.sweep_users(
            now_ms,
            view_horizon_ms,
            click_horizon_ms,
            repeat_horizon,
            &mut emptied,
        )
    }

    /// Drops order marks older than their pixel's window (`horizon`; 0: no
    /// deduplication, so nothing is kept).
    pub fn sweep_orders(
        &self,
        now_ms: u64,
        horizon: impl Fn(PixelId) -> u64,
        emptied: &mut Vec<UserId>,
    ) -> usize {
        let mut dropped = 0;
        let mut candidates = Vec::new();
        let mut gone = Vec::new();
        self.orders.retain(|uid, marks| {
            marks.retain(|m| {
                let keep = now_ms.saturating_sub(m.ts_ms) <= horizon(m.pixel);
                dropped += usize::from(!keep);
                if !keep {
                    gone.push((*uid, *m));
                }
                keep
            });
            if marks.is_empty() {
                candidates.push(*uid);
            }
            !marks.is_empty()
        });
        for (uid, m) in gone {
            let still = self.orders.get(&uid).is_some_and(|list| {
                list.iter()
                    .any(|x| x.pixel == m.pixel && x.order == m.order)
            });
            if !still {
                self.disown(uid, &[m]);
            }
        }
        emptied.extend(candidates.into_iter().filter(|u| !self.knows(*u)));
        dropped
    }

    /// [`State::sweep`], also listing the users of whom nothing is left
    /// (the cluster engine writes them to its changelog as tombstones).
    pub fn sweep_users(
        &self,
        now_ms: u64,
        view_horizon_ms: u64,
        click_horizon_ms: u64,
        repeat_horizon: impl Fn(PixelId) -> Option<u64>,
        emptied: &mut Vec<UserId>,
    ) -> usize {
        let mut swept = Swept {
            track_clicks: !self.source_clicks.is_empty(),
            ..Default::default()
        };
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            shard.sweep(now_ms, view_horizon_ms, click_horizon_ms, &mut swept);
        }
        // After the shards' locks: this map is never locked inside one.
        for (uid, click) in &swept.clicks {
            self.source_clicks.drop_click(*uid, *click);
        }
        let Swept {
            mut dropped,
            emptied: mut candidates,
            ..
        } = swept;
        self.counted.retain(|uid, marks| {
            marks.retain(|(pixel, ts)| {
                let keep = repeat_horizon(*pixel).is_some_and(|h| now_ms.saturating_sub(*ts) <= h);
                dropped += usize::from(!keep);
                keep
            });
            if marks.is_empty() {
                candidates.push(*uid);
            }
            !marks.is_empty()
        });
        candidates.sort_unstable();
        candidates.dedup();
        emptied.extend(candidates.into_iter().filter(|u| !self.knows(*u)));
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
        let li = |id: u32| t.iter().find(|x| x.line_item == id).unwrap();
        assert_eq!(li(1).view.tracker(), 1);
        assert_eq!(li(1).click.tracker(), 3);
        assert_eq!(li(2).view.tracker(), 4);
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
    /// What one remembered order costs in memory (README, "What pixeld
    /// keeps"): the mark with its outcome, in the user's list.
    #[test]
    fn an_order_mark_is_measured() {
        let bytes = std::mem::size_of::<OrderMark>();
        println!("one remembered order: {bytes} bytes in its user's list");
        // 184 on x86_64 (24 before outcomes); a guard against growth.
        assert!(bytes <= 184, "{bytes} bytes per order mark");
    }
}

#[cfg(test)]
mod bounded_tests {
    use super::*;

    fn mark(ts: u64) -> Mark {
        Mark::new(EventId::new_v7(ts), 1, PublisherId(1), None)
    }

    #[test]
    fn a_flood_of_one_time_users_evicts_the_least_recently_touched() {
        let s = State::bounded(1024, true);
        let old = UserId(u128::MAX);
        s.touch(old, LineItemId(1), TouchKind::View, mark(1));
        // A returning user, touched again late in the flood.
        let regular = UserId(u128::MAX - 1);
        s.touch(regular, LineItemId(1), TouchKind::View, mark(2));
        for i in 0..100_000u64 {
            s.touch(
                UserId(i as u128),
                LineItemId(1),
                TouchKind::View,
                mark(10 + i),
            );
            if i == 99_900 {
                s.touch(regular, LineItemId(1), TouchKind::Click, mark(10 + i));
            }
        }
        assert!(s.users() <= 1024, "{} users kept", s.users());
        assert!(
            s.users() >= 1024 - 1024 / 16 - SHARDS,
            "{} users kept",
            s.users()
        );
        assert!(!s.knows(old), "the oldest touch went first");
        assert!(s.knows(regular), "a user touched lately stays");
        assert!(s.knows(UserId(99_999)), "the newest stays");
        let evicted = s.take_evicted();
        // The regular user was evicted once, early, before coming back.
        assert_eq!(evicted.len() + s.users(), 100_003);
        assert!(evicted.contains(&old));
        assert!(s.take_evicted().is_empty(), "taken once");
    }

    #[test]
    fn without_a_bound_nothing_is_evicted_or_recorded() {
        let s = State::default();
        for i in 0..5_000u64 {
            s.touch(
                UserId(i as u128),
                LineItemId(1),
                TouchKind::View,
                mark(10 + i),
            );
        }
        assert_eq!(s.users(), 5_000);
        assert!(s.take_evicted().is_empty());
    }
}
