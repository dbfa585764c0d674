//! `[forward]` and `[[destinations]]`: `pixeld forward`, which calls
//! traffic sources and ad platforms for attribution records.

use std::net::SocketAddr;

use serde::Deserialize;

use super::template::Template;
use super::{types, BearerToken};
use crate::ids::{AdvertiserId, LineItemId, PixelId};

/// `[forward]`: the service as a whole.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardConfig {
    /// The consumer group of the `pixeld forward` instances. Default `pixeld-forward`.
    pub group_id: String,
    /// `/readyz` and `/metrics` of `pixeld forward`. Default `127.0.0.1:9466`.
    #[serde(deserialize_with = "types::socket_addr")]
    pub listen: SocketAddr,
    /// Where a group that never committed starts: `latest` (records from
    /// now on; a first deployment does not replay months of postbacks) or
    /// `earliest`. Default `latest`.
    pub start_from: StartFrom,
    /// Calls waiting per destination; when one is full, the partitions
    /// feeding it pause. Default 1000.
    pub queue_capacity: usize,
    /// How often the offsets of records every destination has finished
    /// with are committed. Default 1000 ms.
    pub commit_interval_ms: u64,
    /// An instance that sends no heartbeat for this long leaves the group. Default 10000 ms.
    pub session_timeout_ms: u32,
    /// The first retry's delay; it doubles with each attempt, with jitter. Default 1000 ms.
    pub backoff_ms: u64,
    /// The longest delay between two attempts (a `Retry-After` included). Default 300000 ms.
    pub max_backoff_ms: u64,
    /// How long SIGTERM waits for calls in flight before leaving. Default 10000 ms.
    pub drain_ms: u64,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        ForwardConfig {
            group_id: "pixeld-forward".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 9466)),
            start_from: StartFrom::Latest,
            queue_capacity: 1000,
            commit_interval_ms: 1000,
            session_timeout_ms: 10_000,
            backoff_ms: 1000,
            max_backoff_ms: 300_000,
            drain_ms: 10_000,
        }
    }
}

/// `forward.start_from`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    Latest,
    Earliest,
}

impl StartFrom {
    /// librdkafka's `auto.offset.reset`.
    pub fn as_str(self) -> &'static str {
        match self {
            StartFrom::Latest => "latest",
            StartFrom::Earliest => "earliest",
        }
    }
}

crate::indexed::indexed_enum! {
    /// What a destination speaks.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum DestinationKind {
        /// A traffic source's postback URL, a template of `${MACRO}`s.
        Postback => "postback",
        /// Meta's Conversions API (a JSON body of `data` events).
        MetaCapi => "meta_capi",
        /// Google Ads click conversions (a JSON body of `conversions`).
        GoogleAdsUpload => "google_ads_upload",
    }
}

/// `destinations[].method`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    Post,
}

/// `[[destinations]]`: one place records are told to.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// A name (1 to 32 letters, digits, `-`, `_`): the metrics' label, the
    /// delivery log's `destination`, part of the idempotency key.
    pub id: String,
    pub kind: DestinationKind,
    /// For `postback` a template (`${CLICK_ID}`, `${VALUE}`, ...; every
    /// value URL-encoded); for the others the endpoint.
    pub url: String,
    /// Default GET for `postback`, POST (a JSON body) for the others.
    #[serde(default)]
    pub method: Option<HttpMethod>,
    /// Only records of these advertisers; empty: any.
    #[serde(default)]
    pub advertisers: Vec<AdvertiserId>,
    /// Only records credited to these line items; empty: any.
    #[serde(default)]
    pub line_items: Vec<LineItemId>,
    /// Only records of these conversion pixels; empty: any.
    #[serde(default)]
    pub pixels: Vec<PixelId>,
    /// One attempt's limit. Default 5000 ms.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Attempts before the call is dead-lettered. Default 8.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Calls started per second at most. Default 50.
    #[serde(default = "default_rate")]
    pub rate_per_s: u32,
    /// Calls in flight at once. Default 8.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Sent as `Authorization: Bearer <token>` (Meta's access token, a
    /// Google OAuth token); or `token_file`, a file holding it.
    #[serde(default)]
    pub token: Option<BearerToken>,
    /// `meta_capi`: the `event_name`. Default `Purchase`.
    #[serde(default)]
    pub event_name: Option<String>,
    /// `google_ads_upload`: the `conversion_action` resource name
    /// (`customers/N/conversionActions/M`).
    #[serde(default)]
    pub conversion_action: Option<String>,
    /// Parsed from `url` when the config is read.
    #[serde(skip)]
    pub template: Template,
}

fn default_timeout() -> u64 {
    5000
}
fn default_attempts() -> u32 {
    8
}
fn default_rate() -> u32 {
    50
}
fn default_concurrency() -> usize {
    8
}

impl DestinationConfig {
    pub fn method(&self) -> HttpMethod {
        self.method.unwrap_or(match self.kind {
            DestinationKind::Postback => HttpMethod::Get,
            _ => HttpMethod::Post,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_destination_kind_deserializes_from_its_text() {
        for k in DestinationKind::ALL {
            let text = serde_json::to_string(k.as_str()).unwrap();
            assert_eq!(serde_json::from_str::<DestinationKind>(&text).unwrap(), k);
        }
    }
}
