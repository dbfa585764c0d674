//! `POST /v1/conversions`: one item of the batch an advertiser's server
//! sends, checked and turned into a conversion event like a `/px` one, with
//! `source: server` and the item's own time.
//!
//! A browser's pixel is answered whatever it carries; an authenticated API
//! caller is told exactly what was wrong with each item instead, so nothing
//! half-valid is recorded in its name.

use std::borrow::Cow;

use serde::Deserialize;

use super::click_id::ClickIds;
use super::conversion::{MAX_ORDER_ID, MAX_OTHER_CHARS};
use super::decimal::{self, Money};
use crate::config::Catalog;
use crate::event::{Body, ClickRef, Common, Conversion, ConversionSource, Event, Warnings};
use crate::ids::{AdvertiserId, ApiKeyName, EventId, PixelId, UserId};

/// How old an item's `ts` may be (7 days, as Meta's Conversions API).
pub const MAX_AGE_MS: u64 = 7 * 24 * 3_600_000;
/// How far ahead of the receiving clock an item's `ts` may be.
pub const MAX_AHEAD_MS: u64 = 5 * 60_000;
/// A click may be this far ahead of its conversion (clock skew between
/// instances), as for `/px`.
const CLICK_SKEW_MS: u64 = 60_000;

/// One item as sent. Unknown fields are refused: a misspelt `order_id`
/// must not silently become a conversion without one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item<'a> {
    pub pixel_id: u32,
    #[serde(borrow, default)]
    pub clid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub uid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub order_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub value: Option<Amount<'a>>,
    #[serde(borrow, default)]
    pub other: Option<Cow<'a, str>>,
    #[serde(default)]
    pub ts: Option<u64>,
}

/// `value`: a decimal string (`"10.50"`) or a JSON number (`10.5`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Amount<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Number(serde_json::Number),
}

impl Amount<'_> {
    /// The same amount, borrowed.
    pub fn borrowed(&self) -> Amount<'_> {
        match self {
            Amount::Text(t) => Amount::Text(Cow::Borrowed(t.as_ref())),
            Amount::Number(n) => Amount::Number(n.clone()),
        }
    }
}

crate::indexed::indexed_enum! {
    /// Why an item was not accepted: short, stable codes a caller can branch on.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum Rejection {
        /// Not an object of the documented fields and types.
        Malformed => "malformed",
        UnknownPixel => "unknown_pixel",
        /// The pixel's advertiser is not among the key's `advertisers`.
        PixelNotAllowed => "pixel_not_allowed",
        /// Neither `uid` nor `clid`: nobody to attribute to.
        NoIdentity => "no_identity",
        UidInvalid => "uid_invalid",
        ClidInvalid => "clid_invalid",
        /// The click is outside the pixel's post-click window at `ts`.
        ClidExpired => "clid_expired",
        /// The click ran for another advertiser than the pixel's.
        ClidForeign => "clid_foreign",
        TooOld => "too_old",
        InTheFuture => "in_the_future",
        ValueInvalid => "value_invalid",
        ValueTooLarge => "value_too_large",
        OrderIdInvalid => "order_id_invalid",
        OtherInvalid => "other_invalid",
        /// An adjustment without an order id: nothing to adjust.
        OrderIdMissing => "order_id_missing",
        /// A restatement without its new value.
        ValueMissing => "value_missing",
        /// A retraction with a value (a partial refund is a restatement).
        ValueUnexpected => "value_unexpected",
    }
}

/// What an item is checked against.
pub struct Caller<'c> {
    pub catalog: &'c Catalog,
    pub click_ids: &'c ClickIds,
    /// The key's name and the advertisers it may report for.
    pub key: ApiKeyName,
    pub advertisers: &'c [AdvertiserId],
    /// When the request came (ms).
    pub now_ms: u64,
    /// Whether an adjustment may name its order by pixel and order id
    /// alone: true wherever an attribution engine runs (it finds the
    /// order's user by its id).
    pub orders_by_id: bool,
}

