//! `pixeld serve`: wires config, Kafka, journal, attribution engine and HTTP
//! server together, and owns the shutdown order: stop accepting, finish
//! in-flight requests, let the engine catch up and snapshot, stop the journal
//! writer, ship (or flush) what is left.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rdkafka::ClientConfig;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::app::App;
use crate::attribution::{self, EngineTask, Source};
use crate::config::{Catalog, Config};
use crate::http::cookie::Secret;
use crate::http::{self, Limits};
use crate::journal::ship::{ShipSettings, Shipper};
use crate::journal::{self, Durability, Journal};
use crate::sink::embedded::EmbeddedKafka;
use crate::sink::kafka::{client_config, KafkaSink};
use crate::sink::Sink;
use crate::telemetry::prometheus;

/// Where events end up: the sink (direct publishing in `memory` mode, and
/// readiness), and the producer settings the journal's shipper uses.
pub struct Outputs {
    pub sink: Arc<dyn Sink>,
    /// None when there is no Kafka behind the sink (tests with a memory sink).
    pub kafka: Option<ClientConfig>,
}

/// Connects to `kafka.brokers`, or starts the embedded cluster when empty
/// (returned too: keep it alive while serving).
pub fn outputs(cfg: &Config) -> Result<(Outputs, Option<EmbeddedKafka>), String> {
    prometheus();
    let (brokers, embedded) = if cfg.kafka.brokers.trim().is_empty() {
        let embedded = EmbeddedKafka::start()?;
        let brokers = embedded.bootstrap_servers();
        embedded.create_topics(&cfg.kafka.topics.names(), cfg.kafka.partitions)?;
        info!(
            bootstrap = %brokers,
            "no kafka.brokers configured: using the embedded in-memory Kafka (events are lost when pixeld stops). Watch them with: kcat -b {brokers} -C -t {} -f '%k %s\\n'",
            cfg.kafka.topics.impressions
        );
        (brokers, Some(embedded))
    } else {
        (cfg.kafka.brokers.clone(), None)
    };
    let sink = Arc::new(KafkaSink::start(&cfg.kafka, &brokers)?);
    let kafka = Some(client_config(&cfg.kafka, &brokers));
    Ok((Outputs { sink, kafka }, embedded))
}

/// Serves `cfg` on `listener` until `shutdown` resolves, then shuts down in
/// order (see the module comment).
pub async fn serve(cfg: &Config, listener: TcpListener, outputs: &Outputs, shutdown: impl Future) {
    // Installed first: metrics recorded before the recorder exists are lost.
    prometheus();
    let cfg = &with_cookie_secret(cfg);
    let catalog = Arc::new(ArcSwap::new(Catalog::new(cfg)));
    let mode = cfg.journal.mode();
    let journal = if mode == Durability::Memory {
        None
    } else {
        let settings = journal::Settings {
            dir: cfg.server.data_dir.join("journal"),
            fsync: mode == Durability::Fsync,
            max_bytes: cfg.journal.max_bytes,
            segment_bytes: cfg.journal.segment_bytes,
        };
        match Journal::open(&settings) {
            Ok(j) => Some(Arc::new(j)),
            Err(e) => {
                warn!(error = %e, dir = %settings.dir.display(), "cannot open the journal; running without it (durability = memory)");
                None
            }
        }
    };
    let engine = if cfg.attribution.enabled {
        let settings = attribution::Settings {
            channel_capacity: cfg.attribution.channel_capacity,
            data_dir: Some(cfg.server.data_dir.clone()),
            snapshot_interval: Duration::from_secs(cfg.attribution.snapshot_interval_secs),
            sweep_interval: Duration::from_secs(cfg.attribution.sweep_interval_secs),
        };
        let source = match &journal {
            Some(j) => Source::Journal(j.clone()),
            None => Source::Channel,
        };
        match EngineTask::start(catalog.clone(), outputs.sink.clone(), source, settings) {
            Ok(task) => Some(task),
            Err(e) => {
                warn!(error = %e, "cannot start the attribution engine; conversions are recorded but not attributed");
                None
            }
        }
    } else {
        None
    };
    let shipper = match (&journal, &outputs.kafka) {
        (Some(j), Some(client)) => {
            let settings = ShipSettings {
                client: client.clone(),
                topics: cfg.kafka.topics.names().map(String::from),
                dead_letter: cfg.server.data_dir.join("dead-letter.jsonl"),
                drain_timeout: Duration::from_millis(cfg.kafka.flush_timeout_ms),
                retry_after: cfg.kafka.message_timeout(Duration::from_secs(30)),
            };
            match Shipper::start(j.shared.clone(), settings) {
                Ok(s) => Some(s),
                Err(e) => {
                    warn!(error = %e, "cannot start the journal shipper; events stay in the journal");
                    None
                }
            }
        }
        _ => None,
    };
    let feed = engine.as_ref().and_then(|e| e.feed.clone());
    let app = Arc::new(App::new(
        cfg,
        outputs.sink.clone(),
        catalog,
        feed,
        journal.clone(),
    ));
    let upkeep_app = app.clone();
    let upkeep = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            prometheus().run_upkeep();
            if let Some(r) = &upkeep_app.rate_limit {
                r.sweep(crate::telemetry::now_ms());
            }
        }
    });
    let limits = Limits {
        header_read_timeout: Duration::from_millis(cfg.server.header_read_timeout_ms),
        max_header_bytes: cfg.server.max_header_bytes,
        shutdown_timeout: Duration::from_millis(cfg.server.shutdown_timeout_ms),
        max_connections: cfg.server.max_connections,
    };
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, durability = cfg.journal.durability, "listening");
    }
    http::run(listener, app, limits, shutdown).await;
    upkeep.abort();
    let sink = outputs.sink.clone();
    let timeout = Duration::from_millis(cfg.kafka.flush_timeout_ms);
    let left = tokio::task::spawn_blocking(move || {
        // The engine first: it may still append attribution records.
        if let Some(engine) = engine {
            engine.stop();
        }
        if let Some(j) = &journal {
            j.stop();
        }
        if let Some(s) = shipper {
            s.stop();
        }
        sink.flush(timeout)
    })
    .await
    .unwrap_or(usize::MAX);
    if left == 0 {
        info!("all events delivered; bye");
    } else {
        warn!(undelivered = left, "flush timed out; these events are lost");
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    info!("shutdown signal received");
}

/// Fills `cookie.secret` from `data_dir/cookie.key` (created on first start)
/// when the config leaves it unset, so issued ids survive restarts.
fn with_cookie_secret(cfg: &Config) -> Config {
    let mut cfg = cfg.clone();
    if cfg.cookie.secret.is_none() {
        let path = cfg.server.data_dir.join("cookie.key");
        let key = Secret::load_or_create(&path).unwrap_or_else(|e| {
            warn!(error = %e, path = %path.display(), "cannot keep a cookie key; ids issued now will not be recognised after a restart (set cookie.secret)");
            Secret::generate()
        });
        cfg.cookie.secret = Some(key.to_hex());
    }
    cfg
}
