//! Checks that need more than the file's shape: ranges, references between
//! sections, duplicate ids, URLs. Each problem says what the fix is.

use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::hash::Hash;

use super::load::Problem;
use super::redirect::AllowList;
use super::{Config, ConversionPixelConfig, PixelConfig, PixelFormat};
use crate::ids::{AdvertiserId, LineItemId, PixelId, SegmentId};

pub const MAX_POST_VIEW_MINUTES: u32 = 43_200;
pub const MAX_POST_CLICK_MINUTES: u32 = 129_600;
pub const MAX_SEGMENT_EXPIRE_MINUTES: u32 = 259_200;
pub const MAX_PIXELS_PER_LINE_ITEM: usize = 20;

pub(super) struct Report(Vec<Problem>);

impl Report {
    pub(super) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }
}

pub fn validate(cfg: &Config) -> Vec<Problem> {
    let mut r = Report(Vec::new());
    server(cfg, &mut r);
    cookie(cfg, &mut r);
    kafka(cfg, &mut r);
    sync(cfg, &mut r);
    journal(cfg, &mut r);
    attribution(cfg, &mut r);

    let allow = &cfg.redirect.allowed_hosts;

    pixels(&cfg.network.pixels, "network.pixels", allow, &mut r);
    let defined = DefinedIds::collect(cfg, &mut r);

    for (i, a) in cfg.advertisers.iter().enumerate() {
        pixels(
            &a.pixels,
            &format!("advertisers[{i}].pixels"),
            allow,
            &mut r,
        );
    }
    line_items(cfg, &defined, &mut r);
    impression_trackers(cfg, &defined, allow, &mut r);
    click_trackers(cfg, &defined, allow, &mut r);
    conversion_pixels(cfg, &defined.advertisers, allow, &mut r);
    segments(cfg, &mut r);
    api_keys(cfg, &defined.advertisers, &mut r);
    super::validate_forward::forward(cfg, &mut r);
    r.0
}

fn journal(cfg: &Config, r: &mut Report) {
    let j = &cfg.journal;
    if j.segment_bytes < 4096 {
        r.add(
            "journal.segment_bytes",
            format!("{} is below 4096", j.segment_bytes),
        );
    }
    if j.max_bytes < j.segment_bytes.min(1 << 20) {
        r.add(
            "journal.max_bytes",
            format!(
                "{} cannot hold even one segment; raise it (default 10 GiB)",
                j.max_bytes
            ),
        );
    }
}

fn attribution(cfg: &Config, r: &mut Report) {
    let a = &cfg.attribution;
    if !(1..=16_777_216).contains(&a.channel_capacity) {
        r.add(
            "attribution.channel_capacity",
            format!("{} is outside 1..=16777216", a.channel_capacity),
        );
    }
    if a.snapshot_interval_secs == 0 {
        r.add("attribution.snapshot_interval_secs", "must be above 0");
    }
    if a.sweep_interval_secs == 0 {
        r.add("attribution.sweep_interval_secs", "must be above 0");
    }
    if a.max_users < 1024 {
        r.add(
            "attribution.max_users",
            format!("{} is below 1024; size it to the users active within your longest window (about 150 bytes each)", a.max_users),
        );
    }
    if a.group_id.trim().is_empty() {
        r.add("attribution.group_id", "must name a consumer group");
    }
    if a.grace_ms > 24 * 3_600_000 {
        r.add(
            "attribution.grace_ms",
            format!(
                "{} is above a day; inputs would be held that long",
                a.grace_ms
            ),
        );
    }
    if a.max_future_ms == 0 || a.max_future_ms > 24 * 3_600_000 {
        r.add(
            "attribution.max_future_ms",
            format!(
                "{} is outside 1..=86400000; clocks disagree by seconds, not days",
                a.max_future_ms
            ),
        );
    }
    if !(10..=60_000).contains(&a.commit_interval_ms) {
        r.add(
            "attribution.commit_interval_ms",
            format!("{} is outside 10..=60000", a.commit_interval_ms),
        );
    }
    if !(1_000..=300_000).contains(&a.session_timeout_ms) {
        r.add(
            "attribution.session_timeout_ms",
            format!("{} is outside 1000..=300000", a.session_timeout_ms),
        );
    }
}

