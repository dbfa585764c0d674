//! The delivery boundary: the one place that knows whether events go to the
//! journal (then Kafka) or straight to the Kafka producer, and that counts
//! what became of each. Callers hand it an event and wait on the
//! [`Receipt`]; when that resolves, the event is as safe as
//! `journal.durability` promises (on disk, fsynced, or queued in memory).
//!
//! ```text
//! http / attribution ──submit──▶ Delivery ──▶ Journal ──shipper──▶ Kafka
//!                                    └──────▶ Sink (memory mode) ─▶ Kafka
//! ```

use std::cell::RefCell;
use std::sync::Arc;

use tokio::sync::oneshot::{self, error::TryRecvError};

use crate::event::input::{OrderId, PartitionKey};
use crate::event::{encode, AttributionInput, Body, Event, EventType};
use crate::journal::frame::encode_body;
use crate::journal::lane::{self, LaneGuard, Ticket};
use crate::journal::{AppendError, Journal, TryAppend};
use crate::sink::headers::EventHeaders;
use crate::sink::{Message, Sink, SinkError, Topic};
use crate::telemetry::metric;

/// Hears every event delivered in memory mode (the in-process attribution
/// engine's channel); with a journal the engine reads the journal instead.
pub trait Tap: Send + Sync {
    /// Never blocks: a full tap drops and counts.
    fn offer(&self, input: AttributionInput);
    /// False while the tap is losing inputs.
    fn healthy(&self) -> bool;
}

/// Where events go.
pub struct Delivery {
    /// The journal, unless `durability = memory`.
    journal: Option<Arc<Journal>>,
    /// Kafka: where events go in memory mode; in journal mode only asked
    /// whether the broker is reachable (readiness).
    sink: Arc<dyn Sink>,
    /// The in-process engine's input in memory mode.
    tap: Option<Arc<dyn Tap>>,
    /// The attribution engine reads the journal: each record carries the
    /// engine's input as aux bytes (none is written when nobody reads it).
    journal_inputs: bool,
    /// Cluster mode: each message carries the engine's input as its
    /// `pixeld-input` header, for the members ([`crate::sink::headers`]).
    input_header: bool,
}

thread_local! {
    /// Reused per thread, so encoding allocates only while it grows.
    static BUFFER: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(1024));
}

/// Why an answered event was not kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    Journal(AppendError),
    Sink(SinkError),
}

impl Dropped {
    /// The `reason` label of `events_dropped_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Dropped::Journal(e) => e.reason(),
            Dropped::Sink(e) => e.reason(),
        }
    }
}

impl Delivery {
    /// Through the journal (its shipper produces to Kafka); `engine_reads`
    /// when the attribution engine reads it.
    pub fn journal(journal: Arc<Journal>, sink: Arc<dyn Sink>, engine_reads: bool) -> Delivery {
        Delivery {
            journal: Some(journal),
            sink,
            tap: None,
            journal_inputs: engine_reads,
            input_header: false,
        }
    }

    /// Straight to the sink (`durability = memory`), with an optional tap.
    pub fn direct(sink: Arc<dyn Sink>, tap: Option<Arc<dyn Tap>>) -> Delivery {
        Delivery {
            journal: None,
            sink,
            tap,
            journal_inputs: false,
            input_header: false,
        }
    }

    /// Every message also carries the engine's input as a header (cluster
    /// mode: the members read it instead of the JSON).
    pub fn with_input_header(mut self) -> Delivery {
        self.input_header = true;
        self
    }

    /// Encodes `event` and starts delivering it. The receipt must be
    /// settled (that is where the outcome is counted).
    pub fn submit(&self, event: &Event<'_>) -> Receipt {
        let kind = event.kind();
        let key = PartitionKey::of(event);
        // Derived only when someone reads it.
        let input = (self.journal_inputs || self.tap.is_some() || self.input_header)
            .then(|| AttributionInput::from_event(event))
            .flatten();
        let receipt = BUFFER.with(|buf| {
            let mut buf = buf.borrow_mut();
            buf.clear();
            encode(event, &mut buf);
            let payload_len = buf.len();
            // With a journal, the engine's input rides along as the record's
            // aux bytes, or as a header for the members: either way its
            // reader skips the JSON. An empty header says "nothing for the
            // engine".
            if let (true, Some(input)) = (self.journal_inputs || self.input_header, &input) {
                input.encode(&mut buf);
            }
            let (payload, extra) = buf.split_at(payload_len);
            let (aux, header) = if self.input_header {
                (&[][..], Some(extra))
            } else {
                (extra, None)
            };
            let topic = Topic::for_event(kind);
            let ts_ms = event.common.ts_ms;
            let receipt = key
                .with_bytes(|key| self.submit_with(topic, kind, key, payload, aux, header, ts_ms));
            match self.order_copy(event) {
                Some(order) => receipt.with_companion(order.with_bytes(|key| {
                    self.submit_with(Topic::Orders, kind, key, payload, aux, header, ts_ms)
                })),
                None => receipt,
            }
        });
        if let (Some(tap), None, Some(input)) = (&self.tap, &self.journal, input) {
            tap.offer(input);
        }
        receipt
    }

