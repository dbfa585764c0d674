//! What the member thread and its rebalance callbacks share, behind one
//! mutex: the partitions owned, those kept from a clean revoke, the
//! assignment waiting for its restore, and the records not produced yet.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::output::Output;
use super::partition::{Out, PartitionWork};
use super::{ClusterError, Settings, Status};
use crate::config::Catalog;

pub struct Work {
    pub settings: Settings,
    pub catalog: Arc<ArcSwap<Catalog>>,
    pub status: Arc<Status>,
    pub output: Output,
    /// The partitions owned, by number.
    pub partitions: BTreeMap<i32, PartitionWork>,
    /// Kept from a clean revoke: if the same partition comes back in the
    /// next assignment, its state is current and needs no restore.
    pub parked: BTreeMap<i32, PartitionWork>,
    /// Assigned, not restored yet.
    pub pending: Option<Vec<i32>>,
    /// Records decided and not produced yet: produced before any commit,
    /// including the one a revoke makes in the middle of a batch.
    pub outs: Vec<Out>,
    /// The offsets of the last successful commit: an idle member does not
    /// commit the same offsets every interval.
    pub last_committed: Vec<(String, i32, i64)>,
    /// An assignment came since the last look for orphaned partitions:
    /// ownership moved, so every stall is timed afresh (without this, a
    /// member's rejoin had the other member, whose stall clocks still ran
    /// from before, rejoin in turn, back and forth).
    pub reassigned: bool,
}

impl Work {
    pub fn new(
        settings: Settings,
        catalog: Arc<ArcSwap<Catalog>>,
        status: Arc<Status>,
        output: Output,
    ) -> Work {
        Work {
            settings,
            catalog,
            status,
            output,
            partitions: BTreeMap::new(),
            parked: BTreeMap::new(),
            pending: None,
            outs: Vec::new(),
            last_committed: Vec::new(),
            reassigned: false,
        }
    }

    /// The partitions go. After a clean commit their state is current and
    /// is parked for the next assignment; otherwise (the assignment was
    /// lost, the commit failed or was aborted) it is dropped with the
    /// records not produced, and the open transaction, if any, is aborted:
    /// the next owner decides those conversions again. An error only when
    /// the abort failed for good (the producer can never commit again).
    pub fn revoke(&mut self, clean: bool) -> Result<(), ClusterError> {
        let parts = std::mem::take(&mut self.partitions);
        self.parked = if clean { parts } else { BTreeMap::new() };
        self.last_committed.clear();
        if !clean {
            self.outs.clear();
            self.output.abort()?;
        }
        Ok(())
    }

    /// Applies, in every owned partition, what the watermark allows.
    pub fn release(&mut self, now_ms: u64) {
        for work in self.partitions.values_mut() {
            work.release(now_ms, &mut self.outs);
        }
    }
}
