//! The local journal between the handlers and Kafka: every answered event is
//! on disk (in the page cache, or fsynced) before its response is sent, and
//! reaches Kafka at least once with its original `event_id`, whatever happens
//! to the process or the broker in between.
//!
//! - [`Journal`]: the handle handlers append through; a writer thread
//!   appends in groups (one `write` per group, one `fdatasync` in `fsync` mode).
//! - [`Cursor`]: reads records in order; the shipper and the attribution
//!   engine each have one.
//! - [`ship`]: produces to Kafka, advances the checkpoint past acknowledged
//!   records only, dead-letters poison records, deletes shipped segments.

pub mod frame;
pub mod ship;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tracing::{info, warn};

use crate::attribution::Input;
use crate::telemetry::{now_ms, RateLimit};
use frame::{decode_frame, encode_frame, Frame, HEADER, MAX_BODY};

pub use frame::Record;

/// How far an answered event is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// No journal: events live in librdkafka's memory until acknowledged.
    Memory,
    /// Written to the journal (page cache) before the response: survives a
    /// process crash.
    Journal,
    /// Also `fdatasync`ed before the response: survives power loss.
    Fsync,
}

/// Journal settings, from `[journal]` and `server.data_dir`.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `data_dir/journal`.
    pub dir: PathBuf,
    pub fsync: bool,
    /// Disk budget: appends beyond it are refused (and counted).
    pub max_bytes: u64,
    /// A new segment file starts past this size.
    pub segment_bytes: u64,
}

/// Why an append did not happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendError {
    /// `max_bytes` reached.
    Full,
    /// The writer stopped, or the disk refused the write.
    Unavailable,
}

impl AppendError {
    pub fn reason(self) -> &'static str {
        match self {
            AppendError::Full => "journal_full",
            AppendError::Unavailable => "journal_unavailable",
        }
    }
}

/// State shared by the writer, the readers and the shipper.
pub struct Shared {
    pub dir: PathBuf,
    /// Records with a smaller sequence number are completely written.
    written: AtomicU64,
    /// Bytes of all segment files.
    bytes: AtomicU64,
    /// Readers sleep here until something is written.
    wake: (Mutex<()>, Condvar),
    /// When an append was last refused for lack of space (ms, 0 = never).
    last_full_ms: AtomicU64,
    /// The budget, for readiness.
    pub max_bytes: u64,
    /// The shipper's checkpoint: every record below it is in Kafka.
    pub shipped: AtomicU64,
    /// First sequence number of the segment being written: a reader at the
    /// end of an older one knows that one is complete.
    current_segment: AtomicU64,
    /// The attribution engine's snapshotted position (u64::MAX without an
    /// engine): it replays from here after a crash, so segments are kept.
    pub engine_snapshot: AtomicU64,
}

impl Shared {
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Waits until a record at or past `seq` is written, at most `timeout`.
    pub fn wait_for(&self, seq: u64, timeout: Duration) {
        let guard = self.wake.0.lock().unwrap_or_else(|e| e.into_inner());
        if self.written() > seq {
            return;
        }
        let _ = self.wake.1.wait_timeout(guard, timeout);
    }

    fn notify(&self) {
        let _guard = self.wake.0.lock().unwrap_or_else(|e| e.into_inner());
        self.wake.1.notify_all();
    }

    /// False while the budget is (nearly) exhausted or refused an append in
    /// the last 10 seconds.
    pub fn has_room(&self) -> bool {
        let last = self.last_full_ms.load(Ordering::Relaxed);
        let recently_full = last != 0 && now_ms().saturating_sub(last) < 10_000;
        !recently_full && self.bytes() < self.max_bytes / 100 * 95
    }

    /// Segment files, oldest first, as (first sequence number, path).
    pub fn segments(&self) -> Vec<(u64, PathBuf)> {
        segments(&self.dir)
    }
}

/// How much a reader asks the file for at once.
const READ_CHUNK: usize = 256 * 1024;

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.seg"))
}

