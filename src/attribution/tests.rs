//! Rule tests: one per rule and edge, with explicit event times (the engine
//! judges by the events' own clocks, never by the wall clock).

use std::sync::Arc;

use arc_swap::ArcSwap;
use proptest::prelude::*;

use super::*;
use crate::config::{parse, Catalog};
use crate::ids::{AdvertiserId, EventId, LineItemId, PlacementId, PublisherId, UserId};

const MIN: u64 = 60_000;
const T0: u64 = 1_800_000_000_000;

/// Advertiser 1: line item 10 (pixels 100 hybrid, 101 view, 102 click, 103
/// one_per_user, 104 every 60 minutes), line item 11 (no pixels).
/// Advertiser 2: line item 20 with pixel 200 (hybrid).
pub(crate) const RULES: &str = r#"
[[advertisers]]
id = 1
[[advertisers]]
id = 2
[[line_items]]
id = 10
advertiser = 1
conversion_pixels = [100, 101, 102, 103, 104, 105]
[[line_items]]
id = 11
advertiser = 1
[[line_items]]
id = 20
advertiser = 2
conversion_pixels = [200]
[[conversion_pixels]]
id = 100
advertiser = 1
trigger = "hybrid"
post_view_minutes = 60
post_click_minutes = 120
repeat = "all"
[[conversion_pixels]]
id = 101
advertiser = 1
trigger = "view"
post_view_minutes = 60
repeat = "all"
[[conversion_pixels]]
id = 102
advertiser = 1
trigger = "click"
post_click_minutes = 120
repeat = "all"
[[conversion_pixels]]
id = 103
advertiser = 1
repeat = "one_per_user"
[[conversion_pixels]]
id = 104
advertiser = 1
repeat = "every 60 minutes"
[[conversion_pixels]]
id = 105
advertiser = 1
repeat = "all"
[[conversion_pixels]]
id = 106
advertiser = 1
repeat = "all"
[[conversion_pixels]]
id = 200
advertiser = 2
repeat = "all"
"#;

pub(crate) fn catalog(text: &str) -> Arc<Catalog> {
    Catalog::new(&parse(text, "rules").unwrap()).unwrap()
}

fn engine() -> Engine {
    Engine::new(
        Arc::new(State::default()),
        Arc::new(ArcSwap::new(catalog(RULES))),
    )
}

const U: UserId = UserId(42);

fn touch(e: &Engine, kind: TouchKind, line_item: u32, ts: u64) -> EventId {
    let id = EventId::new_v7(ts);
    e.apply(Input::Touch(crate::event::TouchInput {
        uid: U,
        kind,
        line_item: LineItemId(line_item),
        event_id: id,
        tracker: 7,
        publisher: PublisherId(3),
        placement: Some(PlacementId(4)),
        source_click: None,
    }));
    id
}

fn convert_as(e: &Engine, uid: Option<UserId>, pixel: u32, ts: u64) -> Attribution {
    convert_full(e, uid, None, pixel, ts)
}

fn convert_full(
    e: &Engine,
    uid: Option<UserId>,
    click: Option<crate::event::ClickRef>,
    pixel: u32,
    ts: u64,
) -> Attribution {
    let input = ConversionInput {
        click,
        uid,
        event_id: EventId::new_v7(ts),
        ts_ms: ts,
        pixel: PixelId(pixel),
        advertiser: AdvertiserId(1),
        order_id: None,
        value_micros: None,
        context: None,
    };
    e.apply(Input::Conversion(input)).unwrap()
}

fn convert(e: &Engine, pixel: u32, ts: u64) -> Attribution {
    convert_as(e, Some(U), pixel, ts)
}

fn credited(a: &Attribution) -> Option<(CreditKind, EventId)> {
    a.decision.credit.map(|c| (c.kind, c.mark.event_id()))
}

#[test]
fn a_view_counts_up_to_the_window_s_exact_end_and_not_a_millisecond_past() {
    let e = engine();
    let view = touch(&e, TouchKind::View, 10, T0);
    assert_eq!(
        credited(&convert(&e, 101, T0 + 60 * MIN)),
        Some((CreditKind::PostView, view))
    );
    let late = convert(&e, 101, T0 + 60 * MIN + 1);
    assert_eq!(late.decision.credit, None);
    assert_eq!(late.decision.reason, Some(Reason::OutsideWindow));
    assert_eq!(
        credited(&convert(&e, 101, T0)),
        Some((CreditKind::PostView, view)),
        "zero delay counts"
    );
}

