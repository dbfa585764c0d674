//! Redirect targets: the one place that decides whether pixeld will send a
//! browser somewhere. Deliberately strict: an open redirect on a trusted ad
//! domain is a phishing tool.

use serde::Deserialize;

/// Longest target pixeld will redirect to.
pub const MAX_TARGET_BYTES: usize = 4096;

/// Hosts a redirect may go to: `example.com` exactly, or `*.example.com` for
/// any subdomain of it. Empty means any host.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(transparent)]
pub struct AllowList {
    /// Lowercased entries, `*.` prefix kept for subdomain patterns.
    entries: Vec<HostPattern>,
}

/// One `redirect.allowed_hosts` entry, checked when the file is read (so a
/// bad entry is reported with its index).
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "String")]
struct HostPattern(String);

impl TryFrom<String> for HostPattern {
    type Error = String;

    fn try_from(p: String) -> Result<Self, String> {
        let p = p.to_ascii_lowercase();
        let host = p.strip_prefix("*.").unwrap_or(&p);
        if !is_dns_name(host) {
            return Err(format!(
                "{p:?} is not a host name; write `example.com` or `*.example.com`"
            ));
        }
        Ok(HostPattern(p))
    }
}

/// Why a target was refused; `code` is the short form used in logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedirectError {
    TooLong,
    NotHttp,
    BadCharacter,
    BadHost,
    BadPort,
    HostNotAllowed,
}

impl RedirectError {
    /// The one-line reason a click answers with when it has nowhere to go.
    pub fn reason(self) -> &'static str {
        match self {
            RedirectError::TooLong => "redirect target is longer than 4096 bytes",
            RedirectError::NotHttp => "redirect target is not an absolute http or https URL",
            RedirectError::BadCharacter => {
                "redirect target contains whitespace, control or non-ASCII characters"
            }
            RedirectError::BadHost => "redirect target has no valid host",
            RedirectError::BadPort => "redirect target has an invalid port",
            RedirectError::HostNotAllowed => "redirect target host is not allowed",
        }
    }
}

impl AllowList {
    /// Builds the list; returns the entry that is not a valid pattern on error.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, String> {
        let mut entries = Vec::with_capacity(patterns.len());
        for p in patterns {
            let p = p.as_ref().to_ascii_lowercase();
            entries.push(HostPattern::try_from(p.clone()).map_err(|_| p)?);
        }
        Ok(AllowList { entries })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether this list has an entry `before` did not have: a reload that
    /// lets pixeld send browsers (or ids) somewhere new.
    pub fn adds_to(&self, before: &AllowList) -> bool {
        self.entries
            .iter()
            .any(|e| !before.entries.iter().any(|b| b.0 == e.0))
    }

    fn allows(&self, host: &str) -> bool {
        if self.entries.is_empty() {
            return is_public_name(host);
        }
        self.entries.iter().any(|e| match e.0.strip_prefix("*.") {
            Some(parent) => {
                host.len() > parent.len() + 1
                    && host.ends_with(parent)
                    && host.as_bytes()[host.len() - parent.len() - 1] == b'.'
            }
            None => host == e.0,
        })
    }

    /// Accepts `target` only if it is an absolute http(s) URL with a plain
    /// host on the list, no userinfo, and nothing that a browser or a header
    /// could read differently from how this function reads it.
    pub fn validate(&self, target: &str) -> Result<(), RedirectError> {
        if target.len() > MAX_TARGET_BYTES {
            return Err(RedirectError::TooLong);
        }
        if target.bytes().any(|b| b <= b' ' || b >= 0x7f || b == b'\\') {
            return Err(RedirectError::BadCharacter);
        }
        let rest = target
            .strip_prefix("https://")
            .or_else(|| target.strip_prefix("http://"))
            .ok_or(RedirectError::NotHttp)?;
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        if authority.contains('@') {
            return Err(RedirectError::BadHost);
        }
        let (host, port) = match authority.rfind(':') {
            Some(i) => (&authority[..i], Some(&authority[i + 1..])),
            None => (authority, None),
        };
        if let Some(port) = port {
            let ok = !port.is_empty()
                && port.len() <= 5
                && port.bytes().all(|b| b.is_ascii_digit())
                && port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p));
            if !ok {
                return Err(RedirectError::BadPort);
            }
        }
        let host = host.to_ascii_lowercase();
        if !is_dns_name(&host) {
            return Err(RedirectError::BadHost);
        }
        if !self.allows(&host) {
            return Err(RedirectError::HostNotAllowed);
        }
        Ok(())
    }
}

