//! The little-endian pieces both stored forms of the state share (the
//! snapshot file and the cluster's changelog values): a stored touch, a
//! decision, an order mark, and a reader that checks every bound.
//!
//! - decision: `u8 flags (1 counted, 2 credited, 4 late, 8 matched by click
//!   id) | credit (u8 kind, u32 line item, mark) or u8 reason`
//! - order mark: `u32 pixel | u64 fingerprint | u64 ms`, then in the forms
//!   with outcomes `u8 has outcome` and the outcome: `u128 conversion |
//!   decision | u8 has value | u64 value | u8 retracted | u8 applied |
//!   applied × (u128 adjustment | u8 had value | u64 value | u8 retracted)`
//! - source click: `u128 click event id | u8 kind | u16 length | id`
//!   ([`crate::event::OwnedSourceClick::put`])

use super::rules::{Credit, CreditKind, Decision, MatchedBy, Reason};
use super::source_click::SourceClickMark;
use super::state::{AppliedAdjustment, Mark, OrderMark, OrderOutcome};
use crate::event::OwnedSourceClick;
use crate::ids::{EventId, LineItemId, PixelId, PlacementId, PublisherId};

/// A touch as stored: `u128 event id | u32 tracker | u32 publisher | u32
/// placement (0 none)`, 28 bytes; an all-zero event id is "no touch".
pub fn put_mark(out: &mut Vec<u8>, m: &Mark) {
    out.extend_from_slice(&m.event_id().0.to_le_bytes());
    out.extend_from_slice(&m.tracker().to_le_bytes());
    out.extend_from_slice(&m.publisher().0.to_le_bytes());
    out.extend_from_slice(&m.placement().map_or(0, |p| p.0).to_le_bytes());
}

