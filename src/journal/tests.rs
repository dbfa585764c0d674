use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use super::segment::list as segments;
use super::*;
use crate::event::EventType;
use crate::sink::Topic;

fn settings(dir: &Path, max_bytes: u64, segment_bytes: u64) -> Settings {
    Settings {
        dir: dir.to_path_buf(),
        fsync: false,
        max_bytes,
        segment_bytes,
    }
}

fn body(i: u64) -> Vec<u8> {
    record_body(Topic::Impressions, EventType::Impression, i)
}

/// A record body of `kind` on `topic`, its payload `{"i":i}`: the journal's
/// tests and the shipper's.
pub(super) fn record_body(topic: Topic, kind: EventType, i: u64) -> Vec<u8> {
    Journal::body(
        topic,
        &[("type", kind.as_str().as_bytes())],
        b"k",
        format!("{{\"i\":{i}}}").as_bytes(),
        &[],
    )
}

/// What a reader saw of one record.
struct Seen {
    seq: u64,
    ts_ms: u64,
    payload: String,
}

/// Up to `max` records, in order; empty when caught up with the writer.
fn read(c: &mut Cursor, max: usize) -> Vec<Seen> {
    let mut out = Vec::new();
    c.read_each(max, |r| {
        out.push(Seen {
            seq: r.seq,
            ts_ms: r.ts_ms,
            payload: String::from_utf8(r.payload.to_vec()).unwrap(),
        })
    });
    out
}

fn payloads(records: &[Seen]) -> Vec<String> {
    records.iter().map(|r| r.payload.clone()).collect()
}

#[test]
fn appended_records_are_read_back_in_order_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&settings(dir.path(), 1 << 30, 200)).unwrap();
    for i in 0..50 {
        assert_eq!(j.append_blocking(body(i), i), Ok(i));
    }
    assert!(j.shared.segments().len() > 3, "segments roll");
    let mut c = Cursor::new(j.shared.clone(), 0);
    let mut all = Vec::new();
    loop {
        let batch = read(&mut c, 7);
        if batch.is_empty() {
            break;
        }
        all.extend(batch);
    }
    assert_eq!(all.len(), 50);
    assert!(all
        .iter()
        .enumerate()
        .all(|(i, r)| r.seq == i as u64 && r.ts_ms == i as u64));
    assert_eq!(payloads(&all)[49], "{\"i\":49}");
    // A cursor can start in the middle, and follows new appends.
    let mut c = Cursor::new(j.shared.clone(), 45);
    assert_eq!(read(&mut c, 100).len(), 5);
    j.append_blocking(body(50), 50).unwrap();
    assert_eq!(payloads(&read(&mut c, 100)), ["{\"i\":50}"]);
}

#[test]
fn a_torn_tail_is_truncated_at_open_and_the_records_before_it_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let j = Journal::open(&settings(dir.path(), 1 << 30, 1 << 20)).unwrap();
        for i in 0..10 {
            j.append_blocking(body(i), i).unwrap();
        }
        j.stop();
    }
    let path = segments(dir.path()).pop().unwrap().path;
    let len = fs::metadata(&path).unwrap().len();
    // Cut the last record in half, then add garbage, as a crash mid-write could.
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len - 10).unwrap();
    drop(f);
    OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(&[0xff; 7])
        .unwrap();

    let j = Journal::open(&settings(dir.path(), 1 << 30, 1 << 20)).unwrap();
    let mut c = Cursor::new(j.shared.clone(), 0);
    let got = read(&mut c, 100);
    assert_eq!(got.len(), 9, "everything before the torn record");
    // New appends continue right after the good prefix.
    assert_eq!(j.append_blocking(body(99), 99), Ok(9));
    assert_eq!(payloads(&read(&mut c, 100)), ["{\"i\":99}"]);
}

#[test]
fn the_disk_budget_refuses_appends_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let one = (frame::HEADER + body(0).len()) as u64;
    let j = Journal::open(&settings(dir.path(), one * 3, 1 << 20)).unwrap();
    for i in 0..3 {
        assert_eq!(j.append_blocking(body(i), i), Ok(i));
    }
    assert!(!j.shared.has_room());
    assert_eq!(j.append_blocking(body(3), 3), Err(AppendError::Full));
}

