//! `pixeld forward` against real processes: tansu (sqlite storage), a
//! `pixeld serve` crediting conversions in process, `pixeld forward`, and a
//! local HTTP catcher as the destinations. Conversions are fired as a
//! browser fires them; what the destinations received and what the
//! delivery-log and dead-letter topics hold is checked.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use common::catcher::{Catcher, Caught};
use common::cluster::{read_all, Read};
use common::forward::Forward;
use common::{
    assert_schema, config_text, free_tcp_port, header_of, q, raw_exchange, raw_get_with, Broker,
    Process, BROWSER_UA,
};

const API_SECRET: &str = "forward-test-secret-0123456789";

/// A broker, `serve` on it and the config `forward` runs with.
struct Setup {
    broker: Broker,
    serve: Process,
    config: PathBuf,
    status: u16,
    brokers: String,
}

/// `[forward]` settings short enough for a test; `destinations` is the
/// `[[destinations]]` text with CATCHER for the catcher's base URL.
fn setup(catcher: &Catcher, destinations: &str) -> Setup {
    let _ = common::cluster::turn;
    let broker = Broker::start_sqlite();
    let brokers = format!("127.0.0.1:{}", broker.port());
    let dir = common::fresh_dir();
    let (port, status) = (free_tcp_port(), free_tcp_port());
    let text = config_text(&[
        ("brokers", q(&brokers)),
        ("listen", q(format!("127.0.0.1:{port}"))),
        ("data_dir", q(dir.join("data").display().to_string())),
        ("partitions", common::cluster::PARTITIONS.to_string()),
        ("linger_ms", "5".into()),
    ]) + &format!(
        "\n[[api_keys]]\nid = \"shop\"\nsecret = \"{API_SECRET}\"\nadvertisers = [100]\n\
         \n[forward]\ngroup_id = \"forward-test\"\nlisten = \"127.0.0.1:{status}\"\n\
         start_from = \"earliest\"\nbackoff_ms = 100\nmax_backoff_ms = 400\n\
         commit_interval_ms = 200\nsession_timeout_ms = 6000\ndrain_ms = 3000\n\
         queue_capacity = 4\n"
    ) + &destinations.replace("CATCHER", &catcher.url(""));
    let config = dir.join("pixeld.toml");
    std::fs::write(&config, text).unwrap();
    let serve = Process::start(&config, port, &dir.join("serve.log"));
    Setup {
        broker,
        serve,
        config,
        status,
        brokers,
    }
}

/// A browser that saw the tracker and bought `order` for 12.5: its uid.
fn convert(s: &Setup, order: &str) -> String {
    let ua = format!("User-Agent: {BROWSER_UA}");
    let resp = raw_get_with(s.serve.port, "/imptr?id=2766", &[&ua]);
    let set = header_of(&resp, "set-cookie").expect("an id");
    let pair = set.split(';').next().unwrap().to_string();
    let uid = pair["uid=".len()..].split('.').next().unwrap().to_string();
    let cookie = format!("Cookie: {pair}");
    let px = format!("/px?id=7313&order_id={order}&value=12.5");
    let resp = raw_get_with(s.serve.port, &px, &[&ua, &cookie]);
    // The GIF, or the redirect to the pixel's one image piggyback.
    assert!(
        resp.starts_with("HTTP/1.1 200") || resp.starts_with("HTTP/1.1 302"),
        "{resp}"
    );
    uid
}