    /// In cluster mode a conversion with an order id goes a second time to
    /// the orders topic, keyed by its order: the member owning that key
    /// learns whose order it is, for adjustments that name the order alone.
    fn order_copy(&self, event: &Event<'_>) -> Option<PartitionKey> {
        let Body::Conversion(c) = &event.body else {
            return None;
        };
        if !self.input_header {
            return None;
        }
        let order = OrderId::new(c.order_id.as_deref()?)?;
        Some(PartitionKey::order(c.pixel_id, &order))
    }

    /// Starts delivering an already encoded message of type `kind` (the
    /// attribution engine's records).
    pub fn submit_encoded(
        &self,
        kind: EventType,
        key: &[u8],
        payload: &[u8],
        ts_ms: u64,
    ) -> Receipt {
        self.submit_with(Topic::for_event(kind), kind, key, payload, &[], None, ts_ms)
    }

    #[allow(clippy::too_many_arguments)]
    fn submit_with(
        &self,
        topic: Topic,
        kind: EventType,
        key: &[u8],
        payload: &[u8],
        aux: &[u8],
        input_header: Option<&[u8]>,
        ts_ms: u64,
    ) -> Receipt {
        let state = match &self.journal {
            Some(journal) => {
                let headers = EventHeaders::new(kind, input_header);
                // A serving thread's own lane: no handoff, no allocation.
                let encode = |out: &mut Vec<u8>| {
                    encode_body(out, topic, headers.as_slice(), key, payload, aux)
                };
                match lane::try_append(journal, ts_ms, encode) {
                    Some(Ok(ticket)) => State::Lane(ticket, std::time::Instant::now()),
                    Some(Err(e)) => State::Done(Err(Dropped::Journal(e))),
                    None => {
                        let body = Journal::body(topic, headers.as_slice(), key, payload, aux);
                        to_writer(journal, body, ts_ms)
                    }
                }
            }
            None => {
                let msg = Message {
                    topic,
                    key,
                    kind,
                    payload,
                    input: input_header,
                };
                State::Done(self.sink.publish(msg).map_err(Dropped::Sink))
            }
        };
        Receipt {
            kind,
            state,
            companion: None,
        }
    }

    /// Gives the calling serving thread its own lane into the journal (see
    /// [`crate::journal::lane`]), kept until the guard is dropped; None in
    /// `memory` and `fsync` durability.
    pub fn open_lane(&self) -> Option<LaneGuard> {
        self.journal.as_ref().and_then(lane::open)
    }

    /// Why pixeld should not get traffic now, if it should not (the
    /// `/readyz` body).
    pub fn not_ready(&self) -> Option<&'static str> {
        if self.journal.as_ref().is_some_and(|j| !j.shared.has_room()) {
            return Some(
                "not ready: the journal is full (journal.max_bytes); events are answered but not kept\n",
            );
        }
        if !self.sink.is_ready() {
            return Some("not ready: kafka not reachable yet\n");
        }
        if self.tap.as_ref().is_some_and(|t| !t.healthy()) {
            return Some(
                "not ready: the attribution engine is dropping inputs (attribution_dropped_total)\n",
            );
        }
        None
    }
}

/// Hands `body` to the journal's writer thread. Queued at once when the
/// writer's queue has room, so the receipt holds no reference on the shared
/// journal.
fn to_writer(journal: &Arc<Journal>, body: Vec<u8>, ts_ms: u64) -> State {
    match journal.try_append(body, ts_ms) {
        Ok(rx) => State::Queued(rx, std::time::Instant::now()),
        Err(TryAppend::Busy(body)) => State::Unsent {
            journal: journal.clone(),
            body,
            ts_ms,
        },
        Err(TryAppend::Closed) => State::Done(Err(Dropped::Journal(AppendError::Unavailable))),
    }
}

