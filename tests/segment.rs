//! `/seg` end to end.

mod common;

use common::{assert_common, consume, example_config, Broker, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_pixels_add_and_remove_by_id_and_by_code() {
    let broker = Broker::start();
    let server = Server::start(example_config(&broker.addr)).await;
    let r = server
        .get("/seg?add=12192,23145:250&remove=12304&t=2", &[])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("image/gif"));
    let r = server
        .get(
            "/seg?add_code=Shoes_2026,vip&member=958&other=x&redir=https://www.example.com/thanks",
            &[],
        )
        .await;
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("https://www.example.com/thanks"));
    let r = server.get("/seg?add=99,12192:9999999999&t=1", &[]).await;
    assert_eq!(
        r.header("content-type"),
        Some("application/javascript; charset=utf-8")
    );
    let r = server.get("/seg?t=2", &[]).await;
    assert_eq!(r.status, 200);
    server.stop().await;

    let segs = consume(&broker.addr, "pixel.segments", 2);
    assert_eq!(segs.len(), 2);
    for s in &segs {
        assert_common(&s.json, "segment");
    }
    let a = &segs[0].json;
    assert_eq!(
        a["adds"],
        serde_json::json!([{"segment_id": 12192, "value": null}, {"segment_id": 23145, "value": 250}])
    );
    assert_eq!(a["removes"], serde_json::json!([12304]));
    let b = &segs[1].json;
    assert_eq!(b["add_codes"], serde_json::json!(["Shoes_2026", "vip"]));
    assert_eq!(b["member"], 958);
    assert_eq!(b["other"], "x");
    assert_eq!(b["redir"], "https://www.example.com/thanks");

    // Nothing usable (an unknown segment and an out-of-range value) and
    // nothing at all: both recorded as invalid, both still answered.
    let invalid = consume(&broker.addr, "pixel.invalid", 2);
    let reasons: Vec<_> = invalid
        .iter()
        .map(|e| e.json["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["unknown_id", "missing_id"]);
}
