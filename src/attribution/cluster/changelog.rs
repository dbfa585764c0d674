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
//! ids to remember, so a user without any is still version 1.
//!
//! One user with one line item's view and click is 68 bytes.

use crate::attribution::rules::{Credit, CreditKind, Decision, MatchedBy, Reason};
use crate::attribution::state::{LineItemTouches, Mark, OrderMark};
use crate::attribution::wire::{put_mark, Reader};
use crate::ids::{EventId, LineItemId, PixelId};

/// The first byte of a value without order ids (and the oldest this
/// pixeld reads).
pub const VERSION: u8 = 1;
/// The first byte of a value with order ids.
pub const VERSION_ORDERS: u8 = 2;

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
}

impl UserState {
    pub fn is_empty(&self) -> bool {
        self.touches.is_empty()
            && self.marks.is_empty()
            && self.decided.is_empty()
            && self.orders.is_empty()
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(if self.orders.is_empty() {
            VERSION
        } else {
            VERSION_ORDERS
        });
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
            let flags = d.decision.counted as u8
                | (d.decision.credit.is_some() as u8) << 1
                | (d.late as u8) << 2
                | (d.decision
                    .credit
                    .is_some_and(|c| c.matched_by == MatchedBy::ClickId) as u8)
                    << 3;
            out.push(flags);
            match (&d.decision.credit, d.decision.reason) {
                (Some(c), _) => {
                    out.push(match c.kind {
                        CreditKind::PostClick => 0,
                        CreditKind::PostView => 1,
                    });
                    out.extend_from_slice(&c.line_item.0.to_le_bytes());
                    put_mark(out, &c.mark);
                }
                (None, reason) => out.push(reason.map_or(0, reason_code)),
            }
        }
        if !self.orders.is_empty() {
            out.extend_from_slice(&(self.orders.len() as u16).to_le_bytes());
            for o in &self.orders {
                out.extend_from_slice(&o.pixel.0.to_le_bytes());
                out.extend_from_slice(&o.order.to_le_bytes());
                out.extend_from_slice(&o.ts_ms.to_le_bytes());
            }
        }
    }

    /// Parses a value; `Err` names what is wrong (a value from a newer
    /// pixeld, or damaged bytes).
    pub fn decode(bytes: &[u8]) -> Result<UserState, String> {
        let mut r = Reader::new(bytes, 0);
        let version = r.u8()?;
        if version != VERSION && version != VERSION_ORDERS {
            return Err(format!(
                "changelog value version {version}, this pixeld reads {VERSION} and {VERSION_ORDERS}"
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
            let flags = r.u8()?;
            let decision = if flags & 2 != 0 {
                let kind = match r.u8()? {
                    0 => CreditKind::PostClick,
                    1 => CreditKind::PostView,
                    k => return Err(format!("unknown credit kind {k}")),
                };
                let line_item = LineItemId(r.u32()?);
                Decision {
                    counted: flags & 1 != 0,
                    credit: Some(Credit {
                        kind,
                        line_item,
                        mark: present_mark(&mut r)?,
                        matched_by: if flags & 8 != 0 {
                            MatchedBy::ClickId
                        } else {
                            MatchedBy::Uid
                        },
                    }),
                    reason: None,
                }
            } else {
                Decision {
                    counted: flags & 1 != 0,
                    credit: None,
                    reason: Some(reason_of(r.u8()?)?),
                }
            };
            out.decided.push(Decided {
                conversion,
                offset,
                decision,
                late: flags & 4 != 0,
            });
        }
        if version == VERSION_ORDERS {
            for _ in 0..r.u16()? {
                out.orders.push(OrderMark {
                    pixel: PixelId(r.u32()?),
                    order: r.u64()?,
                    ts_ms: r.u64()?,
                });
            }
        }
        if !r.done() {
            return Err("trailing bytes after the user's state".into());
        }
        Ok(out)
    }
}

/// A reason's code in the changelog: written by an exhaustive match, so a
/// new reason cannot be stored under another's code; codes never change
/// (values outlive releases).
fn reason_code(r: Reason) -> u8 {
    match r {
        Reason::NoUid => 1,
        Reason::NoLineItems => 2,
        Reason::NoTouch => 3,
        Reason::OutsideWindow => 4,
        Reason::Repeat => 5,
        Reason::Duplicate => 6,
    }
}

fn reason_of(code: u8) -> Result<Reason, String> {
    Ok(match code {
        1 => Reason::NoUid,
        2 => Reason::NoLineItems,
        3 => Reason::NoTouch,
        4 => Reason::OutsideWindow,
        5 => Reason::Repeat,
        6 => Reason::Duplicate,
        _ => return Err(format!("unknown reason code {code}")),
    })
}

/// A present touch: the same 28 bytes as the snapshot's, never all zero.
fn present_mark(r: &mut Reader<'_>) -> Result<Mark, String> {
    let m = r.mark()?;
    if !m.is_set() {
        return Err("a present mark without an event id".into());
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
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
            orders: vec![OrderMark {
                pixel: PixelId(7313),
                order: 0xfeed,
                ts_ms: 77,
            }],
        };
        let mut buf = Vec::new();
        user.encode(&mut buf);
        assert_eq!(buf[0], VERSION_ORDERS);
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

    #[test]
    fn every_reason_round_trips_under_its_own_code() {
        use crate::attribution::rules::Reason::*;
        let all = [
            NoUid,
            NoLineItems,
            NoTouch,
            OutsideWindow,
            Repeat,
            Duplicate,
        ];
        let mut codes: Vec<u8> = all.iter().map(|r| reason_code(*r)).collect();
        for r in all {
            assert_eq!(reason_of(reason_code(r)), Ok(r));
        }
        codes.dedup();
        assert_eq!(codes.len(), all.len());
        assert!(reason_of(0).is_err() && reason_of(7).is_err());
    }
}
