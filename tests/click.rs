//! `/clktr` and `/clktrb` end to end.

mod common;

use common::{assert_common, consume, example_config, Broker, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_is_recorded_then_redirected_to_redir_or_the_click_url() {
    let broker = Broker::start();
    let server = Server::start(example_config(&broker.addr)).await;

    // The documented tag, unreplaced placeholders: the configured click_url.
    let r = server
        .get(
            "/clktrb?id=21378&cachebuster=[CACHEBUSTER]&ancost=[ANCOST]&redir=[REDIRECT_URL]",
            &[],
        )
        .await;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location"),
        Some("https://www.example.com/autumn-sale")
    );
    let uid = r.set_uid().unwrap();

    // /clktr with a redir holding its own query.
    let cookie = r.cookie().unwrap();
    let r = server
        .get("/clktr?id=21378&cachebuster=77&ancost=1.25&redir=https://shop.example.com/item?id=9&src=ad", &[("cookie", &cookie)])
        .await;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location"),
        Some("https://shop.example.com/item?id=9&src=ad")
    );

    // A refused redir falls back to the click_url, with a warning.
    let r = server
        .get(
            "/clktrb?id=21378&redir=https://evil.test/",
            &[("cookie", &cookie)],
        )
        .await;
    assert_eq!(
        r.header("location"),
        Some("https://www.example.com/autumn-sale")
    );
    server.stop().await;

    let clicks = consume(&broker.addr, "pixel.clicks", 3);
    assert_eq!(clicks.len(), 3);
    for c in &clicks {
        assert_common(&c.json, "click");
        assert_eq!(c.kind, "click");
        assert_eq!(c.key, uid);
        assert_eq!(c.json["tracker_id"], 21378);
        assert_eq!(c.json["line_item_id"], 5001);
        assert_eq!(c.json["advertiser_id"], 100);
        assert_eq!(c.json["publisher_id"], 777);
        assert_eq!(c.json["placement_id"], 4242);
        assert_eq!(c.json["segments_added"], serde_json::json!([12304]));
    }
    assert_eq!(clicks[0].json["new_uid"], true);
    assert!(clicks[0].json["cachebuster"].is_null());
    assert!(clicks[0].json["redir"].is_null());
    assert_eq!(clicks[1].json["new_uid"], false);
    assert_eq!(clicks[1].json["cachebuster"], "77");
    assert_eq!(clicks[1].json["ancost_micros"], 1_250_000);
    assert_eq!(
        clicks[1].json["redir"],
        "https://shop.example.com/item?id=9&src=ad"
    );
    assert_eq!(
        clicks[2].json["warnings"],
        serde_json::json!(["redir_rejected"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_with_nowhere_to_go_answers_400_with_a_reason() {
    let broker = Broker::start();
    let mut cfg = example_config(&broker.addr);
    cfg.click_trackers[0].click_url = None;
    let server = Server::start(cfg).await;

    let r = server.get("/clktrb?id=21378", &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        std::str::from_utf8(&r.body).unwrap(),
        "no redir parameter and no click_url configured\n"
    );
    let r = server
        .get("/clktrb?id=21378&redir=javascript:alert(1)", &[])
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        std::str::from_utf8(&r.body).unwrap(),
        "redirect target is not an absolute http or https URL\n"
    );
    // An unknown tracker still takes the user to a valid landing page.
    let r = server
        .get("/clktrb?id=1&redir=https://www.example.com/", &[])
        .await;
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("https://www.example.com/"));
    server.stop().await;

    let clicks = consume(&broker.addr, "pixel.clicks", 2);
    assert_eq!(clicks.len(), 2, "both refused clicks are still recorded");
    assert_eq!(
        clicks[0].json["warnings"],
        serde_json::json!(["no_landing_page"])
    );
    assert_eq!(
        clicks[1].json["warnings"],
        serde_json::json!(["redir_rejected", "no_landing_page"])
    );
    let invalid = consume(&broker.addr, "pixel.invalid", 1);
    assert_eq!(invalid[0].json["reason"], "unknown_id");
    assert_eq!(invalid[0].json["path"], "/clktrb");
}

/// The traffic source's click id is recorded with the click: the configured
/// parameter (`sclid`) first, then an ad platform's id appended to the
/// landing URL, and a value no click id has is refused with a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_s_click_id_is_recorded_from_the_tracker_or_the_landing_url() {
    let broker = Broker::start();
    let server = Server::start(example_config(&broker.addr)).await;
    let targets = [
        "/clktr?id=21378&sclid=aff-7781&gclid=G1&redir=https://shop.example.com/p",
        "/clktr?id=21378&redir=https://shop.example.com/p?utm=x&gclid=Cj0KCQiA_x-1",
        "/clktr?id=21378&fbclid=IwAR2abc&redir=https://shop.example.com/p",
        "/clktr?id=21378&sclid=%3Cscript%3E&redir=https://shop.example.com/p",
        "/clktr?id=21378&redir=https://shop.example.com/p",
    ];
    for target in targets {
        let r = server.get(target, &[]).await;
        assert_eq!(r.status, 302, "{target}");
    }
    server.stop().await;
    let clicks = consume(&broker.addr, "pixel.clicks", targets.len());
    assert_eq!(clicks.len(), targets.len());
    let mut seen: Vec<(serde_json::Value, serde_json::Value, bool)> = clicks
        .iter()
        .map(|c| {
            assert_common(&c.json, "click");
            let invalid = c.json["warnings"]
                .as_array()
                .unwrap()
                .iter()
                .any(|w| w == "source_click_id_invalid");
            (
                c.json["source_click_id"].clone(),
                c.json["source_click_kind"].clone(),
                invalid,
            )
        })
        .collect();
    seen.sort_by_key(|s| (s.0.to_string(), s.2));
    let null = serde_json::Value::Null;
    let s = |v: &str| serde_json::Value::from(v);
    assert_eq!(
        seen,
        vec![
            (s("Cj0KCQiA_x-1"), s("gclid"), false),
            (s("IwAR2abc"), s("fbclid"), false),
            (s("aff-7781"), s("source"), false),
            (null.clone(), null.clone(), false),
            (null.clone(), null, true),
        ]
    );
}

