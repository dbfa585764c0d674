//! Saving and loading the engine's state. A snapshot is one file: a header
//! (magic, format version), the records, and a CRC32 of all of it; anything
//! that does not check out is reported and ignored, never half-loaded.

use std::fs;
use std::path::{Path, PathBuf};

use super::state::{LineItemTouches, State};
use super::wire::{put_mark, put_order, put_source_click, Reader};
use crate::ids::{PixelId, UserId};

const MAGIC: &[u8; 8] = b"PXDATTR\0";
/// Bumped whenever the layout below changes; older files are ignored.
/// 2: the journal position the state covers follows the version. 3: order
/// ids. 4: their outcomes ([`super::wire::put_order`]). 5: the source
/// click ids of kept clicks, after the orders (`u64 count`, then per id
/// `u128 uid |` [`super::wire::put_source_click`]).
pub const FORMAT_VERSION: u32 = 5;
/// The version before order ids (read, never written).
const WITHOUT_ORDERS: u32 = 2;
/// The version with order ids but no outcomes (read, never written).
const WITHOUT_OUTCOMES: u32 = 3;
/// The version with outcomes but no source click ids (read, never written).
const WITHOUT_SOURCE_CLICKS: u32 = 4;

/// The snapshot file inside `data_dir`.
pub fn path_in(data_dir: &Path) -> PathBuf {
    data_dir.join("attribution.snapshot")
}

/// Serializes `state`, which has applied every journal record before
/// `applied` (0 without a journal).
pub fn encode(state: &State, applied: u64) -> Vec<u8> {
    let users = state.users_touches();
    let mut out = Vec::with_capacity(64 + users.len() * 96);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&applied.to_le_bytes());
    out.extend_from_slice(&(users.len() as u64).to_le_bytes());
    for (uid, list) in &users {
        out.extend_from_slice(&uid.0.to_le_bytes());
        out.extend_from_slice(&(list.len() as u16).to_le_bytes());
        for t in list.iter() {
            out.extend_from_slice(&t.line_item.to_le_bytes());
            put_mark(&mut out, &t.view);
            put_mark(&mut out, &t.click);
        }
    }
    let counted = state.repeat_marks();
    out.extend_from_slice(&(counted.len() as u64).to_le_bytes());
    for ((uid, pixel), ts) in counted {
        out.extend_from_slice(&uid.0.to_le_bytes());
        out.extend_from_slice(&pixel.0.to_le_bytes());
        out.extend_from_slice(&ts.to_le_bytes());
    }
    let orders = state.all_orders();
    out.extend_from_slice(&(orders.len() as u64).to_le_bytes());
    for (uid, o) in orders {
        out.extend_from_slice(&uid.0.to_le_bytes());
        put_order(&mut out, &o, true);
    }
    let sources = state.all_source_clicks();
    out.extend_from_slice(&(sources.len() as u64).to_le_bytes());
    for (uid, m) in &sources {
        out.extend_from_slice(&uid.0.to_le_bytes());
        put_source_click(&mut out, m);
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Parses a snapshot into `state` and returns the journal position it
/// covers; on any error `state` is left untouched.
pub fn decode(bytes: &[u8], state: &State) -> Result<u64, String> {
    if bytes.len() < MAGIC.len() + 4 + 4 || &bytes[..8] != MAGIC {
        return Err("not a pixeld attribution snapshot".into());
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let mut r = Reader::new(body, 8);
    let version = r.u32()?;
    if !(WITHOUT_ORDERS..=FORMAT_VERSION).contains(&version) {
        return Err(format!(
            "format version {version}, this pixeld reads {FORMAT_VERSION}"
        ));
    }
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err("checksum mismatch (corrupt or truncated file)".into());
    }
    let applied = r.u64()?;
    let users = r.u64()?;
    let mut touches = Vec::new();
    for _ in 0..users {
        let uid = UserId(r.u128()?);
        let n = r.u16()?;
        let mut list = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let line_item = r.u32()?;
            let view = r.mark()?;
            let click = r.mark()?;
            list.push(LineItemTouches {
                line_item,
                view,
                click,
            });
        }
        touches.push((uid, list));
    }
    let n = r.u64()?;
    let mut counted = Vec::new();
    for _ in 0..n {
        let uid = UserId(r.u128()?);
        let pixel = PixelId(r.u32()?);
        counted.push(((uid, pixel), r.u64()?));
    }
    let mut orders = Vec::new();
    if version >= WITHOUT_OUTCOMES {
        for _ in 0..r.u64()? {
            let uid = UserId(r.u128()?);
            orders.push((uid, r.order(version >= WITHOUT_SOURCE_CLICKS)?));
        }
    }
    let mut sources = Vec::new();
    if version >= FORMAT_VERSION {
        for _ in 0..r.u64()? {
            let uid = UserId(r.u128()?);
            sources.push((uid, r.source_click()?));
        }
    }
    if !r.done() {
        return Err("trailing bytes after the records".into());
    }
    for (uid, list) in touches {
        state.set_touches(uid, &list);
    }
    for ((uid, pixel), ts) in counted {
        state.mark_counted(uid, pixel, ts);
    }
    for (uid, mark) in orders {
        state.remember_order(uid, mark);
    }
    // After the touches: an id is kept only with its click.
    for (uid, mark) in sources {
        state.remember_source_click(uid, mark);
    }
    Ok(applied)
}

