//! Live reload: `SIGHUP`, `POST /-/reload` on the admin listener, or a
//! change of the file (`server.watch_config`) re-reads the config. A file
//! that does not validate changes nothing (every problem is logged); a valid
//! one swaps the catalog (trackers, pixels, line items, segments,
//! third-party pixels: the attribution engine reads its rules from it) and
//! the request path's [`Live`] settings (redirect allowlist, `[sync]`, IVT list, rate
//! limit, bounce, consent vendor, address policy) whole, so no request fails
//! or waits. Keys that only a restart can change (listeners, `data_dir`,
//! Kafka, the journal, the cookie) are named in the log and keep their
//! running values.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::config::{self, Catalog, Config};
use crate::http::{App, Live, Reload};
use crate::telemetry::{metric, now_ms, RateLimit};

/// Re-reads one config file into a running [`App`].
pub struct Reloader {
    /// The file `pixeld serve` was started with.
    path: PathBuf,
    /// The config start-up used: what restart-only keys are compared with.
    started: Config,
    /// Weak: the app holds this reloader.
    app: Weak<App>,
    /// SHA-256 of the file in force (hex); also serialises reloads.
    sha256: Mutex<String>,
    /// SHA-256 of the last file tried, valid or not: a watched file that
    /// stays invalid is not retried (nor logged) every second.
    tried: Mutex<String>,
}

impl Reloader {
    /// For `app`, started from `path` with `started`; records the file's
    /// hash as the one in force.
    pub fn install(app: &Arc<App>, path: &Path, started: &Config) -> Arc<Reloader> {
        let sha = file_sha256(path).unwrap_or_default();
        metric::config_in_force(&sha, None, now_ms() as f64 / 1000.0);
        let r = Arc::new(Reloader {
            path: path.to_path_buf(),
            started: started.clone(),
            app: Arc::downgrade(app),
            tried: Mutex::new(sha.clone()),
            sha256: Mutex::new(sha),
        });
        let _ = app.reloader.set(r.clone());
        r
    }
}

impl Reload for Reloader {
    fn reload(&self) -> Result<String, String> {
        let mut in_force = self.sha256.lock().unwrap_or_else(|e| e.into_inner());
        let Some(app) = self.app.upgrade() else {
            return Err("shutting down\n".into());
        };
        let sha = file_sha256(&self.path).unwrap_or_default();
        let tried = std::mem::replace(
            &mut *self.tried.lock().unwrap_or_else(|e| e.into_inner()),
            sha.clone(),
        );
        // A file not tried before is always logged; the same file again (a
        // reload flood, a script that reloads every minute) at most once per
        // interval, with the count of lines held back.
        let log = (tried != sha).then_some(0).or_else(|| RELOAD_LOG.check());
        let cfg = match config::load(&self.path) {
            Ok(cfg) => cfg,
            Err(e) => {
                metric::config_reload("invalid");
                for p in e.problems.iter().filter(|_| log.is_some()) {
                    warn!(key = %p.path, problem = %p.message, suppressed = log.unwrap_or(0), "config reload refused; the running config stays");
                }
                return Err(e.to_string());
            }
        };
        let catalog = match Catalog::new(&cfg) {
            Ok(c) => c,
            Err(p) => {
                metric::config_reload("invalid");
                let message = cfg.redactor.redact(&p.message);
                warn!(key = %p.path, problem = %message, "config reload refused; the running config stays");
                return Err(format!("{}: {message}\n", p.path));
            }
        };
        let running = app.live.load();
        let live = Live::new(&cfg, Some(&running));
        let widened = widened(&running, &live);
        if !widened.is_empty() {
            // Not refused (it may be what the operator meant), but never
            // silent: a typo that empties an allowlist opens redirects to
            // every host.
            warn!(keys = %widened.join(", "), "config reload widens what is allowed: check these keys are meant");
        }
        app.catalog.store(catalog);
        app.live.store(Arc::new(live));
        metric::config_in_force(&sha, Some(&in_force), now_ms() as f64 / 1000.0);
        *in_force = sha.clone();
        let restart = restart_needed(&self.started, &cfg);
        if restart.is_empty() {
            metric::config_reload("ok");
            if let Some(suppressed) = log {
                info!(sha256 = %sha, suppressed, "config reloaded");
            }
            Ok(format!("reloaded {sha}\n{}", widened_note(&widened)))
        } else {
            metric::config_reload("restart_needed");
            let keys = restart.join(", ");
            if let Some(suppressed) = log {
                warn!(sha256 = %sha, keys = %keys, suppressed, "config reloaded, except keys that need a restart: they keep their running values");
            }
            Ok(format!(
                "reloaded {sha}; these keys need a restart and keep their running values: {keys}\n{}",
                widened_note(&widened)
            ))
        }
    }