fn segments(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let path = e.path();
            let name = path.file_name()?.to_str()?;
            let seq = name.strip_suffix(".seg")?.parse().ok()?;
            Some((seq, path))
        })
        .collect();
    out.sort();
    out
}

/// The part of the journal appends go through, under one lock held only to
/// frame a record or swap a buffer, never across a write.
struct Inner {
    /// Framed records waiting for the next write.
    buf: Vec<u8>,
    /// The sequence number the next record gets.
    next_seq: u64,
    /// A leader is writing; the others' records wait in `buf`.
    writing: bool,
    /// The writing side, taken by the leader for the duration of a write.
    file: Option<SegmentFile>,
    /// Set by [`Journal::stop`]: appends are refused.
    stopped: bool,
}

/// The segment being appended to.
struct SegmentFile {
    file: File,
    size: u64,
}

/// The handlers' handle on the journal.
///
/// Group commit without a writer thread: the first append to find no write
/// in progress becomes the leader and writes everything queued (its own
/// record and any that arrive meanwhile) with one `write` (and one
/// `fdatasync` in `fsync` mode); the others wait for the written sequence
/// number to pass theirs. No thread hand-off on the request path.
pub struct Journal {
    inner: Mutex<Inner>,
    /// Wakes async waiters when a group is written.
    written_notify: tokio::sync::Notify,
    pub shared: Arc<Shared>,
    fsync: bool,
    segment_bytes: u64,
    full_log: RateLimit,
}

