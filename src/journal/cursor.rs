//! Reading the journal in sequence order, following the writer: the
//! shipper and the attribution engine each have a [`Cursor`]. Records are
//! lent from a read buffer, never copied. At the end of a segment a reader
//! moves on only once a newer one exists (the writer rolls between
//! groups); a damaged segment is skipped from the damage on, and the
//! records lost are counted.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

use tracing::warn;

use super::frame::{decode_frame, Frame};
use super::progress::Shared;
use super::{segment, Record};
use crate::telemetry::RateLimit;

/// How much a reader asks the file for at once.
const READ_CHUNK: usize = 256 * 1024;

/// Reads records in sequence order, following the writer.
pub struct Cursor {
    shared: Arc<Shared>,
    /// The next sequence number wanted.
    next_seq: u64,
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

    /// The sequence number of the next record to read.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Moves to the record `seq`, where an earlier cursor saw it, so that it
    /// is read next; false if its segment is gone.
    pub fn seek(&mut self, seq: u64, at: Position) -> bool {
        let Ok(mut file) = File::open(segment::path(self.shared.dir(), at.segment)) else {
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
        self.shared.current_segment() > current
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
