//! One `[[destinations]]` entry, typed, and the call it makes for a record.

use std::collections::HashMap;
use std::time::Duration;

use super::record::{ForwardRecord, Status};
use super::{google, meta, url};
use crate::config::template::{Macro, Template};
use crate::config::{BearerToken, Config, DestinationConfig, DestinationKind, HttpMethod};
use crate::ids::{AdvertiserId, EventId, LineItemId, PixelId};

/// A destination as `pixeld forward` runs it.
#[derive(Debug)]
pub struct Destination {
    pub id: String,
    pub kind: DestinationKind,
    pub method: HttpMethod,
    pub timeout: Duration,
    pub max_attempts: u32,
    pub rate_per_s: u32,
    pub concurrency: usize,
    url: String,
    template: Template,
    advertisers: Vec<AdvertiserId>,
    line_items: Vec<LineItemId>,
    pixels: Vec<PixelId>,
    token: Option<BearerToken>,
    pub event_name: String,
    pub conversion_action: String,
    /// Mixed into the record's event id for the idempotency key.
    tag: u64,
}

/// What the destination is told, ready to send. Its `Debug` shows no
/// token ([`BearerToken`]'s own hides it).
#[derive(Clone, Debug)]
pub struct Call {
    pub method: HttpMethod,
    pub url: String,
    /// JSON, for the kinds that take a body.
    pub body: Option<Vec<u8>>,
    /// The same for every attempt and every replay of this record to
    /// this destination.
    pub idempotency_key: String,
    pub bearer: Option<BearerToken>,
}

crate::indexed::indexed_enum! {
    /// Why a record is not sent to a destination (the `result` label).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Skip {
        /// Its advertiser, line item or pixel is not in the filters.
        Filtered => "filtered",
        /// Not counted, or an adjustment that was refused.
        NotForwarded => "not_forwarded",
        /// The destination needs a click id (the source's own for a postback,
        /// a Google one for Google) and the credited click carried none.
        NoClickId => "no_click_id",
        /// Meta's API needs something to match the person by (`fbc`).
        NoUserData => "no_user_data",
        /// Adjustments are not sent to this kind.
        NotSupported => "not_supported",
    }
}

/// Per conversion pixel, the currency its values are in.
pub type Currencies = HashMap<PixelId, String>;

pub fn currencies(cfg: &Config) -> Currencies {
    cfg.conversion_pixels
        .iter()
        .filter_map(|p| Some((p.id, p.currency.clone()?)))
        .collect()
}

impl Destination {
    pub fn new(d: &DestinationConfig) -> Destination {
        Destination {
            id: d.id.clone(),
            kind: d.kind,
            method: d.method(),
            timeout: Duration::from_millis(d.timeout_ms),
            max_attempts: d.max_attempts,
            rate_per_s: d.rate_per_s,
            concurrency: d.concurrency,
            url: d.url.clone(),
            template: d.template.clone(),
            advertisers: d.advertisers.clone(),
            line_items: d.line_items.clone(),
            pixels: d.pixels.clone(),
            token: d.token.clone(),
            event_name: d.event_name.clone().unwrap_or_else(|| "Purchase".into()),
            conversion_action: d.conversion_action.clone().unwrap_or_default(),
            tag: fnv1a(d.id.as_bytes()),
        }
    }

    fn matches(&self, r: &ForwardRecord) -> bool {
        fn any_or<T: PartialEq>(list: &[T], v: T) -> bool {
            list.is_empty() || list.contains(&v)
        }
        any_or(&self.advertisers, r.advertiser_id)
            && any_or(&self.pixels, r.pixel_id)
            && (self.line_items.is_empty()
                || r.line_item_id.is_some_and(|l| self.line_items.contains(&l)))
    }

    /// One per record and destination, as a UUID.
    pub fn idempotency_key(&self, record: EventId) -> String {
        EventId::derive(record, self.tag)
            .to_hyphenated()
            .as_str()
            .to_string()
    }

