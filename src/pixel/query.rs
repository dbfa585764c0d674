//! Zero-copy pixel query parsing.
//!
//! [`Query::parse`] makes one pass over the raw query and keeps borrowed
//! slices of the values it knows; nothing is decoded or copied until a handler
//! asks for a value, and a value is copied only when percent-decoding changes
//! its bytes.

use std::borrow::Cow;

crate::indexed::indexed_enum! {
    /// The query parameters any pixel understands, by their names in the
    /// query (`as_str`, and `parse` back). Unknown keys are ignored, as ad
    /// servers append their own.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    #[repr(u8)]
    pub enum Key {
        Id => "id",
        Cachebuster => "cachebuster",
        Ancost => "ancost",
        T => "t",
        OrderId => "order_id",
        Value => "value",
        Other => "other",
        Seg => "seg",
        Remove => "remove",
        Add => "add",
        AddCode => "add_code",
        RemoveCode => "remove_code",
        Member => "member",
        /// A click id handed back with a conversion.
        Clid => "clid",
        Gdpr => "gdpr",
        GdprConsent => "gdpr_consent",
        Gpp => "gpp",
        GppSid => "gpp_sid",
        /// The cookie bounce's marker (`cookie.bounce`).
        Bounced => "pxbounce",
        /// A partner's id for the browser (`/mapuid`).
        User => "user",
    }
}

/// Why a query could not be parsed at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryError {
    /// The raw query is longer than `server.max_query_bytes`.
    TooLong,
}

/// A value as a handler sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Param<'a> {
    /// Not given, empty, or an unreplaced placeholder such as `[CACHEBUSTER]`.
    Absent,
    /// The decoded value; borrowed unless decoding changed it.
    Present(Cow<'a, str>),
    /// A bad percent sequence, or bytes that decode to invalid UTF-8.
    Malformed,
}

impl<'a> Param<'a> {
    pub fn is_absent(&self) -> bool {
        matches!(self, Param::Absent)
    }
}

/// The known parameters of one pixel request, borrowed from its URI.
#[derive(Clone, Debug, Default)]
pub struct Query<'a> {
    /// Raw (undecoded) value of each known key; the first occurrence wins.
    values: [Option<&'a str>; Key::COUNT],
    /// Everything after the first `redir=`, `&` and `=` included.
    redir: Option<&'a str>,
}

impl<'a> Query<'a> {
    /// Splits `raw` (the part of the URI after `?`) into its known parameters.
    pub fn parse(raw: &'a str, max_len: usize) -> Result<Self, QueryError> {
        if raw.len() > max_len {
            return Err(QueryError::TooLong);
        }
        let mut q = Query::default();
        let bytes = raw.as_bytes();
        let mut start = 0;
        while start <= bytes.len() {
            let end = memchr(b'&', &bytes[start..]).map_or(bytes.len(), |i| start + i);
            let pair = &bytes[start..end];
            // `&` and `=` are ASCII: the key's ends are character boundaries.
            let (key, value_start, has_eq) = match memchr(b'=', pair) {
                Some(eq) => (&raw[start..start + eq], start + eq + 1, true),
                None => (&raw[start..end], end, false),
            };
            if has_eq && key == "redir" {
                // The target is the rest of the query, whatever it contains.
                q.redir = Some(&raw[value_start.min(raw.len())..]);
                break;
            }
            if let Some(k) = Key::parse(key) {
                let slot = &mut q.values[k.index()];
                if slot.is_none() {
                    *slot = Some(&raw[value_start..end]);
                }
            }
            start = end + 1;
        }
        Ok(q)
    }

    /// The raw, undecoded value of `key`, as it appeared first.
    pub fn raw(&self, key: Key) -> Option<&'a str> {
        self.values[key.index()]
    }

    /// The decoded value of `key` (`+` is a space, `%XX` a byte).
    pub fn param(&self, key: Key) -> Param<'a> {
        match self.raw(key) {
            None => Param::Absent,
            Some(raw) => match decode(raw, true) {
                Err(_) => Param::Malformed,
                Ok(v) if v.is_empty() || is_placeholder(&v) => Param::Absent,
                Ok(v) => Param::Present(v),
            },
        }
    }

    /// The redirect target: the raw tail after `redir=`, decoded once if the
    /// ad server encoded it (`https%3A%2F%2F...`).
    pub fn redir(&self) -> Param<'a> {
        let Some(raw) = self.redir else {
            return Param::Absent;
        };
        if raw.is_empty() || is_placeholder(raw) {
            return Param::Absent;
        }
        if raw.contains("://") {
            return Param::Present(Cow::Borrowed(raw));
        }
        match decode(raw, false) {
            Ok(decoded) if is_placeholder(&decoded) => Param::Absent,
            Ok(decoded) if decoded.contains("://") => Param::Present(decoded),
            // Not a URL either way: the validator will say why.
            Ok(_) => Param::Present(Cow::Borrowed(raw)),
            Err(_) => Param::Malformed,
        }
    }

    /// The raw redirect tail, before any decoding.
    pub fn raw_redir(&self) -> Option<&'a str> {
        self.redir
    }
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

