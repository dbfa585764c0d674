//! Hostile input, round three (issue 25, findings 1 and 2), against
//! `pixeld` as a real process: no configuration value in any message
//! (`check-config`, the start-up error, the log, the reload answer), and an
//! admin listener that refuses what a page or another host can send, with
//! reloads coalesced under a flood.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    config_text, free_tcp_port, metric_sum, q, raw_exchange, raw_get, raw_get_with, raw_reload,
    status_of, Broker, Process,
};

const BIN: &str = env!("CARGO_BIN_EXE_pixeld");

/// What every case hides: each a secret a real file could hold.
const PASSWORD: &str = "Tr0ub4dor-and-3";
const HEX: &str = "c0ffee00c0ffee00c0ffee00c0ffee00";

/// One way to get a configuration wrong around a secret: the file's text,
/// the environment, and the secret that must never be printed.
struct Case {
    name: &'static str,
    /// Applied to the valid test config's text.
    edit: fn(String, &Path) -> String,
    env: Vec<(&'static str, String)>,
    secret: String,
    /// The key path the report must still name ("" for a syntax error).
    key: &'static str,
}

/// `text` with `line` added under its first `[section]` header.
fn under(text: &str, section: &str, line: &str) -> String {
    let header = format!("[{section}]\n");
    match text.find(&header) {
        Some(at) => {
            let at = at + header.len();
            format!("{}{line}\n{}", &text[..at], &text[at..])
        }
        None => format!("{text}\n{header}{line}\n"),
    }
}

/// Every case: in the file, in the environment, in a secret file.
fn cases() -> Vec<Case> {
    let mut all = file_cases();
    all.extend(env_cases());
    all.extend(secret_file_cases());
    all
}

fn file_cases() -> Vec<Case> {
    let none = Vec::new;
    vec![
        Case {
            name: "a syntax error on a librdkafka password's line",
            edit: |t, _| {
                under(
                    &t,
                    "kafka.librdkafka",
                    "\"sasl.password\" = \"Tr0ub4dor-and-3\\&\"",
                )
            },
            env: none(),
            secret: PASSWORD.into(),
            key: "",
        },
        Case {
            name: "an unquoted cookie secret",
            edit: |t, _| {
                under(
                    &t.replace("secret = \"7e57c00c1e5ec7e77e57c00c1e5ec7e7\"", ""),
                    "cookie",
                    "secret = c0ffee00c0ffee00c0ffee00c0ffee00",
                )
            },
            env: none(),
            secret: HEX.into(),
            key: "",
        },
        Case {
            name: "previous secrets as a string in the file",
            edit: |t, _| {
                under(
                    &t,
                    "cookie",
                    "previous_secrets = \"c0ffee00c0ffee00c0ffee00c0ffee00\"",
                )
            },
            env: none(),
            secret: HEX.into(),
            key: "cookie.previous_secrets",
        },
        Case {
            name: "an admin token as a list",
            edit: |t, _| under(&t, "server", "admin_token = [\"Tr0ub4dor-and-3\"]"),
            env: none(),
            secret: PASSWORD.into(),
            key: "server.admin_token",
        },
    ]
}

fn env_cases() -> Vec<Case> {
    vec![
        Case {
            name: "previous secrets as a string in the environment",
            edit: |t, _| t,
            env: vec![("PIXELD_COOKIE__PREVIOUS_SECRETS", HEX.into())],
            secret: HEX.into(),
            key: "cookie.previous_secrets",
        },
        Case {
            name: "a password in the wrong variable",
            edit: |t, _| t,
            env: vec![("PIXELD_SERVER__MAX_CONNECTIONS", PASSWORD.into())],
            secret: PASSWORD.into(),
            key: "server.max_connections",
        },
        Case {
            name: "a librdkafka password as a table in the environment",
            edit: |t, _| t,
            env: vec![(
                "PIXELD_KAFKA__LIBRDKAFKA__SASL.PASSWORD",
                format!("{{ v = \"{PASSWORD}\" }}"),
            )],
            secret: PASSWORD.into(),
            key: "kafka.librdkafka.\"sasl.password\"",
        },
    ]
}

fn secret_file_cases() -> Vec<Case> {
    let none = Vec::new;
    vec![
        Case {
            name: "a secret file that holds a password, not 32 hex",
            edit: |t, dir| {
                let file = dir.join("cookie-secret");
                std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
                under(
                    &t.replace("secret = \"7e57c00c1e5ec7e77e57c00c1e5ec7e7\"", ""),
                    "cookie",
                    &format!("secret_file = {:?}", file.display().to_string()),
                )
            },
            env: none(),
            secret: PASSWORD.into(),
            key: "cookie.secret",
        },
        Case {
            name: "previous secrets from a file, one of them given as a click-id key",
            edit: |t, dir| {
                let file = dir.join("previous");
                std::fs::write(&file, format!("{HEX}\nclick-{PASSWORD}\n")).unwrap();
                under(
                    &t,
                    "cookie",
                    &format!("previous_secrets_file = {:?}", file.display().to_string()),
                )
            },
            env: none(),
            secret: PASSWORD.into(),
            key: "cookie.previous_secrets[1]",
        },
    ]
}

/// The valid test config: the example on free ports, pointed at `brokers`.
fn valid_text(brokers: &str, port: u16, admin: u16) -> String {
    config_text(&[
        ("listen", q(format!("127.0.0.1:{port}"))),
        ("admin_listen", q(format!("127.0.0.1:{admin}"))),
        ("brokers", q(brokers)),
        ("data_dir", q(common::fresh_dir().display().to_string())),
        ("partitions", "1".into()),
    ])
}

/// Runs `pixeld ARGS --config PATH` with `env` until it exits: its code and
/// everything it printed.
fn run(args: &[&str], path: &Path, env: &[(&'static str, String)]) -> (Option<i32>, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(path)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("pixeld {args:?} kept running on a broken config");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

#[test]
fn check_config_and_the_start_up_error_name_the_key_never_the_secret() {
    for case in cases() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pixeld.toml");
        let text = (case.edit)(valid_text("127.0.0.1:1", free_tcp_port(), 0), dir.path());
        std::fs::write(&path, text).unwrap();
        for args in [&["check-config"][..], &["serve"]] {
            let (code, out) = run(args, &path, &case.env);
            assert_eq!(code, Some(2), "{}: {args:?} exits 2:\n{out}", case.name);
            assert!(
                !out.contains(&case.secret),
                "{}: {args:?} printed the secret:\n{out}",
                case.name
            );
            let named = if case.key.is_empty() {
                out.contains("not valid TOML at line ")
            } else {
                out.contains(&format!("{}:", case.key))
            };
            assert!(named, "{}: {args:?} names the problem:\n{out}", case.name);
        }
    }
}

/// `pixeld serve` on a valid file, as a real process with a log.
struct Served {
    process: Process,
    path: PathBuf,
    log: PathBuf,
    dir: PathBuf,
    _broker: Broker,
}

impl Served {
    fn start(edit: impl Fn(String) -> String) -> Served {
        let broker = Broker::start();
        let (port, admin) = (free_tcp_port(), free_tcp_port());
        let dir = common::fresh_dir();
        let path = dir.join("pixeld.toml");
        std::fs::write(&path, edit(valid_text(&broker.addr, port, admin))).unwrap();
        let log = dir.join("pixeld.log");
        let process = Process::start(&path, port, &log);
        Served {
            process,
            path,
            log,
            dir,
            _broker: broker,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn metric(&self, name: &str) -> f64 {
        metric_sum(&raw_get(self.process.admin, "/metrics").unwrap().1, name)
    }
}

#[test]
fn a_refused_reload_names_the_key_never_the_secret_in_its_answer_or_the_log() {
    let px = Served::start(|t| t);
    let valid = std::fs::read_to_string(&px.path).unwrap();
    let mut refused = 0.0;
    // The environment's cases need a process of their own: they are
    // covered at start-up above.
    for case in cases().into_iter().filter(|c| c.env.is_empty()) {
        let tmp = px.path.with_extension("tmp");
        std::fs::write(&tmp, (case.edit)(valid.clone(), &px.dir)).unwrap();
        std::fs::rename(&tmp, &px.path).unwrap();
        let answer = raw_reload(px.process.admin);
        assert_eq!(status_of(&answer), 400, "{}: {answer}", case.name);
        assert!(
            !answer.contains(&case.secret),
            "{}: the answer holds the secret: {answer}",
            case.name
        );
        assert!(answer.contains(case.key), "{}: {answer}", case.name);
        refused += 1.0;
    }
    assert_eq!(
        px.metric("config_reloads_total{result=\"invalid\"}"),
        refused
    );
    let log = px.log();
    assert!(log.contains("config reload refused"), "{log}");
    for secret in [PASSWORD, HEX] {
        assert!(!log.contains(secret), "the log holds a secret:\n{log}");
    }
}

/// A reload that widens what is allowed is applied (it may be meant) but
/// never silent: the answer and a WARN name the keys. Emptying
/// `redirect.allowed_hosts` lets redirects go to any host, which the click
/// then shows; the same file again widens nothing.
#[test]
fn a_reload_that_widens_the_allowlist_names_the_key_in_its_answer_and_a_warning() {
    let px = Served::start(|t| t);
    let click = "/clktr?id=21378&redir=https://elsewhere.test/landing";
    let before = raw_get_with(px.process.port, click, &[]);
    assert_ne!(
        common::header_of(&before, "location"),
        Some("https://elsewhere.test/landing"),
        "{before}"
    );
    let valid = std::fs::read_to_string(&px.path).unwrap();
    let open = valid.replace(
        "allowed_hosts = [\"example.com\", \"*.example.com\"]",
        "allowed_hosts = []",
    );
    assert_ne!(open, valid, "the example config's allowlist line");
    std::fs::write(&px.path, open).unwrap();
    let answer = raw_reload(px.process.admin);
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert!(
        answer.contains("these keys now allow more than before: redirect.allowed_hosts"),
        "{answer}"
    );
    let log = px.log();
    assert!(
        log.contains("WARN") && log.contains("config reload widens what is allowed"),
        "{log}"
    );
    let after = raw_get_with(px.process.port, click, &[]);
    assert_eq!(
        common::header_of(&after, "location"),
        Some("https://elsewhere.test/landing"),
        "{after}"
    );
    let again = raw_reload(px.process.admin);
    assert_eq!(status_of(&again), 200, "{again}");
    assert!(!again.contains("allow more"), "{again}");
}

/// A raw request to the admin listener at `port` with these header lines.
fn admin_request(port: u16, method: &str, target: &str, headers: &[&str]) -> String {
    let mut head =
        format!("{method} {target} HTTP/1.1\r\nConnection: close\r\nContent-Length: 0\r\n");
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    raw_exchange(port, head.as_bytes()).unwrap_or_default()
}

#[test]
fn the_admin_listener_refuses_foreign_hosts_pages_and_reloads_without_json() {
    let px =
        Served::start(|t| t.replace("admin_hosts = []", "admin_hosts = [\"pixeld-admin.test\"]"));
    let admin = px.process.admin;
    let own = format!("Host: 127.0.0.1:{admin}");
    let json = "Content-Type: application/json";
    let status = |method, target, headers: &[&str]| {
        status_of(&admin_request(admin, method, target, headers))
    };
    // DNS rebinding: the page's own name in Host.
    for host in [
        format!("Host: rebind.evil.test:{admin}"),
        "Host: 127.0.0.1:1".to_string(),
        format!("Host: localhost.evil.test:{admin}"),
    ] {
        assert_eq!(status("GET", "/metrics", &[&host]), 403, "{host}");
        assert_eq!(status("POST", "/-/reload", &[&host, json]), 403, "{host}");
    }
    let answer = admin_request(admin, "GET", "/metrics", &["Host: rebind.evil.test"]);
    assert!(
        answer.contains("server.admin_hosts"),
        "one line saying why: {answer}"
    );
    assert!(
        !answer.contains("rebind.evil.test"),
        "nothing reflected: {answer}"
    );
    for host in [
        own.clone(),
        format!("Host: localhost:{admin}"),
        "Host: pixeld-admin.test".into(),
    ] {
        assert_eq!(status("GET", "/metrics", &[&host]), 200, "{host}");
    }
    // A page's fetch, form or beacon.
    assert_eq!(
        status("GET", "/metrics", &[&own, "Sec-Fetch-Site: cross-site"]),
        403
    );
    for headers in [
        vec![own.as_str(), json, "Sec-Fetch-Site: cross-site"],
        vec![own.as_str(), json, "Origin: https://evil.test"],
        vec![own.as_str(), json, "Origin: null"],
        vec![own.as_str()],
        vec![
            own.as_str(),
            "Content-Type: application/x-www-form-urlencoded",
        ],
        vec![own.as_str(), "Content-Type: text/plain"],
    ] {
        assert_eq!(status("POST", "/-/reload", &headers), 403, "{headers:?}");
    }
    assert_eq!(
        px.metric("config_reloads_total"),
        0.0,
        "none of these reloaded"
    );
    let same_origin = format!("Origin: http://127.0.0.1:{admin}");
    assert_eq!(
        status("POST", "/-/reload", &[&own, json, &same_origin]),
        200
    );
    assert_eq!(px.metric("config_reloads_total{result=\"ok\"}"), 1.0);
    assert!(px.metric("http_refused_total{reason=\"admin_host\"}") >= 6.0);
    // The public listener is unchanged: any Host, no such rules.
    let public = raw_get_with(px.process.port, "/healthz", &["Sec-Fetch-Site: cross-site"]);
    assert_eq!(status_of(&public), 200, "{public}");
}

#[test]
fn with_a_token_every_admin_route_but_healthz_needs_it() {
    let token = "f00dfeedf00dfeedf00dfeedf00dfeed";
    let file = common::fresh_dir().join("admin-token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let px = Served::start(|t| {
        under(
            &t,
            "server",
            &format!("admin_token_file = {:?}", file.display().to_string()),
        )
    });
    let admin = px.process.admin;
    let own = format!("Host: 127.0.0.1:{admin}");
    let bearer = format!("Authorization: Bearer {token}");
    let status = |method, target, headers: &[&str]| {
        status_of(&admin_request(admin, method, target, headers))
    };
    assert_eq!(
        status("GET", "/healthz", &[&own]),
        200,
        "probes need no token"
    );
    for target in ["/metrics", "/readyz"] {
        assert_eq!(status("GET", target, &[&own]), 401, "{target}");
        assert_eq!(
            status("GET", target, &[&own, "Authorization: Bearer f00dfeed"]),
            401
        );
        // /readyz may still say 503 while the producer connects.
        assert_ne!(status("GET", target, &[&own, &bearer]), 401, "{target}");
    }
    assert_eq!(status("GET", "/metrics", &[&own, &bearer]), 200);
    let json = "Content-Type: application/json";
    assert_eq!(status("POST", "/-/reload", &[&own, json]), 401);
    assert_eq!(
        status("POST", "/-/reload", &[&own, &bearer]),
        200,
        "the token is enough"
    );
    // Even with the token, a page is refused.
    assert_eq!(
        status(
            "POST",
            "/-/reload",
            &[&own, &bearer, "Origin: https://evil.test"]
        ),
        403
    );
    let metrics = admin_request(admin, "GET", "/metrics", &[&own, &bearer]);
    assert_eq!(
        metric_sum(&metrics, "config_reloads_total{result=\"ok\"}"),
        1.0
    );
    let log = px.log();
    assert!(!log.contains(token) && !log.contains("f00dfeed"), "{log}");
}

#[test]
fn a_reload_flood_is_coalesced_and_logged_once() {
    let px = Served::start(|t| t);
    let admin = px.process.admin;
    let (threads, each) = (64, 8);
    let started = Instant::now();
    let flood: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                (0..each)
                    .map(|_| status_of(&raw_reload(admin)))
                    .collect::<Vec<u16>>()
            })
        })
        .collect();
    // The public listener answers pixels meanwhile (whatever its pace).
    for i in 0..20 {
        let target = format!("/imptr?id=2766&cachebuster=flood{i}");
        let status = status_of(&raw_get_with(px.process.port, &target, &[]));
        assert!((200..400).contains(&status), "{target}: {status}");
    }
    let answers: Vec<u16> = flood.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let tens = started.elapsed().as_secs() / 10;
    let requests = answers.len() as f64;
    assert!(
        answers.iter().all(|s| *s == 200),
        "every request answered: {answers:?}"
    );
    let reloads = px.metric("config_reloads_total{result=\"ok\"}");
    assert!(reloads >= 1.0);
    // Each reload answers every request that waited for it; without
    // coalescing there would be one per request.
    assert!(
        reloads <= requests / 4.0,
        "{reloads} reloads for {requests} requests"
    );
    // The same file again is logged at most once per 10 s, however often
    // it is reloaded.
    let logged = px.log().matches("config reloaded").count() as u64;
    eprintln!("{requests} reload requests: {reloads} reloads, {logged} log lines");
    assert!(
        logged <= 1 + tens + 1,
        "{logged} log lines for {reloads} reloads"
    );
}

