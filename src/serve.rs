//! `pixeld serve`: [`Services::start`] brings the parts up in order (cookie
//! key, journal, delivery, attribution engine, shipper), each guarantee the
//! config asks for either given or refused with a [`StartError`];
//! [`Services::shutdown`] takes them down in the reverse order: stop
//! accepting, finish in-flight requests, let the engine catch up and
//! snapshot, stop the journal writer, ship (or flush) what is left, and say
//! what was left behind.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rdkafka::ClientConfig;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::attribution::{self, EngineTask, Feed, Source};
use crate::config::{AttributionMode, Catalog, Config, Durability, Problem, Secret};
use crate::delivery::{Delivery, Tap};
use crate::http::{self, App, Limits};
use crate::journal::ship::{ShipSettings, Shipper};
use crate::journal::{self, Journal};
use crate::sink::embedded::EmbeddedKafka;
use crate::sink::kafka::{client_config, KafkaSink};
use crate::sink::producer::Topics;
use crate::sink::Sink;
use crate::telemetry::prometheus;

/// Where events end up: the sink (direct publishing in `memory` mode, and
/// readiness), and the producer settings the journal's shipper uses.
pub struct Outputs {
    pub sink: Arc<dyn Sink>,
    /// None when there is no Kafka behind the sink (tests with a memory
    /// sink): journaled events then stay in the journal.
    pub kafka: Option<ClientConfig>,
}

/// Connects to `kafka.brokers`, or starts the embedded cluster when empty
/// (returned too: keep it alive while serving).
pub fn outputs(cfg: &Config) -> Result<(Outputs, Option<EmbeddedKafka>), StartError> {
    prometheus();
    let (brokers, embedded) = if cfg.kafka.brokers.trim().is_empty() {
        let embedded = EmbeddedKafka::start().map_err(StartError::Kafka)?;
        let brokers = embedded.bootstrap_servers();
        let topics = Topics::from_config(&cfg.kafka.topics);
        let names: Vec<&str> = topics.names().iter().map(String::as_str).collect();
        embedded
            .create_topics(&names, cfg.kafka.partitions)
            .map_err(StartError::Kafka)?;
        info!(
            bootstrap = %brokers,
            "no kafka.brokers configured: using the embedded in-memory Kafka (events are lost when pixeld stops). Watch them with: kcat -b {brokers} -C -t {} -f '%k %s\\n'",
            cfg.kafka.topics.impressions
        );
        (brokers, Some(embedded))
    } else {
        (cfg.kafka.brokers.clone(), None)
    };
    let sink = Arc::new(KafkaSink::start(&cfg.kafka, &brokers).map_err(StartError::Kafka)?);
    let kafka = Some(client_config(&cfg.kafka, &brokers));
    Ok((Outputs { sink, kafka }, embedded))
}

/// A guarantee the config asks for that cannot be given: start-up stops
/// (exit code 2) with the key to look at and the fix.
#[derive(Debug)]
pub enum StartError {
    /// `server.listen` cannot be bound.
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    /// `server.admin_listen` cannot be bound.
    AdminListen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    /// The Kafka client could not be created (`kafka.*` settings).
    Kafka(String),
    /// `cookie.secret` is unset and the generated key cannot be kept.
    CookieKey {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `journal.durability` asks for a journal that cannot be opened.
    Journal {
        dir: PathBuf,
        source: std::io::Error,
    },
    /// The catalog refers to something undefined (validation reports it first).
    Catalog(Problem),
    /// The attribution engine cannot keep its state.
    Attribution(attribution::StartError),
    /// The journal shipper could not start.
    Shipper(String),
    /// The serving threads (`server.threads`) could not all be started.
    Serving(std::io::Error),
    /// `server.max_connections` needs more file descriptors than the hard
    /// limit allows.
    FdLimit {
        wanted: usize,
        limit: u64,
        fits: usize,
    },
}

impl StartError {
    /// The same failure to bind, for the admin listener.
    pub fn admin(e: StartError) -> StartError {
        match e {
            StartError::Listen { addr, source } => StartError::AdminListen { addr, source },
            other => other,
        }
    }

    /// The config key to look at.
    pub fn key(&self) -> &str {
        match self {
            StartError::Listen { .. } => "server.listen",
            StartError::AdminListen { .. } => "server.admin_listen",
            StartError::Kafka(_) => "kafka",
            StartError::CookieKey { .. } => "cookie.secret",
            StartError::Journal { .. } => "journal.durability",
            StartError::Catalog(p) => &p.path,
            StartError::Attribution(_) => "attribution.enabled",
            StartError::Shipper(_) => "kafka",
            StartError::FdLimit { .. } => "server.max_connections",
            StartError::Serving(_) => "server.threads",
        }
    }