#[test]
fn a_corrupt_record_in_an_older_segment_skips_to_the_next_segment() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&settings(dir.path(), 1 << 30, 100)).unwrap();
    for i in 0..20 {
        j.append_blocking(body(i), i).unwrap();
    }
    let segs = segments(dir.path());
    let first = &segs[0].path;
    let mut bytes = fs::read(first).unwrap();
    bytes[frame::HEADER + 2] ^= 0xff;
    fs::write(first, bytes).unwrap();
    let mut c = Cursor::new(j.shared.clone(), 0);
    let got = read(&mut c, 100);
    let second_first = segs[1].first;
    assert_eq!(
        got.first().unwrap().seq,
        second_first,
        "the damaged segment is skipped"
    );
    assert_eq!(got.last().unwrap().seq, 19);
}

#[test]
fn a_journal_written_by_the_version_1_release_is_still_read() {
    // tests/fixtures/journal-v1: written by pixeld at 579a988 (frame body
    // version 1, carrying the engine's input), with an unreachable broker:
    // two impressions, a click, a conversion, its attribution record, a
    // segment and an invalid request.
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/journal-v1/00000000000000000000.seg"
    );
    let dir = tempfile::tempdir().unwrap();
    fs::copy(fixture, dir.path().join("00000000000000000000.seg")).unwrap();
    let j = Journal::open(&settings(dir.path(), 1 << 30, 1 << 20)).unwrap();
    let mut c = Cursor::new(j.shared.clone(), 0);
    let mut seen = Vec::new();
    c.read_each(100, |r| {
        let kind = r.headers.kind().unwrap();
        let json: serde_json::Value = serde_json::from_slice(r.payload).unwrap();
        assert_eq!(json["type"], kind.as_str(), "the type header matches");
        assert_eq!(Topic::for_event(kind), r.topic);
        let input = crate::event::AttributionInput::from_json(kind, r.payload);
        seen.push((
            kind,
            r.key.len(),
            input.map(|i| matches!(i, crate::event::AttributionInput::Conversion(_))),
        ));
    });
    use EventType::*;
    assert_eq!(
        seen.iter().map(|s| s.0).collect::<Vec<_>>(),
        [
            Impression,
            Impression,
            Click,
            Conversion,
            Attribution,
            Segment,
            Invalid
        ]
    );
    // The engine's inputs come back from the payloads: the first impression
    // had no cookie yet (a fresh id is still an id), the click and the
    // conversion carry the same user.
    assert_eq!(seen[2].2, Some(false), "the click is a touch");
    assert_eq!(seen[3].2, Some(true), "the conversion");
    assert_eq!(seen[5].2, None, "segments are not the engine's");
    // New records follow the old ones in the same journal.
    let next = j.append_blocking(body(7), 7).unwrap();
    assert_eq!(next, 7);
    assert_eq!(payloads(&read(&mut c, 10)), ["{\"i\":7}"]);
}

/// A current-thread runtime, as a serving thread has.
fn serving_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A journal with room to spare, for the lane tests.
fn lane_journal(dir: &Path) -> Arc<Journal> {
    Arc::new(Journal::open(&settings(dir, 1 << 30, 1 << 20)).unwrap())
}

fn lane_append(j: &Arc<Journal>, i: u64) -> lane::Ticket {
    let b = body(i);
    lane::try_append(j, i, |out| out.extend_from_slice(&b))
        .expect("this thread has a lane")
        .expect("appended")
}

#[test]
fn a_serving_thread_s_records_are_written_as_one_group_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let j = lane_journal(dir.path());
    let seqs = serving_runtime().block_on(async {
        let _lane = lane::open(&j).expect("journal durability allows lanes");
        // 100 requests' records, appended before any is written.
        let mut tickets: Vec<lane::Ticket> = (0..100).map(|i| lane_append(&j, i)).collect();
        assert_eq!(
            j.shared.written(),
            0,
            "nothing written before the flusher runs"
        );
        let mut seqs = Vec::new();
        for t in &mut tickets {
            seqs.push(t.outcome().await.unwrap());
        }
        seqs
    });
    assert_eq!(seqs, (0..100).collect::<Vec<u64>>());
    let mut c = Cursor::new(j.shared.clone(), 0);
    let seen = read(&mut c, 1000);
    let want: Vec<String> = (0..100).map(|i| format!("{{\"i\":{i}}}")).collect();
    assert_eq!(payloads(&seen), want);
    assert_eq!(seen[7].ts_ms, 7);
    assert_eq!(j.shared.segments().len(), 1, "one group: no roll inside it");
}

