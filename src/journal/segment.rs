//! Segment files: each named by the sequence number of its first record
//! (zero-padded, so names sort in sequence order), in the journal's
//! directory. The writer makes them, readers open them, recovery repairs
//! the last one, the shipper deletes shipped ones.

use std::fs;
use std::path::{Path, PathBuf};

/// The segment whose first record is `first_seq`.
pub(super) fn path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.seg"))
}

/// Segment files, oldest first, as (first sequence number, path). Anything
/// else in the directory (the checkpoint) is not a segment.
pub(super) fn list(dir: &Path) -> Vec<(u64, PathBuf)> {
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