    fn fix(&self) -> &'static str {
        match self {
            StartError::Listen { .. } | StartError::AdminListen { .. } => {
                "choose a free address:port, or stop what holds it"
            }
            StartError::Kafka(_) => "check kafka.brokers and the [kafka.librdkafka] table",
            StartError::CookieKey { .. } => {
                "make server.data_dir writable, or set cookie.secret (`openssl rand -hex 16`)"
            }
            StartError::Journal { .. } => {
                "make server.data_dir writable, or set journal.durability = \"memory\" to run without the crash guarantee"
            }
            StartError::Catalog(_) => "define it, or fix the reference",
            StartError::Attribution(_) => {
                "make server.data_dir readable and writable, or set attribution.enabled = false"
            }
            StartError::Shipper(_) => "check the [kafka.librdkafka] table",
            StartError::FdLimit { .. } => {
                "lower server.max_connections, or raise the open-file limit (ulimit -n, LimitNOFILE= in the unit)"
            }
            StartError::Serving(_) => {
                "lower server.threads (0 is one per core), or raise the process limit (ulimit -u, TasksMax= in the unit)"
            }
        }
    }
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: ", self.key())?;
        match self {
            StartError::Listen { addr, source } | StartError::AdminListen { addr, source } => {
                write!(f, "cannot listen on {addr}: {source}")?
            }
            StartError::Kafka(e) | StartError::Shipper(e) => f.write_str(e)?,
            StartError::CookieKey { path, source } => write!(
                f,
                "unset, and the generated key cannot be kept in {}: {source}",
                path.display()
            )?,
            StartError::Journal { dir, source } => {
                write!(f, "cannot open the journal in {}: {source}", dir.display())?
            }
            StartError::Catalog(p) => f.write_str(&p.message)?,
            StartError::Attribution(e) => write!(f, "{e}")?,
            StartError::Serving(e) => write!(f, "cannot start the serving threads: {e}")?,
            StartError::FdLimit { wanted, limit, fits } => write!(
                f,
                "{wanted} connections need more file descriptors than the limit of {limit} allows (at most {fits} fit)"
            )?,
        }
        write!(f, "; {}", self.fix())
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Listen { source, .. }
            | StartError::AdminListen { source, .. }
            | StartError::CookieKey { source, .. }
            | StartError::Journal { source, .. }
            | StartError::Serving(source) => Some(source),
            StartError::Attribution(e) => Some(e),
            StartError::Kafka(_)
            | StartError::Shipper(_)
            | StartError::Catalog(_)
            | StartError::FdLimit { .. } => None,
        }
    }
}

/// Connections the admin listener takes at most: operators, Prometheus and
/// probes, not browsers; what it may hold is budgeted apart from
/// `server.max_connections`.
pub const ADMIN_MAX_CONNECTIONS: usize = 128;

/// `server.max_connections`, checked against the open-file limit (raised to
/// the hard limit if need be): a value that was set and does not fit stops
/// start-up; the default is lowered to what fits, with a warning naming
/// the key (a machine with a low limit still starts on the default).
fn connection_caps(cfg: &Config) -> Result<(usize, usize), StartError> {
    let wanted = cfg.server.max_connections;
    let needed = (wanted + ADMIN_MAX_CONNECTIONS) as u64 + crate::fdlimit::RESERVED;
    // Under a low limit the admin listener gets an eighth of it.
    let admin = |l: &crate::fdlimit::FdLimit| (ADMIN_MAX_CONNECTIONS as u64).min(l.soft / 8);
    let fit =
        |l: &crate::fdlimit::FdLimit| l.connections().saturating_sub(admin(l)).max(1) as usize;
    match crate::fdlimit::ensure(needed) {
        Ok(l) => {
            if let Some(from) = l.raised_from {
                info!(
                    from,
                    to = l.soft,
                    "raised the open-file limit for server.max_connections"
                );
            }
            Ok((wanted, ADMIN_MAX_CONNECTIONS))
        }
        Err(l) if wanted == crate::config::ServerConfig::default().max_connections => {
            warn!(
                limit = l.soft,
                hard = l.hard,
                max_connections = fit(&l),
                "server.max_connections: the default does not fit the open-file limit and is lowered; raise the limit (ulimit -n, LimitNOFILE=) or set server.max_connections"
            );
            Ok((fit(&l), admin(&l).max(1) as usize))
        }
        Err(l) => Err(StartError::FdLimit {
            wanted,
            limit: l.soft,
            fits: fit(&l),
        }),
    }
}

