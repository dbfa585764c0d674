//! Every workaround pixeld's member carries for a broker's behaviour, in one
//! place, each with the broker, what was observed, and the test that shows
//! it. None of them changes what a broker that keeps Kafka's rules sees:
//! there each condition never arises.
//!
//! All three are for **tansu 0.6.0** (the broker of pixeld's tests; its
//! source read on 2026-12-04, paths under `tansu-storage-0.6.0/src` and
//! `tansu-broker-0.6.0/src`):
//!
//! 1. [`GapGuard`]: with the memory engine (DynoStore) a fetch at an offset
//!    inside a record batch skips the rest of that batch and returns the
//!    next one (`dynostore.rs`, `offsets.split_off(&offset)`), the high
//!    watermark is advanced before a batch's object is written, so with two
//!    producers on one partition a fetch can return a later batch before an
//!    earlier one exists, and one batch can come twice in one response. The
//!    input topics are neither compacted nor transactional, so their offsets
//!    have no gaps: a message past the next expected offset is a skip, one
//!    below it a repeat. Seen in the kill test's logs (2026-11-27: "the
//!    client skipped past the expected offset") and as wrong `no_touch`
//!    answers (the touch was never read); tests: `tests/cluster.rs`.
//! 2. [`ChangelogEnd`]: the memory engine's ListOffsets (latest) answers
//!    the newest batch's base offset + 1, short of the log end, so a
//!    changelog restore ends at the partition-EOF event, or at that mark
//!    only once the broker stayed quiet. Test: the restore test in
//!    `tests/cluster.rs`.
//! 3. [`Coverage`]: tansu's group coordinator expires a dead member lazily
//!    and without a new generation (`coordinator/group/administrator.rs`:
//!    `missed_heartbeat` keeps the generation, and a sync in the Formed
//!    state hands back the stored assignment), so after a `kill -9` and a
//!    replacement, the dead member's share of a three-way assignment stays
//!    with no live member for good. Observed in 3 of 4 runs (issue 21); a
//!    LeaveGroup does bump the generation. A member that sees a partition's
//!    committed offset stall while its log has more, for several session
//!    timeouts, reports it (`attribution_orphaned_partitions`, `/readyz`)
//!    and rejoins. Test: `tests/cluster.rs`, the kill test. `pixeld
//!    forward`'s group meets the same coordinator and uses the same
//!    watch ([`Coverage`] over its one topic); test: `tests/forward.rs`,
//!    the kill test.
//!
//! Two more decide the guarantee at start ([`super::guarantee`]) rather
//! than work around anything: a broker found short of transactions gets
//! the at-least-once member, the same one `attribution.transactions = "off"`
//! gets.
//!
//! 4. [`txn_offsets_applied`], for **librdkafka's mock cluster** (2.12.1,
//!    `rdkafka_mock_handlers.c`, read 2026-12-07): it takes every
//!    transactional request (InitProducerId, AddPartitionsToTxn,
//!    AddOffsetsToTxn, TxnOffsetCommit, EndTxn) and checks the producer's
//!    id and epoch, but its TxnOffsetCommit stores nothing (only
//!    OffsetCommit calls `rd_kafka_mock_commit_offset`), its EndTxn writes
//!    no control record, and its Fetch answers the last stable offset as
//!    the high watermark with no aborted transactions: a `read_committed`
//!    reader sees aborted and open transactions' messages, and a
//!    transactional member's input offsets would never advance. Nor does
//!    it fence by transactional id: a second InitProducerId of the same id
//!    gets a new producer id and the old one stays valid. The probe
//!    reads its offset back and finds it missing. Test:
//!    `guarantee::tests`, and `tests/transactions.rs` (a member process on
//!    the mock).
//! 5. **tansu 0.6.0** registers a transactional id (InitProducerId) but
//!    does not list `EndTxn` in its ApiVersions (a raw `EndTxn` drops the
//!    connection; issue 21): librdkafka refuses the probe's commit itself,
//!    "EndTxnRequest (KIP-98) not supported by broker", in under a second
//!    (observed 2026-12-07). Test: `tests/transactions.rs`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use tracing::{error, warn};

use super::inputs::InputTopic;
use crate::telemetry::metric;

/// What to do with a message, given the offset its partition expects next.
#[derive(Debug, PartialEq, Eq)]
pub enum Gap {
    /// The expected message (or the first one when nothing is expected).
    InOrder,
    /// Below the expected offset: read before; drop it.
    Repeat,
    /// Past the expected offset: seek back here and drop it.
    SeekTo(i64),
    /// Past the expected offset for too long: a real gap; read on.
    ReadOn,
}

