//! `pixeld forward`: a consumer-group service that reads
//! `pixel.attributions` and calls each `[[destinations]]` entry for the
//! records it takes ([`crate::postback`]). Start-up refuses, naming the
//! key, what cannot work (no brokers, no destinations, no attributions
//! topic); then it runs until SIGTERM or SIGINT, when calls in flight
//! finish (within `forward.drain_ms`), what finished is committed and the
//! group is left. Its listener answers `/readyz` and `/metrics`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio::net::TcpListener;
use tracing::info;

use crate::config::Config;
use crate::postback::consumer::Loop;
use crate::postback::destination::{currencies, Destination, Skip};
use crate::postback::group::{self, GroupCtx, Status};
use crate::postback::log::Log;
use crate::postback::worker::{self, Shared};
use crate::postback::{call, ForwardError};
use crate::sink::kafka::{client_config, consumer_config, create_topics};
use crate::sink::producer::Topics;
use crate::telemetry::{metric, prometheus, RateLimit};

/// Why `pixeld forward` did not start (exit code 2) or stopped (1).
#[derive(Debug, thiserror::Error)]
pub enum ForwardServiceError {
    #[error("{key}: {fix}")]
    Config { key: &'static str, fix: String },
    #[error("forward.listen: cannot listen on {addr}: {source}; pick a free address")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Run(#[from] ForwardError),
}

impl ForwardServiceError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ForwardServiceError::Run(_) => 1,
            _ => 2,
        }
    }
}

fn kafka(what: &'static str) -> impl FnOnce(rdkafka::error::KafkaError) -> ForwardServiceError {
    move |source| ForwardServiceError::Run(ForwardError::Kafka { what, source })
}

/// Runs until `shutdown` resolves or the loop fails.
pub async fn run(
    cfg: &Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ForwardServiceError> {
    prometheus();
    check(cfg)?;
    let addr = cfg.forward.listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ForwardServiceError::Listen { addr, source })?;
    let cfg2 = cfg.clone();
    let (forward_loop, status) = tokio::task::spawn_blocking(move || start(&cfg2))
        .await
        .map_err(|e| ForwardServiceError::Config {
            key: "forward",
            fix: format!("start-up failed: {e}"),
        })??;
    info!(listen = %addr, destinations = cfg.destinations.len(), "pixeld forward: /readyz and /metrics");
    let http = {
        let (cfg, status) = (cfg.clone(), status.clone());
        tokio::spawn(async move {
            crate::http::status_page::serve(listener, &cfg.server, move || readiness(&status)).await
        })
    };
    let stop = Arc::new(AtomicBool::new(false));
    let drain = Duration::from_millis(cfg.forward.drain_ms);
    let looping = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("forward".into())
            .spawn(move || forward_loop.run(&stop, drain))
            .map_err(|e| ForwardServiceError::Config {
                key: "forward",
                fix: format!("cannot start its thread: {e}"),
            })?
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                if status.finished.load(Ordering::Relaxed) { break; }
            }
        }
    }
    info!("stopping: calls in flight finish, then the finished records are committed");
    stop.store(true, Ordering::Relaxed);
    let result = match tokio::task::spawn_blocking(move || looping.join()).await {
        Ok(Ok(result)) => result,
        _ => Err(ForwardError::Panicked),
    };
    http.abort();
    result.map_err(ForwardServiceError::Run)
}

fn check(cfg: &Config) -> Result<(), ForwardServiceError> {
    if cfg.kafka.brokers.trim().is_empty() {
        return Err(ForwardServiceError::Config {
            key: "kafka.brokers",
            fix: "pixeld forward reads pixel.attributions from Kafka; set the brokers the fleet publishes to (the embedded cluster lives inside one serve process)".into(),
        });
    }
    if cfg.destinations.is_empty() {
        return Err(ForwardServiceError::Config {
            key: "destinations",
            fix: "none configured: pixeld forward has nowhere to send records; add a [[destinations]] entry (see the README's Forwarding conversions)".into(),
        });
    }
    Ok(())
}