/// Everything `pixeld serve` runs, in start-up order; dropped (or shut
/// down) in the reverse order.
pub struct Services {
    /// What the HTTP layer serves with.
    pub app: Arc<App>,
    /// The credit engine, when `attribution.enabled`.
    engine: Option<EngineTask>,
    /// The journal, unless `durability = memory`.
    journal: Option<Arc<Journal>>,
    /// Ships the journal to Kafka (absent without Kafka behind the sink).
    shipper: Option<Shipper>,
    /// Flushed last, for memory mode's queued events.
    sink: Arc<dyn Sink>,
    /// HTTP limits, from `[server]`.
    limits: Limits,
    /// The admin listener's connection cap ([`ADMIN_MAX_CONNECTIONS`], or
    /// less under a low open-file limit).
    admin_max_connections: usize,
    /// How long the final flush may take.
    flush_timeout: Duration,
    /// Served after SIGTERM with `/readyz` at 503 (`server.drain_ms`).
    drain: Duration,
    /// Reload when the file changes, not only on SIGHUP.
    watch_config: bool,
    /// Serving threads (`server.threads`, 0 resolved to the cores).
    threads: usize,
}

/// What shutdown left behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stopped {
    /// Records still in the journal, shipped at the next start.
    pub left_in_journal: u64,
    /// Events the producer still held when the flush gave up (lost).
    pub undelivered: usize,
}

/// The journal of `journal.durability` (none in `memory` mode), opened and
/// its directory checked writable.
fn open_journal(cfg: &Config) -> Result<Option<Arc<Journal>>, StartError> {
    let mode = cfg.journal.durability;
    if mode == Durability::Memory {
        return Ok(None);
    }
    let dir = cfg.server.data_dir.join("journal");
    let settings = journal::Settings {
        dir: dir.clone(),
        fsync: mode == Durability::Fsync,
        max_bytes: cfg.journal.max_bytes,
        segment_bytes: cfg.journal.segment_bytes,
    };
    let j = Journal::open(&settings)
        .and_then(|j| crate::files::check_writable(&dir).map(|()| j))
        .map_err(|source| StartError::Journal { dir, source })?;
    Ok(Some(Arc::new(j)))
}

/// The in-process attribution engine, reading `source`.
fn start_engine(
    cfg: &Config,
    catalog: &Arc<ArcSwap<Catalog>>,
    delivery: &Arc<Delivery>,
    source: Source,
) -> Result<EngineTask, StartError> {
    let settings = attribution::Settings {
        data_dir: Some(cfg.server.data_dir.clone()),
        snapshot_interval: Duration::from_secs(cfg.attribution.snapshot_interval_secs),
        sweep_interval: Duration::from_secs(cfg.attribution.sweep_interval_secs),
        max_users: cfg.attribution.max_users,
    };
    EngineTask::start(catalog.clone(), delivery.clone(), source, settings)
        .map_err(StartError::Attribution)
}

/// The journal's shipper to Kafka.
fn start_shipper(
    cfg: &Config,
    journal: &Arc<Journal>,
    client: &ClientConfig,
) -> Result<Shipper, StartError> {
    let settings = ShipSettings {
        topics: Topics::from_config(&cfg.kafka.topics),
        dead_letter: cfg.server.data_dir.join("dead-letter.jsonl"),
        drain_timeout: Duration::from_millis(cfg.kafka.flush_timeout_ms),
    };
    let retry_after = cfg.kafka.message_timeout(Duration::from_secs(30));
    Shipper::start(journal.shared.clone(), client, retry_after, settings)
        .map_err(StartError::Shipper)
}

/// Once a second: the readiness gauge, the config file's watch
/// (`server.watch_config`); every 5 s the registry's upkeep and the rate
/// limiter's sweep.
async fn upkeep(app: Arc<App>, watch: bool) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut n = 0u64;
    loop {
        tick.tick().await;
        n += 1;
        crate::telemetry::metric::ready(
            !app.draining.load(std::sync::atomic::Ordering::Relaxed)
                && app.delivery.not_ready().is_none(),
        );
        if n % 5 == 0 {
            prometheus().run_upkeep();
            if let Some(r) = &app.live.load().rate_limit {
                r.sweep(crate::telemetry::now_ms());
            }
        }
        if watch {
            if let Some(r) = app.reloader.get() {
                let r = r.clone();
                let _ = tokio::task::spawn_blocking(move || r.reload_if_changed()).await;
            }
        }
    }
}

