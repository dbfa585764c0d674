//! Writing groups of records: a [`Core`] owns one stream's segment being
//! written (see [`super::segment`]) and writes each group with one `write`
//! (and one `fdatasync` in `fsync` mode), numbering its records from the
//! journal's one numbering, and only then tells readers. It refuses what
//! the disk budget cannot hold and rolls to a new segment between groups,
//! never inside one. The [`Writer`] thread has a core of its own, behind a
//! mutex, for appends taken off a bounded queue (up to 4096 at a time);
//! each serving thread's lane ([`super::lane`]) owns another, so that no
//! two threads share a file, a lock or a cache line per group, only the
//! numbering.

use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::frame::{encode_frame, HEADER, MAX_BODY};
use super::progress::Shared;
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

/// One stream's segment being written: one owner, the writer thread or a
/// serving thread's lane.
pub(super) struct Core {
    shared: Arc<Shared>,
    stream: u32,
    /// The segment being appended to; None until the first group, and
    /// after a roll (a segment is named by its first record, known only
    /// once the group is numbered, or by a lower bound of it: see
    /// [`Core::seal_for_space`]).
    file: Option<File>,
    segment_size: u64,
    fsync: bool,
    segment_bytes: u64,
    full_log: RateLimit,
    /// Set once this core's owner stopped (the writer thread's core in
    /// `fsync` mode syncs one last time).
    stopped: bool,
    /// The frames of one group, reused.
    buf: Vec<u8>,
}

/// One record of a group: its body and append time.
pub(super) type Entry<'a> = (&'a [u8], u64);

impl Core {
    /// A core writing a new stream of the journal.
    pub(super) fn new(shared: Arc<Shared>, settings: &Settings) -> Core {
        Core {
            stream: shared.open_stream(),
            shared,
            file: None,
            segment_size: 0,
            fsync: settings.fsync,
            segment_bytes: settings.segment_bytes,
            full_log: RateLimit::new(5_000),
            stopped: false,
            buf: Vec::with_capacity(1 << 16),
        }
    }

