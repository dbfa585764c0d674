//! Click ids: attribution without third-party cookies.
//!
//! A click tracker with `append_click_id` adds `pxclid=<token>` to the
//! landing URL; the advertiser's page hands the token back with the
//! conversion (`/px?clid=`), so the click is credited even when the browser
//! never sent pixeld's cookie. The token is the click itself (its event id,
//! which carries the time, its line item and where it ran), signed with the
//! cookie secret: it needs no lookup, and an edited or made-up token fails
//! its tag.
//!
//! ```text
//! base64url( u8 version 1 | u128 event_id (BE) | varint line_item
//!            | varint tracker | varint publisher | varint placement (0: none)
//!            | u64 tag (BE) )
//! ```
//! The tag is SipHash-2-4 of everything before it under the cookie secret,
//! with the purpose `pxclid` hashed first ([`Secret::mac`]). Typically 33
//! bytes, 44 characters.

use super::b64::{base64url, unbase64url};
use crate::config::Secret;
pub use crate::event::ClickRef as ClickId;
use crate::ids::{ClickTrackerId, EventId, LineItemId, PlacementId, PublisherId, UserId};

/// Version 1 names the click; version 2 also carries who clicked (the
/// user id, encrypted), so a conversion reported without a cookie, by the
/// advertiser's server or a browser that blocks pixeld's cookie, is the
/// same user's as the page's: one partition, one set of order ids and
/// repeat marks, the user's own touches.
const VERSION: u8 = 1;
const VERSION_WITH_USER: u8 = 2;
const PURPOSE: &[u8] = b"pxclid";
/// The keystream's purposes: the user id is never readable in a landing URL.
const USER_PURPOSE: [&[u8]; 2] = [b"pxclid-user-hi", b"pxclid-user-lo"];
/// The longest token that can decode: 1 + 16 + 4 * 5 + 16 + 8 bytes.
pub const MAX_TOKEN_CHARS: usize = 82;

/// Why a token was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClickIdError {
    /// Not a token of this format (wrong alphabet, length or version).
    Malformed,
    /// Well-formed, but the tag does not match any current or previous secret.
    BadTag,
}

/// Signs and checks tokens with the cookie secrets.
#[derive(Clone, Debug)]
pub struct ClickIds {
    /// Signs new tokens.
    secret: Secret,
    /// Tokens signed before a key rotation stay valid for their window.
    previous: Vec<Secret>,
    /// The landing-URL parameter (`pxclid` by default).
    pub param: String,
}

impl ClickIds {
    pub fn new(secret: Secret, previous: Vec<Secret>, param: String) -> ClickIds {
        ClickIds {
            secret,
            previous,
            param,
        }
    }

    /// The token for `click`.
    pub fn sign(&self, click: &ClickId) -> String {
        let mut bytes = Vec::with_capacity(64);
        bytes.push(if click.user.is_some() {
            VERSION_WITH_USER
        } else {
            VERSION
        });
        bytes.extend_from_slice(&click.event_id.0.to_be_bytes());
        for v in [
            click.line_item.0,
            click.tracker.0,
            click.publisher.0,
            click.placement.map_or(0, |p| p.0),
        ] {
            put_varint(&mut bytes, v);
        }
        if let Some(user) = click.user {
            let hidden = user.0 ^ keystream(&self.secret, click.event_id);
            bytes.extend_from_slice(&hidden.to_be_bytes());
        }
        let tag = self.secret.mac(PURPOSE, &bytes);
        bytes.extend_from_slice(&tag.to_be_bytes());
        base64url(&bytes)
    }

