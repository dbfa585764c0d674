//! Configuration: the TOML file's shape ([`Config`]), loading with every
//! problem reported at once ([`load`]), and the lookup tables the request path
//! uses ([`Catalog`]).
//!
//! Every struct denies unknown keys; every default is written next to its field.

mod catalog;
pub mod env;
pub mod forward;
pub mod ivt;
mod load;
pub mod redact;
pub mod redirect;
mod secret;
pub mod template;
mod types;
mod validate;
mod validate_forward;

pub use catalog::{
    Catalog, ClickTracker, ConversionPixel, FireList, FirePixel, ImpressionTracker, Segment,
};
pub use forward::{DestinationConfig, DestinationKind, ForwardConfig, HttpMethod, StartFrom};
pub use ivt::IvtList;
pub use load::{load, parse, parse_with_env, ConfigError, Problem};
pub use redirect::AllowList;
pub use secret::{BearerToken, Secret};
pub use types::{
    parse_net, AttributionMode, Durability, IpPolicy, KafkaAcks, KafkaCompression, Repeat,
    SameSite, Transactions,
};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::ids::{
    AdvertiserId, ClickTrackerId, LineItemId, PixelId, PlacementId, PublisherId, SegmentId,
    TrackerId,
};

/// The whole file. Every section is optional.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub cookie: CookieConfig,
    pub redirect: RedirectConfig,
    pub kafka: KafkaConfig,
    pub network: NetworkConfig,
    pub advertisers: Vec<AdvertiserConfig>,
    pub line_items: Vec<LineItemConfig>,
    pub impression_trackers: Vec<ImpressionTrackerConfig>,
    pub click_trackers: Vec<ClickTrackerConfig>,
    pub conversion_pixels: Vec<ConversionPixelConfig>,
    pub segments: Vec<SegmentConfig>,
    pub attribution: AttributionConfig,
    pub journal: JournalConfig,
    pub ivt: IvtConfig,
    pub privacy: PrivacyConfig,
    pub api_keys: Vec<ApiKeyConfig>,
    pub sync: SyncConfig,
    pub forward: ForwardConfig,
    pub destinations: Vec<DestinationConfig>,
    /// Keys set by `PIXELD_<SECTION>__<KEY>` variables: (key, variable).
    #[serde(skip)]
    pub from_env: Vec<(String, String)>,
    /// Scrubs this config's values from a message (a start-up error that
    /// quotes a librdkafka setting, say).
    #[serde(skip)]
    pub redactor: redact::Redactor,
}

/// `[privacy]`: what pixeld keeps about a person, and consent.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// The client address as recorded: `full`, `truncate` (IPv4 to /24,
    /// IPv6 to /48) or `drop`; applied before the event is encoded or
    /// journaled. Default `full`.
    pub ip: IpPolicy,
    /// This deployment's IAB TCF vendor id. With it set, a request with
    /// `gdpr=1` needs that vendor's consent for purpose 1 (device storage)
    /// to read or set the cookie, and for purpose 7 (measurement) to be
    /// attributed. Default none: consent strings are recorded, not enforced.
    pub tcf_vendor_id: Option<u16>,
}

/// `[ivt]`: invalid-traffic flags.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IvtConfig {
    /// More `CATEGORY PATTERN` lines on top of the shipped
    /// `config/ivt-user-agents.txt`. Default none.
    pub file: Option<PathBuf>,
    /// The shipped list plus `file`, read at load (a bad file is a config
    /// problem, never a silent fallback to the shipped list).
    #[serde(skip)]
    pub list: IvtList,
}

/// `[journal]`: the local journal between answering a pixel and Kafka.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    /// `journal` (default: on disk before the response, survives a crash),
    /// `fsync` (also fdatasync'ed, survives power loss) or `memory` (no journal).
    pub durability: Durability,
    /// Disk budget for `server.data_dir/journal`; beyond it events are answered
    /// but dropped (and counted). Default 10 GiB.
    pub max_bytes: u64,
    /// Size at which a new segment file starts. Default 64 MiB.
    pub segment_bytes: u64,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            durability: Durability::Journal,
            max_bytes: 10 << 30,
            segment_bytes: 64 << 20,
        }
    }
}

