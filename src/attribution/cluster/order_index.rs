//! The first hop of an adjustment named by its order alone. `pixeld serve`
//! in cluster mode writes a copy of every conversion with an order id to
//! the orders topic, keyed by its pixel and order id
//! ([`crate::event::input::PartitionKey::Order`]), and keys such an
//! adjustment the same way: both reach the member owning that key's
//! partition, in event-time order like every input. That member keeps
//! which user reported each order last (this index, kept in its changelog
//! under the order's key) and sends the adjustment on, keyed by that user,
//! to the member holding the user's orders (the adjustments-by-user topic),
//! which answers it like one that named its user. An order the index does
//! not know is answered here: `unknown_order`.

use std::collections::{HashMap, HashSet};

use crate::ids::{PixelId, UserId};

/// (pixel, the order id's fingerprint).
pub type OrderKey = (PixelId, u64);

/// The first byte of an index entry's changelog value.
const VERSION: u8 = 1;

/// Who reported each order of this partition's order keys, and when.
#[derive(Debug, Default)]
pub struct OrderIndex {
    entries: HashMap<OrderKey, Owner, ahash::RandomState>,
    /// Entries changed (or dropped) since the last changelog write.
    dirty: HashSet<OrderKey, ahash::RandomState>,
}

/// The user who reported an order, at the conversion's time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub ts_ms: u64,
    /// The conversion's state user (its uid, or its click's id).
    pub user: UserId,
}

impl OrderIndex {
    /// A conversion of `user` reported `key` at `ts_ms`. When two users
    /// report one order id, the later report owns it (as in the in-process
    /// engine), whatever order the copies are read in.
    pub fn note(&mut self, key: OrderKey, owner: Owner) {
        let newer = self
            .entries
            .get(&key)
            .is_none_or(|o| (o.ts_ms, o.user) < (owner.ts_ms, owner.user));
        if newer {
            self.entries.insert(key, owner);
            self.dirty.insert(key);
        }
    }

