//! `/imptr` end to end: real HTTP in, real Kafka (tansu) out.

mod common;

use common::{assert_common, consume, example_config, uid_cookie, Broker, Server};

const UID: &str = "0123456789abcdef0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exported_tag_with_placeholders_records_an_impression_and_answers_the_network_pixel() {
    let broker = Broker::start();
    let server = Server::start(example_config(&broker.addr)).await;
    let r = server
        .get(
            "/imptr?id=2766&cachebuster=[CACHEBUSTER]&ancost=[ANCOST]&t=2&redir=[REDIRECT_URL]",
            &[
                ("cookie", &uid_cookie(UID)),
                ("user-agent", "Mozilla/5.0 test"),
                ("referer", "https://pub.example.net/a"),
            ],
        )
        .await;
    // No redir: the image form redirects to the one image pixel that applies
    // (the network's verification pixel), with its cachebuster filled in.
    assert_eq!(r.status, 302);
    let loc = r.header("location").unwrap();
    assert!(
        loc.starts_with("https://verify.example.com/imp?cb="),
        "{loc}"
    );
    assert!(loc["https://verify.example.com/imp?cb=".len()..]
        .bytes()
        .all(|b| b.is_ascii_digit()));
    assert_eq!(
        r.header("cache-control"),
        Some("no-cache, no-store, must-revalidate, private")
    );
    assert!(
        r.header("set-cookie").is_none(),
        "a known uid is not re-issued"
    );
    server.stop().await;

    let events = consume(&broker.addr, "pixel.impressions", 1);
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e.key, UID);
    assert_eq!(e.kind, "impression");
    assert_common(&e.json, "impression");
    let j = &e.json;
    assert_eq!(j["uid"], UID);
    assert_eq!(j["new_uid"], false);
    assert_eq!(j["ip"], "127.0.0.1");
    assert_eq!(j["user_agent"], "Mozilla/5.0 test");
    assert_eq!(j["referer"], "https://pub.example.net/a");
    assert_eq!(j["warnings"], serde_json::json!([]));
    assert_eq!(j["tracker_id"], 2766);
    assert_eq!(j["line_item_id"], 5001);
    assert_eq!(j["advertiser_id"], 100);
    assert_eq!(j["publisher_id"], 777);
    assert_eq!(j["placement_id"], 4242);
    assert!(j["cachebuster"].is_null());
    assert!(j["ancost_micros"].is_null());
    assert!(j["redir"].is_null());
    assert_eq!(j["segments_added"], serde_json::json!([12192]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filled_in_tag_redirects_to_redir_and_issues_a_cookie() {
    let broker = Broker::start();
    let server = Server::start(example_config(&broker.addr)).await;
    let r = server
        .get("/imptr?id=2766&cachebuster=8812&ancost=0.42&t=2&redir=https://shop.example.com/p?a=1&b=x=y", &[])
        .await;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location"),
        Some("https://shop.example.com/p?a=1&b=x=y")
    );
    let uid = r.set_uid().expect("a new uid cookie");
    assert_eq!(uid.len(), 32);
    let sent_back = r.cookie().unwrap();
    let cookie = r.header("set-cookie").unwrap();
    assert!(
        cookie.contains("Max-Age=31536000") && cookie.contains("Path=/"),
        "{cookie}"
    );
    assert!(
        cookie.contains("SameSite=None")
            && cookie.contains("Secure")
            && cookie.contains("HttpOnly"),
        "{cookie}"
    );

    // An encoded target is decoded once; a malformed ancost is a warning.
    let r = server
        .get(
            "/imptr?id=2766&cachebuster=9&ancost=abc&redir=https%3A%2F%2Fwww.example.com%2Fland%3Fq%3D1",
            &[("cookie", &sent_back)],
        )
        .await;
    assert_eq!(
        r.header("location"),
        Some("https://www.example.com/land?q=1")
    );
    server.stop().await;

    let events = consume(&broker.addr, "pixel.impressions", 2);
    assert_eq!(events.len(), 2);
    let (a, b) = (&events[0].json, &events[1].json);
    assert_common(a, "impression");
    assert_common(b, "impression");
    assert_eq!(a["uid"], uid.as_str());
    assert_eq!(a["new_uid"], true);
    assert_eq!(a["cachebuster"], "8812");
    assert_eq!(a["ancost_micros"], 420_000);
    assert_eq!(a["redir"], "https://shop.example.com/p?a=1&b=x=y");
    assert_eq!(b["uid"], uid.as_str());
    assert_eq!(b["new_uid"], false);
    assert!(b["ancost_micros"].is_null());
    assert_eq!(b["warnings"], serde_json::json!(["ancost_invalid"]));
    assert_eq!(b["redir"], "https://www.example.com/land?q=1");
    assert_ne!(a["event_id"], b["event_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_form_fires_every_applicable_pixel_and_reflects_nothing() {
    let broker = Broker::start();
    let server = Server::start(example_config(&broker.addr)).await;
    let r = server
        .get(
            "/imptr?id=2766&cachebuster=1&t=1&redir=https://www.example.com/x?a=';alert(1);//",
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("application/javascript; charset=utf-8")
    );
    let body = std::str::from_utf8(&r.body).unwrap();
    assert!(
        body.contains("s(\"https://tags.example.com/adv100.js\");"),
        "{body}"
    );
    assert!(
        body.contains("i(\"https://verify.example.com/imp?cb="),
        "{body}"
    );
    // Nothing from the request is written into the script: the redir is
    // recorded with the event, not fired.
    assert!(
        !body.contains("www.example.com") && !body.contains("alert"),
        "{body}"
    );
    server.stop().await;
    let events = consume(&broker.addr, "pixel.impressions", 1);
    assert_eq!(events[0].json["warnings"], serde_json::json!([]));
    assert_eq!(
        events[0].json["redir"],
        "https://www.example.com/x?a=';alert(1);//"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_still_get_a_gif_and_land_in_the_invalid_topic() {
    let broker = Broker::start();
    let server = Server::start(example_config(&broker.addr)).await;
    for q in [
        "/imptr?cachebuster=1",
        "/imptr?id=abc",
        "/imptr?id=99999",
        "/imptr?id=2766&redir=https://evil.test/phish",
    ] {
        let r = server.get(q, &[]).await;
        assert_eq!(r.status, 200, "{q}");
        assert_eq!(r.header("content-type"), Some("image/gif"), "{q}");
        assert_eq!(r.body.len(), 43, "{q}");
    }
    let long = format!("/imptr?id=2766&cachebuster={}", "9".repeat(9000));
    let r = server.get(&long, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("image/gif"));
    server.stop().await;

    let invalid = consume(&broker.addr, "pixel.invalid", 4);
    let reasons: Vec<&str> = invalid
        .iter()
        .map(|e| e.json["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        ["missing_id", "bad_id", "unknown_id", "query_too_long"]
    );
    for e in &invalid {
        assert_common(&e.json, "invalid");
        assert_eq!(e.json["path"], "/imptr");
    }
    assert_eq!(invalid[2].json["query"], "id=99999");
    assert_eq!(invalid[3].json["query"].as_str().unwrap().len(), 2048);
    let imps = consume(&broker.addr, "pixel.impressions", 1);
    assert_eq!(imps.len(), 1);
    assert_eq!(
        imps[0].json["warnings"],
        serde_json::json!(["redir_rejected"])
    );
    assert_eq!(imps[0].json["redir"], "https://evil.test/phish");
}
