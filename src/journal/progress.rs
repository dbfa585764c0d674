//! What the journal's parties know of each other's progress: the writer
//! (how far records are written, how many bytes the segments hold, the
//! segment being written, when space last ran out), the shipper (its
//! checkpoint) and the attribution engine (the position its snapshot
//! covers). Each figure is written by one party through a method named for
//! what happened, and read by the others through methods: no atomic is
//! reachable from outside, so the orderings that make a figure safe to
//! read are chosen here, once.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::segment::{self, SegmentFile};
use crate::telemetry::now_ms;

/// How often a caught-up reader looks for new records.
const READER_POLL: Duration = Duration::from_millis(5);

/// State shared by the writer, the readers, the shipper and the engine.
pub struct Shared {
    dir: PathBuf,
    /// Records with a smaller sequence number are completely written (or
    /// will never be: a number whose write failed is a gap).
    written: AtomicU64,
    /// The numbering every stream draws from, one group at a time.
    numbering: Mutex<Numbering>,
    /// The next stream a writer opens.
    next_stream: AtomicU32,
    /// Streams below this one were written before this process opened the
    /// journal: nothing is appended to them any more.
    first_live_stream: u32,
    /// Every record of those streams is below this sequence number.
    sealed_below: u64,
    /// Bumped whenever a writer creates a segment: a reader lists the
    /// directory again only when this changed.
    segments_created: AtomicU64,
    /// Bytes of all segment files.
    bytes: AtomicU64,
    /// When an append was last refused for lack of space (ms, 0 = never).
    last_full_ms: AtomicU64,
    /// The budget, for readiness.
    max_bytes: u64,
    /// The shipper's checkpoint: every record below it is in Kafka.
    shipped: AtomicU64,
    /// The attribution engine's snapshotted position (u64::MAX without an
    /// engine): it replays from here after a crash, so segments are kept.
    engine_snapshot: AtomicU64,
}

/// Where recovery found the journal: what [`Shared`] starts from.
pub(super) struct Start {
    pub dir: PathBuf,
    pub max_bytes: u64,
    /// The next sequence number to write.
    pub next_seq: u64,
    /// Bytes of the segments found.
    pub bytes: u64,
    /// The checkpoint saved on disk.
    pub shipped: u64,
    /// Streams below this one are on disk from an earlier process.
    pub first_live_stream: u32,
}

/// The sequence numbers handed out, and the groups still being written.
struct Numbering {
    next: u64,
    /// (stream, first sequence number) of each group being written.
    in_flight: Vec<(u32, u64)>,
    /// Set once the journal stopped: no number is handed out after it.
    stopped: bool,
}

impl Numbering {
    /// Every number below this is written or never will be.
    fn complete_below(&self) -> u64 {
        self.in_flight
            .iter()
            .map(|(_, first)| *first)
            .min()
            .unwrap_or(self.next)
    }
}

impl Shared {
    pub(super) fn new(start: Start) -> Shared {
        Shared {
            dir: start.dir,
            written: AtomicU64::new(start.next_seq),
            numbering: Mutex::new(Numbering {
                next: start.next_seq,
                in_flight: Vec::new(),
                stopped: false,
            }),
            next_stream: AtomicU32::new(start.first_live_stream),
            first_live_stream: start.first_live_stream,
            sealed_below: start.next_seq,
            segments_created: AtomicU64::new(0),
            bytes: AtomicU64::new(start.bytes),
            last_full_ms: AtomicU64::new(0),
            max_bytes: start.max_bytes,
            shipped: AtomicU64::new(start.shipped),
            engine_snapshot: AtomicU64::new(u64::MAX),
        }
    }

    /// The journal's directory (`data_dir/journal`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The disk budget (`journal.max_bytes`).
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Every record below this sequence number is completely written.
    pub fn written(&self) -> u64 {
        // Acquire: the bytes of those records are visible to a reader that
        // saw the number.
        self.written.load(Ordering::Acquire)
    }