/// `[attribution]`: the engine that credits conversions.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttributionConfig {
    /// Credit conversions at all. Default true.
    pub enabled: bool,
    /// `in_process` (the engine inside `pixeld serve`) or `cluster` (`serve`
    /// only publishes; `pixeld attribute` members consume the topics).
    /// Default `in_process`.
    pub mode: AttributionMode,
    /// The consumer group of the `pixeld attribute` members. Default `pixeld-attribution`.
    pub group_id: String,
    /// How late (ms after its time) an event may arrive and still be applied
    /// in time order by `pixeld attribute`; later ones are applied and flagged
    /// `late`. Default 10000.
    pub grace_ms: u64,
    /// An input of `pixeld attribute` dated further ahead of the member's
    /// clock than this is applied as it arrives and counted
    /// (`attribution_future_inputs_total`), never held for the watermark:
    /// one far-future `ts` would otherwise pin its partition's commit for
    /// good. Default 300000 (5 minutes).
    pub max_future_ms: u64,
    /// `/readyz` and `/metrics` of `pixeld attribute`. Default `127.0.0.1:9465`.
    #[serde(deserialize_with = "types::socket_addr")]
    pub listen: SocketAddr,
    /// How often `pixeld attribute` writes changed users to the changelog,
    /// waits for its records and commits its input offsets. Default 1000 ms.
    pub commit_interval_ms: u64,
    /// A member that sends no heartbeat for this long leaves the group and
    /// its partitions move. Default 10000 ms.
    pub session_timeout_ms: u32,
    /// Inputs queued for the engine before new ones are dropped (and counted). Default 262144.
    pub channel_capacity: usize,
    /// How often the state is written to `server.data_dir`. Default 60 s.
    pub snapshot_interval_secs: u64,
    /// How often expired touches and repeat marks are dropped. Default 60 s.
    pub sweep_interval_secs: u64,
    /// Most users the engine keeps touches of; beyond it the least recently
    /// touched are evicted (and counted), so a cookieless crowd or a bot
    /// flood cannot grow the state until the process dies. About 150 bytes
    /// per user. Default 10000000.
    pub max_users: usize,
    /// `auto` (probe the brokers at start: Kafka transactions where they
    /// work, else at least once), `required` (refuse to start without them)
    /// or `off`. Read by `pixeld attribute`. Default `auto`.
    pub transactions: Transactions,
}

impl Default for AttributionConfig {
    fn default() -> Self {
        AttributionConfig {
            enabled: true,
            mode: AttributionMode::InProcess,
            group_id: "pixeld-attribution".into(),
            grace_ms: 10_000,
            max_future_ms: 300_000,
            listen: SocketAddr::from(([127, 0, 0, 1], 9465)),
            commit_interval_ms: 1_000,
            session_timeout_ms: 10_000,
            channel_capacity: 262_144,
            snapshot_interval_secs: 60,
            sweep_interval_secs: 60,
            max_users: 10_000_000,
            transactions: Transactions::Auto,
        }
    }
}

