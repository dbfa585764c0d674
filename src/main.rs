//! The command line. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pixeld::ids::{ClickTrackerId, PixelId, SegmentId, TrackerId};
use pixeld::serve::{Services, StartError};
use pixeld::tags::{TagFor, TagForm};

#[global_allocator]
static ALLOC: pixeld::alloc::HugePages = pixeld::alloc::HugePages;

#[derive(Parser)]
#[command(
    name = "pixeld",
    version,
    about = "A high-throughput tracking-pixel server"
)]
struct Cli {
    /// Log lines as `text` (for people) or `json` (one object per line,
    /// for log collectors); also `PIXELD_LOG_FORMAT`.
    #[arg(long, global = true, env = "PIXELD_LOG_FORMAT", default_value = "text")]
    log_format: pixeld::telemetry::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve pixels (embedded in-memory Kafka when kafka.brokers is empty).
    Serve {
        #[arg(long, default_value = "config/pixeld.toml")]
        config: PathBuf,
    },
    /// Credit conversions as a member of the attribution consumer group
    /// (for `attribution.mode = "cluster"`; needs kafka.brokers).
    Attribute {
        #[arg(long, default_value = "config/pixeld.toml")]
        config: PathBuf,
        /// What-if: apply this config's rules to the inputs between --from
        /// and --to, write the records to --output-topic, print a summary
        /// and exit (no consumer group commits, no changelog).
        #[arg(long, requires_all = ["from", "to", "output_topic"])]
        replay: bool,
        /// Start of the replay, e.g. 2026-10-01T00:00:00Z.
        #[arg(long)]
        from: Option<String>,
        /// End of the replay (exclusive).
        #[arg(long)]
        to: Option<String>,
        /// Where the replay's records go (never the live attributions topic).
        #[arg(long)]
        output_topic: Option<String>,
    },
    /// Tell traffic sources and ad platforms about attributed conversions
    /// (`[[destinations]]`): a consumer group on the attributions topic.
    Forward {
        #[arg(long, default_value = "config/pixeld.toml")]
        config: PathBuf,
    },
    /// Validate a config file and report every problem.
    CheckConfig {
        #[arg(long, default_value = "config/pixeld.toml")]
        config: PathBuf,
        /// The file the server runs with: also say which keys a reload to
        /// --config would leave at their running value until a restart,
        /// and which would allow more than before.
        #[arg(long)]
        against: Option<PathBuf>,
    },
    /// Print the exportable tag of a tracker, click tracker, pixel or segment.
    Tags {
        #[arg(long, default_value = "config/pixeld.toml")]
        config: PathBuf,
        #[arg(long, group = "what")]
        tracker: Option<u32>,
        #[arg(long, group = "what")]
        click_tracker: Option<u32>,
        #[arg(long, group = "what")]
        pixel: Option<u32>,
        #[arg(long, group = "what")]
        segment: Option<u32>,
        /// A `curl` example of a server-side conversion for this pixel
        /// (`POST /v1/conversions`).
        #[arg(long, group = "what")]
        s2s: Option<u32>,
        /// The advertiser's site-wide snippet that keeps a click id from
        /// the landing page's URL for conversions on later pages.
        #[arg(long, group = "what")]
        landing: bool,
        /// The JavaScript form instead of the image.
        #[arg(long)]
        js: bool,
        /// Add the consent macros (`gdpr`, `gdpr_consent`, `gpp`, `gpp_sid`)
        /// for `privacy.tcf_vendor_id`.
        #[arg(long)]
        consent: bool,
    },
}

fn load(path: &std::path::Path) -> Result<pixeld::config::Config, ExitCode> {
    pixeld::config::load(path).map_err(|e| {
        eprint!("{e}");
        ExitCode::from(2)
    })
}

/// `check-config --against`: what a reload from the running file would do.
fn print_reload(
    running: &pixeld::config::Config,
    new: &pixeld::config::Config,
    path: &std::path::Path,
) {
    let (restart, widened) = pixeld::reload::compare(running, new);
    println!("against {}:", path.display());
    if restart.is_empty() && widened.is_empty() {
        println!("  a reload applies every change");
    }
    if !restart.is_empty() {
        println!(
            "  needs a restart (a reload keeps the running value): {}",
            restart.join(", ")
        );
    }
    if !widened.is_empty() {
        println!("  allows more than before: {}", widened.join(", "));
    }
}

fn runtime(mut builder: tokio::runtime::Builder) -> Result<tokio::runtime::Runtime, ExitCode> {
    builder.enable_all().build().map_err(|e| {
        eprintln!("cannot start the runtime: {e}");
        ExitCode::FAILURE
    })
}

/// Runs a background service (`attribute`, `forward`) on `builder`'s
/// runtime until it ends; its error, redacted, and its exit code.
fn until_done<E: std::fmt::Display>(
    cfg: &pixeld::config::Config,
    builder: tokio::runtime::Builder,
    service: impl std::future::Future<Output = Result<(), E>>,
    exit_code: impl Fn(&E) -> u8,
) -> ExitCode {
    let runtime = match runtime(builder) {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(service) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", cfg.redactor.redact(&e.to_string()));
            ExitCode::from(exit_code(&e))
        }
    }
}

