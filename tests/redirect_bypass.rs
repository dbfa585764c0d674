//! Known open-redirect tricks against an allowlist of `example.com` and
//! `*.example.com`, fired the way an attacker would: as the `redir` of a
//! real pixel URL. Every one must be refused (the click falls back to its
//! configured landing page, the impression answers the GIF); the legitimate
//! ones must still work. No `Location` ever carries CR or LF.

mod common;

use std::net::SocketAddr;

use hyper::{Method, Request};
use pixeld::http::router::{respond, Role};
use pixeld::http::App;

/// The `Location` a click with this raw `redir` gets.
fn click_location(app: &App, raw_redir: &str) -> Option<String> {
    let uri = format!("/clktrb?id=21378&redir={raw_redir}");
    let req = Request::builder()
        .method(Method::GET)
        .uri(uri.as_str())
        .body(())
        .ok()?;
    let (resp, _) = respond(
        &req,
        SocketAddr::from(([127, 0, 0, 1], 9)),
        app,
        Role::Public,
    );
    let loc = resp
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string());
    if let Some(l) = &loc {
        assert!(
            !l.contains('\r') && !l.contains('\n'),
            "CR/LF in Location: {l:?}"
        );
    }
    loc
}

const LANDING: &str = "https://www.example.com/autumn-sale";

/// Tricks, written as they would appear raw in the query string.
const REFUSED: &[&str] = &[
    "//evil.com",
    "//evil.com/%2F..",
    "https:evil.com",
    "https:/evil.com",
    "https:///evil.com",
    "https://evil.com%5C@example.com",
    "https://evil.com\\@example.com",
    "https://example.com@evil.com",
    "https://example.com:443@evil.com",
    "https://evil.com#@example.com",
    "https://evil.com?.example.com",
    "https://evil.com/.example.com",
    "https://example.com.evil.com",
    "https://evilexample.com",
    "https://EVIL.com",
    "HTTPS://evil.com",
    "HtTpS://example.com",
    "Https://example.com",
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "javascript://example.com/%0aalert(1)",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "vbscript:msgbox(1)",
    "ht%09tps://example.com",
    "https://exa%09mple.com",
    "https://example.com%0d%0aSet-Cookie:%20x=1",
    "https%3A%2F%2Fexample.com%0D%0ALocation:%20https://evil.com",
    "https%253A%252F%252Fevil.com",
    "%68ttps://evil.com",
    "https://example.com%2F@evil.com",
    "https://2130706433/",
    "https://0x7f000001/",
    "https://0177.0.0.1/",
    "https://127.0.0.1/",
    "https://[::1]/",
    "https://[::ffff:127.0.0.1]/",
    "https://ex%D0%B0mple.com/",
    "https://exаmple.com/",
    "https://xn--exmple-cua.com/",
    "https://example.com./",
    "https://example.com:0/",
    "https://example.com:65536/",
    "https://example.com:abc/",
    "https://:443/",
    "https:///",
    "https://",
    " https://example.com/",
    "https://example.com%20.evil.com/",
    "https://evil.com%23.example.com/",
];

const ACCEPTED: &[(&str, &str)] = &[
    (
        "https://example.com/landing?utm_source=x&b=2",
        "https://example.com/landing?utm_source=x&b=2",
    ),
    // A fragment can only arrive encoded (browsers never send one raw).
    (
        "https%3A%2F%2Fexample.com%2Flanding%3Fa%3D1%23top",
        "https://example.com/landing?a=1#top",
    ),
    (
        "https://shop.example.com/p/1",
        "https://shop.example.com/p/1",
    ),
    ("https://a.b.example.com/", "https://a.b.example.com/"),
    ("https://example.com:8443/x", "https://example.com:8443/x"),
    ("http://www.example.com/", "http://www.example.com/"),
    (
        "https%3A%2F%2Fshop.example.com%2Fp%3Fq%3D1",
        "https://shop.example.com/p?q=1",
    ),
];

#[test]
fn at_least_forty_known_tricks_are_all_refused() {
    assert!(REFUSED.len() >= 40, "{} tricks", REFUSED.len());
    let app = common::memory_app();
    let mut escaped = Vec::new();
    for trick in REFUSED {
        let encoded = trick
            .replace(' ', "%20")
            .replace('\\', "%5C")
            .replace('а', "%D0%B0");
        match click_location(&app, &encoded) {
            Some(loc) if loc == LANDING => {}
            None => {}
            Some(loc) => escaped.push(format!("{trick} -> {loc}")),
        }
    }
    assert!(escaped.is_empty(), "escaped the allowlist: {escaped:#?}");
}

#[test]
fn legitimate_targets_are_followed() {
    let app = common::memory_app();
    for (raw, want) in ACCEPTED {
        assert_eq!(click_location(&app, raw).as_deref(), Some(*want), "{raw}");
    }
}

#[test]
fn over_long_targets_are_refused() {
    let app = common::memory_app();
    let long = format!("https://example.com/{}", "a".repeat(4100));
    assert_eq!(click_location(&app, &long).as_deref(), Some(LANDING));
}