/// Whether a click id must still be inside its pixel's post-click window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClickWindow {
    /// A conversion: credited to the click only inside the window.
    Enforce,
    /// An adjustment: the click id only says whose order it is, which a
    /// refund weeks later must still find.
    Ignore,
}

/// The conversion event an item stands for, or why it is refused.
pub fn event<'a>(item: &'a Item<'a>, caller: &Caller<'_>) -> Result<Event<'a>, Rejection> {
    checked(item, caller, ClickWindow::Enforce)
}

/// [`event`], with the click window rule given.
pub fn checked<'a>(
    item: &'a Item<'a>,
    caller: &Caller<'_>,
    window: ClickWindow,
) -> Result<Event<'a>, Rejection> {
    let pixel = caller
        .catalog
        .conversion_pixels
        .get(&PixelId(item.pixel_id))
        .ok_or(Rejection::UnknownPixel)?;
    if !caller.advertisers.contains(&pixel.advertiser) {
        return Err(Rejection::PixelNotAllowed);
    }
    let ts_ms = event_time(item.ts, caller.now_ms)?;
    let uid = match item.uid.as_deref() {
        Some(u) => Some(UserId::parse(u).ok_or(Rejection::UidInvalid)?),
        None => None,
    };
    let click = match item.clid.as_deref() {
        Some(token) => Some(click(token, ts_ms, pixel, caller, window)?),
        None => None,
    };
    let order_suffices = window == ClickWindow::Ignore && caller.orders_by_id;
    if uid.is_none() && click.is_none() && !order_suffices {
        return Err(Rejection::NoIdentity);
    }
    let conversion = Conversion {
        pixel_id: pixel.id,
        advertiser_id: pixel.advertiser,
        order_id: order_id(item.order_id.as_ref())?,
        value_micros: value(item.value.as_ref())?,
        other: other(item.other.as_ref())?,
        segments_added: Vec::new(),
        segments_removed: Vec::new(),
        redir: None,
        click,
        source: ConversionSource::Server {
            received_ts_ms: caller.now_ms,
            api_key: caller.key,
        },
    };
    Ok(Event {
        // The caller's address and agent are its server's, not the
        // person's: none is recorded.
        common: Common {
            event_id: EventId::new_v7(ts_ms),
            ts_ms,
            uid,
            new_uid: false,
            ip: None,
            user_agent: None,
            referer: None,
            warnings: Warnings::default(),
            ivt: None,
            consent: None,
        },
        body: Body::Conversion(conversion),
    })
}

/// `ts`, or the receiving time; within 7 days back and 5 minutes ahead.
fn event_time(ts: Option<u64>, now_ms: u64) -> Result<u64, Rejection> {
    let Some(ts) = ts else {
        return Ok(now_ms);
    };
    if ts > now_ms + MAX_AHEAD_MS {
        Err(Rejection::InTheFuture)
    } else if now_ms.saturating_sub(ts) > MAX_AGE_MS {
        Err(Rejection::TooOld)
    } else {
        Ok(ts)
    }
}

fn click(
    token: &str,
    ts_ms: u64,
    pixel: &crate::config::ConversionPixel,
    caller: &Caller<'_>,
    window: ClickWindow,
) -> Result<ClickRef, Rejection> {
    let click = caller
        .click_ids
        .verify(token)
        .map_err(|_| Rejection::ClidInvalid)?;
    let at = click.event_id.timestamp_ms();
    let outside = at > ts_ms + CLICK_SKEW_MS || ts_ms.saturating_sub(at) > pixel.post_click_ms;
    if outside && window == ClickWindow::Enforce {
        return Err(Rejection::ClidExpired);
    }
    match caller.catalog.line_items.get(&click.line_item) {
        Some(a) if *a == pixel.advertiser => Ok(click),
        _ => Err(Rejection::ClidForeign),
    }
}

