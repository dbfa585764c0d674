//! User-id sync (`/getuid`, `/getuidnb`, `/getuidj`, `/getuidp`) against a
//! real `pixeld serve` (the embedded Kafka cluster: nothing is consumed),
//! fired as raw requests the way a browser or an attacker sends them.

mod common;

use std::path::PathBuf;

use common::{
    config_text, free_tcp_port, header_of, q, raw_get_with, raw_reload, status_of, Process,
    BROWSER_UA,
};

const SYNC: &str = "\n[sync]\nallowed_hosts = [\"partner.example\", \"*.sync.example\"]\n\
cors_origins = [\"https://partner.example\"]\n";

/// `pixeld serve` with `tail` appended to the example config.
fn start(tail: &str) -> (Process, u16) {
    let dir: PathBuf = common::fresh_dir();
    let (port, admin) = (free_tcp_port(), free_tcp_port());
    let overrides = [
        ("listen", q(format!("127.0.0.1:{port}"))),
        ("admin_listen", q(format!("127.0.0.1:{admin}"))),
        ("data_dir", q(dir.join("data").display().to_string())),
    ];
    let path = dir.join("pixeld.toml");
    std::fs::write(&path, config_text(&overrides) + tail).unwrap();
    (Process::start(&path, port, &dir.join("pixeld.log")), admin)
}

fn get(p: &Process, target: &str, headers: &[&str]) -> String {
    let ua = format!("User-Agent: {BROWSER_UA}");
    let mut all = vec![ua.as_str()];
    all.extend_from_slice(headers);
    raw_get_with(p.port, target, &all)
}

