//! Meta's Conversions API: one `data` event per counted conversion. The
//! `event_id` is the conversion's own, so Meta counts the browser pixel's
//! event and this one once.

use serde_json::{json, Map, Value};

use super::record::ForwardRecord;

/// The request body, or None when nothing in the record lets Meta match
/// the person: Meta matches on the click's `fbclid` (as `fbc`), or on the
/// browser's address and user agent together (either alone matches
/// nobody), so one of the two must be there.
pub fn body(r: &ForwardRecord, event_name: &str, currency: Option<&str>) -> Option<Vec<u8>> {
    let fbc = match (
        r.source_click_kind.as_deref(),
        &r.source_click_id,
        r.touch_ts,
    ) {
        // fb.<subdomain index>.<creation time ms>.<fbclid>: the format of
        // Meta's own `_fbc` cookie, created at the click.
        (Some("fbclid"), Some(id), Some(at)) => Some(format!("fb.1.{at}.{id}")),
        _ => None,
    };
    let browser = r.client_ip.is_some() && r.client_user_agent.is_some();
    if fbc.is_none() && !browser {
        return None;
    }
    let mut user = Map::new();
    if let Some(fbc) = fbc {
        user.insert("fbc".into(), json!(fbc));
    }
    if let Some(ua) = &r.client_user_agent {
        user.insert("client_user_agent".into(), json!(ua));
    }
    if let Some(ip) = &r.client_ip {
        user.insert("client_ip_address".into(), json!(ip));
    }
    let mut event = json!({
        "event_name": event_name,
        "event_time": r.ts / 1000,
        "event_id": r.conversion_event_id.to_string(),
        "action_source": "website",
        "user_data": Value::Object(user),
        "custom_data": custom_data(r, currency),
    });
    if let Some(url) = &r.page_url {
        event["event_source_url"] = json!(url);
    }
    serde_json::to_vec(&json!({ "data": [event] })).ok()
}

/// The conversion's value (with its pixel's currency) and order id.
fn custom_data(r: &ForwardRecord, currency: Option<&str>) -> Value {
    let mut custom = Map::new();
    if let Some(v) = r.value_micros {
        custom.insert("value".into(), json!(v as f64 / 1_000_000.0));
        if let Some(c) = currency {
            custom.insert("currency".into(), json!(c));
        }
    }
    if let Some(o) = &r.order_id {
        custom.insert("order_id".into(), json!(o));
    }
    Value::Object(custom)
}
