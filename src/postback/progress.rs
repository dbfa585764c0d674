//! Which offsets of a partition may be committed: a record is finished when
//! each destination it was queued for answered 2xx or was dead-lettered,
//! and the commit position is the oldest unfinished record (or the next
//! offset to read). An assignment has an epoch: a call that finishes after
//! its partition was revoked, and perhaps assigned again, does not count
//! for the new assignment's copy of the record.

use std::collections::{BTreeMap, HashMap};

#[derive(Default)]
struct Partition {
    epoch: u64,
    /// Offset → calls not finished yet.
    open: BTreeMap<i64, u32>,
    /// The offset after the last record read.
    next: Option<i64>,
    /// The position last committed.
    committed: Option<i64>,
}

#[derive(Default)]
pub struct Progress {
    parts: HashMap<i32, Partition>,
    epochs: u64,
}

impl Progress {
    /// A partition assigned: a fresh epoch, nothing open.
    pub fn assign(&mut self, partition: i32) -> u64 {
        self.epochs += 1;
        self.parts.insert(
            partition,
            Partition {
                epoch: self.epochs,
                ..Partition::default()
            },
        );
        self.epochs
    }

    pub fn revoke(&mut self, partition: i32) {
        self.parts.remove(&partition);
    }

    pub fn epoch(&self, partition: i32) -> Option<u64> {
        self.parts.get(&partition).map(|p| p.epoch)
    }

    pub fn owned(&self) -> Vec<i32> {
        let mut v: Vec<i32> = self.parts.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// A record read, with the calls queued for it (0: finished at once).
    pub fn read(&mut self, partition: i32, offset: i64, calls: u32) {
        let Some(p) = self.parts.get_mut(&partition) else {
            return;
        };
        p.next = Some(p.next.map_or(offset + 1, |n| n.max(offset + 1)));
        if calls > 0 {
            *p.open.entry(offset).or_insert(0) += calls;
        }
    }

    /// Where reading starts, for a partition nothing was read from yet.
    pub fn start_at(&mut self, partition: i32, offset: i64) {
        if let Some(p) = self.parts.get_mut(&partition) {
            if p.next.is_none() && p.open.is_empty() {
                p.next = Some(offset);
            }
        }
    }

    /// One call of the record at `offset` finished.
    pub fn finished(&mut self, partition: i32, offset: i64, epoch: u64) {
        let Some(p) = self.parts.get_mut(&partition).filter(|p| p.epoch == epoch) else {
            return;
        };
        if let Some(n) = p.open.get_mut(&offset) {
            *n -= 1;
            if *n == 0 {
                p.open.remove(&offset);
            }
        }
    }

    /// Calls not finished, over every partition.
    pub fn open_calls(&self) -> u64 {
        self.parts
            .values()
            .flat_map(|p| p.open.values())
            .map(|n| *n as u64)
            .sum()
    }

    /// The positions that moved since the last [`Progress::committed`].
    pub fn to_commit(&self) -> Vec<(i32, i64)> {
        let mut out: Vec<(i32, i64)> = self
            .parts
            .iter()
            .filter_map(|(&partition, p)| {
                let at = p.open.keys().next().copied().or(p.next)?;
                (p.committed != Some(at)).then_some((partition, at))
            })
            .collect();
        out.sort_unstable();
        out
    }

    pub fn committed(&mut self, done: &[(i32, i64)]) {
        for (partition, at) in done {
            if let Some(p) = self.parts.get_mut(partition) {
                p.committed = Some(*at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_position_waits_for_the_oldest_unfinished_record() {
        let mut p = Progress::default();
        let e = p.assign(3);
        p.read(3, 10, 2);
        p.read(3, 11, 0);
        p.read(3, 12, 1);
        assert_eq!(p.to_commit(), [(3, 10)]);
        p.finished(3, 12, e);
        p.finished(3, 10, e);
        assert_eq!(p.to_commit(), [(3, 10)], "one of two calls left");
        p.committed(&[(3, 10)]);
        assert!(p.to_commit().is_empty());
        p.finished(3, 10, e);
        assert_eq!(p.to_commit(), [(3, 13)]);
    }

    #[test]
    fn a_call_of_an_earlier_assignment_does_not_count() {
        let mut p = Progress::default();
        let old = p.assign(0);
        p.read(0, 5, 1);
        p.revoke(0);
        let new = p.assign(0);
        p.read(0, 5, 2);
        p.finished(0, 5, old);
        p.finished(0, 5, new);
        assert_eq!(p.to_commit(), [(0, 5)], "one call of the new copy is open");
        p.finished(0, 5, new);
        assert_eq!(p.to_commit(), [(0, 6)]);
        assert_eq!(p.open_calls(), 0);
    }
}
