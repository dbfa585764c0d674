//! `pixeld attribute`: one member of the attribution consumer group
//! ([`crate::attribution::cluster`]). Start-up checks what the config asks
//! for (brokers, co-partitioned topics, its listener) and refuses with the
//! key to fix; then the member consumes until SIGTERM or SIGINT, when it
//! finishes the batch in hand, commits and leaves the group. Its own small
//! listener answers `/readyz` (503 until it joined and while it restores)
//! and `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tracing::info;

use crate::attribution::cluster::{
    ClusterError, ClusterTopics, InputTopic, Member, PerInput, Settings, Status,
};
use crate::config::{Catalog, Config, Problem};
use crate::sink::kafka::{client_config, consumer_config};
use crate::sink::producer::Topics;
use crate::telemetry::prometheus;

/// Why `pixeld attribute` did not start (exit code 2) or stopped (1).
#[derive(Debug)]
pub enum AttributeError {
    /// A setting that cannot work, with its key and the fix.
    Config {
        key: &'static str,
        fix: String,
    },
    Catalog(Problem),
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// Joining or running the group.
    Cluster(ClusterError),
}

impl AttributeError {
    /// 2 for anything the operator must fix before starting again.
    pub fn exit_code(&self) -> u8 {
        match self {
            AttributeError::Cluster(e) => e.exit_code(),
            _ => 2,
        }
    }
}

impl std::fmt::Display for AttributeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttributeError::Config { key, fix } => write!(f, "{key}: {fix}"),
            AttributeError::Catalog(p) => write!(f, "{p}"),
            AttributeError::Listen { addr, source } => write!(
                f,
                "attribution.listen: cannot listen on {addr}: {source}; pick a free address"
            ),
            AttributeError::Cluster(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for AttributeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AttributeError::Listen { source, .. } => Some(source),
            AttributeError::Cluster(e) => Some(e),
            _ => None,
        }
    }
}

/// The member's settings from the shared config file.
pub fn settings(cfg: &Config) -> Result<Settings, AttributeError> {
    if cfg.kafka.brokers.trim().is_empty() {
        return Err(AttributeError::Config {
            key: "kafka.brokers",
            fix: "pixeld attribute reads the event topics from Kafka; set the brokers that `pixeld serve` publishes to (the embedded cluster lives inside one serve process and cannot be shared)".into(),
        });
    }
    if !cfg.attribution.enabled {
        return Err(AttributeError::Config {
            key: "attribution.enabled",
            fix: "is false: there is nothing for pixeld attribute to do; set it to true".into(),
        });
    }
    let t = &cfg.kafka.topics;
    let a = &cfg.attribution;
    Ok(Settings {
        producer: client_config(&cfg.kafka, &cfg.kafka.brokers),
        consumer: consumer_config(&cfg.kafka, &cfg.kafka.brokers),
        group_id: a.group_id.clone(),
        topics: ClusterTopics {
            inputs: PerInput::from_fn(|topic| {
                match topic {
                    InputTopic::Impressions => &t.impressions,
                    InputTopic::Clicks => &t.clicks,
                    InputTopic::Conversions => &t.conversions,
                    InputTopic::Segments => &t.segments,
                    InputTopic::Adjustments => &t.adjustments,
                    InputTopic::Orders => &t.orders,
                    InputTopic::AdjustmentsByUser => &t.adjustments_by_user,
                }
                .clone()
            }),
            changelog: t.attribution_state.clone(),
            attributions: t.attributions.clone(),
        },
        grace_ms: a.grace_ms,
        max_future_ms: a.max_future_ms,
        commit_interval: Duration::from_millis(a.commit_interval_ms),
        sweep_interval: Duration::from_secs(a.sweep_interval_secs),
        session_timeout_ms: a.session_timeout_ms,
        max_users: a.max_users,
        transactions: a.transactions,
        transactional_id: transactional_id(&a.group_id, a.listen),
    })
}

/// `<group_id>-<host name>-<listen port>`: one per member instance, and the
/// same across its restarts. With `exactly_once_v2` the group coordinator
/// fences a zombie by its generation, so the id need not follow the
/// partitions; it must be unique among live members (two live members of
/// one id would fence each other in turn: on one host the listener port
/// differs, or the second member could not bind it) and stable across a
/// restart, so that a member restarted after a crash aborts its own
/// predecessor's open transaction at once (`InitProducerId`) instead of
/// leaving `read_committed` readers of those partitions waiting for the
/// transaction timeout.
fn transactional_id(group_id: &str, listen: SocketAddr) -> String {
    let mut name = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at
    // most that much and NUL-terminates a name that fits.
    let ok = unsafe { libc::gethostname(name.as_mut_ptr().cast(), name.len()) } == 0;
    let end = name.iter().position(|&b| b == 0).unwrap_or(0);
    let host = match std::str::from_utf8(&name[..end]) {
        Ok(h) if ok && !h.is_empty() => h,
        _ => "localhost",
    };
    format!("{group_id}-{host}-{}", listen.port())
}

