//! What the journal's parties know of each other's progress: the writer
//! (how far records are written, how many bytes the segments hold, the
//! segment being written, when space last ran out), the shipper (its
//! checkpoint) and the attribution engine (the position its snapshot
//! covers). Each figure is written by one party through a method named for
//! what happened, and read by the others through methods: no atomic is
//! reachable from outside, so the orderings that make a figure safe to
//! read are chosen here, once.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::segment;
use crate::telemetry::now_ms;

/// How often a caught-up reader looks for new records.
const READER_POLL: Duration = Duration::from_millis(5);

/// State shared by the writer, the readers, the shipper and the engine.
pub struct Shared {
    dir: PathBuf,
    /// Records with a smaller sequence number are completely written.
    written: AtomicU64,
    /// Bytes of all segment files.
    bytes: AtomicU64,
    /// When an append was last refused for lack of space (ms, 0 = never).
    last_full_ms: AtomicU64,
    /// The budget, for readiness.
    max_bytes: u64,
    /// The shipper's checkpoint: every record below it is in Kafka.
    shipped: AtomicU64,
    /// First sequence number of the segment being written: a reader at the
    /// end of an older one knows that one is complete.
    current_segment: AtomicU64,
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
    /// The segment appends go to.
    pub current_segment: u64,
}

impl Shared {
    pub(super) fn new(start: Start) -> Shared {
        Shared {
            dir: start.dir,
            written: AtomicU64::new(start.next_seq),
            bytes: AtomicU64::new(start.bytes),
            last_full_ms: AtomicU64::new(0),
            max_bytes: start.max_bytes,
            shipped: AtomicU64::new(start.shipped),
            current_segment: AtomicU64::new(start.current_segment),
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

    /// Segment files, oldest first, as (first sequence number, path).
    pub fn segments(&self) -> Vec<(u64, PathBuf)> {
        segment::list(&self.dir)
    }

    /// The writer wrote a group of `bytes` bytes: every record below
    /// `next_seq` is now readable.
    pub(super) fn group_written(&self, bytes: u64, next_seq: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        // Release, after the write: a reader that sees the number finds the
        // records in the file.
        self.written.store(next_seq, Ordering::Release);
    }

    /// The writer refused an append for lack of space (readiness turns
    /// false for a while).
    pub(super) fn refused_for_space(&self) {
        self.last_full_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// The writer started the segment whose first record is `first_seq`.
    pub(super) fn segment_started(&self, first_seq: u64) {
        self.current_segment.store(first_seq, Ordering::Release);
    }

    /// The segment being written, by its first sequence number.
    pub(super) fn current_segment(&self) -> u64 {
        self.current_segment.load(Ordering::Acquire)
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