    fn reload_if_changed(&self) {
        let on_disk = file_sha256(&self.path).unwrap_or_default();
        let changed = *self.tried.lock().unwrap_or_else(|e| e.into_inner()) != on_disk;
        if changed {
            info!("the config file changed: reloading");
            let _ = self.reload();
        }
    }
}

/// The keys whose new value allows more than the running one: redirects
/// to more hosts (an emptied `redirect.allowed_hosts` allows any), ids sent
/// to more partners, consent no longer enforced.
fn widened(before: &Live, after: &Live) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let any_host = after.allow.is_empty() && !before.allow.is_empty();
    if any_host || (!before.allow.is_empty() && after.allow.adds_to(&before.allow)) {
        keys.push("redirect.allowed_hosts");
    }
    if after.sync_hosts.adds_to(&before.sync_hosts) {
        keys.push("sync.allowed_hosts");
    }
    if after
        .sync_origins
        .iter()
        .any(|o| !before.sync_origins.contains(o))
    {
        keys.push("sync.cors_origins");
    }
    if before.tcf_vendor.is_some() && after.tcf_vendor.is_none() {
        keys.push("privacy.tcf_vendor_id");
    }
    keys
}

/// What a reload from `running` to `new` would do, for `pixeld
/// check-config --against`: the keys that would keep their running value
/// until a restart, and the keys that would allow more than before.
pub fn compare(running: &Config, new: &Config) -> (Vec<&'static str>, Vec<&'static str>) {
    let widened = widened(&Live::new(running, None), &Live::new(new, None));
    (restart_needed(running, new), widened)
}

/// The line of a reload's answer that names the widened keys.
fn widened_note(keys: &[&str]) -> String {
    if keys.is_empty() {
        return String::new();
    }
    format!(
        "these keys now allow more than before: {}\n",
        keys.join(", ")
    )
}

/// Reload log lines for a file already tried: at most one per 10 s.
static RELOAD_LOG: RateLimit = RateLimit::new(10_000);