/// The ids each section defines, for the references between sections to be
/// checked against; collecting them reports the ids used twice.
struct DefinedIds {
    advertisers: HashSet<AdvertiserId>,
    line_items: HashSet<LineItemId>,
    segments: HashSet<SegmentId>,
    conversion_pixels: HashSet<PixelId>,
}

impl DefinedIds {
    fn collect(cfg: &Config, r: &mut Report) -> DefinedIds {
        let advertisers = ids(cfg.advertisers.iter().map(|a| a.id), "advertisers", r);
        let line_items = ids(cfg.line_items.iter().map(|l| l.id), "line_items", r);
        let segments = ids(cfg.segments.iter().map(|s| s.id), "segments", r);
        let conversion_pixels = ids(
            cfg.conversion_pixels.iter().map(|p| p.id),
            "conversion_pixels",
            r,
        );
        ids(
            cfg.impression_trackers.iter().map(|t| t.id),
            "impression_trackers",
            r,
        );
        ids(cfg.click_trackers.iter().map(|t| t.id), "click_trackers", r);
        DefinedIds {
            advertisers,
            line_items,
            segments,
            conversion_pixels,
        }
    }
}

fn line_items(cfg: &Config, defined: &DefinedIds, r: &mut Report) {
    let pixel_advertiser: HashMap<_, _> = cfg
        .conversion_pixels
        .iter()
        .enumerate()
        .map(|(k, p)| (p.id, (p.advertiser, k)))
        .collect();
    for (i, l) in cfg.line_items.iter().enumerate() {
        let at = format!("line_items[{i}]");
        exists(
            &defined.advertisers,
            l.advertiser,
            &format!("{at}.advertiser"),
            "advertisers",
            r,
        );
        if l.conversion_pixels.len() > MAX_PIXELS_PER_LINE_ITEM {
            r.add(
                format!("{at}.conversion_pixels"),
                format!(
                    "{} pixels attached; a line item can have at most {MAX_PIXELS_PER_LINE_ITEM}",
                    l.conversion_pixels.len()
                ),
            );
        }
        for (j, p) in l.conversion_pixels.iter().enumerate() {
            let path = format!("{at}.conversion_pixels[{j}]");
            exists(
                &defined.conversion_pixels,
                *p,
                &path,
                "conversion_pixels",
                r,
            );
            if let Some((owner, k)) = pixel_advertiser.get(p) {
                // Named by key paths: the ids are values, kept out of messages.
                if *owner != l.advertiser {
                    r.add(
                        path,
                        format!(
                            "the pixel belongs to another advertiser (conversion_pixels[{k}].advertiser) than {at}.advertiser; attach pixels of the same advertiser"
                        ),
                    );
                }
            }
        }
    }
}

fn impression_trackers(cfg: &Config, defined: &DefinedIds, allow: &AllowList, r: &mut Report) {
    for (i, t) in cfg.impression_trackers.iter().enumerate() {
        let at = format!("impression_trackers[{i}]");
        exists(
            &defined.line_items,
            t.line_item,
            &format!("{at}.line_item"),
            "line_items",
            r,
        );
        pixels(&t.pixels, &format!("{at}.pixels"), allow, r);
        added_segments(&t.add_segments, &at, &defined.segments, r);
    }
}

fn click_trackers(cfg: &Config, defined: &DefinedIds, allow: &AllowList, r: &mut Report) {
    for (i, t) in cfg.click_trackers.iter().enumerate() {
        let at = format!("click_trackers[{i}]");
        exists(
            &defined.line_items,
            t.line_item,
            &format!("{at}.line_item"),
            "line_items",
            r,
        );
        if let Some(url) = &t.click_url {
            url_ok(url, &format!("{at}.click_url"), allow, r);
        }
        added_segments(&t.add_segments, &at, &defined.segments, r);
    }
}