impl Services {
    pub fn start(cfg: &Config, outputs: &Outputs) -> Result<Services, StartError> {
        // Installed first: metrics recorded before the recorder exists are lost.
        prometheus();
        crate::telemetry::metric::build_info(env!("CARGO_PKG_VERSION"), crate::telemetry::COMMIT);
        crate::telemetry::metric::start_at_zero();
        crate::telemetry::metric::journal_max_bytes(match cfg.journal.durability {
            Durability::Memory => 0,
            _ => cfg.journal.max_bytes,
        });
        // Before anything that must be shut down in order has started.
        let (max_connections, admin_max_connections) = connection_caps(cfg)?;
        let secret = cookie_secret(cfg)?;
        let catalog = Arc::new(ArcSwap::new(
            Catalog::new(cfg).map_err(StartError::Catalog)?,
        ));
        let journal = open_journal(cfg)?;
        // Memory mode feeds the engine from the handlers through a channel;
        // the journal modes let it read the journal.
        // In cluster mode `pixeld attribute` credits conversions from Kafka;
        // this instance only publishes.
        let in_process =
            cfg.attribution.enabled && cfg.attribution.mode == AttributionMode::InProcess;
        let (source, feed) = match (&journal, in_process) {
            (_, false) => (None, None),
            (Some(j), true) => (Some(Source::Journal(j.clone())), None),
            (None, true) => {
                let feed = Arc::new(Feed::new(cfg.attribution.channel_capacity));
                (Some(Source::Channel(feed.clone())), Some(feed))
            }
        };
        let delivery = match &journal {
            Some(j) => Delivery::journal(j.clone(), outputs.sink.clone(), in_process),
            None => Delivery::direct(outputs.sink.clone(), feed.map(|f| f as Arc<dyn Tap>)),
        };
        // The members read the engine's input from a header, not the JSON.
        let cluster = cfg.attribution.enabled && cfg.attribution.mode == AttributionMode::Cluster;
        let delivery = Arc::new(match cluster {
            true => delivery.with_input_header(),
            false => delivery,
        });
        let engine = match source {
            Some(source) => Some(start_engine(cfg, &catalog, &delivery, source)?),
            None => None,
        };
        let shipper = match (&journal, &outputs.kafka) {
            (Some(j), Some(client)) => Some(start_shipper(cfg, j, client)?),
            _ => None,
        };
        let app = Arc::new(App::new(cfg, catalog, delivery, secret));
        let limits = Limits {
            header_read_timeout: Duration::from_millis(cfg.server.header_read_timeout_ms),
            max_header_bytes: cfg.server.max_header_bytes,
            shutdown_timeout: Duration::from_millis(cfg.server.shutdown_timeout_ms),
            max_connections,
        };
        Ok(Services {
            app,
            engine,
            journal,
            shipper,
            sink: outputs.sink.clone(),
            limits,
            admin_max_connections,
            flush_timeout: Duration::from_millis(cfg.kafka.flush_timeout_ms),
            drain: Duration::from_millis(cfg.server.drain_ms),
            watch_config: cfg.server.watch_config,
            threads: http::serving::thread_count(cfg.server.threads),
        })
    }

