//! Everything a request needs, built once from the config and shared by all
//! connections.

use std::sync::Arc;

use arc_swap::ArcSwap;
use ipnet::IpNet;

use crate::attribution::Feed;
use crate::config::{Catalog, Config};
use crate::http::cookie::{Cookies, Secret};
use crate::http::ivt::IvtList;
use crate::http::rate_limit::RateLimiter;
use crate::journal::Journal;
use crate::pixel::redirect::AllowList;
use crate::sink::Sink;

pub struct App {
    /// Trackers, pixels and segments by id; shared with the attribution
    /// engine and swapped whole on reload.
    pub catalog: Arc<ArcSwap<Catalog>>,
    /// Hosts redirects may go to.
    pub allow: AllowList,
    /// Where events go.
    pub sink: Arc<dyn Sink>,
    /// The user-id cookie.
    pub cookies: Cookies,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Longest query a pixel accepts.
    pub max_query_bytes: usize,
    /// Longer request lines are answered 414.
    pub max_request_line_bytes: usize,
    /// Larger request heads are answered 431.
    pub max_header_bytes: usize,
    /// The attribution engine's input, when it runs fed by the handlers
    /// (`durability = memory`); with a journal it reads the journal instead.
    pub attribution: Option<Arc<Feed>>,
    /// The optional per-IP rate limit.
    pub rate_limit: Option<RateLimiter>,
    /// Flags crawlers, previews, prefetches and agent-less requests.
    pub ivt: IvtList,
    /// Where events go before Kafka, unless `durability = memory`.
    pub journal: Option<Arc<Journal>>,
}

impl App {
    /// `cfg` must have passed validation. Without `cookie.secret`, ids are
    /// signed with a key that lasts as long as the process (`serve` fills it).
    pub fn new(
        cfg: &Config,
        sink: Arc<dyn Sink>,
        catalog: Arc<ArcSwap<Catalog>>,
        attribution: Option<Arc<Feed>>,
        journal: Option<Arc<Journal>>,
    ) -> App {
        App {
            catalog,
            attribution,
            journal,
            rate_limit: (cfg.server.rate_limit_per_ip > 0)
                .then(|| RateLimiter::new(cfg.server.rate_limit_per_ip)),
            ivt: IvtList::load(cfg.ivt.file.as_deref()).unwrap_or_else(|_| {
                IvtList::load(None).expect("the built-in list parses (unit-tested)")
            }),
            allow: AllowList::new(&cfg.redirect.allowed_hosts).unwrap_or_default(),
            sink,
            cookies: Cookies::new(&cfg.cookie, Secret::generate()),
            trusted_proxies: cfg.server.trusted_nets(),
            max_query_bytes: cfg.server.max_query_bytes,
            max_request_line_bytes: cfg.server.max_request_line_bytes,
            max_header_bytes: cfg.server.max_header_bytes,
        }
    }
}
