//! The shipper's checkpoint on disk (`journal.checkpoint`): every record
//! below it is in Kafka. Written by the shipper, read by recovery at open;
//! a missing or damaged one ships the whole journal again (at least once,
//! never lost).

use std::fs;
use std::path::Path;

use tracing::warn;

const CHECKPOINT: &str = "journal.checkpoint";

/// The shipped watermark saved on disk (0 when none or unreadable).
pub fn load(dir: &Path) -> u64 {
    let Ok(bytes) = fs::read(dir.join(CHECKPOINT)) else {
        return 0;
    };
    if bytes.len() != 12 {
        warn!("journal checkpoint unreadable; shipping the whole journal again");
        return 0;
    }
    let (seq, crc) = bytes.split_at(8);
    if crc32fast::hash(seq).to_le_bytes() != crc {
        warn!("journal checkpoint corrupt; shipping the whole journal again");
        return 0;
    }
    u64::from_le_bytes(seq.try_into().unwrap_or_default())
}

/// Saved atomically and durably: a checkpoint lost to a power cut would
/// ship the whole journal again.
pub(super) fn save(dir: &Path, seq: u64) -> std::io::Result<()> {
    let mut bytes = seq.to_le_bytes().to_vec();
    bytes.extend_from_slice(&crc32fast::hash(&seq.to_le_bytes()).to_le_bytes());
    crate::files::write_atomic(&dir.join(CHECKPOINT), &bytes)
}