/// The topics, the consumer, the log, the workers: everything the loop needs.
fn start(cfg: &Config) -> Result<(Loop, Arc<Status>), ForwardServiceError> {
    let topics = &cfg.kafka.topics;
    let producer_cfg = client_config(&cfg.kafka, &cfg.kafka.brokers);
    let admin: AdminClient<DefaultClientContext> = consumer_config(&cfg.kafka, &cfg.kafka.brokers)
        .create()
        .map_err(kafka("admin client"))?;
    let replication = cfg.kafka.replication_factor;
    let new: Vec<NewTopic<'_>> = [&topics.postbacks, &topics.postbacks_dead]
        .into_iter()
        .map(|t| {
            NewTopic::new(
                t,
                cfg.kafka.partitions,
                TopicReplication::Fixed(replication),
            )
        })
        .collect();
    create_topics(&admin, &new).map_err(|fix| ForwardServiceError::Config {
        key: "kafka.topics.postbacks",
        fix,
    })?;
    let status = Arc::new(Status::default());
    let consumer = consumer(cfg, status.clone())?;
    let partitions = wait_for_topic(&consumer, &topics.attributions)?;
    consumer
        .subscribe(&[&topics.attributions])
        .map_err(kafka("subscribe"))?;
    let log = Log::new(&producer_cfg, Topics::from_config(topics)).map_err(kafka("producer"))?;
    let (stop_calls, stop) = tokio::sync::watch::channel(false);
    let (finished_tx, finished) = crossbeam_channel::unbounded();
    let f = &cfg.forward;
    let shared = Arc::new(Shared {
        client: call::client(),
        log,
        backoff: Duration::from_millis(f.backoff_ms),
        max_backoff: Duration::from_millis(f.max_backoff_ms),
        finished: finished_tx,
        stop,
        in_flight: AtomicUsize::new(0),
        epochs: Default::default(),
    });
    let handle = tokio::runtime::Handle::current();
    let _entered = handle.enter();
    let destinations: Vec<Arc<Destination>> = cfg
        .destinations
        .iter()
        .map(|d| Arc::new(Destination::new(d)))
        .collect();
    let queues = destinations
        .iter()
        .map(|d| worker::start(d.clone(), f.queue_capacity, shared.clone()))
        .collect();
    let attempt_results: Vec<&'static str> = std::iter::once("delivered")
        .chain(call::Class::ALL.iter().map(|c| c.as_str()))
        .collect();
    let record_results: Vec<&'static str> = std::iter::once("queued")
        .chain(Skip::ALL.iter().map(|s| s.as_str()))
        .collect();
    metric::forward_start_at_zero(
        destinations.iter().map(|d| d.id.as_str()),
        &attempt_results,
        &record_results,
    );
    let l = Loop::new(
        consumer,
        topics.attributions.clone(),
        partitions,
        queues,
        currencies(cfg),
        shared,
        finished,
        stop_calls,
        status.clone(),
        Duration::from_millis(f.commit_interval_ms),
        stall(cfg),
    );
    Ok((l, status))
}

/// How long a partition's commit may stall behind its log before it
/// counts as owned by no live instance: a live owner's commit waits for
/// its oldest record's calls, which end within `max_attempts` timeouts and
/// backoffs, so that bound plus three session timeouts never flags one.
fn stall(cfg: &Config) -> Duration {
    let f = &cfg.forward;
    let longest_call = cfg
        .destinations
        .iter()
        .map(|d| u64::from(d.max_attempts) * (d.timeout_ms + f.max_backoff_ms))
        .max()
        .unwrap_or(0);
    Duration::from_millis(3 * u64::from(f.session_timeout_ms) + longest_call + f.commit_interval_ms)
}

fn consumer(
    cfg: &Config,
    status: Arc<Status>,
) -> Result<BaseConsumer<GroupCtx>, ForwardServiceError> {
    let mut c = consumer_config(&cfg.kafka, &cfg.kafka.brokers);
    let f = &cfg.forward;
    c.set("group.id", &f.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", f.start_from.as_str())
        .set("session.timeout.ms", f.session_timeout_ms.to_string())
        .set(
            "heartbeat.interval.ms",
            (f.session_timeout_ms / 4).max(100).to_string(),
        );
    let ctx = GroupCtx {
        changes: Default::default(),
        status,
        log: RateLimit::new(10_000),
    };
    c.create_with_context(ctx).map_err(kafka("consumer"))
}

/// The attributions topic's partition count, waiting up to 30 s for
/// `serve` or the members to create it.
fn wait_for_topic(
    consumer: &BaseConsumer<GroupCtx>,
    topic: &str,
) -> Result<i32, ForwardServiceError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(n) = group::partition_count(consumer, topic) {
            return Ok(n);
        }
        if Instant::now() > deadline {
            return Err(ForwardServiceError::Config {
                key: "kafka.topics.attributions",
                fix: format!("topic {topic} was not found within 30 s: start pixeld serve (or the attribution members), which create it, or fix the name"),
            });
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Whether forward is ready, and why not: its `/readyz`.
fn readiness(status: &Status) -> Result<(), String> {
    let orphaned = status.orphaned.load(Ordering::Relaxed);
    if orphaned > 0 {
        Err(format!(
            "{orphaned} partition(s) owned by no live instance; rejoining the group"
        ))
    } else if status.joined.load(Ordering::Relaxed) {
        Ok(())
    } else {
        Err("not in the consumer group yet".into())
    }
}
