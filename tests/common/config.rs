//! Test configs: the repository's example, pointed at a test broker, with a
//! known cookie secret and a data directory removed when the test process
//! exits.

use std::path::PathBuf;
use std::sync::OnceLock;

use pixeld::config::{Config, Secret};

/// The repository's example config, pointed at `brokers`, one partition per
/// topic so consumed order is produced order.
pub fn example_config(brokers: &str) -> Config {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/pixeld.toml"))
        .unwrap();
    let mut cfg = pixeld::config::parse(&text, "config/pixeld.toml").unwrap();
    cfg.kafka.brokers = brokers.to_string();
    cfg.kafka.partitions = 1;
    cfg.kafka.linger_ms = 1;
    cfg.server.data_dir = fresh_dir();
    cfg.cookie.secret = Secret::parse(COOKIE_SECRET);
    cfg
}

/// An ordinary desktop browser's `User-Agent`: requests without one are
/// flagged as invalid traffic (`no_user_agent`) and never attributed.
pub const BROWSER_UA: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36";

/// The `cookie.secret` of every test config, so tests can sign ids.
pub const COOKIE_SECRET: &str = "7e57c00c1e5ec7e77e57c00c1e5ec7e7";

/// The `Cookie` header a browser holding `uid` (32 hex) sends to a test
/// server: the id signed as pixeld signs it.
pub fn uid_cookie(uid: &str) -> String {
    let cfg = pixeld::config::CookieConfig {
        secret: Secret::parse(COOKIE_SECRET),
        ..Default::default()
    };
    let secret = pixeld::http::cookie::Secret::generate();
    let uid = pixeld::ids::UserId::parse(uid).expect("32 lowercase hex");
    format!(
        "uid={}",
        pixeld::http::cookie::Cookies::new(&cfg, secret).value(uid)
    )
}

/// A new empty directory that outlives the test (for `data_dir`).
pub fn fresh_dir() -> PathBuf {
    tempfile::Builder::new()
        .prefix("pixeld-test-")
        .tempdir_in(tests_dir())
        .unwrap()
        .keep()
}

/// This test process's parent of every [`fresh_dir`]: removed when the
/// process exits, so runs leave nothing behind in the temporary directory.
fn tests_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("pixeld-tests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        extern "C" fn remove() {
            // PIXELD_KEEP_TEST_DIRS=1 keeps logs and data for a post-mortem.
            if std::env::var_os("PIXELD_KEEP_TEST_DIRS").is_some() {
                return;
            }
            let dir = std::env::temp_dir().join(format!("pixeld-tests-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(dir);
        }
        // SAFETY: registers a plain function with no captured state; it
        // runs once at normal process exit.
        unsafe { libc::atexit(remove) };
        dir
    })
}

/// The example config as text, with `key = value` lines replaced (the first
/// line starting with each key).
pub fn config_text(overrides: &[(&str, String)]) -> String {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/pixeld.toml"))
        .unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let at = lines.iter().position(|l| l == "[cookie]").unwrap();
    lines.insert(at + 1, format!("secret = \"{COOKIE_SECRET}\""));
    // Tests run many pixelds at once, and stop them at once: the admin
    // listener on a port of the system's choosing, no drain window
    // (the tests that need either set them).
    let defaults = [
        ("admin_listen", q("127.0.0.1:0")),
        ("drain_ms", "0".to_string()),
    ];
    let overrides: Vec<(&str, String)> = defaults
        .into_iter()
        .filter(|(k, _)| !overrides.iter().any(|(o, _)| o == k))
        .chain(overrides.iter().cloned())
        .collect();
    for (key, value) in &overrides {
        let line = lines
            .iter_mut()
            .find(|l| l.starts_with(&format!("{key} =")))
            .unwrap_or_else(|| panic!("no `{key} =` line in the example config"));
        *line = format!("{key} = {value}");
    }
    lines.join("\n")
}

/// A TOML string literal, for [`config_text`] overrides.
pub fn q(s: impl AsRef<str>) -> String {
    format!("\"{}\"", s.as_ref())
}

/// Percent-encodes everything but unreserved characters, as an ad server
/// encodes a URL passed in a macro.
pub fn encode_component(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
