//! Duplicates counted once: a conversion whose order id its pixel already
//! saw for the same user within `dedup_minutes` is the same sale reported
//! again (a reload, the page and the shop's server both).

use super::rules::Decision;
use super::state::{OrderMark, OrderOutcome, State};
use crate::config::ConversionPixel;
use crate::event::ConversionInput;
use crate::ids::UserId;

/// One conversion's deduplication: its order id's fingerprint and its
/// pixel's window. None when it has no order id or its pixel does not
/// deduplicate (an empty order id never matches another).
#[derive(Clone, Copy)]
pub struct Dedup {
    order: u64,
    window_ms: u64,
}

impl Dedup {
    pub fn of(conversion: &ConversionInput, pixel: Option<&ConversionPixel>) -> Option<Dedup> {
        let (order, pixel) = (conversion.order_id?, pixel?);
        (pixel.dedup_ms > 0).then(|| Dedup {
            order: order.fingerprint(),
            window_ms: pixel.dedup_ms,
        })
    }

    /// Whether the order was already seen for this pixel and user.
    pub fn seen(&self, state: &State, uid: UserId, conversion: &ConversionInput) -> bool {
        state.order_seen(
            uid,
            conversion.pixel,
            self.order,
            conversion.ts_ms,
            self.window_ms,
        )
    }

    /// Remembers the order's first sighting (a duplicate does not move the
    /// window) with its decision, for the adjustments that may name it.
    pub fn remember(
        &self,
        state: &State,
        uid: UserId,
        conversion: &ConversionInput,
        decision: Decision,
    ) {
        let outcome = OrderOutcome {
            conversion: conversion.event_id.into(),
            decision,
            value_micros: conversion.value_micros,
            retracted: false,
            applied: [None; 2],
        };
        state.remember_order(
            uid,
            OrderMark {
                pixel: conversion.pixel,
                order: self.order,
                ts_ms: conversion.ts_ms,
                outcome: Some(outcome),
            },
        );
    }
}
