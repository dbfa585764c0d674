//! A serving thread's own way into the journal: no handoff, no wake-up from
//! another thread, no allocation per record once warm.
//!
//! A request's record body is encoded straight into its thread's lane (one
//! buffer, reused). The lane's flusher, a task on the same thread's
//! runtime, runs once the tasks ready at that moment have run (so a group
//! is every record its thread produced meanwhile), writes the whole group
//! to the lane's own stream of segments (one `write`, no lock: only the
//! numbering is shared, taken twice per group) and marks each record's
//! slot with its outcome, waking the request that waits on it, on this
//! same thread. A [`Ticket`] is the request's claim on its slot: plain
//! numbers, valid only on the thread that issued it.
//!
//! Only in `journal` durability: in `fsync` mode the writer thread waits
//! for the disk instead ([`Journal::lanes_allowed`]).

use std::cell::RefCell;
use std::future::poll_fn;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use super::writer::Core;
use super::{AppendError, Journal};

/// Lanes opened in this process: a ticket names its lane, so that one
/// outliving it (or polled on another thread) is told so, never handed
/// another lane's slot.
static LANES: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's lane, while a serving thread runs.
    static LANE: RefCell<Option<Lane>> = const { RefCell::new(None) };
}

type Outcome = Result<u64, AppendError>;

enum Slot {
    Free,
    /// Appended, not written yet; the request waiting on it, once polled.
    Pending(Option<Waker>),
    Written(Outcome),
    /// Its request went away before the outcome: freed when written.
    Abandoned,
}

/// A record waiting in the lane: where its body is in the buffer.
struct Pending {
    slot: u32,
    at: usize,
    len: usize,
    ts_ms: u64,
}

struct Lane {
    id: u64,
    journal: Arc<Journal>,
    /// The lane's own stream.
    core: Core,
    /// The bodies of the records not written yet, back to back.
    bodies: Vec<u8>,
    pending: Vec<Pending>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    results: Vec<Outcome>,
    /// The flusher, waiting for a first record.
    flusher: Option<Waker>,
}

/// A request's claim on its record's outcome.
#[derive(Debug)]
pub struct Ticket {
    lane: u64,
    slot: u32,
}

/// Removes the thread's lane when the serving thread ends, after writing
/// what it still holds.
pub struct LaneGuard(u64);

impl Drop for LaneGuard {
    fn drop(&mut self) {
        flush(self.0);
        let _ = LANE.try_with(|l| {
            if let Ok(mut l) = l.try_borrow_mut() {
                if l.as_ref().is_some_and(|lane| lane.id == self.0) {
                    *l = None;
                }
            }
        });
    }
}

/// Gives this thread a lane into `journal` and starts its flusher on the
/// current runtime (which must be this thread's own current-thread
/// runtime: the flusher must run here). None when the journal allows no
/// lanes.
pub fn open(journal: &Arc<Journal>) -> Option<LaneGuard> {
    if !journal.lanes_allowed() {
        return None;
    }
    let id = LANES.fetch_add(1, Ordering::Relaxed);
    let lane = Lane {
        id,
        core: journal.new_core(),
        journal: journal.clone(),
        bodies: Vec::with_capacity(1 << 16),
        pending: Vec::with_capacity(256),
        slots: Vec::with_capacity(256),
        free: Vec::with_capacity(256),
        results: Vec::with_capacity(256),
        flusher: None,
    };
    LANE.with(|l| *l.borrow_mut() = Some(lane));
    tokio::spawn(flusher(id));
    Some(LaneGuard(id))
}

/// Appends a record whose body `encode` writes, when this thread has a lane
/// into `journal`; None when it has not (the caller uses the writer
/// thread).
pub fn try_append(
    journal: &Arc<Journal>,
    ts_ms: u64,
    encode: impl FnOnce(&mut Vec<u8>),
) -> Option<Result<Ticket, AppendError>> {
    LANE.try_with(|l| {
        let mut l = l.try_borrow_mut().ok()?;
        let lane = l
            .as_mut()
            .filter(|lane| Arc::ptr_eq(&lane.journal, journal))?;
        if journal.is_stopped() {
            return Some(Err(AppendError::Unavailable));
        }
        Some(Ok(lane.append(ts_ms, encode)))
    })
    .ok()
    .flatten()
}