/// A tracker's `add_segments`, each of which must be a defined segment.
fn added_segments(add: &[SegmentId], at: &str, segments: &HashSet<SegmentId>, r: &mut Report) {
    for (j, s) in add.iter().enumerate() {
        exists(
            segments,
            *s,
            &format!("{at}.add_segments[{j}]"),
            "segments",
            r,
        );
    }
}

fn conversion_pixels(
    cfg: &Config,
    advertisers: &HashSet<AdvertiserId>,
    allow: &AllowList,
    r: &mut Report,
) {
    for (i, p) in cfg.conversion_pixels.iter().enumerate() {
        let at = format!("conversion_pixels[{i}]");
        if p.currency
            .as_deref()
            .is_some_and(|c| !super::validate_forward::currency(c))
        {
            r.add(
                format!("{at}.currency"),
                "must be an ISO 4217 code of three capital letters (EUR, USD)",
            );
        }
        exists(
            advertisers,
            p.advertiser,
            &format!("{at}.advertiser"),
            "advertisers",
            r,
        );
        conversion_windows(p, &at, r);
        let images = p
            .piggybacks
            .iter()
            .filter(|x| x.format == PixelFormat::Img)
            .count();
        if images > 1 {
            r.add(
                format!("{at}.piggybacks"),
                format!("{images} img piggybacks; the image response can fire only one (by redirect): keep one img and make the others js, or fire them from the JavaScript form"),
            );
        }
        pixels(&p.piggybacks, &format!("{at}.piggybacks"), allow, r);
    }
}

/// A conversion pixel's post-view, deduplication and post-click windows.
fn conversion_windows(p: &ConversionPixelConfig, at: &str, r: &mut Report) {
    if p.post_view_minutes > MAX_POST_VIEW_MINUTES {
        r.add(
            format!("{at}.post_view_minutes"),
            format!(
                "{} is above the maximum {MAX_POST_VIEW_MINUTES} (30 days)",
                p.post_view_minutes
            ),
        );
    }
    if p.dedup_minutes > MAX_POST_CLICK_MINUTES {
        r.add(
            format!("{at}.dedup_minutes"),
            format!(
                "{} is above the maximum {MAX_POST_CLICK_MINUTES} (90 days); 0 turns deduplication off",
                p.dedup_minutes
            ),
        );
    }
    if p.post_click_minutes > MAX_POST_CLICK_MINUTES {
        r.add(
            format!("{at}.post_click_minutes"),
            format!(
                "{} is above the maximum {MAX_POST_CLICK_MINUTES} (90 days)",
                p.post_click_minutes
            ),
        );
    }
}

fn segments(cfg: &Config, r: &mut Report) {
    for (i, s) in cfg.segments.iter().enumerate() {
        if let Some(m) = s.expire_minutes {
            if m > MAX_SEGMENT_EXPIRE_MINUTES {
                r.add(
                    format!("segments[{i}].expire_minutes"),
                    format!("{m} is above the maximum {MAX_SEGMENT_EXPIRE_MINUTES} (180 days)"),
                );
            }
        }
    }
}

