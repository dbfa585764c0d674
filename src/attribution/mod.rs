//! The attribution engine: credits every conversion to the user's latest
//! click or view inside the pixel's windows and publishes one record per
//! conversion.
//!
//! One engine thread owns all writes ([`Engine`]). Its inputs
//! ([`Input`], derived from events in [`crate::event::input`]) come from one
//! of two [`Source`]s: with a journal it reads the journal in order, from
//! its snapshot's position, each input from the record's aux bytes (or its
//! JSON payload in a journal without them); in memory
//! mode the [`crate::delivery::Delivery`] offers them over a bounded channel
//! ([`Feed`]) and never waits. Its records go through the same delivery as
//! every other event. Between inputs (every 1024 inputs of a
//! backlog at most) it sweeps expired state and snapshots to `data_dir`.

pub mod adjust;
pub mod cluster;
mod dedup;
pub mod order;
pub mod record;
pub mod rules;
pub mod snapshot;
pub mod source_click;
#[cfg(test)]
mod source_click_tests;
pub mod state;
#[cfg(test)]
pub(crate) mod tests;
pub mod wire;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use tracing::{info, warn};

pub use record::{Attribution, ConversionInput, OrderId};
pub use rules::{Credit, CreditKind, Decision, MatchedBy, Reason};
pub use state::{Mark, State, TouchKind};

use crate::config::{Catalog, Repeat};
use crate::delivery::{Delivery, Receipt, Tap};
use crate::event::EventType;
use crate::ids::PixelId;
use crate::journal::{Cursor, Journal};
use crate::telemetry::{metric, now_ms};
use dedup::Dedup;

/// What the engine is told: derived from an event, below both the engine
/// and the journal ([`crate::event::input`]).
pub use crate::event::AttributionInput as Input;

/// Applies inputs to the state; the rules come from the current catalog.
pub struct Engine {
    /// Shared with readers (gauges, snapshot, tests).
    pub state: Arc<State>,
    /// The configuration in force; swapped on reload.
    catalog: Arc<ArcSwap<Catalog>>,
}

impl Engine {
    pub fn new(state: Arc<State>, catalog: Arc<ArcSwap<Catalog>>) -> Engine {
        Engine { state, catalog }
    }

    /// The catalog in force now.
    pub fn catalog(&self) -> arc_swap::Guard<Arc<Catalog>> {
        self.catalog.load()
    }

    /// Applies one input; a conversion or an adjustment yields its record.
    pub fn apply(&self, input: Input) -> Option<Attribution> {
        match input {
            Input::Touch(t) => {
                let mark = Mark::new(t.event_id, t.tracker, t.publisher, t.placement);
                self.state
                    .touch_with(t.uid, t.line_item, t.kind, mark, t.source_click);
                None
            }
            Input::Conversion(conversion) => Some(self.convert(conversion)),
            Input::Forget(f) => {
                self.state.forget(f.uid);
                None
            }
            Input::Adjustment(a) => Some(self.adjust(a)),
        }
    }

    fn convert(&self, conversion: ConversionInput) -> Attribution {
        let named = conversion.click.map(|c| rules::NamedClick {
            line_item: c.line_item,
            mark: Mark::new(c.event_id, c.tracker.0, c.publisher, c.placement),
        });
        // Without a user, a click id stands in: its order ids and repeat
        // marks are kept under an id derived from the click.
        let Some(uid) = conversion.state_user() else {
            let decision = Decision {
                counted: true,
                credit: None,
                reason: Some(Reason::NoUid),
            };
            return Attribution::of(conversion, decision);
        };
        let catalog = self.catalog.load();
        let pixel = catalog.conversion_pixels.get(&conversion.pixel);
        // Deduplication comes before the repeat rule: a duplicate neither
        // counts nor marks.
        let dedup = Dedup::of(&conversion, pixel);
        if dedup.is_some_and(|d| d.seen(&self.state, uid, &conversion)) {
            let decision = Decision {
                counted: false,
                credit: None,
                reason: Some(Reason::Duplicate),
            };
            return Attribution::of(conversion, decision);
        }
        let last = self.state.last_counted(uid, conversion.pixel);
        let decision = if conversion.uid.is_some() {
            self.state.with_touches(uid, |t| {
                rules::decide(pixel, t, named, conversion.ts_ms, last)
            })
        } else {
            rules::decide(pixel, &[], named, conversion.ts_ms, last)
        };
        if decision.counted && pixel.is_some_and(|p| p.repeat != Repeat::All) {
            self.state
                .mark_counted(uid, conversion.pixel, conversion.ts_ms);
        }
        if let Some(d) = dedup {
            d.remember(&self.state, uid, &conversion, decision);
        }
        let source = self.source_click_of(&conversion, decision.credit.as_ref());
        Attribution::of(conversion, decision).with_source_click(source)
    }

