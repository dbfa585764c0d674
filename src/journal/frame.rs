//! The on-disk record: a 24-byte header (body length, CRC32, sequence number,
//! append time) and an opaque body: the Kafka message exactly as it will be
//! produced. The journal knows nothing of what the payload means; readers
//! that need more (the attribution engine) decode the payload themselves.
//!
//! ```text
//! u32 len | u32 crc32(seq, ts, body) | u64 seq | u64 ts_ms | body[len]
//! body v2 = u8 0x82 | u8 topic | u8 n_headers | (u8 name_len name u16 value_len value)*n
//!           | u16 key_len | key | u32 payload_len | payload | u16 aux_len | aux
//! body v1 = u8 topic | u8 kind | u16 key_len | key | u32 payload_len | payload | u8 input_len | input
//! ```
//!
//! Version 1 (releases up to 0.1.0 of session 2) began with the topic code
//! (0..=5) and carried the attribution engine's input; it is still read (its
//! `kind` becomes the `type` header, its input is ignored: the engine
//! re-derives it from the payload). `tests/fixtures/journal-v1` holds a
//! segment written by that release.

use crate::event::EventType;
use crate::sink::Topic;

pub const HEADER: usize = 24;
/// Larger bodies are refused at append: no event comes near it, and a
/// corrupt length can never make a reader allocate more.
pub const MAX_BODY: usize = 1 << 20;

/// The first byte of a version-2 body; version 1 began with a topic code
/// below 0x80, so the two never clash.
pub const VERSION_2: u8 = 0x82;

/// A record's Kafka headers, borrowed from the reader's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Headers<'a> {
    /// As encoded in a version-2 body.
    Encoded { count: u8, bytes: &'a [u8] },
    /// A version-1 body: only the `type` header, from its kind code.
    Legacy(EventType),
}

impl<'a> Headers<'a> {
    /// Each header as (name, value), in order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        let (mut count, mut rest, legacy) = match *self {
            Headers::Encoded { count, bytes } => (count, bytes, None),
            Headers::Legacy(kind) => (0, &[][..], Some(kind)),
        };
        let mut legacy = legacy;
        std::iter::from_fn(move || {
            if let Some(kind) = legacy.take() {
                return Some((crate::sink::headers::TYPE, kind.as_str().as_bytes()));
            }
            if count == 0 {
                return None;
            }
            count -= 1;
            let (name, value, tail) = split_header(rest)?;
            rest = tail;
            Some((name, value))
        })
    }

    /// The `type` header as an event type.
    pub fn kind(&self) -> Option<EventType> {
        self.iter()
            .find(|(n, _)| *n == crate::sink::headers::TYPE)
            .and_then(|(_, v)| EventType::parse(std::str::from_utf8(v).ok()?))
    }
}

fn split_header(b: &[u8]) -> Option<(&str, &[u8], &[u8])> {
    let n = *b.first()? as usize;
    let name = std::str::from_utf8(b.get(1..1 + n)?).ok()?;
    let at = 1 + n;
    let v = u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?) as usize;
    let value = b.get(at + 2..at + 2 + v)?;
    Some((name, value, &b[at + 2 + v..]))
}

/// A decoded record, borrowing from the reader's buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub seq: u64,
    pub ts_ms: u64,
    pub topic: Topic,
    pub headers: Headers<'a>,
    pub key: &'a [u8],
    pub payload: &'a [u8],
    /// Bytes for local readers, never produced to Kafka (empty in v1).
    pub aux: &'a [u8],
}

/// A topic's code: its index, its place in `Topic::ALL` (the declaration
/// order, which therefore only grows at its end).
fn topic_code(t: Topic) -> u8 {
    t.index() as u8
}

// A version-1 body starts with its topic code: no code may be taken for
// the version-2 tag, or fail to fit the byte.
const _: () = assert!(Topic::COUNT < VERSION_2 as usize);

/// Version-1 kind codes: the index in this list (the order of
/// [`EventType::ALL`], which must therefore only grow at its end; version 1
/// knew the first six).
const KINDS: [EventType; EventType::COUNT] = EventType::ALL;

/// Appends a version-2 record body to `out`. Header names are at most 255
/// bytes and values at most 65535 (longer ones are cut: pixeld's own are a
/// few bytes).
pub fn encode_body(
    out: &mut Vec<u8>,
    topic: Topic,
    headers: &[(&str, &[u8])],
    key: &[u8],
    payload: &[u8],
    aux: &[u8],
) {
    out.push(VERSION_2);
    out.push(topic_code(topic));
    out.push(headers.len().min(255) as u8);
    for (name, value) in headers.iter().take(255) {
        let name = &name.as_bytes()[..name.len().min(255)];
        let value = &value[..value.len().min(u16::MAX as usize)];
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        out.extend_from_slice(value);
    }
    out.extend_from_slice(&(key.len().min(u16::MAX as usize) as u16).to_le_bytes());
    out.extend_from_slice(&key[..key.len().min(u16::MAX as usize)]);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    let aux = &aux[..aux.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(aux.len() as u16).to_le_bytes());
    out.extend_from_slice(aux);
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
    decode(buf, true)
}

