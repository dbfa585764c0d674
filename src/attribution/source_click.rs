//! The traffic source's click ids of the clicks the engine keeps, so the
//! record of a conversion credited to one of those clicks can hand the id
//! back (`source_click_id`, `source_click_kind`: a postback's
//! `${CLICK_ID}`, Meta's `fbc`, a Google Ads upload).
//!
//! A map of its own beside the touches, like the order marks: most users
//! click without one (or never click), and they pay nothing for it, where a
//! field in every stored touch would cost each of them. An entry lives
//! exactly as long as its click is one of the user's kept click marks
//! ([`super::state::State`] keeps it so: replaced with its line item's click,
//! dropped with the user on eviction, erasure and expiry).

use dashmap::DashMap;

use super::rules::{Credit, CreditKind};
use super::state::StoredId;
use crate::event::{ConversionInput, OwnedSourceClick};
use crate::ids::{EventId, UserId};

/// One kept click's source click id: 40 bytes in its user's list, plus the
/// id's own bytes on the heap (`tests::a_source_click_mark_is_measured`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceClickMark {
    /// The click's event id: a kept click mark has the same.
    pub click: StoredId,
    pub source: OwnedSourceClick,
}

impl SourceClickMark {
    pub fn new(click: EventId, source: OwnedSourceClick) -> SourceClickMark {
        SourceClickMark {
            click: click.into(),
            source,
        }
    }

    /// The order in which a user's marks are written out.
    pub fn sort_key(&self) -> EventId {
        self.click.get()
    }
}

/// Per user, the source click ids of their kept clicks (a user has one
/// click mark per line item, so the list is short).
#[derive(Default)]
pub struct SourceClicks {
    by_user: DashMap<UserId, Vec<SourceClickMark>>,
}

impl SourceClicks {
    /// The source click id of `uid`'s kept click `click`.
    pub fn get(&self, uid: UserId, click: EventId) -> Option<OwnedSourceClick> {
        let list = self.by_user.get(&uid)?;
        let mark = list.iter().find(|m| m.click.get() == click)?;
        Some(mark.source.clone())
    }

    /// A click mark of `uid` was replaced by `new` (or stored where there
    /// was none, `old` None): the old click's id goes, the new one's, if it
    /// has one, comes.
    pub fn replace(
        &self,
        uid: UserId,
        old: Option<EventId>,
        new: EventId,
        source: Option<OwnedSourceClick>,
    ) {
        if let Some(old) = old {
            self.drop_click(uid, old);
        }
        if let Some(source) = source {
            // Room for one: a first push would make room for four (160
            // bytes), and nearly every user keeps one click with an id.
            let mut list = self
                .by_user
                .entry(uid)
                .or_insert_with(|| Vec::with_capacity(1));
            list.retain(|m| m.click.get() != new);
            list.push(SourceClickMark::new(new, source));
        }
    }

    /// Drops the id of one click of `uid` (its mark is gone).
    pub fn drop_click(&self, uid: UserId, click: EventId) {
        let emptied = self.by_user.get_mut(&uid).is_some_and(|mut list| {
            list.retain(|m| m.click.get() != click);
            list.is_empty()
        });
        if emptied {
            self.by_user.remove_if(&uid, |_, list| list.is_empty());
        }
    }

    /// Drops everything of `uid` (evicted, opted out, or replaced whole).
    pub fn forget(&self, uid: UserId) {
        self.by_user.remove(&uid);
    }

    /// One user's marks, sorted.
    pub fn of(&self, uid: UserId) -> Vec<SourceClickMark> {
        let mut list = self.by_user.get(&uid).map_or_else(Vec::new, |v| v.clone());
        list.sort_unstable_by_key(SourceClickMark::sort_key);
        list
    }

    /// Every mark (for snapshots).
    pub fn all(&self) -> Vec<(UserId, SourceClickMark)> {
        let mut out = Vec::with_capacity(self.by_user.len());
        for e in self.by_user.iter() {
            out.extend(e.value().iter().map(|m| (*e.key(), m.clone())));
        }
        out
    }

    /// Replaces a user's marks (loading a changelog value or a snapshot).
    pub fn set(&self, uid: UserId, list: Vec<SourceClickMark>) {
        if list.is_empty() {
            self.by_user.remove(&uid);
        } else {
            self.by_user.insert(uid, list);
        }
    }

    /// How many are kept.
    pub fn len(&self) -> usize {
        self.by_user.iter().map(|e| e.value().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_user.is_empty()
    }
}

/// The source click id a record carries: its credited click's, when the
/// credit is a click (post-click) and the state still keeps it. A click
/// matched by uid is in the state of the user whose touches were read (the
/// conversion's state user); one matched by click id is under the user the
/// `pxclid` token names (`ClickRef::user`), which for a conversion without
/// a cookie is also its state user. Both are asked: event ids are unique,
/// so the click cannot be found under the wrong user.
pub fn credited(
    clicks: &SourceClicks,
    conversion: &ConversionInput,
    credit: Option<&Credit>,
) -> Option<OwnedSourceClick> {
    let credit = credit.filter(|c| c.kind == CreditKind::PostClick)?;
    let click = credit.mark.event_id();
    let by_token = conversion.click.and_then(|k| k.user);
    [conversion.state_user(), by_token]
        .into_iter()
        .flatten()
        .find_map(|uid| clicks.get(uid, click))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::SourceClickKind;

    fn source(id: &str) -> OwnedSourceClick {
        OwnedSourceClick::new(SourceClickKind::Source, id).unwrap()
    }

    /// What one remembered source click costs in memory (README, "What
    /// pixeld keeps"): its mark in the user's list; the id's bytes and the
    /// user's map slot and list come on top (`benches/attribution_memory.rs`
    /// measures them all).
    #[test]
    fn a_source_click_mark_is_measured() {
        let bytes = std::mem::size_of::<SourceClickMark>();
        println!("one remembered source click: {bytes} bytes in its user's list");
        assert_eq!(bytes, 40, "a 16-byte id, a boxed str and the kind");
        assert_eq!(
            std::mem::size_of::<Option<OwnedSourceClick>>(),
            24,
            "what a touch input without one carries"
        );
    }

    #[test]
    fn a_replaced_click_takes_its_id_along_and_an_emptied_user_goes() {
        let m = SourceClicks::default();
        let (u, a, b) = (UserId(1), EventId::new_v7(1), EventId::new_v7(2));
        m.replace(u, None, a, Some(source("first")));
        assert_eq!(m.get(u, a), Some(source("first")));
        assert_eq!(m.get(UserId(2), a), None, "only under its own user");
        // The line item's click is replaced by one without an id.
        m.replace(u, Some(a), b, None);
        assert_eq!((m.get(u, a), m.len()), (None, 0));
        assert!(m.is_empty(), "the user's empty list is dropped");
        m.replace(u, None, a, Some(source("a")));
        m.replace(u, None, b, Some(source("b")));
        assert_eq!(m.of(u).len(), 2);
        m.drop_click(u, a);
        assert_eq!(m.of(u), vec![SourceClickMark::new(b, source("b"))]);
        m.forget(u);
        assert!(m.is_empty());
    }
}