/// `POST /v1/adjustments` retracting `order` of `uid`.
fn retract(s: &Setup, uid: &str, order: &str) {
    let body = format!(
        r#"{{"adjustments":[{{"pixel_id":7313,"uid":"{uid}","order_id":"{order}","type":"retract"}}]}}"#
    );
    let head = format!(
        "POST /v1/adjustments HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {API_SECRET}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let resp = raw_exchange(s.serve.port, head.as_bytes()).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

fn by_key(calls: &[Caught]) -> BTreeMap<String, Vec<Caught>> {
    let mut out: BTreeMap<String, Vec<Caught>> = BTreeMap::new();
    for c in calls {
        out.entry(c.key().to_string()).or_default().push(c.clone());
    }
    out
}

fn topic(s: &Setup, name: &str, n: usize) -> Vec<Read> {
    read_all(
        &s.brokers,
        name,
        |seen| seen.len() >= n,
        Duration::from_secs(60),
        Duration::from_millis(500),
    )
}

const FAULTS: &str = r#"
[[destinations]]
id = "ok"
kind = "postback"
url = "CATCHER/ok?o=${ORDER_ID}&v=${VALUE}&s=${STATUS}&e=${EVENT_ID}&c=${CONVERSION_EVENT_ID}"
rate_per_s = 1000

[[destinations]]
id = "flaky"
kind = "postback"
url = "CATCHER/flaky?o=${ORDER_ID}"
rate_per_s = 1000

[[destinations]]
id = "bad"
kind = "postback"
url = "CATCHER/bad?o=${ORDER_ID}"
rate_per_s = 1000

[[destinations]]
id = "hang"
kind = "postback"
url = "CATCHER/hang?o=${ORDER_ID}"
timeout_ms = 500
rate_per_s = 1000
"#;

#[test]
fn every_destination_gets_each_record_once_through_retries_dead_letters_and_a_hang() {
    let catcher = Catcher::start();
    let s = setup(&catcher, FAULTS);
    let forward = Forward::start(&s.config, s.status);
    // A message that is not a record (a stray producer's) is skipped and
    // counted, and stops nothing.
    {
        use rdkafka::producer::BaseRecord;
        let p = common::cluster::producer(&s.brokers);
        p.send(
            BaseRecord::with_opaque_to("pixel.attributions", 0)
                .key("x")
                .payload("{\"not\": \"a record\"}"),
        )
        .map_err(|(e, _)| e)
        .unwrap();
        common::cluster::flushed(&p);
    }
    let orders = ["A1", "A2", "A3"];
    let uids: Vec<String> = orders.iter().map(|o| convert(&s, o)).collect();
    let three = |c: &[Caught]| by_key(c).len() >= 3;

    // The hanging destination's first calls are unanswered: the others are
    // delivered meanwhile, so one slow destination holds up nobody else.
    let ok = catcher.wait("/ok", Duration::from_secs(60), three);
    assert_eq!(by_key(&ok).len(), 3, "{ok:?}\n{}", forward.log_text());
    assert!(
        ok.iter().all(|c| by_key(&ok)[c.key()].len() == 1),
        "ok was called once per record"
    );
    let flaky = catcher.wait("/flaky", Duration::from_secs(30), |c| {
        by_key(c).len() == 3 && by_key(c).values().all(|v| v.len() == 4)
    });
    // Not released yet: every first call to /hang is still unanswered, and
    // ok and flaky were served meanwhile.
    let hang_first = catcher.wait("/hang", Duration::from_secs(30), three);
    assert_eq!(by_key(&hang_first).len(), 3, "{hang_first:?}");
    // Each hanging call times out at 500 ms and is tried again (answered).
    let hang = catcher.wait("/hang", Duration::from_secs(30), |c| {
        by_key(c).len() == 3 && by_key(c).values().all(|v| v.len() >= 2)
    });
    catcher.release();
    assert!(by_key(&hang).values().all(|v| v.len() >= 2), "{hang:?}");

    // ok: the record's macros, URL-encoded.
    let mut seen_orders: Vec<String> = ok.iter().map(|c| c.param("o").unwrap()).collect();
    seen_orders.sort();
    assert_eq!(seen_orders, orders);
    for c in &ok {
        assert_eq!(c.param("v").as_deref(), Some("12.5"));
        assert_eq!(c.param("s").as_deref(), Some("approved"));
        assert_eq!(c.method, "GET");
    }
    // flaky: four attempts with one idempotency key, the last answered.
    assert_eq!(by_key(&flaky).len(), 3, "{flaky:?}");
    let keys_of = |calls: &[Caught]| -> HashSet<String> {
        calls.iter().map(|c| c.key().to_string()).collect()
    };
    assert!(
        keys_of(&flaky).is_disjoint(&keys_of(&ok)),
        "keys differ per destination"
    );
    // bad: called once per record, then dead-lettered.
    let bad = catcher.wait("/bad", Duration::from_secs(30), three);
    assert_eq!(bad.len(), 3, "a 400 is not retried: {bad:?}");

    let dead = topic(&s, "pixel.postbacks.dead", 3);
    assert_eq!(dead.len(), 3, "only the 400s are dead letters: {dead:?}");
    for d in &dead {
        let j = d.json();
        assert_schema(&j);
        assert_eq!(j["destination"], "bad");
        assert_eq!(j["last_http_status"], 400);
        assert_eq!(j["attempts"], 1);
        assert!(keys_of(&bad).contains(j["idempotency_key"].as_str().unwrap()));
        assert!(j["url"].as_str().unwrap().contains("/bad?o=A"));
    }
    // The delivery log: one message per attempt's outcome.
    let log = topic(&s, "pixel.postbacks", 3 + 12 + 3 + 6);
    let mut results: HashMap<(String, String), usize> = HashMap::new();
    for m in &log {
        let j = m.json();
        assert_schema(&j);
        *results
            .entry((
                j["destination"].as_str().unwrap().into(),
                j["result"].as_str().unwrap().into(),
            ))
            .or_default() += 1;
    }
    let count = |d: &str, r: &str| {
        results
            .get(&(d.to_string(), r.to_string()))
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(count("ok", "delivered"), 3, "{results:?}");
    assert_eq!(count("flaky", "status_5xx"), 9, "{results:?}");
    assert_eq!(count("flaky", "delivered"), 3, "{results:?}");
    assert_eq!(count("bad", "status_4xx"), 3, "{results:?}");
    assert!(count("hang", "timeout") >= 3, "{results:?}");
    assert_eq!(count("hang", "delivered"), 3, "{results:?}");
    let metrics = forward.metrics();
    assert!(
        metrics
            .contains(r#"forward_dead_letters_total{destination="bad",reason="final_answer"} 3"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("forward_records_malformed_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"forward_records_total{destination="ok",result="queued"} 3"#),
        "{metrics}"
    );

    // A refund: the ok postback is called again, with the status.
    retract(&s, &uids[0], "A1");
    let ok = catcher.wait("/ok", Duration::from_secs(60), |c| by_key(c).len() >= 4);
    let retracted: Vec<&Caught> = ok
        .iter()
        .filter(|c| c.param("s").as_deref() == Some("retracted"))
        .collect();
    assert_eq!(retracted.len(), 1, "{ok:?}");
    assert_eq!(retracted[0].param("o").as_deref(), Some("A1"));
    drop(s.broker);
}

const SLOW: &str = r#"
[[destinations]]
id = "slow"
kind = "postback"
url = "CATCHER/slow?o=${ORDER_ID}&s=${STATUS}"
concurrency = 2
rate_per_s = 1000
max_attempts = 2
timeout_ms = 1000
"#;

#[test]
fn kill9_of_forward_mid_run_calls_every_record_again_with_the_same_key() {
    let catcher = Catcher::start();
    let s = setup(&catcher, SLOW);
    let mut forward = Forward::start(&s.config, s.status);
    let orders: Vec<String> = (0..40).map(|i| format!("K{i}")).collect();
    for o in &orders {
        convert(&s, o);
    }
    // 100 ms a call, two at a time, four queued at most (the partitions
    // pause and resume): the kill comes with most still to do.
    catcher.wait("/slow", Duration::from_secs(60), |c| c.len() >= 8);
    forward.kill9();
    let before = catcher.caught("/slow");
    assert!(
        before.len() < orders.len(),
        "killed mid-run: {}",
        before.len()
    );
    let mut again = Forward::start(&s.config, s.status);
    let distinct = |c: &[Caught]| {
        c.iter()
            .filter_map(|c| c.param("o"))
            .collect::<HashSet<_>>()
            .len()
    };
    let all = catcher.wait("/slow", Duration::from_secs(180), |c| {
        distinct(c) == orders.len()
    });
    assert_eq!(
        distinct(&all),
        orders.len(),
        "every record reached the destination; log:\n{}",
        again.log_text()
    );
    let mut keys: HashMap<String, HashSet<String>> = HashMap::new();
    for c in &all {
        keys.entry(c.param("o").unwrap())
            .or_default()
            .insert(c.key().to_string());
    }
    for (order, k) in &keys {
        assert_eq!(
            k.len(),
            1,
            "{order} was called with more than one key: {k:?}"
        );
    }
    // SIGTERM: the calls in flight finish, then it leaves with 0.
    assert_eq!(again.terminate(), Some(0), "{}", again.log_text());
}