impl Lane {
    fn append(&mut self, ts_ms: u64, encode: impl FnOnce(&mut Vec<u8>)) -> Ticket {
        let at = self.bodies.len();
        encode(&mut self.bodies);
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = Slot::Pending(None);
                s
            }
            None => {
                self.slots.push(Slot::Pending(None));
                (self.slots.len() - 1) as u32
            }
        };
        self.pending.push(Pending {
            slot,
            at,
            len: self.bodies.len() - at,
            ts_ms,
        });
        if self.pending.len() == 1 {
            if let Some(w) = self.flusher.take() {
                w.wake();
            }
        }
        Ticket {
            lane: self.id,
            slot,
        }
    }

    /// Writes the pending records as one group and marks their slots.
    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        self.results.clear();
        let bodies = &self.bodies;
        let entries = self
            .pending
            .iter()
            .map(|p| (&bodies[p.at..p.at + p.len], p.ts_ms));
        self.core.write_group(entries, &mut self.results);
        for (p, r) in self.pending.drain(..).zip(self.results.drain(..)) {
            let slot = &mut self.slots[p.slot as usize];
            match std::mem::replace(slot, Slot::Written(r)) {
                Slot::Pending(waker) => {
                    if let Some(w) = waker {
                        w.wake();
                    }
                }
                _ => {
                    *slot = Slot::Free;
                    self.free.push(p.slot);
                }
            }
        }
        self.bodies.clear();
    }

    /// The slot's outcome if written (the slot is then freed); else waits
    /// with `waker`.
    fn take(&mut self, slot: u32, waker: Option<&Waker>) -> Option<Outcome> {
        // A slot this lane never gave (a consumed ticket asked again) has
        // no outcome coming: say so rather than wait forever.
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return Some(Err(AppendError::Unavailable));
        };
        match s {
            Slot::Written(r) => {
                let r = *r;
                *s = Slot::Free;
                self.free.push(slot);
                Some(r)
            }
            Slot::Pending(w) => {
                if let Some(waker) = waker {
                    match w {
                        Some(old) if old.will_wake(waker) => {}
                        _ => *w = Some(waker.clone()),
                    }
                }
                None
            }
            Slot::Free | Slot::Abandoned => Some(Err(AppendError::Unavailable)),
        }
    }
}

/// Runs `f` on this thread's lane if it is lane `id`.
/// What [`with_lane`] found.
enum Found<T> {
    Lane(T),
    /// This thread has no lane `id` (it ended, or this is another thread).
    Gone,
    /// The lane is in use further up this thread's stack (never expected:
    /// nothing the lane calls comes back into it).
    Busy,
}

/// Runs `f` on this thread's lane if it is lane `id`. Never panics: at
/// thread exit there is no lane, and a lane already borrowed is `Busy`.
fn find_lane<T>(id: u64, f: impl FnOnce(&mut Lane) -> T) -> Found<T> {
    LANE.try_with(|l| match l.try_borrow_mut() {
        Ok(mut l) => match l.as_mut().filter(|lane| lane.id == id) {
            Some(lane) => Found::Lane(f(lane)),
            None => Found::Gone,
        },
        Err(_) => Found::Busy,
    })
    .unwrap_or(Found::Gone)
}

fn with_lane<T>(id: u64, f: impl FnOnce(&mut Lane) -> T) -> Option<T> {
    match find_lane(id, f) {
        Found::Lane(t) => Some(t),
        Found::Gone | Found::Busy => None,
    }
}

fn flush(id: u64) {
    with_lane(id, Lane::flush);
}

/// The lane's flusher: once a record waits, lets the other ready tasks run
/// (they add theirs to the group), then writes the group.
async fn flusher(id: u64) {
    loop {
        let open = poll_fn(|cx| {
            let ready = find_lane(id, |lane| {
                if lane.pending.is_empty() {
                    lane.flusher = Some(cx.waker().clone());
                    false
                } else {
                    true
                }
            });
            match ready {
                Found::Lane(false) => Poll::Pending,
                Found::Lane(true) => Poll::Ready(true),
                Found::Gone => Poll::Ready(false),
                // Never give up the lane's flusher: its requests would wait
                // for good. Asked again at once.
                Found::Busy => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
            }
        })
        .await;
        if !open {
            return;
        }
        tokio::task::yield_now().await;
        flush(id);
    }
}

impl Ticket {
    /// The record's outcome once its group is written.
    pub fn poll_outcome(&mut self, cx: &mut Context<'_>) -> Poll<Outcome> {
        match find_lane(self.lane, |lane| lane.take(self.slot, Some(cx.waker()))) {
            Found::Lane(None) => Poll::Pending,
            Found::Lane(Some(r)) => {
                self.slot = u32::MAX;
                Poll::Ready(r)
            }
            Found::Busy => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            // Not this thread's lane: a receipt moved off its serving
            // thread, which nothing does (the serving thread's runtime runs
            // every task it spawns). Its outcome cannot be learnt here;
            // counted as unavailable, never waited for in vain.
            Found::Gone => {
                debug_assert!(false, "a journal lane's ticket polled off its thread");
                Poll::Ready(Err(AppendError::Unavailable))
            }
        }
    }

    /// Waits for the record's outcome (see [`Ticket::poll_outcome`]).
    pub async fn outcome(&mut self) -> Outcome {
        poll_fn(|cx| self.poll_outcome(cx)).await
    }

    /// The outcome if known.
    pub fn try_outcome(&mut self) -> Option<Outcome> {
        let r = with_lane(self.lane, |lane| lane.take(self.slot, None))
            .unwrap_or(Some(Err(AppendError::Unavailable)));
        if r.is_some() {
            self.slot = u32::MAX;
        }
        r
    }

    /// The outcome, writing the lane's group now if need be (the flusher is
    /// on this thread, so waiting for it here would never end).
    pub fn wait(mut self) -> Outcome {
        flush(self.lane);
        self.try_outcome().unwrap_or(Err(AppendError::Unavailable))
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.slot == u32::MAX {
            return;
        }
        let slot = self.slot;
        with_lane(self.lane, |lane| {
            let Some(s) = lane.slots.get_mut(slot as usize) else {
                return;
            };
            match s {
                Slot::Pending(_) => *s = Slot::Abandoned,
                Slot::Written(_) => {
                    *s = Slot::Free;
                    lane.free.push(slot);
                }
                Slot::Free | Slot::Abandoned => {}
            }
        });
    }
}
