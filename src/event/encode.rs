//! JSON encoding straight into a caller's buffer: no intermediate values, no
//! allocation once the buffer has grown to fit an event.

use std::io::Write;

use super::{Body, ConversionSource, Event, NumericId, Touch, VERSION};

/// Appends one JSON object to a buffer, key by key.
pub struct JsonWriter<'b> {
    /// Where the object is written; the caller owns and reuses it.
    buf: &'b mut Vec<u8>,
    /// No comma before the first key.
    first: bool,
}

impl<'b> JsonWriter<'b> {
    pub fn object(buf: &'b mut Vec<u8>) -> Self {
        buf.push(b'{');
        JsonWriter { buf, first: true }
    }

    /// A JSON array of numbers.
    pub fn u64s(&mut self, k: &str, v: impl IntoIterator<Item = u64>) {
        self.key(k);
        self.buf.push(b'[');
        for (i, n) in v.into_iter().enumerate() {
            if i > 0 {
                self.buf.push(b',');
            }
            self.buf
                .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        }
        self.buf.push(b']');
    }

    pub fn end(self) {
        self.buf.push(b'}');
    }

    fn key(&mut self, k: &str) {
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
        self.buf.push(b'"');
        self.buf.extend_from_slice(k.as_bytes());
        self.buf.extend_from_slice(b"\":");
    }

    pub fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        write_str(self.buf, v);
    }

    pub fn opt_str(&mut self, k: &str, v: Option<&str>) {
        match v {
            Some(v) => self.str(k, v),
            None => self.null(k),
        }
    }

    pub fn i64(&mut self, k: &str, v: i64) {
        self.key(k);
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }

    pub fn u64(&mut self, k: &str, v: u64) {
        self.key(k);
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }

    pub fn opt_u64(&mut self, k: &str, v: Option<u64>) {
        match v {
            Some(v) => self.u64(k, v),
            None => self.null(k),
        }
    }

    pub fn bool(&mut self, k: &str, v: bool) {
        self.key(k);
        self.buf
            .extend_from_slice(if v { b"true" } else { b"false" });
    }

    pub fn null(&mut self, k: &str) {
        self.key(k);
        self.buf.extend_from_slice(b"null");
    }

    pub fn id<T: NumericId>(&mut self, k: &str, v: T) {
        self.u64(k, v.get() as u64);
    }

    pub fn opt_id<T: NumericId>(&mut self, k: &str, v: Option<T>) {
        self.opt_u64(k, v.map(|v| v.get() as u64));
    }

    pub fn ids<T: NumericId>(&mut self, k: &str, v: &[T]) {
        self.key(k);
        self.buf.push(b'[');
        for (i, id) in v.iter().enumerate() {
            if i > 0 {
                self.buf.push(b',');
            }
            self.buf
                .extend_from_slice(itoa::Buffer::new().format(id.get()).as_bytes());
        }
        self.buf.push(b']');
    }

    pub fn strs<'s>(&mut self, k: &str, v: impl IntoIterator<Item = &'s str>) {
        self.key(k);
        self.buf.push(b'[');
        for (i, s) in v.into_iter().enumerate() {
            if i > 0 {
                self.buf.push(b',');
            }
            write_str(self.buf, s);
        }
        self.buf.push(b']');
    }

    /// A nested array of objects, each written by `f`.
    pub fn objects<I>(&mut self, k: &str, items: I, mut f: impl FnMut(&mut JsonWriter<'_>, I::Item))
    where
        I: IntoIterator,
    {
        self.key(k);
        self.buf.push(b'[');
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.buf.push(b',');
            }
            let mut w = JsonWriter::object(self.buf);
            f(&mut w, item);
            w.end();
        }
        self.buf.push(b']');
    }

    /// A nested object, written by `f`.
    pub fn nested(&mut self, k: &str, f: impl FnOnce(&mut JsonWriter<'_>)) {
        self.key(k);
        let mut w = JsonWriter::object(self.buf);
        f(&mut w);
        w.end();
    }

    /// A value written with `Display` as a JSON string (ids, addresses).
    pub fn display(&mut self, k: &str, v: impl std::fmt::Display) {
        self.key(k);
        self.buf.push(b'"');
        let _ = write!(self.buf, "{v}");
        self.buf.push(b'"');
    }
}

