//! Metrics and logs: the Prometheus recorder behind `/metrics`, log set-up,
//! and a rate limiter that keeps a failing broker from flooding the log.

pub mod local;
pub mod metric;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// The git commit this binary was built from (`build.rs`; `unknown`
/// outside a git checkout).
pub const COMMIT: &str = env!("PIXELD_COMMIT");

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        // Histograms with buckets (not summaries), so a dashboard can take
        // quantiles across instances.
        let builder = metric::HISTOGRAMS
            .iter()
            .fold(PrometheusBuilder::new(), |b, name| {
                b.set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(name.to_string()),
                    metric::BUCKETS,
                )
                // Only an empty bucket list is refused, and BUCKETS is not empty.
                .unwrap_or_else(|_| PrometheusBuilder::new())
            });
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may be installed already (a test harness); then
        // this handle renders an empty registry rather than failing start-up.
        let _ = metrics::set_global_recorder(recorder);
        metric::describe();
        handle
    })
}

/// The text `/metrics` answers: the registry, with the request path's
/// per-thread figures summed into it.
pub fn render() -> String {
    let histograms = local::flush();
    let mut text = prometheus().render();
    text.push_str(&histograms);
    text
}

/// How log lines look.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people: time, level, target, message, `key=value` fields.
    Text,
    /// For log collectors: one JSON object per line with stable field
    /// names (`timestamp`, `level`, `target`, `fields.message`, and each
    /// event's own fields under `fields`).
    Json,
}

/// Logs to stderr; `RUST_LOG` overrides the default `info` level.
pub fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(false).try_init(),
    };
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Lets one message through per interval and counts the ones it held back.
pub struct RateLimit {
    /// Minimum time between two messages.
    interval_ms: u64,
    /// When the last message went through.
    last_ms: AtomicU64,
    /// Messages held back since then.
    suppressed: AtomicU64,
}

impl RateLimit {
    pub const fn new(interval_ms: u64) -> Self {
        RateLimit {
            interval_ms,
            last_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a message may be logged now, `n` being how many were
    /// held back before it.
    pub fn check(&self) -> Option<u64> {
        let now = now_ms();
        let last = self.last_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= self.interval_ms
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// Forwards a librdkafka log line: warnings and worse at most once per
/// `limit` interval (a down broker otherwise logs every reconnect), the rest
/// at debug level.
pub fn librdkafka_log(
    limit: &RateLimit,
    level: rdkafka::config::RDKafkaLogLevel,
    fac: &str,
    message: &str,
) {
    use rdkafka::config::RDKafkaLogLevel::*;
    match level {
        Emerg | Alert | Critical | Error | Warning => {
            if let Some(held) = limit.check() {
                tracing::warn!(target: "librdkafka", suppressed = held, "{fac}: {message}");
            }
        }
        Notice | Info | Debug => tracing::debug!(target: "librdkafka", "{fac}: {message}"),
    }
}

/// Counts a librdkafka client error and logs it at most once per `limit`
/// interval; shared by every producer's context.
pub fn kafka_client_error(limit: &RateLimit, error: &rdkafka::error::KafkaError, reason: &str) {
    metric::kafka_client_error();
    if let Some(held) = limit.check() {
        tracing::warn!(%error, reason, suppressed = held, "kafka client error");
    }
}

#[cfg(test)]
mod tests {
    use super::RateLimit;

    #[test]
    fn rate_limit_lets_the_first_through_and_counts_the_rest() {
        let r = RateLimit::new(60_000);
        assert_eq!(r.check(), Some(0));
        assert_eq!(r.check(), None);
        assert_eq!(r.check(), None);
    }
}
