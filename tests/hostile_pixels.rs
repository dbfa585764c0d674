//! Hostile input, round three (issue 25), the pixel findings, against pixeld
//! in this process and a real tansu: the cookie bounce cannot be bypassed
//! (finding 7), recorded headers hold no hidden characters (10), and a click
//! id sent to another advertiser's pixel is dropped (11).

mod common;

use common::{consume, raw_exchange, status_of, Broker, Server, BROWSER_UA};
use serde_json::Value;

const UA: (&str, &str) = ("user-agent", BROWSER_UA);

fn warnings(event: &Value) -> Vec<String> {
    event["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect()
}

/// Finding 11: advertiser 200's pixel is fired with a click id of
/// advertiser 100's ad. The conversion keeps no `click_id` (a consumer
/// joining on it would credit the other advertiser's ad) and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_id_sent_to_another_advertisers_pixel_is_dropped_with_clid_foreign() {
    let broker = Broker::start();
    let mut text = std::fs::read_to_string("config/pixeld.toml").unwrap();
    text.push_str(
        "\n[[advertisers]]\nid = 200\n\n[[conversion_pixels]]\nid = 9001\nadvertiser = 200\n",
    );
    let mut cfg = pixeld::config::parse(&text, "test").unwrap();
    let base = common::example_config(&broker.addr);
    cfg.kafka = base.kafka;
    cfg.server.data_dir = base.server.data_dir;
    cfg.cookie.secret = base.cookie.secret;
    cfg.click_trackers[0].append_click_id = true;
    let server = Server::start(cfg).await;
    let r = server
        .get(
            "/clktrb?id=21378&redir=https%3A%2F%2Fshop.example.com%2F",
            &[UA],
        )
        .await;
    let location = r.header("location").unwrap().to_string();
    let clid = location.split("pxclid=").nth(1).unwrap().to_string();
    for pixel in [9001, 7313] {
        server
            .get(&format!("/px?id={pixel}&clid={clid}"), &[UA])
            .await;
    }
    server.stop().await;
    let convs = consume(&broker.addr, "pixel.conversions", 2);
    assert_eq!(convs.len(), 2);
    let (foreign, own) = (&convs[0].json, &convs[1].json);
    assert_eq!(foreign["pixel_id"], 9001);
    assert!(foreign["click_id"].is_null(), "{foreign}");
    assert!(
        warnings(foreign).contains(&"clid_foreign".to_string()),
        "{foreign}"
    );
    assert_eq!(own["click_id"]["line_item_id"], 5001, "{own}");
    assert!(!warnings(own).contains(&"clid_foreign".to_string()));
}

/// A raw GET to the in-process server (bytes a client library refuses to
/// send, such as a header with U+202E).
fn raw(server: &Server, target: &str, headers: &[&str]) -> String {
    let port = server.addr.port();
    let mut head =
        format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    tokio::task::block_in_place(|| raw_exchange(port, head.as_bytes()).unwrap_or_default())
}

/// Finding 10: the user agent and referer are recorded with control and
/// invisible format characters replaced by U+FFFD, as `other` refuses them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_characters_in_the_user_agent_and_referer_are_replaced() {
    let broker = Broker::start();
    let server = Server::start(common::example_config(&broker.addr)).await;
    let r = raw(
        &server,
        "/imptr?id=2766",
        &[
            &format!("User-Agent: {BROWSER_UA}\u{202E}\tgpj.exe"),
            "Referer: https://pub.example.com/\u{200B}\u{FEFF}page",
        ],
    );
    assert!(matches!(status_of(&r), 200 | 302), "{r}");
    server.stop().await;
    let imps = consume(&broker.addr, "pixel.impressions", 1);
    let e = &imps[0].json;
    assert_eq!(
        e["user_agent"],
        format!("{BROWSER_UA}\u{FFFD}\u{FFFD}gpj.exe")
    );
    assert_eq!(e["referer"], "https://pub.example.com/\u{FFFD}\u{FFFD}page");
    let w = warnings(e);
    assert!(
        w.contains(&"user_agent_replaced".to_string())
            && w.contains(&"referer_replaced".to_string()),
        "{w:?}"
    );
}

/// Finding 7: with the bounce on, a mark of any other value is an ordinary
/// cookieless request (bounced), and a query too long to carry the mark is
/// recorded without an id (and without a cookie) rather than with a fresh
/// one; with the bounce off, the mark means nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bounce_mark_counts_only_as_written_and_a_query_too_long_to_bounce_gets_no_fresh_id() {
    let broker = Broker::start();
    let mut cfg = common::example_config(&broker.addr);
    cfg.cookie.bounce = true;
    let max = cfg.server.max_query_bytes;
    let server = Server::start(cfg).await;
    for mark in ["pxbounce=0&", "pxbounce=&", "pxbounce=11&"] {
        let r = server.get(&format!("/imptr?{mark}id=2766"), &[UA]).await;
        assert_eq!(r.status, 302, "{mark}: bounced like any cookieless request");
        assert!(
            r.header("location").unwrap().contains("pxbounce=1&"),
            "{mark}"
        );
    }
    let fixed = "/imptr?id=2766&cachebuster=";
    let pad = "9".repeat(max - (fixed.len() - "/imptr?".len()) - 5);
    let r = server.get(&format!("{fixed}{pad}"), &[UA]).await;
    let to = r.header("location").unwrap_or_default();
    assert!(!to.contains("pxbounce"), "too long to bounce: {to}");
    assert!(r.header("set-cookie").is_none(), "no fresh id");
    server.stop().await;
    let imps = consume(&broker.addr, "pixel.impressions", 1);
    assert_eq!(imps.len(), 1, "only the padded request was recorded");
    let e = &imps[0].json;
    assert!(e["uid"].is_null(), "{e}");
    assert_eq!(e["new_uid"], false);
    assert!(warnings(e).contains(&"cookies_unknown".to_string()), "{e}");

    // Bounce off: `pxbounce=1` is an ordinary parameter.
    let broker = Broker::start();
    let server = Server::start(common::example_config(&broker.addr)).await;
    let r = server.get("/imptr?pxbounce=1&id=2766", &[UA]).await;
    assert!(
        r.header("set-cookie").is_some(),
        "a fresh id, as without the mark"
    );
    server.stop().await;
    let e = &consume(&broker.addr, "pixel.impressions", 1)[0].json;
    assert!(e["uid"].is_string(), "{e}");
    assert!(!warnings(e).contains(&"cookies_blocked".to_string()), "{e}");
}