/// A JSON string literal, escaping quotes, backslashes and control characters.
pub fn write_str(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    loop {
        // Most strings (user agents, URLs, ids) need no escaping at all:
        // skip clean runs eight bytes at a time.
        let i = start + clean_prefix(&bytes[start..]);
        buf.extend_from_slice(&bytes[start..i]);
        let Some(&b) = bytes.get(i) else { break };
        match b {
            b'"' => buf.extend_from_slice(b"\\\""),
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            _ => {
                let _ = write!(buf, "\\u{:04x}", b);
            }
        }
        start = i + 1;
    }
    buf.push(b'"');
}

/// True for the bytes a JSON string must escape: `"`, `\`, controls, DEL.
const fn escaped(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f
}

/// How many leading bytes need no escaping.
fn clean_prefix(bytes: &[u8]) -> usize {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    // A byte of `x` is zero exactly when the matching high bit is set here
    // (bytes below 0x80; bytes at or above 0x80 never need escaping and are
    // masked out by `!x`).
    let has_zero = |x: u64| x.wrapping_sub(LO) & !x & HI;
    let mut i = 0;
    while i + 8 <= bytes.len() {
        let x = u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap_or([0; 8]));
        let hit = (x.wrapping_sub(LO * 0x20) & !x & HI)
            | has_zero(x ^ (LO * b'"' as u64))
            | has_zero(x ^ (LO * b'\\' as u64))
            | has_zero(x ^ (LO * 0x7f));
        if hit != 0 {
            break;
        }
        i += 8;
    }
    while i < bytes.len() && !escaped(bytes[i]) {
        i += 1;
    }
    i
}

/// Appends `event` as one JSON object to `buf`.
pub fn encode(event: &Event<'_>, buf: &mut Vec<u8>) {
    let mut w = JsonWriter::object(buf);
    w.u64("v", VERSION as u64);
    common(&mut w, event);
    body(&mut w, &event.body);
    w.end();
}

/// The fields every event has, its type among them.
fn common(w: &mut JsonWriter<'_>, event: &Event<'_>) {
    let c = &event.common;
    w.str("event_id", c.event_id.to_hyphenated().as_str());
    w.str("type", event.kind().as_str());
    w.u64("ts", c.ts_ms);
    match c.uid {
        Some(uid) => w.str("uid", uid.to_hex().as_str()),
        None => w.null("uid"),
    }
    w.bool("new_uid", c.new_uid);
    match c.ip {
        Some(ip) => w.display("ip", ip),
        None => w.null("ip"),
    }
    w.opt_str("user_agent", c.user_agent.as_deref());
    w.opt_str("referer", c.referer.as_deref());
    w.strs("warnings", c.warnings.as_slice().iter().copied());
    w.opt_str("ivt", c.ivt);
    match c.consent.as_deref() {
        None => w.null("consent"),
        Some(k) => w.nested("consent", |o| consent(o, k)),
    }
}

/// The consent signals' object.
fn consent(o: &mut JsonWriter<'_>, k: &super::Consent<'_>) {
    match k.gdpr {
        Some(g) => o.bool("gdpr", g),
        None => o.null("gdpr"),
    }
    match &k.tcf {
        Some(t) => o.nested("tcf", |o| {
            o.u64s(
                "purposes",
                (1..=24u64).filter(|p| t.purposes & (1 << (p - 1)) != 0),
            );
            opt_bool(o, "vendor_storage", t.vendor_storage);
            opt_bool(o, "vendor_measurement", t.vendor_measurement);
            o.u64("cmp_id", t.cmp_id as u64);
        }),
        None => o.null("tcf"),
    }
    o.opt_str("tc_string", k.tc_string.as_deref());
    o.opt_str("gpp", k.gpp.as_deref());
    o.u64s("gpp_sid", k.gpp_sid.iter().map(|s| *s as u64));
}

/// The fields of the event's type.
fn body(w: &mut JsonWriter<'_>, body: &Body<'_>) {
    match body {
        Body::Impression(t) => touch(w, t),
        Body::Click(t) => {
            touch(w, t);
            let source = t.source_click.as_ref();
            w.opt_str("source_click_id", source.map(|s| s.id.as_ref()));
            w.opt_str("source_click_kind", source.map(|s| s.kind.as_str()));
        }
        Body::Conversion(cv) => conversion(w, cv),
        Body::Adjustment(a) => {
            w.str("adjustment", a.kind.as_str());
            conversion(w, &a.conversion);
        }
        Body::Segment(s) => {
            w.objects("adds", &s.adds, |o, (id, value)| {
                o.id("segment_id", *id);
                o.opt_u64("value", value.map(u64::from));
            });
            w.ids("removes", &s.removes);
            w.strs("add_codes", s.add_codes.iter().map(|c| c.as_ref()));
            w.strs("remove_codes", s.remove_codes.iter().map(|c| c.as_ref()));
            w.opt_id("member", s.member);
            w.opt_str("other", s.other.as_deref());
            w.opt_str("redir", s.redir.as_deref());
        }
        Body::OptOut => {}
        Body::UserSync(u) => {
            w.id("member", u.member);
            w.opt_str("partner_uid", u.partner_uid.as_deref());
            w.ids("segments", &u.segments);
            w.opt_str("redir", u.redir.as_deref());
        }
        Body::Invalid(inv) => {
            w.str("path", inv.path);
            w.str("query", inv.query);
            w.str("reason", inv.reason);
        }
    }
}