    pub fn owner(&self, key: OrderKey) -> Option<UserId> {
        self.entries.get(&key).map(|o| o.user)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops orders older than their pixel's `dedup_ms` (the engine keeps
    /// an order's outcome no longer, so a later adjustment is
    /// `unknown_order` either way), then, past `max` entries, the oldest.
    pub fn sweep(&mut self, now_ms: u64, dedup_ms: impl Fn(PixelId) -> u64, max: usize) -> usize {
        let before = self.entries.len();
        let dirty = &mut self.dirty;
        self.entries.retain(|key, o| {
            let keep = o.ts_ms.saturating_add(dedup_ms(key.0)) > now_ms;
            if !keep {
                dirty.insert(*key);
            }
            keep
        });
        if self.entries.len() > max {
            let mut by_age: Vec<(u64, OrderKey)> =
                self.entries.iter().map(|(k, o)| (o.ts_ms, *k)).collect();
            by_age.sort_unstable();
            for (_, key) in &by_age[..self.entries.len() - max] {
                self.entries.remove(key);
                self.dirty.insert(*key);
            }
        }
        before - self.entries.len()
    }

    /// Calls `write` once per changed entry (`None`: dropped, a tombstone).
    pub fn drain_dirty(&mut self, mut write: impl FnMut(OrderKey, Option<[u8; 25]>)) {
        for key in self.dirty.drain() {
            write(key, self.entries.get(&key).map(encode));
        }
    }

    /// Loads one changelog message of an order key (`None`: a tombstone).
    pub fn restore(&mut self, key: OrderKey, value: Option<&[u8]>) -> Result<(), String> {
        match value {
            None => {
                self.entries.remove(&key);
            }
            Some(v) => {
                self.entries.insert(key, decode(v)?);
            }
        }
        Ok(())
    }

    /// Every entry, sorted (tests).
    pub fn dump(&self) -> Vec<(OrderKey, Owner)> {
        let mut all: Vec<_> = self.entries.iter().map(|(k, o)| (*k, *o)).collect();
        all.sort_unstable_by_key(|(k, _)| *k);
        all
    }
}

/// `0x01 | u64 ts | u128 user`, little-endian: 25 bytes per order.
fn encode(o: &Owner) -> [u8; 25] {
    let mut out = [0u8; 25];
    out[0] = VERSION;
    out[1..9].copy_from_slice(&o.ts_ms.to_le_bytes());
    out[9..].copy_from_slice(&o.user.0.to_le_bytes());
    out
}

fn decode(v: &[u8]) -> Result<Owner, String> {
    match v {
        [VERSION, rest @ ..] if rest.len() == 24 => Ok(Owner {
            ts_ms: u64::from_le_bytes(rest[..8].try_into().unwrap_or_default()),
            user: UserId(u128::from_le_bytes(
                rest[8..].try_into().unwrap_or_default(),
            )),
        }),
        [version, ..] if *version != VERSION => Err(format!(
            "order index value version {version}, this pixeld reads {VERSION}"
        )),
        _ => Err(format!("order index value of {} bytes, not 25", v.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(ts_ms: u64, user: u128) -> Owner {
        Owner {
            ts_ms,
            user: UserId(user),
        }
    }

    #[test]
    fn the_later_report_owns_an_order_whatever_order_they_are_read_in() {
        let key = (PixelId(7313), 0xfeed);
        let mut a = OrderIndex::default();
        a.note(key, owner(10, 1));
        a.note(key, owner(20, 2));
        let mut b = OrderIndex::default();
        b.note(key, owner(20, 2));
        b.note(key, owner(10, 1));
        assert_eq!(a.owner(key), Some(UserId(2)));
        assert_eq!(b.owner(key), Some(UserId(2)));
        assert_eq!(a.owner((PixelId(7313), 0xbeef)), None);
    }

    #[test]
    fn entries_round_trip_through_the_changelog_and_tombstones_remove_them() {
        let mut index = OrderIndex::default();
        index.note((PixelId(1), 5), owner(100, 7));
        index.note((PixelId(2), 6), owner(200, 8));
        let mut restored = OrderIndex::default();
        let mut writes = Vec::new();
        index.drain_dirty(|k, v| writes.push((k, v)));
        assert_eq!(writes.len(), 2);
        for (k, v) in &writes {
            restored.restore(*k, v.as_ref().map(|b| &b[..])).unwrap();
        }
        assert_eq!(restored.dump(), index.dump());
        // Expired (pixel 1 keeps orders 50 ms): its entry becomes a tombstone.
        let dropped = index.sweep(160, |p| if p == PixelId(1) { 50 } else { 1_000 }, 10);
        assert_eq!(dropped, 1);
        let mut writes = Vec::new();
        index.drain_dirty(|k, v| writes.push((k, v)));
        assert_eq!(writes, [((PixelId(1), 5), None)]);
        restored.restore((PixelId(1), 5), None).unwrap();
        assert_eq!(restored.dump(), index.dump());
    }

    /// The README's figure: a 48-byte table entry per order (about 56
    /// bytes at the table's 7/8 load with its control byte).
    #[test]
    fn an_order_of_the_index_is_a_48_byte_entry() {
        assert_eq!(std::mem::size_of::<(OrderKey, Owner)>(), 48);
    }

    #[test]
    fn past_its_bound_the_oldest_orders_go_and_damage_is_named() {
        let mut index = OrderIndex::default();
        for i in 0..5u64 {
            index.note((PixelId(1), i), owner(i, i as u128));
        }
        assert_eq!(index.sweep(0, |_| u64::MAX, 3), 2);
        let kept: Vec<u64> = index.dump().iter().map(|((_, o), _)| *o).collect();
        assert_eq!(kept, [2, 3, 4]);
        let mut r = OrderIndex::default();
        assert!(r
            .restore((PixelId(1), 1), Some(&[9; 25]))
            .unwrap_err()
            .contains("version 9"));
        assert!(r
            .restore((PixelId(1), 1), Some(&[1; 3]))
            .unwrap_err()
            .contains("3 bytes"));
    }
}