/// `[[api_keys]]`: named, unique, with a secret and at least one known
/// advertiser. The messages name the key by its path: the secret is never
/// quoted, and an id is a value too.
fn api_keys(cfg: &Config, advertisers: &HashSet<AdvertiserId>, r: &mut Report) {
    let mut names = HashSet::new();
    for (i, k) in cfg.api_keys.iter().enumerate() {
        let at = format!("api_keys[{i}]");
        if crate::ids::ApiKeyName::new(&k.id).is_none() {
            r.add(
                format!("{at}.id"),
                "must be 1 to 32 letters, digits, '-' or '_'",
            );
        } else if !names.insert(k.id.as_str()) {
            r.add(
                format!("{at}.id"),
                "is used by another [[api_keys]] entry; ids must be unique",
            );
        }
        if k.secret.is_none() {
            r.add(
                format!("{at}.secret"),
                "is missing: set secret or secret_file (generate one with `openssl rand -hex 32`)",
            );
        }
        if k.advertisers.is_empty() {
            r.add(
                format!("{at}.advertisers"),
                "is empty: list the advertisers whose pixels this key may report",
            );
        }
        for (j, a) in k.advertisers.iter().enumerate() {
            let path = format!("{at}.advertisers[{j}]");
            exists(advertisers, *a, &path, "advertisers", r);
        }
    }
    let secrets: Vec<_> = cfg
        .api_keys
        .iter()
        .filter_map(|k| k.secret.as_ref())
        .collect();
    for (i, s) in secrets.iter().enumerate() {
        if secrets[..i].contains(s) {
            r.add(
                format!("api_keys[{i}].secret"),
                "is the secret of another key: give each key its own",
            );
        }
    }
}

fn server(cfg: &Config, r: &mut Report) {
    let s = &cfg.server;
    let url = &s.public_url;
    let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
    if !scheme_ok || url.bytes().any(|b| b <= b' ' || b >= 0x7f) || url.len() < 9 {
        r.add(
            "server.public_url",
            format!("{url:?} is not an http(s) URL; write e.g. \"https://px.example.com\""),
        );
    }
    if !(256..=65_536).contains(&s.max_query_bytes) {
        r.add(
            "server.max_query_bytes",
            format!("{} is outside 256..=65536", s.max_query_bytes),
        );
    }
    if !(8192..=1_048_576).contains(&s.max_header_bytes) {
        r.add(
            "server.max_header_bytes",
            format!("{} is outside 8192..=1048576", s.max_header_bytes),
        );
    }
    if s.max_request_line_bytes < s.max_query_bytes + 64 {
        r.add(
            "server.max_request_line_bytes",
            format!(
                "{} cannot hold a request line with a query of max_query_bytes ({}); raise it",
                s.max_request_line_bytes, s.max_query_bytes
            ),
        );
    }
    if s.max_header_bytes < s.max_request_line_bytes + 1024 {
        r.add(
            "server.max_header_bytes",
            format!("{} cannot hold a request line of max_request_line_bytes ({}) and its headers; raise it", s.max_header_bytes, s.max_request_line_bytes),
        );
    }
    if !(8..=32).contains(&s.rate_limit_ipv4_prefix) {
        r.add(
            "server.rate_limit_ipv4_prefix",
            format!("{} is outside 8..=32", s.rate_limit_ipv4_prefix),
        );
    }
    if !(16..=128).contains(&s.rate_limit_ipv6_prefix) {
        r.add(
            "server.rate_limit_ipv6_prefix",
            format!(
                "{} is outside 16..=128 (64 is one host's share)",
                s.rate_limit_ipv6_prefix
            ),
        );
    }
    if s.max_connections == 0 {
        r.add("server.max_connections", "must be above 0");
    }
    if s.threads > 1024 {
        r.add(
            "server.threads",
            format!("{} is above 1024 (0 is one per core)", s.threads),
        );
    }
    if s.header_read_timeout_ms == 0 {
        r.add("server.header_read_timeout_ms", "must be above 0");
    }
    for (i, h) in s.admin_hosts.iter().enumerate() {
        let ok = !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
        if !ok {
            r.add(
                format!("server.admin_hosts[{i}]"),
                "is not a host name or host:port; write e.g. \"pixeld-admin.example\" or \"pixeld-0.pixeld:9090\"",
            );
        }
    }
}

