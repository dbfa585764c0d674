//! The operator artifacts in `deploy/`, checked against the real tools: the
//! alert rules with `promtool`, the dashboard's and the alerts' queries
//! against a real Prometheus scraping a real pixeld under load, the systemd
//! unit with `systemd-analyze verify` (and its credentials against the
//! config), the Kubernetes example against the example config and its
//! hardening (NetworkPolicy, seccomp, no service-account token, a pinned
//! image, a config directory that updates reach), and the container's
//! environment (the admin listener on loopback unless configured).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    config_text, encode_component, free_tcp_port, q, raw_get, raw_get_with, raw_reload, Broker,
    Process, BROWSER_UA,
};
use serde_json::Value;

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let text = run(Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(deploy("prometheus/alerts.yml")));
    assert!(text.contains("SUCCESS: 7 rules found"), "{text}");
    let text = run(Command::new("promtool")
        .arg("test")
        .arg("rules")
        .arg(deploy("prometheus/alerts_test.yml")));
    assert!(text.contains("SUCCESS"), "{text}");
    // The members' own rules (a partition no live member owns, a partition
    // held back).
    let text = run(Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(deploy("prometheus/attribute_alerts.yml")));
    assert!(text.contains("SUCCESS: 2 rules found"), "{text}");
    let text = run(Command::new("promtool")
        .arg("test")
        .arg("rules")
        .arg(deploy("prometheus/attribute_alerts_test.yml")));
    assert!(text.contains("SUCCESS"), "{text}");
    // pixeld forward's: dead letters, orphaned partitions, a backed-up queue.
    let text = run(Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(deploy("prometheus/forward_alerts.yml")));
    assert!(text.contains("SUCCESS: 3 rules found"), "{text}");
    let text = run(Command::new("promtool")
        .arg("test")
        .arg("rules")
        .arg(deploy("prometheus/forward_alerts_test.yml")));
    assert!(text.contains("SUCCESS"), "{text}");
}

/// Prometheus on a free port, scraping `target` every second; stopped on drop.
struct Prometheus {
    child: Child,
    port: u16,
}