/// An event on its way. Its outcome is counted exactly once, when it is
/// settled (`events_total` or `events_dropped_total{reason}`).
#[must_use = "a receipt counts its event only when settled"]
pub struct Receipt {
    kind: EventType,
    state: State,
    /// A second message of the same event (the orders topic's copy of a
    /// conversion): the event is safe only when both are, and counted once.
    companion: Option<Box<State>>,
}

enum State {
    /// Known already (memory mode).
    Done(Result<(), Dropped>),
    /// For the journal, not handed over yet.
    Unsent {
        journal: Arc<Journal>,
        body: Vec<u8>,
        ts_ms: u64,
    },
    /// In this serving thread's lane (since that instant); answered when
    /// the lane writes its group.
    Lane(Ticket, std::time::Instant),
    /// Queued to the journal's writer (at that instant); answered when its
    /// group is written.
    Queued(
        oneshot::Receiver<Result<u64, AppendError>>,
        std::time::Instant,
    ),
    /// Counted.
    Settled,
}

impl State {
    /// The outcome, waiting asynchronously; None once taken.
    async fn settled(&mut self) -> Option<Result<(), Dropped>> {
        Some(match std::mem::replace(self, State::Settled) {
            State::Done(r) => r,
            State::Unsent {
                journal,
                body,
                ts_ms,
            } => {
                let started = std::time::Instant::now();
                let r = appended::<()>(Ok(journal.append(body, ts_ms).await));
                metric::journal_appended(started.elapsed().as_secs_f64());
                r
            }
            State::Queued(rx, since) => {
                let r = appended(rx.await);
                metric::journal_appended(since.elapsed().as_secs_f64());
                r
            }
            State::Lane(mut ticket, since) => {
                let r = ticket.outcome().await;
                metric::journal_appended(since.elapsed().as_secs_f64());
                appended::<()>(Ok(r))
            }
            State::Settled => return None,
        })
    }

    /// Hands an unsent body to the journal's writer.
    fn enqueue(&mut self) {
        if !matches!(self, State::Unsent { .. }) {
            return;
        }
        if let State::Unsent {
            journal,
            body,
            ts_ms,
        } = std::mem::replace(self, State::Settled)
        {
            *self = match journal.append_queued(body, ts_ms) {
                Ok(rx) => State::Queued(rx, std::time::Instant::now()),
                Err(e) => State::Done(Err(Dropped::Journal(e))),
            };
        }
    }

    /// The outcome if known (taken), `Err(())` while it is not.
    fn try_outcome(&mut self) -> Result<Option<Result<(), Dropped>>, ()> {
        self.enqueue();
        let outcome = match self {
            State::Done(r) => *r,
            State::Queued(rx, _) => match rx.try_recv() {
                Err(TryRecvError::Empty) => return Err(()),
                answer => appended(answer),
            },
            State::Lane(ticket, _) => match ticket.try_outcome() {
                None => return Err(()),
                Some(r) => appended::<()>(Ok(r)),
            },
            State::Unsent { .. } | State::Settled => return Ok(None),
        };
        *self = State::Settled;
        Ok(Some(outcome))
    }

    /// Blocks this (non-runtime) thread for the outcome; None once taken.
    fn wait(&mut self) -> Option<Result<(), Dropped>> {
        self.enqueue();
        match std::mem::replace(self, State::Settled) {
            State::Done(r) => Some(r),
            State::Queued(rx, _) => Some(appended(rx.blocking_recv())),
            State::Lane(ticket, _) => Some(appended::<()>(Ok(ticket.wait()))),
            State::Unsent { .. } | State::Settled => None,
        }
    }
}

impl Receipt {
    fn with_companion(mut self, other: Receipt) -> Receipt {
        self.companion = Some(Box::new(other.into_state()));
        self
    }

    fn into_state(mut self) -> State {
        std::mem::replace(&mut self.state, State::Settled)
    }

    /// Waits (asynchronously) until the event is as safe as promised.
    pub async fn settled(mut self) -> Result<(), Dropped> {
        let companion = match self.companion.as_mut() {
            Some(c) => c.settled().await,
            None => None,
        };
        match self.state.settled().await {
            Some(outcome) => self.counted(outcome, companion),
            None => Ok(()),
        }
    }

    /// The event's outcome (its companion's failure included), counted.
    fn counted(
        &self,
        outcome: Result<(), Dropped>,
        companion: Option<Result<(), Dropped>>,
    ) -> Result<(), Dropped> {
        let outcome = outcome.and(companion.unwrap_or(Ok(())));
        count(self.kind, outcome);
        outcome
    }