/// `pixeld attribute --replay`: prints the summary as JSON.
fn run_replay(
    cfg: &pixeld::config::Config,
    from: Option<String>,
    to: Option<String>,
    output_topic: Option<String>,
) -> ExitCode {
    use pixeld::attribution::cluster::replay::parse_time;
    let time = |name: &str, v: Option<String>| {
        v.as_deref().and_then(parse_time).ok_or_else(|| {
            eprintln!("--{name}: give a UTC time such as 2026-10-01T00:00:00Z");
            ExitCode::from(2)
        })
    };
    let (from, to) = match (time("from", from), time("to", to)) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(c), _) | (_, Err(c)) => return c,
    };
    let output = output_topic.unwrap_or_default();
    match pixeld::attribute::replay(cfg, from, to, &output) {
        Ok(summary) => {
            println!("{}", serde_json::to_string(&summary).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}", cfg.redactor.redact(&e.to_string()));
            ExitCode::from(e.exit_code())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config, against } => check_config(&config, against.as_deref()),
        Command::Tags {
            config,
            tracker,
            click_tracker,
            pixel,
            segment,
            s2s,
            landing,
            js,
            consent,
        } => {
            let what = match (tracker, click_tracker, pixel, segment, s2s) {
                (Some(id), ..) => TagFor::Tracker(TrackerId(id)),
                (_, Some(id), ..) => TagFor::ClickTracker(ClickTrackerId(id)),
                (_, _, Some(id), ..) => TagFor::Pixel(PixelId(id)),
                (_, _, _, Some(id), _) => TagFor::Segment(SegmentId(id)),
                (.., Some(id)) => TagFor::ServerConversion(PixelId(id)),
                _ if landing => TagFor::Landing,
                _ => {
                    eprintln!(
                        "name one of --tracker, --click-tracker, --pixel, --segment, --s2s, --landing"
                    );
                    return ExitCode::from(2);
                }
            };
            print_tag(&config, what, TagForm { js, consent })
        }
        Command::Attribute {
            config,
            replay,
            from,
            to,
            output_topic,
        } => {
            pixeld::telemetry::init_logs(cli.log_format);
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if replay {
                return run_replay(&cfg, from, to, output_topic);
            }
            // One thread: the member runs on its own; this only serves /readyz.
            let builder = tokio::runtime::Builder::new_current_thread();
            // Signals are registered on the runtime, before the member
            // starts (and before it answers /readyz).
            let service = async {
                let shutdown = pixeld::serve::shutdown_signal();
                pixeld::attribute::run(&cfg, shutdown).await
            };
            until_done(&cfg, builder, service, |e| e.exit_code())
        }
        Command::Forward { config } => {
            pixeld::telemetry::init_logs(cli.log_format);
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let builder = tokio::runtime::Builder::new_multi_thread();
            let service = async {
                let shutdown = pixeld::serve::shutdown_signal();
                pixeld::forward::run(&cfg, shutdown).await
            };
            until_done(&cfg, builder, service, |e| e.exit_code())
        }
        Command::Serve { config } => {
            pixeld::telemetry::init_logs(cli.log_format);
            serve(&config)
        }
    }
}

/// `pixeld check-config`: the file loads; with `--against`, what a reload
/// from the running file to this one would change.
fn check_config(config: &std::path::Path, against: Option<&std::path::Path>) -> ExitCode {
    let cfg = match load(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    println!("{}: ok", config.display());
    // Which values the environment set (names only: a value may be a
    // secret).
    for (key, var) in &cfg.from_env {
        println!("  {key} from the environment ({var})");
    }
    let Some(path) = against else {
        return ExitCode::SUCCESS;
    };
    match load(path) {
        Ok(running) => {
            print_reload(&running, &cfg, path);
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// `pixeld tags`: the tag for `what`.
fn print_tag(config: &std::path::Path, what: TagFor, form: TagForm) -> ExitCode {
    let cfg = match load(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match pixeld::tags::tag(&cfg, what, form) {
        Ok(tag) => {
            println!("{tag}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}", cfg.redactor.redact(&e.to_string()));
            ExitCode::from(2)
        }
    }
}

/// `pixeld serve`: binds both listeners, starts the services, and runs
/// until a shutdown signal; a start-up failure is exit code 2.
fn serve(config: &std::path::Path) -> ExitCode {
    let cfg = match load(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let runtime = match runtime(tokio::runtime::Builder::new_multi_thread()) {
        Ok(r) => r,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        // Before anything listens: see `shutdown_signal`.
        let shutdown = pixeld::serve::shutdown_signal();
        let started = async {
            let bind = |addr| async move {
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::Listen { addr, source })
            };
            // A socket per serving thread on the same port (SO_REUSEPORT).
            let listener = pixeld::http::bind_public(cfg.server.listen)
                .and_then(tokio::net::TcpListener::from_std)
                .map_err(|source| StartError::Listen {
                    addr: cfg.server.listen,
                    source,
                })?;
            let admin = bind(cfg.server.admin_listen)
                .await
                .map_err(StartError::admin)?;
            let (outputs, embedded) = pixeld::serve::outputs(&cfg)?;
            let services = Services::start(&cfg, &outputs)?;
            pixeld::reload::Reloader::install(&services.app, config, &cfg);
            Ok::<_, StartError>((listener, admin, services, embedded))
        };
        match started.await {
            Ok((listener, admin, services, _embedded)) => {
                let served = services.run(listener, admin, shutdown).await;
                match served {
                    Ok(_) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("{}", cfg.redactor.redact(&e.to_string()));
                        ExitCode::from(2)
                    }
                }
            }
            Err(e) => {
                // A librdkafka error may quote a setting's value.
                eprintln!("{}", cfg.redactor.redact(&e.to_string()));
                ExitCode::from(2)
            }
        }
    })
}
