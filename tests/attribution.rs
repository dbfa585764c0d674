//! Attribution through HTTP into a real broker: conversions fired at pixeld
//! are credited as the rules say, and the state survives a graceful restart.

mod common;

use common::{assert_schema, consume, example_config, uid_cookie, Broker, Consumed, Server};

const UID: &str = "00112233445566778899aabbccddeeff";

fn cookie(uid: &str) -> (&'static str, String) {
    ("cookie", uid_cookie(uid))
}

/// A browser's request: crawlers' and agent-less touches are invalid
/// traffic and never enter the state.
async fn get(server: &Server, path: &str, uid: &str) {
    let (k, v) = cookie(uid);
    let ua = ("user-agent", common::BROWSER_UA);
    let r = server.get(path, &[(k, &v), (ua.0, ua.1)]).await;
    assert!(r.status == 200 || r.status == 302, "{path}: {}", r.status);
}

fn by_pixel<'a>(records: &'a [Consumed], conversion_event_id: &str) -> &'a serde_json::Value {
    &records
        .iter()
        .find(|r| r.json["conversion_event_id"] == conversion_event_id)
        .unwrap()
        .json
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversions_are_credited_as_the_rules_say() {
    let broker = Broker::start();
    let mut cfg = example_config(&broker.addr);
    // 8371 counts one per user; 7313 (hybrid) counts all.
    cfg.conversion_pixels[1].trigger = pixeld::config::Trigger::Hybrid;
    let server = Server::start(cfg).await;

    // 1. impression, then conversion (8371, hybrid): post_view.
    let u1 = "11111111111111111111111111111111";
    get(&server, "/imptr?id=2766&cachebuster=1", u1).await;
    get(&server, "/px?id=8371&order_id=A1&value=10", u1).await;
    // 2. click, later impression, conversion (7313, hybrid): post_click.
    let u2 = UID;
    get(&server, "/clktrb?id=21378", u2).await;
    get(&server, "/imptr?id=2766", u2).await;
    get(&server, "/px?id=7313", u2).await;
    // 3. no touch at all.
    let u3 = "33333333333333333333333333333333";
    get(&server, "/px?id=7313", u3).await;
    // 4. a repeat under one_per_user.
    get(&server, "/px?id=8371&order_id=A2", u1).await;
    server.stop().await;

    let conversions = consume(&broker.addr, "pixel.conversions", 4);
    let imps = consume(&broker.addr, "pixel.impressions", 2);
    let clicks = consume(&broker.addr, "pixel.clicks", 1);
    let records = consume(&broker.addr, "pixel.attributions", 4);
    assert_eq!(records.len(), 4, "exactly one record per conversion");
    for r in &records {
        assert_eq!(r.kind, "attribution");
        assert_schema(&r.json);
    }
    let conv_id = |i: usize| {
        conversions[i].json["event_id"]
            .as_str()
            .unwrap()
            .to_string()
    };

    let a = by_pixel(&records, &conv_id(0));
    assert_eq!(a["uid"], u1);
    assert_eq!(a["attributed"], true);
    assert_eq!(a["counted"], true);
    assert_eq!(a["kind"], "post_view");
    assert_eq!(a["touch_event_id"], imps[0].json["event_id"]);
    assert_eq!(a["touch_ts"], imps[0].json["ts"]);
    assert_eq!(a["tracker_id"], 2766);
    assert_eq!(a["line_item_id"], 5001);
    assert_eq!(a["publisher_id"], 777);
    assert_eq!(a["placement_id"], 4242);
    assert_eq!(a["pixel_id"], 8371);
    assert_eq!(a["advertiser_id"], 100);
    assert_eq!(a["order_id"], "A1");
    assert_eq!(a["value_micros"], 10_000_000);
    assert!(a["reason"].is_null());

    let b = by_pixel(&records, &conv_id(1));
    assert_eq!(b["kind"], "post_click");
    assert_eq!(b["touch_event_id"], clicks[0].json["event_id"]);
    assert_eq!(b["tracker_id"], 21378);

    let c = by_pixel(&records, &conv_id(2));
    assert_eq!(
        (c["attributed"].as_bool(), c["reason"].as_str()),
        (Some(false), Some("no_touch"))
    );
    assert!(c["kind"].is_null() && c["touch_event_id"].is_null());

    let d = by_pixel(&records, &conv_id(3));
    assert_eq!(
        (d["counted"].as_bool(), d["reason"].as_str()),
        (Some(false), Some("repeat"))
    );
    assert_eq!(d["order_id"], "A2");

    for r in &records {
        let key = r.json["uid"].as_str().unwrap();
        assert_eq!(r.key, key, "records are keyed by user id");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_conversions_get_a_no_uid_record() {
    let broker = Broker::start();
    let server = Server::start(example_config(&broker.addr)).await;
    let r = server.get("/px?id=7313", &[("sec-gpc", "1")]).await;
    assert_eq!(r.status, 302);
    server.stop().await;
    let records = consume(&broker.addr, "pixel.attributions", 1);
    assert_eq!(records.len(), 1);
    let j = &records[0].json;
    assert!(j["uid"].is_null());
    assert_eq!(j["reason"], "no_uid");
    assert_eq!(records[0].key, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_a_graceful_restart() {
    let broker = Broker::start();
    let cfg = example_config(&broker.addr);
    let server = Server::start(cfg.clone()).await;
    get(&server, "/imptr?id=2766", UID).await;
    server.stop().await;
    assert!(
        cfg.server.data_dir.join("attribution.snapshot").exists(),
        "snapshot written on shutdown"
    );

    let server = Server::start(cfg.clone()).await;
    get(&server, "/px?id=7313", UID).await;
    server.stop().await;

    let imps = consume(&broker.addr, "pixel.impressions", 1);
    let records = consume(&broker.addr, "pixel.attributions", 1);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].json["kind"], "post_view");
    assert_eq!(records[0].json["touch_event_id"], imps[0].json["event_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_snapshot_is_ignored_and_the_state_rebuilt_from_the_journal_kept() {
    let broker = Broker::start();
    let cfg = example_config(&broker.addr);
    let server = Server::start(cfg.clone()).await;
    get(&server, "/imptr?id=2766", UID).await;
    get(&server, "/px?id=7313", UID).await;
    server.stop().await;
    let records = consume(&broker.addr, "pixel.attributions", 1);
    assert_eq!(records[0].json["kind"], "post_view");

    // A corrupt snapshot is reported and ignored: the server still starts,
    // and rebuilds the state by replaying the journal it kept (the
    // segments not yet both shipped and covered by a snapshot; a restart
    // after a good snapshot lets the shipper delete the earlier ones). The
    // replayed conversion yields the same record id as before.
    std::fs::write(cfg.server.data_dir.join("attribution.snapshot"), b"garbage").unwrap();
    let server = Server::start(cfg).await;
    get(&server, "/px?id=7313", UID).await;
    server.stop().await;
    let records = consume(&broker.addr, "pixel.attributions", 3);
    assert_eq!(records.len(), 3, "{records:?}");
    assert_eq!(
        records[1].json["event_id"], records[0].json["event_id"],
        "replay is deterministic"
    );
    assert_eq!(
        records[2].json["kind"], "post_view",
        "state rebuilt from the journal"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_journal_a_corrupt_snapshot_means_starting_empty() {
    let broker = Broker::start();
    let mut cfg = example_config(&broker.addr);
    cfg.journal.durability = pixeld::config::Durability::Memory;
    let server = Server::start(cfg.clone()).await;
    get(&server, "/imptr?id=2766", UID).await;
    server.stop().await;
    std::fs::write(cfg.server.data_dir.join("attribution.snapshot"), b"garbage").unwrap();
    let server = Server::start(cfg).await;
    get(&server, "/px?id=7313", UID).await;
    server.stop().await;
    let records = consume(&broker.addr, "pixel.attributions", 1);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].json["reason"], "no_touch");
}
