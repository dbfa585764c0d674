//! An attribution record as `pixeld forward` reads it from
//! `pixel.attributions`, and what it tells a destination.

use serde::Deserialize;

use crate::ids::{AdvertiserId, EventId, LineItemId, PixelId, PlacementId, PublisherId};

/// The fields a destination can use; others are ignored, so a newer
/// record with more fields still reads.
#[derive(Clone, Debug, Deserialize)]
pub struct ForwardRecord {
    #[serde(deserialize_with = "event_id")]
    pub event_id: EventId,
    /// The conversion's (or the adjustment's) time, ms.
    pub ts: u64,
    #[serde(deserialize_with = "event_id")]
    pub conversion_event_id: EventId,
    pub pixel_id: PixelId,
    pub advertiser_id: AdvertiserId,
    pub counted: bool,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub line_item_id: Option<LineItemId>,
    #[serde(default)]
    pub tracker_id: Option<u64>,
    #[serde(default)]
    pub publisher_id: Option<PublisherId>,
    #[serde(default)]
    pub placement_id: Option<PlacementId>,
    /// The credited touch's time, ms (a click's, for Meta's `fbc`).
    #[serde(default)]
    pub touch_ts: Option<u64>,
    #[serde(default)]
    pub order_id: Option<String>,
    #[serde(default)]
    pub value_micros: Option<u64>,
    /// `retract` or `restate` for an adjustment's record.
    #[serde(default)]
    pub adjustment: Option<String>,
    /// The traffic source's click id of the credited click.
    #[serde(default)]
    pub source_click_id: Option<String>,
    #[serde(default)]
    pub source_click_kind: Option<String>,
    /// The conversion's browser, as its event recorded it (the address
    /// after `privacy.ip`): what Meta matches a person on without `fbc`.
    /// Absent from the records of releases before them.
    #[serde(default)]
    pub client_user_agent: Option<String>,
    #[serde(default)]
    pub client_ip: Option<String>,
    /// The page that fired the conversion pixel.
    #[serde(default)]
    pub page_url: Option<String>,
}

fn event_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<EventId, D::Error> {
    let s = <&str>::deserialize(d)?;
    EventId::parse(s).ok_or_else(|| serde::de::Error::custom("not a hyphenated event id"))
}

/// What the record says happened: `${STATUS}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// A counted conversion.
    Approved,
    /// An adjustment withdrew a counted conversion.
    Retracted,
    /// An adjustment changed a counted conversion's value.
    Restated,
}

impl Status {
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Approved => "approved",
            Status::Retracted => "retracted",
            Status::Restated => "restated",
        }
    }
}

impl ForwardRecord {
    /// The record's status, or None when it tells nobody anything: a
    /// conversion not counted (a duplicate, a repeat) or an adjustment
    /// that was refused (its `reason` says why).
    pub fn status(&self) -> Option<Status> {
        match self.adjustment.as_deref() {
            Some(_) if self.reason.is_some() => None,
            Some("retract") => Some(Status::Retracted),
            Some("restate") => Some(Status::Restated),
            Some(_) => None,
            None if self.counted => Some(Status::Approved),
            None => None,
        }
    }

    /// The traffic source's own click id (kind `source`, the configured
    /// `redirect.source_click_param`), for `${CLICK_ID}`.
    pub fn source_click(&self) -> Option<&str> {
        match self.source_click_kind.as_deref() {
            Some("source") => self.source_click_id.as_deref(),
            _ => None,
        }
    }

    /// `value_micros` as the decimal the conversion gave (`12.5`, `3`).
    pub fn value(&self) -> Option<String> {
        self.value_micros.map(decimal)
    }
}

/// Micros as a plain decimal without trailing zeros.
pub fn decimal(micros: u64) -> String {
    let whole = micros / 1_000_000;
    let frac = micros % 1_000_000;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:06}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(extra: &str) -> ForwardRecord {
        let text = format!(
            r#"{{"v":1,"event_id":"0190b1e2-0000-8000-8000-000000000001","type":"attribution","ts":1700000000000,
            "uid":null,"conversion_event_id":"0190b1e2-0000-7000-8000-000000000002","pixel_id":7313,
            "advertiser_id":1,"attributed":true,"matched_by":"uid","touch_event_id":null{extra}}}"#
        );
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn status_follows_counted_and_adjustments_and_refusals_tell_nobody() {
        assert_eq!(
            record(r#","counted":true"#).status(),
            Some(Status::Approved)
        );
        assert_eq!(
            record(r#","counted":false,"reason":"duplicate""#).status(),
            None
        );
        assert_eq!(
            record(r#","counted":false,"adjustment":"retract""#).status(),
            Some(Status::Retracted)
        );
        assert_eq!(
            record(r#","counted":false,"adjustment":"restate""#).status(),
            Some(Status::Restated)
        );
        assert_eq!(
            record(r#","counted":false,"adjustment":"retract","reason":"unknown_order""#).status(),
            None
        );
    }

    #[test]
    fn values_print_as_the_conversion_gave_them() {
        assert_eq!(decimal(12_500_000), "12.5");
        assert_eq!(decimal(3_000_000), "3");
        assert_eq!(decimal(1), "0.000001");
        assert_eq!(decimal(0), "0");
    }
}
