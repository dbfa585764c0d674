//! The shipper against a mock producer that fails on demand: order, the
//! checkpoint, retries and dead letters.

use std::path::Path;

use super::*;
use crate::event::EventType;
use crate::journal::{Journal, Settings};
use crate::sink::producer::mock::{Failure, MockProducer};
use crate::sink::producer::Outgoing;
use crate::sink::Topic;

fn journal(dir: &Path, n: u64) -> Journal {
    let j = Journal::open(&Settings {
        dir: dir.to_path_buf(),
        fsync: false,
        max_bytes: 1 << 30,
        segment_bytes: 300,
    })
    .unwrap();
    for i in 0..n {
        assert_eq!(j.append_blocking(click(i), 1_000 + i), Ok(i));
    }
    j
}

fn click(i: u64) -> Vec<u8> {
    crate::journal::tests::record_body(Topic::Clicks, EventType::Click, i)
}

fn topics() -> Topics {
    Topics::from_config(&crate::config::TopicsConfig::default())
}

/// Ships `n` records through a mock failing as told; returns what it
/// delivered (payload indexes), the records left, and the data dir.
fn ship(n: u64, failure: Option<(usize, Failure)>) -> (Vec<u64>, u64, tempfile::TempDir) {
    ship_with(n, failure, false)
}

/// Opens the journal again, as a restart does: what was written is now a
/// sealed stream, and a new writer stream starts.
fn reopen(j: Journal, dir: &Path) -> Journal {
    j.stop();
    drop(j);
    Journal::open(&Settings {
        dir: dir.to_path_buf(),
        fsync: false,
        max_bytes: 1 << 30,
        segment_bytes: 300,
    })
    .unwrap()
}

/// [`ship`], the mock reporting only failures when `errors_only` (as the
/// shipper's librdkafka producer does): only the barrier confirms.
fn ship_with(
    n: u64,
    failure: Option<(usize, Failure)>,
    errors_only: bool,
) -> (Vec<u64>, u64, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let j = journal(&dir.path().join("journal"), n);
    ship_journal(&j, dir, failure, errors_only)
}

fn ship_journal(
    j: &Journal,
    dir: tempfile::TempDir,
    failure: Option<(usize, Failure)>,
    errors_only: bool,
) -> (Vec<u64>, u64, tempfile::TempDir) {
    let n = j.shared.written();
    let (tx, rx) = unbounded();
    let mock = match failure {
        Some((at, f)) => MockProducer::new_failing_at(at, f, tx),
        None => MockProducer::new(tx),
    };
    let mock = Arc::new(if errors_only {
        mock.errors_only()
    } else {
        mock
    });
    struct Shared(Arc<MockProducer>);
    impl Produce for Shared {
        fn send(
            &self,
            msg: &Outgoing<'_>,
            opaque: u64,
        ) -> Result<(), crate::sink::producer::ProduceError> {
            self.0.send(msg, opaque)
        }
        fn flush(&self, timeout: Duration) -> usize {
            self.0.flush(timeout)
        }
        fn unresolved(&self) -> usize {
            self.0.unresolved()
        }
    }
    let settings = ShipSettings {
        topics: topics(),
        dead_letter: dir.path().join("dead-letter.jsonl"),
        drain_timeout: Duration::from_millis(300),
    };
    let shipper = Shipper::start_with(
        j.shared.clone(),
        Box::new(Shared(mock.clone())),
        rx,
        settings,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while mock.delivered().len() < n as usize - 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    let left = shipper.stop();
    let delivered = mock
        .delivered()
        .iter()
        .map(|t| {
            assert_eq!(t.topic, Topic::Clicks);
            assert_eq!(t.headers, [("type".to_string(), b"click".to_vec())]);
            let v: serde_json::Value = serde_json::from_slice(&t.payload).unwrap();
            v["i"].as_u64().unwrap()
        })
        .collect();
    (delivered, left, dir)
}

#[test]
fn segments_written_before_a_restart_are_deleted_once_shipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    let j = reopen(journal(&path, 20), &path);
    assert!(
        segments_of(dir.path()).len() > 3,
        "the first run's segments"
    );
    let (delivered, left, dir) = ship_journal(&j, dir, None, false);
    assert_eq!(delivered, (0..20).collect::<Vec<_>>());
    assert_eq!(left, 0);
    // The sealed stream's last segment too: nothing will follow it.
    assert_eq!(segments_of(dir.path()), []);
}

