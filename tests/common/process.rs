//! `pixeld serve` as a real process, signals, raw HTTP, metrics.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// `pixeld serve` as a real process.
pub struct Process {
    pub child: Child,
    pub port: u16,
    /// The admin listener's port (`server.admin_listen`), 0 when the config
    /// lets the system choose.
    pub admin: u16,
    pub config: std::path::PathBuf,
}

/// The binary under test: cargo's, or `PIXELD_TEST_BIN` (test loops run
/// copies of the test binaries beside a build that replaces cargo's).
pub fn pixeld_bin() -> std::path::PathBuf {
    std::env::var_os("PIXELD_TEST_BIN")
        .map_or_else(|| env!("CARGO_BIN_EXE_pixeld").into(), Into::into)
}

impl Process {
    /// Starts the binary on `config` and waits for `/healthz`.
    pub fn start(config: &std::path::Path, port: u16, log: &std::path::Path) -> Process {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(pixeld_bin())
            .args(["serve", "--config"])
            .arg(config)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let text = std::fs::read_to_string(config).unwrap_or_default();
        let admin = text
            .lines()
            .find_map(|l| l.strip_prefix("admin_listen = \"127.0.0.1:"))
            .and_then(|rest| rest.split('"').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let p = Process {
            child,
            port,
            admin,
            config: config.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while raw_get(port, "/healthz").is_none_or(|(s, _)| s != 200) {
            assert!(Instant::now() < deadline, "pixeld did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }

    pub fn kill9(&mut self) {
        signal(self.child.id(), "KILL");
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> i32 {
        signal(self.child.id(), "TERM");
        self.child.wait().unwrap().code().unwrap_or(-1)
    }

    /// Waits until `/readyz` answers `status`.
    pub fn wait_ready(&self, status: u16, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if raw_get(self.port, "/readyz").is_some_and(|(s, _)| s == status) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `head` (a whole request, as bytes) on a fresh connection to
/// 127.0.0.1:`port` and reads the whole answer (bodies such as the GIF read
/// lossily); None if the connection failed.
pub fn raw_exchange(port: u16, head: &[u8]) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(head).ok()?;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// A GET of `target` with extra `Name: value` header lines, closing the
/// connection after it: the raw answer (empty if the connection failed).
pub fn raw_get_with(port: u16, target: &str, headers: &[&str]) -> String {
    // The listener's own address as `Host`: the admin listener refuses others.
    let mut head =
        format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    raw_exchange(port, head.as_bytes()).unwrap_or_default()
}

/// `POST /-/reload` on the admin listener at `port`, as an operator's
/// script sends it: the raw answer (empty if the connection failed).
pub fn raw_reload(port: u16) -> String {
    let head = format!(
        "POST /-/reload HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    raw_exchange(port, head.as_bytes()).unwrap_or_default()
}

/// The status code of a raw answer (0 when there is none).
pub fn status_of(resp: &str) -> u16 {
    resp.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// A header of a raw answer, by case-insensitive name.
pub fn header_of<'a>(resp: &'a str, name: &str) -> Option<&'a str> {
    let head = resp.split("\r\n\r\n").next()?;
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// One GET over a fresh connection: (status, body), None if it failed.
pub fn raw_get(port: u16, path: &str) -> Option<(u16, String)> {
    let head =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    let out = raw_exchange(port, head.as_bytes())?;
    let status = out.get(9..12)?.parse().ok()?;
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

pub fn free_tcp_port() -> u16 {
    super::broker::free_port()
}

/// The sum of a metric's samples (every label set whose line starts with
/// `name`) in a Prometheus text body.
pub fn metric_sum(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// p-th percentile (0..=100) of latencies, in ms.
pub fn percentile_ms(lat: &mut [Duration], p: f64) -> f64 {
    if lat.is_empty() {
        return 0.0;
    }
    lat.sort();
    let i = ((lat.len() - 1) as f64 * p / 100.0).round() as usize;
    lat[i].as_secs_f64() * 1000.0
}

/// A background service (`pixeld attribute`, `pixeld forward`) as a real
/// process: its log file and its status listener (`/readyz`, `/metrics`).
pub struct Background {
    pub child: Child,
    pub status_port: u16,
    pub log: std::path::PathBuf,
}

impl Background {
    /// Starts `pixeld SUBCOMMAND --config CONFIG` with its stderr in `log`.
    pub fn spawn(
        subcommand: &str,
        config: &std::path::Path,
        status_port: u16,
        log: &std::path::Path,
        env: &[(&str, &str)],
    ) -> Background {
        let file = std::fs::File::create(log).unwrap();
        let child = std::process::Command::new(pixeld_bin())
            .args([subcommand, "--config"])
            .arg(config)
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        Background {
            child,
            status_port,
            log: log.to_path_buf(),
        }
    }

    /// Waits until `/readyz` says ready; fails with the log after 60 s.
    pub fn wait_ready(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while raw_get(self.status_port, "/readyz").is_none_or(|(s, _)| s != 200) {
            assert!(
                std::time::Instant::now() < deadline,
                "{} did not become ready; log:\n{}",
                self.log.display(),
                self.log_text()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    pub fn kill9(&mut self) {
        signal(self.child.id(), "KILL");
        let _ = self.child.wait();
    }

    /// SIGTERM, and the exit code once it has left (it commits and leaves
    /// its group first).
    pub fn terminate(&mut self) -> Option<i32> {
        signal(self.child.id(), "TERM");
        self.child.wait().ok().and_then(|s| s.code())
    }

    pub fn metrics(&self) -> String {
        raw_get(self.status_port, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
