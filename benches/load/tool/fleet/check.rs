//! `fleet-check`: one cycle's verdict. It reads the input topics and the
//! records from the start until the cycle has settled (every conversion of
//! the cycle has a record, every pixel the cycle answered is in Kafka, and
//! nothing of the cycle arrived for 3 s with every partition read to its
//! EOF), or until `--wait` seconds passed; then it prints one line:
//!
//!   fault=NAME conversions=N missing=M disagreeing=D wrong=W late=L ...
//!
//! and appends up to five examples of each failure to `--details` (JSON
//! lines).

use std::io::Write;
use std::time::{Duration, Instant};

use super::args::Args;
use super::consume::Reader;
use super::seen::{Seen, ATTRIBUTIONS, CLICKS, CONVERSIONS, IMPRESSIONS};
use super::sent::{self, Sent};
use super::verdict::{judge, Verdict};
use super::windows::{window, Window};

/// Nothing of the window for this long (and every partition at EOF once):
/// what it had to say has been said.
const QUIET: Duration = Duration::from_secs(3);

/// How long before its cycle a check starts reading: a cycle's users are
/// new, and their touches come a second before their purchase; a member's
/// record of a conversion comes after it.
const BEFORE_MS: u64 = 180_000;

pub fn run(args: &Args) {
    let k: usize = args.num("cycle");
    let w = window(args.str("cycles"), k).expect("the cycle has not ended yet");
    let text = std::fs::read_to_string(args.str("config")).expect("the members' config");
    let cfg = pixeld::config::parse(&text, args.str("config")).expect("a valid config");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.num_or("wait", 60));
    let mut seen = Seen::default();
    let topics = [IMPRESSIONS, CLICKS, CONVERSIONS, ATTRIBUTIONS];
    let from_ms = w.lo.saturating_sub(BEFORE_MS);
    let mut reader = Reader::new(args.str("brokers"), &topics, from_ms).unwrap_or_else(|e| {
        // A line all the same, so that the campaign's report counts it.
        println!("fault={} check_failed=1 cycle={k}", w.name);
        eprintln!("fleet-check: cycle {k}: cannot read the topics: {e}");
        std::process::exit(1);
    });
    let brokers = args.str("brokers");
    let (sent, unpublished) = settle(
        &mut reader,
        &mut seen,
        &w,
        (brokers, args.str("sent")),
        deadline,
    );
    if seen.merged_then_read > 0 {
        eprintln!(
            "fleet-check: the following reader read {} of what fresh reads had found later after all (it lagged)",
            seen.merged_then_read
        );
    }
    let reference = super::reference::reference(&cfg, &seen.inputs);
    let v = judge(&seen, &reference, &w);
    // The fields the campaign promises first, then what explains them.
    println!(
        "fault={} conversions={} missing={} disagreeing={} wrong={} late={} wrong_late={} \
         unpublished={unpublished} failed_requests={} duplicates={} repeated_inputs={} cycle={k} \
         check_seconds={}",
        w.name,
        v.conversions,
        v.missing,
        v.disagreeing,
        v.wrong,
        v.late,
        v.wrong_late,
        sent::failed(&sent, &w),
        v.duplicates,
        seen.repeated_inputs,
        started.elapsed().as_secs()
    );
    eprintln!(
        "fleet-check: cycle {k} ({}): reference answers {:?}; missing by partition {:?}",
        w.name, v.answers, v.missing_by_partition
    );
    write_examples(args.str("details"), k, &w, &v);
}

/// Reads until the window settled or the deadline passed; the request log
/// as last read, and how many of the window's answered pixels are not in
/// Kafka.
fn settle(
    reader: &mut Reader,
    seen: &mut Seen,
    w: &Window,
    (brokers, sent_log): (&str, &str),
    deadline: Instant,
) -> (Vec<Sent>, usize) {
    let mut last_news = Instant::now();
    let mut evaluated = Instant::now();
    let mut reread_at = Instant::now();
    loop {
        // Drain what is there, noting when something of the window came.
        while let Some(m) = reader.poll() {
            if seen.fold(&m).is_some_and(|ts| ts < w.hi) {
                last_news = Instant::now();
            }
            if evaluated.elapsed() > Duration::from_secs(1) {
                break;
            }
        }
        evaluated = Instant::now();
        let sent = sent::read(sent_log);
        let unpublished = sent::unpublished(&sent, seen, w);
        let quiet = reader.caught_up() && last_news.elapsed() >= QUIET;
        let complete = missing(seen, w) == 0 && unpublished == 0;
        let over = Instant::now() > deadline;
        // Records still missing once all is quiet: maybe only this reader
        // missed them (checked every 15 s, and once more at the end).
        if !complete && (over || (quiet && reread_at.elapsed() > Duration::from_secs(15))) {
            reread(brokers, seen, w.lo.saturating_sub(BEFORE_MS));
            reread_at = Instant::now();
        }
        if (quiet && missing(seen, w) == 0 && unpublished == 0) || over {
            return (sent, unpublished);
        }
    }
}

fn missing(seen: &Seen, w: &Window) -> usize {
    seen.conversions
        .iter()
        .filter(|(id, c)| w.holds(c.ts) && !seen.records.contains_key(id.as_str()))
        .count()
}

/// A reader that followed a topic while it was written has missed messages
/// on tansu 0.6 (README, Scaling out), and a lagging one has not read them
/// yet: a fresh read of every topic tells either from a record never
/// written, and keeps an input event it lacks out of the reference's blind
/// spot.
fn reread(brokers: &str, seen: &mut Seen, from_ms: u64) {
    let mut fresh = Seen::default();
    let topics = [IMPRESSIONS, CLICKS, CONVERSIONS, ATTRIBUTIONS];
    let Ok(mut reader) = Reader::new(brokers, &topics, from_ms) else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !reader.caught_up() && Instant::now() < deadline {
        while let Some(m) = reader.poll() {
            fresh.fold(&m);
            if Instant::now() > deadline {
                break;
            }
        }
    }
    let found = seen.merge(fresh);
    if found > 0 {
        eprintln!("fleet-check: a fresh read found {found} events or conversions' records the following reader had not");
    }
}

fn write_examples(path: &str, k: usize, w: &Window, v: &Verdict) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("the details file");
    for e in &v.examples {
        let line = serde_json::json!({"cycle": k, "fault": w.name, "example": e});
        writeln!(file, "{line}").expect("details");
    }
}