/// `[server]`: the HTTP side.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on. Default `0.0.0.0:8080`.
    #[serde(deserialize_with = "types::socket_addr")]
    pub listen: SocketAddr,
    /// Base URL the exported tags point at (`pixeld tags`). Default `http://localhost:8080`.
    pub public_url: String,
    /// Proxies whose `X-Forwarded-For` is believed (CIDR list; a bare
    /// address is a /32 or /128). Default none.
    #[serde(deserialize_with = "types::nets")]
    pub trusted_proxies: Vec<IpNet>,
    /// Longest raw query a pixel accepts; longer ones are recorded as invalid. Default 8192.
    pub max_query_bytes: usize,
    /// Longest request line (method, path, query, version); longer ones get 414. Default 16384.
    pub max_request_line_bytes: usize,
    /// Largest request head (request line plus headers) buffered; beyond it 431. Default 32768.
    pub max_header_bytes: usize,
    /// Open connections at most; beyond it new ones get a 503 and are closed. Default 10000.
    pub max_connections: usize,
    /// Serving threads, each with its own runtime and listener socket; 0 is
    /// one per core the process may run on (its CPU affinity). Default 0.
    pub threads: usize,
    /// Requests per second per client IP before events are marked
    /// `rate_limited` (still answered, kept out of attribution); 0 is off. Default 0.
    pub rate_limit_per_ip: u32,
    /// IPv4 clients are counted by this network prefix for the rate limit. Default 32.
    pub rate_limit_ipv4_prefix: u8,
    /// IPv6 clients are counted by this network prefix: a host holds a whole
    /// /64, so counting addresses would never limit it. Default 64.
    pub rate_limit_ipv6_prefix: u8,
    /// A client must send its whole request head within this, and an idle
    /// keep-alive connection is closed after it. Default 10000 ms.
    pub header_read_timeout_ms: u64,
    /// On SIGTERM, in-flight requests get this long to finish. Default 10000 ms.
    pub shutdown_timeout_ms: u64,
    /// Where state that survives a restart is kept (the attribution snapshot). Default `data`.
    pub data_dir: PathBuf,
    /// The operators' listener: `/metrics`, `/readyz`, `/healthz` and
    /// `POST /-/reload`. The public listener never serves `/metrics`.
    /// Default `127.0.0.1:9090`.
    #[serde(deserialize_with = "types::socket_addr")]
    pub admin_listen: SocketAddr,
    /// On SIGTERM, `/readyz` answers 503 at once while pixels are still
    /// served for this long (the load balancer's time to notice), then
    /// shutdown proceeds. Default 5000 ms.
    pub drain_ms: u64,
    /// Also reload when the config file changes (checked every second), as
    /// on SIGHUP. Default false.
    pub watch_config: bool,
    /// More `Host` names the admin listener answers to (`"pixeld-admin.example"`,
    /// any port; `"pixeld-0.pixeld:9090"`, that port); its own address and, on
    /// loopback, `localhost` always do. Others get 403 (DNS rebinding). Default none.
    pub admin_hosts: Vec<String>,
    /// Bearer token for every admin route but `/healthz` (`Authorization:
    /// Bearer <token>`; at least 16 characters, `openssl rand -hex 32`), or
    /// `admin_token_file`. Default none: `POST /-/reload` then needs
    /// `Content-Type: application/json`, which no page can send cross-origin.
    pub admin_token: Option<BearerToken>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            public_url: "http://localhost:8080".into(),
            trusted_proxies: Vec::new(),
            max_query_bytes: 8192,
            max_request_line_bytes: 16384,
            max_header_bytes: 32768,
            max_connections: 10_000,
            threads: 0,
            rate_limit_per_ip: 0,
            rate_limit_ipv4_prefix: 32,
            rate_limit_ipv6_prefix: 64,
            header_read_timeout_ms: 10_000,
            shutdown_timeout_ms: 10_000,
            data_dir: PathBuf::from("data"),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            drain_ms: 5_000,
            watch_config: false,
            admin_hosts: Vec::new(),
            admin_token: None,
        }
    }
}

/// `[cookie]`: the user-id cookie.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CookieConfig {
    /// Cookie name. Default `uid`.
    pub name: String,
    /// `Domain` attribute, to share the id across subdomains. Default none (host-only).
    pub domain: Option<String>,
    /// Lifetime of an issued id. Default 365 days.
    pub max_age_days: u32,
    /// Adds `Secure` (required by browsers for `SameSite=None`). Default true.
    pub secure: bool,
    /// 32 hex characters (128 bits) that sign issued ids; every instance
    /// behind one domain needs the same one. Default none: a key generated
    /// once into `data_dir/cookie.key`.
    pub secret: Option<Secret>,
    /// Secrets being rotated out: ids they signed are still accepted and
    /// re-issued under `secret`. Default empty.
    pub previous_secrets: Vec<Secret>,
    /// `SameSite` attribute: `none` (sent in third-party contexts; needs
    /// `secure`), `lax` or `strict`. Default: `none` when `secure`, else `lax`.
    pub same_site: Option<SameSite>,
    /// Tracking domains this deployment answers on (e.g. `["track.example",
    /// "px.example.net"]`): the cookie's `Domain` is the longest entry the
    /// request's `Host` ends with (host-only when none does). Overrides
    /// `domain`. Default empty.
    pub domains: Vec<String>,
    /// Cookie bounce: a pixel request without our cookie is answered with a
    /// 302 to itself carrying the new cookie; if the bounced request still
    /// has none, the browser refuses cookies and the event is recorded once,
    /// without an id, with the warning `cookies_blocked`. Default false.
    pub bounce: bool,
}