    /// The traffic source's click id of a credited click, while the state
    /// keeps it ([`source_click::credited`]).
    pub fn source_click_of(
        &self,
        conversion: &ConversionInput,
        credit: Option<&Credit>,
    ) -> Option<crate::event::OwnedSourceClick> {
        source_click::credited(self.state.source_clicks(), conversion, credit)
    }

    /// An adjustment, answered from the outcome remembered with its order
    /// (kept as long as the pixel deduplicates: `dedup_minutes`).
    fn adjust(&self, a: crate::event::AdjustmentInput) -> Attribution {
        let user = self.adjustment_user(&a);
        self.adjust_for(user, a)
    }

    /// An adjustment of `user`'s orders ([`Engine::adjustment_user`], or in
    /// a fleet the user the order index found for one named by its order
    /// alone: the first hop's answer, which is the in-process engine's,
    /// where this member's own idea of the order's owner may be a later
    /// report by another of its users).
    pub fn adjust_for(
        &self,
        user: Option<crate::ids::UserId>,
        a: crate::event::AdjustmentInput,
    ) -> Attribution {
        let verdict = match (user, a.conversion.order_id) {
            (Some(uid), Some(order)) => {
                self.state
                    .with_order(uid, a.conversion.pixel, order.fingerprint(), |outcome| {
                        adjust::apply(outcome, &a)
                    })
            }
            _ => adjust::apply(None, &a),
        };
        // Best effort: the order outlives its click's mark (`dedup_minutes`
        // against the post-click window, an eviction), and an original
        // credited by click id to a user other than the one the adjustment
        // names is not found. The original's record is the authority.
        let source = self.source_click_of(&a.conversion, verdict.credit.as_ref());
        Attribution::of_adjustment(a.conversion, verdict).with_source_click(source)
    }

    /// Whose orders an adjustment reads and writes: the user or click it
    /// names, or when it names its order alone (`orders_by_id`), the user
    /// this state knows reported that order.
    pub fn adjustment_user(&self, a: &crate::event::AdjustmentInput) -> Option<crate::ids::UserId> {
        let owner = || {
            let order = a.conversion.order_id?;
            self.state
                .order_owner(a.conversion.pixel, order.fingerprint())
        };
        a.conversion.state_user().or_else(owner)
    }

    /// Drops what no pixel's window can reach any more.
    pub fn sweep(&self, now_ms: u64) -> usize {
        self.sweep_users(now_ms, &mut Vec::new())
    }

    /// [`Engine::sweep`], listing the users of whom nothing is left.
    pub fn sweep_users(&self, now_ms: u64, emptied: &mut Vec<crate::ids::UserId>) -> usize {
        let catalog = self.catalog.load();
        let pixels = catalog.conversion_pixels.values();
        let view = pixels.clone().map(|p| p.post_view_ms).max().unwrap_or(0);
        let click = pixels.map(|p| p.post_click_ms).max().unwrap_or(0);
        let horizon = |id: PixelId| -> Option<u64> {
            let p = catalog.conversion_pixels.get(&id)?;
            match p.repeat {
                Repeat::All => None,
                Repeat::OnePerUser => Some(p.post_view_ms.max(p.post_click_ms)),
                Repeat::EveryMinutes(n) => Some(n as u64 * 60_000),
            }
        };
        let orders = |id: PixelId| catalog.dedup_ms(id);
        let mut dropped = self.state.sweep_orders(now_ms, orders, emptied);
        dropped += self
            .state
            .sweep_users(now_ms, view, click, horizon, emptied);
        metric::attribution_state(self.state.users(), self.state.entries());
        dropped
    }
}

