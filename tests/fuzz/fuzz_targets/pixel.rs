//! Whole pixel requests (any query, every endpoint) against the example
//! config: never panics, and the event keeps the rules for request data:
//! free text without control or Unicode format characters, money within
//! 2^53 - 1 micros, a cachebuster of printable ASCII, no repeated segment,
//! no redirect carries the user's id unless a configured URL put it there,
//! and consent strings are kept bounded and allow the cookie under `gdpr=1`
//! only when they say so.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pixeld::config::{parse, Catalog, Config};
use pixeld::event::text::{is_cachebuster, is_plain};
use pixeld::event::{encode, AttributionInput, Common, Warnings};
use pixeld::ids::{EventId, UserId};
use pixeld::pixel::decimal::MAX_MICROS;
use pixeld::pixel::query::{Param, Query};
use pixeld::pixel::{consent, handle, Context, PixelKind, PixelRequest, Reply};

fn setup() -> &'static (Config, std::sync::Arc<Catalog>) {
    static S: OnceLock<(Config, std::sync::Arc<Catalog>)> = OnceLock::new();
    S.get_or_init(|| {
        let cfg = parse(include_str!("../../../config/pixeld.toml"), "example").unwrap();
        let catalog = Catalog::new(&cfg).unwrap();
        (cfg, catalog)
    })
}

const UID: UserId = UserId(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let (cfg, catalog) = setup();
    let click_ids = pixeld::pixel::click_id::ClickIds::new(
        pixeld::config::Secret::parse("000102030405060708090a0b0c0d0e0f").unwrap(),
        vec![],
        "pxclid".into(),
    );
    let ctx = Context {
        catalog,
        allow: &cfg.redirect.allowed_hosts,
        click_ids: &click_ids,
        source_click_param: "sclid",
    };
    for (kind, path) in [
        (PixelKind::Impression, "/imptr"),
        (PixelKind::Click, "/clktr"),
        (PixelKind::Conversion, "/px"),
        (PixelKind::Segment, "/seg"),
    ] {
        // Consent as the HTTP layer reads it, enforced for vendor 755.
        let mut warnings = Warnings::default();
        let (consent, allowed) = match Query::parse(raw, 8192) {
            Ok(q) => consent::read(&q, Some(755), &mut warnings),
            Err(_) => (None, consent::Allowed::ALL),
        };
        if let Some(c) = &consent {
            for s in [&c.tc_string, &c.gpp].into_iter().flatten() {
                assert!(s.len() <= pixeld::event::Consent::MAX_RAW);
            }
            // Storage is allowed under gdpr=1 only by a string that says so.
            if allowed.storage && c.gdpr == Some(true) {
                assert_eq!(c.tcf.and_then(|t| t.vendor_storage), Some(true));
            }
        }
        let common = Common {
            event_id: EventId::new_v7(1),
            ts_ms: 1,
            uid: allowed.storage.then_some(UID),
            new_uid: false,
            ip: None,
            user_agent: None,
            referer: None,
            warnings,
            ivt: None,
            consent,
        };
        let request = PixelRequest {
            kind,
            path,
            query: raw,
            parsed: Query::parse(raw, 8192),
            common,
        };
        let outcome = handle(request, &ctx);
        let mut json = Vec::new();
        encode(&outcome.event, &mut json);
        let e: serde_json::Value = serde_json::from_slice(&json).expect("valid JSON");
        // The engine's reading of pixeld's JSON agrees with the typed event,
        // whatever the request held.
        let kind = outcome.event.kind();
        let typed = AttributionInput::from_event(&outcome.event);
        assert_eq!(AttributionInput::from_json(kind, &json), typed);
        for field in ["other"] {
            if let Some(s) = e[field].as_str() {
                assert!(is_plain(s), "{field}: {s:?}");
            }
        }
        for field in ["add_codes", "remove_codes"] {
            for c in e[field].as_array().into_iter().flatten() {
                assert!(is_plain(c.as_str().unwrap()), "{field}: {c}");
            }
        }
        if let Some(cb) = e["cachebuster"].as_str() {
            assert!(is_cachebuster(cb), "cachebuster {cb:?}");
        }
        for field in ["ancost_micros", "value_micros"] {
            if let Some(m) = e[field].as_u64() {
                assert!(m <= MAX_MICROS, "{field} {m}");
            }
        }
        for field in ["segments_added", "segments_removed", "removes"] {
            let ids: Vec<_> = e[field].as_array().into_iter().flatten().collect();
            let mut unique = ids.clone();
            unique.sort_by_key(|v| v.as_u64());
            unique.dedup();
            assert_eq!(ids.len(), unique.len(), "{field} repeats");
        }
        if let Reply::Redirect(url) = &outcome.reply {
            let hex = UID.to_hex();
            // An id the request itself held (as is or percent-encoded) is
            // not a leak; any other occurrence must come from a configured
            // URL (user-id sync).
            let in_request = raw.contains(hex.as_str())
                || Query::parse(raw, 8192).is_ok_and(|q| {
                    matches!(q.redir(), Param::Present(v) if v.contains(hex.as_str()))
                });
            if url.as_str().contains(hex.as_str()) && !in_request {
                let configured = cfg
                    .conversion_pixels
                    .iter()
                    .flat_map(|p| &p.piggybacks)
                    .chain(&cfg.network.pixels)
                    .chain(cfg.advertisers.iter().flat_map(|a| &a.pixels))
                    .chain(cfg.impression_trackers.iter().flat_map(|t| &t.pixels))
                    .filter_map(|p| p.url.split("${").next())
                    .chain(cfg.click_trackers.iter().filter_map(|t| {
                        t.click_url.as_deref().and_then(|u| u.split("${").next())
                    }))
                    .any(|prefix| url.as_str().starts_with(prefix));
                assert!(configured, "a request's redirect carries the user id: {url}");
            }
        }
    }
});