impl Prometheus {
    fn start(target: u16) -> Prometheus {
        let dir = common::fresh_dir();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: pixeld\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n",
                deploy("prometheus/alerts.yml").display()
            ),
        )
        .unwrap();
        let port = free_tcp_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus (Debian's package, installed by scripts/test.sh)");
        let p = Prometheus { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while raw_get(port, "/-/ready").is_none_or(|(s, _)| s != 200) {
            assert!(Instant::now() < deadline, "prometheus did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    /// An instant query: the `data.result` array.
    fn query(&self, expr: &str) -> Vec<Value> {
        let (status, body) = raw_get(
            self.port,
            &format!("/api/v1/query?query={}", encode_component(expr)),
        )
        .unwrap();
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert_eq!(status, 200, "{expr}: {body}");
        assert_eq!(v["status"], "success", "{expr}: {body}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The metric names a PromQL expression reads: identifiers outside label
/// matchers, grouping clauses, ranges and strings that are not functions,
/// aggregations or keywords.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut cleaned = String::new();
    let mut depth_brace = 0;
    let mut depth_bracket = 0;
    let mut in_string = false;
    for c in expr.chars() {
        match c {
            '"' => in_string = !in_string,
            _ if in_string => {}
            '{' => depth_brace += 1,
            '}' => depth_brace -= 1,
            '[' => depth_bracket += 1,
            ']' => depth_bracket -= 1,
            _ if depth_brace > 0 || depth_bracket > 0 => {}
            _ => cleaned.push(c),
        }
        if matches!(c, '{' | '}' | '[' | ']' | '"') {
            cleaned.push(' ');
        }
    }
    // Grouping clauses: `by (a, b)`, `without (...)`, `on (...)`.
    let mut out = BTreeSet::new();
    let tokens: Vec<(usize, &str)> = cleaned
        .match_indices(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .scan(0, |start, (i, sep)| {
            let tok = (*start, &cleaned[*start..i]);
            *start = i + sep.len();
            Some(tok)
        })
        .filter(|(_, t)| !t.is_empty())
        .collect();
    let mut skip_group = false;
    for (i, (at, tok)) in tokens.iter().enumerate() {
        let next = cleaned[at + tok.len()..].trim_start().chars().next();
        if skip_group {
            if cleaned[at + tok.len()..].trim_start().starts_with(')') {
                skip_group = false;
            }
            continue;
        }
        if matches!(
            *tok,
            "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
        ) {
            skip_group = true;
            continue;
        }
        let keyword = matches!(
            *tok,
            "or" | "and" | "unless" | "bool" | "offset"
                // Aggregations, which may be followed by a grouping clause.
                | "sum" | "min" | "max" | "avg" | "count" | "group" | "stddev" | "stdvar"
                | "topk" | "bottomk" | "quantile" | "count_values"
        );
        let number = tok.chars().next().is_some_and(|c| c.is_ascii_digit());
        if next == Some('(') || keyword || number {
            continue;
        }
        let _ = i;
        out.insert(tok.to_string());
    }
    out
}

#[test]
fn promql_names_are_read_as_a_person_would() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (route, le) (rate(http_request_duration_seconds_bucket{route=~"imptr|px"}[1m]))) / (journal_max_bytes > 0) or count(count by (sha256) (config_info == 1)) > 1"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        [
            "config_info",
            "http_request_duration_seconds_bucket",
            "journal_max_bytes"
        ]
    );
}

#[test]
fn every_panel_and_alert_reads_series_pixeld_exports_under_a_real_load() {
    let broker = Broker::start();
    let (port, admin) = (free_tcp_port(), free_tcp_port());
    let dir = common::fresh_dir();
    let path = dir.join("pixeld.toml");
    std::fs::write(
        &path,
        config_text(&[
            ("listen", q(format!("127.0.0.1:{port}"))),
            ("admin_listen", q(format!("127.0.0.1:{admin}"))),
            ("brokers", q(&broker.addr)),
            ("data_dir", q(dir.join("data").display().to_string())),
            ("partitions", "1".into()),
            ("linger_ms", "1".into()),
        ]),
    )
    .unwrap();
    let mut px = Process::start(&path, port, &dir.join("pixeld.log"));
    assert!(px.wait_ready(200, Duration::from_secs(30)));
    let prometheus = Prometheus::start(admin);
    // A short real load: every pixel type, a crawler, a refusal, a
    // conversion that gets a record, a reload.
    let ua = format!("User-Agent: {BROWSER_UA}");
    let cookie = format!(
        "Cookie: {}",
        common::uid_cookie("0123456789abcdef0123456789abcdef")
    );
    let until = Instant::now() + Duration::from_secs(6);
    let mut n = 0;
    while Instant::now() < until {
        for target in [
            "/imptr?id=2766&cachebuster=1",
            "/clktr?id=21378",
            "/px?id=7313&value=1.5",
            "/seg?add=12192",
        ] {
            raw_get_with(port, target, &[&ua, &cookie]);
        }
        raw_get_with(port, "/imptr?id=2766", &["User-Agent: Googlebot/2.1"]);
        raw_get_with(port, "/nope", &[]);
        n += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(n > 10);
    let reload = raw_reload(admin);
    assert!(reload.starts_with("HTTP/1.1 200"), "{reload}");
    // Long enough for every rate() to have two samples after the reload,
    // and librdkafka's 10 s statistics to arrive.
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(
        prometheus.query("up{job=\"pixeld\"}")[0]["value"][1],
        "1",
        "Prometheus scrapes pixeld's admin listener"
    );

    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(deploy("grafana/pixeld.json")).unwrap())
            .unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 15);
    let mut missing = Vec::new();
    for panel in panels {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            if prometheus.query(expr).is_empty() {
                missing.push(format!("panel {:?}: {expr}", panel["title"]));
            }
        }
    }
    let rules = std::fs::read_to_string(deploy("prometheus/alerts.yml")).unwrap();
    let exprs: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr: "))
        .collect();
    assert_eq!(exprs.len(), 7);
    for expr in exprs {
        // The alert itself is (rightly) not firing: it must parse, and
        // every metric it names must have series.
        prometheus.query(expr);
        for name in metric_names(expr) {
            if prometheus
                .query(&format!("count({{__name__=\"{name}\"}})"))
                .is_empty()
            {
                missing.push(format!("alert {expr}: no series of {name}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "queries without series:\n{}",
        missing.join("\n")
    );
    assert_eq!(px.stop(), 0);
}

#[test]
fn the_systemd_unit_verifies_and_sends_sighup_on_reload() {
    let unit = std::fs::read_to_string(deploy("systemd/pixeld.service")).unwrap();
    for line in [
        "ExecReload=/bin/kill -HUP $MAINPID",
        "DynamicUser=yes",
        "StateDirectory=pixeld",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "LimitNOFILE=65536",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} missing");
    }
    // verify checks that ExecStart's binary exists: point it at this build.
    let dir = common::fresh_dir();
    let copy = dir.join("pixeld.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/pixeld", env!("CARGO_BIN_EXE_pixeld")),
    )
    .unwrap();
    run(Command::new("systemd-analyze")
        .arg("verify")
        .arg("--man=no")
        .arg(&copy));
}

#[test]
fn the_kubernetes_example_probes_and_mounts_what_the_config_serves() {
    // The Secret's file, where the pod would have it mounted.
    let secret = common::fresh_dir().join("cookie-secret");
    std::fs::write(&secret, "000102030405060708090a0b0c0d0e0f\n").unwrap();
    let text = std::fs::read_to_string(deploy("kubernetes/pixeld-config.toml")).unwrap();
    assert!(text.contains("secret_file = \"/etc/pixeld/secrets/cookie-secret\""));
    let cfg = pixeld::config::parse(
        &text.replace(
            "/etc/pixeld/secrets/cookie-secret",
            &secret.display().to_string(),
        ),
        "pixeld-config.toml",
    )
    .expect("the example's config is valid");
    let docs = kubernetes_docs();
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"] == k)
            .unwrap_or_else(|| panic!("no {k}"))
    };
    let sts = kind("StatefulSet");
    kind("PodDisruptionBudget");
    kind("Service");
    let container = &sts["spec"]["template"]["spec"]["containers"][0];
    let port_named = |name: &str| -> u64 {
        container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no port {name}"))["containerPort"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(port_named("http"), cfg.server.listen.port() as u64);
    assert_eq!(port_named("admin"), cfg.server.admin_listen.port() as u64);
    assert!(
        cfg.server.admin_listen.ip().is_unspecified(),
        "reachable by the kubelet"
    );
    let readiness = &container["readinessProbe"]["httpGet"];
    assert_eq!(readiness["path"], "/readyz");
    assert_eq!(readiness["port"], "admin");
    let liveness = &container["livenessProbe"]["httpGet"];
    assert_eq!(liveness["path"], "/healthz");
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "data")
        .expect("the data volume is mounted");
    assert_eq!(
        mount["mountPath"],
        cfg.server.data_dir.display().to_string()
    );
    assert!(sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data");
    let pre_stop = container["lifecycle"]["preStop"]["exec"]["command"].to_string();
    assert!(pre_stop.contains("sleep"), "{pre_stop}");
    let grace = sts["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(
        grace * 1000
            > cfg.server.drain_ms + cfg.server.shutdown_timeout_ms + cfg.kafka.flush_timeout_ms,
        "Kubernetes must not kill pixeld before drain, shutdown and flush are done"
    );
}

/// The documents of `deploy/kubernetes/pixeld.yaml`, as JSON.
fn kubernetes_docs() -> Vec<Value> {
    let text = std::fs::read_to_string(deploy("kubernetes/pixeld.yaml")).unwrap();
    text.split("\n---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| {
            serde_json::to_value(serde_yaml_ng::from_str::<serde_yaml_ng::Value>(d).unwrap())
                .unwrap()
        })
        .collect()
}

#[test]
fn the_kubernetes_admin_port_is_reached_from_the_monitoring_namespace_only() {
    let docs = kubernetes_docs();
    let policy = docs
        .iter()
        .find(|d| d["kind"] == "NetworkPolicy")
        .expect("a NetworkPolicy");
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"]["app"],
        "pixeld"
    );
    let rules = policy["spec"]["ingress"].as_array().unwrap();
    let admin_rules: Vec<_> = rules
        .iter()
        .filter(|r| {
            r["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["port"] == "admin")
        })
        .collect();
    assert_eq!(admin_rules.len(), 1, "{rules:?}");
    let from = admin_rules[0]["from"].as_array().expect("a from list");
    assert_eq!(from.len(), 1, "{from:?}");
    assert_eq!(
        from[0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "monitoring"
    );
    assert!(
        rules.iter().all(|r| r["from"].is_array()
            || r["ports"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["port"] != "admin")),
        "no rule opens the admin port to everyone: {rules:?}"
    );
    // `admin` is the container's 9090, the pixel port stays open to all.
    let (_, container) = kubernetes_pod();
    let ports = container["ports"].as_array().unwrap();
    let admin = ports.iter().find(|p| p["name"] == "admin").unwrap();
    assert_eq!(admin["containerPort"], 9090);
    let http_rule = rules
        .iter()
        .find(|r| {
            r["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["port"] == "http")
        })
        .expect("a rule for the pixel port");
    assert!(http_rule["from"].is_null(), "{http_rule}");
}

/// The pod template's spec and its pixeld container.
fn kubernetes_pod() -> (Value, Value) {
    let docs = kubernetes_docs();
    let sts = docs
        .iter()
        .find(|d| d["kind"] == "StatefulSet")
        .expect("a StatefulSet");
    let pod = sts["spec"]["template"]["spec"].clone();
    let container = pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "pixeld")
        .expect("the pixeld container")
        .clone();
    (pod, container)
}

#[test]
fn the_kubernetes_pod_has_no_token_a_seccomp_profile_and_a_pinned_image() {
    let (pod, container) = kubernetes_pod();
    assert_eq!(
        pod["automountServiceAccountToken"], false,
        "pixeld never talks to the API server: no token in the pod"
    );
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
        "{}",
        pod["securityContext"]
    );
    // No container may opt out of the pod's profile.
    for c in pod["containers"].as_array().unwrap() {
        let own = &c["securityContext"]["seccompProfile"]["type"];
        assert!(own.is_null() || own == "RuntimeDefault", "{c}");
        assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    }
    let image = container["image"].as_str().unwrap();
    let (_, tag) = image
        .rsplit_once(':')
        .filter(|(name, _)| !name.is_empty())
        .unwrap_or_else(|| panic!("{image}: no tag"));
    assert_ne!(tag, "latest", "{image}");
    assert_eq!(
        tag,
        env!("CARGO_PKG_VERSION"),
        "{image}: pinned to this release"
    );
    assert_ne!(container["imagePullPolicy"], "Always", "{image}");
}

#[test]
fn the_kubernetes_config_is_a_directory_mount_that_configmap_updates_reach() {
    let (pod, container) = kubernetes_pod();
    let mounts = container["volumeMounts"].as_array().unwrap();
    for m in mounts {
        assert!(
            m["subPath"].is_null() && m["subPathExpr"].is_null(),
            "a subPath mount never sees an update: {m}"
        );
    }
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["configMap"]["name"] == "pixeld-config")
        .expect("the ConfigMap pixeld-config as a volume");
    let mount = mounts
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("the config volume is mounted");
    let dir = mount["mountPath"].as_str().unwrap();
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let at = args
        .iter()
        .position(|a| *a == "--config")
        .expect("--config");
    // The ConfigMap's key (`--from-file=pixeld.toml=...`, the comment says
    // so) inside the mounted directory.
    assert_eq!(
        args[at + 1],
        format!("{}/pixeld.toml", dir.trim_end_matches('/'))
    );
    let yaml = std::fs::read_to_string(deploy("kubernetes/pixeld.yaml")).unwrap();
    assert!(yaml.contains("--from-file=pixeld.toml=deploy/kubernetes/pixeld-config.toml"));
    // No other mount hides the config's directory or is inside it.
    for m in mounts.iter().filter(|m| m["name"] != volume["name"]) {
        let other = m["mountPath"].as_str().unwrap();
        assert!(
            !other.starts_with(dir) && !dir.starts_with(&format!("{other}/")),
            "{other} and {dir}"
        );
    }
    // And the config reloads what reaches it.
    let text = std::fs::read_to_string(deploy("kubernetes/pixeld-config.toml")).unwrap();
    let table: toml::Table = text.parse().unwrap();
    assert_eq!(table["server"]["watch_config"].as_bool(), Some(true));
}

