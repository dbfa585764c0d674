//! The attribution record published for every conversion.

use super::rules::Decision;
pub use crate::event::{ConversionInput, OrderId};
use crate::event::{EventType, JsonWriter, VERSION};
use crate::ids::EventId;

/// Tag mixed into the conversion's event id to derive the record's id.
const DERIVE_TAG: u64 = 0x6174_7472_6962_7574; // "attribut"

/// One conversion's verdict, ready to encode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attribution {
    pub conversion: ConversionInput,
    pub decision: Decision,
    /// Applied after the grace period let later events through (cluster
    /// engine only): its decision may differ from the time-ordered one.
    pub late: bool,
}

impl Attribution {
    /// The `result` label of `attribution_records_total`.
    pub fn result(&self) -> &'static str {
        match (self.decision.credit, self.decision.reason) {
            (Some(c), _) => c.kind.as_str(),
            (None, Some(r)) => r.as_str(),
            (None, None) => "unknown",
        }
    }

    /// Deterministic: the same conversion always yields the same record id.
    pub fn event_id(&self) -> EventId {
        EventId::derive(self.conversion.event_id, DERIVE_TAG)
    }

    pub fn encode(&self, buf: &mut Vec<u8>) {
        let c = &self.conversion;
        let d = &self.decision;
        let mut w = JsonWriter::object(buf);
        w.u64("v", VERSION as u64);
        w.str("event_id", self.event_id().to_hyphenated().as_str());
        w.str("type", EventType::Attribution.as_str());
        w.u64("ts", c.ts_ms);
        match c.uid {
            Some(u) => w.str("uid", u.to_hex().as_str()),
            None => w.null("uid"),
        }
        w.str("conversion_event_id", c.event_id.to_hyphenated().as_str());
        w.id("pixel_id", c.pixel);
        w.id("advertiser_id", c.advertiser);
        w.bool("counted", d.counted);
        w.bool("attributed", d.credit.is_some());
        w.opt_str("kind", d.credit.map(|k| k.kind.as_str()));
        w.opt_str("reason", d.reason.map(|r| r.as_str()));
        w.opt_str("matched_by", d.credit.map(|c| c.matched_by.as_str()));
        match &d.credit {
            Some(credit) => {
                let m = &credit.mark;
                w.str("touch_event_id", m.event_id().to_hyphenated().as_str());
                w.u64("touch_ts", m.ts_ms());
                w.id("line_item_id", credit.line_item);
                w.u64("tracker_id", m.tracker() as u64);
                w.id("publisher_id", m.publisher());
                w.opt_id("placement_id", m.placement());
                w.u64(
                    "seconds_to_conversion",
                    c.ts_ms.saturating_sub(m.ts_ms()) / 1000,
                );
            }
            None => {
                for k in [
                    "touch_event_id",
                    "touch_ts",
                    "line_item_id",
                    "tracker_id",
                    "publisher_id",
                    "placement_id",
                    "seconds_to_conversion",
                ] {
                    w.null(k);
                }
            }
        }
        w.opt_str("order_id", c.order_id.as_ref().map(|o| o.as_str()));
        w.opt_u64("value_micros", c.value_micros);
        w.bool("late", self.late);
        w.end();
    }
}
