//! `/px` end to end.

mod common;

use common::{assert_common, consume, example_config, uid_cookie, Broker, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversion_pixels_record_their_parameters_and_fire_piggybacks() {
    let broker = Broker::start();
    let server = Server::start(example_config(&broker.addr)).await;
    let uid = "fedcba9876543210fedcba9876543210";
    let cookie = uid_cookie(uid);

    // Image form of 7313: its one img piggyback, by redirect, with ${UID}.
    let r = server
        .get(
            "/px?id=7313&t=2&order_id=ORD42&value=19.99&other=blue+shoes&seg=23145&remove=12192",
            &[("cookie", &cookie)],
        )
        .await;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location"),
        Some(format!("https://partner.example.com/conv?uid={uid}").as_str())
    );

    // JavaScript form fires both piggybacks.
    let r = server.get("/px?id=7313&t=1", &[("cookie", &cookie)]).await;
    assert_eq!(r.status, 200);
    let body = std::str::from_utf8(&r.body).unwrap();
    assert!(
        body.contains(&format!(
            "i(\"https://partner.example.com/conv?uid={uid}\");"
        )),
        "{body}"
    );
    assert!(
        body.contains("s(\"https://partner.example.com/conv.js\");"),
        "{body}"
    );

    // 8371 has no piggyback: the GIF. Malformed optional values warn, never drop.
    let long_order = "A".repeat(40);
    let r = server
        .get(
            &format!("/px?id=8371&order_id={long_order}&value=$10&other=%ZZ"),
            &[("cookie", &cookie)],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("image/gif"));
    server.stop().await;

    let conv = consume(&broker.addr, "pixel.conversions", 3);
    assert_eq!(conv.len(), 3);
    for c in &conv {
        assert_common(&c.json, "conversion");
        assert_eq!(c.key, uid);
        assert_eq!(c.json["advertiser_id"], 100);
    }
    let a = &conv[0].json;
    assert_eq!(a["pixel_id"], 7313);
    assert_eq!(a["order_id"], "ORD42");
    assert_eq!(a["value_micros"], 19_990_000);
    assert_eq!(a["other"], "blue shoes");
    assert_eq!(a["segments_added"], serde_json::json!([23145]));
    assert_eq!(a["segments_removed"], serde_json::json!([12192]));
    assert_eq!(a["warnings"], serde_json::json!([]));
    let c = &conv[2].json;
    assert_eq!(c["pixel_id"], 8371);
    assert!(c["order_id"].is_null() && c["value_micros"].is_null() && c["other"].is_null());
    assert_eq!(
        c["warnings"],
        serde_json::json!(["order_id_invalid", "value_invalid", "other_invalid"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opted_out_and_gpc_conversions_carry_no_uid_and_no_ip() {
    let broker = Broker::start();
    let server = Server::start(example_config(&broker.addr)).await;
    let r = server.get("/optout", &[]).await;
    assert_eq!(r.status, 200);
    let cookie = r.header("set-cookie").unwrap().to_string();
    assert!(cookie.starts_with("uid=OPTOUT;"), "{cookie}");

    let r = server.get("/px?id=8371", &[("cookie", "uid=OPTOUT")]).await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("set-cookie").is_none(),
        "an opted-out browser gets no cookie"
    );
    let r = server
        .get(
            "/px?id=8371",
            &[
                ("cookie", &uid_cookie("0123456789abcdef0123456789abcdef")),
                ("sec-gpc", "1"),
            ],
        )
        .await;
    assert!(r.header("set-cookie").is_none());
    server.stop().await;

    let conv = consume(&broker.addr, "pixel.conversions", 2);
    assert_eq!(conv.len(), 2);
    for c in &conv {
        assert_common(&c.json, "conversion");
        assert!(c.json["uid"].is_null());
        assert!(c.json["ip"].is_null());
        assert_eq!(c.json["new_uid"], false);
        assert_eq!(c.key, "");
    }
}
