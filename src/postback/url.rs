//! A postback URL: the template with every macro's value URL-encoded.

use super::record::{ForwardRecord, Status};
use crate::config::template::{Macro, Piece, Template};

/// Where the macros' values come from.
pub struct Values<'a> {
    pub record: &'a ForwardRecord,
    pub status: Status,
    pub currency: Option<&'a str>,
    pub key: &'a str,
}

impl Values<'_> {
    /// The macro's value; empty when the record has none.
    fn get(&self, m: Macro) -> String {
        let r = self.record;
        let opt = |v: Option<String>| v.unwrap_or_default();
        match m {
            Macro::ClickId => opt(r.source_click().map(str::to_string)),
            Macro::OrderId => opt(r.order_id.clone()),
            Macro::Value => opt(r.value()),
            Macro::Currency => opt(self.currency.map(str::to_string)),
            Macro::EventId => r.event_id.to_string(),
            Macro::ConversionEventId => r.conversion_event_id.to_string(),
            Macro::Kind => opt(r.kind.clone()),
            Macro::Status => self.status.as_str().to_string(),
            Macro::LineItemId => opt(r.line_item_id.map(|v| v.to_string())),
            Macro::AdvertiserId => r.advertiser_id.to_string(),
            Macro::PixelId => r.pixel_id.to_string(),
            Macro::TrackerId => opt(r.tracker_id.map(|v| v.to_string())),
            Macro::PublisherId => opt(r.publisher_id.map(|v| v.to_string())),
            Macro::PlacementId => opt(r.placement_id.map(|v| v.to_string())),
            Macro::Ts => (r.ts / 1000).to_string(),
            Macro::IdempotencyKey => self.key.to_string(),
        }
    }
}

pub fn expand(t: &Template, values: &Values<'_>) -> String {
    let mut out = String::new();
    for piece in &t.0 {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Macro(m) => encode_into(&values.get(*m), &mut out),
        }
    }
    out
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so a
/// value can never add a parameter or change the path.
pub fn encode_into(value: &str, out: &mut String) {
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_is_url_encoded() {
        let mut out = String::new();
        encode_into("a b&c=d/é", &mut out);
        assert_eq!(out, "a%20b%26c%3Dd%2F%C3%A9");
    }
}
