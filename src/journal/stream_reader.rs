//! Reading one stream's segments in order ([`super::segment`]): the part of
//! a [`super::Cursor`] that follows one writer. Records are lent from a
//! read buffer, never copied. At the end of a segment the reader moves on
//! only once a newer segment of its stream exists (its writer rolls between
//! groups); a damaged segment is skipped from the damage on, and the bytes
//! lost are counted.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use tracing::warn;

use super::frame::{decode_checked_frame, decode_frame, Frame};
use super::segment::SegmentFile;
use super::{Position, Record};
use crate::telemetry::RateLimit;

/// How much a reader asks the file for at once.
const READ_CHUNK: usize = 256 * 1024;

pub(super) struct StreamReader {
    pub stream: u32,
    /// Found nothing to read in this call of the cursor's.
    pub dry: bool,
    /// Could not read on (a segment that would not open, damage with no
    /// newer segment to skip to): it may hold records still to come.
    pub stalled: bool,
    /// The open segment, by its first sequence number.
    file: Option<(u64, File)>,
    /// Bytes read from the file: `buf[pos..end]` is not decoded yet. Sized
    /// once (zeroed once), so a caught-up reader's polls cost one `read`.
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    /// The file offset of `buf[0]`.
    file_at: u64,
    /// The sequence number of the frame at `buf[pos..]`, once decoded.
    head: Option<u64>,
}

/// What the reader found at its position.
enum Step {
    /// A record at or past the one wanted.
    Head(u64),
    /// Read on.
    Again,
    /// Nothing readable now.
    Nothing,
}

impl StreamReader {
    pub fn new(stream: u32) -> StreamReader {
        StreamReader {
            stream,
            dry: false,
            stalled: false,
            file: None,
            buf: Vec::new(),
            pos: 0,
            end: 0,
            file_at: 0,
            head: None,
        }
    }

    /// The sequence number of this stream's next record at or past `want`,
    /// if one can be read now; `listing` is the journal's segments.
    pub fn head(&mut self, want: u64, listing: &[SegmentFile], log: &mut RateLimit) -> Option<u64> {
        if let Some(seq) = self.head.filter(|s| *s >= want) {
            return Some(seq);
        }
        self.head = None;
        self.stalled = false;
        if self.file.is_none() && !self.open_for(want, listing) {
            return None;
        }
        loop {
            match self.step(want, listing, log) {
                Step::Head(seq) => {
                    self.head = Some(seq);
                    return Some(seq);
                }
                Step::Again => {}
                Step::Nothing => return None,
            }
        }
    }

    fn step(&mut self, want: u64, listing: &[SegmentFile], log: &mut RateLimit) -> Step {
        match decode_frame(&self.buf[self.pos..self.end]) {
            Frame::Ok(r, len) if r.seq < want => {
                self.pos += len;
                Step::Again
            }
            Frame::Ok(r, _) => Step::Head(r.seq),
            Frame::Incomplete => {
                if self.fill() {
                    return Step::Again;
                }
                // At the end of this file. A newer segment of this stream
                // means this one is complete (the writer rolls between
                // groups): move on, after one last read in case the final
                // group just landed.
                if !self.has_newer(listing) {
                    return Step::Nothing;
                }
                if self.fill() {
                    return Step::Again;
                }
                self.advance(listing, log, "ended early")
            }
            Frame::Corrupt(why) => self.advance(listing, log, why),
        }
    }

    /// The head record (after [`StreamReader::head`] gave its number) and
    /// where it is; the reader moves past it.
    pub fn take(&mut self) -> Option<(Record<'_>, Position)> {
        self.head.take()?;
        let at = self.position();
        // `head` checked these bytes.
        match decode_checked_frame(&self.buf[self.pos..self.end]) {
            Frame::Ok(r, len) => {
                self.pos += len;
                Some((r, at))
            }
            _ => None,
        }
    }

    fn position(&self) -> Position {
        Position {
            stream: self.stream,
            segment: self.file.as_ref().map_or(0, |(s, _)| *s),
            offset: self.file_at + self.pos as u64,
        }
    }

    /// Moves to the frame at `at` (a segment of this stream), so that it is
    /// the next one read; false if its segment is gone.
    pub fn seek(&mut self, at: Position, path: &std::path::Path) -> bool {
        let same = self.file.as_ref().is_some_and(|(s, _)| *s == at.segment);
        if !same {
            let Ok(file) = File::open(path) else {
                return false;
            };
            self.file = Some((at.segment, file));
        }
        let Some((_, file)) = self.file.as_mut() else {
            return false;
        };
        if file.seek(SeekFrom::Start(at.offset)).is_err() {
            return false;
        }
        (self.pos, self.end, self.file_at, self.head) = (0, 0, at.offset, None);
        true
    }

    /// The frame at the position ([`StreamReader::seek`]), reading as much
    /// as it needs.
    pub fn read_here(&mut self) -> Option<Record<'_>> {
        while matches!(
            decode_frame(&self.buf[self.pos..self.end]),
            Frame::Incomplete
        ) {
            if !self.fill() {
                return None;
            }
        }
        match decode_frame(&self.buf[self.pos..self.end]) {
            Frame::Ok(r, _) => Some(r),
            _ => None,
        }
    }

    fn has_newer(&self, listing: &[SegmentFile]) -> bool {
        let current = self.file.as_ref().map_or(0, |(f, _)| *f);
        listing
            .iter()
            .any(|s| s.stream == self.stream && s.first > current)
    }

    /// Reads more of the open segment; false at its end.
    fn fill(&mut self) -> bool {
        let Some((_, file)) = self.file.as_mut() else {
            return false;
        };
        if self.buf.is_empty() {
            self.buf = vec![0; READ_CHUNK];
        }
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

    /// Opens this stream's segment that holds `want`: the newest whose
    /// first record is not past it (or the oldest left).
    fn open_for(&mut self, want: u64, listing: &[SegmentFile]) -> bool {
        let mine = || listing.iter().filter(|s| s.stream == self.stream);
        let Some(seg) = mine().rfind(|s| s.first <= want).or_else(|| mine().next()) else {
            return false;
        };
        self.open(seg)
    }

    fn open(&mut self, seg: &SegmentFile) -> bool {
        match File::open(&seg.path) {
            Ok(f) => {
                self.file = Some((seg.first, f));
                (self.pos, self.end, self.file_at, self.head) = (0, 0, 0, None);
                true
            }
            Err(_) => {
                self.stalled = true;
                false
            }
        }
    }

    /// Leaves the open segment for the stream's next one; the bytes of this
    /// one after the current position are reported as lost.
    fn advance(&mut self, listing: &[SegmentFile], log: &mut RateLimit, why: &'static str) -> Step {
        let current = self.file.as_ref().map_or(0, |(f, _)| *f);
        let Some(next) = listing
            .iter()
            .find(|s| s.stream == self.stream && s.first > current)
        else {
            self.stalled = true;
            return Step::Nothing;
        };
        let at = self.file_at + self.pos as u64;
        let len = self
            .file
            .as_ref()
            .and_then(|(_, f)| f.metadata().ok())
            .map_or(at, |m| m.len());
        let lost = len.saturating_sub(at);
        if lost > 0 {
            crate::telemetry::metric::journal_corrupt(lost);
            if let Some(held) = log.check() {
                warn!(
                    lost_bytes = lost,
                    why,
                    suppressed = held,
                    "journal segment unreadable past this point; skipping to the next segment"
                );
            }
        }
        if self.open(next) {
            Step::Again
        } else {
            Step::Nothing
        }
    }
}