#[test]
fn a_click_counts_up_to_the_window_s_exact_end_and_not_a_millisecond_past() {
    let e = engine();
    let click = touch(&e, TouchKind::Click, 10, T0);
    assert_eq!(
        credited(&convert(&e, 102, T0 + 120 * MIN)),
        Some((CreditKind::PostClick, click))
    );
    assert_eq!(
        convert(&e, 102, T0 + 120 * MIN + 1).decision.reason,
        Some(Reason::OutsideWindow)
    );
}

#[test]
fn a_touch_after_the_conversion_does_not_count() {
    let e = engine();
    touch(&e, TouchKind::View, 10, T0 + 1);
    assert_eq!(
        convert(&e, 101, T0).decision.reason,
        Some(Reason::OutsideWindow)
    );
}

#[test]
fn hybrid_prefers_an_older_click_over_a_newer_view() {
    let e = engine();
    let click = touch(&e, TouchKind::Click, 10, T0);
    touch(&e, TouchKind::View, 10, T0 + 30 * MIN);
    let a = convert(&e, 100, T0 + 40 * MIN);
    assert_eq!(credited(&a), Some((CreditKind::PostClick, click)));
    assert!(a.decision.counted);
}

#[test]
fn hybrid_falls_back_to_the_view_when_the_click_is_out_of_its_window() {
    let e = engine();
    touch(&e, TouchKind::Click, 10, T0);
    let view = touch(&e, TouchKind::View, 10, T0 + 100 * MIN);
    assert_eq!(
        credited(&convert(&e, 100, T0 + 121 * MIN)),
        Some((CreditKind::PostView, view))
    );
    assert_eq!(
        convert(&e, 100, T0 + 161 * MIN).decision.reason,
        Some(Reason::OutsideWindow)
    );
}

#[test]
fn a_view_pixel_ignores_clicks_and_a_click_pixel_ignores_views() {
    let e = engine();
    touch(&e, TouchKind::Click, 10, T0);
    assert_eq!(
        convert(&e, 101, T0 + MIN).decision.reason,
        Some(Reason::NoTouch)
    );
    let e = engine();
    touch(&e, TouchKind::View, 10, T0);
    assert_eq!(
        convert(&e, 102, T0 + MIN).decision.reason,
        Some(Reason::NoTouch)
    );
}

#[test]
fn touches_on_line_items_without_the_pixel_do_not_count() {
    let e = engine();
    touch(&e, TouchKind::View, 11, T0);
    touch(&e, TouchKind::Click, 11, T0);
    let a = convert(&e, 100, T0 + MIN);
    assert_eq!(a.decision.reason, Some(Reason::NoTouch));
    assert!(a.decision.counted);
}

#[test]
fn a_pixel_attached_to_no_line_item_attributes_nothing() {
    let e = engine();
    touch(&e, TouchKind::View, 10, T0);
    assert_eq!(
        convert(&e, 106, T0 + MIN).decision.reason,
        Some(Reason::NoLineItems)
    );
    assert_eq!(
        convert(&e, 999, T0 + MIN).decision.reason,
        Some(Reason::NoLineItems),
        "unknown pixel"
    );
}

#[test]
fn anonymous_and_opted_out_conversions_are_never_attributed() {
    let e = engine();
    touch(&e, TouchKind::View, 10, T0);
    let a = convert_as(&e, None, 100, T0 + MIN);
    assert_eq!(a.decision.reason, Some(Reason::NoUid));
    assert_eq!(a.decision.credit, None);
}

#[test]
fn two_advertisers_never_credit_each_other() {
    let e = engine();
    touch(&e, TouchKind::Click, 10, T0);
    touch(&e, TouchKind::View, 10, T0);
    assert_eq!(
        convert(&e, 200, T0 + MIN).decision.reason,
        Some(Reason::NoTouch)
    );
    let view = touch(&e, TouchKind::View, 20, T0 + 2 * MIN);
    assert_eq!(
        credited(&convert(&e, 200, T0 + 3 * MIN)),
        Some((CreditKind::PostView, view))
    );
    let a = convert(&e, 100, T0 + 3 * MIN);
    assert_eq!(a.decision.credit.unwrap().line_item, LineItemId(10));
}

#[test]
fn repeat_all_counts_every_conversion() {
    let e = engine();
    touch(&e, TouchKind::View, 10, T0);
    for i in 0..3 {
        let a = convert(&e, 105, T0 + i);
        assert!(a.decision.counted && a.decision.credit.is_some());
    }
}