/// [`decode_frame`] for bytes it already found valid: the checksum is not
/// computed again (a reader that looks at a record before taking it).
pub fn decode_checked_frame(buf: &[u8]) -> Frame<'_> {
    decode(buf, false)
}

fn decode(buf: &[u8], check: bool) -> Frame<'_> {
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
    if check && crc32fast::hash(&buf[8..HEADER + len]) != crc {
        return Frame::Corrupt("checksum mismatch");
    }
    let seq = u64::from_le_bytes(buf[8..16].try_into().unwrap_or_default());
    let ts_ms = u64::from_le_bytes(buf[16..24].try_into().unwrap_or_default());
    let body = &buf[HEADER..HEADER + len];
    let decoded = match body.first() {
        Some(&VERSION_2) => decode_v2(body, seq, ts_ms),
        Some(code) if (*code as usize) < Topic::COUNT => decode_v1(body, seq, ts_ms),
        _ => None,
    };
    match decoded {
        Some(r) => Frame::Ok(r, HEADER + len),
        None => Frame::Corrupt("malformed body"),
    }
}

fn decode_v2(b: &[u8], seq: u64, ts_ms: u64) -> Option<Record<'_>> {
    let topic = *Topic::ALL.get(*b.get(1)? as usize)?;
    let count = *b.get(2)?;
    let mut rest = b.get(3..)?;
    let start = rest;
    for _ in 0..count {
        rest = split_header(rest)?.2;
    }
    let headers = Headers::Encoded {
        count,
        bytes: &start[..start.len() - rest.len()],
    };
    let key_len = u16::from_le_bytes(rest.get(0..2)?.try_into().ok()?) as usize;
    let key = rest.get(2..2 + key_len)?;
    let at = 2 + key_len;
    let payload_len = u32::from_le_bytes(rest.get(at..at + 4)?.try_into().ok()?) as usize;
    let payload = rest.get(at + 4..at + 4 + payload_len)?;
    let at = at + 4 + payload_len;
    let aux_len = u16::from_le_bytes(rest.get(at..at + 2)?.try_into().ok()?) as usize;
    let aux = rest.get(at + 2..at + 2 + aux_len)?;
    Some(Record {
        seq,
        ts_ms,
        topic,
        headers,
        key,
        payload,
        aux,
    })
}

fn decode_v1(b: &[u8], seq: u64, ts_ms: u64) -> Option<Record<'_>> {
    let topic = *Topic::ALL.get(*b.first()? as usize)?;
    let kind = *KINDS.get(*b.get(1)? as usize)?;
    let key_len = u16::from_le_bytes(b.get(2..4)?.try_into().ok()?) as usize;
    let key = b.get(4..4 + key_len)?;
    let at = 4 + key_len;
    let payload_len = u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize;
    let payload = b.get(at + 4..at + 4 + payload_len)?;
    // The engine input that followed (u8 length, then bytes) is not needed.
    let input_len = *b.get(at + 4 + payload_len)? as usize;
    b.get(at + 5 + payload_len..at + 5 + payload_len + input_len)?;
    Some(Record {
        seq,
        ts_ms,
        topic,
        headers: Headers::Legacy(kind),
        key,
        payload,
        aux: &[],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64, headers: &[(&str, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        encode_body(
            &mut body,
            Topic::Conversions,
            headers,
            b"abc",
            b"{\"x\":1}",
            b"aux",
        );
        let mut out = Vec::new();
        encode_frame(&mut out, seq, 77, &body);
        out
    }

    #[test]
    fn round_trip_with_any_headers() {
        for headers in [
            &[][..],
            &[("type", &b"conversion"[..])][..],
            &[("type", &b"click"[..]), ("trace", &b"\x00\xff"[..])][..],
        ] {
            let bytes = frame(42, headers);
            match decode_frame(&bytes) {
                Frame::Ok(r, n) => {
                    assert_eq!(n, bytes.len());
                    assert_eq!((r.seq, r.ts_ms, r.topic), (42, 77, Topic::Conversions));
                    assert_eq!((r.key, r.payload), (&b"abc"[..], &b"{\"x\":1}"[..]));
                    assert_eq!(r.headers.iter().collect::<Vec<_>>(), headers.to_vec());
                    assert_eq!(r.aux, b"aux");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_version_1_body_reads_with_its_kind_as_the_type_header() {
        // u8 topic | u8 kind | u16 key_len | key | u32 len | payload | u8 input_len | input
        let mut body = vec![2, 2, 3, 0];
        body.extend_from_slice(b"abc");
        body.extend_from_slice(&7u32.to_le_bytes());
        body.extend_from_slice(b"{\"x\":1}");
        body.extend_from_slice(&[2, 9, 9]);
        let mut bytes = Vec::new();
        encode_frame(&mut bytes, 5, 6, &body);
        let Frame::Ok(r, _) = decode_frame(&bytes) else {
            panic!("not read")
        };
        assert_eq!(r.topic, Topic::Conversions);
        assert_eq!(r.headers.kind(), Some(EventType::Conversion));
        assert_eq!(r.payload, b"{\"x\":1}");
    }

    #[test]
    fn torn_and_corrupt_frames_are_told_apart() {
        let bytes = frame(1, &[]);
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
