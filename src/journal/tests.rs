use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

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
    Journal::body(
        Topic::Impressions,
        &[("type", EventType::Impression.as_str().as_bytes())],
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
    let (_, path) = segments(dir.path()).pop().unwrap();
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
    let (_, first) = &segs[0];
    let mut bytes = fs::read(first).unwrap();
    bytes[frame::HEADER + 2] ^= 0xff;
    fs::write(first, bytes).unwrap();
    let mut c = Cursor::new(j.shared.clone(), 0);
    let got = read(&mut c, 100);
    let second_first = segs[1].0;
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