impl Default for CookieConfig {
    fn default() -> Self {
        CookieConfig {
            name: "uid".into(),
            domain: None,
            max_age_days: 365,
            secure: true,
            secret: None,
            previous_secrets: Vec::new(),
            same_site: None,
            domains: Vec::new(),
            bounce: false,
        }
    }
}

/// `[redirect]`: where pixeld may send browsers.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedirectConfig {
    /// `example.com` or `*.example.com` entries; empty allows any host. Default empty.
    pub allowed_hosts: AllowList,
    /// The landing-URL parameter that carries a click id (click trackers
    /// with `append_click_id`). Default `pxclid`.
    pub click_id_param: String,
    /// The click tracker parameter that carries the traffic source's own
    /// click id, recorded as the click's `source_click_id` for postbacks.
    /// Default `sclid`.
    pub source_click_param: String,
}

impl Default for RedirectConfig {
    fn default() -> Self {
        RedirectConfig {
            allowed_hosts: AllowList::default(),
            click_id_param: "pxclid".into(),
            source_click_param: "sclid".into(),
        }
    }
}

/// `[sync]`: user-id sync with partners (`/getuid`, `/getuidnb`,
/// `/getuidj`, `/getuidp`). Both keys are reloadable.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// Partner hosts `/getuid` and `/getuidnb` may redirect to, written as
    /// `redirect.allowed_hosts`; empty turns sync off (unlike
    /// `redirect.allowed_hosts`, empty never means any host). Default empty.
    pub allowed_hosts: AllowList,
    /// Exact origins (`https://partner.example`, a port if not the
    /// default) whose pages may read `/getuidj` with credentials. Default empty.
    pub cors_origins: Vec<String>,
    /// Partners' sync pixels (`{ url, format }`, `${UID}` filled in), fired
    /// by the JavaScript form of segment and conversion pixels for a
    /// browser with an id. Their hosts must be on `allowed_hosts`. Default
    /// empty.
    pub pixels: Vec<PixelConfig>,
}

/// `[kafka]`: where events go.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma separated; empty starts the embedded in-memory cluster. Default empty.
    pub brokers: String,
    /// `client.id` seen by the brokers. Default `pixeld`.
    pub client_id: String,
    /// `none`, `gzip`, `snappy`, `lz4` or `zstd`. Default `lz4`.
    pub compression: KafkaCompression,
    /// How long the producer waits to fill a batch. Default 50 ms: events are
    /// already answered (and journaled), and one partition's batch costs
    /// about the same CPU for 6 events as for 60.
    pub linger_ms: u32,
    /// `all`, `1` or `0`. Default `all` (with idempotence on).
    pub acks: KafkaAcks,
    /// Partitions of each topic pixeld creates. Default 6.
    pub partitions: i32,
    /// Replication factor of each topic pixeld creates. Default 1; use 3 in production.
    pub replication_factor: i32,
    /// On shutdown, how long to wait for the producer to deliver what it holds. Default 10000 ms.
    pub flush_timeout_ms: u64,
    /// Events the producer may hold in memory before refusing new ones. Default 1000000.
    pub queue_max_messages: u32,
    /// Topic per event type.
    pub topics: TopicsConfig,
    /// Passed to librdkafka as they stand (`security.protocol`, `sasl.*`, `ssl.*`, ...); they win over the settings above.
    pub librdkafka: BTreeMap<String, toml::Value>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: String::new(),
            client_id: "pixeld".into(),
            compression: KafkaCompression::Lz4,
            linger_ms: 50,
            acks: KafkaAcks::All,
            partitions: 6,
            replication_factor: 1,
            flush_timeout_ms: 10_000,
            queue_max_messages: 1_000_000,
            topics: TopicsConfig::default(),
            librdkafka: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    /// How long librdkafka keeps retrying a record before it reports it
    /// failed: `message.timeout.ms` from the `librdkafka` table, else
    /// `default` (the journal shipper then produces the record again).
    pub fn message_timeout(&self, default: Duration) -> Duration {
        self.librdkafka
            .get("message.timeout.ms")
            .and_then(|v| v.as_integer().or_else(|| v.as_str()?.parse().ok()))
            .map_or(default, |ms| Duration::from_millis(ms.max(1) as u64))
    }
}

