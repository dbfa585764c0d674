//! Reading the journal in sequence order, following its writers: the
//! shipper and the attribution engine each have a [`Cursor`]. Each writer
//! appends to a stream of its own ([`super::segment`]); a cursor follows
//! every stream with a [`StreamReader`] and merges them by sequence
//! number, up to the journal's written mark: every record below it is in
//! its file (or never will be, a gap), so the smallest next record of all
//! streams is the journal's next.

use std::sync::Arc;

use super::progress::Shared;
use super::segment::SegmentFile;
use super::stream_reader::StreamReader;
use super::Record;
use crate::telemetry::RateLimit;

/// Reads records in sequence order, following the writers.
pub struct Cursor {
    shared: Arc<Shared>,
    /// The next sequence number wanted.
    next_seq: u64,
    streams: Vec<StreamReader>,
    /// The journal's segments, as last listed.
    listing: Vec<SegmentFile>,
    /// [`Shared::segments_created`] when they were listed.
    listed_at: Option<u64>,
    /// Rereads one record where it was seen ([`Cursor::read_at`]).
    reread: Option<StreamReader>,
    log: RateLimit,
}

/// Where a record's frame starts: enough to read it again without a scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// The stream that wrote it.
    pub stream: u32,
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
            streams: Vec::new(),
            listing: Vec::new(),
            listed_at: None,
            reread: None,
            log: RateLimit::new(10_000),
        }
    }

    /// The sequence number of the next record to read.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Calls `f` with up to `max` records, in order, borrowed from the read
    /// buffers (nothing is copied); returns how many.
    pub fn read_each(&mut self, max: usize, mut f: impl FnMut(Record<'_>)) -> usize {
        self.read_each_at(max, |r, _| f(r))
    }

    /// [`Cursor::read_each`], also telling where each record is.
    pub fn read_each_at(&mut self, max: usize, mut f: impl FnMut(Record<'_>, Position)) -> usize {
        // The mark first, then the listing: a segment is created before the
        // records in it are marked written, so the listing has every
        // segment holding a record below the mark.
        let limit = self.shared.written();
        self.refresh_listing();
        for s in &mut self.streams {
            s.dry = false;
        }
        let mut n = 0;
        let mut read_up = false;
        while n < max && self.next_seq < limit {
            let Some((_, i)) = self.next_stream().filter(|(seq, _)| *seq < limit) else {
                // Nothing below the mark is left to read (a record past
                // it is written, but a group below it is still being
                // written).
                read_up = true;
                break;
            };
            let Some((r, at)) = self.streams[i].take() else {
                break;
            };
            self.next_seq = r.seq + 1;
            f(r, at);
            n += 1;
        }
        if read_up && !self.streams.iter().any(|s| s.stalled) {
            // Every stream was read up to the mark: what is left below it
            // are gaps (numbers whose write failed), never records. Passing
            // them lets the shipper's checkpoint and the engine's wait move
            // on instead of waiting for them for good.
            self.next_seq = self.next_seq.max(limit);
        }
        n
    }

    /// The stream whose next record is the smallest.
    fn next_stream(&mut self) -> Option<(u64, usize)> {
        let Cursor {
            streams,
            listing,
            log,
            next_seq,
            ..
        } = self;
        let mut best: Option<(u64, usize)> = None;
        for (i, s) in streams.iter_mut().enumerate().filter(|(_, s)| !s.dry) {
            match s.head(*next_seq, listing, log) {
                Some(seq) if best.is_none_or(|(b, _)| seq < b) => best = Some((seq, i)),
                Some(_) => {}
                // Every record below the mark was in its file before the
                // mark was read: a stream with none now has none below it,
                // and is not asked again (a `read` each time) in this call.
                None => s.dry = true,
            }
        }
        best
    }

    /// Lists the segments again if one was created since, following any
    /// new stream, and forgetting streams whose segments are all deleted.
    fn refresh_listing(&mut self) {
        let created = self.shared.segments_created();
        if self.listed_at == Some(created) {
            return;
        }
        self.listing = self.shared.segments();
        self.listed_at = Some(created);
        let listing = &self.listing;
        self.streams
            .retain(|s| listing.iter().any(|f| f.stream == s.stream));
        for f in listing {
            if !self.streams.iter().any(|s| s.stream == f.stream) {
                self.streams.push(StreamReader::new(f.stream));
            }
        }
    }

    /// Calls `f` with the record `seq` read again where it was seen; false
    /// if it cannot be read there (its segment is gone).
    pub fn read_at(&mut self, seq: u64, at: Position, f: impl FnOnce(Record<'_>)) -> bool {
        let reader = self
            .reread
            .get_or_insert_with(|| StreamReader::new(at.stream));
        if reader.stream != at.stream {
            *reader = StreamReader::new(at.stream);
        }
        let path = super::segment::path(self.shared.dir(), at.stream, at.segment);
        if !reader.seek(at, &path) {
            return false;
        }
        match reader.read_here() {
            Some(r) if r.seq == seq => {
                f(r);
                true
            }
            _ => false,
        }
    }
}