/// The handlers' end of the channel.
pub struct Feed {
    /// Bounded: a full channel drops the input, never blocks a handler.
    tx: Sender<Command>,
    /// The engine thread's end.
    rx: Receiver<Command>,
    /// Inputs lost to a full channel since start.
    dropped: AtomicU64,
    /// When the last one was lost (ms), for readiness.
    last_drop_ms: AtomicU64,
}

// Nearly every message is an `Apply`, so its size is the channel's slot
// size either way; boxing it would add an allocation per input for nothing.
#[allow(clippy::large_enum_variant)]
enum Command {
    Apply(Input),
    Stop,
}

impl Tap for Feed {
    fn offer(&self, input: Input) {
        Feed::offer(self, input)
    }

    fn healthy(&self) -> bool {
        Feed::healthy(self)
    }
}

impl Feed {
    /// A channel holding at most `capacity` inputs.
    pub fn new(capacity: usize) -> Feed {
        let (tx, rx) = bounded(capacity.max(1));
        Feed {
            tx,
            rx,
            dropped: AtomicU64::new(0),
            last_drop_ms: AtomicU64::new(0),
        }
    }

    /// Hands `input` to the engine, or counts it as lost.
    pub fn offer(&self, input: Input) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.tx.try_send(Command::Apply(input))
        {
            metric::attribution_input_dropped();
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.last_drop_ms.store(now_ms(), Ordering::Relaxed);
        }
    }

    /// Inputs lost since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// False while inputs were lost in the last 10 seconds.
    pub fn healthy(&self) -> bool {
        let last = self.last_drop_ms.load(Ordering::Relaxed);
        last == 0 || now_ms().saturating_sub(last) > 10_000
    }
}

/// Settings of the engine thread.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where the snapshot lives; None keeps state in memory only.
    pub data_dir: Option<PathBuf>,
    pub snapshot_interval: Duration,
    pub sweep_interval: Duration,
    /// `attribution.max_users`.
    pub max_users: usize,
}

/// Where the engine's inputs come from. Its records go through the
/// [`Delivery`] like every other event.
pub enum Source {
    /// Offered by the handlers over the channel ([`Feed`], the delivery's
    /// tap in memory mode).
    Channel(Arc<Feed>),
    /// Read in order from the journal (from the snapshot's position, so a
    /// restart replays what the snapshot missed), each input decoded from
    /// the record's aux bytes, or derived from its JSON payload.
    Journal(Arc<Journal>),
}

/// Why the engine could not start with the state it is asked to keep.
#[derive(Debug)]
pub enum StartError {
    /// The snapshot exists but cannot be read (not a corrupt one: that is
    /// rebuilt from the journal).
    SnapshotUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `data_dir` cannot hold snapshots.
    DataDirNotWritable {
        dir: PathBuf,
        source: std::io::Error,
    },
    /// The engine thread could not be spawned.
    Thread(std::io::Error),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::SnapshotUnreadable { path, source } => write!(
                f,
                "cannot read the attribution snapshot {}: {source}",
                path.display()
            ),
            StartError::DataDirNotWritable { dir, source } => write!(
                f,
                "cannot write attribution snapshots into {}: {source}",
                dir.display()
            ),
            StartError::Thread(e) => write!(f, "cannot start the attribution thread: {e}"),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::SnapshotUnreadable { source, .. }
            | StartError::DataDirNotWritable { source, .. }
            | StartError::Thread(source) => Some(source),
        }
    }
}

/// Owns the engine thread; stopping it (or dropping it) processes what is
/// pending, takes a final snapshot and joins the thread.
pub struct EngineTask {
    pub state: Arc<State>,
    /// Asks the thread to finish.
    stop: Arc<AtomicBool>,
    /// Wakes a channel-fed thread that is waiting.
    tx: Option<Sender<Command>>,
    thread: Option<JoinHandle<()>>,
}