    /// The call for `r`, or why there is none.
    pub fn call(&self, r: &ForwardRecord, currencies: &Currencies) -> Result<Call, Skip> {
        let status = r.status().ok_or(Skip::NotForwarded)?;
        if !self.matches(r) {
            return Err(Skip::Filtered);
        }
        let key = self.idempotency_key(r.event_id);
        let currency = currencies.get(&r.pixel_id).map(String::as_str);
        let (url, body) = match self.kind {
            DestinationKind::Postback => {
                if self.template.uses(Macro::ClickId) && r.source_click().is_none() {
                    return Err(Skip::NoClickId);
                }
                let values = url::Values {
                    record: r,
                    status,
                    currency,
                    key: &key,
                };
                (url::expand(&self.template, &values), None)
            }
            DestinationKind::MetaCapi if status != Status::Approved => {
                return Err(Skip::NotSupported)
            }
            DestinationKind::MetaCapi => {
                let body = meta::body(r, &self.event_name, currency).ok_or(Skip::NoUserData)?;
                (self.url.clone(), Some(body))
            }
            DestinationKind::GoogleAdsUpload if status != Status::Approved => {
                return Err(Skip::NotSupported)
            }
            DestinationKind::GoogleAdsUpload => {
                let body =
                    google::body(r, &self.conversion_action, currency).ok_or(Skip::NoClickId)?;
                (self.url.clone(), Some(body))
            }
        };
        Ok(Call {
            method: self.method,
            url,
            body,
            idempotency_key: key,
            bearer: self.token.clone(),
        })
    }
}

