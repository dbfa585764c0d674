//! `POST /v1/conversions` end to end: an advertiser's server reports
//! conversions with its key, pixeld answers per item, and what Kafka
//! received is attributed like any conversion (real tansu, pixeld in this
//! process).

mod common;

use bytes::Bytes;
use common::{assert_schema, consume, Broker, Consumed, Server};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

const KEY: &str = "shoes-server-key-0123456789";
const UA: (&str, &str) = ("user-agent", common::BROWSER_UA);

/// The example config with a second advertiser (200, pixel 9001) and a key
/// that may report advertiser 100's pixels only.
fn config(brokers: &str) -> pixeld::config::Config {
    config_with_key(brokers, "shoes-shop")
}

/// The same with the key named `key_id`: the metrics are the process's, so
/// a test that reads them has a key of its own.
fn config_with_key(brokers: &str, key_id: &str) -> pixeld::config::Config {
    let mut text = common::config_text(&[]);
    text.push_str(&format!(
        r#"
[[advertisers]]
id = 200
name = "Other Hats"

[[conversion_pixels]]
id = 9001
advertiser = 200
name = "Hats purchase"

[[api_keys]]
id = "{key_id}"
secret = "{KEY}"
advertisers = [100]
"#
    ));
    let mut cfg = pixeld::config::parse(&text, "test").unwrap();
    cfg.kafka.brokers = brokers.to_string();
    cfg.kafka.partitions = 1;
    cfg.kafka.linger_ms = 1;
    cfg.server.data_dir = common::fresh_dir();
    cfg.click_trackers[0].append_click_id = true;
    cfg
}

struct Answer {
    status: u16,
    json: Value,
}

async fn post(server: &Server, auth: Option<&str>, ctype: &str, body: Vec<u8>) -> Answer {
    post_to(server, "/v1/conversions", auth, ctype, body).await
}

async fn post_to(
    server: &Server,
    path: &str,
    auth: Option<&str>,
    ctype: &str,
    body: Vec<u8>,
) -> Answer {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req =
        Request::post(format!("http://{}{path}", server.addr)).header("content-type", ctype);
    if let Some(key) = auth {
        req = req.header("authorization", format!("Bearer {key}"));
    }
    let resp = client
        .request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {bytes:?}"));
    Answer { status, json }
}

/// A request too large to be taken, over a raw socket: a client library
/// stops at the broken pipe when the server answers before reading the
/// whole body (as it should), and the answer is what matters here. The
/// body is written beside the read, and a failed write is expected.
async fn post_oversized(server: &Server, framing: &str, body: Vec<u8>) -> Answer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let head = format!(
        "POST /v1/conversions HTTP/1.1\r\nhost: pixeld\r\nauthorization: Bearer {KEY}\r\n\
         content-type: application/json\r\nconnection: close\r\n{framing}\r\n\r\n"
    );
    wr.write_all(head.as_bytes()).await.unwrap();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&body).await;
        wr
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // Until the server closes (it was asked to), or resets once it has
    // answered and left the rest of the body unread.
    while let Ok(n) = rd.read(&mut buf).await {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    drop(writer.await);
    let text = String::from_utf8_lossy(&got);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{text}"));
    let status = head[9..12].parse().unwrap_or_else(|_| panic!("{head}"));
    let json = serde_json::from_str(body).unwrap_or_else(|e| panic!("{status}: {e}: {body}"));
    Answer { status, json }
}

async fn post_items(server: &Server, items: Value) -> Answer {
    let body = serde_json::to_vec(&json!({ "conversions": items })).unwrap();
    post(server, Some(KEY), "application/json", body).await
}

async fn post_adjustments(server: &Server, items: Value) -> Answer {
    let body = serde_json::to_vec(&json!({ "adjustments": items })).unwrap();
    post_to(
        server,
        "/v1/adjustments",
        Some(KEY),
        "application/json",
        body,
    )
    .await
}

