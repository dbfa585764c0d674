//! Property tests for the parts that read hostile input: the query parser,
//! the redirect validator and the cookie reader.

use std::borrow::Cow;

use proptest::prelude::*;

use hyper::header::{HeaderMap, HeaderValue, COOKIE};
use pixeld::http::cookie::{Cookies, Identity, Secret};
use pixeld::ids::UserId;
use pixeld::pixel::query::{decode, Param, Query};

const KEY: &str = "000102030405060708090a0b0c0d0e0f";
use pixeld::config::AllowList;

/// Query-ish strings: keys and values from a small alphabet that includes
/// the separators, percent signs and placeholder brackets.
fn query() -> impl Strategy<Value = String> {
    let token = prop::sample::select(vec![
        "redir",
        "id",
        "t",
        "=",
        "&",
        "%",
        "%3A",
        "%2F",
        "%26",
        "https",
        "://",
        "example.com",
        "[X]",
        "${Y}",
        "a",
        "1",
        "+",
        "%ZZ",
        "%C3%A9",
        "redir=",
    ]);
    prop::collection::vec(token, 0..24).prop_map(|v| v.concat())
}

/// The obviously-correct reading of `redir`: the pairs from the left, the
/// first whose key is exactly `redir` takes the rest of the query.
fn reference_redir(raw: &str) -> Option<&str> {
    let mut at = 0;
    loop {
        let rest = &raw[at..];
        let end = rest.find('&').unwrap_or(rest.len());
        if rest[..end].starts_with("redir=") {
            return Some(&rest[6..]);
        }
        if end == rest.len() {
            return None;
        }
        at += end + 1;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn redir_is_exactly_the_raw_tail_after_the_first_redir_key(raw in query()) {
        let q = Query::parse(&raw, 1 << 16).unwrap();
        prop_assert_eq!(q.raw_redir(), reference_redir(&raw));
    }

    #[test]
    fn redir_is_decoded_at_most_once(raw in query()) {
        let q = Query::parse(&raw, 1 << 16).unwrap();
        if let (Param::Present(v), Some(tail)) = (q.redir(), q.raw_redir()) {
            let once = decode(tail, false).ok();
            prop_assert!(v == tail || once.as_deref() == Some(v.as_ref()), "{v:?} from {tail:?}");
        }
    }

    #[test]
    fn the_parser_never_panics_and_respects_the_size_limit(raw in ".{0,300}", max in 0usize..400) {
        match Query::parse(&raw, max) {
            Ok(q) => {
                prop_assert!(raw.len() <= max);
                let _ = q.redir();
            }
            Err(_) => prop_assert!(raw.len() > max),
        }
    }

    #[test]
    fn a_validated_redirect_host_is_always_on_the_allowlist(
        scheme in prop::sample::select(vec!["https://", "http://", "HTTPS://", "//", "https:", ""]),
        user in prop::sample::select(vec!["", "example.com@", "a:b@", "evil.com\\@"]),
        host in prop::sample::select(vec![
            "example.com", "EXAMPLE.com", "a.example.com", "evil.com", "example.com.evil.com",
            "evilexample.com", "127.0.0.1", "[::1]", "example.com.", "", "xn--e1awd7f.com", "exa mple.com",
        ]),
        port in prop::sample::select(vec!["", ":443", ":0", ":99999", ":x"]),
        tail in prop::sample::select(vec!["", "/", "/p?q=1", "#@evil.com", "?x=.example.com", "\\@evil.com", "%0d%0a"]),
    ) {
        let allow = AllowList::new(&["example.com", "*.example.com"]).unwrap();
        let url = format!("{scheme}{user}{host}{port}{tail}");
        if allow.validate(&url).is_ok() {
            let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
            prop_assert!(rest.is_some(), "{url}");
            let rest = rest.unwrap();
            let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
            prop_assert!(!authority.contains('@'), "{url}");
            let h = authority.rsplit_once(':').map_or(authority, |(h, _)| h).to_ascii_lowercase();
            prop_assert!(h == "example.com" || h.ends_with(".example.com"), "{url} -> {h}");
            prop_assert!(!url.bytes().any(|b| b <= b' ' || b == b'\\' || b >= 0x7f), "{url}");
        }
    }

    #[test]
    fn decoding_borrows_unless_bytes_change(raw in "[a-z0-9%+]{0,40}") {
        if let Ok(v) = decode(&raw, true) {
            let changed = raw.contains('%') || raw.contains('+');
            prop_assert_eq!(matches!(v, Cow::Borrowed(_)), !changed);
        }
    }

    #[test]
    fn only_the_exact_signed_value_is_trusted(
        id in any::<u128>(),
        tag in any::<u64>(),
        before in "[a-z=; ]{0,12}",
        after in "[a-z=; ]{0,12}",
    ) {
        let jar = Cookies::new(&pixeld::config::CookieConfig::default(), Secret::parse(KEY).unwrap());
        let uid = UserId(id);
        let genuine = jar.value(uid);
        let guessed = format!("{}.{tag:016x}", uid.to_hex().as_str());
        for (value, trusted) in [(genuine.clone(), true), (guessed.clone(), guessed == genuine)] {
            let mut h = HeaderMap::new();
            h.insert(COOKIE, HeaderValue::from_str(&format!("{before}; uid={value}; {after}")).unwrap());
            let got = jar.identify(&h);
            if before.contains("uid=") || after.contains("uid=") {
                continue; // another uid pair may conflict or opt out
            }
            prop_assert_eq!(got == Identity::Known(uid), trusted, "{:?} -> {:?}", value, got);
        }
    }
}
