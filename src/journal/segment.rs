//! Segment files. Every writer of the journal (the writer thread, and each
//! serving thread's lane) appends to segments of its own, a *stream*, so
//! that no two threads ever write one file. A segment is named by the
//! sequence number its records start at (its first record's, or a lower
//! bound of it when the segment was started empty) and its stream
//! (zero-padded, so
//! names sort in sequence order): `00000000000000000042-3.seg`. Segments
//! written before streams existed (`00000000000000000042.seg`) are
//! stream 0. Within a stream, records are in sequence order and every
//! record of a segment is below the next segment's name; across streams
//! they interleave, and readers merge them. The writers make segments,
//! readers open them, recovery repairs each stream's last one, the shipper
//! deletes shipped ones.

use std::fs;
use std::path::{Path, PathBuf};

/// One segment file.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SegmentFile {
    /// No record of it is below this number.
    pub first: u64,
    /// The writer whose records it holds.
    pub stream: u32,
    pub path: PathBuf,
}

/// The segment of `stream` whose records start at `first_seq`.
pub(super) fn path(dir: &Path, stream: u32, first_seq: u64) -> PathBuf {
    match stream {
        0 => dir.join(format!("{first_seq:020}.seg")),
        s => dir.join(format!("{first_seq:020}-{s}.seg")),
    }
}

/// Segment files, in (first sequence number, stream) order. Anything else
/// in the directory (the checkpoint) is not a segment.
pub(super) fn list(dir: &Path) -> Vec<SegmentFile> {
    let mut out: Vec<SegmentFile> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| parse(e.path()))
        .collect();
    out.sort();
    out
}

fn parse(path: PathBuf) -> Option<SegmentFile> {
    let name = path.file_name()?.to_str()?.strip_suffix(".seg")?;
    let (first, stream) = match name.split_once('-') {
        Some((first, stream)) => (first.parse().ok()?, stream.parse().ok()?),
        None => (name.parse().ok()?, 0),
    };
    Some(SegmentFile {
        first,
        stream,
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_first_record_and_the_stream_and_sort_by_both() {
        let dir = tempfile::tempdir().unwrap();
        for (stream, first) in [(2, 10), (0, 3), (1, 10), (3, 7)] {
            fs::write(path(dir.path(), stream, first), b"").unwrap();
        }
        fs::write(dir.path().join("checkpoint"), b"").unwrap();
        let got: Vec<(u64, u32)> = list(dir.path())
            .iter()
            .map(|s| (s.first, s.stream))
            .collect();
        assert_eq!(got, [(3, 0), (7, 3), (10, 1), (10, 2)]);
        assert!(path(dir.path(), 0, 3).ends_with("00000000000000000003.seg"));
    }
}