/// Each item's (status, reason) in an answer.
fn statuses(a: &Answer) -> Vec<(String, String)> {
    a.json["results"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", a.json))
        .iter()
        .map(|r| {
            let reason = r["reason"].as_str().unwrap_or("");
            (
                r["status"].as_str().unwrap().to_string(),
                reason.to_string(),
            )
        })
        .collect()
}

/// A click through tracker 21378: its landing URL's `pxclid`.
async fn click_id(server: &Server) -> String {
    let r = server
        .get(
            "/clktrb?id=21378&redir=https%3A%2F%2Fshop.example.com%2Fdone",
            &[UA],
        )
        .await;
    assert_eq!(r.status, 302);
    let location = r.header("location").unwrap();
    location
        .strip_prefix("https://shop.example.com/done?pxclid=")
        .unwrap_or_else(|| panic!("{location}"))
        .to_string()
}

fn record_of<'a>(records: &'a [Consumed], event_id: &str) -> &'a Value {
    &records
        .iter()
        .find(|r| r.json["conversion_event_id"] == event_id)
        .unwrap_or_else(|| panic!("no record for {event_id}"))
        .json
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_answered_item_by_item_and_its_accepted_items_are_attributed() {
    let broker = Broker::start();
    let server = Server::start(config_with_key(&broker.addr, "batch-shop")).await;
    let clid = click_id(&server).await;
    // The sale, reported a moment after the click, with its own time.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let ts = now_ms() - 20;
    let a = post_items(
        &server,
        json!([
            { "pixel_id": 7313, "clid": clid, "order_id": "S1", "value": "25.50", "ts": ts },
            { "pixel_id": 9001, "clid": clid, "order_id": "S2" },
            { "pixel_id": 7313, "uid": "0123456789abcdef0123456789abcdef", "value": 12 },
            { "pixel_id": 7313, "clid": clid, "ts": now_ms() - 8 * 24 * 3_600_000 },
            { "pixel_id": 7313, "clid": clid, "ts": now_ms() + 3_600_000 },
            { "pixel_id": 7313 },
            { "pixel_id": 4, "clid": clid },
            { "pixel_id": 7313, "clid": "AAAAAAAAAAAAAAAAAAAAAAAA" },
            { "pixel_id": 7313, "clid": clid, "value": "ten" },
            { "pixel_id": 7313, "clid": clid, "oder_id": "typo" }
        ]),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.json);
    let statuses: Vec<(&str, &str)> = a.json["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let reason = r["reason"].as_str().unwrap_or("");
            (r["status"].as_str().unwrap(), reason)
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("accepted", ""),
            ("rejected", "pixel_not_allowed"),
            ("accepted", ""),
            ("rejected", "too_old"),
            ("rejected", "in_the_future"),
            ("rejected", "no_identity"),
            ("rejected", "unknown_pixel"),
            ("rejected", "clid_invalid"),
            ("rejected", "value_invalid"),
            ("rejected", "malformed"),
        ],
        "{}",
        a.json
    );
    assert_eq!(a.json["accepted"], 2);
    assert_eq!(a.json["rejected"], 8);
    let accepted: Vec<String> = [0, 2]
        .iter()
        .map(|&i| {
            a.json["results"][i]["event_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let metrics = server.admin_get("/metrics").await;
    let metrics = std::str::from_utf8(&metrics.body).unwrap().to_string();
    server.stop().await;

    let clicks = consume(&broker.addr, "pixel.clicks", 1);
    let convs = consume(&broker.addr, "pixel.conversions", 2);
    assert_eq!(convs.len(), 2, "only the accepted items are events");
    for c in &convs {
        assert_schema(&c.json);
        assert_eq!(c.json["source"], "server");
        assert_eq!(c.json["api_key"], "batch-shop");
    }
    let first = &convs[0].json;
    assert_eq!(first["event_id"], accepted[0].as_str());
    assert_eq!(first["ts"], ts, "the item's own time is the event time");
    assert!(first["received_ts"].as_u64().unwrap() >= ts + 20);
    assert_eq!(first["value_micros"], 25_500_000);
    assert_eq!(first["order_id"], "S1");
    assert_eq!(convs[1].json["value_micros"], 12_000_000);

    let records = consume(&broker.addr, "pixel.attributions", 2);
    let by_click = record_of(&records, &accepted[0]);
    assert_eq!(by_click["attributed"], true, "{by_click}");
    assert_eq!(by_click["matched_by"], "click_id");
    assert_eq!(by_click["touch_event_id"], clicks[0].json["event_id"]);
    let by_uid = record_of(&records, &accepted[1]);
    assert_eq!(by_uid["attributed"], false, "the uid never touched an ad");

    let line = |needle: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("api_items_total")
                    && l.contains("key=\"batch-shop\"")
                    && l.contains(needle)
            })
            .unwrap_or_else(|| panic!("no api_items_total line with {needle}:\n{metrics}"))
            .to_string()
    };
    let accepted_line = line("result=\"accepted\"");
    assert!(accepted_line.ends_with(" 2"), "{accepted_line}");
    assert!(line("result=\"too_old\"").ends_with(" 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_requests_are_refused_with_a_precise_status_and_reason() {
    let broker = Broker::start();
    let server = Server::start(config(&broker.addr)).await;
    let one = br#"{"conversions":[{"pixel_id":7313,"uid":"0123456789abcdef0123456789abcdef"}]}"#;
    let json = "application/json";

    for auth in [None, Some("wrong-key-0123456789abcdef"), Some("")] {
        let a = post(&server, auth, json, one.to_vec()).await;
        assert_eq!(a.status, 401, "{auth:?}");
        assert!(a.json["error"].as_str().unwrap().contains("Bearer"));
    }
    let a = post(&server, Some(KEY), json, b"{\"conversions\": [".to_vec()).await;
    assert_eq!((a.status, a.json["error"].is_string()), (400, true));
    let a = post(&server, Some(KEY), json, br#"{"items": []}"#.to_vec()).await;
    assert_eq!(a.status, 400);
    let a = post(&server, Some(KEY), "text/plain", one.to_vec()).await;
    assert_eq!(a.status, 415, "{}", a.json);

    let item = json!({ "pixel_id": 7313, "uid": "0123456789abcdef0123456789abcdef" });
    let many = vec![item; 1001];
    let a = post_items(&server, Value::Array(many)).await;
    assert_eq!(a.status, 413, "{}", a.json);
    // A declared 2 MiB body is refused before any of it is sent.
    let a = post_oversized(&server, "content-length: 2097152", Vec::new()).await;
    assert_eq!(a.status, 413, "{}", a.json);
    // An undeclared (chunked) one is refused once 1 MiB has been read.
    let mut big = b"100000\r\n".to_vec();
    big.extend(std::iter::repeat_n(b'x', 0x100000));
    big.extend(b"\r\n10\r\nxxxxxxxxxxxxxxxx\r\n");
    let a = post_oversized(&server, "transfer-encoding: chunked", big).await;
    assert_eq!(a.status, 413, "{}", a.json);

    // Nothing refused became an event: only this one is on the topic.
    let a = post(&server, Some(KEY), json, one.to_vec()).await;
    assert_eq!(a.status, 200);
    let id = a.json["results"][0]["event_id"]
        .as_str()
        .unwrap()
        .to_string();
    server.stop().await;
    let convs = common::consume_all(
        &broker.addr,
        "pixel.conversions",
        std::time::Duration::from_secs(3),
        std::time::Duration::from_secs(30),
    );
    let ids: Vec<&Value> = convs.iter().map(|c| &c.json["event_id"]).collect();
    assert_eq!(ids, [&Value::from(id)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_and_a_server_reporting_one_order_count_it_once() {
    let broker = Broker::start();
    let server = Server::start(config(&broker.addr)).await;
    let clid = click_id(&server).await;
    // The thank-you page, in a browser that kept no cookie of pixeld's,
    // reloaded once; then the shop's server reports the same order.
    for _ in 0..2 {
        let r = server
            .get(&format!("/px?id=7313&clid={clid}&order_id=A1"), &[UA])
            .await;
        assert!(r.status == 200 || r.status == 302);
    }
    let a = post_items(
        &server,
        json!([
            { "pixel_id": 7313, "clid": clid, "order_id": "A1", "value": "30" },
            { "pixel_id": 7313, "clid": clid, "order_id": "A2", "value": "5" }
        ]),
    )
    .await;
    assert_eq!(a.json["accepted"], 2, "{}", a.json);
    server.stop().await;

    let convs = consume(&broker.addr, "pixel.conversions", 4);
    assert_eq!(convs.len(), 4);
    let sources: Vec<&Value> = convs.iter().map(|c| &c.json["source"]).collect();
    assert_eq!(sources, ["browser", "browser", "server", "server"]);
    let records = consume(&broker.addr, "pixel.attributions", 4);
    let verdicts: Vec<(bool, Value)> = convs
        .iter()
        .map(|c| {
            let r = record_of(&records, c.json["event_id"].as_str().unwrap());
            (r["counted"] != false, r["reason"].clone())
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            (true, Value::Null),
            (false, "duplicate".into()),
            (false, "duplicate".into()),
            (true, Value::Null),
        ],
        "{records:?}"
    );
}

/// `pixeld tags --s2s` prints a call an advertiser can run as it is: with
/// its click id, order id and time filled in, the printed `curl` is
/// accepted and the conversion is credited to the click.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_printed_curl_example_reports_a_conversion() {
    let broker = Broker::start();
    let mut cfg = config_with_key(&broker.addr, "curl-shop");
    let server = Server::start(cfg.clone()).await;
    cfg.server.public_url = format!("http://{}", server.addr);
    let example = pixeld::tags::tag(
        &cfg,
        pixeld::tags::TagFor::ServerConversion(pixeld::ids::PixelId(7313)),
        Default::default(),
    )
    .unwrap();
    assert!(example.contains("api key curl-shop"), "{example}");
    assert!(!example.contains(KEY), "the secret is never printed");
    let clid = click_id(&server).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let ts = now_ms() - 10;
    let script = example
        .replace("CLICK_ID", &clid)
        .replace("ORDER_ID", "C1")
        .replace("1795650569700", &ts.to_string());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .args(["-c", &script])
            .env("PIXELD_API_KEY", KEY)
            .output()
            .expect("bash and curl (the test command installs curl)")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(answer["accepted"], 1, "{answer}");
    let event_id = answer["results"][0]["event_id"]
        .as_str()
        .unwrap()
        .to_string();
    server.stop().await;

    let records = consume(&broker.addr, "pixel.attributions", 1);
    let record = record_of(&records, &event_id);
    assert_eq!(record["matched_by"], "click_id", "{record}");
    assert_eq!(record["order_id"], "C1");
    assert_eq!(record["value_micros"], 19_990_000);
}

/// Refunds and corrections from the shop's server: each applied
/// adjustment's record names the original's record and carries its credit,
/// so that summing the deltas per line item leaves what was really sold;
/// an adjustment of an order pixeld never saw is recorded `unknown_order`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retractions_and_restatements_of_counted_orders_net_out_and_unknown_orders_are_flagged() {
    let broker = Broker::start();
    let server = Server::start(config_with_key(&broker.addr, "refund-shop")).await;
    let clid = click_id(&server).await;
    let uid = "0123456789abcdef0123456789abcdef";
    let sales = post_items(
        &server,
        json!([
            { "pixel_id": 7313, "clid": clid, "order_id": "R1", "value": "50" },
            { "pixel_id": 7313, "uid": uid, "order_id": "R2", "value": "30" }
        ]),
    )
    .await;
    assert_eq!(sales.json["accepted"], 2, "{}", sales.json);
    let a = post_adjustments(
        &server,
        json!([
            { "pixel_id": 7313, "clid": clid, "order_id": "R1", "type": "restate", "value": "40" },
            { "pixel_id": 7313, "uid": uid, "order_id": "R2", "type": "retract" },
            { "pixel_id": 7313, "uid": uid, "order_id": "R2", "type": "retract" },
            { "pixel_id": 7313, "uid": uid, "order_id": "NEVER", "type": "retract" },
            { "pixel_id": 7313, "uid": uid, "order_id": "R1", "type": "restate" },
            { "pixel_id": 7313, "uid": uid, "order_id": "R2", "type": "retract", "value": "1" },
            { "pixel_id": 7313, "uid": uid, "type": "retract" },
            { "pixel_id": 9001, "uid": uid, "order_id": "R2", "type": "retract" },
            { "pixel_id": 7313, "uid": uid, "order_id": "R2", "type": "refund" },
            { "pixel_id": 7313, "order_id": "R2", "type": "retract" }
        ]),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.json);
    let s = |st: &str, r: &str| (st.to_string(), r.to_string());
    assert_eq!(
        statuses(&a),
        [
            s("accepted", ""),
            s("accepted", ""),
            s("accepted", ""),
            s("accepted", ""),
            s("rejected", "value_missing"),
            s("rejected", "value_unexpected"),
            s("rejected", "order_id_missing"),
            s("rejected", "pixel_not_allowed"),
            s("rejected", "malformed"),
            s("accepted", ""),
        ]
    );
    let refused = post_to(
        &server,
        "/v1/adjustments",
        Some(KEY),
        "application/json",
        br#"{"conversions": []}"#.to_vec(),
    )
    .await;
    assert_eq!(refused.status, 400);
    assert!(refused.json["error"]
        .as_str()
        .unwrap()
        .contains("adjustments"));
    server.stop().await;

    let adjustments = consume(&broker.addr, "pixel.adjustments", 5);
    assert_eq!(adjustments.len(), 5, "only the accepted items are events");
    for e in &adjustments {
        assert_schema(&e.json);
        assert_eq!(e.kind, "adjustment");
    }
    assert_eq!(adjustments[0].json["adjustment"], "restate");
    assert_eq!(adjustments[0].json["value_micros"], 40_000_000);
    assert_eq!(adjustments[1].json["adjustment"], "retract");
    let records = consume(&broker.addr, "pixel.attributions", 7);
    assert_eq!(records.len(), 7, "one record per conversion and adjustment");
    for r in &records {
        assert_schema(&r.json);
    }
    let id = |a: &Answer, i: usize| {
        a.json["results"][i]["event_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (r1, r2) = (
        record_of(&records, &id(&sales, 0)),
        record_of(&records, &id(&sales, 1)),
    );
    assert_eq!(r1["kind"], "post_click", "{r1}");
    let restated = record_of(&records, &id(&a, 0));
    assert_eq!(restated["adjustment"], "restate");
    assert_eq!(restated["adjusts"], r1["event_id"]);
    assert_eq!(restated["counted"], false);
    for k in ["kind", "line_item_id", "touch_event_id", "matched_by"] {
        assert_eq!(restated[k], r1[k], "{k}: the original's credit");
    }
    assert_eq!(restated["value_micros"], 40_000_000);
    assert_eq!(restated["value_delta_micros"], -10_000_000);
    let retracted = record_of(&records, &id(&a, 1));
    assert_eq!(retracted["adjusts"], r2["event_id"]);
    assert_eq!(retracted["retracted"], true);
    assert_eq!(retracted["conversions_delta"], -1);
    assert_eq!(retracted["value_delta_micros"], -30_000_000);
    let twice = record_of(&records, &id(&a, 2));
    assert_eq!(twice["reason"], "already_retracted");
    assert_eq!(twice["value_delta_micros"], 0);
    let unknown = record_of(&records, &id(&a, 3));
    assert_eq!(unknown["reason"], "unknown_order");
    assert_eq!(unknown["adjusts"], Value::Null);
    // Named by its order id alone, the order is found (in-process mode):
    // R2, already retracted.
    let by_order = record_of(&records, &id(&a, 9));
    assert_eq!(by_order["adjusts"], r2["event_id"], "{by_order}");
    assert_eq!(by_order["reason"], "already_retracted");
    // The report: summed over every record, one sale of 40 is left.
    let sum = |k: &str| {
        records
            .iter()
            .map(|r| r.json[k].as_i64().unwrap())
            .sum::<i64>()
    };
    assert_eq!(
        (sum("conversions_delta"), sum("value_delta_micros")),
        (1, 40_000_000)
    );
}

/// In cluster mode a member holds only its own users' orders, so `serve`
/// sends each conversion with an order id again to the orders topic, keyed
/// by its pixel and order id, and keys an adjustment that names its order
/// alone the same way: both reach one member, which finds the order's user
/// (tests/cluster.rs follows them through the fleet). Kafka receives
/// exactly that.
#[tokio::test]
async fn in_cluster_mode_orders_and_their_adjustments_meet_under_the_order_s_key() {
    let broker = Broker::start();
    let mut cfg = config_with_key(&broker.addr, "cluster-shop");
    cfg.attribution.mode = pixeld::config::AttributionMode::Cluster;
    let server = Server::start(cfg).await;
    let uid = "0123456789abcdef0123456789abcdef";
    let sold = post_items(
        &server,
        json!([{ "pixel_id": 7313, "uid": uid, "order_id": "C1", "value": "5" }]),
    )
    .await;
    assert_eq!(statuses(&sold), [("accepted".to_string(), String::new())]);
    let a = post_adjustments(
        &server,
        json!([
            { "pixel_id": 7313, "order_id": "C1", "type": "retract" },
            { "pixel_id": 7313, "uid": uid, "order_id": "C1", "type": "retract" }
        ]),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.json);
    let s = |st: &str, r: &str| (st.to_string(), r.to_string());
    assert_eq!(statuses(&a), [s("accepted", ""), s("accepted", "")]);

    let order = pixeld::event::input::OrderId::new("C1").unwrap();
    let order_key = pixeld::event::input::PartitionKey::order(pixeld::ids::PixelId(7313), &order)
        .with_bytes(|k| String::from_utf8(k.to_vec()).unwrap());
    let conversions = consume(&broker.addr, "pixel.conversions", 1);
    let copies = consume(&broker.addr, "pixel.orders", 1);
    assert_eq!(conversions[0].key, uid, "the conversion, keyed by its user");
    assert_eq!(copies[0].key, order_key, "its copy, keyed by its order");
    assert_eq!(copies[0].json["event_id"], conversions[0].json["event_id"]);
    assert_eq!(copies[0].kind, "conversion");
    let adjustments = consume(&broker.addr, "pixel.adjustments", 2);
    let keys: Vec<&str> = adjustments.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(keys, [order_key.as_str(), uid]);
    server.stop().await;
}