    /// Bytes of all segment files.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The shipper's checkpoint: every record below it is in Kafka.
    pub fn shipped(&self) -> u64 {
        self.shipped.load(Ordering::Relaxed)
    }

    /// The position the attribution engine's snapshot covers (u64::MAX
    /// without an engine): segments from it on are kept for its replay.
    pub fn engine_snapshot(&self) -> u64 {
        self.engine_snapshot.load(Ordering::Relaxed)
    }

    /// The attribution engine's snapshot now covers every record below
    /// `seq` (or, at start, will replay from it).
    pub fn set_engine_snapshot(&self, seq: u64) {
        self.engine_snapshot.store(seq, Ordering::Relaxed);
    }

    /// Waits until a record at or past `seq` is written, at most `timeout`.
    /// Readers poll rather than being woken per group: a wake-up per write
    /// would cost the request path a context switch each time, and shipping
    /// or attributing a few milliseconds later costs nothing.
    pub fn wait_for(&self, seq: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.written() <= seq && Instant::now() < deadline {
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

    /// Segment files, in (first sequence number, stream) order.
    pub fn segments(&self) -> Vec<SegmentFile> {
        segment::list(&self.dir)
    }

    /// A stream of its own for a new writer.
    pub(super) fn open_stream(&self) -> u32 {
        self.next_stream.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether `stream` was written by an earlier process, and so is
    /// complete: every record of it is below [`Shared::sealed_below`].
    pub(super) fn is_sealed(&self, stream: u32) -> bool {
        stream < self.first_live_stream
    }

    /// Every record of a sealed stream is below this.
    pub(super) fn sealed_below(&self) -> u64 {
        self.sealed_below
    }

    fn numbering(&self) -> MutexGuard<'_, Numbering> {
        self.numbering.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Numbers for a group of `count` records of `stream`, the first
    /// returned; None once the journal stopped. Readers wait at the first
    /// until [`Shared::group_done`].
    pub(super) fn reserve(&self, stream: u32, count: u64) -> Option<u64> {
        let mut n = self.numbering();
        if n.stopped {
            return None;
        }
        let first = n.next;
        n.next += count;
        n.in_flight.push((stream, first));
        Some(first)
    }

    /// The next number [`Shared::reserve`] will hand out.
    pub(super) fn next_number(&self) -> u64 {
        self.numbering().next
    }

    /// `stream`'s group, `bytes` long, is written (or failed: its numbers
    /// are then gaps): readers may read up to the next group still being
    /// written.
    pub(super) fn group_done(&self, stream: u32, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        let mut n = self.numbering();
        n.in_flight.retain(|(s, _)| *s != stream);
        // Release, after the write: a reader that sees the number finds the
        // records in their files.
        self.written.store(n.complete_below(), Ordering::Release);
    }

    /// No number is handed out from now on; returns once every group
    /// already numbered is written, so that readers see all there will be.
    pub(super) fn stop_numbering(&self) {
        self.numbering().stopped = true;
        // A group is written within a `write`; one still out after seconds
        // belongs to a writer that died mid-group (a panic): never wait
        // for it, stopping must end.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.numbering().in_flight.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The writer refused an append for lack of space (readiness turns
    /// false for a while).
    pub(super) fn refused_for_space(&self) {
        self.last_full_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// A writer created a segment (before writing to it).
    pub(super) fn segment_created(&self) {
        self.segments_created.fetch_add(1, Ordering::Release);
    }

    /// Changes whenever a segment is created: a reader's listing of the
    /// directory is current while this is unchanged.
    pub(super) fn segments_created(&self) -> u64 {
        self.segments_created.load(Ordering::Acquire)
    }

    /// The shipper's checkpoint moved to `watermark`.
    pub(super) fn set_shipped(&self, watermark: u64) {
        self.shipped.store(watermark, Ordering::Relaxed);
    }

    /// The shipper deleted a segment of `bytes` bytes.
    pub(super) fn segment_deleted(&self, bytes: u64) {
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }
}