impl Journal {
    /// Opens (or creates) the journal, repairing a torn tail.
    pub fn open(settings: &Settings) -> std::io::Result<Journal> {
        fs::create_dir_all(&settings.dir)?;
        let mut segs = segments(&settings.dir);
        let checkpoint = ship::load_checkpoint(&settings.dir);
        let mut next_seq = checkpoint;
        if let Some((first, path)) = segs.last() {
            let (end_seq, good_len, problem) = scan(path, *first)?;
            let file_len = fs::metadata(path)?.len();
            if let Some(problem) = problem {
                warn!(
                    segment = %path.display(),
                    dropped_bytes = file_len - good_len,
                    problem,
                    "journal tail is torn or corrupt (a crash mid-write?); truncating it, records before it are kept"
                );
                metrics::counter!("journal_torn_bytes_total").increment(file_len - good_len);
                OpenOptions::new()
                    .write(true)
                    .open(path)?
                    .set_len(good_len)?;
            }
            next_seq = next_seq.max(end_seq);
        }
        if segs.is_empty() {
            segs.push((next_seq, segment_path(&settings.dir, next_seq)));
        }
        let (first, path) = segs.last().cloned().unwrap_or_default();
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        let bytes: u64 = segs
            .iter()
            .filter_map(|(_, p)| fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        let shared = Arc::new(Shared {
            dir: settings.dir.clone(),
            written: AtomicU64::new(next_seq),
            bytes: AtomicU64::new(bytes),
            wake: (Mutex::new(()), Condvar::new()),
            last_full_ms: AtomicU64::new(0),
            max_bytes: settings.max_bytes,
            shipped: AtomicU64::new(checkpoint),
            engine_snapshot: AtomicU64::new(u64::MAX),
            current_segment: AtomicU64::new(first),
        });
        info!(
            dir = %settings.dir.display(),
            segments = segs.len(),
            bytes,
            unshipped = next_seq.saturating_sub(checkpoint),
            "journal open"
        );
        let inner = Inner {
            buf: Vec::with_capacity(1 << 20),
            next_seq,
            writing: false,
            file: Some(SegmentFile { file, size }),
            stopped: false,
        };
        Ok(Journal {
            inner: Mutex::new(inner),
            written_notify: tokio::sync::Notify::new(),
            shared,
            fsync: settings.fsync,
            segment_bytes: settings.segment_bytes,
            full_log: RateLimit::new(5_000),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Frames the record into the queue. `Ok((seq, leader))`: its number, and
    /// whether this caller must write the queue.
    fn enqueue(&self, body: &[u8], ts_ms: u64) -> Result<(u64, bool), AppendError> {
        let mut inner = self.lock();
        if inner.stopped {
            return Err(AppendError::Unavailable);
        }
        let frame_len = (HEADER + body.len()) as u64;
        let room = self
            .shared
            .max_bytes
            .saturating_sub(self.shared.bytes() + inner.buf.len() as u64);
        if body.len() > MAX_BODY || frame_len > room {
            drop(inner);
            self.refused();
            return Err(AppendError::Full);
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        encode_frame(&mut inner.buf, seq, ts_ms, body);
        let leader = !inner.writing;
        inner.writing = true;
        Ok((seq, leader))
    }

    fn refused(&self) {
        self.shared.last_full_ms.store(now_ms(), Ordering::Relaxed);
        metrics::counter!("events_dropped_total", "reason" => "journal_full").increment(1);
        if let Some(held) = self.full_log.check() {
            warn!(
                suppressed = held,
                bytes = self.shared.bytes(),
                max_bytes = self.shared.max_bytes,
                "JOURNAL FULL: events are answered but NOT KEPT; is Kafka reachable? /readyz answers 503"
            );
        }
    }

    /// Writes queued groups until the queue is empty, then steps down.
    fn lead(&self) {
        let mut group = Vec::with_capacity(1 << 20);
        loop {
            let (mut seg, end_seq) = {
                let mut inner = self.lock();
                if inner.buf.is_empty() {
                    inner.writing = false;
                    return;
                }
                std::mem::swap(&mut inner.buf, &mut group);
                (inner.file.take(), inner.next_seq)
            };
            let ok = match seg.as_mut() {
                Some(seg) => self.write_group(seg, &group, end_seq),
                None => false,
            };
            if ok {
                self.shared
                    .bytes
                    .fetch_add(group.len() as u64, Ordering::Relaxed);
                self.shared.written.store(end_seq, Ordering::Release);
                self.shared.notify();
                self.written_notify.notify_waiters();
                group.clear();
                let mut inner = self.lock();
                inner.file = seg;
            } else {
                // Keep the records, in order, for the next attempt.
                warn!("journal write failed; retrying with the next group");
                metrics::counter!("journal_write_errors_total").increment(1);
                let mut inner = self.lock();
                inner.file = seg;
                group.extend_from_slice(&inner.buf);
                std::mem::swap(&mut inner.buf, &mut group);
                group.clear();
                inner.writing = false;
                return;
            }
        }
    }

    /// One `write` (and `fdatasync`), rolling to a new segment first if the
    /// current one is full.
    fn write_group(&self, seg: &mut SegmentFile, group: &[u8], end_seq: u64) -> bool {
        if seg.size >= self.segment_bytes {
            let first = frame_seq(group).unwrap_or(end_seq);
            let rolled = (!self.fsync || seg.file.sync_data().is_ok())
                .then(|| {
                    OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(segment_path(&self.shared.dir, first))
                })
                .and_then(Result::ok);
            match rolled {
                Some(file) => {
                    *seg = SegmentFile { file, size: 0 };
                    self.shared.current_segment.store(first, Ordering::Release);
                }
                None => warn!("cannot start a new journal segment; appending to the current one"),
            }
        }
        let ok = seg.file.write_all(group).is_ok() && (!self.fsync || seg.file.sync_data().is_ok());
        if ok {
            seg.size += group.len() as u64;
            metrics::gauge!("journal_bytes").set((self.shared.bytes() + group.len() as u64) as f64);
        } else {
            // Drop a partial write so the segment holds whole records only.
            let _ = seg.file.set_len(seg.size);
        }
        ok
    }

    /// Appends one record body; resolves once its group is written (and
    /// fsynced in `fsync` mode).
    pub async fn append(&self, body: Vec<u8>, ts_ms: u64) -> Result<u64, AppendError> {
        let (seq, leader) = self.enqueue(&body, ts_ms)?;
        drop(body);
        if leader {
            if self.fsync {
                // fdatasync blocks for milliseconds: not on a runtime thread.
                match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
                    Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
                        tokio::task::block_in_place(|| self.lead())
                    }
                    _ => self.lead(),
                }
            } else {
                self.lead();
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let notified = self.written_notify.notified();
            if self.shared.written() > seq {
                return Ok(seq);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(AppendError::Unavailable);
            }
        }
    }

    /// [`Journal::append`] for threads outside the runtime.
    pub fn append_blocking(&self, body: Vec<u8>, ts_ms: u64) -> Result<u64, AppendError> {
        let (seq, leader) = self.enqueue(&body, ts_ms)?;
        if leader {
            self.lead();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while self.shared.written() <= seq {
            if std::time::Instant::now() > deadline {
                return Err(AppendError::Unavailable);
            }
            self.shared.wait_for(seq, Duration::from_millis(50));
            if self.shared.written() <= seq && !self.lock().writing {
                // A failed write left records queued with no leader.
                self.try_lead();
            }
        }
        Ok(seq)
    }

    fn try_lead(&self) {
        let lead = {
            let mut inner = self.lock();
            let lead = !inner.writing && !inner.buf.is_empty();
            inner.writing |= lead;
            lead
        };
        if lead {
            self.lead();
        }
    }

    /// Writes what was appended so far and refuses further appends.
    pub fn stop(&self) {
        self.lock().stopped = true;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while self.lock().writing && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.try_lead();
        if let Some(seg) = self.lock().file.as_ref() {
            let _ = seg.file.sync_data();
        }
    }

    /// A body for `append`: the Kafka message and the engine's input.
    pub fn body(
        topic: crate::sink::Topic,
        kind: crate::event::EventType,
        key: &[u8],
        payload: &[u8],
        input: Option<&Input>,
    ) -> Vec<u8> {
        let mut body = Vec::with_capacity(16 + key.len() + payload.len() + 80);
        frame::encode_body(&mut body, topic, kind, key, payload, input);
        body
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The sequence number of the first frame in `group`.
fn frame_seq(group: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(group.get(8..16)?.try_into().ok()?))
}

/// Scans a segment: the next sequence number after its last good record,
/// the length of its good prefix, and what stopped the scan early.
fn scan(path: &Path, first_seq: u64) -> std::io::Result<(u64, u64, Option<&'static str>)> {
    let bytes = fs::read(path)?;
    let mut at = 0;
    let mut next = first_seq;
    while at < bytes.len() {
        match decode_frame(&bytes[at..]) {
            Frame::Ok(r, n) => {
                next = r.seq + 1;
                at += n;
            }
            Frame::Incomplete => return Ok((next, at as u64, Some("incomplete record"))),
            Frame::Corrupt(why) => return Ok((next, at as u64, Some(why))),
        }
    }
    Ok((next, at as u64, None))
}

/// An owned record, as readers hand them out.
#[derive(Clone, Debug)]
pub struct Owned {
    pub seq: u64,
    pub ts_ms: u64,
    pub topic: crate::sink::Topic,
    pub kind: crate::event::EventType,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    pub input: Option<Input>,
}

impl From<Record<'_>> for Owned {
    fn from(r: Record<'_>) -> Owned {
        Owned {
            seq: r.seq,
            ts_ms: r.ts_ms,
            topic: r.topic,
            kind: r.kind,
            key: r.key.to_vec(),
            payload: r.payload.to_vec(),
            input: r.input,
        }
    }
}

/// Reads records in sequence order, following the writer.
pub struct Cursor {
    shared: Arc<Shared>,
    /// The next sequence number wanted.
    pub next_seq: u64,
    /// The open segment and where in it reading continues.
    file: Option<(u64, File)>,
    /// Bytes read from the file; `buf[pos..]` is not decoded yet.
    buf: Vec<u8>,
    pos: usize,
    log: RateLimit,
}

impl Cursor {
    pub fn new(shared: Arc<Shared>, from_seq: u64) -> Cursor {
        Cursor {
            shared,
            next_seq: from_seq,
            file: None,
            buf: Vec::with_capacity(READ_CHUNK * 2),
            pos: 0,
            log: RateLimit::new(10_000),
        }
    }

    /// Up to `max` records, in order; empty when caught up with the writer.
    pub fn read(&mut self, max: usize) -> Vec<Owned> {
        let mut out = Vec::new();
        self.read_each(max, |r| out.push(Owned::from(r)));
        out
    }

    /// Calls `f` with up to `max` records, in order, borrowed from the read
    /// buffer (nothing is copied); returns how many.
    pub fn read_each(&mut self, max: usize, mut f: impl FnMut(Record<'_>)) -> usize {
        let mut n = 0;
        let limit = self.shared.written();
        while n < max && self.next_seq < limit {
            if self.file.is_none() && !self.open_segment() {
                break;
            }
            match decode_frame(&self.buf[self.pos..]) {
                Frame::Ok(r, len) => {
                    let seq = r.seq;
                    if seq >= self.next_seq {
                        f(r);
                        n += 1;
                        self.next_seq = seq + 1;
                    }
                    self.pos += len;
                }
                Frame::Incomplete => {
                    if self.fill() {
                        continue;
                    }
                    // At the end of this file. A newer segment means this one
                    // is complete (the writer rolls between groups): move on,
                    // after one last read in case the final group just landed.
                    if !self.has_newer_segment() {
                        break;
                    }
                    if !self.fill() && !self.advance_segment("ended early") {
                        break;
                    }
                }
                Frame::Corrupt(why) => {
                    if !self.advance_segment(why) {
                        break;
                    }
                }
            }
        }
        n
    }

    fn has_newer_segment(&self) -> bool {
        let current = self.file.as_ref().map_or(0, |(f, _)| *f);
        self.shared.current_segment.load(Ordering::Acquire) > current
    }

    /// Reads more of the open segment; false at its end.
    fn fill(&mut self) -> bool {
        let Some((_, file)) = self.file.as_mut() else {
            return false;
        };
        // Keep only the undecoded tail, then read after it.
        self.buf.drain(..self.pos);
        self.pos = 0;
        let len = self.buf.len();
        self.buf.resize(len + READ_CHUNK, 0);
        match file.read(&mut self.buf[len..]) {
            Ok(n) if n > 0 => {
                self.buf.truncate(len + n);
                true
            }
            _ => {
                self.buf.truncate(len);
                false
            }
        }
    }

    /// Opens the segment holding `next_seq`.
    fn open_segment(&mut self) -> bool {
        let segs = self.shared.segments();
        let Some((first, path)) = segs
            .iter()
            .rev()
            .find(|(f, _)| *f <= self.next_seq)
            .cloned()
        else {
            // Everything before the oldest segment is gone: start there.
            if let Some((first, _)) = segs.first() {
                self.next_seq = *first;
                return self.open_segment();
            }
            return false;
        };
        match File::open(&path) {
            Ok(mut f) => {
                let _ = f.seek(SeekFrom::Start(0));
                self.file = Some((first, f));
                self.buf.clear();
                self.pos = 0;
                true
            }
            Err(_) => false,
        }
    }

    /// Leaves the open segment for the next one; records of this one after
    /// the current position are reported as lost. False if there is none.
    fn advance_segment(&mut self, why: &'static str) -> bool {
        let current = self.file.as_ref().map_or(0, |(f, _)| *f);
        let Some(next_first) = self
            .shared
            .segments()
            .into_iter()
            .map(|(f, _)| f)
            .find(|f| *f > current)
        else {
            return false;
        };
        if next_first > self.next_seq {
            let lost = next_first - self.next_seq;
            metrics::counter!("journal_corrupt_records_total").increment(lost);
            if let Some(held) = self.log.check() {
                warn!(
                    lost,
                    why,
                    suppressed = held,
                    "journal segment unreadable past this point; skipping to the next segment"
                );
            }
            self.next_seq = next_first;
        }
        self.file = None;
        self.buf.clear();
        self.pos = 0;
        true
    }
}

#[cfg(test)]
mod tests;
