//! Writing groups of records: the [`Core`] owns the segment being written
//! (behind one mutex, taken once per group) and writes each group with one
//! `write` (and one `fdatasync` in `fsync` mode), numbering its records,
//! and only then publishes the new end to readers. It refuses what the disk
//! budget cannot hold and rolls to a new segment between groups, never
//! inside one. Groups come from the [`Writer`] thread, which takes appends
//! off a bounded queue (up to 4096 at a time) and tells each caller its
//! sequence number, and from the serving threads' lanes
//! ([`super::lane`]), which group their own thread's appends.

use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::frame::{encode_frame, HEADER, MAX_BODY};
use super::progress::Shared;
use super::recovery::Tail;
use super::{segment, AppendError, Settings};
use crate::telemetry::RateLimit;

/// Appends taken into one group, at most.
const MAX_GROUP: usize = 4096;

/// One append waiting for the writer.
pub(super) struct Append {
    /// The record body ([`super::frame::encode_body`]).
    pub body: Vec<u8>,
    pub ts_ms: u64,
    /// Told the sequence number once the group is written.
    pub done: oneshot::Sender<Result<u64, AppendError>>,
}

/// What the writer thread is asked to do.
pub(super) enum Job {
    Append(Append),
    /// Write what was queued before this, then stop.
    Stop,
}

/// The segment being written and its numbering: one owner at a time,
/// behind the journal's mutex, taken once per group (by the writer thread,
/// or by a serving thread's [`super::lane`]).
pub(super) struct Core {
    shared: Arc<Shared>,
    /// The segment being appended to.
    file: File,
    segment_size: u64,
    next_seq: u64,
    fsync: bool,
    segment_bytes: u64,
    full_log: RateLimit,
    /// Set once the journal stopped: groups after it are refused, so that
    /// the shipper's last round sees everything there will be.
    stopped: bool,
    /// The frames of one group, reused.
    buf: Vec<u8>,
}

/// One record of a group: its body and append time.
pub(super) type Entry<'a> = (&'a [u8], u64);

impl Core {
    /// A core appending after `tail`, where recovery left the journal.
    pub(super) fn new(shared: Arc<Shared>, tail: Tail, settings: &Settings) -> Core {
        Core {
            shared,
            file: tail.file,
            segment_size: tail.size,
            next_seq: tail.next_seq,
            fsync: settings.fsync,
            segment_bytes: settings.segment_bytes,
            full_log: RateLimit::new(5_000),
            stopped: false,
            buf: Vec::with_capacity(1 << 20),
        }
    }

