//! The non-pixel endpoints and the HTTP rules every pixel shares.

mod common;

use std::sync::Arc;

use common::{assert_common, consume, example_config, uid_cookie, Broker, Server};
use hyper::Method;
use pixeld::serve::Outputs;
use pixeld::sink::kafka::KafkaSink;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_endpoints_methods_and_unknown_paths() {
    let broker = Broker::start();
    let server = Server::start(example_config(&broker.addr)).await;

    let r = server.get("/healthz", &[]).await;
    assert_eq!((r.status.as_u16(), &r.body[..]), (200, &b"ok\n"[..]));
    let r = server.get("/readyz", &[]).await;
    assert_eq!(r.status, 200);
    let r = server.get("/robots.txt", &[]).await;
    assert_eq!(&r.body[..], b"User-agent: *\nDisallow: /\n");
    let r = server.get("/nope", &[]).await;
    assert_eq!(r.status, 404);
    let r = server.request(Method::POST, "/imptr?id=2766", &[]).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));

    // HEAD answers like GET, without a body, and the event says so.
    let r = server
        .request(
            Method::HEAD,
            "/imptr?id=2766&redir=https://www.example.com/",
            &[],
        )
        .await;
    assert_eq!(r.status, 302);
    assert!(r.body.is_empty());
    server
        .get("/imptr?id=2766&cachebuster=after-head", &[])
        .await;

    let r = server.admin_get("/metrics").await;
    assert_eq!(r.status, 200);
    let text = std::str::from_utf8(&r.body).unwrap();
    assert!(text.contains("events_total{type=\"impression\"}"), "{text}");
    assert!(
        text.contains("http_refused_total{reason=\"method_not_allowed\"}"),
        "{text}"
    );
    server.stop().await;

    let imps = consume(&broker.addr, "pixel.impressions", 2);
    assert_eq!(imps.len(), 2);
    assert_eq!(
        imps[0].json["warnings"],
        serde_json::json!(["head_request"])
    );
    assert_common(&imps[1].json, "impression");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_until_kafka_is_reached_while_pixels_are_still_answered() {
    // Nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cfg = example_config(&format!("127.0.0.1:{port}"));
    cfg.kafka.flush_timeout_ms = 200;
    let sink = Arc::new(KafkaSink::start(&cfg.kafka, &cfg.kafka.brokers).unwrap());
    let server = Server::spawn(cfg, Outputs { sink, kafka: None }).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let r = server.get("/readyz", &[]).await;
    assert_eq!(r.status, 503);
    let r = server.get("/imptr?id=2766", &[]).await;
    assert_eq!(r.status, 302, "pixels never wait on Kafka");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_ip_comes_from_x_forwarded_for_only_behind_a_trusted_proxy() {
    let broker = Broker::start();
    let mut cfg = example_config(&broker.addr);
    let server = Server::start(cfg.clone()).await;
    server
        .get("/imptr?id=2766", &[("x-forwarded-for", "198.51.100.7")])
        .await;
    server.stop().await;

    cfg.server.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    let server = Server::start(cfg).await;
    server
        .get(
            "/imptr?id=2766",
            &[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 127.0.0.9")],
        )
        .await;
    server.stop().await;

    let imps = consume(&broker.addr, "pixel.impressions", 2);
    assert_eq!(
        imps[0].json["ip"], "127.0.0.1",
        "an untrusted peer's header is ignored"
    );
    assert_eq!(imps[1].json["ip"], "198.51.100.7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_forged_and_conflicting_uid_cookies_are_replaced() {
    let broker = Broker::start();
    let server = Server::start(example_config(&broker.addr)).await;
    let id = "0123456789abcdef0123456789abcdef";
    let good = uid_cookie(id);
    let tag = good.split_once('.').unwrap().1;
    let other = uid_cookie("ffffffffffffffffffffffffffffffff");
    // The same id, signed by someone who does not hold our secret.
    let foreign = pixeld::config::CookieConfig {
        secret: pixeld::config::Secret::parse("00000000000000000000000000000001"),
        ..Default::default()
    };
    let forged =
        pixeld::http::cookie::Cookies::new(&foreign, pixeld::http::cookie::Secret::generate())
            .value(pixeld::ids::UserId::parse(id).unwrap());
    let cases = [
        "uid=not-a-uid".to_string(),
        format!("uid={id}"),
        format!("uid={}", id.to_uppercase()),
        format!("uid={forged}"),
        format!("uid=fedcba9876543210fedcba9876543210.{tag}"),
        format!("{good}; {other}"),
        format!("{good}{}", "0".repeat(4000)),
    ];
    let mut issued = Vec::new();
    for cookie in &cases {
        let r = server.get("/imptr?id=2766", &[("cookie", cookie)]).await;
        let uid = r
            .set_uid()
            .unwrap_or_else(|| panic!("{cookie} was trusted"));
        assert!(!cookie.contains(&uid), "{cookie}");
        issued.push(uid);
    }
    // A correctly signed id is taken as is: no new cookie.
    let r = server.get("/imptr?id=2766", &[("cookie", &good)]).await;
    assert_eq!(r.header("set-cookie"), None);
    server.stop().await;
    let imps = consume(&broker.addr, "pixel.impressions", cases.len() + 1);
    let uids: Vec<_> = imps
        .iter()
        .map(|e| e.json["uid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        uids[..cases.len()],
        issued[..],
        "events carry the fresh ids"
    );
    assert_eq!(uids[cases.len()], id);
    for (e, fresh) in imps.iter().zip([true; 7].into_iter().chain([false])) {
        assert_eq!(e.json["new_uid"], fresh, "{}", e.json);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_traffic_is_flagged_never_dropped() {
    let broker = Broker::start();
    let server = Server::start(example_config(&broker.addr)).await;
    let chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";
    let google = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
    for headers in [
        vec![("user-agent", chrome)],
        vec![("user-agent", google)],
        vec![(
            "user-agent",
            "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
        )],
        vec![("user-agent", chrome), ("sec-purpose", "prefetch")],
        vec![],
    ] {
        assert_eq!(server.get("/imptr?id=2766", &headers).await.status, 302);
    }
    server.stop().await;
    let imps = consume(&broker.addr, "pixel.impressions", 5);
    let ivt: Vec<_> = imps.iter().map(|e| e.json["ivt"].clone()).collect();
    assert_eq!(
        ivt,
        [
            serde_json::Value::Null,
            "crawler:Googlebot".into(),
            "preview:Slackbot".into(),
            "prefetch".into(),
            "no_user_agent".into()
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_ip_rate_limit_marks_excess_events_and_keeps_them_out_of_attribution() {
    let broker = Broker::start();
    let mut cfg = example_config(&broker.addr);
    cfg.server.rate_limit_per_ip = 3;
    let server = Server::start(cfg).await;
    let signed = uid_cookie("0123456789abcdef0123456789abcdef");
    let cookie = ("cookie", signed.as_str());
    // Start at the beginning of a second so all six land in one window.
    let now = pixeld::telemetry::now_ms();
    tokio::time::sleep(std::time::Duration::from_millis(1000 - now % 1000 + 20)).await;
    for _ in 0..6 {
        assert_eq!(
            server.get("/px?id=8371", &[cookie]).await.status,
            200,
            "still answered"
        );
    }
    server.stop().await;
    let conv = consume(&broker.addr, "pixel.conversions", 6);
    assert_eq!(conv.len(), 6, "every event is kept");
    let limited = conv
        .iter()
        .filter(|e| e.json["warnings"] == serde_json::json!(["rate_limited"]))
        .count();
    assert_eq!(limited, 3);
    let records = consume(&broker.addr, "pixel.attributions", 3);
    assert_eq!(
        records.len(),
        3,
        "rate-limited conversions never reach the engine"
    );
}