fn file_sha256(path: &Path) -> std::io::Result<String> {
    let bytes = std::fs::read(path)?;
    Ok(Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The keys whose new value differs from the running one but only takes
/// effect at start-up.
pub fn restart_needed(running: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    macro_rules! keys {
        ($($name:literal => $($field:ident).+),+ $(,)?) => {
            $(
                if format!("{:?}", running.$($field).+) != format!("{:?}", new.$($field).+) {
                    out.push($name);
                }
            )+
        };
    }
    keys!(
        "server.listen" => server.listen,
        "server.admin_listen" => server.admin_listen,
        "server.data_dir" => server.data_dir,
        "server.trusted_proxies" => server.trusted_proxies,
        "server.max_query_bytes" => server.max_query_bytes,
        "server.max_request_line_bytes" => server.max_request_line_bytes,
        "server.max_header_bytes" => server.max_header_bytes,
        "server.max_connections" => server.max_connections,
        "server.header_read_timeout_ms" => server.header_read_timeout_ms,
        "server.shutdown_timeout_ms" => server.shutdown_timeout_ms,
        "server.drain_ms" => server.drain_ms,
        "server.watch_config" => server.watch_config,
        "server.admin_hosts" => server.admin_hosts,
        "cookie.name" => cookie.name,
        "cookie.domain" => cookie.domain,
        "cookie.domains" => cookie.domains,
        "cookie.max_age_days" => cookie.max_age_days,
        "cookie.secure" => cookie.secure,
        "cookie.same_site" => cookie.same_site,
        "redirect.click_id_param" => redirect.click_id_param,
        "redirect.source_click_param" => redirect.source_click_param,
        "kafka.brokers" => kafka.brokers,
        "kafka.client_id" => kafka.client_id,
        "kafka.compression" => kafka.compression,
        "kafka.linger_ms" => kafka.linger_ms,
        "kafka.acks" => kafka.acks,
        "kafka.partitions" => kafka.partitions,
        "kafka.replication_factor" => kafka.replication_factor,
        "kafka.flush_timeout_ms" => kafka.flush_timeout_ms,
        "kafka.queue_max_messages" => kafka.queue_max_messages,
        "kafka.topics" => kafka.topics,
        "kafka.librdkafka" => kafka.librdkafka,
        "journal.durability" => journal.durability,
        "journal.max_bytes" => journal.max_bytes,
        "journal.segment_bytes" => journal.segment_bytes,
        "attribution.enabled" => attribution.enabled,
        "attribution.mode" => attribution.mode,
        "attribution.channel_capacity" => attribution.channel_capacity,
        "attribution.snapshot_interval_secs" => attribution.snapshot_interval_secs,
        "attribution.sweep_interval_secs" => attribution.sweep_interval_secs,
        "attribution.max_users" => attribution.max_users,
    );
    // Secrets print as `Secret(..)`: compared by value.
    if running.cookie.secret != new.cookie.secret {
        out.push("cookie.secret");
    }
    if running.cookie.previous_secrets != new.cookie.previous_secrets {
        out.push("cookie.previous_secrets");
    }
    if running.server.admin_token != new.server.admin_token {
        out.push("server.admin_token");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_allow_more_are_named_and_narrowing_is_not() {
        let text = "[redirect]\nallowed_hosts = [\"shop.example\"]\n\
            [privacy]\ntcf_vendor_id = 42\n\
            [sync]\nallowed_hosts = [\"partner.example\"]\n";
        let strict = crate::config::parse(text, "t").unwrap();
        let live = |cfg: &Config| Live::new(cfg, None);
        assert!(widened(&live(&strict), &live(&strict)).is_empty());
        let open = Config::default();
        assert_eq!(
            widened(&live(&strict), &live(&open)),
            ["redirect.allowed_hosts", "privacy.tcf_vendor_id"],
            "an emptied allowlist allows any host; an emptied sync list turns sync off"
        );
        assert_eq!(
            widened(&live(&open), &live(&strict)),
            ["sync.allowed_hosts"],
            "redirects and consent narrow; sync, off before, now sends ids"
        );
        let more = crate::config::parse(
            &text
                .replace(
                    "[\"partner.example\"]",
                    "[\"partner.example\", \"other.example\"]",
                )
                .replace("[\"shop.example\"]", "[\"shop.example\", \"*.example\"]"),
            "t",
        )
        .unwrap();
        assert_eq!(
            widened(&live(&strict), &live(&more)),
            ["redirect.allowed_hosts", "sync.allowed_hosts"]
        );
        let origins = crate::config::parse(
            &format!("{text}cors_origins = [\"https://partner.example\"]\n"),
            "t",
        )
        .unwrap();
        assert_eq!(
            widened(&live(&strict), &live(&origins)),
            ["sync.cors_origins"]
        );
        assert!(widened(&live(&origins), &live(&strict)).is_empty());
    }

    #[test]
    fn only_restart_keys_are_named() {
        let a = Config::default();
        let mut b = a.clone();
        b.server.rate_limit_per_ip = 10;
        b.cookie.bounce = true;
        b.privacy.ip = crate::config::IpPolicy::Truncate;
        assert!(restart_needed(&a, &b).is_empty(), "all live");
        b.kafka.brokers = "k1:9092".into();
        b.server.listen = "127.0.0.1:1".parse().unwrap();
        b.journal.durability = crate::config::Durability::Memory;
        b.cookie.secret = crate::config::Secret::parse("000102030405060708090a0b0c0d0e0f");
        assert_eq!(
            restart_needed(&a, &b),
            [
                "server.listen",
                "kafka.brokers",
                "journal.durability",
                "cookie.secret"
            ]
        );
    }
}
