//! The writer thread: the one owner of the segment being written. It takes
//! appends off a bounded queue in groups (up to 4096), writes each group
//! with one `write` (and one `fdatasync` in `fsync` mode), tells every
//! caller its sequence number, and only then publishes the new end to
//! readers. It refuses what the disk budget cannot hold and rolls to a new
//! segment between groups, never inside one.

use std::fs::File;
use std::io::Write;
use std::sync::Arc;

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

pub(super) struct Writer {
    rx: mpsc::Receiver<Job>,
    shared: Arc<Shared>,
    /// The segment being appended to.
    file: File,
    segment_first: u64,
    segment_size: u64,
    next_seq: u64,
    fsync: bool,
    segment_bytes: u64,
    full_log: RateLimit,
}

impl Writer {
    /// A writer appending after `tail`, where recovery left the journal.
    pub(super) fn new(
        rx: mpsc::Receiver<Job>,
        shared: Arc<Shared>,
        tail: Tail,
        settings: &Settings,
    ) -> Writer {
        Writer {
            rx,
            shared,
            file: tail.file,
            segment_first: tail.first,
            segment_size: tail.size,
            next_seq: tail.next_seq,
            fsync: settings.fsync,
            segment_bytes: settings.segment_bytes,
            full_log: RateLimit::new(5_000),
        }
    }

    /// The thread's body: groups until [`Job::Stop`] or every sender is gone.
    pub(super) fn run(mut self) {
        let mut batch: Vec<Append> = Vec::with_capacity(MAX_GROUP);
        let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
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
            self.write_group(&mut batch, &mut buf);
            if stopping {
                // Appends that raced the stop are dropped with the channel:
                // their callers are told the journal was unavailable.
                break;
            }
        }
        if self.fsync {
            let _ = self.file.sync_data();
        }
    }

    fn write_group(&mut self, batch: &mut Vec<Append>, buf: &mut Vec<u8>) {
        if self.segment_size >= self.segment_bytes {
            if let Err(e) = self.roll() {
                warn!(error = %e, "cannot start a new journal segment");
            }
        }
        let results = self.encode_group(batch, buf);
        let mut ok = true;
        if !buf.is_empty() {
            ok = self.file.write_all(buf).is_ok() && (!self.fsync || self.file.sync_data().is_ok());
            if ok {
                self.segment_size += buf.len() as u64;
                self.shared.group_written(buf.len() as u64, self.next_seq);
                crate::telemetry::metric::journal_size(self.shared.bytes());
            } else {
                warn!("journal write failed; these events are not kept");
                // The sequence numbers were not used: the next group reuses them.
                self.next_seq = self.shared.written();
                let _ = self.file.set_len(self.segment_size);
            }
        }
        for (a, r) in batch.drain(..).zip(results) {
            // A failed write loses the appends it held; the ones already
            // refused for space stay refused for space.
            let r = if ok {
                r
            } else {
                r.and(Err(AppendError::Unavailable))
            };
            let _ = a.done.send(r);
        }
    }

    /// Frames into `buf` each append the budget has room for, numbering
    /// them; returns each one's outcome, in order.
    fn encode_group(
        &mut self,
        batch: &[Append],
        buf: &mut Vec<u8>,
    ) -> Vec<Result<u64, AppendError>> {
        buf.clear();
        let mut results: Vec<Result<u64, AppendError>> = Vec::with_capacity(batch.len());
        let budget_left = self.shared.max_bytes().saturating_sub(self.shared.bytes());
        for a in batch {
            let frame_len = (HEADER + a.body.len()) as u64;
            if a.body.len() > MAX_BODY || buf.len() as u64 + frame_len > budget_left {
                results.push(Err(AppendError::Full));
                continue;
            }
            encode_frame(buf, self.next_seq, a.ts_ms, &a.body);
            results.push(Ok(self.next_seq));
            self.next_seq += 1;
        }
        // Each append's outcome goes back to its caller, which counts it
        // (once): nothing is counted here.
        let refused = results.iter().filter(|r| r.is_err()).count();
        if refused > 0 {
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
        results
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
        self.segment_first = self.next_seq;
        self.segment_size = 0;
        self.shared.segment_started(self.next_seq);
        Ok(())
    }
}