/// FNV-1a: a stable tag per destination id (a restart or another
/// instance derives the same idempotency keys).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(tail: &str) -> Config {
        let text = format!(
            "[[advertisers]]\nid = 100\n[[line_items]]\nid = 5001\nadvertiser = 100\nconversion_pixels = [7313]\n\
             [[conversion_pixels]]\nid = 7313\nadvertiser = 100\ncurrency = \"EUR\"\n{tail}"
        );
        crate::config::parse(&text, "t").unwrap()
    }

    fn record(fields: &str) -> ForwardRecord {
        serde_json::from_str(&format!(
            r#"{{"event_id":"0190b1e2-0000-8000-8000-000000000001","ts":1796593592000,
            "conversion_event_id":"0190b1e2-0000-7000-8000-000000000002","pixel_id":7313,
            "advertiser_id":100,"line_item_id":5001,"kind":"post_click","touch_ts":1796593500000,
            "order_id":"O 1&x","value_micros":12500000{fields}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn a_postback_fills_its_macros_url_encoded_and_needs_the_sources_own_click_id() {
        let cfg = config(
            "[[destinations]]\nid = \"net\"\nkind = \"postback\"\n\
             url = \"https://s.example/pb?c=${CLICK_ID}&o=${ORDER_ID}&v=${VALUE}&cur=${CURRENCY}&s=${STATUS}&li=${LINE_ITEM_ID}\"\n",
        );
        let d = Destination::new(&cfg.destinations[0]);
        let cur = currencies(&cfg);
        let call = d
            .call(
                &record(r#","counted":true,"source_click_id":"a b","source_click_kind":"source""#),
                &cur,
            )
            .unwrap();
        assert_eq!(
            call.url,
            "https://s.example/pb?c=a%20b&o=O%201%26x&v=12.5&cur=EUR&s=approved&li=5001"
        );
        assert_eq!(call.method, HttpMethod::Get);
        assert!(call.body.is_none());
        let gclid = r#","counted":true,"source_click_id":"G1","source_click_kind":"gclid""#;
        assert_eq!(d.call(&record(gclid), &cur).unwrap_err(), Skip::NoClickId);
        assert_eq!(
            d.call(&record(r#","counted":false,"reason":"duplicate""#), &cur)
                .unwrap_err(),
            Skip::NotForwarded
        );
        let refund = r#","counted":false,"adjustment":"retract","source_click_id":"S","source_click_kind":"source""#;
        assert!(d
            .call(&record(refund), &cur)
            .unwrap()
            .url
            .contains("s=retracted"));
        // The key is the same for the same record and destination, always.
        let again = d
            .call(
                &record(r#","counted":true,"source_click_id":"a b","source_click_kind":"source""#),
                &cur,
            )
            .unwrap();
        assert_eq!(again.idempotency_key, call.idempotency_key);
    }

    #[test]
    fn filters_and_kinds_decide_who_is_told() {
        let cfg = config(
            "[[line_items]]\nid = 5002\nadvertiser = 100\n\
             [[destinations]]\nid = \"g\"\nkind = \"google_ads_upload\"\nurl = \"https://g.example/up\"\n\
             conversion_action = \"customers/1/conversionActions/2\"\ntoken = \"google-token-0123456789\"\n\
             [[destinations]]\nid = \"other\"\nkind = \"postback\"\nurl = \"https://s.example/pb\"\nline_items = [5002]\n",
        );
        let g = Destination::new(&cfg.destinations[0]);
        let cur = currencies(&cfg);
        let body = g
            .call(
                &record(r#","counted":true,"source_click_id":"G1","source_click_kind":"gclid""#),
                &cur,
            )
            .unwrap()
            .body
            .unwrap();
        let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let c = &j["conversions"][0];
        assert_eq!(c["gclid"], "G1");
        assert_eq!(c["conversion_action"], "customers/1/conversionActions/2");
        assert_eq!(c["conversion_date_time"], "2026-12-06 21:46:32+00:00");
        assert_eq!(c["conversion_value"], 12.5);
        assert_eq!(c["currency_code"], "EUR");
        assert_eq!(c["order_id"], "O 1&x");
        let source = r#","counted":true,"source_click_id":"S","source_click_kind":"source""#;
        assert_eq!(g.call(&record(source), &cur).unwrap_err(), Skip::NoClickId);
        let retract = r#","counted":false,"adjustment":"retract","source_click_id":"G1","source_click_kind":"gclid""#;
        assert_eq!(
            g.call(&record(retract), &cur).unwrap_err(),
            Skip::NotSupported
        );
        assert_eq!(
            g.call(&record(r#","counted":true"#), &cur).unwrap_err(),
            Skip::NoClickId
        );
        let other = Destination::new(&cfg.destinations[1]);
        assert_eq!(
            other.call(&record(source), &cur).unwrap_err(),
            Skip::Filtered
        );
        assert_ne!(
            other.idempotency_key(record(source).event_id),
            g.idempotency_key(record(source).event_id),
            "one key per record and destination"
        );
    }

    #[test]
    fn meta_matches_on_fbclid_or_on_the_browsers_address_and_agent() {
        let cfg = config(
            "[[destinations]]\nid = \"m\"\nkind = \"meta_capi\"\nurl = \"https://m.example/events\"\ntoken = \"meta-access-token-0123456789\"\n",
        );
        let m = Destination::new(&cfg.destinations[0]);
        let cur = currencies(&cfg);
        let event = |fields: &str| {
            let body = m.call(&record(fields), &cur).unwrap().body.unwrap();
            let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
            j["data"][0].clone()
        };
        let browser = r#","client_user_agent":"Mozilla/5.0 (X11)","client_ip":"203.0.113.0","page_url":"https://shop.example/thanks""#;
        let fbclid = r#","counted":true,"source_click_id":"IwAR2","source_click_kind":"fbclid""#;
        let e = event(&format!("{fbclid}{browser}"));
        assert_eq!(e["user_data"]["fbc"], "fb.1.1796593500000.IwAR2");
        assert_eq!(e["user_data"]["client_user_agent"], "Mozilla/5.0 (X11)");
        assert_eq!(e["user_data"]["client_ip_address"], "203.0.113.0");
        assert_eq!(e["event_source_url"], "https://shop.example/thanks");
        assert_eq!(e["custom_data"]["currency"], "EUR");
        // Without an fbclid, the address and the agent together still match.
        let e = event(&format!(r#","counted":true{browser}"#));
        assert_eq!(e["user_data"].get("fbc"), None);
        assert_eq!(e["user_data"]["client_ip_address"], "203.0.113.0");
        assert_eq!(e["event_source_url"], "https://shop.example/thanks");
        // The fbclid alone is enough; its body has no browser fields.
        let e = event(fbclid);
        assert_eq!(e["user_data"].get("client_ip_address"), None);
        assert_eq!(e.get("event_source_url"), None);
        // Neither: an agent without an address (privacy.ip = "drop", an
        // opted-out browser) matches nobody, and nothing is sent.
        let no_ip = r#","counted":true,"client_user_agent":"Mozilla/5.0","client_ip":null,"page_url":"https://shop.example/""#;
        assert_eq!(m.call(&record(no_ip), &cur).unwrap_err(), Skip::NoUserData);
        let no_agent = r#","counted":true,"client_ip":"203.0.113.0""#;
        assert_eq!(
            m.call(&record(no_agent), &cur).unwrap_err(),
            Skip::NoUserData
        );
    }
}
