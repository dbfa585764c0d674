//! The user-id cookie: reading it strictly, issuing it, opting out.
//!
//! An issued value is `<32 hex id>.<16 hex tag>`, the tag being SipHash-2-4
//! (a keyed PRF built for short inputs) of the id under a 128-bit secret. A
//! forged or edited id fails the tag and gets a fresh one: ids are never
//! taken on the browser's word, so nobody can pose as another user, nor
//! spray made-up ids to pollute attribution.

use hyper::header::{HeaderMap, HeaderValue, COOKIE};

use crate::config::CookieConfig;
pub use crate::config::Secret;
use crate::ids::{hex, parse_hex, UserId};

/// The value that marks an opted-out browser.
pub const OPTOUT: &str = "OPTOUT";

/// Who the browser is, as far as pixeld may know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identity {
    /// A valid id from the request's cookie.
    Known(UserId),
    /// A valid id signed with a previous secret: kept, and re-issued signed
    /// with the current one.
    Renewed(UserId),
    /// No valid id came in; this one is issued with the response.
    Issued(UserId),
    /// The cookie says opt-out: no id, no address, no cookie.
    OptedOut,
    /// `Sec-GPC: 1`: treated as opted out for this request only.
    Private,
}

impl Identity {
    pub fn uid(self) -> Option<UserId> {
        match self {
            Identity::Known(u) | Identity::Renewed(u) | Identity::Issued(u) => Some(u),
            Identity::OptedOut | Identity::Private => None,
        }
    }

    /// Opted-out and GPC requests keep neither id nor address.
    pub fn is_private(self) -> bool {
        matches!(self, Identity::OptedOut | Identity::Private)
    }
}

/// The cookie settings, with the attribute string built once.
pub struct Cookies {
    /// Cookie name (`uid` by default).
    name: String,
    /// `; Max-Age=...; Path=/; ...` appended to every issued value.
    attributes: String,
    /// Signs issued ids and checks incoming ones.
    secret: Secret,
    /// Secrets being rotated out: their ids are still accepted, then re-issued.
    previous: Vec<Secret>,
}

/// Length of a signed value: 32 hex id, `.`, 16 hex tag.
const VALUE_LEN: usize = 32 + 1 + 16;

impl Cookies {
    /// Signs with `cfg.secret`, or with `fallback` when it is unset (the
    /// server passes the key from `data_dir`).
    pub fn new(cfg: &CookieConfig, fallback: Secret) -> Cookies {
        let secret = cfg.secret.unwrap_or(fallback);
        let previous = cfg.previous_secrets.clone();
        let mut attributes = format!("; Max-Age={}; Path=/", cfg.max_age_days as u64 * 86_400);
        if let Some(domain) = &cfg.domain {
            attributes.push_str("; Domain=");
            attributes.push_str(domain);
        }
        // Browsers drop `SameSite=None` without `Secure`, so a plain-HTTP
        // deployment gets `Lax` (first-party only) instead.
        attributes.push_str(if cfg.secure {
            "; SameSite=None; Secure"
        } else {
            "; SameSite=Lax"
        });
        attributes.push_str("; HttpOnly");
        Cookies {
            name: cfg.name.clone(),
            attributes,
            secret,
            previous,
        }
    }

    /// The signed cookie value for `uid`: `<id>.<tag>`.
    pub fn value(&self, uid: UserId) -> String {
        let mut v = String::with_capacity(VALUE_LEN);
        v.push_str(uid.to_hex().as_str());
        v.push('.');
        v.push_str(hex::<16>(self.secret.tag(uid).into()).as_str());
        v
    }

    /// Checks a cookie value's tag: `Known` under the current secret,
    /// `Renewed` under a previous one, `None` when it is not ours.
    fn verify(&self, v: &str) -> Option<Identity> {
        if v.len() != VALUE_LEN {
            return None;
        }
        let (id, tag) = v.split_once('.')?;
        let uid = UserId::parse(id)?;
        let tag = parse_hex(tag, 16)? as u64;
        if self.secret.tag(uid) == tag {
            return Some(Identity::Known(uid));
        }
        self.previous
            .iter()
            .any(|s| s.tag(uid) == tag)
            .then_some(Identity::Renewed(uid))
    }

