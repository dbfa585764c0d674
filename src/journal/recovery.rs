//! Opening the journal after any stop, clean or not. A crash mid-write
//! leaves at most a torn group at the tail of each stream's last segment:
//! its checksum fails, so the tail is truncated there (counted, logged) and
//! every record before it is kept. Numbering resumes after the last good
//! record of any stream, or at the checkpoint when the shipper deleted
//! every segment. The streams found are sealed: this process writes new
//! ones.

use std::fs::{self, OpenOptions};
use std::path::Path;
use std::sync::Arc;

use tracing::{info, warn};

use super::frame::{decode_frame, Frame};
use super::progress::{Shared, Start};
use super::segment::SegmentFile;
use super::{checkpoint, segment, Settings};

/// Repairs the journal in `settings.dir` (creating it if need be) and
/// returns its shared progress.
pub(super) fn recover(settings: &Settings) -> std::io::Result<Arc<Shared>> {
    crate::files::create_private_dir(&settings.dir)?;
    let segs = segment::list(&settings.dir);
    let shipped = checkpoint::load(&settings.dir);
    let mut next_seq = shipped;
    for last in last_of_each_stream(&segs) {
        next_seq = next_seq.max(repair_tail(&last.path, last.first)?);
    }
    let bytes: u64 = segs
        .iter()
        .filter_map(|s| fs::metadata(&s.path).ok())
        .map(|m| m.len())
        .sum();
    let first_live_stream = segs
        .iter()
        .map(|s| s.stream.saturating_add(1))
        .max()
        .unwrap_or(1);
    info!(
        dir = %settings.dir.display(),
        segments = segs.len(),
        bytes,
        unshipped = next_seq.saturating_sub(shipped),
        "journal open"
    );
    Ok(Arc::new(Shared::new(Start {
        dir: settings.dir.clone(),
        max_bytes: settings.max_bytes,
        next_seq,
        bytes,
        shipped,
        first_live_stream,
    })))
}

/// Each stream's newest segment: the only one a crash can have torn.
fn last_of_each_stream(segs: &[SegmentFile]) -> Vec<&SegmentFile> {
    let mut last: Vec<&SegmentFile> = Vec::new();
    for s in segs {
        match last.iter_mut().find(|l| l.stream == s.stream) {
            // `segs` is in sequence order: a later one is newer.
            Some(l) => *l = s,
            None => last.push(s),
        }
    }
    last
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