/// Runs one member until `shutdown` resolves (or the member fails).
pub async fn run(
    cfg: &Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AttributeError> {
    prometheus();
    let settings = settings(cfg)?;
    let catalog = Arc::new(ArcSwap::new(
        Catalog::new(cfg).map_err(AttributeError::Catalog)?,
    ));
    let addr = cfg.attribution.listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| AttributeError::Listen { addr, source })?;
    let replication = cfg.kafka.replication_factor;
    let member = tokio::task::spawn_blocking(move || Member::start(settings, catalog, replication))
        .await
        .map_err(|e| AttributeError::Cluster(ClusterError::Thread(e.to_string())))?
        .map_err(AttributeError::Cluster)?;
    info!(listen = %addr, "pixeld attribute: /readyz and /metrics");
    let status = member.status.clone();
    let http = {
        let cfg = cfg.clone();
        tokio::spawn(async move {
            crate::http::status_page::serve(listener, &cfg.server, move || readiness(&status)).await
        })
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                if member.finished() {
                    break;
                }
            }
        }
    }
    info!("stopping: finishing the batch in hand, committing, leaving the group");
    let result = tokio::task::spawn_blocking(move || member.stop())
        .await
        .map_err(|e| AttributeError::Cluster(ClusterError::Thread(e.to_string())))?;
    http.abort();
    result.map_err(AttributeError::Cluster)
}

/// Whether the member is ready, and why not: its `/readyz`.
fn readiness(status: &Status) -> Result<(), String> {
    use std::sync::atomic::Ordering::Relaxed;
    if status.ready() {
        Ok(())
    } else if status.orphaned.load(Relaxed) > 0 {
        Err(format!(
            "{} partition(s) owned by no live member; rejoining the group",
            status.orphaned.load(Relaxed)
        ))
    } else if status.restoring.load(Relaxed) {
        Err("restoring partitions from the changelog".into())
    } else {
        Err("not in the consumer group yet".into())
    }
}

/// A replay writes only to a topic of its own: the names this config reads
/// or writes, and the default names (a what-if config may rename its topics
/// while the live fleet keeps the defaults), are refused. Writing JSON
/// records into the changelog stopped every member; into an input topic, it
/// fed the records back as conversions.
fn refuse_live_topic(cfg: &Config, output_topic: &str) -> Result<(), AttributeError> {
    let default = crate::config::TopicsConfig::default();
    let live = |t: &crate::config::TopicsConfig| {
        let mut names = Topics::from_config(t).names().to_vec();
        names.push(t.attribution_state.clone());
        names
    };
    let names = live(&cfg.kafka.topics);
    if names
        .iter()
        .chain(&live(&default))
        .any(|n| n == output_topic)
    {
        return Err(AttributeError::Config {
            key: "--output-topic",
            fix: format!("{output_topic} is a topic pixeld reads or writes ({}); name a topic of the replay's own", names.join(", ")),
        });
    }
    Ok(())
}

/// `pixeld attribute --replay`: the config's rules over the inputs of
/// `[from_ms, to_ms)`, records to `output_topic`; the summary for stdout.
pub fn replay(
    cfg: &Config,
    from_ms: u64,
    to_ms: u64,
    output_topic: &str,
) -> Result<crate::attribution::cluster::replay::Summary, AttributeError> {
    let settings = settings(cfg)?;
    refuse_live_topic(cfg, output_topic)?;
    if to_ms <= from_ms {
        return Err(AttributeError::Config {
            key: "--to",
            fix: "must be after --from".into(),
        });
    }
    let catalog = Catalog::new(cfg).map_err(AttributeError::Catalog)?;
    crate::attribution::cluster::topics::ensure_output(
        &settings.consumer,
        &settings.topics.inputs[InputTopic::Impressions],
        output_topic,
        cfg.kafka.replication_factor,
    )
    .map_err(AttributeError::Cluster)?;
    let run = crate::attribution::cluster::replay::Replay {
        producer: settings.producer,
        consumer: settings.consumer,
        topics: settings.topics,
        from_ms,
        to_ms,
        output_topic: output_topic.to_string(),
    };
    run.run(catalog).map_err(AttributeError::Cluster)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_refuses_every_topic_pixeld_reads_or_writes_after_renames_too() {
        let mut cfg = Config::default();
        cfg.kafka.topics.attributions = "whatif.attributions".into();
        for name in [
            "pixel.attribution-state",
            "pixel.conversions",
            "pixel.impressions",
            "pixel.segments",
            "pixel.invalid",
            "whatif.attributions",
            // The live fleet's default, though this config renamed it.
            "pixel.attributions",
        ] {
            let e = refuse_live_topic(&cfg, name).unwrap_err().to_string();
            assert!(e.starts_with("--output-topic: "), "{e}");
        }
        assert!(refuse_live_topic(&cfg, "pixel.attributions.whatif").is_ok());
    }
}