    /// Writes one group with one `write` (and one `fdatasync` in `fsync`
    /// mode), publishes the new end to readers, and pushes each entry's
    /// outcome, in order, onto `results`.
    pub(super) fn write_group<'a>(
        &mut self,
        entries: impl Iterator<Item = Entry<'a>>,
        results: &mut Vec<Result<u64, AppendError>>,
    ) {
        let from = results.len();
        if self.stopped {
            results.extend(entries.map(|_| Err(AppendError::Unavailable)));
            return;
        }
        if self.segment_size >= self.segment_bytes {
            if let Err(e) = self.roll() {
                warn!(error = %e, "cannot start a new journal segment");
            }
        }
        let mut buf = std::mem::take(&mut self.buf);
        self.encode_group(entries, &mut buf, results);
        if !buf.is_empty() {
            let ok =
                self.file.write_all(&buf).is_ok() && (!self.fsync || self.file.sync_data().is_ok());
            if ok {
                self.segment_size += buf.len() as u64;
                self.shared.group_written(buf.len() as u64, self.next_seq);
                crate::telemetry::metric::journal_size(self.shared.bytes());
            } else {
                warn!("journal write failed; these events are not kept");
                // The sequence numbers were not used: the next group reuses them.
                self.next_seq = self.shared.written();
                let _ = self.file.set_len(self.segment_size);
                // A failed write loses the appends it held; the ones
                // already refused for space stay refused for space.
                for r in &mut results[from..] {
                    *r = r.and(Err(AppendError::Unavailable));
                }
            }
        }
        self.buf = buf;
    }

    /// Frames into `buf` each entry the budget has room for, numbering
    /// them; pushes each one's outcome, in order.
    fn encode_group<'a>(
        &mut self,
        entries: impl Iterator<Item = Entry<'a>>,
        buf: &mut Vec<u8>,
        results: &mut Vec<Result<u64, AppendError>>,
    ) {
        buf.clear();
        let budget_left = self.shared.max_bytes().saturating_sub(self.shared.bytes());
        let mut refused = 0;
        for (body, ts_ms) in entries {
            let frame_len = (HEADER + body.len()) as u64;
            if body.len() > MAX_BODY || buf.len() as u64 + frame_len > budget_left {
                results.push(Err(AppendError::Full));
                refused += 1;
                continue;
            }
            encode_frame(buf, self.next_seq, ts_ms, body);
            results.push(Ok(self.next_seq));
            self.next_seq += 1;
        }
        // Each append's outcome goes back to its caller, which counts it
        // (once): nothing is counted here.
        if refused > 0 {
            self.refused(refused);
        }
    }

    fn refused(&mut self, refused: usize) {
        self.shared.refused_for_space();
        if let Some(held) = self.full_log.check() {
            warn!(
                refused,
                suppressed = held,
                bytes = self.shared.bytes(),
                max_bytes = self.shared.max_bytes(),
                "JOURNAL FULL: events are answered but NOT KEPT; is Kafka reachable? /readyz answers 503"
            );
        }
    }

    fn roll(&mut self) -> std::io::Result<()> {
        if self.fsync {
            self.file.sync_data()?;
        }
        let path = segment::path(self.shared.dir(), self.next_seq);
        self.file = crate::files::private_options()
            .create(true)
            .append(true)
            .open(path)?;
        self.segment_size = 0;
        self.shared.segment_started(self.next_seq);
        Ok(())
    }

    /// The journal stopped: the last `fdatasync` (`fsync` mode), and no
    /// group after it.
    pub(super) fn stop(&mut self) {
        if self.fsync && !self.stopped {
            let _ = self.file.sync_data();
        }
        self.stopped = true;
    }
}

/// The writer thread: appends from outside the serving threads (and every
/// append in `fsync` mode), taken off a bounded queue in groups.
pub(super) struct Writer {
    rx: mpsc::Receiver<Job>,
    core: Arc<Mutex<Core>>,
}

impl Writer {
    pub(super) fn new(rx: mpsc::Receiver<Job>, core: Arc<Mutex<Core>>) -> Writer {
        Writer { rx, core }
    }

    /// The thread's body: groups until [`Job::Stop`] or every sender is gone.
    pub(super) fn run(mut self) {
        let mut batch: Vec<Append> = Vec::with_capacity(MAX_GROUP);
        let mut results = Vec::with_capacity(MAX_GROUP);
        let mut stopping = false;
        while let Some(first) = self.rx.blocking_recv() {
            let mut next = Some(first);
            while let Some(job) = next.take() {
                match job {
                    Job::Append(a) => batch.push(a),
                    Job::Stop => stopping = true,
                }
                if batch.len() < MAX_GROUP {
                    next = self.rx.try_recv().ok();
                }
            }
            results.clear();
            lock(&self.core)
                .write_group(batch.iter().map(|a| (&a.body[..], a.ts_ms)), &mut results);
            for (a, r) in batch.drain(..).zip(results.drain(..)) {
                let _ = a.done.send(r);
            }
            if stopping {
                // Appends that raced the stop are dropped with the channel:
                // their callers are told the journal was unavailable.
                break;
            }
        }
    }
}

/// The core, whoever held it last: a panic elsewhere leaves it usable.
pub(super) fn lock(core: &Mutex<Core>) -> MutexGuard<'_, Core> {
    core.lock().unwrap_or_else(|e| e.into_inner())
}
