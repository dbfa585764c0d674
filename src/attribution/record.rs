//! The attribution record published for every conversion.

use super::adjust::Verdict;
use super::rules::{Credit, Decision};
pub use crate::event::{ConversionInput, OrderId};
use crate::event::{EventType, JsonWriter, OwnedSourceClick, VERSION};
use crate::ids::EventId;

/// Tag mixed into the conversion's event id to derive the record's id.
const DERIVE_TAG: u64 = 0x6174_7472_6962_7574; // "attribut"

/// One conversion's verdict, ready to encode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribution {
    pub conversion: ConversionInput,
    pub decision: Decision,
    /// Applied after the grace period let later events through (cluster
    /// engine only): its decision may differ from the time-ordered one.
    pub late: bool,
    /// Set when the input was an adjustment: what it did to the order.
    /// Its `conversion` is then the adjustment (its event id and time, and
    /// the order it names).
    pub adjustment: Option<Verdict>,
    /// The traffic source's click id of the credited click, when the
    /// credit is a click that had one (and, for an adjustment, the state
    /// still keeps it).
    pub source_click: Option<OwnedSourceClick>,
}

impl Attribution {
    /// A conversion's record, on time.
    pub fn of(conversion: ConversionInput, decision: Decision) -> Attribution {
        Attribution {
            conversion,
            decision,
            late: false,
            adjustment: None,
            source_click: None,
        }
    }

    /// An adjustment's record: never counted as a conversion of its own;
    /// when it applied it carries the original's credit (or the reason the
    /// original had none), else the reason it was refused.
    pub fn of_adjustment(adjustment: ConversionInput, verdict: Verdict) -> Attribution {
        Attribution {
            conversion: adjustment,
            decision: Decision {
                counted: false,
                credit: verdict.credit,
                reason: verdict.refused.or(verdict.uncredited),
            },
            late: false,
            adjustment: Some(verdict),
            source_click: None,
        }
    }

    /// The same record, carrying its credited click's source click id.
    pub fn with_source_click(self, source_click: Option<OwnedSourceClick>) -> Attribution {
        Attribution {
            source_click,
            ..self
        }
    }

    /// What the record adds to a report summed per line item: a counted
    /// conversion adds 1 and its value, an adjustment its deltas.
    pub fn deltas(&self) -> (i32, i64) {
        match &self.adjustment {
            Some(v) => (v.conversions_delta, v.value_delta_micros),
            None if self.decision.counted => (1, self.conversion.value_micros.unwrap_or(0) as i64),
            None => (0, 0),
        }
    }

    /// The `result` label of `attribution_records_total`.
    pub fn result(&self) -> &'static str {
        if let Some(v) = &self.adjustment {
            return match v.refused {
                Some(r) => r.as_str(),
                None => v.kind.as_str(),
            };
        }
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
        credited_touch(&mut w, d.credit.as_ref(), c.ts_ms);
        self.source_and_client(&mut w);
        self.order_and_adjustment(&mut w);
        w.end();
    }

    /// The credited click's source click id, and the client the conversion
    /// came from.
    fn source_and_client(&self, w: &mut JsonWriter<'_>) {
        let c = &self.conversion;
        let source = self.source_click.as_ref();
        w.opt_str("source_click_id", source.map(|s| &*s.id));
        w.opt_str("source_click_kind", source.map(|s| s.kind.as_str()));
        // What the conversion event already held (its address after
        // `privacy.ip`), for destinations that match a person on it.
        let context = c.context.as_deref();
        w.opt_str(
            "client_user_agent",
            context.and_then(|x| x.user_agent.as_deref()),
        );
        match context.and_then(|x| x.ip) {
            Some(ip) => w.display("client_ip", ip),
            None => w.null("client_ip"),
        }
        w.opt_str("page_url", context.and_then(|x| x.page_url.as_deref()));
    }

    /// The order and its value, and what an adjustment did to it.
    fn order_and_adjustment(&self, w: &mut JsonWriter<'_>) {
        let c = &self.conversion;
        w.opt_str("order_id", c.order_id.as_ref().map(|o| o.as_str()));
        let value = self.adjustment.map_or(c.value_micros, |v| v.value_micros);
        w.opt_u64("value_micros", value);
        w.bool("late", self.late);
        let adjusts = self.adjustment.and_then(|v| v.original);
        w.opt_str("adjustment", self.adjustment.map(|v| v.kind.as_str()));
        w.opt_str(
            "adjusts",
            adjusts
                .map(|id| EventId::derive(id, DERIVE_TAG).to_hyphenated())
                .as_ref()
                .map(|h| h.as_str()),
        );
        w.bool("retracted", self.adjustment.is_some_and(|v| v.retracted));
        let (conversions, value) = self.deltas();
        w.i64("conversions_delta", conversions as i64);
        w.i64("value_delta_micros", value);
    }
}

/// The credited touch (for a conversion at `ts_ms`); every field null
/// without a credit.
fn credited_touch(w: &mut JsonWriter<'_>, credit: Option<&Credit>, ts_ms: u64) {
    match credit {
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
                ts_ms.saturating_sub(m.ts_ms()) / 1000,
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
}