#[test]
fn repeat_one_per_user_counts_the_first_only() {
    let e = engine();
    touch(&e, TouchKind::View, 10, T0);
    assert!(convert(&e, 103, T0 + MIN).decision.counted);
    let second = convert(&e, 103, T0 + 2 * MIN);
    assert!(!second.decision.counted);
    assert_eq!(second.decision.reason, Some(Reason::Repeat));
    assert_eq!(second.decision.credit, None);
    let other_user = convert_as(&e, Some(UserId(7)), 103, T0 + 2 * MIN);
    assert!(other_user.decision.counted, "counting is per user");
}

#[test]
fn repeat_every_n_minutes_counts_again_exactly_at_n() {
    let e = engine();
    touch(&e, TouchKind::View, 10, T0);
    assert!(convert(&e, 104, T0).decision.counted);
    assert!(!convert(&e, 104, T0 + 60 * MIN - 1).decision.counted);
    assert!(convert(&e, 104, T0 + 60 * MIN).decision.counted);
    assert!(
        !convert(&e, 104, T0 + 119 * MIN).decision.counted,
        "measured from the last counted one"
    );
    assert!(convert(&e, 104, T0 + 120 * MIN).decision.counted);
}

#[test]
fn config_changes_apply_to_touches_already_stored() {
    let text = RULES.replace(
        "id = 11\nadvertiser = 1\n",
        "id = 11\nadvertiser = 1\nconversion_pixels = [106]\n",
    );
    let swap = Arc::new(ArcSwap::new(catalog(RULES)));
    let e = Engine::new(Arc::new(State::default()), swap.clone());
    let view = touch(&e, TouchKind::View, 11, T0);
    assert_eq!(
        convert(&e, 106, T0 + MIN).decision.reason,
        Some(Reason::NoLineItems)
    );
    swap.store(catalog(&text));
    assert_eq!(
        credited(&convert(&e, 106, T0 + MIN)),
        Some((CreditKind::PostView, view)),
        "attached"
    );
    // A shorter window now excludes the same touch.
    swap.store(catalog(&text.replace(
        "id = 106\nadvertiser = 1\n",
        "id = 106\nadvertiser = 1\npost_view_minutes = 1\n",
    )));
    assert_eq!(
        convert(&e, 106, T0 + MIN + 1).decision.reason,
        Some(Reason::OutsideWindow)
    );
    // Detached: nothing counts.
    swap.store(catalog(RULES));
    assert_eq!(
        convert(&e, 106, T0 + MIN).decision.reason,
        Some(Reason::NoLineItems)
    );
}

#[test]
fn the_record_carries_the_conversion_s_context_and_nulls_without_one() {
    let e = engine();
    let context = crate::event::ConversionContext::new(
        Some("Mozilla/5.0 \"q\""),
        Some("203.0.113.0".parse().unwrap()),
        Some("https://shop.example/thanks"),
    );
    let input = ConversionInput {
        context,
        ..convert(&e, 105, T0).conversion
    };
    let a = e.apply(Input::Conversion(input)).unwrap();
    let mut buf = Vec::new();
    a.encode(&mut buf);
    let j: serde_json::Value = serde_json::from_slice(&buf).unwrap();
    assert_eq!(j["client_user_agent"], "Mozilla/5.0 \"q\"");
    assert_eq!(j["client_ip"], "203.0.113.0");
    assert_eq!(j["page_url"], "https://shop.example/thanks");
    // A server's conversion (or an opted-out browser's address): null,
    // present all the same.
    let plain = convert(&e, 105, T0 + 1);
    let mut buf = Vec::new();
    plain.encode(&mut buf);
    let j: serde_json::Value = serde_json::from_slice(&buf).unwrap();
    for k in ["client_user_agent", "client_ip", "page_url"] {
        assert_eq!(j.get(k), Some(&serde_json::Value::Null), "{k}");
    }
}

#[test]
fn the_record_id_is_derived_from_the_conversion_and_stable() {
    let e = engine();
    let a = convert(&e, 105, T0);
    let b = convert(&e, 105, T0);
    assert_ne!(a.event_id(), b.event_id());
    let again = Attribution::of(a.conversion.clone(), a.decision);
    assert_eq!(again.event_id(), a.event_id());
    let mut buf = Vec::new();
    a.encode(&mut buf);
    let j: serde_json::Value = serde_json::from_slice(&buf).unwrap();
    assert_eq!(j["type"], "attribution");
    assert_eq!(j["event_id"], a.event_id().to_string());
    assert_eq!(j["conversion_event_id"], a.conversion.event_id.to_string());
    assert_eq!(j["reason"], "no_touch");
    assert_eq!(j["attributed"], false);
}

