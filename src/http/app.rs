//! Everything a request needs, built once from the config and shared by all
//! connections; the parts a reload may change are swapped whole ([`Live`]).

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use ipnet::IpNet;

use super::admin::AdminGuard;
use super::api::ApiKeys;
use super::cookie::{Cookies, Secret};
use super::rate_limit::RateLimiter;
use super::reload_queue::ReloadQueue;
use crate::config::{AllowList, Catalog, Config, IpPolicy, IvtList};
use crate::delivery::Delivery;
use crate::pixel::click_id::ClickIds;

/// The request-path settings a reload swaps (`SIGHUP`, `POST /-/reload`):
/// a request sees one whole version, never half of two.
pub struct Live {
    /// Hosts redirects may go to.
    pub allow: AllowList,
    /// Flags crawlers, previews, prefetches and agent-less requests.
    pub ivt: IvtList,
    /// The optional per-IP rate limit; kept across a reload that does not
    /// change it, so its counts carry on.
    pub rate_limit: Option<Arc<RateLimiter>>,
    /// `cookie.bounce`: test a new id with a redirect before trusting it.
    pub bounce: bool,
    /// `privacy.tcf_vendor_id`: enforce TCF consent for this vendor.
    pub tcf_vendor: Option<u16>,
    /// `privacy.ip`: how much of the address events keep.
    pub ip_policy: IpPolicy,
    /// `[[api_keys]]`: who may call the server-side API.
    pub api_keys: ApiKeys,
    /// `sync.allowed_hosts`: partners `/getuid` may send the id to; empty
    /// turns sync off.
    pub sync_hosts: AllowList,
    /// `sync.cors_origins`: origins whose scripts may read `/getuidj`.
    pub sync_origins: Vec<String>,
}

impl Live {
    /// From `cfg`, reusing `previous`'s rate limiter when the limit is the same.
    pub fn new(cfg: &Config, previous: Option<&Live>) -> Live {
        let s = &cfg.server;
        let rate_limit = (s.rate_limit_per_ip > 0).then(|| {
            previous
                .and_then(|p| p.rate_limit.clone())
                .filter(|r| {
                    r.settings()
                        == (
                            s.rate_limit_per_ip,
                            s.rate_limit_ipv4_prefix,
                            s.rate_limit_ipv6_prefix,
                        )
                })
                .unwrap_or_else(|| {
                    Arc::new(RateLimiter::new(
                        s.rate_limit_per_ip,
                        s.rate_limit_ipv4_prefix,
                        s.rate_limit_ipv6_prefix,
                    ))
                })
        });
        Live {
            allow: cfg.redirect.allowed_hosts.clone(),
            ivt: cfg.ivt.list.clone(),
            rate_limit,
            bounce: cfg.cookie.bounce,
            tcf_vendor: cfg.privacy.tcf_vendor_id,
            ip_policy: cfg.privacy.ip,
            api_keys: ApiKeys::new(cfg),
            sync_hosts: cfg.sync.allowed_hosts.clone(),
            sync_origins: cfg.sync.cors_origins.clone(),
        }
    }
}

/// Re-reads the config and swaps what may change while serving; set by the
/// service that owns the config file (`pixeld serve`).
pub trait Reload: Send + Sync {
    /// One line saying what happened (for `POST /-/reload`), `Err` when the
    /// file was refused and the running config stays. Blocks (it reads and
    /// parses the file): call it through [`App::reloads`].
    fn reload(&self) -> Result<String, String>;

    /// Reloads only if the file differs from the last one tried
    /// (`server.watch_config`).
    fn reload_if_changed(&self);
}

pub struct App {
    /// Trackers, pixels and segments by id; shared with the attribution
    /// engine and swapped whole on reload.
    pub catalog: Arc<ArcSwap<Catalog>>,
    /// The rest of what a reload may change.
    pub live: ArcSwap<Live>,
    /// Where events go; the handlers do not know how.
    pub delivery: Arc<Delivery>,
    /// The user-id cookie (a restart changes it: every instance must agree).
    pub cookies: Cookies,
    /// Signs and checks click ids (with the cookie secret).
    pub click_ids: ClickIds,
    /// `redirect.source_click_param` (a restart changes it).
    pub source_click_param: String,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Longest query a pixel accepts.
    pub max_query_bytes: usize,
    /// Longer request lines are answered 414.
    pub max_request_line_bytes: usize,
    /// Larger request heads are answered 431.
    pub max_header_bytes: usize,
    /// Set on SIGTERM: `/readyz` answers 503 while pixels are still served.
    pub draining: AtomicBool,
    /// `POST /-/reload` on the admin listener; unset where nothing owns a
    /// config file (tests that build an App by hand).
    pub reloader: OnceLock<Arc<dyn Reload>>,
    /// Runs reloads off the workers, one at a time, coalesced.
    pub reloads: ReloadQueue,
    /// What the admin listener refuses (`server.admin_hosts`, `server.admin_token`).
    pub admin: AdminGuard,
    /// Orders this instance answered lately, for the `duplicate_order_id`
    /// warning.
    pub recent_orders: super::recent_orders::RecentOrders,
    /// The attribution engine finds an adjustment's order by its id alone
    /// (`POST /v1/adjustments` without `uid` or `clid`): in process from
    /// its index of orders, in a fleet through the orders topic
    /// ([`crate::event::input::PartitionKey::Order`]).
    pub orders_by_id: bool,
}

impl App {
    /// `secret` signs ids when `cookie.secret` is unset (start-up passes the
    /// key kept in `data_dir`).
    pub fn new(
        cfg: &Config,
        catalog: Arc<ArcSwap<Catalog>>,
        delivery: Arc<Delivery>,
        secret: Secret,
    ) -> App {
        App {
            catalog,
            live: ArcSwap::from_pointee(Live::new(cfg, None)),
            delivery,
            cookies: Cookies::new(&cfg.cookie, secret),
            click_ids: ClickIds::new(
                cfg.cookie.secret.unwrap_or(secret),
                cfg.cookie.previous_secrets.clone(),
                cfg.redirect.click_id_param.clone(),
            ),
            source_click_param: cfg.redirect.source_click_param.clone(),
            trusted_proxies: cfg.server.trusted_proxies.clone(),
            max_query_bytes: cfg.server.max_query_bytes,
            max_request_line_bytes: cfg.server.max_request_line_bytes,
            max_header_bytes: cfg.server.max_header_bytes,
            draining: AtomicBool::new(false),
            reloader: OnceLock::new(),
            reloads: ReloadQueue::default(),
            admin: AdminGuard::new(&cfg.server),
            recent_orders: Default::default(),
            orders_by_id: cfg.attribution.enabled,
        }
    }
}
