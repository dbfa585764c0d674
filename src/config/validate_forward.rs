//! The rules of `[forward]` and `[[destinations]]`, beside the rest of
//! [`super::validate`]: what `pixeld forward` cannot honour is a problem at
//! load, named by its key, never a call that fails for every record.

use std::collections::HashSet;

use super::forward::DestinationKind;
use super::template::Template;
use super::validate::Report;
use super::Config;

pub(super) fn forward(cfg: &Config, r: &mut Report) {
    let f = &cfg.forward;
    if f.queue_capacity == 0 {
        r.add("forward.queue_capacity", "must be above 0");
    }
    if f.commit_interval_ms < 10 {
        r.add("forward.commit_interval_ms", "is below 10");
    }
    if f.backoff_ms == 0 {
        r.add("forward.backoff_ms", "must be above 0");
    }
    if f.max_backoff_ms < f.backoff_ms {
        r.add("forward.max_backoff_ms", "is below forward.backoff_ms");
    }
    if f.max_backoff_ms > 3_600_000 {
        r.add("forward.max_backoff_ms", "is above 3600000 (an hour)");
    }
    let mut ids = HashSet::new();
    for (i, d) in cfg.destinations.iter().enumerate() {
        let at = format!("destinations[{i}]");
        if crate::ids::ApiKeyName::new(&d.id).is_none() {
            r.add(
                format!("{at}.id"),
                "must be 1 to 32 letters, digits, '-' or '_'",
            );
        } else if !ids.insert(d.id.as_str()) {
            r.add(
                format!("{at}.id"),
                "is used by another [[destinations]] entry; ids must be unique",
            );
        }
        // A template that did not parse is reported by the loader already.
        if Template::parse(&d.url).is_ok() {
            url(&d.template, d.kind, &format!("{at}.url"), r);
        }
        limits(d, &at, r);
        filters(cfg, d, &at, r);
        if d.kind != DestinationKind::Postback {
            if d.token.is_none() {
                r.add(
                    format!("{at}.token"),
                    "is missing: this kind's API takes a bearer token; set token_file (or token)",
                );
            }
            if d.method == Some(super::HttpMethod::Get) {
                r.add(
                    format!("{at}.method"),
                    "must be POST: this kind sends a JSON body",
                );
            }
        }
        if d.kind == DestinationKind::GoogleAdsUpload && d.conversion_action.is_none() {
            r.add(
                format!("{at}.conversion_action"),
                "is missing: a Google Ads upload names the conversion action's resource (customers/N/conversionActions/M)",
            );
        }
    }
}

/// Absolute http(s), its host written out; macros only in postbacks.
fn url(t: &Template, kind: DestinationKind, at: &str, r: &mut Report) {
    let prefix = t.prefix();
    let host = prefix
        .strip_prefix("https://")
        .or_else(|| prefix.strip_prefix("http://"));
    let Some(host) = host else {
        r.add(at, "must be an absolute http:// or https:// URL");
        return;
    };
    let ends = host.find(['/', '?', '#']).is_some();
    if host.is_empty() || (!ends && t.0.len() > 1) {
        r.add(at, "must name its host before any macro");
    }
    // Every value is percent-encoded; the text around them must be a
    // valid URL as written, or every call would fail at run time.
    let bad = t.0.iter().any(|p| match p {
        super::template::Piece::Text(text) => text
            .bytes()
            .any(|b| !b.is_ascii_graphic() || b"\"<>\\^`{|}".contains(&b)),
        super::template::Piece::Macro(_) => false,
    });
    if bad {
        r.add(at, "has a character a URL cannot hold as written (a space, a quote, <>\\^`{|}, or non-ASCII): percent-encode it");
    }
    if kind != DestinationKind::Postback && t.0.len() > 1 {
        r.add(
            at,
            format!("takes no macros: only a postback's URL is a template; {} builds its body from the record", kind.as_str()),
        );
    }
}

fn limits(d: &super::DestinationConfig, at: &str, r: &mut Report) {
    if !(1..=120_000).contains(&d.timeout_ms) {
        r.add(format!("{at}.timeout_ms"), "is outside 1..=120000");
    }
    if !(1..=100).contains(&d.max_attempts) {
        r.add(format!("{at}.max_attempts"), "is outside 1..=100");
    }
    if d.rate_per_s == 0 {
        r.add(format!("{at}.rate_per_s"), "must be above 0");
    }
    if !(1..=1024).contains(&d.concurrency) {
        r.add(format!("{at}.concurrency"), "is outside 1..=1024");
    }
}

