//! Meta's Conversions API: one `data` event per counted conversion. The
//! `event_id` is the conversion's own, so Meta counts the browser pixel's
//! event and this one once.

use serde_json::{json, Map, Value};

use super::record::ForwardRecord;

/// The request body, or None when nothing in the record lets Meta match
/// the person: the record carries the click's `fbclid` (as `fbc`) only.
pub fn body(r: &ForwardRecord, event_name: &str, currency: Option<&str>) -> Option<Vec<u8>> {
    let fbc = match (
        r.source_click_kind.as_deref(),
        &r.source_click_id,
        r.touch_ts,
    ) {
        // fb.<subdomain index>.<creation time ms>.<fbclid>: the format of
        // Meta's own `_fbc` cookie, created at the click.
        (Some("fbclid"), Some(id), Some(at)) => format!("fb.1.{at}.{id}"),
        _ => return None,
    };
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
    let event = json!({
        "event_name": event_name,
        "event_time": r.ts / 1000,
        "event_id": r.conversion_event_id.to_string(),
        "action_source": "website",
        "user_data": { "fbc": fbc },
        "custom_data": Value::Object(custom),
    });
    serde_json::to_vec(&json!({ "data": [event] })).ok()
}