    /// Writes one group with one `write` (and one `fdatasync` in `fsync`
    /// mode), tells readers, and pushes each entry's outcome, in order,
    /// onto `results`.
    pub(super) fn write_group<'a>(
        &mut self,
        entries: impl Iterator<Item = Entry<'a>> + Clone,
        results: &mut Vec<Result<u64, AppendError>>,
    ) {
        let from = results.len();
        if self.stopped {
            results.extend(entries.map(|_| Err(AppendError::Unavailable)));
            return;
        }
        let accepted = self.admit(entries.clone(), results);
        if accepted == 0 {
            return;
        }
        let Some(first) = self.shared.reserve(self.stream, accepted) else {
            // The journal stopped: nothing is numbered after that.
            not_kept(&mut results[from..]);
            return;
        };
        let mut buf = std::mem::take(&mut self.buf);
        encode_group(entries, first, &mut buf, &mut results[from..]);
        let ok = self.write(first, &buf);
        if !ok {
            warn!("journal write failed; these events are not kept");
            // Their numbers stay unused: gaps, which readers pass over.
            not_kept(&mut results[from..]);
        }
        self.shared
            .group_done(self.stream, if ok { buf.len() as u64 } else { 0 });
        if ok {
            crate::telemetry::metric::journal_size(self.shared.bytes());
        }
        self.buf = buf;
    }

    /// Decides which entries the budget has room for: pushes a placeholder
    /// `Ok` for each of those, `Full` for the others; returns how many fit.
    fn admit<'a>(
        &mut self,
        entries: impl Iterator<Item = Entry<'a>>,
        results: &mut Vec<Result<u64, AppendError>>,
    ) -> u64 {
        // Each stream checks the budget on its own, so the journal can go
        // past it by at most one group per stream.
        let budget_left = self.shared.max_bytes().saturating_sub(self.shared.bytes());
        let (mut taken, mut accepted, mut refused) = (0u64, 0u64, 0);
        for (body, _) in entries {
            let frame_len = (HEADER + body.len()) as u64;
            if body.len() > MAX_BODY {
                // Never kept, whatever the space: not a sign of a full disk.
                results.push(Err(AppendError::Full));
                continue;
            }
            if taken + frame_len > budget_left {
                results.push(Err(AppendError::Full));
                refused += 1;
                continue;
            }
            taken += frame_len;
            accepted += 1;
            results.push(Ok(0));
        }
        // Each append's outcome goes back to its caller, which counts it
        // (once): nothing is counted here.
        if refused > 0 {
            self.refused(refused);
            self.seal_for_space();
        }
        accepted
    }

    /// The budget is spent: this stream's segment is closed and an empty
    /// successor started, so that once shipped it can be deleted (the
    /// shipper never deletes a stream's newest segment) and the space comes
    /// back. Without it, streams whose segments never reach
    /// `segment_bytes` would hold the budget for good after an outage.
    fn seal_for_space(&mut self) {
        if self.segment_size == 0 {
            return;
        }
        self.roll();
        // Named by the next number to be handed out: below every record
        // this stream will write, above every one it wrote.
        let next = self.shared.next_number();
        match self.create(next) {
            Ok(f) => self.file = Some(f),
            Err(e) => warn!(error = %e, "cannot start a new journal segment"),
        }
    }

    /// Writes a numbered group starting at `first` to this stream's
    /// segment, rolling first if it is full; false if the disk refused.
    fn write(&mut self, first: u64, buf: &[u8]) -> bool {
        if self.segment_size >= self.segment_bytes {
            self.roll();
        }
        if self.file.is_none() {
            match self.create(first) {
                Ok(f) => self.file = Some(f),
                Err(e) => {
                    warn!(error = %e, "cannot start a new journal segment");
                    return false;
                }
            }
        }
        let Some(file) = self.file.as_mut() else {
            return false;
        };
        if file.write_all(buf).is_ok() && (!self.fsync || file.sync_data().is_ok()) {
            self.segment_size += buf.len() as u64;
            return true;
        }
        // A torn write is cut off, and the next group goes to a new
        // segment: a reader may already have read past the cut, and would
        // take the next group's bytes there for damage.
        let _ = file.set_len(self.segment_size);
        self.roll();
        false
    }

    fn create(&mut self, first: u64) -> std::io::Result<File> {
        let path = segment::path(self.shared.dir(), self.stream, first);
        let file = crate::files::private_options()
            .create(true)
            .append(true)
            .open(path)?;
        self.segment_size = 0;
        self.shared.segment_created();
        Ok(file)
    }

    /// Closes the full segment; the next group starts a new one.
    fn roll(&mut self) {
        if let Some(file) = self.file.take() {
            if self.fsync {
                let _ = file.sync_data();
            }
        }
        self.segment_size = 0;
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

    /// This core's owner stopped: the last `fdatasync` (`fsync` mode), and
    /// no group after it.
    pub(super) fn stop(&mut self) {
        if self.fsync && !self.stopped {
            if let Some(file) = &self.file {
                let _ = file.sync_data();
            }
        }
        self.stopped = true;
    }
}

/// The admitted entries of a group that was not written are unavailable;
/// the ones refused for space stay refused for space.
fn not_kept(results: &mut [Result<u64, AppendError>]) {
    for r in results {
        *r = r.and(Err(AppendError::Unavailable));
    }
}

/// Frames each admitted entry (an `Ok` in `results`) into `buf`, numbered
/// from `first`, and sets its outcome to its sequence number.
fn encode_group<'a>(
    entries: impl Iterator<Item = Entry<'a>>,
    first: u64,
    buf: &mut Vec<u8>,
    results: &mut [Result<u64, AppendError>],
) {
    buf.clear();
    let mut seq = first;
    for ((body, ts_ms), r) in entries.zip(results.iter_mut()) {
        if let Ok(n) = r {
            encode_frame(buf, seq, ts_ms, body);
            *n = seq;
            seq += 1;
        }
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
