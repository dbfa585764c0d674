//! Running pixeld as operators do: live reload under load, the admin
//! listener apart from the public one, and the drain on SIGTERM; each
//! against `pixeld serve` as a real process and a real tansu.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    config_text, consume_all, free_tcp_port, header_of, metric_sum, q, raw_get, raw_get_with,
    raw_reload, signal, status_of, Broker, Process, BROWSER_UA,
};

struct Pixeld {
    process: Process,
    log: std::path::PathBuf,
    broker: Broker,
    path: std::path::PathBuf,
    base: Vec<(&'static str, String)>,
}

fn overrides(brokers: &str, port: u16, admin: u16) -> Vec<(&'static str, String)> {
    vec![
        ("listen", q(format!("127.0.0.1:{port}"))),
        ("admin_listen", q(format!("127.0.0.1:{admin}"))),
        ("brokers", q(brokers)),
        ("data_dir", q(common::fresh_dir().display().to_string())),
        ("partitions", "1".into()),
        ("linger_ms", "1".into()),
    ]
}

impl Pixeld {
    fn start(extra: &[(&'static str, String)]) -> Pixeld {
        let broker = Broker::start();
        let (port, admin) = (free_tcp_port(), free_tcp_port());
        let mut base = overrides(&broker.addr, port, admin);
        base.extend(extra.iter().cloned());
        let dir = common::fresh_dir();
        let path = dir.join("pixeld.toml");
        std::fs::write(&path, config_text(&base)).unwrap();
        let log = dir.join("pixeld.log");
        let process = Process::start(&path, port, &log);
        assert!(
            process.wait_ready(200, Duration::from_secs(30)),
            "pixeld not ready"
        );
        Pixeld {
            process,
            log,
            broker,
            path,
            base,
        }
    }

    fn metrics(&self) -> String {
        raw_get(self.process.admin, "/metrics").unwrap().1
    }

    /// Rewrites the file: the example with this test's overrides, then
    /// `edit` applied to the text.
    fn rewrite(&self, edit: impl Fn(String) -> String) {
        let text = edit(config_text(&self.base));
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn hup(&self) {
        signal(self.process.child.id(), "HUP");
    }
}

fn get(port: u16, target: &str) -> u16 {
    status_of(&raw_get_with(
        port,
        target,
        &[&format!("User-Agent: {BROWSER_UA}")],
    ))
}

fn wait_for(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A new tracker and a new allowlist (the apex `example.com` no longer,
/// `shop.example.org` now), as an ad-ops person edits the file.
fn with_tracker_9999_and_only_shop_example_org(text: String) -> String {
    text.replace(
        "allowed_hosts = [\"example.com\", \"*.example.com\"]",
        "allowed_hosts = [\"*.example.com\", \"shop.example.org\"]",
    ) + "\n[[impression_trackers]]\nid = 9999\nline_item = 5001\npublisher = 778\n"
}

#[test]
fn a_reload_under_load_swaps_trackers_and_allowlist_without_a_failed_request() {
    let mut px = Pixeld::start(&[]);
    let port = px.process.port;
    // Steady load of real requests for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let s = get(port, "/imptr?id=2766&cachebuster=load");
                    sent.fetch_add(1, Ordering::Relaxed);
                    if !matches!(s, 200 | 302) {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let redirect_to = |host: &str| {
        let r = raw_get_with(
            port,
            &format!("/clktr?id=21378&redir=https://{host}/landing"),
            &[],
        );
        header_of(&r, "location").unwrap_or_default().to_string()
    };
    assert_eq!(redirect_to("example.com"), "https://example.com/landing");
    assert_eq!(
        redirect_to("shop.example.org"),
        "https://www.example.com/autumn-sale"
    );
    assert_eq!(
        get(port, "/imptr?id=9999"),
        200,
        "unknown: invalid event, still a GIF"
    );

    // 1. A new tracker and a new allowlist, then SIGHUP.
    px.rewrite(with_tracker_9999_and_only_shop_example_org);
    let reloaded_at = Instant::now();
    px.hup();
    let reloaded = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        metric_sum(&px.metrics(), "config_reloads_total{result=\"ok\"}") >= 1.0
    });
    assert!(reloaded, "no reload: {}", px.log());
    let took = reloaded_at.elapsed();
    assert!(took < Duration::from_secs(1), "reload took {took:?}");
    assert!(get(port, "/imptr?id=9999&cachebuster=new") < 400);
    // The old allowlist no longer applies: the click falls back to its click_url.
    assert_eq!(
        redirect_to("example.com"),
        "https://www.example.com/autumn-sale"
    );
    assert_eq!(
        redirect_to("shop.example.org"),
        "https://shop.example.org/landing"
    );

    // 2. An invalid file: refused, the running config keeps serving.
    px.rewrite(|t| {
        with_tracker_9999_and_only_shop_example_org(t).replace("id = 9999", "id = \"nine\"")
    });
    px.hup();
    wait_for("the refusal", Duration::from_secs(5), || {
        metric_sum(&px.metrics(), "config_reloads_total{result=\"invalid\"}") >= 1.0
    });
    assert!(get(port, "/imptr?id=9999&cachebuster=still") < 400);

    // 3. A key only a restart changes: named, the rest applied. Through the
    // admin listener's reload endpoint this time.
    px.rewrite(|t| {
        with_tracker_9999_and_only_shop_example_org(t).replace("linger_ms = 1", "linger_ms = 7")
    });
    let answer = raw_reload(px.process.admin);
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert!(answer.contains("kafka.linger_ms"), "{answer}");
    let m = px.metrics();
    assert_eq!(
        metric_sum(&m, "config_reloads_total{result=\"restart_needed\"}"),
        1.0
    );
    assert_eq!(
        metric_sum(&m, "config_info{"),
        1.0,
        "one config in force: {m}"
    );

    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no request failed");
    assert!(sent.load(Ordering::Relaxed) > 50, "the load ran");
    assert_eq!(px.process.stop(), 0);
    let imps = consume_all(
        &px.broker.addr,
        "pixel.impressions",
        Duration::from_millis(1500),
        Duration::from_secs(30),
    );
    let new: Vec<_> = imps
        .iter()
        .filter(|e| e.json["tracker_id"] == 9999)
        .collect();
    assert_eq!(new.len(), 2, "the new tracker's events");
    assert_eq!(new[0].json["publisher_id"], 778);
}

#[test]
fn the_public_listener_never_serves_metrics_and_the_admin_one_serves_no_pixels() {
    let mut px = Pixeld::start(&[]);
    let (public, admin) = (px.process.port, px.process.admin);
    assert_eq!(raw_get(public, "/metrics").unwrap().0, 404);
    assert_eq!(raw_get(public, "/-/reload").unwrap().0, 404);
    assert_eq!(raw_get(public, "/healthz").unwrap().0, 200);
    assert_eq!(raw_get(public, "/readyz").unwrap().0, 200);
    let (status, body) = raw_get(admin, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("pixeld_build_info{"), "{body}");
    assert!(
        body.contains("# TYPE http_request_duration_seconds histogram"),
        "{body}"
    );
    assert_eq!(raw_get(admin, "/imptr?id=2766").unwrap().0, 404);
    assert_eq!(raw_get(admin, "/optout").unwrap().0, 404);
    assert_eq!(raw_get(admin, "/healthz").unwrap().0, 200);
    assert_eq!(raw_get(admin, "/readyz").unwrap().0, 200);
    assert_eq!(
        raw_get(admin, "/-/reload").unwrap().0,
        405,
        "reload is a POST"
    );
    assert_eq!(px.process.stop(), 0);
}

#[test]
fn sigterm_turns_readiness_off_first_and_keeps_answering_through_the_drain() {
    let mut px = Pixeld::start(&[("drain_ms", "2000".into())]);
    let (port, admin) = (px.process.port, px.process.admin);
    assert_eq!(raw_get(port, "/readyz").unwrap().0, 200);
    let term = Instant::now();
    signal(px.process.child.id(), "TERM");
    wait_for("readiness off", Duration::from_secs(1), || {
        raw_get(port, "/readyz").is_some_and(|(s, _)| s == 503)
    });
    assert_eq!(raw_get(admin, "/readyz").unwrap().0, 503);
    let mut answered = 0;
    while term.elapsed() < Duration::from_millis(1500) {
        assert!(get(port, &format!("/imptr?id=2766&cachebuster=drain{answered}")) < 400);
        answered += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(answered >= 10);
    assert_eq!(px.process.child.wait().unwrap().code(), Some(0));
    assert!(
        term.elapsed() >= Duration::from_millis(2000),
        "the whole drain"
    );
    let imps = consume_all(
        &px.broker.addr,
        "pixel.impressions",
        Duration::from_millis(1500),
        Duration::from_secs(30),
    );
    let drained = imps
        .iter()
        .filter(|e| {
            e.json["cachebuster"]
                .as_str()
                .is_some_and(|c| c.starts_with("drain"))
        })
        .count();
    assert_eq!(
        drained, answered,
        "every request answered in the drain is in Kafka"
    );
}
