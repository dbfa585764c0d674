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