fn body(resp: &str) -> &str {
    resp.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// A cookie as a pixel issues it: (the `Cookie` header to send back, the id).
fn cookie_from_a_pixel(p: &Process) -> (String, String) {
    let resp = get(p, "/imptr?id=2766", &[]);
    let set = header_of(&resp, "set-cookie").expect("the pixel issues an id");
    let pair = set.split(';').next().unwrap().to_string();
    let uid = pair
        .strip_prefix("uid=")
        .and_then(|v| v.split('.').next())
        .unwrap()
        .to_string();
    assert_eq!(uid.len(), 32, "{pair}");
    (format!("Cookie: {pair}"), uid)
}

fn location(resp: &str) -> &str {
    assert_eq!(status_of(resp), 302, "{resp}");
    header_of(resp, "location").expect("a Location")
}

fn refused(resp: &str, reason: &str) {
    assert_eq!(status_of(resp), 400, "{resp}");
    assert!(header_of(resp, "location").is_none(), "{resp}");
    assert!(header_of(resp, "set-cookie").is_none(), "{resp}");
    assert_eq!(body(resp), format!("{reason}\n"));
}

#[test]
fn getuid_redirects_allowed_partners_with_the_id_or_zero() {
    let (p, _) = start(SYNC);
    let (cookie, uid) = cookie_from_a_pixel(&p);
    let c = cookie.as_str();

    let resp = get(
        &p,
        "/getuid?https://partner.example/sync?u=$UID&v=$UID",
        &[c],
    );
    assert_eq!(
        location(&resp),
        format!("https://partner.example/sync?u={uid}&v={uid}")
    );
    assert!(header_of(&resp, "set-cookie").is_none(), "never a cookie");
    assert!(header_of(&resp, "cache-control")
        .unwrap()
        .contains("no-store"));
    // Encoded whole, decoded once; no placeholder: `uid=` appended.
    let resp = get(&p, "/getuid?https%3A%2F%2Fa.sync.example%2Fs%3Fx%3D1", &[c]);
    assert_eq!(
        location(&resp),
        format!("https://a.sync.example/s?x=1&uid={uid}")
    );

    // Zero: GPC, an opted-out browser, no cookie at all.
    let target = "/getuid?https://partner.example/s?u=$UID";
    let zero = "https://partner.example/s?u=0";
    assert_eq!(location(&get(&p, target, &[c, "Sec-GPC: 1"])), zero);
    assert_eq!(location(&get(&p, target, &["Cookie: uid=OPTOUT"])), zero);
    let resp = get(&p, target, &[]);
    assert_eq!(location(&resp), zero);
    assert!(header_of(&resp, "set-cookie").is_none(), "never a cookie");
    // A forged cookie is no id either.
    let forged = format!("Cookie: uid={uid}.0000000000000000");
    assert_eq!(location(&get(&p, target, &[&forged])), zero);
}

#[test]
fn getuid_refuses_every_other_target_without_reflecting_it() {
    let (p, _) = start(SYNC);
    let host = "sync target refused: host not on sync.allowed_hosts";
    let url = "sync target refused: not a valid URL";
    for (target, reason) in [
        ("https://evil.example/?u=$UID", host),
        ("https://partner.example.evil.example/", host),
        ("https%3A%2F%2Fevil.example%2F", host),
        ("https://sync.example/", host),
        ("javascript:alert(1)", url),
        ("https://partner.example@evil.example/", url),
        ("//partner.example/", url),
        (
            "https%3A%2F%2Fpartner.example%0D%0ALocation:%20https://evil.example",
            url,
        ),
        ("https://127.0.0.1/", url),
        ("", url),
    ] {
        let resp = get(&p, &format!("/getuid?{target}"), &[]);
        refused(&resp, reason);
        let resp = get(&p, &format!("/getuidnb?{target}"), &[]);
        refused(&resp, reason);
    }
}

#[test]
fn getuidnb_issues_an_id_when_the_browser_has_none() {
    let (p, _) = start(SYNC);
    let target = "/getuidnb?https://partner.example/s?u=$UID";
    let resp = get(&p, target, &[]);
    let set = header_of(&resp, "set-cookie").expect("an id issued");
    let pair = set.split(';').next().unwrap();
    let uid = pair
        .strip_prefix("uid=")
        .unwrap()
        .split('.')
        .next()
        .unwrap();
    assert_eq!(uid.len(), 32);
    assert_eq!(
        location(&resp),
        format!("https://partner.example/s?u={uid}")
    );
    // The issued cookie is the browser's id from now on.
    let cookie = format!("Cookie: {pair}");
    let resp = get(&p, "/getuid?https://partner.example/s?u=$UID", &[&cookie]);
    assert_eq!(
        location(&resp),
        format!("https://partner.example/s?u={uid}")
    );
    let resp = get(&p, target, &[&cookie]);
    assert!(
        header_of(&resp, "set-cookie").is_none(),
        "a known id is kept"
    );
    // GPC and an opt-out still get 0, and no cookie.
    for h in ["Sec-GPC: 1", "Cookie: uid=OPTOUT"] {
        let resp = get(&p, target, &[h]);
        assert_eq!(location(&resp), "https://partner.example/s?u=0", "{h}");
        assert!(header_of(&resp, "set-cookie").is_none(), "{h}");
    }
}

#[test]
fn getuidj_and_getuidp_answer_json_with_cors_only_for_listed_origins() {
    let (p, admin) = start(SYNC);
    let (cookie, uid) = cookie_from_a_pixel(&p);
    let c = cookie.as_str();

    let resp = get(&p, "/getuidj", &[c, "Origin: https://partner.example"]);
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert_eq!(header_of(&resp, "content-type"), Some("application/json"));
    assert_eq!(body(&resp), format!("{{\"uid\":\"{uid}\"}}"));
    assert_eq!(
        header_of(&resp, "access-control-allow-origin"),
        Some("https://partner.example")
    );
    assert_eq!(
        header_of(&resp, "access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(header_of(&resp, "vary"), Some("Origin"));
    for origin in [
        "https://evil.example",
        "https://partner.example.evil.example",
        "null",
    ] {
        let o = format!("Origin: {origin}");
        let resp = get(&p, "/getuidj", &[c, &o]);
        assert_eq!(status_of(&resp), 200);
        assert!(
            header_of(&resp, "access-control-allow-origin").is_none(),
            "{origin}"
        );
        assert!(header_of(&resp, "access-control-allow-credentials").is_none());
    }
    let resp = get(&p, "/getuidj", &["Sec-GPC: 1", c]);
    assert_eq!(body(&resp), "{\"uid\":\"0\"}");

    for bad in ["alert(1)//", "alert%281%29%2F%2F", "", "a-b"] {
        let resp = get(&p, &format!("/getuidp?callback={bad}"), &[c]);
        refused(&resp, "callback must be a plain JavaScript identifier");
    }
    refused(
        &get(&p, "/getuidp", &[c]),
        "callback must be a plain JavaScript identifier",
    );
    // Any page can include a script: without a partner's page as the
    // Referer, the id is 0.
    for referer in [
        "",
        "Referer: https://evil.example/page",
        "Referer: https://partner.example.evil.example/",
    ] {
        let headers: Vec<&str> = [c, referer].into_iter().filter(|h| !h.is_empty()).collect();
        let resp = get(&p, "/getuidp?callback=cb_1.x", &headers);
        assert_eq!(body(&resp), "cb_1.x({\"uid\":\"0\"});", "{referer}: {resp}");
    }
    let resp = get(
        &p,
        "/getuidp?callback=cb_1.x",
        &[c, "Referer: https://partner.example/sync.html"],
    );
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert_eq!(
        header_of(&resp, "content-type"),
        Some("application/javascript; charset=utf-8")
    );
    assert_eq!(header_of(&resp, "x-content-type-options"), Some("nosniff"));
    assert_eq!(body(&resp), format!("cb_1.x({{\"uid\":\"{uid}\"}});"));

    // Counted by route and answer.
    let metrics = raw_get_with(admin, "/metrics", &[]);
    for (labels, n) in [
        (["route=\"getuidj\"", "answer=\"uid\""], 4.0),
        (["route=\"getuidj\"", "answer=\"zero\""], 1.0),
        (["route=\"getuidp\"", "answer=\"refused\""], 5.0),
        (["route=\"getuidp\"", "answer=\"uid\""], 1.0),
        (["route=\"getuidp\"", "answer=\"zero\""], 3.0),
        (["route=\"getuid\"", "answer=\"refused\""], 0.0),
    ] {
        assert_eq!(
            sample(&metrics, "usersync_requests_total{", &labels),
            n,
            "{labels:?}"
        );
    }
    let status = ["route=\"getuidp\"", "status=\"400\""];
    assert_eq!(sample(&metrics, "http_requests_total{", &status), 5.0);
}

/// The value of the one sample of `name` with every label of `labels`.
fn sample(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    let found: Vec<f64> = metrics
        .lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?} in\n{metrics}");
    found[0]
}

#[test]
fn without_sync_allowed_hosts_sync_is_off() {
    let (p, _) = start("");
    for target in [
        "/getuid?https://partner.example/",
        "/getuidnb?https://partner.example/",
        "/getuidj",
        "/getuidp?callback=cb",
    ] {
        let resp = get(&p, target, &["Origin: https://partner.example"]);
        assert_eq!(status_of(&resp), 404, "{target}: {resp}");
        assert_eq!(body(&resp), "user-id sync is not configured\n");
        assert!(header_of(&resp, "location").is_none());
        assert!(header_of(&resp, "access-control-allow-origin").is_none());
    }
}

#[test]
fn sync_is_turned_on_and_off_by_a_reload() {
    let (p, admin) = start("");
    let target = "/getuid?https://partner.example/s?u=$UID";
    assert_eq!(status_of(&get(&p, target, &[])), 404);
    let text = std::fs::read_to_string(&p.config).unwrap();
    std::fs::write(&p.config, text.clone() + SYNC).unwrap();
    assert_eq!(status_of(&raw_reload(admin)), 200);
    assert_eq!(
        location(&get(&p, target, &[])),
        "https://partner.example/s?u=0"
    );
    // A bad origin is refused whole: the running config stays.
    let bad = SYNC.replace("https://partner.example\"]", "https://partner.example/\"]");
    std::fs::write(&p.config, text.clone() + &bad).unwrap();
    let answer = raw_reload(admin);
    assert_eq!(status_of(&answer), 400, "{answer}");
    assert!(answer.contains("sync.cors_origins[0]"), "{answer}");
    assert_eq!(status_of(&get(&p, target, &[])), 302);
    std::fs::write(&p.config, text).unwrap();
    assert_eq!(status_of(&raw_reload(admin)), 200);
    assert_eq!(status_of(&get(&p, target, &[])), 404);
}

/// `/mapuid`: the partner's id for the browser, published on
/// `pixel.usersync` keyed by our id, with the known segments it adds; the
/// GIF or the partner's next hop. A browser that sent `Sec-GPC: 1` gets the
/// same answer, but no mapping is kept; a request without `member` or with
/// a hostile `user` is an invalid event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mapuid_publishes_the_partner_s_id_keyed_by_ours() {
    let broker = common::Broker::start();
    let server = common::Server::start(common::example_config(&broker.addr)).await;
    let first = server.get("/imptr?id=2766", &[]).await;
    let uid = first.set_uid().expect("an id");
    let cookie = first.cookie().unwrap();
    let c = [("cookie", cookie.as_str())];
    let r = server
        .get("/mapuid?member=958&user=P-77.a&seg=12192,999999", &c)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("image/gif"));
    let r = server
        .get(
            "/mapuid?member=958&user=P-77.a&redir=https://shop.example.com/next",
            &c,
        )
        .await;
    assert_eq!(r.header("location"), Some("https://shop.example.com/next"));
    let r = server
        .get(
            "/mapuid?member=958&user=P-99",
            &[("cookie", cookie.as_str()), ("sec-gpc", "1")],
        )
        .await;
    assert_eq!(r.status, 200);
    for bad in ["/mapuid?user=P-1", "/mapuid?member=958&user=%3Cscript%3E"] {
        assert_eq!(server.get(bad, &c).await.status, 200, "{bad}");
    }
    // Refused for a browser that sent GPC: the partner's id is not kept in
    // the invalid event either.
    let gpc = [("cookie", cookie.as_str()), ("sec-gpc", "1")];
    assert_eq!(server.get("/mapuid?user=P-SECRET", &gpc).await.status, 200);
    server.stop().await;

    let syncs = common::consume(&broker.addr, "pixel.usersync", 3);
    assert_eq!(syncs.len(), 3);
    let mapped: Vec<_> = syncs
        .iter()
        .filter(|s| s.json["uid"] == uid.as_str())
        .collect();
    assert_eq!(mapped.len(), 2, "{syncs:?}");
    for s in &mapped {
        common::assert_common(&s.json, "usersync");
        assert_eq!(s.key, uid);
        assert_eq!(s.json["member"], 958);
        assert_eq!(s.json["partner_uid"], "P-77.a");
    }
    let with_segment = mapped.iter().find(|s| s.json["redir"].is_null()).unwrap();
    assert_eq!(with_segment.json["segments"], serde_json::json!([12192]));
    let private = syncs
        .iter()
        .find(|s| s.json["uid"].is_null())
        .expect("the GPC one");
    assert_eq!(private.json["partner_uid"], serde_json::Value::Null);
    assert!(private.json["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w == "not_mapped"));
    let invalid = common::consume(&broker.addr, "pixel.invalid", 3);
    assert_eq!(invalid.len(), 3);
    let private = invalid
        .iter()
        .find(|i| i.json["uid"].is_null())
        .expect("the GPC one");
    assert_eq!(private.json["query"], "", "{:?}", private.json);
    assert!(!invalid
        .iter()
        .any(|i| i.json.to_string().contains("P-SECRET")));
    let mut reasons: Vec<_> = invalid
        .iter()
        .map(|i| i.json["reason"].as_str().unwrap().to_string())
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        ["member_missing", "member_missing", "user_invalid"]
    );
}

/// `sync.pixels` fire from the JavaScript form of segment and conversion
/// pixels, with our id in place of `${UID}`; never from the image form, and
/// never for a browser without an id of ours.
#[test]
fn sync_pixels_fire_from_the_script_form_only_and_only_with_an_id() {
    let pixels =
        "pixels = [{ url = \"https://a.sync.example/sync?our=${UID}\", format = \"img\" }]\n";
    let (p, _) = start(&format!("{SYNC}{pixels}"));
    let (cookie, uid) = cookie_from_a_pixel(&p);
    let c = cookie.as_str();
    let partner = format!("https://a.sync.example/sync?our={uid}");
    for target in ["/seg?add=12192&t=1", "/px?id=7313&t=1"] {
        let resp = get(&p, target, &[c]);
        assert_eq!(status_of(&resp), 200, "{resp}");
        assert!(body(&resp).contains(&partner), "{target}: {resp}");
        let private = get(&p, target, &[c, "Sec-GPC: 1"]);
        assert!(
            !body(&private).contains("a.sync.example"),
            "{target}: {private}"
        );
    }
    for target in ["/seg?add=12192", "/px?id=7313"] {
        let resp = get(&p, target, &[c]);
        assert!(header_of(&resp, "location").is_none_or(|l| !l.contains("a.sync.example")));
        assert!(!body(&resp).contains("a.sync.example"), "{target}: {resp}");
    }
    let impression = get(&p, "/imptr?id=2766&t=1", &[c]);
    assert!(
        !body(&impression).contains("a.sync.example"),
        "{impression}"
    );
}