#[test]
fn a_lane_shares_the_numbering_with_the_writer_thread() {
    let dir = tempfile::tempdir().unwrap();
    let j = lane_journal(dir.path());
    serving_runtime().block_on(async {
        let _lane = lane::open(&j).unwrap();
        for i in 0..10 {
            // Alternately through the lane and through the writer thread.
            if i % 2 == 0 {
                let mut t = lane_append(&j, i);
                assert_eq!(t.outcome().await, Ok(i));
            } else {
                assert_eq!(j.append(body(i), i).await, Ok(i));
            }
        }
    });
    let mut c = Cursor::new(j.shared.clone(), 0);
    let seen = read(&mut c, 100);
    assert_eq!(
        seen.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
}

#[test]
fn a_dropped_ticket_frees_its_slot_and_its_record_is_still_written() {
    let dir = tempfile::tempdir().unwrap();
    let j = lane_journal(dir.path());
    serving_runtime().block_on(async {
        let _lane = lane::open(&j).unwrap();
        for round in 0..50u64 {
            // A request gone before its answer (the client closed).
            drop(lane_append(&j, round * 2));
            let t = lane_append(&j, round * 2 + 1);
            // Waiting without the flusher: written here and now.
            assert_eq!(t.wait(), Ok(round * 2 + 1));
        }
    });
    assert_eq!(j.shared.written(), 100);
}

#[test]
fn a_lane_refuses_beyond_the_budget_and_after_stop() {
    let dir = tempfile::tempdir().unwrap();
    let j = Arc::new(Journal::open(&settings(dir.path(), 500, 1 << 20)).unwrap());
    serving_runtime().block_on(async {
        let _lane = lane::open(&j).unwrap();
        let outcomes: Vec<_> = (0..20).map(|i| lane_append(&j, i).wait()).collect();
        assert!(outcomes[0].is_ok());
        assert_eq!(outcomes[19], Err(AppendError::Full));
        assert!(!j.shared.has_room());
        j.stop();
        let b = body(99);
        let after = lane::try_append(&j, 99, |out| out.extend_from_slice(&b)).unwrap();
        assert_eq!(after.unwrap_err(), AppendError::Unavailable);
    });
}

#[test]
fn no_lane_in_fsync_mode_nor_on_a_thread_that_opened_none() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path(), 1 << 30, 1 << 20);
    let j = Arc::new(Journal::open(&s).unwrap());
    let b = body(0);
    assert!(lane::try_append(&j, 0, |out| out.extend_from_slice(&b)).is_none());
    drop(j);
    s.fsync = true;
    let j = Arc::new(Journal::open(&s).unwrap());
    serving_runtime().block_on(async {
        assert!(
            lane::open(&j).is_none(),
            "fsync mode waits on the writer thread"
        );
    });
}

/// Appends `n` records tagged `thread` through this thread's own lane,
/// waiting for a group every `group` records.
fn lane_thread(j: Arc<Journal>, thread: u64, n: u64, group: u64) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        serving_runtime().block_on(async {
            let _lane = lane::open(&j).unwrap();
            let mut tickets = Vec::new();
            for i in 0..n {
                tickets.push(lane_append(&j, thread * 1_000_000 + i));
                if i % group == group - 1 {
                    for mut t in tickets.drain(..) {
                        t.outcome().await.unwrap();
                    }
                }
            }
            for mut t in tickets {
                t.outcome().await.unwrap();
            }
        })
    })
}

#[test]
fn two_serving_threads_write_streams_of_their_own_and_a_reader_merges_them_in_order() {
    let dir = tempfile::tempdir().unwrap();
    // Small segments: both streams roll many times while being read.
    let j = Arc::new(Journal::open(&settings(dir.path(), 1 << 30, 4096)).unwrap());
    let writers = [
        lane_thread(j.clone(), 1, 20_000, 7),
        lane_thread(j.clone(), 2, 20_000, 13),
    ];
    // Read while they write: every record once, in sequence order.
    let mut c = Cursor::new(j.shared.clone(), 0);
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while seen.len() < 40_000 && std::time::Instant::now() < deadline {
        let got = read(&mut c, 500);
        if got.is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        seen.extend(got);
    }
    for w in writers {
        w.join().unwrap();
    }
    assert_eq!(
        seen.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (0..40_000).collect::<Vec<_>>()
    );
    // Each thread's records in the order it appended them.
    for thread in [1, 2] {
        let mine: Vec<u64> = seen
            .iter()
            .map(|r| r.ts_ms)
            .filter(|ts| ts / 1_000_000 == thread)
            .map(|ts| ts % 1_000_000)
            .collect();
        assert_eq!(mine, (0..20_000).collect::<Vec<_>>(), "thread {thread}");
    }
    let streams: std::collections::BTreeSet<u32> =
        segments(dir.path()).iter().map(|s| s.stream).collect();
    assert_eq!(streams.len(), 2, "a stream per thread: {streams:?}");
}