#[test]
fn a_full_journal_takes_appends_again_once_shipped_though_no_segment_filled() {
    let dir = tempfile::tempdir().unwrap();
    // Segments far larger than the budget: none fills up and rolls.
    let j = Journal::open(&Settings {
        dir: dir.path().join("journal"),
        fsync: false,
        max_bytes: 2000,
        segment_bytes: 1 << 20,
    })
    .unwrap();
    let mut n = 0;
    while j.append_blocking(click(n), 1_000 + n).is_ok() {
        n += 1;
    }
    assert!(n > 5, "{n} appended before the budget ran out");
    let (delivered, left, _dir) = ship_journal(&j, dir, None, false);
    assert_eq!(delivered, (0..n).collect::<Vec<_>>());
    assert_eq!(left, 0);
    assert_eq!(j.shared.bytes(), 0, "the shipped segment is deleted");
    assert!(j.append_blocking(click(n), 1).is_ok(), "room again");
}

#[test]
fn everything_is_produced_in_order_and_the_checkpoint_passes_it() {
    let (delivered, left, dir) = ship(20, None);
    assert_eq!(delivered, (0..20).collect::<Vec<_>>());
    assert_eq!(left, 0);
    assert_eq!(checkpoint::load(&dir.path().join("journal")), 20);
    assert!(
        segments_of(dir.path()).len() <= 1,
        "shipped segments are deleted (the one being written stays)"
    );
}

fn segments_of(dir: &Path) -> Vec<crate::journal::segment::SegmentFile> {
    crate::journal::segment::list(&dir.join("journal"))
}

#[test]
fn a_retriable_delivery_failure_is_produced_again() {
    let (delivered, left, dir) = ship(10, Some((3, Failure::RetriableReport)));
    let mut sorted = delivered.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..10).collect::<Vec<_>>(), "record 3 came later");
    assert_eq!(left, 0);
    assert_eq!(checkpoint::load(&dir.path().join("journal")), 10);
}

#[test]
fn a_full_queue_is_tried_again() {
    let (delivered, left, _dir) = ship(10, Some((0, Failure::QueueFull)));
    assert_eq!(delivered, (0..10).collect::<Vec<_>>());
    assert_eq!(left, 0);
}

#[test]
fn a_permanent_refusal_is_dead_lettered_and_the_rest_delivered() {
    for failure in [Failure::PermanentReport, Failure::PermanentAtSend] {
        let (delivered, left, dir) = ship(6, Some((2, failure)));
        assert_eq!(delivered, [0, 1, 3, 4, 5], "{failure:?}");
        assert_eq!(left, 0);
        assert_eq!(checkpoint::load(&dir.path().join("journal")), 6);
        let lines = fs::read_to_string(dir.path().join("dead-letter.jsonl")).unwrap();
        let line: serde_json::Value = serde_json::from_str(lines.trim()).unwrap();
        assert_eq!(line["seq"], 2);
        assert_eq!(line["topic"], "pixel.clicks");
        assert_eq!(line["payload"], "{\"i\":2}");
    }
}

#[test]
fn the_checkpoint_never_passes_an_unacknowledged_record() {
    let (delivered, left, dir) = ship(8, Some((4, Failure::NoReport)));
    assert_eq!(delivered, [0, 1, 2, 3, 5, 6, 7]);
    assert_eq!(checkpoint::load(&dir.path().join("journal")), 4);
    assert_eq!(left, 4, "records 4..8 stay for the next start");
}

/// Without success reports, the barrier alone moves the checkpoint: all of
/// it once everything resolved, retries and dead letters included.
#[test]
fn with_failure_reports_only_the_barrier_confirms_every_record() {
    let (delivered, left, dir) = ship_with(20, None, true);
    assert_eq!(delivered, (0..20).collect::<Vec<_>>());
    assert_eq!(left, 0);
    assert_eq!(checkpoint::load(&dir.path().join("journal")), 20);
    for failure in [
        Failure::RetriableReport,
        Failure::QueueFull,
        Failure::PermanentReport,
    ] {
        let (delivered, left, dir) = ship_with(10, Some((3, failure)), true);
        let mut sorted = delivered.clone();
        sorted.sort_unstable();
        let expected: Vec<u64> = (0..10)
            .filter(|i| *i != 3 || failure != Failure::PermanentReport)
            .collect();
        assert_eq!(sorted, expected, "{failure:?}");
        assert_eq!(left, 0, "{failure:?}");
        assert_eq!(checkpoint::load(&dir.path().join("journal")), 10);
    }
}

/// One message never resolved: the barrier is never reached, so no record
/// of its range is confirmed, not even those before it (without success
/// reports nothing says they are stored); they are all shipped again.
#[test]
fn with_failure_reports_only_a_hung_message_holds_its_whole_range() {
    let (delivered, left, dir) = ship_with(8, Some((4, Failure::NoReport)), true);
    assert_eq!(delivered, [0, 1, 2, 3, 5, 6, 7]);
    assert_eq!(checkpoint::load(&dir.path().join("journal")), 0);
    assert_eq!(left, 8);
}