/// `[kafka.topics]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    /// Default `pixel.impressions`.
    pub impressions: String,
    /// Default `pixel.clicks`.
    pub clicks: String,
    /// Default `pixel.conversions`.
    pub conversions: String,
    /// Default `pixel.segments`.
    pub segments: String,
    /// Requests that could not become an event. Default `pixel.invalid`.
    pub invalid: String,
    /// Attribution records. Default `pixel.attributions`.
    pub attributions: String,
    /// Retractions and restatements (`POST /v1/adjustments`), keyed and
    /// partitioned like conversions. Default `pixel.adjustments`.
    pub adjustments: String,
    /// Partners' ids for browsers (`/mapuid`), keyed by our uid. Default
    /// `pixel.usersync`.
    pub usersync: String,
    /// `pixeld forward`'s delivery log: one message per call attempt's
    /// outcome. Default `pixel.postbacks`.
    pub postbacks: String,
    /// `pixeld forward`'s calls given up on, with the destination, the
    /// last status and the body. Default `pixel.postbacks.dead`.
    pub postbacks_dead: String,
    /// The state of `pixeld attribute`, compacted, co-partitioned with the
    /// inputs. Default `pixel.attribution-state`.
    pub attribution_state: String,
    /// With `attribution.mode = "cluster"`: a copy of every conversion
    /// that has an order id, keyed by its pixel and order id, so that the
    /// member owning that key can find the user of an adjustment named by
    /// its order alone. Default `pixel.orders`.
    pub orders: String,
    /// `pixeld attribute`'s own: adjustments named by their order alone,
    /// sent on by the member that found their user to the member that
    /// holds that user's orders; keyed by user, co-partitioned with the
    /// inputs. Default `pixel.adjustments-by-user`.
    pub adjustments_by_user: String,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        TopicsConfig {
            impressions: "pixel.impressions".into(),
            clicks: "pixel.clicks".into(),
            conversions: "pixel.conversions".into(),
            segments: "pixel.segments".into(),
            invalid: "pixel.invalid".into(),
            attributions: "pixel.attributions".into(),
            adjustments: "pixel.adjustments".into(),
            usersync: "pixel.usersync".into(),
            postbacks: "pixel.postbacks".into(),
            postbacks_dead: "pixel.postbacks.dead".into(),
            attribution_state: "pixel.attribution-state".into(),
            orders: "pixel.orders".into(),
            adjustments_by_user: "pixel.adjustments-by-user".into(),
        }
    }
}

/// How a third-party or piggyback pixel is fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelFormat {
    /// An image request (`new Image().src`, or the image response's one redirect).
    Img,
    /// A script element; only the JavaScript response can fire it.
    Js,
}

/// A third-party or piggyback pixel. `${CACHEBUSTER}` and `${UID}` in the URL
/// are filled in when it fires.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PixelConfig {
    pub url: String,
    pub format: PixelFormat,
}

/// `[network]`: pixels that fire for every impression tracker.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    pub pixels: Vec<PixelConfig>,
}

/// `[[api_keys]]`: who may call `POST /v1/conversions` and
/// `POST /v1/adjustments`, and for which advertisers' pixels.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// A name for the key (1 to 32 letters, digits, `-`, `_`): recorded on
    /// the events it reports and used as the metrics' `key` label.
    pub id: String,
    /// The bearer token (`Authorization: Bearer <secret>`), at least 16
    /// visible characters; or `secret_file`, a file holding it.
    #[serde(default)]
    pub secret: Option<BearerToken>,
    /// The advertisers whose conversion pixels the key may report.
    pub advertisers: Vec<AdvertiserId>,
}