#[test]
fn a_torn_tail_in_one_stream_loses_only_its_torn_record() {
    let dir = tempfile::tempdir().unwrap();
    {
        let j = lane_journal(dir.path());
        lane_thread(j.clone(), 1, 50, 5).join().unwrap();
        lane_thread(j.clone(), 2, 50, 5).join().unwrap();
        lane_thread(j.clone(), 3, 50, 5).join().unwrap();
        j.stop();
    }
    // Cut the middle stream's last record, as a crash mid-write would (the
    // writer thread's stream wrote nothing, so made no segment).
    let segs = segments(dir.path());
    assert_eq!(segs.len(), 3, "a segment per lane: {segs:?}");
    let middle = &segs[1];
    let len = fs::metadata(&middle.path).unwrap().len();
    let f = OpenOptions::new().write(true).open(&middle.path).unwrap();
    f.set_len(len - 10).unwrap();
    drop(f);

    let j = lane_journal(dir.path());
    let mut c = Cursor::new(j.shared.clone(), 0);
    let got = read(&mut c, 1000);
    let seqs: Vec<u64> = got.iter().map(|r| r.seq).collect();
    let want: Vec<u64> = (0..150).filter(|s| *s != 99).collect();
    assert_eq!(seqs, want, "all but the second thread's last record");
    // Numbering resumes after the last record of any stream.
    assert_eq!(j.append_blocking(body(7), 7), Ok(150));
    assert_eq!(payloads(&read(&mut c, 10)), ["{\"i\":7}"]);
}

#[test]
fn readers_wait_at_a_group_still_being_written_though_a_later_one_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let j = lane_journal(dir.path());
    let (a, b) = (j.shared.open_stream(), j.shared.open_stream());
    assert_eq!(j.shared.reserve(a, 5), Some(0));
    assert_eq!(j.shared.reserve(b, 3), Some(5));
    j.shared.group_done(b, 0);
    assert_eq!(
        j.shared.written(),
        0,
        "records 0..5 are still being written"
    );
    j.shared.group_done(a, 0);
    assert_eq!(j.shared.written(), 8);
    j.shared.stop_numbering();
    assert_eq!(
        j.shared.reserve(a, 1),
        None,
        "nothing is numbered after stop"
    );
}

#[test]
fn a_record_past_the_mark_after_a_gap_is_read_once_marked() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&settings(dir.path(), 1 << 30, 1 << 20)).unwrap();
    let (a, c) = (j.shared.open_stream(), j.shared.open_stream());
    // Stream a's group fails: number 0 is a gap.
    assert_eq!(j.shared.reserve(a, 1), Some(0));
    j.shared.group_done(a, 0);
    assert_eq!(j.shared.written(), 1);
    // Stream c's group 1 is written to its file, not yet marked done.
    assert_eq!(j.shared.reserve(c, 1), Some(1));
    let mut buf = Vec::new();
    frame::encode_frame(&mut buf, 1, 1, &body(1));
    let path = segment::path(j.shared.dir(), c, 1);
    fs::write(&path, &buf).unwrap();
    j.shared.segment_created();
    let mut cur = Cursor::new(j.shared.clone(), 0);
    assert_eq!(read(&mut cur, 10).len(), 0, "1 is not marked yet");
    j.shared.group_done(c, buf.len() as u64);
    assert_eq!(j.shared.written(), 2);
    let got: Vec<u64> = read(&mut cur, 10).iter().map(|r| r.seq).collect();
    assert_eq!(got, [1], "record 1 exists and is below the mark");
}

#[test]
fn a_reader_passes_a_gap_left_by_a_failed_write_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&settings(dir.path(), 1 << 30, 1 << 20)).unwrap();
    assert_eq!(j.append_blocking(body(0), 0), Ok(0));
    // A group whose write failed: numbers 1 and 2 are never written.
    let s = j.shared.open_stream();
    assert_eq!(j.shared.reserve(s, 2), Some(1));
    j.shared.group_done(s, 0);
    assert_eq!(j.shared.written(), 3);
    let mut c = Cursor::new(j.shared.clone(), 0);
    assert_eq!(read(&mut c, 10).len(), 1);
    assert_eq!(c.next_seq(), 3, "past the gap: nothing waits for it");
    assert_eq!(j.append_blocking(body(3), 3), Ok(3));
    assert_eq!(payloads(&read(&mut c, 10)), ["{\"i\":3}"]);
}