/// `pixeld serve` on `text` under an open-file limit of `fds` (soft and
/// hard), as `ulimit -n` in a unit or a container sets it; its stderr in
/// `log`.
fn spawn_with_fd_limit(text: &str, fds: u32, log: &Path) -> std::process::Child {
    let dir = common::fresh_dir();
    let path = dir.join("pixeld.toml");
    std::fs::write(&path, text).unwrap();
    Command::new("bash")
        .args([
            "-c",
            &format!("ulimit -n {fds} && exec \"$0\" serve --config \"$1\""),
        ])
        .arg(BIN)
        .arg(&path)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Finding 8: a `server.max_connections` the open-file limit cannot hold
/// stops start-up naming the key and the fix.
#[test]
fn a_max_connections_the_fd_limit_cannot_hold_stops_start_up() {
    let broker = Broker::start();
    let text = config_text(&[
        ("brokers", q(&broker.addr)),
        ("listen", q(format!("127.0.0.1:{}", free_tcp_port()))),
        ("data_dir", q(common::fresh_dir().display().to_string())),
        ("max_connections", "1000".into()),
    ]);
    let log = common::fresh_dir().join("serve.log");
    let mut child = spawn_with_fd_limit(&text, 256, &log);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "pixeld started");
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(2), "{text}");
    assert!(text.contains("server.max_connections"), "{text}");
    assert!(text.contains("ulimit -n"), "{text}");
}

