//! A real tansu broker per test, on a free port.

use std::net::{TcpListener as StdListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::process::signal;

/// A tansu broker on its own free port; killed on drop.
pub struct Broker {
    /// The broker process.
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Broker {
    /// Starts tansu with in-memory storage. The test command installs it;
    /// a missing binary is a failure, never a skip.
    pub fn start() -> Broker {
        Self::spawn(
            "memory://tansu/",
            std::env::temp_dir().as_path(),
            free_port(),
        )
    }

    /// A broker on tansu's sqlite engine in a fresh directory. The cluster
    /// tests use it: tansu 0.6.0's memory engine can skip the rest of a
    /// record batch when a fetch starts inside it, or return a later batch
    /// before an earlier one is written (see
    /// `pixeld::attribution::cluster::broker_quirks`), which loses messages
    /// for every reader, the tests' own included; the sqlite engine stores
    /// records one by one and has neither problem.
    pub fn start_sqlite() -> Broker {
        Self::start_persistent(&super::config::fresh_dir(), 0)
    }

    /// A broker that keeps its data in sqlite under `dir` (it survives a
    /// restart), on `port` (0: a free one).
    pub fn start_persistent(dir: &std::path::Path, port: u16) -> Broker {
        let port = if port == 0 { free_port() } else { port };
        Self::spawn("sqlite://tansu.db", dir, port)
    }

    fn spawn(storage: &str, cwd: &std::path::Path, port: u16) -> Broker {
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new("nice")
            .args([
                "-n",
                "19",
                "tansu",
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", storage])
            .current_dir(cwd)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu must be on PATH: run the README's test command, which installs it");
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not start listening on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        if storage.starts_with("sqlite://") {
            index_headers(&cwd.join("tansu.db"));
        }
        Broker { child, addr }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Broker {
    pub fn port(&self) -> u16 {
        self.addr.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// SIGSTOP: the broker hangs with its connections open.
    pub fn freeze(&self) {
        signal(self.child.id(), "STOP");
    }

    /// SIGCONT.
    pub fn thaw(&self) {
        signal(self.child.id(), "CONT");
    }
}

/// `scripts/tansu-index.sh` (the one place that says why): without it each
/// record a test reads scans every header row tansu's sqlite engine holds.
fn index_headers(db: &std::path::Path) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/tansu-index.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg(db)
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "scripts/tansu-index.sh {}: {}",
        db.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}
