//! The user-id cookie: reading it strictly, issuing it, opting out.
//!
//! An issued value is `<32 hex id>.<16 hex tag>`, the tag being SipHash-2-4
//! (a keyed PRF built for short inputs) of the id under a 128-bit secret. A
//! forged or edited id fails the tag and gets a fresh one: ids are never
//! taken on the browser's word, so nobody can pose as another user, nor
//! spray made-up ids to pollute attribution.

use hyper::header::{HeaderMap, HeaderValue, COOKIE};

pub use crate::config::Secret;
use crate::config::{CookieConfig, SameSite};
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
    /// Consent (TCF purpose 1) does not allow the cookie: not read, not set.
    Unconsented,
    /// The cookie bounce came back without the cookie (this browser refuses
    /// it), or the request was too long to bounce: an id would be new on
    /// every request.
    Refused,
}

impl Identity {
    pub fn uid(self) -> Option<UserId> {
        match self {
            Identity::Known(u) | Identity::Renewed(u) | Identity::Issued(u) => Some(u),
            Identity::OptedOut | Identity::Private | Identity::Unconsented | Identity::Refused => {
                None
            }
        }
    }

    /// Opted-out, GPC and unconsented requests keep neither id nor
    /// address (without consent the opt-out cookie is not even read, so the
    /// address goes too: an opted-out browser must never be recorded by it).
    pub fn is_private(self) -> bool {
        matches!(
            self,
            Identity::OptedOut | Identity::Private | Identity::Unconsented
        )
    }
}

/// The cookie settings, with the attribute strings built once.
pub struct Cookies {
    /// Cookie name (`uid` by default).
    name: String,
    /// `; Max-Age=...; Path=/; ...` for a host no `cookie.domains` entry
    /// covers (with `cookie.domain`'s `Domain`, if set).
    attributes: String,
    /// Per `cookie.domains` entry, longest first: the suffix a `Host` must
    /// end with, and the attributes with that `Domain`.
    by_domain: Vec<(String, String)>,
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
        // Browsers drop `SameSite=None` without `Secure`, so a plain-HTTP
        // deployment defaults to `Lax` (first-party only).
        let same_site = cfg.same_site.unwrap_or(if cfg.secure {
            SameSite::None
        } else {
            SameSite::Lax
        });
        let attributes = |domain: Option<&str>| {
            let mut a = format!("; Max-Age={}; Path=/", cfg.max_age_days as u64 * 86_400);
            if let Some(domain) = domain {
                a.push_str("; Domain=");
                a.push_str(domain.strip_prefix('.').unwrap_or(domain));
            }
            a.push_str(match same_site {
                SameSite::None => "; SameSite=None",
                SameSite::Lax => "; SameSite=Lax",
                SameSite::Strict => "; SameSite=Strict",
            });
            if cfg.secure {
                a.push_str("; Secure");
            }
            a.push_str("; HttpOnly");
            a
        };
        let mut by_domain: Vec<(String, String)> = cfg
            .domains
            .iter()
            .map(|d| {
                let d = d.strip_prefix('.').unwrap_or(d).to_ascii_lowercase();
                let a = attributes(Some(&d));
                (d, a)
            })
            .collect();
        by_domain.sort_by_key(|(d, _)| std::cmp::Reverse(d.len()));
        Cookies {
            name: cfg.name.clone(),
            attributes: attributes(cfg.domain.as_deref()),
            by_domain,
            secret,
            previous,
        }
    }

    /// The attributes for a request to `host` (the `Host` header, port
    /// included or not): the longest `cookie.domains` entry it is or ends
    /// with, else the default.
    fn attributes_for(&self, host: Option<&str>) -> &str {
        let host = host.map(|h| h.rsplit_once(':').map_or(h, |(name, _)| name));
        let Some(host) = host.filter(|_| !self.by_domain.is_empty()) else {
            return &self.attributes;
        };
        self.by_domain
            .iter()
            .find(|(d, _)| {
                host.len() >= d.len()
                    && host[host.len() - d.len()..].eq_ignore_ascii_case(d)
                    && (host.len() == d.len() || host.as_bytes()[host.len() - d.len() - 1] == b'.')
            })
            .map_or(&self.attributes, |(_, a)| a)
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

    /// `Set-Cookie` for a newly issued (or renewed) id, on a request to `host`.
    pub fn issue(&self, uid: UserId, host: Option<&str>) -> HeaderValue {
        self.header(&self.value(uid), host)
    }

    /// `Set-Cookie` that opts this browser out.
    pub fn opt_out(&self, host: Option<&str>) -> HeaderValue {
        self.header(OPTOUT, host)
    }

    fn header(&self, value: &str, host: Option<&str>) -> HeaderValue {
        let attributes = self.attributes_for(host);
        let mut s = String::with_capacity(self.name.len() + value.len() + attributes.len() + 1);
        s.push_str(&self.name);
        s.push('=');
        s.push_str(value);
        s.push_str(attributes);
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
            .issue(uid(), None)
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
            jar().issue(uid(), None),
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
            Cookies::new(&cfg, Secret::generate()).opt_out(None),
            "px=OPTOUT; Max-Age=2592000; Path=/; Domain=example.com; SameSite=Lax; HttpOnly"
        );
        let strict = CookieConfig {
            same_site: Some(SameSite::Strict),
            ..CookieConfig::default()
        };
        assert!(Cookies::new(&strict, Secret::generate())
            .opt_out(None)
            .to_str()
            .unwrap()
            .ends_with("; SameSite=Strict; Secure; HttpOnly"));
    }

    #[test]
    fn the_cookie_domain_is_the_longest_listed_suffix_of_the_host() {
        let cfg = CookieConfig {
            domain: Some("fallback.example".into()),
            domains: vec![
                "example.com".into(),
                "px.example.com".into(),
                ".track.example.net".into(),
            ],
            ..CookieConfig::default()
        };
        let jar = Cookies::new(&cfg, Secret::generate());
        let domain_of = |host: Option<&str>| {
            let v = jar.opt_out(host);
            let v = v.to_str().unwrap().to_string();
            v.split("; ")
                .find_map(|a| a.strip_prefix("Domain="))
                .map(str::to_string)
        };
        for (host, want) in [
            (Some("a.px.example.com"), Some("px.example.com")),
            (Some("px.example.com:8080"), Some("px.example.com")),
            (Some("WWW.Example.COM"), Some("example.com")),
            (Some("example.com"), Some("example.com")),
            (Some("track.example.net"), Some("track.example.net")),
            // A suffix of the name, not of its labels, does not count.
            (Some("badexample.com"), Some("fallback.example")),
            (Some("other.org"), Some("fallback.example")),
            (None, Some("fallback.example")),
        ] {
            assert_eq!(domain_of(host).as_deref(), want, "{host:?}");
        }
    }
}
