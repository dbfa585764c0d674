//! The traffic source's click id carried from a click to the record of the
//! conversion credited to it: by uid and by click id, replaced with its
//! click, dropped with its user (eviction, opt-out, expiry), and on the
//! adjustments that carry the original's credit.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::tests::{catalog, RULES};
use super::*;
use crate::event::{
    AdjustmentInput, AdjustmentKind, ClickRef, ConversionInput, ForgetInput, OrderId,
    OwnedSourceClick, SourceClickKind, TouchInput,
};
use crate::ids::{AdvertiserId, ClickTrackerId, EventId, LineItemId, PublisherId, UserId};

const MIN: u64 = 60_000;
const T0: u64 = 1_800_000_000_000;
const U: UserId = UserId(42);

fn engine() -> Engine {
    engine_with(State::default())
}

fn engine_with(state: State) -> Engine {
    Engine::new(Arc::new(state), Arc::new(ArcSwap::new(catalog(RULES))))
}

fn source(kind: SourceClickKind, id: &str) -> Option<OwnedSourceClick> {
    OwnedSourceClick::new(kind, id)
}

/// A touch of `uid` on line item 10 (pixels 100 hybrid, 102 click).
fn touch(
    e: &Engine,
    uid: UserId,
    kind: TouchKind,
    ts: u64,
    source_click: Option<OwnedSourceClick>,
) -> EventId {
    let event_id = EventId::new_v7(ts);
    e.apply(Input::Touch(TouchInput {
        uid,
        kind,
        line_item: LineItemId(10),
        event_id,
        tracker: 31,
        publisher: PublisherId(3),
        placement: None,
        source_click,
    }));
    event_id
}

fn conversion(uid: Option<UserId>, click: Option<ClickRef>, ts: u64) -> ConversionInput {
    ConversionInput {
        uid,
        click,
        event_id: EventId::new_v7(ts),
        ts_ms: ts,
        pixel: PixelId(100),
        advertiser: AdvertiserId(1),
        order_id: None,
        value_micros: Some(5_000_000),
        context: None,
    }
}

fn convert(e: &Engine, c: ConversionInput) -> Attribution {
    e.apply(Input::Conversion(c)).unwrap()
}

fn json(a: &Attribution) -> serde_json::Value {
    let mut buf = Vec::new();
    a.encode(&mut buf);
    serde_json::from_slice(&buf).unwrap()
}

/// (`source_click_id`, `source_click_kind`) as the record says them.
fn sourced(a: &Attribution) -> (serde_json::Value, serde_json::Value) {
    let j = json(a);
    (j["source_click_id"].clone(), j["source_click_kind"].clone())
}

fn said(id: &str, kind: &str) -> (serde_json::Value, serde_json::Value) {
    (id.into(), kind.into())
}

fn none() -> (serde_json::Value, serde_json::Value) {
    (serde_json::Value::Null, serde_json::Value::Null)
}

fn click_ref(event_id: EventId, user: Option<UserId>) -> ClickRef {
    ClickRef {
        event_id,
        line_item: LineItemId(10),
        tracker: ClickTrackerId(31),
        publisher: PublisherId(3),
        placement: None,
        user,
    }
}

#[test]
fn a_conversion_credited_to_a_click_by_uid_carries_its_source_click_id() {
    let e = engine();
    touch(
        &e,
        U,
        TouchKind::Click,
        T0,
        source(SourceClickKind::Fbclid, "IwAR2abc"),
    );
    let a = convert(&e, conversion(Some(U), None, T0 + MIN));
    let credit = a.decision.credit.unwrap();
    assert_eq!(
        (credit.kind, credit.matched_by),
        (CreditKind::PostClick, MatchedBy::Uid)
    );
    assert_eq!(sourced(&a), said("IwAR2abc", "fbclid"));
    assert_eq!(
        json(&a)["touch_ts"],
        T0,
        "the click time Meta's fbc is built from"
    );
    // Another user's conversion never gets it.
    let other = convert(&e, conversion(Some(UserId(7)), None, T0 + MIN));
    assert_eq!(sourced(&other), none());
}

#[test]
fn a_conversion_by_click_id_alone_finds_it_under_the_user_the_token_names() {
    let e = engine();
    let click = touch(
        &e,
        U,
        TouchKind::Click,
        T0,
        source(SourceClickKind::Source, "aff-7781"),
    );
    // No cookie: only the pxclid token's click, which knew its user (and
    // so the conversion is that user's, as the request path derives it).
    let token = click_ref(click, Some(U));
    let uid = crate::event::input::conversion_user(None, false, Some(&token));
    assert_eq!(uid, Some(U));
    let a = convert(&e, conversion(uid, Some(token), T0 + MIN));
    assert_eq!(a.decision.credit.unwrap().matched_by, MatchedBy::ClickId);
    assert_eq!(sourced(&a), said("aff-7781", "source"));
    // A cookie of another id with the token: still the clicker's id.
    let b = convert(
        &e,
        conversion(Some(UserId(7)), Some(click_ref(click, Some(U))), T0 + MIN),
    );
    assert_eq!(sourced(&b), said("aff-7781", "source"));
    // A click that knew no user was never kept: nothing to carry.
    let unknown = click_ref(EventId::new_v7(T0 + 1), None);
    let c = convert(&e, conversion(None, Some(unknown), T0 + MIN));
    assert!(c.decision.credit.is_some());
    assert_eq!(sourced(&c), none());
}