/// Suffixes that name hosts inside a network, never on the public internet
/// (RFC 6761, RFC 6762, RFC 8375, ICANN's reserved `internal`, and the
/// customary `lan`, `intranet`, `corp`, `home`, `localdomain`, `private`).
const PRIVATE_SUFFIXES: &[&str] = &[
    "localhost",
    "local",
    "internal",
    "lan",
    "intranet",
    "corp",
    "home",
    "localdomain",
    "private",
    "home.arpa",
];

/// With no allowlist, a redirect still needs a registrable public name: at
/// least two labels, and none of the private suffixes above; an empty list
/// must not turn pixeld into a way into the visitor's intranet.
fn is_public_name(host: &str) -> bool {
    host.contains('.')
        && !PRIVATE_SUFFIXES.iter().any(|s| {
            host == *s
                || (host.len() > s.len()
                    && host.ends_with(s)
                    && host.as_bytes()[host.len() - s.len() - 1] == b'.')
        })
}

/// Letters, digits and hyphens in dot-separated labels; no empty label (so no
/// trailing dot). A host whose last label is a number (`127.0.0.1`,
/// `2130706433`, `0x7f000001`) is an IPv4 address to a browser, and refused.
fn is_dns_name(host: &str) -> bool {
    if host.is_empty() || host.len() > 253 {
        return false;
    }
    let labels_ok = host.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    });
    let last = host.rsplit('.').next().unwrap_or_default();
    let numeric = last.bytes().all(|b| b.is_ascii_digit())
        || last
            .strip_prefix("0x")
            .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
    labels_ok && !numeric
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> AllowList {
        AllowList::new(&["example.com", "*.example.com"]).unwrap()
    }

    #[test]
    fn an_empty_list_still_requires_a_public_registrable_name() {
        let any = AllowList::default();
        for t in [
            "https://localhost/x",
            "http://intranet-host:8080/admin",
            "https://printer.local/",
            "https://db.internal/",
            "https://nas.lan/",
            "https://router.home.arpa/",
            "https://a.localhost/",
        ] {
            assert_eq!(any.validate(t), Err(RedirectError::HostNotAllowed), "{t}");
        }
        for t in [
            "https://www.example.com/",
            "https://shop.co.uk/x",
            "https://localhost.example.com/",
        ] {
            assert_eq!(any.validate(t), Ok(()), "{t}");
        }
        // An explicit entry is the operator's word.
        let lan = AllowList::new(&["*.corp"]).unwrap();
        assert_eq!(lan.validate("https://wiki.corp/"), Ok(()));
    }

    #[test]
    fn allowed_targets() {
        let a = example();
        for t in [
            "https://example.com",
            "https://example.com/landing?utm=1&x=2#top",
            "http://shop.example.com/p",
            "https://a.b.example.com:8443/x",
            "https://EXAMPLE.com/",
        ] {
            assert_eq!(a.validate(t), Ok(()), "{t}");
        }
    }

    #[test]
    fn refused_targets() {
        let a = example();
        for t in [
            "//evil.com",
            "https:evil.com",
            "https://evil.com\\@example.com",
            "https://example.com@evil.com",
            "https://evil.com#@example.com",
            "https://evil.com?.example.com",
            "https://example.com.evil.com",
            "https://evilexample.com",
            "HTTPS://example.com",
            "javascript:alert(1)",
            "data:text/html,x",
            "https://exa\tmple.com",
            "https://example.com/\r\nSet-Cookie:x",
            "https://example.com./",
            "https://example.com:0/",
            "https://example.com:99999/",
            "https://:443/",
            "https:///path",
            "https://127.0.0.1/",
            "https://2130706433/",
            "https://0x7f000001/",
            "https://[::1]/",
            "https://ex\u{0430}mple.com/",
        ] {
            assert!(a.validate(t).is_err(), "{t} was accepted");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_TARGET_BYTES));
        assert_eq!(a.validate(&long), Err(RedirectError::TooLong));
    }

    #[test]
    fn an_empty_list_allows_any_valid_host_but_still_checks_the_form() {
        let a = AllowList::default();
        assert_eq!(a.validate("https://anything.example.net/x"), Ok(()));
        assert_eq!(
            a.validate("javascript:alert(1)"),
            Err(RedirectError::NotHttp)
        );
        assert_eq!(a.validate("https://a b/"), Err(RedirectError::BadCharacter));
    }

    #[test]
    fn subdomain_patterns_do_not_match_the_bare_domain() {
        let a = AllowList::new(&["*.example.com"]).unwrap();
        assert_eq!(
            a.validate("https://example.com/"),
            Err(RedirectError::HostNotAllowed)
        );
        assert_eq!(a.validate("https://x.example.com/"), Ok(()));
    }

    #[test]
    fn bad_patterns_are_reported() {
        assert_eq!(
            AllowList::new(&["exa mple.com"]).unwrap_err(),
            "exa mple.com"
        );
        assert!(AllowList::new(&["*.example.com", "ok.example"]).is_ok());
    }
}
