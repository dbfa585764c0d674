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

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use tracing::{info, warn};

pub use record::{Attribution, ConversionInput, OrderId};
pub use rules::{Credit, CreditKind, Decision, Reason};
pub use state::{Mark, State, TouchKind};

use crate::config::{Catalog, Repeat};
use crate::event::{Body, Event, EventType};
use crate::ids::{LineItemId, PixelId, UserId};
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
    /// of users with an id, and every conversion.
    pub fn from_event(event: &Event<'_>) -> Option<Input> {
        let c = &event.common;
        match &event.body {
            Body::Impression(t) => c.uid.map(|uid| Input::Touch {
                uid,
                kind: TouchKind::View,
                line_item: t.line_item_id,
                mark: Mark::new(c.event_id, t.tracker_id.0, t.publisher_id, t.placement_id),
            }),
            Body::Click(t) => c.uid.map(|uid| Input::Touch {
                uid,
                kind: TouchKind::Click,
                line_item: t.line_item_id,
                mark: Mark::new(c.event_id, t.tracker_id.0, t.publisher_id, t.placement_id),
            }),
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
        if event.common.warnings.contains("head_request") {
            return;
        }
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

/// Owns the engine thread; stopping it (or dropping it) drains the channel,
/// takes a final snapshot and joins the thread.
pub struct EngineTask {
    pub feed: Arc<Feed>,
    pub state: Arc<State>,
    thread: Option<JoinHandle<()>>,
}

impl EngineTask {
    /// Loads the snapshot (a bad one is reported and ignored) and starts the
    /// engine thread.
    pub fn start(
        catalog: Arc<ArcSwap<Catalog>>,
        sink: Arc<dyn Sink>,
        settings: Settings,
    ) -> std::io::Result<EngineTask> {
        let state = Arc::new(State::default());
        if let Some(dir) = &settings.data_dir {
            match snapshot::load(&state, dir) {
                Ok(true) => info!(
                    users = state.users(),
                    "attribution state restored from snapshot"
                ),
                Ok(false) => {
                    info!(path = %snapshot::path_in(dir).display(), "no attribution snapshot yet; starting empty")
                }
                Err(e) => {
                    warn!(error = %e, path = %snapshot::path_in(dir).display(), "attribution snapshot ignored; starting empty")
                }
            }
        }
        let (tx, rx) = bounded(settings.channel_capacity.max(1));
        let feed = Arc::new(Feed {
            tx,
            dropped: AtomicU64::new(0),
            last_drop_ms: AtomicU64::new(0),
        });
        let engine = Engine::new(state.clone(), catalog);
        let thread = std::thread::Builder::new()
            .name("attribution".into())
            .spawn(move || run(engine, rx, sink, settings))?;
        Ok(EngineTask {
            feed,
            state,
            thread: Some(thread),
        })
    }

    /// Processes everything offered so far, snapshots, and stops.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = self.feed.tx.send(Command::Stop);
            let _ = thread.join();
        }
    }
}

impl Drop for EngineTask {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

fn publish(sink: &dyn Sink, record: &Attribution, buf: &mut Vec<u8>) {
    buf.clear();
    record.encode(buf);
    let hex = record.conversion.uid.map(|u| u.to_hex());
    let key = hex.as_ref().map_or(&b""[..], |h| h.as_str().as_bytes());
    let msg = Message {
        topic: Topic::Attributions,
        key,
        kind: EventType::Attribution,
        payload: buf,
    };
    match sink.publish(msg) {
        Ok(()) => metrics::counter!("events_total", "type" => "attribution").increment(1),
        Err(e) => metrics::counter!("events_dropped_total", "reason" => e.reason()).increment(1),
    }
}

fn snapshot_now(engine: &Engine, dir: &Option<PathBuf>) {
    if let Some(dir) = dir {
        let started = Instant::now();
        match snapshot::save(&engine.state, dir) {
            Ok(bytes) => {
                metrics::gauge!("attribution_snapshot_bytes").set(bytes as f64);
                tracing::debug!(
                    bytes,
                    ms = started.elapsed().as_millis() as u64,
                    "attribution snapshot written"
                );
            }
            Err(e) => warn!(error = %e, dir = %dir.display(), "attribution snapshot failed"),
        }
    }
}

fn run(engine: Engine, rx: Receiver<Command>, sink: Arc<dyn Sink>, settings: Settings) {
    let mut buf = Vec::with_capacity(1024);
    let mut next_sweep = Instant::now() + settings.sweep_interval;
    let mut next_snapshot = Instant::now() + settings.snapshot_interval;
    loop {
        let wait = next_sweep
            .min(next_snapshot)
            .saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(Command::Apply(input)) => {
                if let Some(record) = engine.apply(input) {
                    publish(sink.as_ref(), &record, &mut buf);
                }
                // Keep draining a busy channel; look at the clock now and then.
                if rx.len() % 1024 != 0 {
                    continue;
                }
            }
            Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {}
        }
        let now = Instant::now();
        if now >= next_sweep {
            let dropped = engine.sweep(now_ms());
            if dropped > 0 {
                tracing::debug!(dropped, "attribution sweep");
            }
            next_sweep = now + settings.sweep_interval;
        }
        if now >= next_snapshot {
            snapshot_now(&engine, &settings.data_dir);
            next_snapshot = Instant::now() + settings.snapshot_interval;
        }
    }
    engine.sweep(now_ms());
    snapshot_now(&engine, &settings.data_dir);
    info!(users = engine.state.users(), "attribution engine stopped");
}