/// Finding 8: on the default `max_connections` under `ulimit -n 256`, the
/// cap is lowered to what the limit holds: 300 half-sent requests fill the
/// public listener, a new connection gets the cap's 503 rather than
/// hanging, and the admin listener, budgeted apart, still answers.
#[test]
fn under_a_low_fd_limit_the_cap_fires_and_the_admin_listener_still_answers() {
    let broker = Broker::start();
    let (port, admin) = (free_tcp_port(), free_tcp_port());
    let text = config_text(&[
        ("brokers", q(&broker.addr)),
        ("listen", q(format!("127.0.0.1:{port}"))),
        ("admin_listen", q(format!("127.0.0.1:{admin}"))),
        ("data_dir", q(common::fresh_dir().display().to_string())),
    ]);
    let log = common::fresh_dir().join("serve.log");
    let mut child = spawn_with_fd_limit(&text, 256, &log);
    let deadline = Instant::now() + Duration::from_secs(30);
    while raw_get(admin, "/healthz").is_none_or(|(s, _)| s != 200) {
        assert!(Instant::now() < deadline, "pixeld did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let held: Vec<std::net::TcpStream> = (0..300)
        .filter_map(|_| {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            std::io::Write::write_all(&mut s, b"GET /imptr?id=2766 HTTP/1.1\r\nHost: x\r\n")
                .ok()?;
            Some(s)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let answer = raw_get_with(port, "/imptr?id=2766", &[]);
    assert_eq!(status_of(&answer), 503, "{answer}");
    let (status, metrics) = raw_get(admin, "/metrics").expect("the admin listener answers");
    assert_eq!(status, 200);
    assert!(
        metric_sum(
            &metrics,
            "http_refused_total{reason=\"too_many_connections\"}"
        ) >= 1.0
    );
    drop(held);
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("lowered"), "{text}");
}