    /// Serves pixels on `listener` and the operators' endpoints on `admin`
    /// until `shutdown` resolves; then drains (`/readyz` 503 while pixels
    /// are still answered for `server.drain_ms`) and shuts down.
    pub async fn run(
        self,
        listener: TcpListener,
        admin: TcpListener,
        shutdown: impl Future,
    ) -> Result<Stopped, StartError> {
        let upkeep = tokio::spawn(upkeep(self.app.clone(), self.watch_config));
        let hup = tokio::spawn(reload_on_sighup(self.app.clone()));
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, "listening");
        }
        if let Ok(addr) = admin.local_addr() {
            info!(%addr, "admin listening (/metrics, /readyz, /healthz, POST /-/reload)");
        }
        let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let admin_limits = Limits {
            max_connections: self.admin_max_connections,
            ..self.limits
        };
        let admin_task = tokio::spawn(http::run(
            admin,
            self.app.clone(),
            http::Role::Admin,
            admin_limits,
            async {
                let _ = admin_stopped.await;
            },
        ));
        let app = self.app.clone();
        let drain = self.drain;
        let drained = async move {
            shutdown.await;
            app.draining
                .store(true, std::sync::atomic::Ordering::Relaxed);
            info!(
                drain_ms = drain.as_millis() as u64,
                "draining: /readyz answers 503, pixels are still served"
            );
            tokio::time::sleep(drain).await;
        };
        let serving = self.serve_public(listener, drained).await;
        let _ = admin_stop.send(());
        let _ = admin_task.await;
        upkeep.abort();
        hup.abort();
        let stopped = tokio::task::spawn_blocking(move || self.shutdown())
            .await
            .unwrap_or(Stopped {
                left_in_journal: u64::MAX,
                undelivered: usize::MAX,
            });
        // Shut down in order even then; the start-up error is the answer.
        serving.map_err(StartError::Serving)?;
        Ok(stopped)
    }

    /// Serves pixels on `server.threads` serving threads until `stopped`
    /// resolves and their in-flight requests are answered. Threads or
    /// runtimes the system refuses stop start-up: nothing serves pixels.
    async fn serve_public(
        &self,
        listener: TcpListener,
        stopped: impl Future,
    ) -> std::io::Result<()> {
        let std_listener = listener.into_std()?;
        let serving =
            http::ServingThreads::start(std_listener, self.app.clone(), self.limits, self.threads)?;
        stopped.await;
        let _ = tokio::task::spawn_blocking(move || serving.stop()).await;
        Ok(())
    }

    /// Stops the background parts in order and says what was left behind.
    pub fn shutdown(mut self) -> Stopped {
        // The engine first: it may still hand over attribution records.
        if let Some(engine) = self.engine.take() {
            engine.stop();
        }
        if let Some(j) = &self.journal {
            j.stop();
        }
        let left_in_journal = match (self.shipper.take(), &self.journal) {
            (Some(s), _) => s.stop(),
            // No shipper: everything journaled stays there.
            (None, Some(j)) => j.shared.written().saturating_sub(j.shared.shipped()),
            (None, None) => 0,
        };
        let undelivered = self.sink.flush(self.flush_timeout);
        let stopped = Stopped {
            left_in_journal,
            undelivered,
        };
        match stopped {
            Stopped {
                left_in_journal: 0,
                undelivered: 0,
            } => info!("all events delivered; bye"),
            Stopped {
                left_in_journal, ..
            } if left_in_journal > 0 => warn!(
                left_in_journal,
                "stopping with events not yet in Kafka; they stay in the journal and ship at the next start"
            ),
            Stopped { undelivered, .. } => {
                warn!(undelivered, "flush timed out; these events are lost")
            }
        }
        stopped
    }
}

/// Serves `cfg` on `listener` (pixels) and `admin` (operators) until
/// `shutdown` resolves, then shuts down in order.
pub async fn serve(
    cfg: &Config,
    listener: TcpListener,
    admin: TcpListener,
    outputs: &Outputs,
    shutdown: impl Future,
) -> Result<Stopped, StartError> {
    let services = Services::start(cfg, outputs)?;
    services.run(listener, admin, shutdown).await
}

/// Each SIGHUP reloads the config file (when a reloader is installed).
/// The handler is registered when this is called, not when the task first
/// runs: until then a SIGHUP would end the process (its default action).
fn reload_on_sighup(app: Arc<App>) -> impl Future<Output = ()> {
    #[cfg(unix)]
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    async move {
        #[cfg(unix)]
        {
            let Ok(mut hup) = hup else {
                return;
            };
            while hup.recv().await.is_some() {
                info!("SIGHUP: reloading the config");
                if let Some(r) = app.reloader.get() {
                    // Coalesced with the admin listener's reloads, off the workers.
                    let _ = app.reloads.request(r).answer().await;
                }
            }
        }
        #[cfg(not(unix))]
        let _ = app;
    }
}

/// Registers SIGINT and SIGTERM at once, and resolves on either. Call it on
/// a runtime before anything answers `/readyz`: a signal that arrives
/// before its handler exists ends the process at once (the default
/// action), and a SIGTERM right after readiness was seen doing so while
/// the handler waited for the serving threads to start.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    let registered = {
        use tokio::signal::unix::{signal, SignalKind};
        signal(SignalKind::interrupt()).and_then(|i| Ok((i, signal(SignalKind::terminate())?)))
    };
    async move {
        #[cfg(unix)]
        match registered {
            Ok((mut int, mut term)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        info!("shutdown signal received");
    }
}

/// `cookie.secret`, or the key kept in `data_dir/cookie.key` (created on
/// first start) so that issued ids survive restarts.
fn cookie_secret(cfg: &Config) -> Result<Secret, StartError> {
    if let Some(secret) = cfg.cookie.secret {
        return Ok(secret);
    }
    let path = cfg.server.data_dir.join("cookie.key");
    Secret::load_or_create(&path).map_err(|source| StartError::CookieKey { path, source })
}