    /// For threads outside the runtime: hands the event to the journal's
    /// writer without waiting for its group (waiting per record would cost
    /// two context switches each). Settle later with [`Receipt::try_settle`]
    /// or [`Receipt::wait`].
    pub fn queue(mut self) -> Receipt {
        self.state.enqueue();
        if let Some(c) = self.companion.as_mut() {
            c.enqueue();
        }
        self
    }

    /// Counts the outcome if it is known; false while it is not.
    pub fn try_settle(&mut self) -> bool {
        // Handed over at once, even while the companion is still pending.
        self.state.enqueue();
        let companion = match self.companion.as_mut().map(|c| c.try_outcome()) {
            Some(Err(())) => return false,
            Some(Ok(outcome)) => outcome,
            None => None,
        };
        match self.state.try_outcome() {
            Err(()) => {
                // Known later: keep the companion's answer for then.
                if let Some(outcome) = companion {
                    self.companion = Some(Box::new(State::Done(outcome)));
                }
                false
            }
            Ok(Some(outcome)) => {
                let _ = self.counted(outcome, companion);
                true
            }
            Ok(None) => true,
        }
    }

    /// Blocks this (non-runtime) thread until the outcome is known, and
    /// counts it.
    pub fn wait(mut self) -> Result<(), Dropped> {
        let companion = self.companion.as_mut().and_then(|c| c.wait());
        match self.state.wait() {
            Some(outcome) => self.counted(outcome, companion),
            None => Ok(()),
        }
    }
}

/// What the journal writer's answer means for the event; a writer gone
/// before answering kept nothing.
fn appended<E>(answer: Result<Result<u64, AppendError>, E>) -> Result<(), Dropped> {
    answer
        .unwrap_or(Err(AppendError::Unavailable))
        .map(drop)
        .map_err(Dropped::Journal)
}