/// Filters name defined things; a destination that sends a value has a
/// currency for every pixel it can receive.
fn filters(cfg: &Config, d: &super::DestinationConfig, at: &str, r: &mut Report) {
    let advertisers: HashSet<_> = cfg.advertisers.iter().map(|a| a.id).collect();
    let line_items: HashSet<_> = cfg.line_items.iter().map(|l| l.id).collect();
    let pixels: HashSet<_> = cfg.conversion_pixels.iter().map(|p| p.id).collect();
    for (j, a) in d.advertisers.iter().enumerate() {
        if !advertisers.contains(a) {
            r.add(
                format!("{at}.advertisers[{j}]"),
                format!("{a} is not defined; add it under [[advertisers]] or fix the id"),
            );
        }
    }
    for (j, l) in d.line_items.iter().enumerate() {
        if !line_items.contains(l) {
            r.add(
                format!("{at}.line_items[{j}]"),
                format!("{l} is not defined; add it under [[line_items]] or fix the id"),
            );
        }
    }
    for (j, p) in d.pixels.iter().enumerate() {
        if !pixels.contains(p) {
            r.add(
                format!("{at}.pixels[{j}]"),
                format!("{p} is not defined; add it under [[conversion_pixels]] or fix the id"),
            );
        }
    }
    if d.kind == DestinationKind::Postback {
        return;
    }
    for p in &cfg.conversion_pixels {
        let reaches = (d.pixels.is_empty() || d.pixels.contains(&p.id))
            && (d.advertisers.is_empty() || d.advertisers.contains(&p.advertiser));
        if reaches && p.currency.is_none() {
            r.add(
                format!("{at}.kind"),
                format!("this kind sends values with their currency, and conversion pixel {} has none: set its currency (e.g. currency = \"EUR\") or leave it out of this destination's pixels", p.id),
            );
        }
    }
}

/// `conversion_pixels[i].currency`: an ISO 4217 code.
pub(super) fn currency(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    fn problems(tail: &str) -> Vec<String> {
        let text = format!(
            "[[advertisers]]\nid = 100\n[[conversion_pixels]]\nid = 7313\nadvertiser = 100\n{tail}"
        );
        match crate::config::parse(&text, "t") {
            Ok(_) => Vec::new(),
            Err(e) => e
                .problems
                .iter()
                .map(|p| format!("{}: {}", p.path, p.message))
                .collect(),
        }
    }

    #[test]
    fn what_forward_cannot_honour_is_named_by_its_key() {
        let p = problems(
            "[[destinations]]\nid = \"a\"\nkind = \"postback\"\nurl = \"https://s.example/?p=${PAYOUT}\"\n\
             [[destinations]]\nid = \"a\"\nkind = \"meta_capi\"\nurl = \"https://m.example/${VALUE}\"\nmethod = \"GET\"\n\
             [[destinations]]\nid = \"g\"\nkind = \"google_ads_upload\"\nurl = \"ftp://g.example/\"\npixels = [9]\n\
             [[destinations]]\nid = \"h\"\nkind = \"postback\"\nurl = \"https://${CLICK_ID}.example/\"\nmax_attempts = 0\n\
             [[destinations]]\nid = \"s\"\nkind = \"postback\"\nurl = \"https://s.example/a b?c=${CLICK_ID}\"\n",
        );
        let has = |want: &str| p.iter().any(|l| l.starts_with(want));
        assert!(
            has("destinations[0].url: unknown macro ${PAYOUT}; the known ones are"),
            "{p:#?}"
        );
        assert!(has("destinations[1].id: is used by another"), "{p:#?}");
        assert!(has("destinations[1].url: takes no macros"), "{p:#?}");
        assert!(has("destinations[1].kind: this kind sends values with their currency, and conversion pixel 7313 has none"), "{p:#?}");
        assert!(
            has("destinations[2].url: must be an absolute http:// or https:// URL"),
            "{p:#?}"
        );
        assert!(
            has("destinations[2].pixels[0]: <number> is not defined"),
            "{p:#?}"
        );
        assert!(
            has("destinations[2].conversion_action: is missing"),
            "{p:#?}"
        );
        assert!(
            has("destinations[3].url: must name its host before any macro"),
            "{p:#?}"
        );
        assert!(
            has("destinations[3].max_attempts: is outside 1..=100"),
            "{p:#?}"
        );
        assert!(problems("[[destinations]]\nid = \"ok\"\nkind = \"postback\"\nurl = \"https://s.example/pb?c=${CLICK_ID}\"\n").is_empty());
    }
}
