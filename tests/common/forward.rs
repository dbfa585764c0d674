//! `pixeld forward` as a real process.

use std::path::Path;

use super::config::fresh_dir;
use super::process::Background;

pub struct Forward(pub Background);

impl Forward {
    /// Starts `pixeld forward` and waits until its `/readyz` says ready
    /// (it is in the group).
    pub fn start(config: &Path, status_port: u16) -> Forward {
        let log = fresh_dir().join("forward.log");
        let f = Forward(Background::spawn("forward", config, status_port, &log, &[]));
        f.wait_ready();
        f
    }
}

impl std::ops::Deref for Forward {
    type Target = Background;
    fn deref(&self) -> &Background {
        &self.0
    }
}

impl std::ops::DerefMut for Forward {
    fn deref_mut(&mut self) -> &mut Background {
        &mut self.0
    }
}