/// `sync.cors_origins`: compared byte for byte with the browser's `Origin`
/// header, so an entry must be written exactly as a browser sends it, or it
/// would silently never match.
fn sync(cfg: &Config, r: &mut Report) {
    sync_pixels(cfg, r);
    for (i, o) in cfg.sync.cors_origins.iter().enumerate() {
        if !is_origin(o) {
            r.add(
                format!("sync.cors_origins[{i}]"),
                format!(
                    "{o:?} is not an origin; write scheme://host[:port] in lowercase, http or https, \
                     no path nor trailing slash, e.g. \"https://partner.example\""
                ),
            );
        }
    }
}

/// `http(s)://host[:port]` as browsers serialise an origin: lowercase, no
/// userinfo, path, query or trailing slash.
pub fn is_origin(o: &str) -> bool {
    let Some(rest) = o
        .strip_prefix("https://")
        .or_else(|| o.strip_prefix("http://"))
    else {
        return false;
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (rest, None),
    };
    let port_ok = port.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u32>().is_ok_and(|n| (1..=65535).contains(&n))
    });
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    port_ok && host_ok
}

fn cookie(cfg: &Config, r: &mut Report) {
    let c = &cfg.cookie;
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    if !token(&c.name) {
        r.add(
            "cookie.name",
            format!(
                "{:?} is not a valid cookie name; use letters, digits, `_` or `-`",
                c.name
            ),
        );
    }
    let is_domain = |d: &str| {
        let host = d.strip_prefix('.').unwrap_or(d);
        !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    };
    if let Some(d) = c.domain.as_deref().filter(|d| !is_domain(d)) {
        r.add(
            "cookie.domain",
            format!("{d:?} is not a domain; write e.g. \"example.com\""),
        );
    }
    for (i, d) in c.domains.iter().enumerate() {
        if !is_domain(d) {
            r.add(
                format!("cookie.domains[{i}]"),
                format!("{d:?} is not a domain; write e.g. \"track.example.com\""),
            );
        }
    }
    if c.same_site == Some(crate::config::SameSite::None) && !c.secure {
        r.add(
            "cookie.same_site",
            "\"none\" needs cookie.secure = true (browsers drop SameSite=None cookies without Secure); \
             set secure = true and serve over HTTPS, or use \"lax\"",
        );
    }
    let p = &cfg.redirect.click_id_param;
    if p.is_empty()
        || p.len() > 32
        || !p
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        r.add(
            "redirect.click_id_param",
            format!("{p:?} is not a URL parameter name; use up to 32 letters, digits, `_` or `-`"),
        );
    }
    source_click_param(cfg, r);
    if cfg.privacy.tcf_vendor_id == Some(0) {
        r.add(
            "privacy.tcf_vendor_id",
            "0 is not a vendor id; use the id the IAB Global Vendor List gives you, or leave it out",
        );
    }
    if !(1..=400).contains(&c.max_age_days) {
        r.add(
            "cookie.max_age_days",
            format!(
                "{} is outside 1..=400 (browsers cap cookies at 400 days)",
                c.max_age_days
            ),
        );
    }
}

fn kafka(cfg: &Config, r: &mut Report) {
    let k = &cfg.kafka;
    if k.partitions < 1 {
        r.add(
            "kafka.partitions",
            format!("{} must be at least 1", k.partitions),
        );
    }
    if !(1..=32_767).contains(&k.replication_factor) {
        r.add(
            "kafka.replication_factor",
            format!("{} is outside 1..=32767", k.replication_factor),
        );
    }
    if k.queue_max_messages < 1000 {
        r.add(
            "kafka.queue_max_messages",
            format!("{} is below 1000", k.queue_max_messages),
        );
    }
    let t = &k.topics;
    for (name, topic) in [
        ("impressions", &t.impressions),
        ("clicks", &t.clicks),
        ("conversions", &t.conversions),
        ("segments", &t.segments),
        ("invalid", &t.invalid),
        ("attributions", &t.attributions),
        ("adjustments", &t.adjustments),
        ("attribution_state", &t.attribution_state),
        ("orders", &t.orders),
        ("adjustments_by_user", &t.adjustments_by_user),
    ] {
        let ok = !topic.is_empty()
            && topic.len() <= 249
            && topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !ok {
            r.add(
                format!("kafka.topics.{name}"),
                format!("{topic:?} is not a Kafka topic name (letters, digits, `.`, `_`, `-`)"),
            );
        }
    }
    for (key, value) in &k.librdkafka {
        if matches!(
            value,
            toml::Value::Array(_) | toml::Value::Table(_) | toml::Value::Datetime(_)
        ) {
            r.add(
                format!("kafka.librdkafka.{key:?}"),
                "must be a string, number or boolean",
            );
        }
    }
}