    /// Reads the id from every `Cookie` header. An opt-out anywhere wins; one
    /// correctly signed id is taken; none, a forged one, or two that disagree
    /// get a fresh id. Headers are read as bytes, pair by pair: a browser
    /// sends every cookie of the domain in one header, and another site's
    /// non-ASCII cookie must not hide ours (nor an opt-out).
    pub fn identify(&self, headers: &HeaderMap) -> Identity {
        let mut found: Option<Identity> = None;
        let mut conflict = false;
        for header in headers.get_all(COOKIE) {
            let bytes = header.as_bytes();
            let mut next = 0;
            while next <= bytes.len() {
                let end = memchr::memchr(b';', &bytes[next..]).map_or(bytes.len(), |i| next + i);
                // Spaces around the pair are separators; inside it (`uid =`,
                // `= value`) they make it not ours.
                let pair = bytes[next..end].trim_ascii();
                next = end + 1;
                let Some(eq) = memchr::memchr(b'=', pair) else {
                    continue;
                };
                let (k, v) = (&pair[..eq], &pair[eq + 1..]);
                if k != self.name.as_bytes() {
                    continue;
                }
                // Ours, but not text: not an id pixeld issued.
                let Ok(v) = std::str::from_utf8(v) else {
                    conflict |= found.is_some();
                    continue;
                };
                // One pair of surrounding quotes is allowed (RFC 6265), no more.
                let v = v
                    .strip_prefix('"')
                    .and_then(|x| x.strip_suffix('"'))
                    .unwrap_or(v);
                if v == OPTOUT {
                    return Identity::OptedOut;
                }
                match (self.verify(v), found) {
                    (Some(id), None) => found = Some(id),
                    (Some(id), Some(prev)) if id.uid() != prev.uid() => conflict = true,
                    (None, _) => conflict |= found.is_some(),
                    _ => {}
                }
            }
        }
        match found {
            Some(id) if !conflict => id,
            _ => Identity::Issued(UserId::generate()),
        }
    }

    /// `Set-Cookie` for a newly issued (or renewed) id.
    pub fn issue(&self, uid: UserId) -> HeaderValue {
        self.header(&self.value(uid))
    }

    /// `Set-Cookie` that opts this browser out.
    pub fn opt_out(&self) -> HeaderValue {
        self.header(OPTOUT)
    }

    fn header(&self, value: &str) -> HeaderValue {
        let mut s =
            String::with_capacity(self.name.len() + value.len() + self.attributes.len() + 1);
        s.push_str(&self.name);
        s.push('=');
        s.push_str(value);
        s.push_str(&self.attributes);
        // Name and attributes were validated at start-up, the value is hex and `.`.
        HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cookies: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for c in cookies {
            h.append(COOKIE, HeaderValue::from_str(c).unwrap());
        }
        h
    }

    const KEY: &str = "000102030405060708090a0b0c0d0e0f";
    const OLD_KEY: &str = "f0e0d0c0b0a090807060504030201000";

    fn jar() -> Cookies {
        Cookies::new(&CookieConfig::default(), Secret::parse(KEY).unwrap())
    }

    const ID: &str = "0123456789abcdef0123456789abcdef";

    fn uid() -> UserId {
        UserId::parse(ID).unwrap()
    }

    /// `ID` signed with `KEY`.
    fn signed() -> String {
        jar().value(uid())
    }

    #[test]
    fn the_tag_is_siphash_2_4_of_the_id_under_the_secret() {
        // Independent of this module: the tag must be reproducible by any
        // SipHash-2-4 implementation (e.g. another service reading the id).
        use std::hash::Hasher;
        let mut h =
            siphasher::sip::SipHasher24::new_with_keys(0x0706050403020100, 0x0f0e0d0c0b0a0908);
        h.write(&uid().0.to_be_bytes());
        assert_eq!(signed(), format!("{ID}.{:016x}", h.finish()));
    }

    #[test]
    fn a_correctly_signed_cookie_is_known() {
        let want = Identity::Known(uid());
        let v = signed();
        assert_eq!(
            jar().identify(&headers(&[&format!("a=b; uid={v}; c=d")])),
            want
        );
        assert_eq!(
            jar().identify(&headers(&["a=b", &format!("uid={v}")])),
            want
        );
        assert_eq!(jar().identify(&headers(&[&format!("uid=\"{v}\"")])), want);
    }

