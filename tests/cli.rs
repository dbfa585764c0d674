//! The command line: check-config, tags, and a graceful SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_pixeld");
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/pixeld.toml");

#[test]
fn the_example_config_is_valid() {
    let out = Command::new(BIN)
        .args(["check-config", "--config", EXAMPLE])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_config_names_every_problem_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
[server]
listen = "nope"
colour = "blue"

[kafka]
compression = "brotli"

[[advertisers]]
id = 1

[[line_items]]
id = 10
advertiser = 1
conversion_pixels = [7, 8]

[[conversion_pixels]]
id = 7
advertiser = 1
post_view_minutes = 50000
repeat = "every 40000 minutes"
piggybacks = [
  { url = "https://a.example/1", format = "img" },
  { url = "https://a.example/2", format = "img" },
]

[[click_trackers]]
id = 5
line_item = 11
publisher = 1
click_url = "ftp://files.example/"
"#,
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    for expected in [
        "server.listen: <4 characters> is not an address:port",
        "server.colour: unknown field `colour`",
        "kafka.compression: <6 characters> is not one of none, gzip, snappy, lz4, zstd",
        "line_items[0].conversion_pixels[1]: <number> is not defined",
        "conversion_pixels[0].post_view_minutes: <number> is above the maximum 43200 (30 days)",
        "conversion_pixels[0].repeat: <19 characters> is outside 1..=32767",
        "conversion_pixels[0].piggybacks: 2 img piggybacks",
        "click_trackers[0].line_item: <number> is not defined",
        "click_trackers[0].click_url: <20 characters>: redirect target is not an absolute http or https URL",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    assert!(err.contains("9 problems"), "{err}");
}

#[test]
fn check_config_says_which_keys_the_environment_set_and_never_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("cookie.secret");
    std::fs::write(&secret, "7e57c00c1e5ec7e77e57c00c1e5ec7e7\n").unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config", EXAMPLE])
        .env("PIXELD_KAFKA__BROKERS", "k1:9092,k2:9092")
        .env("PIXELD_COOKIE__SECRET_FILE", &secret)
        .env("PIXELD_KAFKA__LIBRDKAFKA__SASL.PASSWORD", "hunter2")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("kafka.brokers from the environment (PIXELD_KAFKA__BROKERS)"),
        "{text}"
    );
    assert!(
        text.contains("cookie.secret_file from the environment"),
        "{text}"
    );
    for secret in ["7e57c00c1e5ec7e77e57c00c1e5ec7e7", "hunter2", "k1:9092"] {
        assert!(!text.contains(secret), "{secret} printed: {text}");
    }
    // A bad value names its key and the variable.
    let out = Command::new(BIN)
        .args(["check-config", "--config", EXAMPLE])
        .env("PIXELD_SERVER__MAX_QUERY_BYTES", "lots")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text.contains("server.max_query_bytes") && text.contains("PIXELD_SERVER__MAX_QUERY_BYTES"),
        "{text}"
    );
}

#[test]
fn tags_prints_the_exportable_tag_on_the_public_url() {
    let out = Command::new(BIN)
        .args(["tags", "--config", EXAMPLE, "--tracker", "2766"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        "<!-- Imp Tracker DO NOT MODIFY --> <img src=\"http://localhost:8080/imptr?id=2766&cachebuster=[CACHEBUSTER]&ancost=[ANCOST]&t=2&redir=[REDIRECT_URL]\" width=\"1\" height=\"1\" /> <!-- End of Imp Tracker -->"
    );
    let out = Command::new(BIN)
        .args(["tags", "--config", EXAMPLE, "--pixel", "7313", "--js"])
        .output()
        .unwrap();
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .contains("src=\"http://localhost:8080/px?id=7313&t=1\""));
    let out = Command::new(BIN)
        .args(["tags", "--config", EXAMPLE, "--click-tracker", "21378"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        "http://localhost:8080/clktrb?id=21378&cachebuster=[CACHEBUSTER]&ancost=[ANCOST]&redir=[REDIRECT_URL]"
    );
    let out = Command::new(BIN)
        .args(["tags", "--config", EXAMPLE, "--tracker", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // The example config has no [[api_keys]]: the answer says how to add one.
    let out = Command::new(BIN)
        .args(["tags", "--config", EXAMPLE, "--s2s", "7313"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("no [[api_keys]] entry may report pixel 7313: add one with advertisers = [100]"));
}

/// `pixeld serve` on the embedded default: it logs a kcat command, serves,
/// and exits 0 on SIGTERM after flushing.
/// Also: the environment overrides the file, and `--log-format json`
/// (through `PIXELD_LOG_FORMAT`) writes one JSON object per line.
#[test]
fn serve_on_the_embedded_default_then_sigterm_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let admin = common::free_tcp_port();
    let text = std::fs::read_to_string(EXAMPLE).unwrap().replace(
        "listen = \"0.0.0.0:8080\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    let path = dir.path().join("pixeld.toml");
    std::fs::write(&path, text).unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env("PIXELD_LOG_FORMAT", "json")
        .env("PIXELD_SERVER__ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
        .env("PIXELD_SERVER__DRAIN_MS", "0")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !log.iter().any(|l: &String| l.contains("admin listening")) {
        assert!(
            Instant::now() < deadline,
            "no 'admin listening' line: {log:?}"
        );
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            log.push(line);
        }
    }
    assert!(
        log.iter().any(|l| l.contains("kcat -b 127.0.0.1:")),
        "{log:?}"
    );
    for line in &log {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string(),
            "{line}"
        );
        assert!(v["fields"]["message"].is_string(), "{line}");
    }
    let listening = log
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("admin listening"))
        })
        .expect("the admin listener's line");
    assert_eq!(
        listening["fields"]["addr"],
        format!("127.0.0.1:{admin}"),
        "from the environment"
    );
    assert_eq!(common::raw_get(admin, "/metrics").map(|r| r.0), Some(200));
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    use std::io::{Read, Write};
    s.write_all(b"GET /imptr?id=2766 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 302"), "{resp}");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(code) = child.try_wait().unwrap() {
            break code;
        }
        assert!(
            Instant::now() < deadline,
            "pixeld did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code.code(), Some(0));
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
        log.push(line);
    }
    assert!(
        log.iter().any(|l| l.contains("all events delivered")),
        "{log:?}"
    );
}