fn order_id<'a>(o: Option<&'a Cow<'a, str>>) -> Result<Option<Cow<'a, str>>, Rejection> {
    match o {
        None => Ok(None),
        // An empty id is no id: it never matches another.
        Some(o) if o.is_empty() => Ok(None),
        Some(o) if o.len() <= MAX_ORDER_ID && o.bytes().all(|b| b.is_ascii_alphanumeric()) => {
            Ok(Some(Cow::Borrowed(o.as_ref())))
        }
        Some(_) => Err(Rejection::OrderIdInvalid),
    }
}

fn value(v: Option<&Amount<'_>>) -> Result<Option<u64>, Rejection> {
    let text: Cow<'_, str> = match v {
        None => return Ok(None),
        Some(Amount::Text(t)) => Cow::Borrowed(t.as_ref()),
        Some(Amount::Number(n)) => Cow::Owned(n.to_string()),
    };
    match decimal::parse_money(&text) {
        Money::Micros(m) => Ok(Some(m)),
        Money::TooLarge => Err(Rejection::ValueTooLarge),
        Money::Malformed => Err(Rejection::ValueInvalid),
    }
}

fn other<'a>(o: Option<&'a Cow<'a, str>>) -> Result<Option<Cow<'a, str>>, Rejection> {
    match o {
        None => Ok(None),
        Some(o) if o.chars().count() <= MAX_OTHER_CHARS && crate::event::text::is_plain(o) => {
            Ok(Some(Cow::Borrowed(o.as_ref())))
        }
        Some(_) => Err(Rejection::OtherInvalid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_time_is_bounded_on_both_sides() {
        let now = 1_764_000_000_000;
        assert_eq!(event_time(None, now), Ok(now));
        assert_eq!(
            event_time(Some(now - MAX_AGE_MS), now),
            Ok(now - MAX_AGE_MS)
        );
        assert_eq!(
            event_time(Some(now - MAX_AGE_MS - 1), now),
            Err(Rejection::TooOld)
        );
        assert_eq!(
            event_time(Some(now + MAX_AHEAD_MS), now),
            Ok(now + MAX_AHEAD_MS)
        );
        assert_eq!(
            event_time(Some(now + MAX_AHEAD_MS + 1), now),
            Err(Rejection::InTheFuture)
        );
    }

    #[test]
    fn values_come_as_strings_or_numbers_with_the_pixel_limits() {
        let parse = |json: &str| -> Result<Option<u64>, Rejection> {
            let a: Amount<'_> = serde_json::from_str(json).unwrap();
            value(Some(&a))
        };
        assert_eq!(parse("\"10.50\""), Ok(Some(10_500_000)));
        assert_eq!(parse("10.5"), Ok(Some(10_500_000)));
        assert_eq!(parse("3"), Ok(Some(3_000_000)));
        assert_eq!(parse("\"$10\""), Err(Rejection::ValueInvalid));
        assert_eq!(parse("-1"), Err(Rejection::ValueInvalid));
        assert_eq!(parse("1e30"), Err(Rejection::ValueInvalid));
        assert_eq!(parse("\"99999999999999\""), Err(Rejection::ValueTooLarge));
        assert_eq!(value(None), Ok(None));
    }

    #[test]
    fn order_ids_follow_the_pixel_rules_and_empty_is_none() {
        let c = |s: &'static str| Cow::Borrowed(s);
        assert_eq!(order_id(Some(&c("A1"))), Ok(Some(c("A1"))));
        assert_eq!(order_id(Some(&c(""))), Ok(None));
        assert_eq!(order_id(Some(&c("A 1"))), Err(Rejection::OrderIdInvalid));
        let long = c("123456789012345678901234567890123456789");
        assert_eq!(order_id(Some(&long)), Err(Rejection::OrderIdInvalid));
    }

    #[test]
    fn every_rejection_has_its_own_code() {
        let mut codes: Vec<_> = Rejection::ALL.iter().map(|r| r.as_str()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), Rejection::ALL.len());
    }
}
