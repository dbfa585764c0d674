//! The traffic source's own click id as a click records it (found by
//! [`crate::pixel::source_click`]), and the owned form the attribution
//! engine keeps until the click's conversion is credited.

use std::borrow::Cow;

/// Longest id kept: Google's and Meta's ids are about 100 characters; a
/// longer value is not a click id but padding.
pub const MAX_LEN: usize = 256;

crate::indexed::indexed_enum! {
    /// Which parameter carried the id: a postback destination takes `Source`,
    /// Meta's Conversions API `Fbclid`, Google's upload `Gclid`, `Gbraid` or
    /// `Wbraid`.
    ///
    /// The declaration order (`ALL`'s) is the order they are looked for: the
    /// configured parameter wins. The text (`as_str`, `parse`) is the event's
    /// `source_click_kind`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
    pub enum SourceClickKind {
        Source => "source",
        Gclid => "gclid",
        Gbraid => "gbraid",
        Wbraid => "wbraid",
        Fbclid => "fbclid",
    }
}

impl SourceClickKind {
    /// The kind's code in the binary forms (journal aux bytes, snapshot,
    /// changelog): written by an exhaustive match and never changed, since
    /// stored values outlive releases.
    pub fn code(self) -> u8 {
        match self {
            SourceClickKind::Source => 1,
            SourceClickKind::Gclid => 2,
            SourceClickKind::Gbraid => 3,
            SourceClickKind::Wbraid => 4,
            SourceClickKind::Fbclid => 5,
        }
    }

    pub fn of_code(code: u8) -> Option<SourceClickKind> {
        SourceClickKind::ALL.into_iter().find(|k| k.code() == code)
    }

    /// The query parameter this kind is read from.
    pub fn param(self, source_param: &str) -> &str {
        match self {
            SourceClickKind::Source => source_param,
            other => other.as_str(),
        }
    }
}

/// A source click id as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceClick<'a> {
    pub kind: SourceClickKind,
    pub id: Cow<'a, str>,
}

/// The characters click ids (and partners' user ids) are made of (base64url, UUIDs, numbers, the
/// separators trackers use), and nothing that could be read as markup,
/// quoting or another parameter.
pub fn plausible(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~:+/=".contains(&b))
}

/// A source click id the attribution engine holds on to: the click's event
/// borrows from its request, the engine's input and state outlive it. The
/// id is boxed to its own length (16 bytes inline): a click without one
/// costs an engine input nothing, and one with an id costs what the id is
/// long, not [`MAX_LEN`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct OwnedSourceClick {
    pub kind: SourceClickKind,
    pub id: Box<str>,
}

impl OwnedSourceClick {
    /// None unless `id` is [`plausible`]: whatever stored form it came
    /// from, the engine only ever hands back what a click could record.
    pub fn new(kind: SourceClickKind, id: &str) -> Option<OwnedSourceClick> {
        plausible(id).then(|| OwnedSourceClick {
            kind,
            id: id.into(),
        })
    }

    /// The binary form: `u8 kind code | u16 length | the id's bytes`.
    pub fn put(&self, out: &mut Vec<u8>) {
        out.push(self.kind.code());
        out.extend_from_slice(&(self.id.len() as u16).to_le_bytes());
        out.extend_from_slice(self.id.as_bytes());
    }

    /// Reads [`OwnedSourceClick::put`]'s form off the front of `bytes`;
    /// returns it and the rest, or what is wrong with it.
    pub fn take(bytes: &[u8]) -> Result<(OwnedSourceClick, &[u8]), String> {
        let [code, a, b, rest @ ..] = bytes else {
            return Err("truncated source click".into());
        };
        let kind =
            SourceClickKind::of_code(*code).ok_or(format!("unknown source click kind {code}"))?;
        let len = u16::from_le_bytes([*a, *b]) as usize;
        if len == 0 || len > MAX_LEN {
            return Err(format!("source click id of {len} bytes"));
        }
        let (id, rest) = rest
            .split_at_checked(len)
            .ok_or("truncated source click id")?;
        let id = std::str::from_utf8(id).map_err(|_| "source click id is not UTF-8")?;
        let click = OwnedSourceClick::new(kind, id)
            .ok_or("source click id with characters no click id has")?;
        Ok((click, rest))
    }
}

impl From<&SourceClick<'_>> for OwnedSourceClick {
    fn from(s: &SourceClick<'_>) -> OwnedSourceClick {
        OwnedSourceClick {
            kind: s.kind,
            id: s.id.as_ref().into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_code_and_name() {
        for k in SourceClickKind::ALL {
            assert_eq!(SourceClickKind::of_code(k.code()), Some(k));
            assert_eq!(SourceClickKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(SourceClickKind::of_code(0), None);
        assert_eq!(SourceClickKind::of_code(6), None);
        assert_eq!(SourceClickKind::parse("msclkid"), None);
    }

    #[test]
    fn the_binary_form_round_trips_and_refuses_damage_by_name() {
        let s = OwnedSourceClick::new(SourceClickKind::Fbclid, "IwAR2abc").unwrap();
        let mut buf = Vec::new();
        s.put(&mut buf);
        buf.push(0xaa);
        let (back, rest) = OwnedSourceClick::take(&buf).unwrap();
        assert_eq!((back, rest), (s, &[0xaa][..]));
        for cut in 0..buf.len() - 1 {
            assert!(OwnedSourceClick::take(&buf[..cut]).is_err(), "cut at {cut}");
        }
        let err = |b: &[u8]| OwnedSourceClick::take(b).unwrap_err();
        assert!(err(&[9, 1, 0, b'a']).contains("kind 9"));
        assert!(err(&[1, 0, 0]).contains("0 bytes"));
        assert!(err(&[1, 1, 1]).contains("257 bytes"));
        assert!(err(&[1, 1, 0, b'"']).contains("characters"));
        assert!(err(&[1, 1, 0, 0xff]).contains("UTF-8"));
    }
}