/// How long a skip is sought back before the gap counts as real.
const GIVE_UP_AFTER: Duration = Duration::from_secs(30);

/// Per (partition, input): the skip being sought back from.
#[derive(Default)]
pub struct GapGuard {
    seeking: HashMap<(i32, InputTopic), Seeking>,
}

struct Seeking {
    expected: i64,
    since: Instant,
    /// How far before `expected` the next seek goes: the batch that holds
    /// `expected` starts at or before it (the memory engine returns a batch
    /// only from its base offset).
    back: i64,
}

impl GapGuard {
    pub fn check(
        &mut self,
        partition: i32,
        topic: InputTopic,
        expected: Option<i64>,
        offset: i64,
    ) -> Gap {
        let Some(expected) = expected else {
            return Gap::InOrder;
        };
        if offset < expected {
            return Gap::Repeat;
        }
        let key = (partition, topic);
        if offset == expected {
            self.seeking.remove(&key);
            return Gap::InOrder;
        }
        let s = self.seeking.entry(key).or_insert(Seeking {
            expected,
            since: Instant::now(),
            back: 0,
        });
        if s.expected != expected {
            *s = Seeking {
                expected,
                since: Instant::now(),
                back: 0,
            };
        }
        if s.since.elapsed() > GIVE_UP_AFTER {
            error!(
                partition,
                topic = topic.as_str(),
                expected,
                offset,
                "input offsets have a gap even after seeking back for 30 s; reading on"
            );
            self.seeking.remove(&key);
            return Gap::ReadOn;
        }
        let to = (expected - s.back).max(0);
        s.back = (s.back * 2).max(1);
        metric::cluster_resumed_ahead();
        warn!(
            partition,
            topic = topic.as_str(),
            offset,
            expected,
            seek = to,
            "the client skipped past the expected offset; seeking back"
        );
        Gap::SeekTo(to)
    }
}

/// The end of a changelog partition during a restore.
pub struct ChangelogEnd {
    next: i64,
    high: i64,
    quiet_since: Instant,
}

impl ChangelogEnd {
    pub fn new(low: i64, high: i64) -> ChangelogEnd {
        ChangelogEnd {
            next: low,
            high,
            quiet_since: Instant::now(),
        }
    }

    pub fn read(&mut self, offset: i64) {
        self.next = offset + 1;
        self.quiet_since = Instant::now();
    }

    /// At the reported end and nothing for 2 s.
    pub fn reached(&self) -> bool {
        self.next >= self.high && self.quiet_since.elapsed() > Duration::from_secs(2)
    }
}

/// Watches the partitions this member does not own for a stalled commit,
/// per (topic, partition); `T` names the topic (the member's
/// [`InputTopic`], `()` for a group of one topic).
pub struct Coverage<T = InputTopic> {
    /// How long a commit may stall behind the log before its partition
    /// counts as owned by nobody.
    stall: Duration,
    /// Per (topic, partition): the committed offset and since when.
    seen: HashMap<(T, i32), (i64, Instant)>,
}

impl<T: Copy + Eq + std::hash::Hash> Coverage<T> {
    /// `stall`: several session timeouts, more than a grace and a commit
    /// interval, so a live owner's normal wait never counts.
    pub fn new(stall: Duration) -> Coverage<T> {
        Coverage {
            stall,
            seen: HashMap::new(),
        }
    }

    /// The partitions (not in `owned`) whose commit stalled behind the log
    /// for `stall`.
    pub fn orphaned(
        &mut self,
        committed: &HashMap<(T, i32), i64>,
        ends: &HashMap<(T, i32), i64>,
        owned: &[i32],
    ) -> Vec<i32> {
        let now = Instant::now();
        let mut out = Vec::new();
        for (&(topic, p), &end) in ends {
            if owned.contains(&p) {
                self.seen.remove(&(topic, p));
                continue;
            }
            let at = committed.get(&(topic, p)).copied().unwrap_or(0);
            if at >= end {
                self.seen.remove(&(topic, p));
                continue;
            }
            let entry = self.seen.entry((topic, p)).or_insert((at, now));
            if entry.0 != at {
                *entry = (at, now);
            }
            if now.duration_since(entry.1) >= self.stall && !out.contains(&p) {
                out.push(p);
            }
        }
        out.sort_unstable();
        out
    }

    /// After a rejoin: every stall is timed afresh.
    pub fn reset(&mut self) {
        self.seen.clear();
    }
}

/// How long a committed probe offset may take to show: Kafka writes a
/// transaction's markers after `EndTxn` answers, and a `read_committed`
/// offset fetch waits for them.
const TXN_OFFSET_WAIT: Duration = Duration::from_secs(5);

