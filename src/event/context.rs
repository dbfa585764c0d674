//! A conversion's context: the browser's user agent, its address as
//! recorded (after `privacy.ip`) and the page that fired the pixel. The
//! engine carries it from the conversion's input to the conversion's
//! attribution record only (Meta's Conversions API matches a person on the
//! address and agent when no `fbclid` came); it is never kept in the
//! engine's state, changelog or snapshot.

use std::net::IpAddr;

/// Longest user agent carried. Longer ones are dropped, not cut: a cut
/// agent is no browser's agent, and Meta would match nobody on it (real
/// browsers' agents are 100-300 bytes).
pub const MAX_USER_AGENT: usize = 512;

/// Longest page URL carried. Longer ones are cut on a char boundary: the
/// first 2 KiB still name the page (what is lost is query-string padding).
pub const MAX_PAGE_URL: usize = 2048;

/// What the conversion event said of its browser, bounded. Boxed in
/// [`super::ConversionInput`] (8 bytes there): a server's conversion has
/// none, and a browser's costs its strings' length, not the bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConversionContext {
    pub user_agent: Option<Box<str>>,
    /// As the event recorded it: already reduced (or dropped) per
    /// `privacy.ip`; None for an opted-out browser.
    pub ip: Option<IpAddr>,
    pub page_url: Option<Box<str>>,
}

/// The longest prefix of `s` of at most `max` bytes ending on a char
/// boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl ConversionContext {
    /// The bounded context, or None when there is nothing to carry (a
    /// server's conversion): an empty string counts as absent (so the
    /// binary form can write an absent one as length 0).
    pub fn new(
        user_agent: Option<&str>,
        ip: Option<IpAddr>,
        page_url: Option<&str>,
    ) -> Option<Box<ConversionContext>> {
        let user_agent = user_agent
            .filter(|u| !u.is_empty() && u.len() <= MAX_USER_AGENT)
            .map(Box::from);
        let page_url = page_url
            .filter(|u| !u.is_empty())
            .map(|u| Box::from(cut(u, MAX_PAGE_URL)));
        if user_agent.is_none() && ip.is_none() && page_url.is_none() {
            return None;
        }
        Some(Box::new(ConversionContext {
            user_agent,
            ip,
            page_url,
        }))
    }

    /// The binary form (journal aux bytes): `u16 agent length | agent |
    /// u8 address kind (0 none, 4, 6) | 4 or 16 address bytes | u16 URL
    /// length | URL`; a length of 0 is an absent string.
    pub fn put(&self, out: &mut Vec<u8>) {
        let agent = self.user_agent.as_deref().unwrap_or("");
        out.extend_from_slice(&(agent.len() as u16).to_le_bytes());
        out.extend_from_slice(agent.as_bytes());
        match self.ip {
            None => out.push(0),
            Some(IpAddr::V4(a)) => {
                out.push(4);
                out.extend_from_slice(&a.octets());
            }
            Some(IpAddr::V6(a)) => {
                out.push(6);
                out.extend_from_slice(&a.octets());
            }
        }
        let url = self.page_url.as_deref().unwrap_or("");
        out.extend_from_slice(&(url.len() as u16).to_le_bytes());
        out.extend_from_slice(url.as_bytes());
    }

    /// Reads [`ConversionContext::put`]'s form off the front of `bytes`;
    /// returns it (bounded again, whatever wrote it) and the rest, or None
    /// when it is damaged.
    pub fn take(bytes: &[u8]) -> Option<(Option<Box<ConversionContext>>, &[u8])> {
        let (agent, rest) = take_str(bytes)?;
        let (&kind, rest) = rest.split_first()?;
        let (ip, rest) = match kind {
            0 => (None, rest),
            4 => {
                let (a, rest) = rest.split_first_chunk::<4>()?;
                (Some(IpAddr::from(*a)), rest)
            }
            6 => {
                let (a, rest) = rest.split_first_chunk::<16>()?;
                (Some(IpAddr::from(*a)), rest)
            }
            _ => return None,
        };
        let (url, rest) = take_str(rest)?;
        Some((ConversionContext::new(Some(agent), ip, Some(url)), rest))
    }
}

/// `u16 length | UTF-8 bytes` off the front of `bytes`.
fn take_str(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let (len, rest) = bytes.split_first_chunk::<2>()?;
    let (s, rest) = rest.split_at_checked(u16::from_le_bytes(*len) as usize)?;
    Some((std::str::from_utf8(s).ok()?, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_bounded_an_agent_dropped_a_url_cut_on_a_char() {
        let long_agent = "A".repeat(MAX_USER_AGENT + 1);
        let c = ConversionContext::new(Some(&long_agent), None, None);
        assert_eq!(c, None, "an over-long agent is dropped");
        let ok_agent = "A".repeat(MAX_USER_AGENT);
        let c = ConversionContext::new(Some(&ok_agent), None, None).unwrap();
        assert_eq!(c.user_agent.as_deref(), Some(ok_agent.as_str()));
        // 'é' is two bytes: the cut falls inside the last one and backs off.
        let url = format!("https://shop.example/{}é", "a".repeat(MAX_PAGE_URL - 22));
        assert_eq!(url.len(), MAX_PAGE_URL + 1);
        let c = ConversionContext::new(None, None, Some(&url)).unwrap();
        assert_eq!(c.page_url.as_deref(), Some(&url[..MAX_PAGE_URL - 1]));
        assert_eq!(ConversionContext::new(Some(""), None, Some("")), None);
    }

    #[test]
    fn the_binary_form_round_trips_and_refuses_damage() {
        for ip in [None, Some("203.0.113.0"), Some("2001:db8::")] {
            let ip = ip.map(|s| s.parse().unwrap());
            let c = ConversionContext::new(Some("Mozilla/5.0"), ip, Some("https://s.example/p"))
                .unwrap();
            let mut buf = Vec::new();
            c.put(&mut buf);
            buf.push(0xaa);
            let (back, rest) = ConversionContext::take(&buf).unwrap();
            assert_eq!((back, rest), (Some(c), &[0xaa][..]));
            for cut in 0..buf.len() - 1 {
                assert!(
                    ConversionContext::take(&buf[..cut]).is_none(),
                    "cut at {cut}"
                );
            }
        }
        assert!(
            ConversionContext::take(&[0, 0, 5, 0, 0]).is_none(),
            "kind 5"
        );
        assert!(ConversionContext::take(&[1, 0, 0xff, 0, 0, 0]).is_none());
    }
}
