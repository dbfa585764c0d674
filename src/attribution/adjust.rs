//! Adjustments (`POST /v1/adjustments`): a retraction or restatement of an
//! order, answered from what the engine remembers of the conversion that
//! reported it ([`OrderOutcome`]).
//!
//! An adjustment's record is never a conversion of its own: it carries the
//! original's credit and the change it makes, as `conversions_delta` (-1 for
//! a retraction, 0 for a restatement) and `value_delta_micros`, so summing
//! those over every record of a line item nets out.

use super::rules::{Credit, Reason};
use super::state::{AppliedAdjustment, OrderOutcome};
use crate::event::{AdjustmentInput, AdjustmentKind};
use crate::ids::EventId;

/// What one adjustment did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub kind: AdjustmentKind,
    /// The conversion it adjusts, when the engine knows the order.
    pub original: Option<EventId>,
    /// The original's credit (applied adjustments only).
    pub credit: Option<Credit>,
    /// Why the original was not credited (applied adjustments only): the
    /// record mirrors the original's verdict.
    pub uncredited: Option<Reason>,
    /// Why nothing changed; `None` when the adjustment applied.
    pub refused: Option<Reason>,
    /// The order's value after it.
    pub value_micros: Option<u64>,
    pub retracted: bool,
    pub value_delta_micros: i64,
    pub conversions_delta: i32,
}

impl Verdict {
    fn refused(kind: AdjustmentKind, original: Option<EventId>, reason: Reason) -> Verdict {
        Verdict {
            kind,
            original,
            credit: None,
            uncredited: None,
            refused: Some(reason),
            value_micros: None,
            retracted: false,
            value_delta_micros: 0,
            conversions_delta: 0,
        }
    }
}

/// Applies `adjustment` to the order's outcome (`None`: the engine does not
/// know the order: never seen, only outside its pixel's `dedup_minutes`, or
/// from a release before adjustments).
pub fn apply(outcome: Option<&mut OrderOutcome>, adjustment: &AdjustmentInput) -> Verdict {
    let kind = adjustment.kind;
    let Some(o) = outcome else {
        return Verdict::refused(kind, None, Reason::UnknownOrder);
    };
    let id = adjustment.conversion.event_id;
    // Read again: answered from the standing before it, unchanged.
    let memo = o
        .applied
        .iter()
        .flatten()
        .find(|a| a.adjustment.get() == id);
    let (value_before, retracted_before, fresh) = match memo {
        Some(a) => (a.value_before, a.retracted_before, false),
        None => (o.value_micros, o.retracted, true),
    };
    if !o.decision.counted {
        return Verdict::refused(kind, Some(o.conversion.get()), Reason::NotCounted);
    }
    if retracted_before {
        return Verdict::refused(kind, Some(o.conversion.get()), Reason::AlreadyRetracted);
    }
    let before = value_before.unwrap_or(0) as i64;
    let (value_micros, retracted, conversions_delta) = match kind {
        AdjustmentKind::Retract => (None, true, -1),
        AdjustmentKind::Restate => (adjustment.conversion.value_micros, false, 0),
    };
    let after = value_micros.unwrap_or(0) as i64;
    if fresh {
        o.applied = [
            Some(AppliedAdjustment {
                adjustment: id.into(),
                value_before,
                retracted_before,
            }),
            o.applied[0],
        ];
        o.retracted = retracted;
        if !retracted {
            o.value_micros = value_micros;
        }
    }
    Verdict {
        kind,
        original: Some(o.conversion.get()),
        credit: o.decision.credit,
        uncredited: o.decision.reason,
        refused: None,
        value_micros,
        retracted,
        value_delta_micros: after - before,
        conversions_delta,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::rules::{CreditKind, Decision, MatchedBy};
    use crate::attribution::state::Mark;
    use crate::event::ConversionInput;
    use crate::ids::{AdvertiserId, LineItemId, PixelId, PublisherId, UserId};

    fn outcome(counted: bool, value: Option<u64>) -> OrderOutcome {
        OrderOutcome {
            conversion: EventId::new_v7(1_000).into(),
            decision: Decision {
                counted,
                credit: Some(Credit {
                    kind: CreditKind::PostClick,
                    line_item: LineItemId(5),
                    mark: Mark::new(EventId::new_v7(500), 1, PublisherId(2), None),
                    matched_by: MatchedBy::Uid,
                }),
                reason: None,
            },
            value_micros: value,
            retracted: false,
            applied: [None; 2],
        }
    }

    fn adjustment(kind: AdjustmentKind, ts: u64, value: Option<u64>) -> AdjustmentInput {
        AdjustmentInput {
            kind,
            conversion: ConversionInput {
                uid: Some(UserId(1)),
                click: None,
                event_id: EventId::new_v7(ts),
                ts_ms: ts,
                pixel: PixelId(7),
                advertiser: AdvertiserId(3),
                order_id: None,
                value_micros: value,
                context: None,
            },
        }
    }

    #[test]
    fn a_restatement_then_a_retraction_net_out_to_nothing() {
        let mut o = outcome(true, Some(10_000_000));
        let restate = apply(
            Some(&mut o),
            &adjustment(AdjustmentKind::Restate, 2_000, Some(6_000_000)),
        );
        assert_eq!(restate.refused, None);
        assert_eq!(restate.value_delta_micros, -4_000_000);
        assert_eq!(restate.conversions_delta, 0);
        assert_eq!(restate.credit, o.decision.credit);
        let retract = apply(
            Some(&mut o),
            &adjustment(AdjustmentKind::Retract, 3_000, None),
        );
        assert!(retract.retracted);
        assert_eq!(retract.value_delta_micros, -6_000_000);
        assert_eq!(retract.conversions_delta, -1);
        // 1 conversion of 10 units, -4, -6 and -1 conversion: nothing left.
        let again = apply(
            Some(&mut o),
            &adjustment(AdjustmentKind::Restate, 4_000, Some(1)),
        );
        assert_eq!(again.refused, Some(Reason::AlreadyRetracted));
        assert_eq!(again.value_delta_micros, 0);
    }

    #[test]
    fn an_adjustment_read_again_gets_the_same_answer() {
        let mut o = outcome(true, Some(10_000_000));
        let first = adjustment(AdjustmentKind::Restate, 2_000, Some(6_000_000));
        let second = adjustment(AdjustmentKind::Retract, 3_000, None);
        let a = apply(Some(&mut o), &first);
        let b = apply(Some(&mut o), &second);
        assert_eq!(apply(Some(&mut o), &first), a);
        assert_eq!(apply(Some(&mut o), &second), b);
    }

    #[test]
    fn unknown_and_uncounted_orders_are_refused_with_their_reason() {
        let r = adjustment(AdjustmentKind::Retract, 2_000, None);
        assert_eq!(apply(None, &r).refused, Some(Reason::UnknownOrder));
        let mut o = outcome(false, None);
        let v = apply(Some(&mut o), &r);
        assert_eq!(v.refused, Some(Reason::NotCounted));
        assert_eq!(v.original, Some(o.conversion.get()));
        assert!(!o.retracted);
    }
}
