//! The little-endian pieces both stored forms of the state share (the
//! snapshot file and the cluster's changelog values): a stored touch, and a
//! reader that checks every bound.

use super::state::Mark;
use crate::ids::{EventId, PlacementId, PublisherId};

/// A touch as stored: `u128 event id | u32 tracker | u32 publisher | u32
/// placement (0 none)`, 28 bytes; an all-zero event id is "no touch".
pub fn put_mark(out: &mut Vec<u8>, m: &Mark) {
    out.extend_from_slice(&m.event_id().0.to_le_bytes());
    out.extend_from_slice(&m.tracker().to_le_bytes());
    out.extend_from_slice(&m.publisher().0.to_le_bytes());
    out.extend_from_slice(&m.placement().map_or(0, |p| p.0).to_le_bytes());
}

/// Bounds-checked little-endian reads over stored bytes.
pub struct Reader<'a> {
    pub bytes: &'a [u8],
    pub at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8], at: usize) -> Reader<'a> {
        Reader { bytes, at }
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let end = self
            .at
            .checked_add(N)
            .filter(|e| *e <= self.bytes.len())
            .ok_or("truncated")?;
        let mut a = [0u8; N];
        a.copy_from_slice(&self.bytes[self.at..end]);
        self.at = end;
        Ok(a)
    }
    pub fn u8(&mut self) -> Result<u8, String> {
        self.take::<1>().map(|[b]| b)
    }
    pub fn u16(&mut self) -> Result<u16, String> {
        self.take::<2>().map(u16::from_le_bytes)
    }
    pub fn u32(&mut self) -> Result<u32, String> {
        self.take::<4>().map(u32::from_le_bytes)
    }
    pub fn u64(&mut self) -> Result<u64, String> {
        self.take::<8>().map(u64::from_le_bytes)
    }
    pub fn u128(&mut self) -> Result<u128, String> {
        self.take::<16>().map(u128::from_le_bytes)
    }
    /// A stored touch; an all-zero event id reads as "no touch".
    pub fn mark(&mut self) -> Result<Mark, String> {
        let event = EventId(self.u128()?);
        let tracker = self.u32()?;
        let publisher = PublisherId(self.u32()?);
        let placement = Some(self.u32()?).filter(|p| *p != 0).map(PlacementId);
        Ok(if event.0 == 0 {
            Mark::default()
        } else {
            Mark::new(event, tracker, publisher, placement)
        })
    }
    /// Whether every byte was read.
    pub fn done(&self) -> bool {
        self.at == self.bytes.len()
    }
}
