//! The on-disk record: a 24-byte header (body length, CRC32, sequence number,
//! append time) and a body holding the Kafka message plus, for events the
//! attribution engine needs, its compact input.
//!
//! ```text
//! u32 len | u32 crc32(seq, ts, body) | u64 seq | u64 ts_ms | body[len]
//! body = u8 topic | u8 kind | u16 key_len | key | u32 payload_len | payload | u8 input_len | input
//! ```

use crate::attribution::{ConversionInput, Input, Mark, OrderId, TouchKind};
use crate::event::EventType;
use crate::ids::{AdvertiserId, EventId, LineItemId, PixelId, PlacementId, PublisherId, UserId};
use crate::sink::Topic;

pub const HEADER: usize = 24;
/// Larger bodies are refused at append: no event comes near it, and a
/// corrupt length can never make a reader allocate more.
pub const MAX_BODY: usize = 1 << 20;

/// A decoded record, borrowing from the reader's buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub seq: u64,
    pub ts_ms: u64,
    pub topic: Topic,
    pub kind: EventType,
    pub key: &'a [u8],
    pub payload: &'a [u8],
    pub input: Option<Input>,
}

fn topic_code(t: Topic) -> u8 {
    Topic::ALL.iter().position(|x| *x == t).unwrap_or(0) as u8
}

const KINDS: [EventType; 6] = [
    EventType::Impression,
    EventType::Click,
    EventType::Conversion,
    EventType::Segment,
    EventType::Invalid,
    EventType::Attribution,
];

/// Appends a record body to `out`.
pub fn encode_body(
    out: &mut Vec<u8>,
    topic: Topic,
    kind: EventType,
    key: &[u8],
    payload: &[u8],
    input: Option<&Input>,
) {
    out.push(topic_code(topic));
    out.push(KINDS.iter().position(|k| *k == kind).unwrap_or(0) as u8);
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    let len_at = out.len();
    out.push(0);
    if let Some(input) = input {
        encode_input(out, input);
        out[len_at] = (out.len() - len_at - 1) as u8;
    }
}

/// Frames `body` as record `seq` into `out`.
pub fn encode_frame(out: &mut Vec<u8>, seq: u64, ts_ms: u64, body: &[u8]) {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(&ts_ms.to_le_bytes());
    h.update(body);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&ts_ms.to_le_bytes());
    out.extend_from_slice(body);
}

/// What [`decode_frame`] found at an offset.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A whole, valid record, and the bytes it spans.
    Ok(Record<'a>, usize),
    /// Not enough bytes for a whole record (the tail of a file being written,
    /// or torn by a crash).
    Incomplete,
    /// The bytes are there but do not check out.
    Corrupt(&'static str),
}

/// Reads one framed record from the start of `buf`.
pub fn decode_frame(buf: &[u8]) -> Frame<'_> {
    if buf.len() < HEADER {
        return Frame::Incomplete;
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().unwrap_or_default()) as usize;
    if len > MAX_BODY {
        return Frame::Corrupt("length out of range");
    }
    if buf.len() < HEADER + len {
        return Frame::Incomplete;
    }
    let crc = u32::from_le_bytes(buf[4..8].try_into().unwrap_or_default());
    if crc32fast::hash(&buf[8..HEADER + len]) != crc {
        return Frame::Corrupt("checksum mismatch");
    }
    let seq = u64::from_le_bytes(buf[8..16].try_into().unwrap_or_default());
    let ts_ms = u64::from_le_bytes(buf[16..24].try_into().unwrap_or_default());
    match decode_body(&buf[HEADER..HEADER + len], seq, ts_ms) {
        Some(r) => Frame::Ok(r, HEADER + len),
        None => Frame::Corrupt("malformed body"),
    }
}

fn decode_body(b: &[u8], seq: u64, ts_ms: u64) -> Option<Record<'_>> {
    let topic = *Topic::ALL.get(*b.first()? as usize)?;
    let kind = *KINDS.get(*b.get(1)? as usize)?;
    let key_len = u16::from_le_bytes(b.get(2..4)?.try_into().ok()?) as usize;
    let key = b.get(4..4 + key_len)?;
    let at = 4 + key_len;
    let payload_len = u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize;
    let payload = b.get(at + 4..at + 4 + payload_len)?;
    let at = at + 4 + payload_len;
    let input_len = *b.get(at)? as usize;
    let input = match input_len {
        0 => None,
        n => Some(decode_input(b.get(at + 1..at + 1 + n)?)?),
    };
    Some(Record {
        seq,
        ts_ms,
        topic,
        kind,
        key,
        payload,
        input,
    })
}