/// A browser's request (an ordinary user agent: crawlers' touches never
/// enter the attribution state), with its cookie when it has one.
async fn browse(server: &Server, target: &str, cookie: Option<&str>) -> common::Reply {
    let mut headers = vec![("user-agent", common::BROWSER_UA)];
    headers.extend(cookie.map(|c| ("cookie", c)));
    let r = server.get(target, &headers).await;
    assert!(r.status == 200 || r.status == 302, "{target}: {}", r.status);
    r
}

/// The attribution record of each conversion, in the conversions' order,
/// each checked against the schema.
fn records_of(brokers: &str, n: usize) -> Vec<serde_json::Value> {
    let convs = consume(brokers, "pixel.conversions", n);
    let records = consume(brokers, "pixel.attributions", n);
    assert_eq!((convs.len(), records.len()), (n, n));
    convs
        .iter()
        .map(|c| {
            let r = records
                .iter()
                .find(|r| r.json["conversion_event_id"] == c.json["event_id"])
                .unwrap_or_else(|| panic!("no record for {}", c.json));
            common::assert_schema(&r.json);
            r.json.clone()
        })
        .collect()
}

/// The traffic source's click id reaches the record of the conversion its
/// click is credited with: the same browser's (matched by uid), and one
/// that came back without a cookie with only the click id (`pxclid`
/// handed back as `clid`). A click without one gives a record without.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_s_click_id_is_on_the_record_of_the_conversion_its_click_earned() {
    let broker = Broker::start();
    let mut cfg = example_config(&broker.addr);
    cfg.click_trackers[0].append_click_id = true;
    let server = Server::start(cfg).await;
    let shop = "redir=https://shop.example.com/p";
    let r = browse(
        &server,
        &format!("/clktr?id=21378&sclid=aff-7781&{shop}"),
        None,
    )
    .await;
    let cookie = r.cookie().unwrap();
    browse(&server, "/px?id=7313&order_id=S1", Some(&cookie)).await;

    let r = browse(
        &server,
        &format!("/clktr?id=21378&sclid=aff-9000&{shop}"),
        None,
    )
    .await;
    let location = r.header("location").unwrap();
    let token = location.split("pxclid=").nth(1).unwrap().to_string();
    browse(
        &server,
        &format!("/px?id=7313&order_id=S2&clid={token}"),
        None,
    )
    .await;

    let r = browse(&server, &format!("/clktr?id=21378&{shop}"), None).await;
    browse(
        &server,
        "/px?id=7313&order_id=S3",
        Some(&r.cookie().unwrap()),
    )
    .await;
    server.stop().await;

    let clicks = consume(&broker.addr, "pixel.clicks", 3);
    let records = records_of(&broker.addr, 3);
    let said = |r: &serde_json::Value| {
        let kind = r["kind"].as_str().unwrap_or_default();
        let how = r["matched_by"].as_str().unwrap_or_default();
        let id = r["source_click_id"].as_str().map(str::to_string);
        let source = r["source_click_kind"].as_str().map(str::to_string);
        (kind.to_string(), how.to_string(), id, source)
    };
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        said(&records[0]),
        (
            "post_click".into(),
            "uid".into(),
            s("aff-7781"),
            s("source")
        )
    );
    assert_eq!(
        said(&records[1]),
        (
            "post_click".into(),
            "click_id".into(),
            s("aff-9000"),
            s("source")
        )
    );
    assert_eq!(
        said(&records[2]),
        ("post_click".into(), "uid".into(), None, None)
    );
    for (record, click) in records.iter().zip(&clicks) {
        assert_eq!(record["touch_event_id"], click.json["event_id"]);
        assert_eq!(record["touch_ts"], click.json["ts"], "for Meta's fbc");
    }
}

/// Without a journal the engine is fed over its channel and its state
/// lives through a restart in the snapshot alone: a click's source click
/// id (an ad platform's, on the landing URL) is still there for a
/// conversion after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_source_click_id_survives_a_restart_in_the_snapshot() {
    let broker = Broker::start();
    let mut cfg = example_config(&broker.addr);
    cfg.journal.durability = pixeld::config::Durability::Memory;
    let server = Server::start(cfg.clone()).await;
    let landing = "redir=https://shop.example.com/p?utm=x&fbclid=IwAR2abc";
    let r = browse(&server, &format!("/clktr?id=21378&{landing}"), None).await;
    let cookie = r.cookie().unwrap();
    server.stop().await;

    let server = Server::start(cfg).await;
    browse(&server, "/px?id=7313", Some(&cookie)).await;
    server.stop().await;
    let clicks = consume(&broker.addr, "pixel.clicks", 1);
    assert_eq!(clicks[0].json["source_click_id"], "IwAR2abc");
    let records = records_of(&broker.addr, 1);
    assert_eq!(records[0]["kind"], "post_click");
    assert_eq!(records[0]["source_click_id"], "IwAR2abc");
    assert_eq!(records[0]["source_click_kind"], "fbclid");
}