/// A decision and whether it was late.
pub fn put_decision(out: &mut Vec<u8>, d: &Decision, late: bool) {
    let flags = d.counted as u8
        | (d.credit.is_some() as u8) << 1
        | (late as u8) << 2
        | (d.credit.is_some_and(|c| c.matched_by == MatchedBy::ClickId) as u8) << 3;
    out.push(flags);
    match (&d.credit, d.reason) {
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

fn put_opt_u64(out: &mut Vec<u8>, v: Option<u64>) {
    out.push(v.is_some() as u8);
    out.extend_from_slice(&v.unwrap_or(0).to_le_bytes());
}

/// An order mark; `with_outcome` in the forms that carry outcomes.
pub fn put_order(out: &mut Vec<u8>, o: &OrderMark, with_outcome: bool) {
    out.extend_from_slice(&o.pixel.0.to_le_bytes());
    out.extend_from_slice(&o.order.to_le_bytes());
    out.extend_from_slice(&o.ts_ms.to_le_bytes());
    if !with_outcome {
        return;
    }
    let Some(oc) = &o.outcome else {
        out.push(0);
        return;
    };
    out.push(1);
    out.extend_from_slice(&oc.conversion.get().0.to_le_bytes());
    put_decision(out, &oc.decision, false);
    put_opt_u64(out, oc.value_micros);
    out.push(oc.retracted as u8);
    let applied: Vec<&AppliedAdjustment> = oc.applied.iter().flatten().collect();
    out.push(applied.len() as u8);
    for a in applied {
        out.extend_from_slice(&a.adjustment.get().0.to_le_bytes());
        put_opt_u64(out, a.value_before);
        out.push(a.retracted_before as u8);
    }
}

/// A kept click's source click id.
pub fn put_source_click(out: &mut Vec<u8>, m: &SourceClickMark) {
    out.extend_from_slice(&m.click.get().0.to_le_bytes());
    m.source.put(out);
}

/// A reason's stored code: written by an exhaustive match, so a new reason
/// cannot be stored under another's code; codes never change (values
/// outlive releases).
pub fn reason_code(r: Reason) -> u8 {
    match r {
        Reason::NoUid => 1,
        Reason::NoLineItems => 2,
        Reason::NoTouch => 3,
        Reason::OutsideWindow => 4,
        Reason::Repeat => 5,
        Reason::Duplicate => 6,
        Reason::UnknownOrder => 7,
        Reason::NotCounted => 8,
        Reason::AlreadyRetracted => 9,
    }
}

pub fn reason_of(code: u8) -> Result<Reason, String> {
    Ok(match code {
        1 => Reason::NoUid,
        2 => Reason::NoLineItems,
        3 => Reason::NoTouch,
        4 => Reason::OutsideWindow,
        5 => Reason::Repeat,
        6 => Reason::Duplicate,
        7 => Reason::UnknownOrder,
        8 => Reason::NotCounted,
        9 => Reason::AlreadyRetracted,
        _ => return Err(format!("unknown reason code {code}")),
    })
}

/// Bounds-checked little-endian reads over stored bytes.
pub struct Reader<'a> {
    pub bytes: &'a [u8],
    pub at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8], at: usize) -> Reader<'a> {
        Reader { bytes, at }
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let end = self
            .at
            .checked_add(N)
            .filter(|e| *e <= self.bytes.len())
            .ok_or("truncated")?;
        let mut a = [0u8; N];
        a.copy_from_slice(&self.bytes[self.at..end]);
        self.at = end;
        Ok(a)
    }
    pub fn u8(&mut self) -> Result<u8, String> {
        self.take::<1>().map(|[b]| b)
    }
    pub fn u16(&mut self) -> Result<u16, String> {
        self.take::<2>().map(u16::from_le_bytes)
    }
    pub fn u32(&mut self) -> Result<u32, String> {
        self.take::<4>().map(u32::from_le_bytes)
    }
    pub fn u64(&mut self) -> Result<u64, String> {
        self.take::<8>().map(u64::from_le_bytes)
    }
    pub fn u128(&mut self) -> Result<u128, String> {
        self.take::<16>().map(u128::from_le_bytes)
    }
    /// A stored touch; an all-zero event id reads as "no touch".
    pub fn mark(&mut self) -> Result<Mark, String> {
        let event = EventId(self.u128()?);
        let tracker = self.u32()?;
        let publisher = PublisherId(self.u32()?);
        let placement = Some(self.u32()?).filter(|p| *p != 0).map(PlacementId);
        Ok(if event.0 == 0 {
            Mark::default()
        } else {
            Mark::new(event, tracker, publisher, placement)
        })
    }
    /// A present touch: never all zero.
    pub fn present_mark(&mut self) -> Result<Mark, String> {
        let m = self.mark()?;
        if !m.is_set() {
            return Err("a present mark without an event id".into());
        }
        Ok(m)
    }

    /// A decision and whether it was late ([`put_decision`]).
    pub fn decision(&mut self) -> Result<(Decision, bool), String> {
        let flags = self.u8()?;
        let decision = if flags & 2 != 0 {
            let kind = match self.u8()? {
                0 => CreditKind::PostClick,
                1 => CreditKind::PostView,
                k => return Err(format!("unknown credit kind {k}")),
            };
            let line_item = LineItemId(self.u32()?);
            let matched_by = if flags & 8 != 0 {
                MatchedBy::ClickId
            } else {
                MatchedBy::Uid
            };
            Decision {
                counted: flags & 1 != 0,
                credit: Some(Credit {
                    kind,
                    line_item,
                    mark: self.present_mark()?,
                    matched_by,
                }),
                reason: None,
            }
        } else {
            Decision {
                counted: flags & 1 != 0,
                credit: None,
                reason: Some(reason_of(self.u8()?)?),
            }
        };
        Ok((decision, flags & 4 != 0))
    }

    fn opt_u64(&mut self) -> Result<Option<u64>, String> {
        let has = self.u8()? == 1;
        let v = self.u64()?;
        Ok(has.then_some(v))
    }

    /// An order mark ([`put_order`]).
    pub fn order(&mut self, with_outcome: bool) -> Result<OrderMark, String> {
        let pixel = PixelId(self.u32()?);
        let order = self.u64()?;
        let ts_ms = self.u64()?;
        let outcome = if with_outcome && self.u8()? == 1 {
            Some(self.outcome()?)
        } else {
            None
        };
        Ok(OrderMark {
            pixel,
            order,
            ts_ms,
            outcome,
        })
    }

    fn outcome(&mut self) -> Result<OrderOutcome, String> {
        let conversion = EventId(self.u128()?).into();
        let (decision, _) = self.decision()?;
        let value_micros = self.opt_u64()?;
        let retracted = self.u8()? == 1;
        let n = self.u8()? as usize;
        if n > 2 {
            return Err(format!("{n} applied adjustments, at most 2 are kept"));
        }
        let mut applied = [None; 2];
        for slot in applied.iter_mut().take(n) {
            *slot = Some(AppliedAdjustment {
                adjustment: EventId(self.u128()?).into(),
                value_before: self.opt_u64()?,
                retracted_before: self.u8()? == 1,
            });
        }
        Ok(OrderOutcome {
            conversion,
            decision,
            value_micros,
            retracted,
            applied,
        })
    }

    /// A kept click's source click id ([`put_source_click`]).
    pub fn source_click(&mut self) -> Result<SourceClickMark, String> {
        let click = EventId(self.u128()?);
        if click.0 == 0 {
            return Err("a source click id without its click's event id".into());
        }
        let rest = &self.bytes[self.at..];
        let (source, left) = OwnedSourceClick::take(rest)?;
        self.at += rest.len() - left.len();
        Ok(SourceClickMark::new(click, source))
    }

    /// Whether every byte was read.
    pub fn done(&self) -> bool {
        self.at == self.bytes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_round_trips_under_its_own_code() {
        use Reason::*;
        let all = [
            NoUid,
            NoLineItems,
            NoTouch,
            OutsideWindow,
            Repeat,
            Duplicate,
            UnknownOrder,
            NotCounted,
            AlreadyRetracted,
        ];
        let mut codes: Vec<u8> = all.iter().map(|r| reason_code(*r)).collect();
        for r in all {
            assert_eq!(reason_of(reason_code(r)), Ok(r));
        }
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
        assert!(reason_of(0).is_err() && reason_of(10).is_err());
    }

    #[test]
    fn an_order_mark_of_the_release_before_outcomes_still_reads() {
        // `u32 pixel | u64 fingerprint | u64 ms`, as version 2 wrote it.
        let mut old = Vec::new();
        old.extend_from_slice(&7313u32.to_le_bytes());
        old.extend_from_slice(&0xfeedu64.to_le_bytes());
        old.extend_from_slice(&77u64.to_le_bytes());
        let mark = Reader::new(&old, 0).order(false).unwrap();
        assert_eq!(
            (mark.pixel, mark.order, mark.ts_ms),
            (PixelId(7313), 0xfeed, 77)
        );
        assert_eq!(mark.outcome, None);
    }
}
