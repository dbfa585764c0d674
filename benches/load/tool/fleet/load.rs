//! `fleet-load`: a steady stream of new users. Each gets its touches (a view
//! or a click, both, or none) on instance A and, about a second later, its
//! purchase on instance B, the way a load balancer would split one browser's
//! requests over two `serve` instances. Every request goes to a log
//! (`ms uid kind status`) so the checker can tell a pixel answered but never
//! published from one that never reached Kafka because it failed.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use pixeld::config::CookieConfig;
use pixeld::http::cookie::{Cookies, Secret};
use pixeld::ids::UserId;

use super::args::Args;
use super::http::get;

/// One request of a user's plan, `after_ms` from the user's start.
struct Step {
    after_ms: u64,
    /// Instance B (purchases) or A (touches).
    on_b: bool,
    kind: &'static str,
    target: String,
}

fn step(after_ms: u64, kind: &'static str, target: String) -> Step {
    let on_b = kind == "conversion";
    Step {
        after_ms,
        on_b,
        kind,
        target,
    }
}

/// User `i`'s requests. The mix gives every kind of answer: post_view,
/// post_click, no_touch (no touch at all, or only a click for the view-only
/// pixel 8371) and repeat (8371 counts one per user).
fn plan(i: u64) -> Vec<Step> {
    let view = || step(0, "impression", format!("/imptr?id=2766&cachebuster={i}"));
    let click = |at| step(at, "click", "/clktr?id=21378".to_string());
    let purchase = |at| step(at, "conversion", format!("/px?id=7313&order_id=O{i}"));
    let lead = |at| step(at, "conversion", "/px?id=8371".to_string());
    match i % 10 {
        0..=2 => vec![view(), purchase(1000)],
        3 | 4 => vec![click(0), purchase(1000)],
        5 => vec![view(), click(200), purchase(1200)],
        6 => vec![view(), lead(1000), lead(1300)],
        7 => vec![purchase(1000)],
        8 => vec![lead(1000)],
        _ => vec![click(0), lead(1000)],
    }
}

pub fn run(args: &Args) {
    let (a, b): (u16, u16) = (args.num("a"), args.num("b"));
    let rate: f64 = args.num_or("rate", 10.0);
    let stop = Path::new(args.str("stop"));
    let cfg = CookieConfig {
        secret: pixeld::config::Secret::parse(args.str("secret")),
        ..CookieConfig::default()
    };
    let jar = Cookies::new(&cfg, Secret::generate());
    let file = std::fs::File::create(args.str("log")).expect("the request log");
    let mut log = BufWriter::new(file);
    // Due requests by (time, sequence): a user's purchase waits for its time.
    let mut due: BTreeMap<(Instant, u64), (String, String, Step)> = BTreeMap::new();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let (mut next_user, mut users, mut seq) = (Instant::now(), 0u64, 0u64);
    let mut flushed = Instant::now();
    loop {
        let stopping = stop.exists();
        if !stopping && Instant::now() >= next_user {
            let uid = UserId::generate();
            let cookie = format!("uid={}", jar.value(uid));
            for s in plan(users) {
                let at = next_user + Duration::from_millis(s.after_ms);
                due.insert(
                    (at, seq),
                    (uid.to_hex().as_str().to_string(), cookie.clone(), s),
                );
                seq += 1;
            }
            users += 1;
            next_user += interval;
        }
        while let Some(entry) = due.first_entry() {
            if entry.key().0 > Instant::now() {
                break;
            }
            let (uid, cookie, s) = entry.remove();
            let status = get(if s.on_b { b } else { a }, &s.target, &cookie);
            let ms = pixeld::telemetry::now_ms();
            writeln!(log, "{ms}\t{uid}\t{}\t{status}", s.kind).expect("log");
        }
        if stopping && due.is_empty() {
            break;
        }
        if flushed.elapsed() > Duration::from_millis(200) {
            log.flush().expect("log");
            flushed = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    log.flush().expect("log");
    eprintln!("fleet-load: {users} users, {seq} requests");
}