fn count(kind: EventType, outcome: Result<(), Dropped>) {
    match outcome {
        Ok(()) => metric::event_delivered(kind),
        Err(e) => metric::event_dropped(e.reason()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Cursor, Settings};
    use crate::sink::memory::MemorySink;

    fn journal(dir: &std::path::Path, max_bytes: u64) -> Arc<Journal> {
        Arc::new(
            Journal::open(&Settings {
                dir: dir.to_path_buf(),
                fsync: false,
                max_bytes,
                segment_bytes: 1 << 20,
            })
            .unwrap(),
        )
    }

    #[test]
    fn journal_mode_writes_the_message_as_it_will_be_produced() {
        let dir = tempfile::tempdir().unwrap();
        let j = journal(dir.path(), 1 << 30);
        let sink = Arc::new(MemorySink::default());
        let d = Delivery::journal(j.clone(), sink.clone(), true);
        d.submit_encoded(EventType::Click, b"k", b"{}", 5)
            .wait()
            .unwrap();
        assert!(sink.take().is_empty(), "nothing goes to the sink directly");
        let mut c = Cursor::new(j.shared.clone(), 0);
        let mut seen = Vec::new();
        c.read_each(10, |r| {
            seen.push((r.topic, r.headers.kind(), r.key.to_vec(), r.ts_ms))
        });
        assert_eq!(
            seen,
            [(Topic::Clicks, Some(EventType::Click), b"k".to_vec(), 5)]
        );
    }

    #[test]
    fn a_refused_append_is_reported_once_per_event() {
        let dir = tempfile::tempdir().unwrap();
        let j = journal(dir.path(), 1);
        let d = Delivery::journal(j, Arc::new(MemorySink::default()), true);
        let mut receipts: Vec<Receipt> = (0..3)
            .map(|_| d.submit_encoded(EventType::Click, b"", b"{}", 1).queue())
            .collect();
        let mut outcomes = Vec::new();
        for r in receipts.drain(..) {
            outcomes.push(r.wait());
        }
        assert_eq!(
            outcomes,
            vec![Err(Dropped::Journal(AppendError::Full)); 3],
            "each refused event once, with its own reason"
        );
    }

    /// Cluster mode: a conversion with an order id goes to the
    /// conversions (keyed by user) and again to the orders topic (keyed by
    /// its order), counted once; an adjustment naming its order alone is
    /// keyed by that order too, so both meet on one partition. Without
    /// cluster mode there is no copy.
    #[test]
    fn cluster_mode_copies_orders_to_the_orders_topic_keyed_like_their_adjustments() {
        use crate::event::input::tests::common;
        use crate::event::{Adjustment, AdjustmentKind, Conversion, ConversionSource, Warnings};
        use crate::ids::{AdvertiserId, PixelId, UserId};
        let conversion = |order: Option<&'static str>| Conversion {
            pixel_id: PixelId(7313),
            advertiser_id: AdvertiserId(1),
            order_id: order.map(Into::into),
            value_micros: None,
            other: None,
            segments_added: vec![],
            segments_removed: vec![],
            redir: None,
            click: None,
            source: ConversionSource::Browser,
        };
        let sale = |order| Event {
            common: common(Some(UserId(7)), Warnings::default()),
            body: Body::Conversion(conversion(order)),
        };
        let refund = Event {
            common: common(None, Warnings::default()),
            body: Body::Adjustment(Adjustment {
                kind: AdjustmentKind::Retract,
                conversion: conversion(Some("A1")),
            }),
        };
        let order_key = PartitionKey::Order {
            pixel: PixelId(7313),
            order: OrderId::new("A1").unwrap().fingerprint(),
        }
        .with_bytes(<[u8]>::to_vec);
        assert!(order_key.starts_with(b"o7313-"), "{order_key:?}");
        let user_key = UserId(7).to_hex().as_str().as_bytes().to_vec();

        let sink = Arc::new(MemorySink::default());
        let cluster = Delivery::direct(sink.clone(), None).with_input_header();
        for e in [&sale(Some("A1")), &sale(None), &refund] {
            assert_eq!(cluster.submit(e).wait(), Ok(()));
        }
        let seen: Vec<(Topic, Vec<u8>)> =
            sink.take().into_iter().map(|r| (r.topic, r.key)).collect();
        assert_eq!(
            seen,
            [
                (Topic::Conversions, user_key.clone()),
                (Topic::Orders, order_key.clone()),
                (Topic::Conversions, user_key.clone()),
                (Topic::Adjustments, order_key),
            ]
        );
        let plain = Delivery::direct(sink.clone(), None);
        assert_eq!(plain.submit(&sale(Some("A1"))).wait(), Ok(()));
        assert_eq!(sink.take().len(), 1, "no copy outside cluster mode");
        assert_eq!(
            PartitionKey::parse_order(b"o7313-00000000000000ff"),
            Some((PixelId(7313), 0xff))
        );
        assert_eq!(PartitionKey::parse_order(&user_key), None);
    }

    /// Cluster mode: the member reads the engine's input from the
    /// `pixeld-input` header, in both durabilities; an event that is
    /// nothing to the engine carries the header empty, and the in-process
    /// modes carry none.
    #[test]
    fn cluster_mode_sends_the_engine_s_input_as_a_header() {
        use crate::event::input::tests::{common, touch};
        use crate::event::{Body, Warnings};
        use crate::ids::{TrackerId, UserId};
        use crate::sink::headers::INPUT;
        let event = |uid| Event {
            common: common(uid, Warnings::default()),
            body: Body::Impression(touch(TrackerId(2766), None)),
        };
        let known = event(Some(UserId(7)));
        let mut expected = Vec::new();
        AttributionInput::from_event(&known)
            .unwrap()
            .encode(&mut expected);
        let anonymous = event(None);

        let sink = Arc::new(MemorySink::default());
        let direct = Delivery::direct(sink.clone(), None).with_input_header();
        for e in [&known, &anonymous] {
            assert_eq!(direct.submit(e).wait(), Ok(()));
        }
        let inputs: Vec<Option<Vec<u8>>> = sink.take().into_iter().map(|r| r.input).collect();
        assert_eq!(inputs, [Some(expected.clone()), Some(vec![])]);

        let dir = tempfile::tempdir().unwrap();
        let j = journal(dir.path(), 1 << 30);
        let journaled = Delivery::journal(j.clone(), sink.clone(), false).with_input_header();
        let plain = Delivery::journal(j.clone(), sink, false);
        for d in [&journaled, &plain] {
            assert_eq!(d.submit(&known).wait(), Ok(()));
        }
        let mut c = Cursor::new(j.shared.clone(), 0);
        let mut seen = Vec::new();
        c.read_each(10, |r| {
            let header = r.headers.iter().find(|(name, _)| *name == INPUT);
            seen.push((header.map(|(_, v)| v.to_vec()), r.aux.is_empty()));
        });
        assert_eq!(seen, [(Some(expected), true), (None, true)]);
    }
}