mod common;
use common::q;

/// Runs `pixeld serve` on the example config with `overrides`; returns its
/// exit code and stderr once it exits by itself (within 30 s).
fn serve_until_exit(dir: &std::path::Path, overrides: &[(&str, String)]) -> (Option<i32>, String) {
    let path = dir.join("pixeld.toml");
    std::fs::write(&path, common::config_text(overrides)).unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("pixeld kept running though it cannot keep its guarantee");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (code, err)
}

#[test]
fn a_guarantee_that_cannot_be_given_stops_start_up_naming_the_key_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    // A data_dir that is a file: nothing can be kept there.
    let blocked = dir.path().join("a-file");
    std::fs::write(&blocked, "").unwrap();
    let port = common::free_tcp_port();
    let base = [
        ("listen", q(format!("127.0.0.1:{port}"))),
        ("brokers", q("127.0.0.1:1")),
        ("data_dir", q(blocked.display().to_string())),
    ];
    // The journal (config_text sets cookie.secret, so the key is not needed).
    let (code, err) = serve_until_exit(dir.path(), &base);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("journal.durability: cannot open the journal in")
            && err.contains("make server.data_dir writable"),
        "{err}"
    );
    // The attribution state, with the journal off.
    let mut memory = base.to_vec();
    memory.push(("durability", q("memory")));
    let (code, err) = serve_until_exit(dir.path(), &memory);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("attribution.enabled: cannot write attribution snapshots into"),
        "{err}"
    );
    // A listen address in use.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut taken = base.to_vec();
    taken[0] = ("listen", q(held.local_addr().unwrap().to_string()));
    let (code, err) = serve_until_exit(dir.path(), &taken);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("server.listen: cannot listen on"), "{err}");
    // Held by a socket that allows sharing, as a running pixeld's serving
    // threads' sockets do: still refused, never shared with it.
    let shared = pixeld::http::bind_public("127.0.0.1:0".parse().unwrap()).unwrap();
    taken[0] = ("listen", q(shared.local_addr().unwrap().to_string()));
    let (code, err) = serve_until_exit(dir.path(), &taken);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("server.listen: cannot listen on"), "{err}");
}

#[test]
fn shutdown_says_what_stays_in_the_journal_instead_of_all_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_tcp_port();
    let overrides = [
        ("listen", q(format!("127.0.0.1:{port}"))),
        ("brokers", q("127.0.0.1:1")),
        ("data_dir", q(dir.path().join("data").display().to_string())),
        ("flush_timeout_ms", "500".to_string()),
    ];
    let path = dir.path().join("pixeld.toml");
    std::fs::write(&path, common::config_text(&overrides)).unwrap();
    let mut p = common::Process::start(&path, port, &dir.path().join("pixeld.log"));
    for n in 0..3 {
        let (status, _) =
            common::raw_get(port, &format!("/imptr?id=2766&cachebuster={n}")).unwrap();
        assert_eq!(status, 302);
    }
    assert_eq!(p.stop(), 0);
    let log = std::fs::read_to_string(dir.path().join("pixeld.log")).unwrap();
    assert!(!log.contains("all events delivered"), "{log}");
    assert!(
        log.contains("stopping with events not yet in Kafka") && log.contains("left_in_journal=3"),
        "{log}"
    );
}

#[test]
fn check_config_against_the_running_file_names_restart_and_widened_keys() {
    let dir = tempfile::tempdir().unwrap();
    let running = dir.path().join("running.toml");
    let new = dir.path().join("new.toml");
    std::fs::write(
        &running,
        "[server]\nlisten = \"127.0.0.1:8080\"\n[redirect]\nallowed_hosts = [\"shop.example\"]\n",
    )
    .unwrap();
    let check = |new_text: &str| {
        std::fs::write(&new, new_text).unwrap();
        let out = Command::new(BIN)
            .args(["check-config", "--config"])
            .arg(&new)
            .arg("--against")
            .arg(&running)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let same = check(&std::fs::read_to_string(&running).unwrap());
    assert!(same.contains("a reload applies every change"), "{same}");
    assert!(
        !same.contains("restart") && !same.contains("allows more"),
        "{same}"
    );
    let text = check(
        "[server]\nlisten = \"127.0.0.1:9090\"\nrate_limit_per_ip = 5\n\
         [redirect]\nallowed_hosts = [\"shop.example\", \"other.example\"]\n",
    );
    assert!(
        text.contains("needs a restart (a reload keeps the running value): server.listen\n"),
        "{text}"
    );
    assert!(
        text.contains("allows more than before: redirect.allowed_hosts\n"),
        "{text}"
    );
    // Narrowing is not widening.
    let narrower = check("[server]\nlisten = \"127.0.0.1:8080\"\n[redirect]\nallowed_hosts = [\"shop.example\"]\n[sync]\n");
    assert!(!narrower.contains("allows more"), "{narrower}");
    // A running file that does not validate is reported like --config.
    std::fs::write(&running, "[server]\nlisten = \"nope\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&new)
        .arg("--against")
        .arg(&running)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.listen"));
}