/// Whether the offset `want` a probe transaction committed for `tpl`'s one
/// partition is the group's committed offset now ([`self`], item 4).
pub fn txn_offsets_applied(
    reader: &BaseConsumer,
    tpl: &TopicPartitionList,
    want: i64,
) -> Result<(), String> {
    let deadline = Instant::now() + TXN_OFFSET_WAIT;
    let mut seen = None;
    while Instant::now() < deadline {
        if let Ok(found) = reader.committed_offsets(tpl.clone(), Duration::from_secs(2)) {
            seen = found.elements().first().map(|e| e.offset());
            if seen == Some(Offset::Offset(want)) {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!(
        "the brokers acknowledged a transaction (EndTxn) but did not apply the offset it carried (committed {want}, read back {seen:?}): its input offsets would never advance"
    ))
}

#[cfg(test)]
mod tests {
    use super::super::membership::Offsets;
    use super::*;

    /// Item 4 as observed: if a librdkafka upgrade makes the mock keep
    /// Kafka's transactional rules, this fails, and the mock can then
    /// serve as the exactly-once test broker.
    #[test]
    fn the_mock_cluster_shows_aborted_messages_and_drops_transaction_offsets() {
        use rdkafka::message::Message;
        use rdkafka::mocking::MockCluster;
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
        use rdkafka::ClientConfig;

        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("t", 1, 1).unwrap();
        let brokers = mock.bootstrap_servers();
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("transactional.id", "quirk")
            .create()
            .unwrap();
        producer.init_transactions(Duration::from_secs(10)).unwrap();
        producer.begin_transaction().unwrap();
        producer
            .send(BaseRecord::<str, str>::to("t").key("k").payload("aborted"))
            .unwrap();
        producer.flush(Duration::from_secs(10)).unwrap();
        producer.abort_transaction(Duration::from_secs(10)).unwrap();

        let reader: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "quirk-readers")
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("t", 0, Offset::Beginning).unwrap();
        reader.assign(&tpl).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let seen = loop {
            assert!(Instant::now() < deadline, "the aborted message was hidden");
            if let Some(Ok(m)) = reader.poll(Duration::from_millis(100)) {
                break m.payload().map(<[u8]>::to_vec);
            }
        };
        assert_eq!(seen.as_deref(), Some(&b"aborted"[..]));

        producer.begin_transaction().unwrap();
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset("t", 0, Offset::Offset(1))
            .unwrap();
        let group = reader.group_metadata().unwrap();
        producer
            .send_offsets_to_transaction(&offsets, &group, Duration::from_secs(10))
            .unwrap();
        producer
            .commit_transaction(Duration::from_secs(10))
            .unwrap();
        let mut asked = TopicPartitionList::new();
        asked.add_partition("t", 0);
        assert!(
            txn_offsets_applied(&reader, &asked, 5).is_err(),
            "the mock applied a transaction's offsets"
        );
    }

    #[test]
    fn repeats_are_dropped_and_skips_sought_back_further_each_time() {
        let mut g = GapGuard::default();
        let t = InputTopic::Impressions;
        assert_eq!(g.check(0, t, None, 7), Gap::InOrder);
        assert_eq!(g.check(0, t, Some(7), 7), Gap::InOrder);
        assert_eq!(g.check(0, t, Some(8), 3), Gap::Repeat);
        assert_eq!(g.check(0, t, Some(8), 12), Gap::SeekTo(8));
        assert_eq!(g.check(0, t, Some(8), 12), Gap::SeekTo(7));
        assert_eq!(g.check(0, t, Some(8), 12), Gap::SeekTo(6));
        assert_eq!(g.check(0, t, Some(8), 12), Gap::SeekTo(4));
        assert_eq!(g.check(0, t, Some(8), 8), Gap::InOrder);
        assert_eq!(
            g.check(0, t, Some(9), 10),
            Gap::SeekTo(9),
            "a new skip starts over"
        );
    }

    #[test]
    fn a_commit_stalled_behind_the_log_marks_its_partition_orphaned() {
        let mut c = Coverage::new(Duration::ZERO);
        let t = InputTopic::Conversions;
        let ends: Offsets = [((t, 0), 10), ((t, 1), 10), ((t, 2), 10)].into();
        let committed: Offsets = [((t, 0), 10), ((t, 1), 4)].into();
        // 0 is caught up, 1 is behind, 2 never committed; 2 is ours.
        assert_eq!(c.orphaned(&committed, &ends, &[2]), [1]);
        let mut slow = Coverage::new(Duration::from_secs(3600));
        assert!(
            slow.orphaned(&committed, &ends, &[2]).is_empty(),
            "not for long enough"
        );
    }
}
