//! The changelog's value: one user's whole state in a versioned binary
//! form, so the compacted topic's last value per user is all a new owner
//! needs. A user of whom nothing is left is a tombstone (no value).
//!
//! Layout (little-endian), version 1:
//! `0x01 | u16 touches | touches | u16 marks | marks | u16 decided | decided`
//! - touch: `u32 line item | u8 present (1 view, 2 click) | mark per present kind`
//! - mark: `u128 event id | u32 tracker | u32 publisher | u32 placement (0 none)`
//! - repeat mark: `u32 pixel | u64 ms`
//! - decided: `u128 conversion event id | i64 offset | u8 flags (1 counted,
//!   2 credited, 4 late, 8 matched by click id) | credit (u8 kind, u32 line
//!   item, mark) or u8 reason`
//!
//! Version 2 appends `u16 orders | orders` (order: `u32 pixel | u64
//! fingerprint | u64 ms`, 20 bytes), written only when the user has order
//! ids to remember, so a user without any is still version 1. Version 3
//! (written since adjustments) adds each order's outcome
//! ([`crate::attribution::wire`]); version 2 is still read (its orders
//! without outcomes: adjustments of them are `unknown_order`). Version 4
//! (since source click ids) is version 3, its orders section always there
//! (maybe empty), then `u16 source clicks | source clicks` (source click:
//! `u128 click event id | u8 kind | u16 length | id`, 19 bytes and the
//! id), written only when one of the user's kept clicks has a source click
//! id: every other user's value is what the release before wrote.
//!
//! One user with one line item's view and click is 68 bytes.

use crate::attribution::rules::Decision;
use crate::attribution::source_click::SourceClickMark;
use crate::attribution::state::{LineItemTouches, Mark, OrderMark};
use crate::attribution::wire::{put_decision, put_mark, put_order, put_source_click, Reader};
use crate::ids::{EventId, PixelId};

/// The first byte of a value without order ids (and the oldest this
/// pixeld reads).
pub const VERSION: u8 = 1;
/// The first byte of a value with order ids but no outcomes (read only).
pub const VERSION_ORDERS: u8 = 2;
/// The first byte of a value with order ids and their outcomes.
pub const VERSION_OUTCOMES: u8 = 3;
/// The first byte of a value with source click ids (and the newest).
pub const VERSION_SOURCE_CLICKS: u8 = 4;

/// A conversion decided but whose input offset is not committed yet: a
/// re-read of it (after a crash, a rebalance, or a duplicate in the topic)
/// must give the same answer, whatever the state has learned since.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decided {
    pub conversion: EventId,
    /// Its offset in the conversions topic-partition: forgotten once the
    /// group's committed offset is past it.
    pub offset: i64,
    pub decision: Decision,
    pub late: bool,
}

/// Everything kept of one user.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserState {
    pub touches: Vec<LineItemTouches>,
    pub marks: Vec<(PixelId, u64)>,
    pub decided: Vec<Decided>,
    /// Order ids seen within their pixel's deduplication window.
    pub orders: Vec<OrderMark>,
    /// The traffic source's click ids of kept clicks.
    pub source_clicks: Vec<SourceClickMark>,
}

impl UserState {
    pub fn is_empty(&self) -> bool {
        self.touches.is_empty()
            && self.marks.is_empty()
            && self.decided.is_empty()
            && self.orders.is_empty()
            && self.source_clicks.is_empty()
    }