    #[test]
    fn missing_malformed_forged_or_conflicting_cookies_get_a_fresh_id() {
        let v = signed();
        let (_, tag) = v.split_once('.').unwrap();
        let other = jar().value(UserId(7));
        let flipped = format!(
            "{ID}.{}{}",
            &tag[..15],
            if tag.ends_with('0') { '1' } else { '0' }
        );
        let forged =
            Cookies::new(&CookieConfig::default(), Secret::parse(OLD_KEY).unwrap()).value(uid());
        let oversized = format!("uid={v}{}", "a".repeat(8192));
        for h in [
            vec![],
            vec!["uid=short".to_string()],
            // Unsigned: the old format, or an id made up by hand.
            vec![format!("uid={ID}")],
            // Tagged with somebody else's key.
            vec![format!("uid={forged}")],
            // One bit of the tag changed.
            vec![format!("uid={flipped}")],
            // Another user's tag on this id.
            vec![format!("uid={ID}.{}", other.split_once('.').unwrap().1)],
            vec![format!("uid={}", v.to_uppercase())],
            vec![format!("uid={v}0")],
            vec![format!("uid={ID}.")],
            vec![format!("uid={ID}..{tag}")],
            vec![oversized],
            vec![format!("uid=\"\"\"\"{v}")],
            vec![format!("uid=\"\"{v}\"\"")],
            vec![format!("uid={v}; uid={other}")],
            vec![format!("uid={v}"), format!("uid={other}")],
        ] {
            let refs: Vec<&str> = h.iter().map(String::as_str).collect();
            let id = jar().identify(&headers(&refs));
            assert!(matches!(id, Identity::Issued(_)), "{h:?} gave {id:?}");
            assert_ne!(id.uid(), Some(uid()));
        }
    }

    #[test]
    fn ids_signed_with_a_previous_secret_are_renewed() {
        let old = Cookies::new(&CookieConfig::default(), Secret::parse(OLD_KEY).unwrap());
        let cfg = CookieConfig {
            secret: Secret::parse(KEY),
            previous_secrets: vec![Secret::parse(OLD_KEY).unwrap()],
            ..CookieConfig::default()
        };
        let rotating = Cookies::new(&cfg, Secret::generate());
        let h = headers(&[&format!("uid={}", old.value(uid()))]);
        assert_eq!(rotating.identify(&h), Identity::Renewed(uid()));
        // The renewed cookie is signed with the current secret.
        assert!(rotating
            .issue(uid())
            .to_str()
            .unwrap()
            .starts_with(&format!("uid={};", signed())));
        // And without the rotation, the old id is a stranger.
        assert!(matches!(jar().identify(&h), Identity::Issued(_)));
    }

    #[test]
    fn another_sites_non_ascii_cookie_hides_neither_our_id_nor_an_opt_out() {
        let with = |ours: &str| {
            let mut h = HeaderMap::new();
            let raw = format!("name=Jos\u{e9}; {ours}; theme=d\u{e4}rk").into_bytes();
            h.append(COOKIE, HeaderValue::from_bytes(&raw).unwrap());
            assert!(h[COOKIE].to_str().is_err(), "not ASCII");
            jar().identify(&h)
        };
        assert_eq!(with("uid=OPTOUT"), Identity::OptedOut);
        assert_eq!(with(&format!("uid={}", signed())), Identity::Known(uid()));
        // Raw Latin-1 bytes, as an old client would send them.
        let mut h = HeaderMap::new();
        let mut raw = b"x=\xe9t\xe9; uid=".to_vec();
        raw.extend_from_slice(signed().as_bytes());
        h.append(COOKIE, HeaderValue::from_bytes(&raw).unwrap());
        assert_eq!(jar().identify(&h), Identity::Known(uid()));
    }

    #[test]
    fn spaces_inside_the_pair_make_it_not_ours() {
        for c in [
            format!("uid ={}", signed()),
            format!("uid= {}", signed()),
            format!("a=b;uid ={}", signed()),
        ] {
            assert!(
                matches!(jar().identify(&headers(&[&c])), Identity::Issued(_)),
                "{c}"
            );
        }
        let spaced = format!("a=b;   uid={}  ; c=d", signed());
        assert_eq!(jar().identify(&headers(&[&spaced])), Identity::Known(uid()));
    }

    #[test]
    fn opt_out_wins() {
        assert_eq!(
            jar().identify(&headers(&[&format!("uid={}; uid=OPTOUT", signed())])),
            Identity::OptedOut
        );
    }

    #[test]
    fn issued_cookie_attributes() {
        assert_eq!(
            jar().issue(uid()),
            format!(
                "uid={}; Max-Age=31536000; Path=/; SameSite=None; Secure; HttpOnly",
                signed()
            )
        );
        let cfg = CookieConfig {
            name: "px".into(),
            domain: Some("example.com".into()),
            max_age_days: 30,
            secure: false,
            ..CookieConfig::default()
        };
        assert_eq!(
            Cookies::new(&cfg, Secret::generate()).opt_out(),
            "px=OPTOUT; Max-Age=2592000; Path=/; Domain=example.com; SameSite=Lax; HttpOnly"
        );
    }
}
