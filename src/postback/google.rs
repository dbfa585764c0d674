//! Google Ads click conversions: the click's `gclid` (or `gbraid`,
//! `wbraid`), the conversion's time with its zone, value, currency and
//! order id, as the upload's JSON body.

use serde_json::{json, Map};

use super::record::ForwardRecord;

/// The request body, or None when the credited click has no Google click id.
pub fn body(r: &ForwardRecord, action: &str, currency: Option<&str>) -> Option<Vec<u8>> {
    let kind = r.source_click_kind.as_deref()?;
    if !matches!(kind, "gclid" | "gbraid" | "wbraid") {
        return None;
    }
    let mut c = Map::new();
    c.insert(kind.into(), json!(r.source_click_id.as_deref()?));
    c.insert("conversion_action".into(), json!(action));
    c.insert("conversion_date_time".into(), json!(date_time(r.ts / 1000)));
    if let Some(v) = r.value_micros {
        c.insert("conversion_value".into(), json!(v as f64 / 1_000_000.0));
        if let Some(code) = currency {
            c.insert("currency_code".into(), json!(code));
        }
    }
    if let Some(o) = &r.order_id {
        c.insert("order_id".into(), json!(o));
    }
    serde_json::to_vec(&json!({ "conversions": [c], "partial_failure": true })).ok()
}

/// `yyyy-mm-dd hh:mm:ss+00:00`, the form Google asks for, in UTC.
pub fn date_time(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}+00:00",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn date_times_are_utc_with_their_zone() {
        assert_eq!(super::date_time(0), "1970-01-01 00:00:00+00:00");
        assert_eq!(super::date_time(1_796_593_592), "2026-12-06 21:46:32+00:00");
        assert_eq!(super::date_time(951_782_400), "2000-02-29 00:00:00+00:00");
    }
}
