//! Invalid traffic: flags, never drops. Known crawlers, preview fetchers and
//! automation by their user agent (a shipped list operators can extend),
//! prefetches, and requests with no user agent.

use std::cell::RefCell;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use aho_corasick::AhoCorasick;
use hyper::header::{HeaderMap, HeaderName};

/// The list that ships with pixeld (`config/ivt-user-agents.txt`).
const BUILTIN: &str = include_str!("../../config/ivt-user-agents.txt");

/// User-agent patterns and the label each one flags.
#[derive(Clone, Debug)]
pub struct IvtList {
    /// All patterns, matched case-insensitively in one pass (None: an empty list).
    matcher: Option<AhoCorasick>,
    /// `CATEGORY:PATTERN` per pattern, in the matcher's order.
    labels: Vec<String>,
    /// Tells this list's entries apart in the per-thread cache.
    id: usize,
}

/// Headers by which browsers announce a prefetch or preview.
static PURPOSE: [HeaderName; 4] = [
    HeaderName::from_static("sec-purpose"),
    HeaderName::from_static("purpose"),
    HeaderName::from_static("x-moz"),
    HeaderName::from_static("x-purpose"),
];

/// Slots in the per-thread cache of user-agent verdicts.
const CACHE_SLOTS: usize = 256;

/// One cached verdict: (list id, user agent, label index).
type Slot = Option<(usize, Box<str>, Option<u32>)>;

thread_local! {
    /// Browsers send a handful of distinct user agents over and over: a
    /// direct-mapped cache saves scanning each one against every pattern.
    static VERDICTS: RefCell<Vec<Slot>> = RefCell::new(vec![None; CACHE_SLOTS]);
}

static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

/// `CATEGORY PATTERN` lines; `#` comments and blank lines skipped.
fn parse(text: &str, source: &str, out: &mut Vec<(String, String)>) -> Result<(), String> {
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once(char::is_whitespace) {
            Some((category, pattern)) if !pattern.trim().is_empty() => {
                out.push((category.to_string(), pattern.trim().to_string()));
            }
            _ => {
                return Err(format!(
                    "{source}:{}: expected `CATEGORY PATTERN`, got {line:?}",
                    i + 1
                ))
            }
        }
    }
    Ok(())
}

/// A prefetch or preview: the browser fetches ahead, nobody asked for it yet.
pub fn is_prefetch(headers: &HeaderMap) -> bool {
    PURPOSE.iter().any(|h| {
        headers.get(h).is_some_and(|v| {
            let v = v.as_bytes();
            v.windows(8).any(|w| w.eq_ignore_ascii_case(b"prefetch"))
                || v.eq_ignore_ascii_case(b"preview")
        })
    })
}

impl Default for IvtList {
    /// The shipped list alone (`tests::crawlers_previews_and_automation_are_named`
    /// proves it parses; an empty list stands in only if that test fails).
    fn default() -> Self {
        IvtList::load(None).unwrap_or_else(|_| IvtList::empty())
    }
}