/// Writes the snapshot atomically and durably ([`crate::files::write_atomic`]).
pub fn save(state: &State, applied: u64, data_dir: &Path) -> std::io::Result<usize> {
    crate::files::create_private_dir(data_dir)?;
    let bytes = encode(state, applied);
    crate::files::write_atomic(&path_in(data_dir), &bytes)?;
    Ok(bytes.len())
}

/// Why a snapshot was not loaded.
#[derive(Debug)]
pub enum LoadError {
    /// The file is there but cannot be read (permissions, a directory, I/O):
    /// the state it holds cannot be rebuilt by ignoring it.
    Unreadable(std::io::Error),
    /// Its bytes do not check out: ignored, the journal rebuilds the state.
    Corrupt(String),
}

/// Loads the snapshot if there is one, returning the journal position it
/// covers. `Ok(None)`: no file.
pub fn load(state: &State, data_dir: &Path) -> Result<Option<u64>, LoadError> {
    match fs::read(path_in(data_dir)) {
        Ok(bytes) => decode(&bytes, state).map(Some).map_err(LoadError::Corrupt),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LoadError::Unreadable(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::state::Mark;
    use crate::attribution::state::TouchKind;
    use crate::ids::LineItemId;
    use crate::ids::{EventId, PlacementId, PublisherId};

    fn sample() -> State {
        let s = State::default();
        let m = Mark::new(
            EventId::new_v7(1_000),
            2766,
            PublisherId(7),
            Some(PlacementId(9)),
        );
        s.touch(UserId(1), LineItemId(5), TouchKind::View, m);
        s.touch(
            UserId(1),
            LineItemId(6),
            TouchKind::Click,
            Mark::new(EventId::new_v7(2_000), 1, PublisherId(2), None),
        );
        s.touch(UserId(u128::MAX), LineItemId(5), TouchKind::Click, m);
        s.mark_counted(UserId(1), PixelId(7313), 5_000);
        s.remember_order(
            UserId(1),
            crate::attribution::state::OrderMark {
                pixel: PixelId(7313),
                order: 42,
                ts_ms: 5_000,
                outcome: Some(crate::attribution::state::OrderOutcome {
                    conversion: EventId::new_v7(5_000).into(),
                    decision: crate::attribution::Decision {
                        counted: true,
                        credit: None,
                        reason: Some(crate::attribution::Reason::NoTouch),
                    },
                    value_micros: Some(3_000_000),
                    retracted: false,
                    applied: [None; 2],
                }),
            },
        );
        s
    }

    #[test]
    fn round_trip() {
        let s = sample();
        let bytes = encode(&s, 1234);
        let back = State::default();
        assert_eq!(decode(&bytes, &back), Ok(1234));
        assert_eq!(back.touches_of(UserId(1)), s.touches_of(UserId(1)));
        assert_eq!(
            back.touches_of(UserId(u128::MAX)),
            s.touches_of(UserId(u128::MAX))
        );
        assert_eq!(back.last_counted(UserId(1), PixelId(7313)), Some(5_000));
        assert!(back.order_seen(UserId(1), PixelId(7313), 42, 5_000, 0));
        assert_eq!(back.orders_of(UserId(1)), s.orders_of(UserId(1)));
        assert_eq!(back.entries(), s.entries());
    }

    use crate::event::{OwnedSourceClick, SourceClickKind};

    const SCLID: &str = "aff-7781";

    /// [`sample`] with a source click id on its user 1's click.
    fn sample_with_source_click() -> (State, EventId) {
        let s = sample();
        let click = EventId::new_v7(3_000);
        let source = OwnedSourceClick::new(SourceClickKind::Source, SCLID);
        let m = Mark::new(click, 1, PublisherId(2), None);
        s.touch_with(UserId(1), LineItemId(6), TouchKind::Click, m, source);
        (s, click)
    }

    /// `bytes` (written with an empty source clicks section, or with it cut
    /// off by `cut`) as an older `version` wrote them, checksum and all.
    fn as_version(bytes: &[u8], version: u32, cut: usize) -> Vec<u8> {
        let mut out = bytes[..bytes.len() - 4 - cut].to_vec();
        out[8..12].copy_from_slice(&version.to_le_bytes());
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    #[test]
    fn source_click_ids_round_trip_and_a_version_4_file_still_loads() {
        let (s, click) = sample_with_source_click();
        let bytes = encode(&s, 99);
        assert_eq!(&bytes[8..12], &5u32.to_le_bytes());
        let back = State::default();
        assert_eq!(decode(&bytes, &back), Ok(99));
        assert_eq!(
            back.source_clicks_of(UserId(1)),
            s.source_clicks_of(UserId(1))
        );
        assert_eq!(
            back.source_click(UserId(1), click).map(|c| c.id),
            Some(SCLID.into())
        );
        assert_eq!(back.entries(), s.entries());
        // Format 4: no source clicks section (its count was the last 8
        // bytes before the checksum, and the one id's 16 + 16 + 3 + 8).
        let v4 = as_version(&bytes, 4, 8 + 16 + 16 + 3 + SCLID.len());
        let old = State::default();
        assert_eq!(decode(&v4, &old), Ok(99));
        assert_eq!(old.touches_of(UserId(1)), s.touches_of(UserId(1)));
        assert_eq!(old.orders_of(UserId(1)), s.orders_of(UserId(1)));
        assert!(old.all_source_clicks().is_empty());
    }

    #[test]
    fn a_damaged_source_click_is_refused_with_what_is_wrong() {
        let (s, _) = sample_with_source_click();
        let bytes = encode(&s, 0);
        // The kind's byte: before the id's 2-byte length and its bytes.
        let kind_at = bytes.len() - 4 - SCLID.len() - 2 - 1;
        for (byte, at, why) in [
            (9, kind_at, "source click kind 9"),
            (0, kind_at + 1, "0 bytes"),
            (b'"', kind_at + 3, "characters no click id has"),
        ] {
            let mut bad = bytes[..bytes.len() - 4].to_vec();
            bad[at] = byte;
            let bad = as_version(&[&bad[..], &[0; 4]].concat(), 5, 0);
            let into = State::default();
            let err = decode(&bad, &into).unwrap_err();
            assert!(err.contains(why), "{err}");
            assert_eq!(into.users(), 0, "nothing half-loaded");
        }
    }

    #[test]
    fn corrupt_truncated_or_foreign_files_are_refused_whole() {
        let bytes = encode(&sample(), 0);
        let mut flipped = bytes.clone();
        flipped[30] ^= 0xff;
        let mut other_version = bytes.clone();
        other_version[8] = 99;
        for (bad, why) in [
            (&bytes[..bytes.len() - 7], "checksum"),
            (&flipped[..], "checksum"),
            (&other_version[..], "format version 99"),
            (&b"hello world, not a snapshot"[..], "not a pixeld"),
            (&b""[..], "not a pixeld"),
        ] {
            let s = State::default();
            let err = decode(bad, &s).unwrap_err();
            assert!(err.contains(why), "{err}");
            assert_eq!(s.users(), 0, "nothing half-loaded");
        }
    }

    #[test]
    fn save_and_load_through_the_file_system() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(load(&State::default(), dir.path()), Ok(None)));
        save(&sample(), 7, dir.path()).unwrap();
        let s = State::default();
        assert!(matches!(load(&s, dir.path()), Ok(Some(7))));
        assert_eq!(s.users(), 2);
        // Corrupt bytes are told apart from a file that cannot be read.
        fs::write(path_in(dir.path()), b"garbage").unwrap();
        assert!(matches!(load(&s, dir.path()), Err(LoadError::Corrupt(_))));
        fs::remove_file(path_in(dir.path())).unwrap();
        fs::create_dir(path_in(dir.path())).unwrap();
        assert!(matches!(
            load(&s, dir.path()),
            Err(LoadError::Unreadable(_))
        ));
    }
}