/// `[[advertisers]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdvertiserConfig {
    pub id: AdvertiserId,
    #[serde(default)]
    pub name: Option<String>,
    /// Third-party pixels fired for every impression tracker of this advertiser.
    #[serde(default)]
    pub pixels: Vec<PixelConfig>,
}

/// `[[line_items]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineItemConfig {
    pub id: LineItemId,
    pub advertiser: AdvertiserId,
    #[serde(default)]
    pub name: Option<String>,
    /// Conversion pixels whose conversions this line item's touches can earn (at most 20).
    #[serde(default)]
    pub conversion_pixels: Vec<PixelId>,
}

/// `[[impression_trackers]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImpressionTrackerConfig {
    pub id: TrackerId,
    pub line_item: LineItemId,
    pub publisher: PublisherId,
    #[serde(default)]
    pub placement: Option<PlacementId>,
    #[serde(default)]
    pub name: Option<String>,
    /// The tracker's own third-party pixels.
    #[serde(default)]
    pub pixels: Vec<PixelConfig>,
    /// Segments the user joins, server-side, when the impression is recorded.
    #[serde(default)]
    pub add_segments: Vec<SegmentId>,
}

/// `[[click_trackers]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickTrackerConfig {
    pub id: ClickTrackerId,
    pub line_item: LineItemId,
    pub publisher: PublisherId,
    #[serde(default)]
    pub placement: Option<PlacementId>,
    #[serde(default)]
    pub name: Option<String>,
    /// Landing page when the request carries no `redir`.
    #[serde(default)]
    pub click_url: Option<String>,
    /// Adds a signed click id (`redirect.click_id_param`) to the landing
    /// URL, so the conversion can be credited without a third-party cookie.
    #[serde(default)]
    pub append_click_id: bool,
    /// Segments the user joins, server-side, when the click is recorded.
    #[serde(default)]
    pub add_segments: Vec<SegmentId>,
}

/// `[[conversion_pixels]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversionPixelConfig {
    pub id: PixelId,
    pub advertiser: AdvertiserId,
    #[serde(default)]
    pub name: Option<String>,
    /// `hybrid` (default), `view` or `click`.
    #[serde(default)]
    pub trigger: Trigger,
    /// Default 1440 (1 day), maximum 43200 (30 days); 0 means the maximum.
    #[serde(default = "default_post_view")]
    pub post_view_minutes: u32,
    /// Default 20160 (14 days), maximum 129600 (90 days); 0 means the maximum.
    #[serde(default = "default_post_click")]
    pub post_click_minutes: u32,
    /// `all`, `one_per_user` (default) or `every N minutes` (N at most 32767).
    #[serde(default = "default_repeat")]
    pub repeat: Repeat,
    /// A conversion whose `order_id` this pixel already saw for the same
    /// user (or click) within this many minutes is a duplicate: published,
    /// never counted. Default 10080 (7 days), maximum 129600 (90 days); 0
    /// turns it off.
    #[serde(default = "default_dedup")]
    pub dedup_minutes: u32,
    /// ISO 4217 code of the values this pixel reports (`EUR`), for the
    /// destinations that need one (Meta, Google, `${CURRENCY}`). Default none.
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub category: Option<Category>,
    /// Fired with the conversion: at most one `img` (the image response's one redirect).
    #[serde(default)]
    pub piggybacks: Vec<PixelConfig>,
}

fn default_post_view() -> u32 {
    1440
}
fn default_post_click() -> u32 {
    20160
}
fn default_dedup() -> u32 {
    10_080
}
fn default_repeat() -> Repeat {
    Repeat::OnePerUser
}

/// Which touch a conversion is credited to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// The latest click in the post-click window, else the latest view in the post-view window.
    #[default]
    Hybrid,
    View,
    Click,
}

/// The conversion-pixel page's event categories.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    VisitLandingPage,
    ViewAnItem,
    AddToCart,
    InitiateCheckout,
    AddPaymentInfo,
    Purchase,
    GenerateLead,
}

/// `[[segments]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentConfig {
    pub id: SegmentId,
    #[serde(default)]
    pub name: Option<String>,
    /// How long membership lasts: unset is the maximum, 259200 (180 days); 0 is this request only.
    #[serde(default)]
    pub expire_minutes: Option<u32>,
}
