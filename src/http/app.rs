//! Everything a request needs, built once from the config and shared by all
//! connections.

use std::sync::Arc;

use arc_swap::ArcSwap;
use ipnet::IpNet;

use super::cookie::{Cookies, Secret};
use super::rate_limit::RateLimiter;
use crate::config::{AllowList, Catalog, Config, IpPolicy, IvtList};
use crate::delivery::Delivery;
use crate::pixel::click_id::ClickIds;

pub struct App {
    /// Trackers, pixels and segments by id; shared with the attribution
    /// engine and swapped whole on reload.
    pub catalog: Arc<ArcSwap<Catalog>>,
    /// Hosts redirects may go to.
    pub allow: AllowList,
    /// Where events go; the handlers do not know how.
    pub delivery: Arc<Delivery>,
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
    /// The optional per-IP rate limit.
    pub rate_limit: Option<RateLimiter>,
    /// Flags crawlers, previews, prefetches and agent-less requests.
    pub ivt: IvtList,
    /// Signs and checks click ids (with the cookie secret).
    pub click_ids: ClickIds,
    /// `cookie.bounce`: test a new id with a redirect before trusting it.
    pub bounce: bool,
    /// `privacy.tcf_vendor_id`: enforce TCF consent for this vendor.
    pub tcf_vendor: Option<u16>,
    /// `privacy.ip`: how much of the address events keep.
    pub ip_policy: IpPolicy,
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
            delivery,
            rate_limit: (cfg.server.rate_limit_per_ip > 0).then(|| {
                RateLimiter::new(
                    cfg.server.rate_limit_per_ip,
                    cfg.server.rate_limit_ipv4_prefix,
                    cfg.server.rate_limit_ipv6_prefix,
                )
            }),
            ivt: cfg.ivt.list.clone(),
            allow: cfg.redirect.allowed_hosts.clone(),
            cookies: Cookies::new(&cfg.cookie, secret),
            click_ids: ClickIds::new(
                cfg.cookie.secret.unwrap_or(secret),
                cfg.cookie.previous_secrets.clone(),
                cfg.redirect.click_id_param.clone(),
            ),
            bounce: cfg.cookie.bounce,
            tcf_vendor: cfg.privacy.tcf_vendor_id,
            ip_policy: cfg.privacy.ip,
            trusted_proxies: cfg.server.trusted_proxies.clone(),
            max_query_bytes: cfg.server.max_query_bytes,
            max_request_line_bytes: cfg.server.max_request_line_bytes,
            max_header_bytes: cfg.server.max_header_bytes,
        }
    }
}
