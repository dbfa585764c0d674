//! `pixeld forward` as a real process.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::config::fresh_dir;
use super::process::raw_get;

pub struct Forward {
    pub child: std::process::Child,
    pub status_port: u16,
    pub log: PathBuf,
}

impl Forward {
    /// Starts `pixeld forward` and waits until its `/readyz` says ready
    /// (it is in the group).
    pub fn start(config: &Path, status_port: u16) -> Forward {
        let log = fresh_dir().join("forward.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_pixeld"))
            .args(["forward", "--config"])
            .arg(config)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        let f = Forward {
            child,
            status_port,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while raw_get(status_port, "/readyz").is_none_or(|(s, _)| s != 200) {
            assert!(
                Instant::now() < deadline,
                "pixeld forward did not become ready; log:\n{}",
                f.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        f
    }

    pub fn kill9(&mut self) {
        super::process::signal(self.child.id(), "KILL");
        let _ = self.child.wait();
    }

    /// SIGTERM and the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        super::process::signal(self.child.id(), "TERM");
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

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