    /// The oldest version that holds everything the user has: a value
    /// stays readable by the release before as long as it can.
    fn version(&self) -> u8 {
        if !self.source_clicks.is_empty() {
            VERSION_SOURCE_CLICKS
        } else if !self.orders.is_empty() {
            VERSION_OUTCOMES
        } else {
            VERSION
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        let version = self.version();
        out.push(version);
        out.extend_from_slice(&(self.touches.len() as u16).to_le_bytes());
        for t in &self.touches {
            out.extend_from_slice(&t.line_item.to_le_bytes());
            let present = t.view.is_set() as u8 | (t.click.is_set() as u8) << 1;
            out.push(present);
            for m in [&t.view, &t.click].into_iter().filter(|m| m.is_set()) {
                put_mark(out, m);
            }
        }
        out.extend_from_slice(&(self.marks.len() as u16).to_le_bytes());
        for (pixel, ts) in &self.marks {
            out.extend_from_slice(&pixel.0.to_le_bytes());
            out.extend_from_slice(&ts.to_le_bytes());
        }
        out.extend_from_slice(&(self.decided.len() as u16).to_le_bytes());
        for d in &self.decided {
            out.extend_from_slice(&d.conversion.0.to_le_bytes());
            out.extend_from_slice(&d.offset.to_le_bytes());
            put_decision(out, &d.decision, d.late);
        }
        if version >= VERSION_ORDERS {
            out.extend_from_slice(&(self.orders.len() as u16).to_le_bytes());
            for o in &self.orders {
                put_order(out, o, true);
            }
        }
        if version >= VERSION_SOURCE_CLICKS {
            out.extend_from_slice(&(self.source_clicks.len() as u16).to_le_bytes());
            for m in &self.source_clicks {
                put_source_click(out, m);
            }
        }
    }

    /// Parses a value; `Err` names what is wrong (a value from a newer
    /// pixeld, or damaged bytes).
    pub fn decode(bytes: &[u8]) -> Result<UserState, String> {
        let mut r = Reader::new(bytes, 0);
        let version = r.u8()?;
        if !(VERSION..=VERSION_SOURCE_CLICKS).contains(&version) {
            return Err(format!(
                "changelog value version {version}, this pixeld reads {VERSION} to {VERSION_SOURCE_CLICKS}"
            ));
        }
        let mut out = UserState::default();
        for _ in 0..r.u16()? {
            let line_item = r.u32()?;
            let present = r.u8()?;
            let mut t = LineItemTouches {
                line_item,
                ..Default::default()
            };
            if present & 1 != 0 {
                t.view = present_mark(&mut r)?;
            }
            if present & 2 != 0 {
                t.click = present_mark(&mut r)?;
            }
            out.touches.push(t);
        }
        for _ in 0..r.u16()? {
            out.marks.push((PixelId(r.u32()?), r.u64()?));
        }
        for _ in 0..r.u16()? {
            let conversion = EventId(r.u128()?);
            let offset = r.u64()? as i64;
            let (decision, late) = r.decision()?;
            out.decided.push(Decided {
                conversion,
                offset,
                decision,
                late,
            });
        }
        if version >= VERSION_ORDERS {
            for _ in 0..r.u16()? {
                out.orders.push(r.order(version >= VERSION_OUTCOMES)?);
            }
        }
        if version >= VERSION_SOURCE_CLICKS {
            for _ in 0..r.u16()? {
                out.source_clicks.push(r.source_click()?);
            }
        }
        if !r.done() {
            return Err("trailing bytes after the user's state".into());
        }
        Ok(out)
    }
}

fn present_mark(r: &mut Reader<'_>) -> Result<Mark, String> {
    r.present_mark()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::rules::{Credit, CreditKind, MatchedBy, Reason};
    use crate::attribution::state::{AppliedAdjustment, OrderOutcome};
    use crate::ids::LineItemId;
    use crate::ids::{PlacementId, PublisherId};

    fn mark(ts: u64, tracker: u32) -> Mark {
        Mark::new(EventId::new_v7(ts), tracker, PublisherId(7), None)
    }

    #[test]
    fn a_user_with_a_view_and_a_click_is_68_bytes_and_round_trips() {
        let user = UserState {
            touches: vec![LineItemTouches {
                line_item: 5,
                view: mark(1_000, 2766),
                click: mark(2_000, 31),
            }],
            ..Default::default()
        };
        let mut buf = Vec::new();
        user.encode(&mut buf);
        assert_eq!(buf.len(), 68);
        assert_eq!(UserState::decode(&buf).unwrap(), user);
    }

    #[test]
    fn marks_and_decisions_round_trip_and_damage_is_named() {
        let credited = Decision {
            counted: true,
            credit: Some(Credit {
                kind: CreditKind::PostView,
                line_item: LineItemId(5),
                mark: Mark::new(EventId::new_v7(9), 1, PublisherId(2), Some(PlacementId(3))),
                matched_by: MatchedBy::Uid,
            }),
            reason: None,
        };
        let by_click_id = Decision {
            credit: credited.credit.map(|c| Credit {
                kind: CreditKind::PostClick,
                matched_by: MatchedBy::ClickId,
                ..c
            }),
            ..credited
        };
        let user = UserState {
            touches: vec![LineItemTouches {
                line_item: 1,
                view: Mark::default(),
                click: mark(5, 1),
            }],
            marks: vec![(PixelId(7313), 99)],
            decided: vec![
                Decided {
                    conversion: EventId::new_v7(10),
                    offset: 41,
                    decision: credited,
                    late: true,
                },
                Decided {
                    conversion: EventId::new_v7(12),
                    offset: 43,
                    decision: by_click_id,
                    late: false,
                },
                Decided {
                    conversion: EventId::new_v7(11),
                    offset: 42,
                    decision: Decision {
                        counted: false,
                        credit: None,
                        reason: Some(Reason::Repeat),
                    },
                    late: false,
                },
            ],
            orders: vec![
                OrderMark {
                    pixel: PixelId(7313),
                    order: 0xfeed,
                    ts_ms: 77,
                    outcome: Some(OrderOutcome {
                        conversion: EventId::new_v7(77).into(),
                        decision: credited,
                        value_micros: Some(12_500_000),
                        retracted: true,
                        applied: [
                            Some(AppliedAdjustment {
                                adjustment: EventId::new_v7(90).into(),
                                value_before: Some(20_000_000),
                                retracted_before: false,
                            }),
                            None,
                        ],
                    }),
                },
                OrderMark {
                    pixel: PixelId(7313),
                    order: 0xbeef,
                    ts_ms: 78,
                    outcome: None,
                },
            ],
            source_clicks: vec![],
        };
        let mut buf = Vec::new();
        user.encode(&mut buf);
        assert_eq!(buf[0], VERSION_OUTCOMES);
        assert_eq!(UserState::decode(&buf).unwrap(), user);
        for cut in 0..buf.len() {
            assert!(UserState::decode(&buf[..cut]).is_err(), "cut at {cut}");
        }
        buf[0] = 9;
        assert!(UserState::decode(&buf).unwrap_err().contains("version 9"));
        // A version-1 value (no orders) with an orders section is refused.
        buf[0] = VERSION;
        assert!(UserState::decode(&buf).is_err());
    }

    fn sourced(click: &Mark, kind: SourceClickKind, id: &str) -> SourceClickMark {
        SourceClickMark::new(click.event_id(), OwnedSourceClick::new(kind, id).unwrap())
    }

    use crate::event::{OwnedSourceClick, SourceClickKind};

    #[test]
    fn source_click_ids_round_trip_in_version_4_and_cost_19_bytes_and_the_id() {
        let click = mark(2_000, 31);
        let plain = UserState {
            touches: vec![LineItemTouches {
                line_item: 5,
                view: mark(1_000, 2766),
                click,
            }],
            ..Default::default()
        };
        let mut without = Vec::new();
        plain.encode(&mut without);
        assert_eq!(
            without[0], VERSION,
            "no id: the value the release before wrote"
        );
        let user = UserState {
            source_clicks: vec![sourced(&click, SourceClickKind::Fbclid, "IwAR2abc")],
            ..plain.clone()
        };
        let mut buf = Vec::new();
        user.encode(&mut buf);
        assert_eq!(buf[0], VERSION_SOURCE_CLICKS);
        // An empty orders section, the count, and one id of 8 bytes.
        assert_eq!(buf.len(), without.len() + 2 + 2 + 19 + 8);
        assert_eq!(UserState::decode(&buf).unwrap(), user);
        // With orders too, both sections come back.
        let both = UserState {
            orders: vec![OrderMark {
                pixel: PixelId(7313),
                order: 0xfeed,
                ts_ms: 77,
                outcome: None,
            }],
            ..user.clone()
        };
        let mut buf = Vec::new();
        both.encode(&mut buf);
        assert_eq!(UserState::decode(&buf).unwrap(), both);
    }

    #[test]
    fn a_version_3_value_still_decodes_and_damaged_source_clicks_are_named() {
        // What the release before wrote for a user with an order: version 3.
        let v3 = UserState {
            touches: vec![LineItemTouches {
                line_item: 5,
                view: Mark::default(),
                click: mark(2_000, 31),
            }],
            orders: vec![OrderMark {
                pixel: PixelId(7313),
                order: 0xbeef,
                ts_ms: 78,
                outcome: None,
            }],
            ..Default::default()
        };
        let mut buf = Vec::new();
        v3.encode(&mut buf);
        assert_eq!(buf[0], VERSION_OUTCOMES);
        assert_eq!(UserState::decode(&buf).unwrap(), v3);

        let click = v3.touches[0].click;
        let user = UserState {
            source_clicks: vec![sourced(&click, SourceClickKind::Source, "aff-7781")],
            ..v3
        };
        let mut buf = Vec::new();
        user.encode(&mut buf);
        for cut in 0..buf.len() {
            assert!(UserState::decode(&buf[..cut]).is_err(), "cut at {cut}");
        }
        let err = |b: &[u8]| UserState::decode(b).unwrap_err();
        // The kind's byte: before the id's length and its 8 bytes.
        let kind_at = buf.len() - 8 - 2 - 1;
        let mut bad = buf.clone();
        bad[kind_at] = 9;
        assert!(err(&bad).contains("source click kind 9"), "{}", err(&bad));
        let mut bad = buf.clone();
        bad[kind_at + 3] = b'<';
        assert!(err(&bad).contains("characters"), "{}", err(&bad));
        let mut bad = buf.clone();
        bad[kind_at - 16..kind_at].fill(0);
        assert!(err(&bad).contains("without its click"), "{}", err(&bad));
        let mut bad = buf.clone();
        bad.push(0);
        assert!(err(&bad).contains("trailing"), "{}", err(&bad));
        // A version-3 value holding a source clicks section is refused.
        let mut bad = buf.clone();
        bad[0] = VERSION_OUTCOMES;
        assert!(UserState::decode(&bad).is_err());
        bad[0] = 5;
        assert!(err(&bad).contains("version 5, this pixeld reads 1 to 4"));
    }
}