#[test]
fn a_view_credit_or_a_click_without_an_id_carries_none() {
    let e = engine();
    touch(&e, U, TouchKind::View, T0, None);
    assert_eq!(
        sourced(&convert(&e, conversion(Some(U), None, T0 + MIN))),
        none()
    );
    let v = UserId(9);
    touch(&e, v, TouchKind::Click, T0, None);
    let a = convert(&e, conversion(Some(v), None, T0 + MIN));
    assert_eq!(a.decision.credit.unwrap().kind, CreditKind::PostClick);
    assert_eq!(sourced(&a), none());
    assert!(
        e.state.all_source_clicks().is_empty(),
        "nothing kept for them"
    );
}

#[test]
fn the_id_goes_with_its_click_when_the_line_item_s_click_is_replaced() {
    let e = engine();
    let first = touch(
        &e,
        U,
        TouchKind::Click,
        T0,
        source(SourceClickKind::Gclid, "G1"),
    );
    // An older click arriving late replaces nothing, its id is not kept.
    touch(
        &e,
        U,
        TouchKind::Click,
        T0 - MIN,
        source(SourceClickKind::Gclid, "OLD"),
    );
    assert_eq!(e.state.source_clicks_of(U).len(), 1);
    assert_eq!(e.state.source_click(U, first).unwrap().id.as_ref(), "G1");
    // A later click with its own id replaces it.
    let second = touch(
        &e,
        U,
        TouchKind::Click,
        T0 + MIN,
        source(SourceClickKind::Gbraid, "G2"),
    );
    assert_eq!(e.state.source_click(U, first), None);
    let a = convert(&e, conversion(Some(U), None, T0 + 2 * MIN));
    assert_eq!(a.decision.credit.unwrap().mark.event_id(), second);
    assert_eq!(sourced(&a), said("G2", "gbraid"));
    // A later click without one takes the old id along.
    touch(&e, U, TouchKind::Click, T0 + 3 * MIN, None);
    assert!(e.state.source_clicks_of(U).is_empty());
    let b = convert(&e, conversion(Some(U), None, T0 + 4 * MIN));
    assert_eq!(sourced(&b), none());
    // A view on the same line item leaves a click's id be.
    touch(
        &e,
        U,
        TouchKind::Click,
        T0 + 5 * MIN,
        source(SourceClickKind::Wbraid, "W"),
    );
    touch(&e, U, TouchKind::View, T0 + 6 * MIN, None);
    assert_eq!(e.state.source_clicks_of(U).len(), 1);
}

#[test]
fn the_id_goes_with_its_user_on_opt_out_expiry_and_eviction() {
    let e = engine();
    touch(
        &e,
        U,
        TouchKind::Click,
        T0,
        source(SourceClickKind::Source, "a"),
    );
    let entries = e.state.entries();
    e.apply(Input::Forget(ForgetInput {
        uid: U,
        event_id: EventId::new_v7(T0 + 1),
    }));
    assert!(e.state.all_source_clicks().is_empty(), "opt-out");
    assert_eq!(entries, 2, "the click and its id");

    // Expiry: the longest click window of RULES's pixels is 20160 minutes.
    let click = touch(
        &e,
        U,
        TouchKind::Click,
        T0,
        source(SourceClickKind::Source, "b"),
    );
    touch(&e, U, TouchKind::View, T0 + 20_000 * MIN, None);
    e.sweep(T0 + 20_160 * MIN);
    assert!(
        e.state.source_click(U, click).is_some(),
        "inside the window"
    );
    e.sweep(T0 + 20_160 * MIN + 1);
    assert!(
        e.state.all_source_clicks().is_empty(),
        "expired with its click"
    );
    assert!(e.state.knows(U), "the user's view stays");

    // Eviction: 16 shards of one user each, every new user evicts one.
    let small = engine_with(State::bounded(16, false));
    for i in 0..200u64 {
        let id = format!("s{i}");
        touch(
            &small,
            UserId(i as u128),
            TouchKind::Click,
            T0 + i,
            source(SourceClickKind::Source, &id),
        );
    }
    let kept = small.state.all_source_clicks();
    assert_eq!(kept.len(), small.state.users(), "one id per kept user");
    for (uid, _) in kept {
        assert!(small.state.knows(uid));
    }
}

#[test]
fn an_adjustment_carries_its_original_s_source_click_id_while_the_click_is_kept() {
    let e = engine();
    touch(
        &e,
        U,
        TouchKind::Click,
        T0,
        source(SourceClickKind::Fbclid, "IwAR"),
    );
    // Pixel 100 remembers its orders for the default 10080 minutes.
    let order = |ts: u64, value: u64| ConversionInput {
        order_id: OrderId::new("ORD1"),
        value_micros: Some(value),
        ..conversion(Some(U), None, ts)
    };
    let sale = convert(&e, order(T0 + MIN, 5_000_000));
    assert_eq!(sourced(&sale), said("IwAR", "fbclid"));
    let adjustment = |ts: u64| {
        let conversion = order(ts, 1_000_000);
        e.apply(Input::Adjustment(AdjustmentInput {
            kind: AdjustmentKind::Restate,
            conversion,
        }))
        .unwrap()
    };
    let restated = adjustment(T0 + 2 * MIN);
    assert_eq!(restated.adjustment.unwrap().refused, None);
    assert_eq!(sourced(&restated), said("IwAR", "fbclid"));
    // Once the click has left the state, the adjustment still applies but
    // cannot say the id (best effort; the original's record has it).
    e.state.forget(U);
    let later = adjustment(T0 + 3 * MIN);
    assert_eq!(sourced(&later), none());
}

#[test]
fn inputs_with_and_without_an_id_cost_the_engine_s_channel_the_same() {
    // The channel's slot is the largest input's size: a conversion's. A
    // boxed id keeps a click below it.
    let conversion = std::mem::size_of::<crate::event::ConversionInput>();
    assert!(std::mem::size_of::<TouchInput>() < conversion);
    assert!(std::mem::size_of::<Input>() <= conversion + 16);
}