fn ids<T: Copy + Eq + Hash + Display>(
    iter: impl Iterator<Item = T>,
    section: &str,
    r: &mut Report,
) -> HashSet<T> {
    let mut seen = HashSet::new();
    for (i, id) in iter.enumerate() {
        if !seen.insert(id) {
            r.add(
                format!("{section}[{i}].id"),
                format!("{id} is used twice in {section}; ids must be unique"),
            );
        }
    }
    seen
}

fn exists<T: Eq + Hash + Display>(
    set: &HashSet<T>,
    id: T,
    path: &str,
    section: &str,
    r: &mut Report,
) {
    if !set.contains(&id) {
        r.add(
            path,
            format!("{id} is not defined; add it under [[{section}]] or fix the id"),
        );
    }
}

/// An `img` pixel can become the image response's redirect, so it must pass
/// the allowlist; a `js` one is only ever loaded by a script element.
fn pixels(list: &[PixelConfig], path: &str, allow: &AllowList, r: &mut Report) {
    let any = AllowList::default();
    for (i, p) in list.iter().enumerate() {
        let rule = if p.format == PixelFormat::Img {
            allow
        } else {
            &any
        };
        url_ok(&p.url, &format!("{path}[{i}].url"), rule, r);
    }
}

fn url_ok(url: &str, path: &str, allow: &AllowList, r: &mut Report) {
    // Macros are filled in at fire time; validate with a stand-in value.
    let probe = url
        .replace("${CACHEBUSTER}", "0")
        .replace("${UID}", "0")
        .replace("${USER_ID}", "0");
    if let Err(e) = allow.validate(&probe) {
        r.add(path, format!("{url:?}: {}", e.reason()));
    }
}

/// Parameters a click tracker already reads, which the source's click id
/// must not shadow.
const PIXEL_PARAMS: &[&str] = &["id", "redir", "cachebuster", "ancost", "t", "other", "clid"];

fn source_click_param(cfg: &Config, r: &mut Report) {
    let p = &cfg.redirect.source_click_param;
    let plain = !p.is_empty()
        && p.len() <= 32
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !plain {
        r.add(
            "redirect.source_click_param",
            "not a URL parameter name; use up to 32 letters, digits, `_` or `-`",
        );
    } else if PIXEL_PARAMS.contains(&p.as_str()) || *p == cfg.redirect.click_id_param {
        r.add(
            "redirect.source_click_param",
            "names a parameter pixeld already reads (id, redir, cachebuster, ancost, t, other, clid, \
             or redirect.click_id_param); choose another name, such as the default sclid",
        );
    }
}

/// `sync.pixels` hand our id to a partner: only to one on
/// `sync.allowed_hosts`, whatever their format.
fn sync_pixels(cfg: &Config, r: &mut Report) {
    let sync = &cfg.sync;
    if !sync.pixels.is_empty() && sync.allowed_hosts.is_empty() {
        r.add(
            "sync.pixels",
            "sync pixels need their partners' hosts on sync.allowed_hosts (empty turns sync off)",
        );
        return;
    }
    for (i, p) in sync.pixels.iter().enumerate() {
        url_ok(
            &p.url,
            &format!("sync.pixels[{i}].url"),
            &sync.allowed_hosts,
            r,
        );
    }
}
