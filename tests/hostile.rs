//! Hostile input, round two: what a security review found from outside,
//! each checked where it matters: on the wire (raw HTTP) or in the stream
//! (events consumed back from a real tansu broker).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::Value;

const UID: &str = "0123456789abcdef0123456789abcdef";

fn raw(addr: SocketAddr, head: &[u8]) -> String {
    raw_exchange(addr.port(), head).expect("pixeld answers")
}

fn get(addr: SocketAddr, target: &str, headers: &[&str]) -> String {
    raw_get_with(addr.port(), target, headers)
}

fn warnings(e: &Value) -> Vec<String> {
    e["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect()
}

/// Every event of `topic` whose `cachebuster` or `other` is `tag`.
fn tagged(events: &[Consumed], field: &str, tag: &str) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e.json[field] == tag)
        .map(|e| e.json.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_redirs_never_carry_the_users_id() {
    let broker = Broker::start();
    let server = Server::start(example_config(&broker.addr)).await;
    let cookie = format!("Cookie: {}", uid_cookie(UID));
    let leak = "https%3A%2F%2Fwww.example.com%2F%3Fu%3D%24%7BUID%7D%26v%3D%24%7BUSER_ID%7D";
    for target in [
        format!("/clktr?id=21378&redir={leak}"),
        format!("/clktr?id=999999&redir={leak}"),
        format!("/seg?add=12192&redir={leak}"),
        format!("/imptr?id=2766&redir={leak}"),
        format!("/px?id=7313&redir={leak}"),
    ] {
        let resp = get(server.addr, &target, &[&cookie]);
        assert_eq!(status_of(&resp), 302, "{target}: {resp}");
        let location = header_of(&resp, "location").unwrap();
        assert_eq!(
            location, "https://www.example.com/?u=${UID}&v=${USER_ID}",
            "{target}: passed on as it came"
        );
        assert!(!resp.contains(UID), "{target} leaks the id: {resp}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_cookie_that_is_not_ascii_hides_neither_the_opt_out_nor_the_id() {
    let broker = Broker::start();
    let server = Server::start(example_config(&broker.addr)).await;
    let send = |cookies: &[u8], cb: &str| {
        let mut head = format!(
            "GET /imptr?id=2766&cachebuster={cb} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nCookie: "
        )
        .into_bytes();
        head.extend_from_slice(cookies);
        head.extend_from_slice(b"\r\n\r\n");
        raw(server.addr, &head)
    };
    let resp = send("uid=OPTOUT; name=José".as_bytes(), "optout");
    assert_eq!(status_of(&resp), 302, "{resp}");
    assert_eq!(
        header_of(&resp, "set-cookie"),
        None,
        "OPTOUT is kept: {resp}"
    );
    let signed = uid_cookie(UID);
    let mut latin1 = b"name=Jos\xe9; ".to_vec();
    latin1.extend_from_slice(signed.as_bytes());
    let resp = send(&latin1, "known");
    assert_eq!(
        header_of(&resp, "set-cookie"),
        None,
        "the id is kept: {resp}"
    );
    let events = consume(&broker.addr, "pixel.impressions", 2);
    let optout = &tagged(&events, "cachebuster", "optout")[0];
    assert!(
        optout["uid"].is_null() && optout["ip"].is_null(),
        "{optout}"
    );
    let known = &tagged(&events, "cachebuster", "known")[0];
    assert_eq!(known["uid"], UID);
    assert_eq!(known["new_uid"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn money_beyond_2_pow_53_micros_is_null_with_a_warning_and_text_is_plain() {
    let broker = Broker::start();
    let server = Server::start(example_config(&broker.addr)).await;
    let huge = "18446744073709.551615";
    for q in [
        format!("/imptr?id=2766&cachebuster=huge&ancost={huge}"),
        "/imptr?id=2766&cachebuster=edge&ancost=9007199254.740991".to_string(),
        "/imptr?id=2766&cachebuster=%00".to_string(),
        format!("/imptr?id=2766&cachebuster={}", "9".repeat(65)),
        format!("/px?id=7313&other=hugevalue&value={huge}"),
        "/px?id=7313&other=spoof%E2%80%AEtxt.exe".to_string(),
        "/px?id=7313&other=line%E2%80%A8break".to_string(),
        "/px?id=7313&other=bom%EF%BB%BF".to_string(),
        format!(
            "/seg?other=dedup&add={}",
            ["12192:2147483647"; 480].join(",")
        ),
    ] {
        let resp = get(server.addr, &q, &[]);
        assert!(matches!(status_of(&resp), 200 | 302), "{q}: {resp}");
    }
    let imps = consume(&broker.addr, "pixel.impressions", 4);
    let convs = consume(&broker.addr, "pixel.conversions", 4);
    let segs = consume(&broker.addr, "pixel.segments", 1);
    for e in imps.iter().chain(&convs).chain(&segs) {
        assert_schema(&e.json);
    }
    let e = &tagged(&imps, "cachebuster", "huge")[0];
    assert!(e["ancost_micros"].is_null(), "{e}");
    assert!(warnings(e).contains(&"ancost_too_large".to_string()), "{e}");
    let e = &tagged(&imps, "cachebuster", "edge")[0];
    assert_eq!(e["ancost_micros"], 9_007_199_254_740_991u64);
    let bad_cachebusters: Vec<_> = imps
        .iter()
        .filter(|e| warnings(&e.json).contains(&"cachebuster_invalid".to_string()))
        .collect();
    assert_eq!(bad_cachebusters.len(), 2, "NUL and 65 characters");
    assert!(bad_cachebusters
        .iter()
        .all(|e| e.json["cachebuster"].is_null()));
    let e = &tagged(&convs, "other", "hugevalue")[0];
    assert!(e["value_micros"].is_null(), "{e}");
    assert!(warnings(e).contains(&"value_too_large".to_string()), "{e}");
    let hidden: Vec<_> = convs
        .iter()
        .filter(|e| warnings(&e.json).contains(&"other_invalid".to_string()))
        .collect();
    assert_eq!(hidden.len(), 3, "U+202E, U+2028 and U+FEFF are refused");
    assert!(hidden.iter().all(|e| e.json["other"].is_null()));
    let seg = &tagged(&segs, "other", "dedup")[0];
    assert_eq!(seg["adds"].as_array().unwrap().len(), 1, "one add, once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_counts_an_ipv6_client_by_its_64() {
    let broker = Broker::start();
    let mut cfg = example_config(&broker.addr);
    cfg.server.rate_limit_per_ip = 3;
    cfg.server.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    let server = Server::start(cfg).await;
    // Start early in a second: the limit counts whole seconds.
    while pixeld::telemetry::now_ms() % 1000 > 100 {
        std::thread::sleep(Duration::from_millis(5));
    }
    for n in 1..=6 {
        let xff = format!("X-Forwarded-For: 2001:db8:7:7::{n:x}");
        let resp = get(
            server.addr,
            &format!("/imptr?id=2766&cachebuster=v6-{n}"),
            &[&xff],
        );
        assert_eq!(status_of(&resp), 302);
    }
    let xff = "X-Forwarded-For: 2001:db8:7:8::1";
    get(server.addr, "/imptr?id=2766&cachebuster=other-64", &[xff]);
    let events = consume(&broker.addr, "pixel.impressions", 7);
    let limited = |cb: &str| {
        warnings(&tagged(&events, "cachebuster", cb)[0]).contains(&"rate_limited".to_string())
    };
    assert!((1..=3).all(|n| !limited(&format!("v6-{n}"))));
    assert!(
        (4..=6).all(|n| limited(&format!("v6-{n}"))),
        "new host bits in the same /64 are the same client"
    );
    assert!(!limited("other-64"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_user_can_opt_out() {
    let app_server = {
        let broker = Broker::start();
        let server = Server::start(example_config(&broker.addr)).await;
        (broker, server)
    };
    let addr = app_server.1.addr;
    let opted =
        |resp: &str| header_of(resp, "set-cookie").is_some_and(|c| c.starts_with("uid=OPTOUT"));
    for (what, headers, want) in [
        ("prefetch", vec!["Sec-Purpose: prefetch"], 200),
        ("image", vec!["Sec-Fetch-Dest: image"], 403),
        ("script", vec!["Sec-Fetch-Dest: script"], 403),
        ("fetch()", vec!["Sec-Fetch-Dest: empty"], 403),
    ] {
        let resp = get(addr, "/optout", &headers);
        assert_eq!(status_of(&resp), want, "{what}: {resp}");
        assert!(!opted(&resp), "{what} must not opt out: {resp}");
    }
    // A browser that sends fetch metadata gets a page with a button...
    let page = get(
        addr,
        "/optout",
        &["Sec-Fetch-Dest: document", "Sec-Fetch-Mode: navigate"],
    );
    assert_eq!(status_of(&page), 200);
    assert!(!opted(&page));
    assert!(header_of(&page, "content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(
        page.contains("<form method=\"post\" action=\"/optout\">"),
        "{page}"
    );
    // ...which confirms with a same-origin POST; another site cannot.
    let post = |site: &str| {
        raw(
            addr,
            format!("POST /optout HTTP/1.1\r\nHost: x\r\nConnection: close\r\nSec-Fetch-Site: {site}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 0\r\n\r\n").as_bytes(),
        )
    };
    assert!(opted(&post("same-origin")));
    let cross = post("cross-site");
    assert_eq!(status_of(&cross), 403);
    assert!(!opted(&cross));
    // A plain link from a client without fetch metadata still works.
    assert!(opted(&get(addr, "/optout", &[])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_allowlist_still_refuses_intranet_and_single_label_hosts() {
    let broker = Broker::start();
    let mut cfg = example_config(&broker.addr);
    cfg.redirect.allowed_hosts = pixeld::config::AllowList::default();
    let server = Server::start(cfg).await;
    for target in [
        "https://localhost/x",
        "http://intranet-host:8080/admin",
        "https://nas.lan/",
    ] {
        let resp = get(server.addr, &format!("/imptr?id=2766&redir={target}"), &[]);
        let location = header_of(&resp, "location").unwrap_or_default();
        assert!(!location.starts_with(target), "{target}: {resp}");
    }
    let resp = get(
        server.addr,
        "/imptr?id=2766&redir=https://shop.example.org/",
        &[],
    );
    assert_eq!(
        header_of(&resp, "location"),
        Some("https://shop.example.org/")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_no_store_including_hypers_own_and_metrics() {
    let broker = Broker::start();
    let server = Server::start(example_config(&broker.addr)).await;
    let malformed = raw(
        server.addr,
        b"GET /imptr HTTP/1.1\r\nHost: x\r\nbad header line\r\n\r\n",
    );
    assert_eq!(status_of(&malformed), 400, "{malformed}");
    let too_large = raw(
        server.addr,
        format!(
            "GET /imptr HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(40_000)
        )
        .as_bytes(),
    );
    assert_eq!(status_of(&too_large), 431, "{too_large}");
    get(server.addr, "/imptr?id=2766", &[]);
    // /metrics lives on the admin listener; the public one answers 404.
    assert_eq!(status_of(&get(server.addr, "/metrics", &[])), 404);
    let metrics = get(server.admin, "/metrics", &[]);
    assert!(
        metrics.contains("# HELP events_total"),
        "metrics are described"
    );
    for (what, resp) in [
        ("400", &malformed),
        ("431", &too_large),
        ("/metrics", &metrics),
    ] {
        let cc = header_of(resp, "cache-control").unwrap_or_default();
        assert!(cc.contains("no-store"), "{what}: {resp}");
    }
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_data_on_disk_is_private_to_pixelds_user() {
    use std::os::unix::fs::PermissionsExt;
    let broker = Broker::start();
    let mut cfg = example_config(&broker.addr);
    cfg.cookie.secret = None; // the generated key goes to data_dir too
    cfg.server.data_dir = fresh_dir().join("data");
    cfg.attribution.snapshot_interval_secs = 1;
    let dir = cfg.server.data_dir.clone();
    let server = Server::start(cfg).await;
    for n in 0..5 {
        server
            .get(&format!("/imptr?id=2766&cachebuster={n}"), &[])
            .await;
    }
    server.stop().await;
    let mut stack = vec![dir.clone()];
    let mut files = 0;
    while let Some(d) = stack.pop() {
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", d.display());
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{}", path.display());
                files += 1;
            }
        }
    }
    assert!(
        files >= 4,
        "key, segment, checkpoint and snapshot were checked: {files}"
    );
}
