//! Handing one journaled record to the producer, and what to do when the
//! broker will never take it: a line in the dead-letter file, so that the
//! checkpoint can pass it and one poison record never blocks the stream.

use std::io::Write;
use std::path::Path;

use tracing::warn;

use crate::journal::Record;
use crate::sink::producer::{Outgoing, Produce, Refusal, Topics};
use crate::telemetry::{metric, RateLimit};

/// What became of one produce call.
pub(super) enum Sent {
    /// librdkafka has it; its delivery report will tell.
    Queued,
    /// Refused for good (e.g. too large): dead-lettered.
    Dead,
    /// Refused for now (queue full): produce it again later.
    Later,
}

/// Hands one record to the producer, with its headers as journaled.
pub(super) fn send(
    producer: &dyn Produce,
    topics: &Topics,
    log: &RateLimit,
    dead_letter_file: &Path,
    r: &Record<'_>,
) -> Sent {
    // pixeld's records carry one header; a few more fit without allocating.
    let mut list: [(&str, &[u8]); 8] = [("", &[]); 8];
    let mut n = 0;
    for h in r.headers.iter().take(list.len()) {
        list[n] = h;
        n += 1;
    }
    let out = Outgoing {
        topic: r.topic,
        key: r.key,
        headers: &list[..n],
        payload: r.payload,
    };
    match producer.send(&out, r.seq) {
        Ok(()) => Sent::Queued,
        Err(e) if e.kind == Refusal::Permanent => {
            dead_letter(dead_letter_file, topics, r, &e.message);
            Sent::Dead
        }
        Err(e) => {
            if e.kind != Refusal::QueueFull {
                if let Some(held) = log.check() {
                    warn!(error = %e.message, suppressed = held, "produce refused; will retry");
                }
            }
            Sent::Later
        }
    }
}

/// Appends the record to the dead-letter file, one JSON line, with the
/// reason: the checkpoint may then pass it.
pub(super) fn dead_letter(path: &Path, topics: &Topics, r: &Record<'_>, reason: &str) {
    let mut line = Vec::with_capacity(r.payload.len() + 128);
    let mut w = crate::event::JsonWriter::object(&mut line);
    w.u64("seq", r.seq);
    w.u64("ts", r.ts_ms);
    w.str("reason", reason);
    w.str("topic", topics.name(r.topic));
    w.str("key", &String::from_utf8_lossy(r.key));
    w.str("payload", &String::from_utf8_lossy(r.payload));
    w.end();
    line.push(b'\n');
    let written = crate::files::private_options()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut file| file.write_all(&line));
    metric::journal_dead_letter();
    let seq = r.seq;
    match written {
        Ok(()) => {
            warn!(seq, reason, file = %path.display(), "record refused by the broker for good; written to the dead-letter file")
        }
        Err(e) => {
            warn!(seq, reason, error = %e, "record refused by the broker for good, and the dead-letter file cannot be written")
        }
    }
}