/// A config directory as the kubelet keeps a ConfigMap volume: the file is a
/// symlink through `..data`, and an update swaps `..data` atomically. With
/// `watch_config` pixeld follows the swap, which a subPath mount (a bind
/// mount of the old file) never shows it.
#[test]
fn a_kubelet_style_configmap_swap_is_reloaded_by_watch_config() {
    use sha2::Digest;
    use std::os::unix::fs::symlink;
    let broker = Broker::start();
    let (port, admin) = (free_tcp_port(), free_tcp_port());
    let dir = common::fresh_dir();
    let volume = dir.join("config");
    std::fs::create_dir_all(volume.join("..2026_01_01_00_00_00.1")).unwrap();
    let text = |rate: u32| {
        config_text(&[
            ("listen", q(format!("127.0.0.1:{port}"))),
            ("admin_listen", q(format!("127.0.0.1:{admin}"))),
            ("brokers", q(&broker.addr)),
            ("data_dir", q(dir.join("data").display().to_string())),
            ("watch_config", "true".into()),
            ("rate_limit_per_ip", rate.to_string()),
        ])
    };
    std::fs::write(volume.join("..2026_01_01_00_00_00.1/pixeld.toml"), text(0)).unwrap();
    symlink("..2026_01_01_00_00_00.1", volume.join("..data")).unwrap();
    symlink("..data/pixeld.toml", volume.join("pixeld.toml")).unwrap();
    let mut px = Process::start(&volume.join("pixeld.toml"), port, &dir.join("pixeld.log"));
    // The update, as the kubelet writes it: a new timestamped directory, a
    // new `..data` link renamed over the old one, the old directory removed.
    let new = text(1000);
    std::fs::create_dir_all(volume.join("..2026_01_01_00_01_00.2")).unwrap();
    std::fs::write(volume.join("..2026_01_01_00_01_00.2/pixeld.toml"), &new).unwrap();
    symlink("..2026_01_01_00_01_00.2", volume.join("..data_tmp")).unwrap();
    std::fs::rename(volume.join("..data_tmp"), volume.join("..data")).unwrap();
    std::fs::remove_dir_all(volume.join("..2026_01_01_00_00_00.1")).unwrap();
    let sha: String = sha2::Sha256::digest(new.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let series = format!("config_info{{sha256=\"{sha}\"}} 1");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let metrics = raw_get(admin, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default();
        if metrics.contains(&series) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the swapped config was not reloaded:\n{}",
            std::fs::read_to_string(dir.join("pixeld.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(px.stop(), 0);
}

/// The `KEY=VALUE` pairs of the Dockerfile's `ENV` instructions.
fn dockerfile_env() -> Vec<(String, String)> {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile")).unwrap();
    let joined = text.replace("\\\n", " ");
    joined
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ENV "))
        .flat_map(|l| {
            l.split_whitespace()
                .map(|kv| {
                    let (k, v) = kv
                        .split_once('=')
                        .unwrap_or_else(|| panic!("ENV {l}: use KEY=VALUE"));
                    (k.to_string(), v.trim_matches('"').to_string())
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn dockerfile_instruction(name: &str) -> Vec<String> {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile")).unwrap();
    text.replace("\\\n", " ")
        .lines()
        .filter_map(|l| l.trim().strip_prefix(&format!("{name} ")).map(String::from))
        .collect()
}

#[test]
fn the_container_keeps_the_admin_listener_on_loopback_unless_configured() {
    let env = dockerfile_env();
    assert!(
        env.iter().any(|(k, _)| k == "PIXELD_SERVER__DATA_DIR"),
        "ENV parsed: {env:?}"
    );
    assert!(
        !env.iter().any(|(k, _)| k == "PIXELD_SERVER__ADMIN_LISTEN"),
        "the image must not choose the admin address: a mounted config's \
         admin_listen would be overridden: {env:?}"
    );
    // The baked config under the image's environment: what `docker run`
    // without options serves.
    let baked =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pixeld.toml"))
            .unwrap();
    let cfg = pixeld::config::parse_with_env(&baked, "config/pixeld.toml", env.clone())
        .expect("the baked config is valid under the image's environment");
    assert!(
        cfg.server.admin_listen.ip().is_loopback(),
        "{}",
        cfg.server.admin_listen
    );
    assert_eq!(cfg.server.admin_listen.port(), 9090);
    assert!(cfg.server.listen.ip().is_unspecified(), "pixels are public");
    // Nor is the admin port advertised; the health check reaches it.
    let exposed = dockerfile_instruction("EXPOSE").join(" ");
    assert!(
        exposed
            .split_whitespace()
            .all(|p| p != "9090" && p != "9090/tcp"),
        "EXPOSE {exposed}"
    );
    assert!(
        exposed.split_whitespace().any(|p| p == "8080"),
        "EXPOSE {exposed}"
    );
    let health = dockerfile_instruction("HEALTHCHECK").join(" ");
    assert!(
        health.contains(&format!("http://{}/healthz", cfg.server.admin_listen)),
        "{health}"
    );
    // The Kubernetes example opts in through its own config, behind its
    // NetworkPolicy: with the image's environment and the container's, the
    // admin listener is on every interface of the pod there.
    let (_, container) = kubernetes_pod();
    let mut vars = env;
    for e in container["env"].as_array().into_iter().flatten() {
        vars.push((
            e["name"].as_str().unwrap().to_string(),
            e["value"].as_str().unwrap_or_default().to_string(),
        ));
    }
    let secret = common::fresh_dir().join("cookie-secret");
    std::fs::write(&secret, "000102030405060708090a0b0c0d0e0f\n").unwrap();
    let text = std::fs::read_to_string(deploy("kubernetes/pixeld-config.toml"))
        .unwrap()
        .replace(
            "/etc/pixeld/secrets/cookie-secret",
            &secret.display().to_string(),
        );
    let cfg = pixeld::config::parse_with_env(&text, "pixeld-config.toml", vars).unwrap();
    assert!(cfg.server.admin_listen.ip().is_unspecified());
    assert!(kubernetes_docs()
        .iter()
        .any(|d| d["kind"] == "NetworkPolicy"));
}

#[test]
fn the_systemd_unit_hands_secret_files_over_as_credentials() {
    let unit = std::fs::read_to_string(deploy("systemd/pixeld.service")).unwrap();
    // Advice that cannot work with DynamicUser=yes: no fixed group to own
    // a secret file.
    for bad in ["0640", "group pixeld", "Group=pixeld"] {
        assert!(!unit.contains(bad), "{bad:?} in the unit");
    }
    let directives: Vec<(&str, &str)> = unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with(';'))
        .filter_map(|l| l.split_once('='))
        .collect();
    assert!(directives.contains(&("DynamicUser", "yes")));
    for (k, _) in &directives {
        assert!(
            !matches!(*k, "User" | "Group" | "SupplementaryGroups"),
            "{k}= fights DynamicUser=yes"
        );
    }
    let credentials: Vec<(&str, &str)> = directives
        .iter()
        .filter(|(k, _)| *k == "LoadCredential")
        .map(|(_, v)| v.split_once(':').expect("LoadCredential=NAME:PATH"))
        .collect();
    assert!(
        credentials.contains(&("cookie-secret", "/etc/pixeld/cookie.secret")),
        "{credentials:?}"
    );
    for (_, path) in &credentials {
        assert!(
            path.starts_with("/etc/pixeld/"),
            "{path}: beside the config"
        );
    }
    // The credentials directory as systemd makes it, and the unit's
    // environment with `%d` expanded to it, over the config the unit runs.
    let creds = common::fresh_dir().join("credentials");
    std::fs::create_dir_all(&creds).unwrap();
    let hex = "00112233445566778899aabbccddeeff";
    for (name, _) in &credentials {
        std::fs::write(creds.join(name), format!("{hex}\n")).unwrap();
    }
    let mut vars = Vec::new();
    for (_, v) in directives.iter().filter(|(k, _)| *k == "Environment") {
        for assignment in v.split_whitespace() {
            let (k, v) = assignment.split_once('=').unwrap();
            if let Some(name) = v.strip_prefix("%d/") {
                assert!(
                    credentials.iter().any(|(n, _)| *n == name),
                    "{k} names the credential {name}, which no LoadCredential= loads"
                );
            }
            vars.push((k.to_string(), v.replace("%d", &creds.display().to_string())));
        }
    }
    assert!(
        vars.iter()
            .any(|(k, v)| k == "PIXELD_COOKIE__SECRET_FILE" && v.ends_with("/cookie-secret")),
        "{vars:?}"
    );
    // The ExecStart's config, as installed (the shipped example).
    assert!(unit.contains("ExecStart=/usr/local/bin/pixeld serve --config /etc/pixeld/pixeld.toml"));
    let baked =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pixeld.toml"))
            .unwrap();
    let cfg = pixeld::config::parse_with_env(&baked, "pixeld.toml", vars)
        .expect("the config reads the credential");
    assert_eq!(
        cfg.cookie.secret,
        Some(pixeld::config::Secret::parse(hex).unwrap()),
        "the cookie secret is the credential's"
    );
    // A path the comments give for a config file: systemd's fixed one.
    assert!(unit.contains("/run/credentials/pixeld.service/cookie-secret"));
}