/// A percent sequence was not two hex digits, or the bytes were not UTF-8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeError;

/// Percent-decodes `raw`, borrowing when nothing needs decoding.
pub fn decode(raw: &str, plus_is_space: bool) -> Result<Cow<'_, str>, DecodeError> {
    let bytes = raw.as_bytes();
    let needs = bytes
        .iter()
        .any(|&b| b == b'%' || (plus_is_space && b == b'+'));
    if !needs {
        return Ok(Cow::Borrowed(raw));
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = bytes.get(i + 1).and_then(|&b| hex_val(b));
                let lo = bytes.get(i + 2).and_then(|&b| hex_val(b));
                match (hi, lo) {
                    (Some(h), Some(l)) => out.push(h << 4 | l),
                    _ => return Err(DecodeError),
                }
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| DecodeError)
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// An unreplaced ad-server or platform macro: `[UPPER_CASE]` or `${UPPER_CASE}`
/// as the whole value.
pub fn is_placeholder(v: &str) -> bool {
    let inner = if let Some(rest) = v.strip_prefix("${") {
        rest.strip_suffix('}')
    } else if let Some(rest) = v.strip_prefix('[') {
        rest.strip_suffix(']')
    } else {
        None
    };
    match inner {
        Some(name) => {
            name.as_bytes().first().is_some_and(u8::is_ascii_uppercase)
                && name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 8192;

    fn present(s: &str) -> Param<'_> {
        Param::Present(Cow::Borrowed(s))
    }

    #[test]
    fn the_exported_impression_tag_with_unreplaced_placeholders() {
        let q = Query::parse(
            "id=2766&cachebuster=[CACHEBUSTER]&ancost=[ANCOST]&t=2&redir=[REDIRECT_URL]",
            MAX,
        )
        .unwrap();
        assert_eq!(q.param(Key::Id), present("2766"));
        assert_eq!(q.param(Key::Cachebuster), Param::Absent);
        assert_eq!(q.param(Key::Ancost), Param::Absent);
        assert_eq!(q.param(Key::T), present("2"));
        assert_eq!(q.redir(), Param::Absent);
    }

    #[test]
    fn the_impression_tag_as_an_ad_server_fills_it() {
        let q = Query::parse(
            "id=2766&cachebuster=839201&ancost=0.42&t=2&redir=https://ads.example.com/land?a=1&b=2",
            MAX,
        )
        .unwrap();
        assert_eq!(q.param(Key::Cachebuster), present("839201"));
        assert_eq!(q.param(Key::Ancost), present("0.42"));
        assert_eq!(q.redir(), present("https://ads.example.com/land?a=1&b=2"));
    }

    #[test]
    fn the_click_tracker_and_conversion_examples() {
        let q = Query::parse(
            "id=21378&cachebuster=[CACHEBUSTER]&ancost=[ANCOST]&redir=[REDIRECT_URL]",
            MAX,
        )
        .unwrap();
        assert_eq!(q.param(Key::Id), present("21378"));
        assert_eq!(q.redir(), Param::Absent);
        let q = Query::parse("id=7313&t=1", MAX).unwrap();
        assert_eq!(q.param(Key::Id), present("7313"));
        assert_eq!(q.param(Key::T), present("1"));
        let q = Query::parse("id=8371&t=2", MAX).unwrap();
        assert_eq!(q.param(Key::T), present("2"));
    }

    #[test]
    fn redir_keeps_its_own_ampersands_and_equals_and_stops_parsing() {
        let q = Query::parse("id=1&redir=https://x.example/?id=9&t=1&redir=2", MAX).unwrap();
        assert_eq!(q.param(Key::Id), present("1"));
        assert_eq!(q.param(Key::T), Param::Absent);
        assert_eq!(q.redir(), present("https://x.example/?id=9&t=1&redir=2"));
    }

    #[test]
    fn redir_must_be_a_whole_key_with_its_equals_sign() {
        let q = Query::parse("xredir=https://a.example/&id=3", MAX).unwrap();
        assert_eq!(q.redir(), Param::Absent);
        let q = Query::parse("redir&id=3&redir=https://a.example/", MAX).unwrap();
        assert_eq!(q.raw_redir(), Some("https://a.example/"));
        assert_eq!(q.param(Key::Id), present("3"));
    }

    #[test]
    fn an_encoded_redir_is_decoded_exactly_once() {
        let q = Query::parse("id=1&redir=https%3A%2F%2Fa.example%2Fp%3Fq%3D%2541", MAX).unwrap();
        assert_eq!(
            q.redir(),
            Param::Present(Cow::Owned("https://a.example/p?q=%41".into()))
        );
        // An unencoded target is taken as it stands, its escapes untouched.
        let q = Query::parse("redir=https://a.example/p?q=%2541", MAX).unwrap();
        assert_eq!(q.redir(), present("https://a.example/p?q=%2541"));
        // An encoded placeholder is still a placeholder.
        let q = Query::parse("redir=%5BREDIRECT_URL%5D", MAX).unwrap();
        assert_eq!(q.redir(), Param::Absent);
        let q = Query::parse("redir=${REDIRECT_URL}", MAX).unwrap();
        assert_eq!(q.redir(), Param::Absent);
    }

    #[test]
    fn repeated_keys_keep_the_first_and_empty_keys_are_ignored() {
        let q = Query::parse("id=1&id=2&&=5&t=&t=1&cachebuster", MAX).unwrap();
        assert_eq!(q.param(Key::Id), present("1"));
        assert_eq!(q.raw(Key::T), Some(""));
        assert_eq!(q.param(Key::T), Param::Absent);
        assert_eq!(q.param(Key::Cachebuster), Param::Absent);
    }

    #[test]
    fn percent_and_plus_decoding() {
        let q = Query::parse("other=hello+w%C3%B6rld&order_id=a%62c", MAX).unwrap();
        assert_eq!(
            q.param(Key::Other),
            Param::Present(Cow::Owned("hello wörld".into()))
        );
        assert_eq!(
            q.param(Key::OrderId),
            Param::Present(Cow::Owned("abc".into()))
        );
    }

    #[test]
    fn bad_percent_sequences_and_invalid_utf8_are_malformed() {
        for raw in [
            "other=%zz",
            "other=%4",
            "other=abc%",
            "other=%FF%FE",
            "other=%C3",
        ] {
            let q = Query::parse(raw, MAX).unwrap();
            assert_eq!(q.param(Key::Other), Param::Malformed, "{raw}");
        }
        let q = Query::parse("redir=https%3A%2F%2Fa.example%2F%ZZ", MAX).unwrap();
        assert_eq!(q.redir(), Param::Malformed);
    }

    #[test]
    fn placeholders_of_both_forms_are_absent_but_lookalikes_are_data() {
        for v in [
            "[CACHEBUSTER]",
            "[ANCOST]",
            "${CACHEBUSTER}",
            "[X_2]",
            "${USER_ID}",
        ] {
            assert!(is_placeholder(v), "{v}");
        }
        for v in [
            "[cachebuster]",
            "[]",
            "${}",
            "[1A]",
            "x[A]",
            "[A",
            "${A",
            "[A B]",
        ] {
            assert!(!is_placeholder(v), "{v}");
        }
    }

    #[test]
    fn a_query_at_the_size_limit_parses_and_one_byte_over_does_not() {
        let base = "id=2766&cachebuster=";
        let at_limit = format!("{base}{}", "7".repeat(100 - base.len()));
        assert_eq!(at_limit.len(), 100);
        assert!(Query::parse(&at_limit, 100).is_ok());
        let over = format!("{at_limit}7");
        assert_eq!(Query::parse(&over, 100).unwrap_err(), QueryError::TooLong);
    }

    /// Every key is found under its own name, in its own slot.
    #[test]
    fn every_key_round_trips_through_its_name_and_its_slot() {
        for key in Key::ALL {
            assert_eq!(Key::parse(key.as_str()), Some(key));
            let raw = format!("{}=v{}", key.as_str(), key.index());
            let q = Query::parse(&raw, MAX).unwrap();
            for other in Key::ALL {
                let want = (other == key).then(|| format!("v{}", key.index()));
                assert_eq!(q.raw(other).map(String::from), want, "{raw}: {other:?}");
            }
        }
        assert_eq!(Key::parse("redir"), None);
    }

    #[test]
    fn empty_query_and_trailing_ampersand() {
        let q = Query::parse("", MAX).unwrap();
        assert_eq!(q.param(Key::Id), Param::Absent);
        let q = Query::parse("id=5&", MAX).unwrap();
        assert_eq!(q.param(Key::Id), present("5"));
        let q = Query::parse("id=5&redir=", MAX).unwrap();
        assert_eq!(q.redir(), Param::Absent);
    }
}