    /// The click a token stands for, if it is one of ours.
    pub fn verify(&self, token: &str) -> Result<ClickId, ClickIdError> {
        if token.len() > MAX_TOKEN_CHARS {
            return Err(ClickIdError::Malformed);
        }
        let bytes = unbase64url(token).ok_or(ClickIdError::Malformed)?;
        if bytes.len() < 1 + 16 + 4 + 8 || !matches!(bytes[0], VERSION | VERSION_WITH_USER) {
            return Err(ClickIdError::Malformed);
        }
        let (body, tag) = bytes.split_at(bytes.len() - 8);
        let tag = u64::from_be_bytes(tag.try_into().map_err(|_| ClickIdError::Malformed)?);
        let mut r = &body[17..];
        let mut next = || get_varint(&mut r).ok_or(ClickIdError::Malformed);
        let (line_item, tracker, publisher, placement) = (next()?, next()?, next()?, next()?);
        let hidden = match (bytes[0], r.len()) {
            (VERSION, 0) => None,
            (VERSION_WITH_USER, 16) => Some(u128::from_be_bytes(
                r.try_into().map_err(|_| ClickIdError::Malformed)?,
            )),
            _ => return Err(ClickIdError::Malformed),
        };
        let signer = std::iter::once(&self.secret)
            .chain(&self.previous)
            .find(|s| s.mac(PURPOSE, body) == tag)
            .ok_or(ClickIdError::BadTag)?;
        let event_id = EventId(u128::from_be_bytes(
            body[1..17]
                .try_into()
                .map_err(|_| ClickIdError::Malformed)?,
        ));
        let user = hidden.map(|h| UserId(h ^ keystream(signer, event_id)));
        Ok(ClickId {
            event_id,
            line_item: LineItemId(line_item),
            tracker: ClickTrackerId(tracker),
            publisher: PublisherId(publisher),
            placement: (placement != 0).then_some(PlacementId(placement)),
            user,
        })
    }
}

/// 128 bits that hide a click's user id: SipHash-2-4 of the click's event
/// id (unique per click) under the secret, for two purposes.
fn keystream(secret: &Secret, click: EventId) -> u128 {
    let id = click.0.to_be_bytes();
    let [hi, lo] = USER_PURPOSE.map(|p| u128::from(secret.mac(p, &id)));
    hi << 64 | lo
}

/// `url` with `param=token` added to its query, before any fragment; the
/// URL's own query and fragment are kept as they are.
pub fn append(url: &str, param: &str, token: &str) -> String {
    let (head, fragment) = match url.find('#') {
        Some(i) => url.split_at(i),
        None => (url, ""),
    };
    let sep = match head.find('?') {
        None => "?",
        Some(i) if i + 1 == head.len() || head.ends_with('&') => "",
        Some(_) => "&",
    };
    let mut out = String::with_capacity(url.len() + param.len() + token.len() + 2);
    out.push_str(head);
    out.push_str(sep);
    out.push_str(param);
    out.push('=');
    out.push_str(token);
    out.push_str(fragment);
    out
}

