//! The attribution rules as one pure function: given a pixel's settings, a
//! user's touches and the conversion's time, which touch earns it.

use super::state::{LineItemTouches, Mark, TouchKind};
use crate::config::{ConversionPixel, Repeat, Trigger};
use crate::ids::LineItemId;

/// How a conversion was credited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreditKind {
    PostClick,
    PostView,
}

impl CreditKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CreditKind::PostClick => "post_click",
            CreditKind::PostView => "post_view",
        }
    }
}

/// How the conversion found its touch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchedBy {
    /// The user's id cookie: the touch is in the engine's state.
    Uid,
    /// The click id the conversion handed back (`clid`).
    ClickId,
}

impl MatchedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            MatchedBy::Uid => "uid",
            MatchedBy::ClickId => "click_id",
        }
    }
}

/// The touch that earned a conversion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Credit {
    pub kind: CreditKind,
    pub line_item: LineItemId,
    pub mark: Mark,
    pub matched_by: MatchedBy,
}

/// A click the conversion named with a click id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NamedClick {
    pub line_item: LineItemId,
    pub mark: Mark,
}

/// Why a conversion was not attributed, or not counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    NoUid,
    NoLineItems,
    NoTouch,
    OutsideWindow,
    Repeat,
    /// The order id was already seen for this pixel and user within its
    /// `dedup_minutes`: the same sale reported again (a reload, the page
    /// and the shop's server both).
    Duplicate,
    /// An adjustment for an order the engine does not know: never seen,
    /// or only outside its pixel's `dedup_minutes`.
    UnknownOrder,
    /// An adjustment for an order whose conversion was not counted.
    NotCounted,
    /// An adjustment for an order already retracted.
    AlreadyRetracted,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoUid => "no_uid",
            Reason::NoLineItems => "no_line_items",
            Reason::NoTouch => "no_touch",
            Reason::OutsideWindow => "outside_window",
            Reason::Repeat => "repeat",
            Reason::Duplicate => "duplicate",
            Reason::UnknownOrder => "unknown_order",
            Reason::NotCounted => "not_counted",
            Reason::AlreadyRetracted => "already_retracted",
        }
    }
}

/// The verdict on one conversion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub counted: bool,
    pub credit: Option<Credit>,
    /// Set exactly when `credit` is `None`.
    pub reason: Option<Reason>,
}

impl Decision {
    fn no(counted: bool, reason: Reason) -> Decision {
        Decision {
            counted,
            credit: None,
            reason: Some(reason),
        }
    }
}

/// Whether a conversion at `ts_ms` counts, given when the last one of this
/// user on this pixel was counted.
pub fn counts(repeat: Repeat, ts_ms: u64, last_counted: Option<u64>) -> bool {
    match (repeat, last_counted) {
        (Repeat::All, _) | (_, None) => true,
        (Repeat::OnePerUser, Some(_)) => false,
        (Repeat::EveryMinutes(n), Some(last)) => {
            ts_ms.saturating_sub(last) >= n as u64 * 60_000 && ts_ms >= last
        }
    }
}

/// Decides one conversion of a user who has an id or a click id. `pixel` is
/// `None` when the pixel is no longer configured. A click named by a click
/// id is credited before anything in `touches`, when the pixel credits
/// clicks, its line item is attached and it is inside the post-click window.
pub fn decide(
    pixel: Option<&ConversionPixel>,
    touches: &[LineItemTouches],
    named: Option<NamedClick>,
    ts_ms: u64,
    last_counted: Option<u64>,
) -> Decision {
    let Some(pixel) = pixel else {
        return Decision::no(true, Reason::NoLineItems);
    };
    if !counts(pixel.repeat, ts_ms, last_counted) {
        return Decision::no(false, Reason::Repeat);
    }
    if pixel.line_items.is_empty() {
        return Decision::no(true, Reason::NoLineItems);
    }
    let attached: Vec<&LineItemTouches> = touches
        .iter()
        .filter(|t| pixel.line_items.contains(&LineItemId(t.line_item)))
        .collect();
    let credit =
        named_click_credit(pixel, named, ts_ms).or_else(|| touch_credit(pixel, &attached, ts_ms));
    match credit {
        Some(credit) => Decision {
            counted: true,
            credit: Some(credit),
            reason: None,
        },
        None => Decision::no(true, uncredited_reason(pixel, &attached, named)),
    }
}

/// The credit for the click a click id names, when the pixel credits
/// clicks, the click's line item is attached and it is inside the
/// post-click window.
fn named_click_credit(
    pixel: &ConversionPixel,
    named: Option<NamedClick>,
    ts_ms: u64,
) -> Option<Credit> {
    let by_click_id = named.filter(|c| {
        pixel.trigger != Trigger::View
            && pixel.line_items.contains(&c.line_item)
            && c.mark.ts_ms() <= ts_ms
            && ts_ms - c.mark.ts_ms() <= pixel.post_click_ms
    });
    by_click_id.map(|c| Credit {
        kind: CreditKind::PostClick,
        line_item: c.line_item,
        mark: c.mark,
        matched_by: MatchedBy::ClickId,
    })
}

/// The credit for the user's latest touch of the kinds the pixel's trigger
/// credits (a hybrid pixel: a click first, else a view), inside its window.
fn touch_credit(
    pixel: &ConversionPixel,
    attached: &[&LineItemTouches],
    ts_ms: u64,
) -> Option<Credit> {
    let latest = |kind, window| latest_within(attached, kind, window, ts_ms);
    match pixel.trigger {
        Trigger::View => latest(TouchKind::View, pixel.post_view_ms),
        Trigger::Click => latest(TouchKind::Click, pixel.post_click_ms),
        Trigger::Hybrid => latest(TouchKind::Click, pixel.post_click_ms)
            .or_else(|| latest(TouchKind::View, pixel.post_view_ms)),
    }
}

/// The latest touch of `kind` on an attached line item at most `window` ms
/// before `ts_ms`.
fn latest_within(
    attached: &[&LineItemTouches],
    kind: TouchKind,
    window: u64,
    ts_ms: u64,
) -> Option<Credit> {
    let mut best: Option<Credit> = None;
    for t in attached {
        let m = t.get(kind);
        let in_window = m.is_set() && m.ts_ms() <= ts_ms && ts_ms - m.ts_ms() <= window;
        if in_window && best.is_none_or(|b| m.is_after(&b.mark)) {
            let kind = match kind {
                TouchKind::View => CreditKind::PostView,
                TouchKind::Click => CreditKind::PostClick,
            };
            best = Some(Credit {
                kind,
                line_item: LineItemId(t.line_item),
                mark: *m,
                matched_by: MatchedBy::Uid,
            });
        }
    }
    best
}

/// Why a counted conversion earned no credit: a touch the pixel could have
/// credited was outside its window, or there was none.
fn uncredited_reason(
    pixel: &ConversionPixel,
    attached: &[&LineItemTouches],
    named: Option<NamedClick>,
) -> Reason {
    let kinds: &[TouchKind] = match pixel.trigger {
        Trigger::View => &[TouchKind::View],
        Trigger::Click => &[TouchKind::Click],
        Trigger::Hybrid => &[TouchKind::View, TouchKind::Click],
    };
    let named_attached = named
        .is_some_and(|c| pixel.trigger != Trigger::View && pixel.line_items.contains(&c.line_item));
    let any = named_attached
        || attached
            .iter()
            .any(|t| kinds.iter().any(|k| t.get(*k).is_set()));
    if any {
        Reason::OutsideWindow
    } else {
        Reason::NoTouch
    }
}