/// A conversion's fields (also an adjustment's: the conversion it names).
fn conversion(w: &mut JsonWriter<'_>, cv: &super::Conversion<'_>) {
    w.id("pixel_id", cv.pixel_id);
    w.id("advertiser_id", cv.advertiser_id);
    w.opt_str("order_id", cv.order_id.as_deref());
    w.opt_u64("value_micros", cv.value_micros);
    w.opt_str("other", cv.other.as_deref());
    w.ids("segments_added", &cv.segments_added);
    w.ids("segments_removed", &cv.segments_removed);
    w.opt_str("redir", cv.redir.as_deref());
    match &cv.click {
        Some(k) => w.nested("click_id", |o| {
            o.str("event_id", k.event_id.to_hyphenated().as_str());
            o.id("line_item_id", k.line_item);
            o.id("tracker_id", k.tracker);
            o.id("publisher_id", k.publisher);
            o.opt_id("placement_id", k.placement);
            if let Some(user) = k.user {
                o.str("uid", user.to_hex().as_str());
            }
        }),
        None => w.null("click_id"),
    }
    match cv.source {
        ConversionSource::Browser => w.str("source", "browser"),
        ConversionSource::Server {
            received_ts_ms,
            api_key,
        } => {
            w.str("source", "server");
            w.u64("received_ts", received_ts_ms);
            w.str("api_key", api_key.as_str());
        }
    }
}

fn opt_bool(w: &mut JsonWriter<'_>, k: &str, v: Option<bool>) {
    match v {
        Some(b) => w.bool(k, b),
        None => w.null(k),
    }
}

fn touch<T: NumericId>(w: &mut JsonWriter<'_>, t: &Touch<'_, T>) {
    w.id("tracker_id", t.tracker_id);
    w.id("line_item_id", t.line_item_id);
    w.id("advertiser_id", t.advertiser_id);
    w.id("publisher_id", t.publisher_id);
    w.opt_id("placement_id", t.placement_id);
    w.opt_str("cachebuster", t.cachebuster.as_deref());
    w.opt_u64("ancost_micros", t.ancost_micros);
    w.opt_str("redir", t.redir.as_deref());
    w.ids("segments_added", t.segments_added);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_into_valid_json() {
        let nasty = "a\"b\\c\nd\u{1}e\u{7f}é\u{2028}</script>";
        let mut buf = Vec::new();
        let mut w = JsonWriter::object(&mut buf);
        w.str("s", nasty);
        w.opt_str("n", None);
        w.u64("x", u64::MAX);
        w.end();
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["s"], nasty);
        assert!(v["n"].is_null());
        assert_eq!(v["x"], u64::MAX);
    }

    #[test]
    fn every_byte_at_every_offset_of_a_word_is_escaped_exactly_when_needed() {
        // The eight-byte scan must find an escapable byte wherever it sits,
        // next to any neighbour (borrows across bytes), and leave the rest.
        for c in (0u8..=0x7f)
            .map(char::from)
            .chain(['é', '\u{2028}', '\u{10348}'])
        {
            for at in 0..17 {
                let mut s = "abcdefghijklmnopq".to_string();
                s.insert(at, c);
                for pad in ["", "\u{0}", "\u{80}", " ", "\u{7f}"] {
                    let s = format!("{pad}{s}{pad}");
                    let mut buf = Vec::new();
                    write_str(&mut buf, &s);
                    let back: String = serde_json::from_slice(&buf).unwrap();
                    assert_eq!(back, s);
                    let raw = std::str::from_utf8(&buf).unwrap();
                    assert!(
                        !raw[1..raw.len() - 1].bytes().any(|b| b < 0x20 || b == 0x7f),
                        "{raw:?}"
                    );
                    if !s.bytes().any(escaped) {
                        assert_eq!(raw, format!("\"{s}\""));
                    }
                }
            }
        }
    }
}