fn put_varint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(r: &mut &[u8]) -> Option<u32> {
    let mut v: u64 = 0;
    for i in 0..5 {
        let (&b, rest) = r.split_first()?;
        *r = rest;
        v |= ((b & 0x7f) as u64) << (7 * i);
        if b & 0x80 == 0 {
            // One encoding per value: no overlong forms, nothing past u32.
            let overlong = i > 0 && b == 0;
            return (!overlong).then_some(u32::try_from(v).ok()?);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> ClickIds {
        ClickIds::new(
            Secret::parse("000102030405060708090a0b0c0d0e0f").unwrap(),
            vec![],
            "pxclid".into(),
        )
    }

    fn click() -> ClickId {
        ClickId {
            event_id: EventId(0x0199_d5d7_a800_7abc_8def_0123_4567_89ab),
            line_item: LineItemId(4321),
            tracker: ClickTrackerId(2766),
            publisher: PublisherId(7),
            placement: Some(PlacementId(300_000)),
            user: None,
        }
    }

    #[test]
    fn a_token_carries_its_user_hidden_and_bound_to_the_tag() {
        let user = crate::ids::UserId(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let with = ClickId {
            user: Some(user),
            ..click()
        };
        let t = ids().sign(&with);
        assert!(t.len() <= MAX_TOKEN_CHARS, "{t} is {} chars", t.len());
        assert_eq!(ids().verify(&t), Ok(with));
        // The id is not in the token in any readable form.
        let bytes = super::unbase64url(&t).unwrap();
        let raw = user.0.to_be_bytes();
        assert!(!bytes.windows(16).any(|w| w == raw));
        // After a rotation, the previous key still reveals it.
        let rotated = ClickIds::new(
            Secret::generate(),
            vec![Secret::parse("000102030405060708090a0b0c0d0e0f").unwrap()],
            "pxclid".into(),
        );
        assert_eq!(rotated.verify(&t), Ok(with));
        // Version 1 tokens (no user) still verify.
        assert_eq!(ids().verify(&ids().sign(&click())).unwrap().user, None);
    }

    #[test]
    fn a_token_round_trips_and_is_compact_and_url_safe() {
        let t = ids().sign(&click());
        assert!(t.len() <= 48, "{t} is {} chars", t.len());
        assert!(t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(ids().verify(&t), Ok(click()));
        let none = ClickId {
            placement: None,
            ..click()
        };
        assert_eq!(ids().verify(&ids().sign(&none)), Ok(none));
    }

    #[test]
    fn an_edited_or_foreign_token_is_refused() {
        let t = ids().sign(&click());
        let mut seen_bad_tag = false;
        for i in 0..t.len() {
            for c in ['A', 'f', '-', '_', '0'] {
                let mut edited = t.clone().into_bytes();
                if edited[i] == c as u8 {
                    continue;
                }
                edited[i] = c as u8;
                let edited = String::from_utf8(edited).unwrap();
                let got = ids().verify(&edited);
                assert!(got.is_err(), "{edited} verified as {got:?}");
                seen_bad_tag |= got == Err(ClickIdError::BadTag);
            }
        }
        assert!(seen_bad_tag);
        let other = ClickIds::new(
            Secret::parse("f0e0d0c0b0a090807060504030201000").unwrap(),
            vec![],
            "pxclid".into(),
        );
        assert_eq!(other.verify(&t), Err(ClickIdError::BadTag));
        // After a rotation, the old key's tokens still verify.
        let rotated = ClickIds::new(
            Secret::generate(),
            vec![Secret::parse("000102030405060708090a0b0c0d0e0f").unwrap()],
            "pxclid".into(),
        );
        assert_eq!(rotated.verify(&t), Ok(click()));
        for junk in ["", "a", "====", &"A".repeat(200), "AAAA", &format!("{t}A")] {
            assert!(ids().verify(junk).is_err(), "{junk}");
        }
    }

    #[test]
    fn a_tag_made_for_the_cookie_is_not_a_click_tag() {
        let s = Secret::parse("000102030405060708090a0b0c0d0e0f").unwrap();
        let uid = crate::ids::UserId(5);
        assert_ne!(s.tag(uid), s.mac(PURPOSE, &uid.0.to_be_bytes()));
    }

    #[test]
    fn the_landing_url_keeps_its_query_and_fragment() {
        for (url, want) in [
            ("https://a.example/", "https://a.example/?pxclid=T"),
            (
                "https://a.example/p?x=1",
                "https://a.example/p?x=1&pxclid=T",
            ),
            ("https://a.example/p?", "https://a.example/p?pxclid=T"),
            (
                "https://a.example/p?x=1&",
                "https://a.example/p?x=1&pxclid=T",
            ),
            (
                "https://a.example/p#top",
                "https://a.example/p?pxclid=T#top",
            ),
            (
                "https://a.example/p?x=1#a?b",
                "https://a.example/p?x=1&pxclid=T#a?b",
            ),
        ] {
            assert_eq!(append(url, "pxclid", "T"), want);
        }
    }

    proptest::proptest! {
        #[test]
        fn verify_never_panics(s in "\\PC{0,80}") {
            let _ = ids().verify(&s);
        }
    }
}
