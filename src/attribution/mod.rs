//! The attribution engine: credits every conversion to the user's latest
//! click or view inside the pixel's windows and publishes one record per
//! conversion.
//!
//! Handlers [`Feed::offer`] inputs over a bounded channel and never wait; one
//! engine thread owns all writes ([`Engine`]), and between inputs it sweeps
//! expired state and snapshots to `data_dir`.

pub mod record;
pub mod rules;
pub mod snapshot;
pub mod state;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use tokio::sync::oneshot::{self, error::TryRecvError};
use tracing::{info, warn};

pub use record::{Attribution, ConversionInput, OrderId};
pub use rules::{Credit, CreditKind, Decision, Reason};
pub use state::{Mark, State, TouchKind};

use crate::config::{Catalog, Repeat};
use crate::event::{Body, Event, EventType};
use crate::ids::{LineItemId, PixelId, UserId};
use crate::journal::{AppendError, Cursor, Journal};
use crate::sink::{Message, Sink, Topic};
use crate::telemetry::now_ms;

/// What the engine is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// An impression or click of a user with an id.
    Touch {
        uid: UserId,
        kind: TouchKind,
        line_item: LineItemId,
        mark: Mark,
    },
    /// A conversion, with or without an id.
    Conversion(ConversionInput),
}

impl Input {
    /// The engine's view of an event, if it needs one: impressions and clicks
    /// of users with an id, and every conversion; never a HEAD request (a
    /// link checker, not a browser) or a rate-limited one.
    pub fn from_event(event: &Event<'_>) -> Option<Input> {
        let c = &event.common;
        if c.warnings.contains("head_request") || c.warnings.contains("rate_limited") {
            return None;
        }
        let touch = |kind: TouchKind, line_item: LineItemId, mark: Mark| {
            c.uid.map(|uid| Input::Touch {
                uid,
                kind,
                line_item,
                mark,
            })
        };
        match &event.body {
            Body::Impression(t) => touch(
                TouchKind::View,
                t.line_item_id,
                Mark::new(c.event_id, t.tracker_id.0, t.publisher_id, t.placement_id),
            ),
            Body::Click(t) => touch(
                TouchKind::Click,
                t.line_item_id,
                Mark::new(c.event_id, t.tracker_id.0, t.publisher_id, t.placement_id),
            ),
            Body::Conversion(cv) => Some(Input::Conversion(ConversionInput {
                uid: c.uid,
                event_id: c.event_id,
                ts_ms: c.ts_ms,
                pixel: cv.pixel_id,
                advertiser: cv.advertiser_id,
                order_id: cv.order_id.as_deref().and_then(OrderId::new),
                value_micros: cv.value_micros,
            })),
            Body::Segment(_) | Body::Invalid(_) => None,
        }
    }
}

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

    /// Applies one input; a conversion yields its record.
    pub fn apply(&self, input: Input) -> Option<Attribution> {
        match input {
            Input::Touch {
                uid,
                kind,
                line_item,
                mark,
            } => {
                self.state.touch(uid, line_item, kind, mark);
                None
            }
            Input::Conversion(conversion) => Some(self.convert(conversion)),
        }
    }

    fn convert(&self, conversion: ConversionInput) -> Attribution {
        let Some(uid) = conversion.uid else {
            let decision = Decision {
                counted: true,
                credit: None,
                reason: Some(Reason::NoUid),
            };
            return Attribution {
                conversion,
                decision,
            };
        };
        let catalog = self.catalog.load();
        let pixel = catalog.conversion_pixels.get(&conversion.pixel);
        let last = self.state.last_counted(uid, conversion.pixel);
        let decision = self
            .state
            .with_touches(uid, |t| rules::decide(pixel, t, conversion.ts_ms, last));
        if decision.counted && pixel.is_some_and(|p| p.repeat != Repeat::All) {
            self.state
                .mark_counted(uid, conversion.pixel, conversion.ts_ms);
        }
        Attribution {
            conversion,
            decision,
        }
    }

    /// Drops what no pixel's window can reach any more.
    pub fn sweep(&self, now_ms: u64) -> usize {
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
        let dropped = self.state.sweep(now_ms, view, click, horizon);
        metrics::gauge!("attribution_users").set(self.state.users() as f64);
        metrics::gauge!("attribution_entries").set(self.state.entries() as f64);
        dropped
    }
}

