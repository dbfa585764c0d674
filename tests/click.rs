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