#[test]
fn the_sweep_keeps_what_the_longest_window_can_reach() {
    let e = engine();
    touch(&e, TouchKind::View, 10, T0);
    touch(&e, TouchKind::Click, 10, T0);
    convert(&e, 103, T0);
    // Longest view window: 1440 (pixels with defaults); click: 20160.
    e.sweep(T0 + 1440 * MIN);
    assert_eq!(e.state.entries(), 3);
    e.sweep(T0 + 1440 * MIN + 1);
    assert_eq!(e.state.entries(), 2, "view dropped");
    e.sweep(T0 + 20160 * MIN + 1);
    assert_eq!(e.state.entries(), 0, "click and repeat mark dropped");
    assert_eq!(e.state.users(), 0);
}

/// The obviously-correct reference: every touch kept, every rule applied by
/// brute force.
fn reference(
    pixel: &crate::config::ConversionPixel,
    history: &[(TouchKind, u32, EventId)],
    ts: u64,
    last: Option<u64>,
) -> (bool, Option<(CreditKind, EventId)>, Option<Reason>) {
    use crate::config::{Repeat, Trigger};
    let counted = match (pixel.repeat, last) {
        (Repeat::All, _) | (_, None) => true,
        (Repeat::OnePerUser, _) => false,
        (Repeat::EveryMinutes(n), Some(l)) => ts >= l && ts - l >= n as u64 * MIN,
    };
    if !counted {
        return (false, None, Some(Reason::Repeat));
    }
    if pixel.line_items.is_empty() {
        return (true, None, Some(Reason::NoLineItems));
    }
    let relevant: Vec<_> = history
        .iter()
        .filter(|(_, li, _)| pixel.line_items.contains(&LineItemId(*li)))
        .collect();
    let best = |kind: TouchKind, window: u64| {
        relevant
            .iter()
            .filter(|(k, _, id)| {
                *k == kind && id.timestamp_ms() <= ts && ts - id.timestamp_ms() <= window
            })
            .map(|(_, _, id)| (id.timestamp_ms(), *id))
            .max()
            .map(|(_, id)| id)
    };
    let click =
        || best(TouchKind::Click, pixel.post_click_ms).map(|id| (CreditKind::PostClick, id));
    let view = || best(TouchKind::View, pixel.post_view_ms).map(|id| (CreditKind::PostView, id));
    let (credit, kinds) = match pixel.trigger {
        Trigger::View => (view(), vec![TouchKind::View]),
        Trigger::Click => (click(), vec![TouchKind::Click]),
        Trigger::Hybrid => (
            click().or_else(view),
            vec![TouchKind::View, TouchKind::Click],
        ),
    };
    match credit {
        Some(c) => (true, Some(c), None),
        None if relevant.iter().any(|(k, _, _)| kinds.contains(k)) => {
            (true, None, Some(Reason::OutsideWindow))
        }
        None => (true, None, Some(Reason::NoTouch)),
    }
}

