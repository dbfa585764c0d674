//! `pixeld serve`: wires config, sink and HTTP server together and owns the
//! shutdown order (stop accepting, finish requests, flush Kafka).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::{info, warn};

use arc_swap::ArcSwap;

use crate::app::App;
use crate::attribution::{self, EngineTask};
use crate::config::{Catalog, Config};
use crate::http::{self, Limits};
use crate::sink::embedded::EmbeddedKafka;
use crate::sink::kafka::KafkaSink;
use crate::sink::Sink;
use crate::telemetry::prometheus;

/// The sink `cfg` asks for, with the embedded cluster it may need kept alive.
pub fn kafka_sink(cfg: &Config) -> Result<(Arc<dyn Sink>, Option<EmbeddedKafka>), String> {
    if cfg.kafka.brokers.trim().is_empty() {
        let embedded = EmbeddedKafka::start()?;
        let brokers = embedded.bootstrap_servers();
        let t = &cfg.kafka.topics;
        let topics = [
            &t.impressions,
            &t.clicks,
            &t.conversions,
            &t.segments,
            &t.invalid,
            &t.attributions,
        ];
        embedded.create_topics(&topics.map(String::as_str), cfg.kafka.partitions)?;
        info!(
            bootstrap = %brokers,
            "no kafka.brokers configured: using the embedded in-memory Kafka (events are lost when pixeld stops). Watch them with: kcat -b {brokers} -C -t {} -f '%k %s\\n'",
            cfg.kafka.topics.impressions
        );
        let sink = KafkaSink::start(&cfg.kafka, &brokers)?;
        Ok((Arc::new(sink), Some(embedded)))
    } else {
        Ok((
            Arc::new(KafkaSink::start(&cfg.kafka, &cfg.kafka.brokers)?),
            None,
        ))
    }
}

/// Serves `cfg` on `listener` into `sink` until `shutdown` resolves, then
/// drains in-flight requests and flushes the sink.
pub async fn serve(
    cfg: &Config,
    listener: TcpListener,
    sink: Arc<dyn Sink>,
    shutdown: impl Future,
) {
    let catalog = Arc::new(ArcSwap::new(Catalog::new(cfg)));
    let engine = if cfg.attribution.enabled {
        let settings = attribution::Settings {
            channel_capacity: cfg.attribution.channel_capacity,
            data_dir: Some(cfg.server.data_dir.clone()),
            snapshot_interval: Duration::from_secs(cfg.attribution.snapshot_interval_secs),
            sweep_interval: Duration::from_secs(cfg.attribution.sweep_interval_secs),
        };
        match EngineTask::start(catalog.clone(), sink.clone(), settings) {
            Ok(task) => Some(task),
            Err(e) => {
                warn!(error = %e, "cannot start the attribution engine; conversions are recorded but not attributed");
                None
            }
        }
    } else {
        None
    };
    let feed = engine.as_ref().map(|e| e.feed.clone());
    let app = Arc::new(App::new(cfg, sink.clone(), catalog, feed));
    let upkeep = tokio::spawn(async {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            prometheus().run_upkeep();
        }
    });
    let limits = Limits {
        header_read_timeout: Duration::from_millis(cfg.server.header_read_timeout_ms),
        max_header_bytes: cfg.server.max_header_bytes,
        shutdown_timeout: Duration::from_millis(cfg.server.shutdown_timeout_ms),
    };
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "listening");
    }
    http::run(listener, app, limits, shutdown).await;
    upkeep.abort();
    if let Some(engine) = engine {
        // Drains what the handlers offered, publishes those records, snapshots.
        let _ = tokio::task::spawn_blocking(move || engine.stop()).await;
    }
    let timeout = Duration::from_millis(cfg.kafka.flush_timeout_ms);
    let left = tokio::task::spawn_blocking(move || sink.flush(timeout))
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