fn encode_input(out: &mut Vec<u8>, input: &Input) {
    match input {
        Input::Touch {
            uid,
            kind,
            line_item,
            mark,
        } => {
            out.push(match kind {
                TouchKind::View => 1,
                TouchKind::Click => 2,
            });
            out.extend_from_slice(&uid.0.to_le_bytes());
            out.extend_from_slice(&line_item.0.to_le_bytes());
            out.extend_from_slice(&mark.event_id().0.to_le_bytes());
            out.extend_from_slice(&mark.tracker().to_le_bytes());
            out.extend_from_slice(&mark.publisher().0.to_le_bytes());
            out.extend_from_slice(&mark.placement().map_or(0, |p| p.0).to_le_bytes());
        }
        Input::Conversion(c) => {
            out.push(3);
            out.push(c.uid.is_some() as u8);
            out.extend_from_slice(&c.uid.map_or(0, |u| u.0).to_le_bytes());
            out.extend_from_slice(&c.event_id.0.to_le_bytes());
            out.extend_from_slice(&c.ts_ms.to_le_bytes());
            out.extend_from_slice(&c.pixel.0.to_le_bytes());
            out.extend_from_slice(&c.advertiser.0.to_le_bytes());
            let order = c.order_id.as_ref().map_or("", |o| o.as_str());
            out.push(order.len() as u8);
            out.extend_from_slice(order.as_bytes());
            out.push(c.value_micros.is_some() as u8);
            out.extend_from_slice(&c.value_micros.unwrap_or(0).to_le_bytes());
        }
    }
}

struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)?.try_into().ok().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)?.try_into().ok().map(u64::from_le_bytes)
    }
    fn u128(&mut self) -> Option<u128> {
        self.take(16)?.try_into().ok().map(u128::from_le_bytes)
    }
}

fn decode_input(b: &[u8]) -> Option<Input> {
    let mut r = Bytes(b);
    match r.u8()? {
        tag @ (1 | 2) => {
            let kind = if tag == 1 {
                TouchKind::View
            } else {
                TouchKind::Click
            };
            let uid = UserId(r.u128()?);
            let line_item = LineItemId(r.u32()?);
            let event = EventId(r.u128()?);
            let tracker = r.u32()?;
            let publisher = PublisherId(r.u32()?);
            let placement = Some(r.u32()?).filter(|p| *p != 0).map(PlacementId);
            Some(Input::Touch {
                uid,
                kind,
                line_item,
                mark: Mark::new(event, tracker, publisher, placement),
            })
        }
        3 => {
            let has_uid = r.u8()? == 1;
            let uid = r.u128()?;
            let event_id = EventId(r.u128()?);
            let ts_ms = r.u64()?;
            let pixel = PixelId(r.u32()?);
            let advertiser = AdvertiserId(r.u32()?);
            let n = r.u8()? as usize;
            let order = std::str::from_utf8(r.take(n)?).ok()?;
            let has_value = r.u8()? == 1;
            let value = r.u64()?;
            Some(Input::Conversion(ConversionInput {
                uid: has_uid.then_some(UserId(uid)),
                event_id,
                ts_ms,
                pixel,
                advertiser,
                order_id: OrderId::new(order),
                value_micros: has_value.then_some(value),
            }))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64, input: Option<&Input>) -> Vec<u8> {
        let mut body = Vec::new();
        encode_body(
            &mut body,
            Topic::Conversions,
            EventType::Conversion,
            b"abc",
            b"{\"x\":1}",
            input,
        );
        let mut out = Vec::new();
        encode_frame(&mut out, seq, 77, &body);
        out
    }

    #[test]
    fn round_trip_with_and_without_input() {
        let conv = Input::Conversion(ConversionInput {
            uid: Some(UserId(5)),
            event_id: EventId::new_v7(9),
            ts_ms: 9,
            pixel: PixelId(7313),
            advertiser: AdvertiserId(100),
            order_id: OrderId::new("ORD1"),
            value_micros: Some(5),
        });
        let touch = Input::Touch {
            uid: UserId(u128::MAX),
            kind: TouchKind::Click,
            line_item: LineItemId(3),
            mark: Mark::new(EventId::new_v7(1), 2, PublisherId(3), None),
        };
        for input in [None, Some(conv), Some(touch)] {
            let bytes = frame(42, input.as_ref());
            match decode_frame(&bytes) {
                Frame::Ok(r, n) => {
                    assert_eq!(n, bytes.len());
                    assert_eq!(
                        (r.seq, r.ts_ms, r.topic, r.kind),
                        (42, 77, Topic::Conversions, EventType::Conversion)
                    );
                    assert_eq!((r.key, r.payload), (&b"abc"[..], &b"{\"x\":1}"[..]));
                    assert_eq!(r.input, input);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn torn_and_corrupt_frames_are_told_apart() {
        let bytes = frame(1, None);
        for cut in [0, 10, HEADER, bytes.len() - 1] {
            assert_eq!(
                decode_frame(&bytes[..cut]),
                Frame::Incomplete,
                "cut at {cut}"
            );
        }
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(decode_frame(&flipped), Frame::Corrupt("checksum mismatch"));
        let mut huge = bytes.clone();
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_frame(&huge), Frame::Corrupt("length out of range"));
    }
}