#[derive(Clone, Debug)]
enum Step {
    Touch(bool, u32, u64),
    Convert(u32, u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (
            any::<bool>(),
            prop::sample::select(vec![10u32, 11, 20]),
            0u64..200 * MIN
        )
            .prop_map(|(c, li, dt)| Step::Touch(c, li, dt)),
        (
            prop::sample::select(vec![100u32, 101, 102, 103, 104, 105, 106, 200]),
            0u64..200 * MIN
        )
            .prop_map(|(p, dt)| Step::Convert(p, dt)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    /// Events arrive in time order (each step moves the clock forward).
    #[test]
    fn the_engine_agrees_with_the_reference(steps in prop::collection::vec(step(), 1..60)) {
        let e = engine();
        let cat = catalog(RULES);
        let mut history = Vec::new();
        let mut last: std::collections::HashMap<u32, u64> = Default::default();
        let mut now = T0;
        for s in steps {
            match s {
                Step::Touch(click, li, dt) => {
                    now += dt;
                    let kind = if click { TouchKind::Click } else { TouchKind::View };
                    history.push((kind, li, touch(&e, kind, li, now)));
                }
                Step::Convert(p, dt) => {
                    now += dt;
                    let got = convert(&e, p, now);
                    let pixel = &cat.conversion_pixels[&PixelId(p)];
                    let want = reference(pixel, &history, now, last.get(&p).copied());
                    prop_assert_eq!((got.decision.counted, credited(&got), got.decision.reason), want);
                    if want.0 && pixel.repeat != crate::config::Repeat::All {
                        last.insert(p, now);
                    }
                }
            }
        }
    }
}

#[test]
fn a_steady_backlog_does_not_starve_the_sweep_and_the_snapshot() {
    // A channel that stays 1500 deep for 10,000 inputs (the feeder keeps
    // pace with the engine): the clock must still come due every 1024.
    let mut since = 0;
    let due = (0..10_000).filter(|_| clock_due(&mut since, true)).count();
    assert_eq!(due, 10_000 / CLOCK_EVERY as usize);
    // A drained channel looks at the clock at once.
    assert!(clock_due(&mut since, false));
}

fn convert_with_click(
    e: &Engine,
    uid: Option<UserId>,
    click: crate::event::ClickRef,
    pixel: u32,
    ts: u64,
) -> Attribution {
    convert_full(e, uid, Some(click), pixel, ts)
}

fn named_click(line_item: u32, ts: u64) -> crate::event::ClickRef {
    crate::event::ClickRef {
        event_id: EventId::new_v7(ts),
        line_item: LineItemId(line_item),
        tracker: crate::ids::ClickTrackerId(31),
        publisher: PublisherId(3),
        placement: None,
        user: None,
    }
}

#[test]
fn a_click_id_credits_its_click_with_or_without_a_uid() {
    let e = engine();
    let click = named_click(10, T0);
    // No uid at all: the click id alone.
    let a = convert_with_click(&e, None, click, 100, T0 + 5 * MIN);
    let c = a.decision.credit.expect("credited");
    assert_eq!(
        (c.kind, c.mark.event_id(), c.matched_by),
        (CreditKind::PostClick, click.event_id, MatchedBy::ClickId)
    );
    assert_eq!(c.mark.tracker(), 31);
    // With a uid whose state holds a later view: the named click wins.
    touch(&e, TouchKind::View, 10, T0 + MIN);
    let a = convert_with_click(&e, Some(U), click, 100, T0 + 6 * MIN);
    assert_eq!(
        a.decision.credit.map(|c| c.matched_by),
        Some(MatchedBy::ClickId)
    );
    // A view-only pixel does not credit clicks: the uid's view is credited.
    let a = convert_with_click(&e, Some(U), click, 101, T0 + 6 * MIN);
    let c = a.decision.credit.unwrap();
    assert_eq!(
        (c.kind, c.matched_by),
        (CreditKind::PostView, MatchedBy::Uid)
    );
}

#[test]
fn a_click_id_outside_the_window_or_for_another_line_item_is_not_credited() {
    let e = engine();
    let late = convert_with_click(&e, None, named_click(10, T0), 100, T0 + 121 * MIN);
    assert_eq!(late.decision.reason, Some(Reason::OutsideWindow));
    let other = convert_with_click(&e, None, named_click(11, T0), 100, T0 + MIN);
    assert_eq!(other.decision.reason, Some(Reason::NoTouch));
    // The uid's own touches still count when the click id does not.
    touch(&e, TouchKind::Click, 10, T0 + 200 * MIN);
    let a = convert_with_click(&e, Some(U), named_click(10, T0), 100, T0 + 201 * MIN);
    assert_eq!(
        a.decision.credit.map(|c| c.matched_by),
        Some(MatchedBy::Uid)
    );
}

#[test]
fn repeat_rules_apply_to_a_click_id_without_a_uid() {
    let e = engine();
    let click = named_click(10, T0);
    let first = convert_with_click(&e, None, click, 103, T0 + MIN);
    assert!(first.decision.counted && first.decision.credit.is_some());
    let again = convert_with_click(&e, None, click, 103, T0 + 2 * MIN);
    assert_eq!(again.decision.reason, Some(Reason::Repeat));
    // Another click is another "user".
    let other = convert_with_click(&e, None, named_click(10, T0 + 1), 103, T0 + 2 * MIN);
    assert!(other.decision.counted);
}

#[test]
fn an_opt_out_forgets_the_users_touches_and_repeat_marks() {
    let e = engine();
    touch(&e, TouchKind::View, 10, T0);
    touch(&e, TouchKind::Click, 10, T0 + 1);
    assert!(convert(&e, 103, T0 + MIN).decision.counted);
    assert!(e.state.knows(U));
    e.apply(Input::Forget(crate::event::ForgetInput {
        uid: U,
        event_id: EventId::new_v7(T0 + 2 * MIN),
    }));
    assert!(!e.state.knows(U));
    assert!(e.state.repeat_marks_of(U).is_empty());
    let after = convert(&e, 100, T0 + 3 * MIN);
    assert_eq!(after.decision.reason, Some(Reason::NoTouch));
}

fn convert_order(e: &Engine, uid: Option<UserId>, pixel: u32, ts: u64, order: &str) -> Attribution {
    let input = ConversionInput {
        click: None,
        uid,
        event_id: EventId::new_v7(ts),
        ts_ms: ts,
        pixel: PixelId(pixel),
        advertiser: AdvertiserId(1),
        order_id: crate::event::OrderId::new(order),
        value_micros: None,
        context: None,
    };
    e.apply(Input::Conversion(input)).unwrap()
}

/// A thank-you page reloaded three times is one sale: the same order id
/// for the same pixel and user within `dedup_minutes` counts once.
#[test]
fn a_repeated_order_id_counts_once_and_the_rest_are_duplicates() {
    let e = engine();
    touch(&e, TouchKind::View, 10, T0);
    let first = convert_order(&e, Some(U), 100, T0 + 10, "A1");
    assert!(first.decision.counted && first.decision.credit.is_some());
    for i in 1..3 {
        let again = convert_order(&e, Some(U), 100, T0 + 10 + i * MIN, "A1");
        assert_eq!(again.decision.reason, Some(Reason::Duplicate));
        assert!(!again.decision.counted);
        assert!(again.decision.credit.is_none(), "credits nothing");
    }
    // Another order of the same user, and the same order of another user
    // or on another pixel, are sales of their own (pixel 100 counts all).
    assert!(
        convert_order(&e, Some(U), 100, T0 + 20, "A2")
            .decision
            .counted
    );
    assert!(
        convert_order(&e, Some(UserId(7)), 100, T0 + 20, "A1")
            .decision
            .counted
    );
    assert!(
        convert_order(&e, Some(U), 101, T0 + 20, "A1")
            .decision
            .counted
    );
}

#[test]
fn an_empty_order_id_never_matches_and_the_window_ends() {
    let e = engine();
    for _ in 0..2 {
        assert!(convert_order(&e, Some(U), 100, T0, "").decision.counted);
    }
    assert!(convert_order(&e, Some(U), 100, T0, "B7").decision.counted);
    // The default window is 7 days: a week and a minute later it counts.
    let later = convert_order(&e, Some(U), 100, T0 + 10_081 * MIN, "B7");
    assert!(later.decision.counted, "{later:?}");
}

/// Dedup comes before the repeat rule: on a one-per-user pixel a duplicate
/// says `duplicate`, not `repeat`, and a conversion without an order id
/// still meets the repeat rule.
#[test]
fn deduplication_comes_before_the_repeat_rule() {
    let e = engine();
    touch(&e, TouchKind::View, 10, T0);
    assert!(
        convert_order(&e, Some(U), 103, T0 + 1, "C1")
            .decision
            .counted
    );
    let dup = convert_order(&e, Some(U), 103, T0 + 2, "C1");
    assert_eq!(dup.decision.reason, Some(Reason::Duplicate));
    let other = convert_order(&e, Some(U), 103, T0 + 3, "C2");
    assert_eq!(other.decision.reason, Some(Reason::Repeat));
}

#[test]
fn order_ids_expire_with_the_sweep_and_an_opt_out() {
    let e = engine();
    convert_order(&e, Some(U), 100, T0, "D1");
    e.sweep(T0 + 10_080 * MIN);
    assert_eq!(
        convert_order(&e, Some(U), 100, T0 + 1, "D1")
            .decision
            .reason,
        Some(Reason::Duplicate)
    );
    e.sweep(T0 + 10_081 * MIN);
    assert!(!e.state.knows(U), "nothing left of the user");
    convert_order(&e, Some(U), 100, T0, "D2");
    e.apply(Input::Forget(crate::event::ForgetInput {
        uid: U,
        event_id: EventId::new_v7(T0 + 5),
    }));
    assert!(
        convert_order(&e, Some(U), 100, T0 + 6, "D2")
            .decision
            .counted
    );
}

proptest::proptest! {
    /// Duplicates never change what counts: a stream of conversions with
    /// distinct order ids counts the same with any of them repeated (a
    /// reload shortly after, same user, pixel and order id).
    #[test]
    fn duplicates_never_change_the_number_of_counted_conversions(
        stream in proptest::collection::vec((0u128..4, 0usize..3, 0u64..(3 * 24 * 60), proptest::bool::ANY), 1..40)
    ) {
        let pixels = [100u32, 103, 104];
        let count = |with_repeats: bool| {
            let e = engine();
            touch(&e, TouchKind::View, 10, T0);
            let mut counted = 0;
            for (i, (user, pixel, minute, repeat)) in stream.iter().enumerate() {
                let order = format!("O{i}");
                let ts = T0 + minute * MIN;
                let uid = Some(UserId(*user));
                counted += usize::from(convert_order(&e, uid, pixels[*pixel], ts, &order).decision.counted);
                if with_repeats && *repeat {
                    let again = convert_order(&e, uid, pixels[*pixel], ts + 1, &order);
                    proptest::prop_assert!(!again.decision.counted);
                }
            }
            Ok(counted)
        };
        proptest::prop_assert_eq!(count(false)?, count(true)?);
    }
}

fn convert_valued(e: &Engine, ts: u64, order: &str, value: u64) -> Attribution {
    let input = ConversionInput {
        click: None,
        uid: Some(U),
        event_id: EventId::new_v7(ts),
        ts_ms: ts,
        pixel: PixelId(100),
        advertiser: AdvertiserId(1),
        order_id: crate::event::OrderId::new(order),
        value_micros: Some(value),
        context: None,
    };
    e.apply(Input::Conversion(input)).unwrap()
}

fn adjust(
    e: &Engine,
    kind: crate::event::AdjustmentKind,
    ts: u64,
    order: &str,
    value: Option<u64>,
) -> Attribution {
    let conversion = ConversionInput {
        click: None,
        uid: Some(U),
        event_id: EventId::new_v7(ts),
        ts_ms: ts,
        pixel: PixelId(100),
        advertiser: AdvertiserId(1),
        order_id: crate::event::OrderId::new(order),
        value_micros: value,
        context: None,
    };
    let input = crate::event::AdjustmentInput { kind, conversion };
    e.apply(Input::Adjustment(input)).unwrap()
}

/// A record as its consumers read it.
pub(crate) fn json(a: &Attribution) -> serde_json::Value {
    let mut buf = Vec::new();
    a.encode(&mut buf);
    serde_json::from_slice(&buf).unwrap()
}

/// A refund and a correction of a counted order: each record names the
/// original, carries its credit, and the sum of the deltas over every
/// record is what the advertiser really sold.
#[test]
fn adjustments_name_the_original_carry_its_credit_and_net_out() {
    use crate::event::AdjustmentKind::{Restate, Retract};
    let e = engine();
    touch(&e, TouchKind::Click, 10, T0);
    let sale = convert_valued(&e, T0 + MIN, "R1", 50_000_000);
    let other = convert_valued(&e, T0 + 2 * MIN, "R2", 30_000_000);
    let restated = adjust(&e, Restate, T0 + 60 * MIN, "R1", Some(40_000_000));
    let retracted = adjust(&e, Retract, T0 + 61 * MIN, "R2", None);
    let j = json(&restated);
    assert_eq!(j["adjustment"], "restate");
    assert_eq!(j["adjusts"], sale.event_id().to_string());
    assert_eq!(j["counted"], false);
    assert_eq!(j["kind"], "post_click");
    assert_eq!(j["line_item_id"], 10);
    assert_eq!(j["value_micros"], 40_000_000);
    assert_eq!(j["value_delta_micros"], -10_000_000);
    assert_eq!(j["conversions_delta"], 0);
    assert_eq!(j["reason"], serde_json::Value::Null);
    let j = json(&retracted);
    assert_eq!(j["adjusts"], other.event_id().to_string());
    assert_eq!(j["retracted"], true);
    assert_eq!(j["value_micros"], serde_json::Value::Null);
    assert_eq!(j["value_delta_micros"], -30_000_000);
    assert_eq!(j["conversions_delta"], -1);
    let records = [&sale, &other, &restated, &retracted];
    let (n, v) = records.iter().fold((0, 0), |(n, v), r| {
        let (dn, dv) = r.deltas();
        (n + dn, v + dv)
    });
    assert_eq!((n, v), (1, 40_000_000), "one sale of 40 is left");
    // The retracted order cannot be adjusted again; nothing changes.
    let again = adjust(&e, Retract, T0 + 62 * MIN, "R2", None);
    assert_eq!(again.decision.reason, Some(Reason::AlreadyRetracted));
    assert_eq!(again.deltas(), (0, 0));
}

#[test]
fn an_adjustment_of_an_unknown_or_uncounted_order_changes_nothing() {
    use crate::event::AdjustmentKind::Retract;
    let e = engine();
    let unknown = adjust(&e, Retract, T0, "NEVER", None);
    assert_eq!(unknown.decision.reason, Some(Reason::UnknownOrder));
    assert_eq!(json(&unknown)["adjusts"], serde_json::Value::Null);
    assert_eq!(unknown.deltas(), (0, 0));
    // An adjustment's event never teaches the engine its order.
    let still = adjust(&e, Retract, T0 + 1, "NEVER", None);
    assert_eq!(still.decision.reason, Some(Reason::UnknownOrder));
    // A duplicate's adjustment applies to the order's counted original.
    let sale = convert_valued(&e, T0 + MIN, "S1", 5_000_000);
    convert_valued(&e, T0 + 2 * MIN, "S1", 5_000_000);
    let r = adjust(&e, Retract, T0 + 3 * MIN, "S1", None);
    assert_eq!(json(&r)["adjusts"], sale.event_id().to_string());
    assert_eq!(r.deltas(), (-1, -5_000_000));
}

/// An adjustment that names its order alone (no uid, no click id: the
/// in-process engine's `orders_by_id`) finds the user who reported it; an
/// opt-out or the end of the order's window forgets whose it was.
#[test]
fn an_adjustment_by_order_id_alone_finds_the_order_s_user() {
    use crate::event::AdjustmentKind::Retract;
    let e = engine();
    touch(&e, TouchKind::Click, 10, T0);
    let sale = convert_valued(&e, T0 + MIN, "R1", 50_000_000);
    let by_order = |ts: u64, order: &str| {
        let conversion = ConversionInput {
            click: None,
            uid: None,
            event_id: EventId::new_v7(ts),
            ts_ms: ts,
            pixel: PixelId(100),
            advertiser: AdvertiserId(1),
            order_id: crate::event::OrderId::new(order),
            value_micros: None,
            context: None,
        };
        let input = crate::event::AdjustmentInput {
            kind: Retract,
            conversion,
        };
        e.apply(Input::Adjustment(input)).unwrap()
    };
    let r = by_order(T0 + 2 * MIN, "R1");
    assert_eq!(json(&r)["adjusts"], sale.event_id().to_string());
    assert_eq!(json(&r)["kind"], "post_click", "the original's credit");
    assert_eq!(r.deltas(), (-1, -50_000_000));
    assert_eq!(
        by_order(T0 + 3 * MIN, "OTHER").decision.reason,
        Some(Reason::UnknownOrder)
    );
    // Forgotten with the user.
    convert_valued(&e, T0 + 4 * MIN, "R2", 1_000_000);
    e.apply(Input::Forget(crate::event::ForgetInput {
        uid: U,
        event_id: EventId::new_v7(T0 + 5 * MIN),
    }));
    assert_eq!(
        by_order(T0 + 6 * MIN, "R2").decision.reason,
        Some(Reason::UnknownOrder)
    );
    assert_eq!(e.state.order_owner(PixelId(100), order_fp("R2")), None);
    // Forgotten with the order's window.
    convert_valued(&e, T0 + 7 * MIN, "R3", 1_000_000);
    assert_eq!(e.state.order_owner(PixelId(100), order_fp("R3")), Some(U));
    e.sweep(T0 + 7 * MIN + 400 * 24 * 60 * MIN);
    assert_eq!(e.state.order_owner(PixelId(100), order_fp("R3")), None);
}

fn order_fp(order: &str) -> u64 {
    crate::event::OrderId::new(order).unwrap().fingerprint()
}

/// Two users who reported one order id: the later mark owns it, however a
/// reload (a snapshot's or a changelog's, in no fixed order) lists them.
#[test]
fn an_order_held_by_two_users_belongs_to_the_later_mark_in_any_reload_order() {
    use super::state::OrderMark;
    let (early, late) = (UserId(9), UserId(3));
    let mark = |ts_ms| OrderMark {
        pixel: PixelId(100),
        order: order_fp("SHARED"),
        ts_ms,
        outcome: None,
    };
    for reload in [[early, late], [late, early]] {
        let e = engine();
        for uid in reload {
            let ts = if uid == late { T0 + MIN } else { T0 };
            e.state.set_orders(uid, &[mark(ts)]);
        }
        assert_eq!(
            e.state.order_owner(PixelId(100), order_fp("SHARED")),
            Some(late),
            "reloaded as {reload:?}"
        );
    }
}