/// The handlers' end of the channel.
pub struct Feed {
    /// Bounded: a full channel drops the input, never blocks a handler.
    tx: Sender<Command>,
    /// Inputs lost to a full channel since start.
    dropped: AtomicU64,
    /// When the last one was lost (ms), for readiness.
    last_drop_ms: AtomicU64,
}

enum Command {
    Apply(Input),
    Stop,
}

impl Feed {
    /// Hands `input` to the engine, or counts it as lost.
    pub fn offer(&self, input: Input) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.tx.try_send(Command::Apply(input))
        {
            metrics::counter!("attribution_dropped_total").increment(1);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.last_drop_ms.store(now_ms(), Ordering::Relaxed);
        }
    }

    /// Offers what the engine needs of `event`.
    pub fn offer_event(&self, event: &Event<'_>) {
        if let Some(input) = Input::from_event(event) {
            self.offer(input);
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
    pub channel_capacity: usize,
    /// Where the snapshot lives; None keeps state in memory only.
    pub data_dir: Option<PathBuf>,
    pub snapshot_interval: Duration,
    pub sweep_interval: Duration,
}

/// Where the engine's inputs come from, and where its records go.
pub enum Source {
    /// Offered by the handlers over the channel; records go to the sink.
    Channel,
    /// Read in order from the journal (from the snapshot's position, so a
    /// restart replays what the snapshot missed); records are appended to
    /// the journal and shipped with everything else.
    Journal(Arc<Journal>),
}

/// Owns the engine thread; stopping it (or dropping it) processes what is
/// pending, takes a final snapshot and joins the thread.
pub struct EngineTask {
    /// The handlers' end of the channel (channel source only).
    pub feed: Option<Arc<Feed>>,
    pub state: Arc<State>,
    /// Asks the thread to finish.
    stop: Arc<AtomicBool>,
    /// Wakes a channel-fed thread that is waiting.
    tx: Option<Sender<Command>>,
    thread: Option<JoinHandle<()>>,
}

impl EngineTask {
    /// Loads the snapshot (a bad one is reported and ignored) and starts the
    /// engine thread.
    pub fn start(
        catalog: Arc<ArcSwap<Catalog>>,
        sink: Arc<dyn Sink>,
        source: Source,
        settings: Settings,
    ) -> std::io::Result<EngineTask> {
        let state = Arc::new(State::default());
        let mut applied = 0;
        if let Some(dir) = &settings.data_dir {
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
                Err(e) => {
                    warn!(error = %e, path = %snapshot::path_in(dir).display(), "attribution snapshot ignored; starting empty")
                }
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let engine = Engine::new(state.clone(), catalog);
        let (feed, tx, input) = match source {
            Source::Channel => {
                let (tx, rx) = bounded(settings.channel_capacity.max(1));
                let feed = Arc::new(Feed {
                    tx: tx.clone(),
                    dropped: AtomicU64::new(0),
                    last_drop_ms: AtomicU64::new(0),
                });
                (Some(feed), Some(tx), Inputs::Channel(rx))
            }
            Source::Journal(journal) => {
                journal
                    .shared
                    .engine_snapshot
                    .store(applied, Ordering::Relaxed);
                let cursor = Cursor::new(journal.shared.clone(), applied);
                (None, None, Inputs::Journal(journal, Box::new(cursor)))
            }
        };
        let runner = Runner {
            engine,
            sink,
            settings,
            stop: stop.clone(),
            buf: Vec::with_capacity(1024),
            appending: VecDeque::new(),
        };
        let thread = crate::background::spawn("attribution", move || runner.run(input))?;
        Ok(EngineTask {
            feed,
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
    sink: Arc<dyn Sink>,
    settings: Settings,
    stop: Arc<AtomicBool>,
    /// Reused for encoding records.
    buf: Vec<u8>,
    /// Records handed to the journal whose group is not written yet; all are
    /// waited for before a snapshot claims their inputs.
    appending: VecDeque<oneshot::Receiver<Result<u64, AppendError>>>,
}

impl Runner {
    fn publish(&mut self, record: &Attribution, journal: Option<&Journal>) {
        self.buf.clear();
        record.encode(&mut self.buf);
        let hex = record.conversion.uid.map(|u| u.to_hex());
        let key = hex.as_ref().map_or(&b""[..], |h| h.as_str().as_bytes());
        let result = match journal {
            Some(j) => {
                let body = Journal::body(
                    Topic::Attributions,
                    EventType::Attribution,
                    key,
                    &self.buf,
                    None,
                );
                match j.append_queued(body, record.conversion.ts_ms) {
                    Ok(wait) => {
                        self.appending.push_back(wait);
                        return; // counted once written
                    }
                    Err(e) => Err(e.reason()),
                }
            }
            None => {
                let msg = Message {
                    topic: Topic::Attributions,
                    key,
                    kind: EventType::Attribution,
                    payload: &self.buf,
                };
                self.sink.publish(msg).map_err(|e| e.reason())
            }
        };
        count(result);
    }

    /// Counts the journal appends that are done; with `wait`, waits for all.
    fn settle(&mut self, wait: bool) {
        while let Some(mut pending) = self.appending.pop_front() {
            let outcome = match pending.try_recv() {
                Err(TryRecvError::Empty) if !wait => {
                    self.appending.push_front(pending);
                    return;
                }
                Err(TryRecvError::Empty) => pending.blocking_recv().ok(),
                done => done.ok(),
            };
            // A writer gone before answering kept nothing.
            let outcome = outcome.unwrap_or(Err(AppendError::Unavailable));
            count(outcome.map(|_| ()).map_err(|e| e.reason()));
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
                metrics::gauge!("attribution_snapshot_bytes").set(bytes as f64);
                if let Some(j) = journal {
                    j.shared.engine_snapshot.store(applied, Ordering::Relaxed);
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

    fn run(mut self, inputs: Inputs) {
        let mut next_sweep = Instant::now() + self.settings.sweep_interval;
        let mut next_snapshot = Instant::now() + self.settings.snapshot_interval;
        let (journal, mut cursor, rx) = match inputs {
            Inputs::Channel(rx) => (None, None, Some(rx)),
            Inputs::Journal(j, c) => (Some(j), Some(c), None),
        };
        loop {
            let wait = next_sweep
                .min(next_snapshot)
                .saturating_duration_since(Instant::now());
            let mut finished = false;
            if let Some(rx) = &rx {
                match rx.recv_timeout(wait) {
                    Ok(Command::Apply(input)) => {
                        if let Some(record) = self.engine.apply(input) {
                            self.publish(&record, None);
                        }
                        // Keep draining a busy channel; look at the clock now and then.
                        if rx.len() % 1024 != 0 {
                            continue;
                        }
                    }
                    Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => finished = true,
                    Err(RecvTimeoutError::Timeout) => {}
                }
            }
            if let (Some(j), Some(c)) = (&journal, cursor.as_mut()) {
                let stopping = self.stop.load(Ordering::Relaxed);
                let mut inputs = Vec::new();
                let caught_up = c.read_each(1024, |r| inputs.extend(r.input)) == 0;
                for input in inputs {
                    if let Some(out) = self.engine.apply(input) {
                        self.publish(&out, Some(j));
                    }
                }
                self.settle(false);
                if caught_up {
                    if stopping {
                        finished = true;
                    } else {
                        j.shared
                            .wait_for(c.next_seq, wait.min(Duration::from_millis(100)));
                    }
                }
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
                    cursor.as_ref().map_or(0, |c| c.next_seq),
                    journal.as_deref(),
                );
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

fn count(result: Result<(), &'static str>) {
    match result {
        Ok(()) => metrics::counter!("events_total", "type" => "attribution").increment(1),
        Err(reason) => metrics::counter!("events_dropped_total", "reason" => reason).increment(1),
    }
}
