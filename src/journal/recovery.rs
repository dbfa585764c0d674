//! Opening the journal after any stop, clean or not. A crash mid-write
//! leaves at most a torn group at the tail of the last segment: its
//! checksum fails, so the tail is truncated there (counted, logged) and
//! every record before it is kept. Numbering resumes after the last good
//! record, or at the checkpoint when the shipper deleted every segment.

use std::fs::{self, File, OpenOptions};
use std::path::Path;
use std::sync::Arc;

use tracing::{info, warn};

use super::frame::{decode_frame, Frame};
use super::progress::{Shared, Start};
use super::{checkpoint, segment, Settings};

/// The segment appends go to, as recovery left it.
pub(super) struct Tail {
    /// Open for appending.
    pub file: File,
    /// Its length.
    pub size: u64,
    /// The sequence number of the next record.
    pub next_seq: u64,
}

/// Repairs the journal in `settings.dir` (creating it if need be) and
/// returns its shared progress and the segment to append to.
pub(super) fn recover(settings: &Settings) -> std::io::Result<(Arc<Shared>, Tail)> {
    crate::files::create_private_dir(&settings.dir)?;
    let mut segs = segment::list(&settings.dir);
    let shipped = checkpoint::load(&settings.dir);
    let mut next_seq = shipped;
    if let Some((first, path)) = segs.last() {
        next_seq = next_seq.max(repair_tail(path, *first)?);
    }
    if segs.is_empty() {
        segs.push((next_seq, segment::path(&settings.dir, next_seq)));
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
    info!(
        dir = %settings.dir.display(),
        segments = segs.len(),
        bytes,
        unshipped = next_seq.saturating_sub(shipped),
        "journal open"
    );
    let shared = Arc::new(Shared::new(Start {
        dir: settings.dir.clone(),
        max_bytes: settings.max_bytes,
        next_seq,
        bytes,
        shipped,
        current_segment: first,
    }));
    let tail = Tail {
        file,
        size,
        next_seq,
    };
    Ok((shared, tail))
}

/// Truncates the segment at `path` after its last good record, if anything
/// follows it; returns the sequence number after that record.
fn repair_tail(path: &Path, first_seq: u64) -> std::io::Result<u64> {
    let (end_seq, good_len, problem) = scan(path, first_seq)?;
    if let Some(problem) = problem {
        let file_len = fs::metadata(path)?.len();
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
    Ok(end_seq)
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