impl IvtList {
    fn empty() -> IvtList {
        IvtList {
            matcher: None,
            labels: Vec::new(),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The shipped list, plus the lines of `extra` if given.
    pub fn load(extra: Option<&Path>) -> Result<IvtList, String> {
        let mut entries = Vec::new();
        parse(BUILTIN, "built-in list", &mut entries)?;
        if let Some(path) = extra {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            parse(&text, &path.display().to_string(), &mut entries)?;
        }
        let matcher = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(entries.iter().map(|(_, p)| p))
            .map_err(|e| e.to_string())?;
        let labels = entries
            .into_iter()
            .map(|(c, p)| format!("{c}:{p}"))
            .collect();
        Ok(IvtList {
            matcher: Some(matcher),
            labels,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// Why this request is invalid traffic, if it is.
    pub fn classify(&self, headers: &HeaderMap, user_agent: Option<&str>) -> Option<&str> {
        if is_prefetch(headers) {
            return Some("prefetch");
        }
        let ua = user_agent.map(str::trim).unwrap_or_default();
        if ua.is_empty() {
            return Some("no_user_agent");
        }
        let label = self.match_cached(ua)?;
        self.labels.get(label as usize).map(String::as_str)
    }

    /// The index of the first pattern `ua` matches, through the cache.
    fn match_cached(&self, ua: &str) -> Option<u32> {
        let scan = || {
            let m = self.matcher.as_ref()?.find(ua)?;
            Some(m.pattern().as_u32())
        };
        let slot = ahash::RandomState::with_seeds(1, 2, 3, 4).hash_one(ua) as usize % CACHE_SLOTS;
        VERDICTS
            .try_with(|cache| {
                let mut cache = cache.borrow_mut();
                match &cache[slot] {
                    Some((id, cached, verdict)) if *id == self.id && **cached == *ua => *verdict,
                    _ => {
                        let verdict = scan();
                        // Long agents are rare and not worth keeping.
                        if ua.len() <= 512 {
                            cache[slot] = Some((self.id, ua.into(), verdict));
                        }
                        verdict
                    }
                }
            })
            .unwrap_or_else(|_| scan())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn classify(ua: Option<&str>, headers: &[(&'static str, &'static str)]) -> Option<String> {
        let list = IvtList::load(None).unwrap();
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, HeaderValue::from_static(v));
        }
        list.classify(&h, ua).map(String::from)
    }

    #[test]
    fn crawlers_previews_and_automation_are_named() {
        let google = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
        assert_eq!(
            classify(Some(google), &[]).as_deref(),
            Some("crawler:Googlebot")
        );
        assert_eq!(
            classify(Some("facebookexternalhit/1.1"), &[]).as_deref(),
            Some("preview:facebookexternalhit")
        );
        assert_eq!(
            classify(Some("Slackbot-LinkExpanding 1.0"), &[]).as_deref(),
            Some("preview:Slackbot")
        );
        assert_eq!(
            classify(Some("curl/8.1.2"), &[]).as_deref(),
            Some("automation:curl/")
        );
        assert_eq!(
            classify(Some("mozilla/5.0 HEADLESSCHROME/120"), &[]).as_deref(),
            Some("automation:HeadlessChrome")
        );
    }

    #[test]
    fn browsers_pass_and_prefetches_and_empty_agents_are_flagged() {
        let chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";
        assert_eq!(classify(Some(chrome), &[]), None);
        assert_eq!(
            classify(Some(chrome), &[("sec-purpose", "prefetch;prerender")]).as_deref(),
            Some("prefetch")
        );
        assert_eq!(
            classify(Some(chrome), &[("purpose", "prefetch")]).as_deref(),
            Some("prefetch")
        );
        assert_eq!(classify(None, &[]).as_deref(), Some("no_user_agent"));
        assert_eq!(classify(Some("  "), &[]).as_deref(), Some("no_user_agent"));
    }

    #[test]
    fn operators_extend_the_list_and_bad_lines_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("extra.txt");
        std::fs::write(&path, "# ours\ninternal MonitoringProbe\n").unwrap();
        let list = IvtList::load(Some(&path)).unwrap();
        assert_eq!(
            list.classify(&HeaderMap::new(), Some("x MonitoringProbe/1")),
            Some("internal:MonitoringProbe")
        );
        std::fs::write(&path, "lonely\n").unwrap();
        assert!(IvtList::load(Some(&path))
            .err()
            .unwrap()
            .contains("extra.txt:1"));
    }

    #[test]
    fn cached_verdicts_belong_to_their_list() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("extra.txt");
        std::fs::write(&path, "internal MonitoringProbe\n").unwrap();
        let (builtin, extended) = (
            IvtList::load(None).unwrap(),
            IvtList::load(Some(&path)).unwrap(),
        );
        let ua = Some("x MonitoringProbe/1");
        for _ in 0..3 {
            assert_eq!(builtin.classify(&HeaderMap::new(), ua), None);
            assert_eq!(
                extended.classify(&HeaderMap::new(), ua),
                Some("internal:MonitoringProbe")
            );
        }
        // Agents that share a slot are told apart by their text.
        for i in 0..2 * CACHE_SLOTS {
            let ua = format!("Mozilla/5.0 Browser/{i}");
            assert_eq!(builtin.classify(&HeaderMap::new(), Some(&ua)), None);
            let bot = format!("Googlebot/{i}");
            assert_eq!(
                builtin.classify(&HeaderMap::new(), Some(&bot)),
                Some("crawler:Googlebot")
            );
        }
    }
}
