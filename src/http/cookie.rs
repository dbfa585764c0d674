//! The user-id cookie: reading it strictly, issuing it, opting out.

use hyper::header::{HeaderMap, HeaderValue, COOKIE};

use crate::config::CookieConfig;
use crate::ids::UserId;

/// The value that marks an opted-out browser.
pub const OPTOUT: &str = "OPTOUT";

/// Who the browser is, as far as pixeld may know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identity {
    /// A valid id from the request's cookie.
    Known(UserId),
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
            Identity::Known(u) | Identity::Issued(u) => Some(u),
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
}

impl Cookies {
    pub fn new(cfg: &CookieConfig) -> Cookies {
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
        }
    }

    /// Reads the id from every `Cookie` header. An opt-out anywhere wins; one
    /// well-formed id is taken; none, or two that disagree, get a fresh id.
    pub fn identify(&self, headers: &HeaderMap) -> Identity {
        let mut found: Option<UserId> = None;
        let mut conflict = false;
        for header in headers.get_all(COOKIE) {
            let Ok(text) = header.to_str() else { continue };
            for pair in text.split(';') {
                let Some((k, v)) = pair.trim().split_once('=') else {
                    continue;
                };
                if k != self.name {
                    continue;
                }
                // One pair of surrounding quotes is allowed (RFC 6265), no more.
                let v = v
                    .strip_prefix('"')
                    .and_then(|x| x.strip_suffix('"'))
                    .unwrap_or(v);
                if v == OPTOUT {
                    return Identity::OptedOut;
                }
                match (UserId::parse(v), found) {
                    (Some(id), None) => found = Some(id),
                    (Some(id), Some(prev)) if id != prev => conflict = true,
                    (None, _) => conflict |= found.is_some(),
                    _ => {}
                }
            }
        }
        match found {
            Some(id) if !conflict => Identity::Known(id),
            _ => Identity::Issued(UserId::generate()),
        }
    }

    /// `Set-Cookie` for a newly issued id.
    pub fn issue(&self, uid: UserId) -> HeaderValue {
        self.header(uid.to_hex().as_str())
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
        // Name and attributes were validated at start-up, the value is hex.
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

    fn jar() -> Cookies {
        Cookies::new(&CookieConfig::default())
    }

    const ID: &str = "0123456789abcdef0123456789abcdef";

    /// An 8 KiB cookie value that starts like a valid id.
    static OVERSIZED: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| format!("uid={ID}{}", "a".repeat(8192)));

    #[test]
    fn a_valid_cookie_is_known() {
        let want = Identity::Known(UserId::parse(ID).unwrap());
        assert_eq!(
            jar().identify(&headers(&[&format!("a=b; uid={ID}; c=d")])),
            want
        );
        assert_eq!(
            jar().identify(&headers(&["a=b", &format!("uid={ID}")])),
            want
        );
    }

    #[test]
    fn missing_malformed_or_conflicting_cookies_get_a_fresh_id() {
        for h in [
            vec![],
            vec!["uid=short"],
            vec!["uid=0123456789ABCDEF0123456789ABCDEF"],
            vec!["uid=0123456789abcdef0123456789abcdef0"],
            vec![&*OVERSIZED],
            vec!["uid=\"\"\"\"0123456789abcdef0123456789abcdef"],
            vec!["uid=\"\"0123456789abcdef0123456789abcdef\"\""],
            vec!["uid=0123456789abcdef0123456789abcdef; uid=ffffffffffffffffffffffffffffffff"],
        ] {
            let id = jar().identify(&headers(&h));
            assert!(matches!(id, Identity::Issued(_)), "{h:?} gave {id:?}");
            if let Identity::Issued(u) = id {
                assert_ne!(u.to_hex().as_str(), ID);
            }
        }
    }

    #[test]
    fn opt_out_wins() {
        assert_eq!(
            jar().identify(&headers(&[&format!("uid={ID}; uid=OPTOUT")])),
            Identity::OptedOut
        );
    }

    #[test]
    fn issued_cookie_attributes() {
        let uid = UserId::parse(ID).unwrap();
        assert_eq!(
            jar().issue(uid),
            format!("uid={ID}; Max-Age=31536000; Path=/; SameSite=None; Secure; HttpOnly")
        );
        let cfg = CookieConfig {
            name: "px".into(),
            domain: Some("example.com".into()),
            max_age_days: 30,
            secure: false,
        };
        assert_eq!(
            Cookies::new(&cfg).opt_out(),
            "px=OPTOUT; Max-Age=2592000; Path=/; Domain=example.com; SameSite=Lax; HttpOnly"
        );
    }
}