impl EngineTask {
    /// Loads the snapshot (a corrupt one is reported and ignored: the
    /// journal rebuilds the state) and starts the engine thread. A snapshot
    /// that cannot be read at all, or a `data_dir` that cannot hold the next
    /// one, stops start-up: the state could not be kept.
    pub fn start(
        catalog: Arc<ArcSwap<Catalog>>,
        delivery: Arc<Delivery>,
        source: Source,
        settings: Settings,
    ) -> Result<EngineTask, StartError> {
        let state = Arc::new(State::bounded(settings.max_users, false));
        let mut applied = 0;
        if let Some(dir) = &settings.data_dir {
            crate::files::check_writable(dir).map_err(|source| StartError::DataDirNotWritable {
                dir: dir.clone(),
                source,
            })?;
            match snapshot::load(&state, dir) {
                Ok(Some(at)) => {
                    applied = at;
                    info!(
                        users = state.users(),
                        journal_position = at,
                        "attribution state restored from snapshot"
                    );
                }
                Ok(None) => {
                    info!(path = %snapshot::path_in(dir).display(), "no attribution snapshot yet; starting empty")
                }
                Err(snapshot::LoadError::Unreadable(source)) => {
                    return Err(StartError::SnapshotUnreadable {
                        path: snapshot::path_in(dir),
                        source,
                    })
                }
                Err(snapshot::LoadError::Corrupt(e)) => {
                    warn!(error = %e, path = %snapshot::path_in(dir).display(), "attribution snapshot corrupt; ignored, the state is rebuilt from the journal")
                }
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        // The gauges from the start (then at every sweep).
        metric::attribution_state(state.users(), state.entries());
        let engine = Engine::new(state.clone(), catalog);
        let (tx, input) = match source {
            Source::Channel(feed) => (Some(feed.tx.clone()), Inputs::Channel(feed.rx.clone())),
            Source::Journal(journal) => {
                journal.shared.set_engine_snapshot(applied);
                let cursor = Cursor::new(journal.shared.clone(), applied);
                (None, Inputs::Journal(journal, Box::new(cursor)))
            }
        };
        let runner = Runner {
            engine,
            delivery,
            settings,
            stop: stop.clone(),
            buf: Vec::with_capacity(1024),
            appending: VecDeque::new(),
        };
        let thread = crate::background::spawn("attribution", move || runner.run(input))
            .map_err(StartError::Thread)?;
        Ok(EngineTask {
            state,
            stop,
            tx,
            thread: Some(thread),
        })
    }

    /// Processes everything pending, snapshots, and stops.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(tx) = &self.tx {
            let _ = tx.send(Command::Stop);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for EngineTask {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

enum Inputs {
    Channel(Receiver<Command>),
    Journal(Arc<Journal>, Box<Cursor>),
}

/// The engine thread.
struct Runner {
    engine: Engine,
    /// Where records go, like every other event.
    delivery: Arc<Delivery>,
    settings: Settings,
    stop: Arc<AtomicBool>,
    /// Reused for encoding records.
    buf: Vec<u8>,
    /// Records handed over whose outcome is not known yet; all are settled
    /// before a snapshot claims their inputs.
    appending: VecDeque<Receipt>,
}

impl Runner {
    fn publish(&mut self, record: &Attribution) {
        metric::attribution_record(record.result());
        self.buf.clear();
        record.encode(&mut self.buf);
        let hex = record.conversion.uid.map(|u| u.to_hex());
        let key = hex.as_ref().map_or(&b""[..], |h| h.as_str().as_bytes());
        let receipt = self.delivery.submit_encoded(
            EventType::Attribution,
            key,
            &self.buf,
            record.conversion.ts_ms,
        );
        self.appending.push_back(receipt.queue());
    }

    /// Counts the records whose outcome is known; with `wait`, waits for all.
    fn settle(&mut self, wait: bool) {
        while let Some(mut receipt) = self.appending.pop_front() {
            if wait {
                let _ = receipt.wait();
            } else if !receipt.try_settle() {
                self.appending.push_front(receipt);
                return;
            }
        }
    }

    fn snapshot(&mut self, applied: u64, journal: Option<&Journal>) {
        // The records of the inputs the snapshot covers must be written first.
        self.settle(true);
        let Some(dir) = &self.settings.data_dir else {
            return;
        };
        let started = Instant::now();
        match snapshot::save(&self.engine.state, applied, dir) {
            Ok(bytes) => {
                metric::attribution_snapshot_written(bytes);
                if let Some(j) = journal {
                    j.shared.set_engine_snapshot(applied);
                }
                tracing::debug!(
                    bytes,
                    ms = started.elapsed().as_millis() as u64,
                    "attribution snapshot written"
                );
            }
            Err(e) => warn!(error = %e, dir = %dir.display(), "attribution snapshot failed"),
        }
    }

    /// Applies the next records of the journal; waits (at most `wait`, or
    /// 100 ms) for more when it has caught up. True when it has caught up
    /// while stopping: the engine is finished.
    fn apply_journal(&mut self, j: &Journal, c: &mut Cursor, wait: Duration) -> bool {
        let stopping = self.stop.load(Ordering::Relaxed);
        let mut inputs = Vec::new();
        let caught_up = c.read_each(1024, |r| {
            // The delivery's compact input when it is there (a few ns); else
            // the event's JSON (a v1 journal).
            let input = if r.aux.is_empty() {
                r.headers
                    .kind()
                    .and_then(|k| Input::from_json(k, r.payload))
            } else {
                Input::decode(r.aux)
            };
            inputs.extend(input)
        }) == 0;
        for input in inputs {
            if let Some(out) = self.engine.apply(input) {
                self.publish(&out);
            }
        }
        self.settle(false);
        if caught_up && !stopping {
            j.shared
                .wait_for(c.next_seq(), wait.min(Duration::from_millis(100)));
        }
        caught_up && stopping
    }

    fn run(mut self, inputs: Inputs) {
        let mut next_sweep = Instant::now() + self.settings.sweep_interval;
        let mut next_snapshot = Instant::now() + self.settings.snapshot_interval;
        let (journal, mut cursor, rx) = match inputs {
            Inputs::Channel(rx) => (None, None, Some(rx)),
            Inputs::Journal(j, c) => (Some(j), Some(c), None),
        };
        // Inputs applied since the clock was last looked at: a busy channel
        // is drained without a syscall per input, yet the sweep and the
        // snapshot still come due however long the backlog lasts.
        let mut since_clock = 0u32;
        loop {
            let wait = next_sweep
                .min(next_snapshot)
                .saturating_duration_since(Instant::now());
            let mut finished = false;
            if let Some(rx) = &rx {
                match rx.recv_timeout(wait) {
                    Ok(Command::Apply(input)) => {
                        if let Some(record) = self.engine.apply(input) {
                            self.publish(&record);
                        }
                        if !clock_due(&mut since_clock, !rx.is_empty()) {
                            continue;
                        }
                        self.settle(false);
                    }
                    Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => finished = true,
                    Err(RecvTimeoutError::Timeout) => {}
                }
            }
            if let (Some(j), Some(c)) = (&journal, cursor.as_mut()) {
                finished |= self.apply_journal(j, c, wait);
            }
            let now = Instant::now();
            if now >= next_sweep {
                let dropped = self.engine.sweep(now_ms());
                if dropped > 0 {
                    tracing::debug!(dropped, "attribution sweep");
                }
                next_sweep = now + self.settings.sweep_interval;
            }
            if now >= next_snapshot || finished {
                self.snapshot(
                    cursor.as_ref().map_or(0, |c| c.next_seq()),
                    journal.as_deref(),
                );
                metric::attribution_state(self.engine.state.users(), self.engine.state.entries());
                next_snapshot = Instant::now() + self.settings.snapshot_interval;
            }
            if finished {
                break;
            }
        }
        info!(
            users = self.engine.state.users(),
            "attribution engine stopped"
        );
    }
}

/// Inputs applied from a busy channel between two looks at the clock.
const CLOCK_EVERY: u32 = 1024;

/// Whether the engine looks at the clock (sweep, snapshot) after this
/// input: when the channel is drained, and every [`CLOCK_EVERY`] inputs of
/// a backlog however long it lasts. Counting inputs, not the queue's
/// length: a steady backlog whose length never hits a round number must
/// not starve the sweep and the snapshot.
fn clock_due(since_clock: &mut u32, backlog: bool) -> bool {
    *since_clock += 1;
    if backlog && *since_clock < CLOCK_EVERY {
        return false;
    }
    *since_clock = 0;
    true
}
