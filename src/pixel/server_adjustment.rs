//! `POST /v1/adjustments`: one retraction or restatement of an order, from
//! an advertiser's server. Checked like a server conversion (the same key
//! rules, identity, time bounds and value limits), it names the order by
//! its pixel, order id and the user or click it was reported with.

use std::borrow::Cow;

use serde::Deserialize;

use super::server_conversion::{self, Amount, Caller, ClickWindow, Item, Rejection};
use crate::event::{Adjustment, AdjustmentKind, Body, Event};

/// One item as sent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdjustmentItem<'a> {
    pub pixel_id: u32,
    /// `retract` or `restate`.
    #[serde(rename = "type")]
    pub kind: AdjustmentKind,
    #[serde(borrow, default)]
    pub order_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub clid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub uid: Option<Cow<'a, str>>,
    /// The order's new value (restatements only).
    #[serde(borrow, default)]
    pub value: Option<Amount<'a>>,
    #[serde(default)]
    pub ts: Option<u64>,
}

impl<'a> AdjustmentItem<'a> {
    /// The conversion item it names: the same checks apply.
    pub fn as_conversion(&'a self) -> Result<Item<'a>, Rejection> {
        if self.order_id.as_deref().is_none_or(str::is_empty) {
            return Err(Rejection::OrderIdMissing);
        }
        match (self.kind, &self.value) {
            (AdjustmentKind::Restate, None) => return Err(Rejection::ValueMissing),
            (AdjustmentKind::Retract, Some(_)) => return Err(Rejection::ValueUnexpected),
            _ => {}
        }
        let borrow = |c: &'a Option<Cow<'a, str>>| c.as_deref().map(Cow::Borrowed);
        Ok(Item {
            pixel_id: self.pixel_id,
            clid: borrow(&self.clid),
            uid: borrow(&self.uid),
            order_id: borrow(&self.order_id),
            value: self.value.as_ref().map(Amount::borrowed),
            other: None,
            ts: self.ts,
        })
    }
}

/// The adjustment event an item stands for, or why it is refused. `item`
/// is [`AdjustmentItem::as_conversion`]'s.
pub fn event<'a>(
    kind: AdjustmentKind,
    item: &'a Item<'a>,
    caller: &Caller<'_>,
) -> Result<Event<'a>, Rejection> {
    let mut event = server_conversion::checked(item, caller, ClickWindow::Ignore)?;
    let Body::Conversion(conversion) = event.body else {
        unreachable!("a server conversion's body is a conversion")
    };
    event.body = Body::Adjustment(Adjustment { kind, conversion });
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(json: &str) -> AdjustmentItem<'_> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn an_adjustment_names_an_order_and_a_restatement_its_value() {
        let missing = item(r#"{"pixel_id": 1, "type": "retract", "uid": "00"}"#);
        assert_eq!(
            missing.as_conversion().err(),
            Some(Rejection::OrderIdMissing)
        );
        let empty = item(r#"{"pixel_id": 1, "type": "retract", "order_id": ""}"#);
        assert_eq!(empty.as_conversion().err(), Some(Rejection::OrderIdMissing));
        let restate = item(r#"{"pixel_id": 1, "type": "restate", "order_id": "A1"}"#);
        assert_eq!(restate.as_conversion().err(), Some(Rejection::ValueMissing));
        let retract = item(r#"{"pixel_id": 1, "type": "retract", "order_id": "A1", "value": "1"}"#);
        assert_eq!(
            retract.as_conversion().err(),
            Some(Rejection::ValueUnexpected)
        );
        let ok = item(r#"{"pixel_id": 1, "type": "restate", "order_id": "A1", "value": 2.5}"#);
        let c = ok.as_conversion().unwrap();
        assert_eq!(c.order_id.as_deref(), Some("A1"));
        assert!(serde_json::from_str::<AdjustmentItem<'_>>(
            r#"{"pixel_id": 1, "type": "refund", "order_id": "A1"}"#
        )
        .is_err());
    }
}
