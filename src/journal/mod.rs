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
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::telemetry::{now_ms, RateLimit};
use frame::{decode_frame, encode_frame, Frame, HEADER, MAX_BODY};

pub use frame::Record;

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
    /// Readers poll rather than being woken per group: a wake-up per write
    /// would cost the request path a context switch each time, and shipping
    /// or attributing a few milliseconds later costs nothing.
    pub fn wait_for(&self, seq: u64, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        while self.written() <= seq && std::time::Instant::now() < deadline {
            std::thread::sleep(READER_POLL.min(timeout));
        }
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

/// How often a caught-up reader looks for new records.
const READER_POLL: Duration = Duration::from_millis(5);

/// How much a reader asks the file for at once.
const READ_CHUNK: usize = 256 * 1024;

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.seg"))
}

pub(crate) fn segments(dir: &Path) -> Vec<(u64, PathBuf)> {
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

/// One append waiting for the writer.
struct Append {
    /// The record body ([`frame::encode_body`]).
    body: Vec<u8>,
    ts_ms: u64,
    /// Told the sequence number once the group is written.
    done: oneshot::Sender<Result<u64, AppendError>>,
}

/// What the writer thread is asked to do.
enum Job {
    Append(Append),
    /// Write what was queued before this, then stop.
    Stop,
}

/// Why [`Journal::try_append`] did not queue a record.
pub enum TryAppend {
    /// The queue is full: wait with [`Journal::append`] (the body is back).
    Busy(Vec<u8>),
    /// The writer has stopped.
    Closed,
}

/// The handlers' handle on the journal.
pub struct Journal {
    /// To the writer thread; bounded, so a stalled disk slows handlers
    /// rather than filling memory. Used in place by every handler (no lock,
    /// no clone of the sender per record: both wrote lines all workers share).
    tx: mpsc::Sender<Job>,
    /// Set by [`Journal::stop`]: appends after it are refused.
    stopped: std::sync::atomic::AtomicBool,
    pub shared: Arc<Shared>,
    /// The writer thread, joined on [`Journal::stop`].
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Journal {
    /// Opens (or creates) the journal, repairing a torn tail, and starts the
    /// writer thread.
    pub fn open(settings: &Settings) -> std::io::Result<Journal> {
        crate::files::create_private_dir(&settings.dir)?;
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
                crate::telemetry::metric::journal_torn(file_len - good_len);
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
        let file = crate::files::private_options()
            .create(true)
            .append(true)
            .open(&path)?;
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
        let (tx, rx) = mpsc::channel(65_536);
        let writer = Writer {
            rx,
            shared: shared.clone(),
            file,
            segment_first: first,
            segment_size: size,
            next_seq,
            fsync: settings.fsync,
            segment_bytes: settings.segment_bytes,
            full_log: RateLimit::new(5_000),
        };
        let thread = crate::background::spawn("journal-writer", move || writer.run())?;
        Ok(Journal {
            tx,
            stopped: std::sync::atomic::AtomicBool::new(false),
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    fn sender(&self) -> Result<&mpsc::Sender<Job>, AppendError> {
        if self.stopped.load(Ordering::Relaxed) {
            return Err(AppendError::Unavailable);
        }
        Ok(&self.tx)
    }

    /// Queues one record body if the queue has room, without waiting: the
    /// receiver tells its sequence number once its group is written. The
    /// request path's way in; it falls back to [`Journal::append`] when busy.
    pub fn try_append(
        &self,
        body: Vec<u8>,
        ts_ms: u64,
    ) -> Result<oneshot::Receiver<Result<u64, AppendError>>, TryAppend> {
        let tx = self.sender().map_err(|_| TryAppend::Closed)?;
        let (done, wait) = oneshot::channel();
        match tx.try_send(Job::Append(Append { body, ts_ms, done })) {
            Ok(()) => Ok(wait),
            Err(mpsc::error::TrySendError::Full(Job::Append(a))) => Err(TryAppend::Busy(a.body)),
            Err(_) => Err(TryAppend::Closed),
        }
    }

    /// Appends one record body; resolves once its group is written (and
    /// fsynced in `fsync` mode).
    pub async fn append(&self, body: Vec<u8>, ts_ms: u64) -> Result<u64, AppendError> {
        let tx = self.sender()?;
        let (done, wait) = oneshot::channel();
        tx.send(Job::Append(Append { body, ts_ms, done }))
            .await
            .map_err(|_| AppendError::Unavailable)?;
        wait.await.unwrap_or(Err(AppendError::Unavailable))
    }

    /// Queues one record body for threads outside the runtime, without
    /// waiting for its group: the receiver tells how it went. Waiting per
    /// record would cost the caller two context switches each.
    pub fn append_queued(
        &self,
        body: Vec<u8>,
        ts_ms: u64,
    ) -> Result<oneshot::Receiver<Result<u64, AppendError>>, AppendError> {
        let tx = self.sender()?;
        let (done, wait) = oneshot::channel();
        tx.blocking_send(Job::Append(Append { body, ts_ms, done }))
            .map_err(|_| AppendError::Unavailable)?;
        Ok(wait)
    }

    /// [`Journal::append`] for threads outside the runtime (the engine uses
    /// a [`crate::delivery::Receipt`] instead: tests only).
    #[cfg(test)]
    pub fn append_blocking(&self, body: Vec<u8>, ts_ms: u64) -> Result<u64, AppendError> {
        self.append_queued(body, ts_ms)?
            .blocking_recv()
            .unwrap_or(Err(AppendError::Unavailable))
    }

    /// Writes what was appended so far and stops the writer.
    pub fn stop(&self) {
        if !self.stopped.swap(true, Ordering::Relaxed) {
            // Queued behind every append sent before it; a full queue is
            // waited out (the writer is draining it). Not `blocking_send`:
            // a start-up that fails after the journal started drops it on
            // a runtime thread, where `blocking_send` panics.
            let mut job = Job::Stop;
            while let Err(mpsc::error::TrySendError::Full(back)) = self.tx.try_send(job) {
                job = back;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }

    /// A body for `append`: the Kafka message as it will be produced, and
    /// `aux` bytes for local readers (never produced).
    pub fn body(
        topic: crate::sink::Topic,
        headers: &[(&str, &[u8])],
        key: &[u8],
        payload: &[u8],
        aux: &[u8],
    ) -> Vec<u8> {
        let mut body = Vec::with_capacity(32 + key.len() + payload.len() + aux.len());
        frame::encode_body(&mut body, topic, headers, key, payload, aux);
        body
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.stop();
    }
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

struct Writer {
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
    fn run(mut self) {
        let mut batch: Vec<Append> = Vec::with_capacity(4096);
        let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
        let mut stopping = false;
        while let Some(first) = self.rx.blocking_recv() {
            let mut next = Some(first);
            while let Some(job) = next.take() {
                match job {
                    Job::Append(a) => batch.push(a),
                    Job::Stop => stopping = true,
                }
                if batch.len() < 4096 {
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
        buf.clear();
        let mut results: Vec<Result<u64, AppendError>> = Vec::with_capacity(batch.len());
        let budget_left = self.shared.max_bytes.saturating_sub(self.shared.bytes());
        for a in batch.iter() {
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
            self.shared.last_full_ms.store(now_ms(), Ordering::Relaxed);
            if let Some(held) = self.full_log.check() {
                warn!(
                    refused,
                    suppressed = held,
                    bytes = self.shared.bytes(),
                    max_bytes = self.shared.max_bytes,
                    "JOURNAL FULL: events are answered but NOT KEPT; is Kafka reachable? /readyz answers 503"
                );
            }
        }
        let mut ok = true;
        if !buf.is_empty() {
            ok = self.file.write_all(buf).is_ok() && (!self.fsync || self.file.sync_data().is_ok());
            if ok {
                self.segment_size += buf.len() as u64;
                self.shared
                    .bytes
                    .fetch_add(buf.len() as u64, Ordering::Relaxed);
                self.shared.written.store(self.next_seq, Ordering::Release);
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

    fn roll(&mut self) -> std::io::Result<()> {
        if self.fsync {
            self.file.sync_data()?;
        }
        let path = segment_path(&self.shared.dir, self.next_seq);
        self.file = crate::files::private_options()
            .create(true)
            .append(true)
            .open(path)?;
        self.segment_first = self.next_seq;
        self.segment_size = 0;
        self.shared
            .current_segment
            .store(self.next_seq, Ordering::Release);
        Ok(())
    }
}

/// Reads records in sequence order, following the writer.
pub struct Cursor {
    shared: Arc<Shared>,
    /// The next sequence number wanted.
    pub next_seq: u64,
    /// The open segment (by its first sequence number).
    file: Option<(u64, File)>,
    /// Bytes read from the file: `buf[pos..end]` is not decoded yet. Sized
    /// once (zeroed once), so a caught-up reader's polls cost one `read`.
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    /// The file offset of `buf[0]`.
    file_at: u64,
    log: RateLimit,
}

/// Where a record's frame starts: enough to read it again without a scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// The segment, by its first sequence number.
    pub segment: u64,
    /// Byte offset of the frame in the segment file.
    pub offset: u64,
}

impl Cursor {
    pub fn new(shared: Arc<Shared>, from_seq: u64) -> Cursor {
        Cursor {
            shared,
            next_seq: from_seq,
            file: None,
            buf: vec![0; READ_CHUNK],
            pos: 0,
            end: 0,
            file_at: 0,
            log: RateLimit::new(10_000),
        }
    }

    /// Moves to the record `seq`, where an earlier cursor saw it, so that it
    /// is read next; false if its segment is gone.
    pub fn seek(&mut self, seq: u64, at: Position) -> bool {
        let Ok(mut file) = File::open(segment_path(&self.shared.dir, at.segment)) else {
            return false;
        };
        if file.seek(SeekFrom::Start(at.offset)).is_err() {
            return false;
        }
        self.file = Some((at.segment, file));
        (self.pos, self.end, self.file_at) = (0, 0, at.offset);
        self.next_seq = seq;
        true
    }

    /// Calls `f` with up to `max` records, in order, borrowed from the read
    /// buffer (nothing is copied); returns how many.
    pub fn read_each(&mut self, max: usize, mut f: impl FnMut(Record<'_>)) -> usize {
        self.read_each_at(max, |r, _| f(r))
    }

    /// [`Cursor::read_each`], also telling where each record is.
    pub fn read_each_at(&mut self, max: usize, mut f: impl FnMut(Record<'_>, Position)) -> usize {
        let mut n = 0;
        let limit = self.shared.written();
        while n < max && self.next_seq < limit {
            if self.file.is_none() && !self.open_segment() {
                break;
            }
            match decode_frame(&self.buf[self.pos..self.end]) {
                Frame::Ok(r, len) => {
                    let seq = r.seq;
                    if seq >= self.next_seq {
                        let at = Position {
                            segment: self.file.as_ref().map_or(0, |(s, _)| *s),
                            offset: self.file_at + self.pos as u64,
                        };
                        f(r, at);
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
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.end, 0);
            self.file_at += self.pos as u64;
            self.end -= self.pos;
            self.pos = 0;
        }
        if self.end == self.buf.len() {
            // One record larger than the buffer.
            self.buf.resize(self.buf.len() * 2, 0);
        }
        match file.read(&mut self.buf[self.end..]) {
            Ok(n) if n > 0 => {
                self.end += n;
                true
            }
            _ => false,
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
                (self.pos, self.end, self.file_at) = (0, 0, 0);
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
            crate::telemetry::metric::journal_corrupt(lost);
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
        (self.pos, self.end, self.file_at) = (0, 0, 0);
        true
    }
}

#[cfg(test)]
mod tests;
