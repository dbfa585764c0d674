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

/// Issue 23: a thank-you page reloaded three times by one user is one sale.
/// Every conversion is still published; the attribution records count one
/// and call the other two duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_thank_you_page_is_one_counted_conversion_and_two_duplicates() {
    let broker = Broker::start();
    let server = Server::start(example_config(&broker.addr)).await;
    let cookie = uid_cookie("00112233445566778899aabbccddeeff");
    for _ in 0..3 {
        let r = server
            .get("/px?id=7313&order_id=A1&value=10", &[("cookie", &cookie)])
            .await;
        assert_eq!(r.status, 302);
    }
    // Another order of the same user is a sale of its own.
    server
        .get("/px?id=7313&order_id=A2&value=5", &[("cookie", &cookie)])
        .await;
    server.stop().await;
    let convs = consume(&broker.addr, "pixel.conversions", 4);
    assert_eq!(convs.len(), 4, "every conversion is published");
    // The reloads say so on the events themselves (the instance's hint).
    let warned: Vec<bool> = convs
        .iter()
        .map(|c| {
            c.json["warnings"]
                .as_array()
                .unwrap()
                .iter()
                .any(|w| w == "duplicate_order_id")
        })
        .collect();
    assert_eq!(warned, [false, true, true, false], "{convs:?}");
    let records = consume(&broker.addr, "pixel.attributions", 4);
    let of = |order: &str| -> Vec<&serde_json::Value> {
        records
            .iter()
            .map(|r| &r.json)
            .filter(|j| j["order_id"] == order)
            .collect()
    };
    let a1 = of("A1");
    assert_eq!(a1.len(), 3);
    assert_eq!(a1.iter().filter(|j| j["counted"] == true).count(), 1);
    let dups: Vec<_> = a1.iter().filter(|j| j["reason"] == "duplicate").collect();
    assert_eq!(dups.len(), 2, "{a1:?}");
    for d in dups {
        assert_eq!(d["counted"], false);
        assert_eq!(d["attributed"], false);
        assert!(d["line_item_id"].is_null(), "credits nothing: {d}");
        common::assert_schema(d);
    }
    assert_eq!(of("A2")[0]["counted"], true);
}
