//! The request path's metrics, recorded per thread.
//!
//! Recording through the `metrics` registry costs every request a key hash,
//! a read lock, a reference count taken and dropped, and an atomic add, all
//! on cache lines every worker writes: with two workers the same requests
//! cost more CPU than with one (`benches/contention.rs` measures it). Here
//! each thread owns a [`Shard`] that only it writes (a plain load and store,
//! no lock prefix, no shared line); `/metrics` sums the shards when it is
//! scraped: counters and the gauge go into the registry as totals, the
//! histograms are written out here.

use std::cell::OnceCell;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};

use super::metric::{self, RouteLabel, BUCKETS};
use crate::event::EventType;

/// `route` label values of the request metrics, in slot order: every
/// [`RouteLabel`], so a new route gets its own slot (a hand-kept list with
/// a fallback once counted a route under another's label).
pub const ROUTES: &[&str] = &{
    let mut names = [""; RouteLabel::COUNT];
    let mut i = 0;
    while i < names.len() {
        names[i] = RouteLabel::ALL[i].as_str();
        i += 1;
    }
    names
};

/// `status` label values; anything else is `other`.
pub const STATUSES: &[&str] = &[
    "200", "204", "302", "400", "403", "404", "405", "414", "431", "503", "other",
];

/// `type` label values of `events_total`, in slot order: every
/// [`EventType`], so a new type gets its own slot (a hand-kept list once
/// counted adjustments as opt-outs).
pub const EVENT_TYPES: &[&str] = &{
    let mut names = [""; EventType::COUNT];
    let mut i = 0;
    while i < names.len() {
        names[i] = EventType::ALL[i].as_str();
        i += 1;
    }
    names
};

/// A histogram's slots: one count per bucket and one past the last, then
/// the sum (as `f64` bits).
const HIST: usize = BUCKETS.len() + 2;

const REQUESTS: usize = 0;
const DURATION: usize = REQUESTS + ROUTES.len() * STATUSES.len();
const APPEND: usize = DURATION + ROUTES.len() * HIST;
const EVENTS: usize = APPEND + HIST;
const IN_FLIGHT: usize = EVENTS + EVENT_TYPES.len();
const KAFKA_LATENCY: usize = IN_FLIGHT + 1;
const KAFKA_DELIVERED: usize = KAFKA_LATENCY + HIST;
const SLOTS: usize = KAFKA_DELIVERED + 1;

/// One thread's figures. Written by its own thread only; read by the
/// scrape. Aligned so that two shards never share a cache line.
#[repr(align(128))]
pub struct Shard {
    slots: [AtomicU64; SLOTS],
}

impl Shard {
    fn new() -> Shard {
        Shard {
            slots: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Single writer: a load and a store, not a locked read-modify-write.
    #[inline]
    fn add(&self, slot: usize, n: u64) {
        let s = &self.slots[slot];
        s.store(s.load(Relaxed).wrapping_add(n), Relaxed);
    }

    fn add_f64(&self, slot: usize, x: f64) {
        let s = &self.slots[slot];
        s.store((f64::from_bits(s.load(Relaxed)) + x).to_bits(), Relaxed);
    }

    fn observe(&self, base: usize, seconds: f64) {
        let bucket = BUCKETS.partition_point(|le| *le < seconds);
        self.add(base + bucket, 1);
        self.add_f64(base + HIST - 1, seconds);
    }

    fn get(&self, slot: usize) -> u64 {
        self.slots[slot].load(Relaxed)
    }
}

/// Every live thread's shard, and the figures of threads that ended.
struct Shards {
    live: Vec<Arc<Shard>>,
    /// What ended threads recorded, so that totals never go back.
    retired: [u64; SLOTS],
}

fn shards() -> &'static Mutex<Shards> {
    static SHARDS: OnceLock<Mutex<Shards>> = OnceLock::new();
    SHARDS.get_or_init(|| {
        Mutex::new(Shards {
            live: Vec::new(),
            retired: [0; SLOTS],
        })
    })
}

/// The thread's shard; on thread exit its figures move to `retired`.
struct Owned(Arc<Shard>);

impl Drop for Owned {
    fn drop(&mut self) {
        let mut all = shards().lock().unwrap_or_else(|e| e.into_inner());
        add_into(&mut all.retired, &self.0);
        all.live.retain(|s| !Arc::ptr_eq(s, &self.0));
    }
}

thread_local! {
    static MINE: OnceCell<Owned> = const { OnceCell::new() };
}

#[inline]
fn with(f: impl FnOnce(&Shard)) {
    // During thread teardown the shard may be gone: that figure is lost
    // rather than panicking.
    let _ = MINE.try_with(|cell| {
        let owned = cell.get_or_init(|| {
            let shard = Arc::new(Shard::new());
            let mut all = shards().lock().unwrap_or_else(|e| e.into_inner());
            all.live.push(shard.clone());
            Owned(shard)
        });
        f(&owned.0)
    });
}

/// Adds `shard`'s figures to `totals`, slot by slot (sums as `f64`).
fn add_into(totals: &mut [u64; SLOTS], shard: &Shard) {
    for (i, v) in totals.iter_mut().enumerate() {
        *v = if is_sum(i) {
            (f64::from_bits(*v) + f64::from_bits(shard.get(i))).to_bits()
        } else {
            v.wrapping_add(shard.get(i))
        };
    }
}

fn is_sum(slot: usize) -> bool {
    let hist_end = |base: usize| (slot + 1 - base) % HIST == 0;
    (DURATION..APPEND).contains(&slot) && hist_end(DURATION)
        || (APPEND..EVENTS).contains(&slot) && hist_end(APPEND)
        || (KAFKA_LATENCY..KAFKA_DELIVERED).contains(&slot) && hist_end(KAFKA_LATENCY)
}

/// One request answered on `route` with `status` after `seconds`.
pub fn http_request(route: RouteLabel, status: u16, seconds: f64) {
    let r = route.index();
    let status = match status {
        200 => 0,
        204 => 1,
        302 => 2,
        400 => 3,
        403 => 4,
        404 => 5,
        405 => 6,
        414 => 7,
        431 => 8,
        503 => 9,
        _ => 10,
    };
    with(|s| {
        s.add(REQUESTS + r * STATUSES.len() + status, 1);
        s.observe(DURATION + r * HIST, seconds);
    });
}

/// A request started (+1) or ended (-1).
pub fn in_flight(delta: i64) {
    with(|s| s.add(IN_FLIGHT, delta as u64));
}

pub fn journal_appended(seconds: f64) {
    with(|s| s.observe(APPEND, seconds));
}

/// A message acknowledged by Kafka, `seconds` after it was created (the
/// delivery-report thread records one per message).
pub fn kafka_delivered(seconds: Option<f64>) {
    kafka_delivered_many(1, seconds);
}

/// `n` messages acknowledged at once (the shipper's confirmed range), one
/// latency observation for them all.
pub fn kafka_delivered_many(n: u64, seconds: Option<f64>) {
    with(|s| {
        s.add(KAFKA_DELIVERED, n);
        if let Some(seconds) = seconds {
            s.observe(KAFKA_LATENCY, seconds);
        }
    });
}

pub fn event_delivered(kind: EventType) {
    let k = kind.index();
    with(|s| s.add(EVENTS + k, 1));
}

/// The sum over every shard, live and retired, of each slot.
fn totals() -> [u64; SLOTS] {
    let all = shards().lock().unwrap_or_else(|e| e.into_inner());
    let mut t = all.retired;
    for shard in &all.live {
        add_into(&mut t, shard);
    }
    t
}

/// Puts the counters and the gauge into the registry (as totals) and
/// returns the histograms in Prometheus' text format.
pub fn flush() -> String {
    let t = totals();
    for (r, route) in ROUTES.iter().enumerate() {
        for (s, status) in STATUSES.iter().enumerate() {
            let n = t[REQUESTS + r * STATUSES.len() + s];
            if n > 0 {
                metric::http_requests_total(route, status, n);
            }
        }
    }
    for (k, kind) in EVENT_TYPES.iter().enumerate() {
        let n = t[EVENTS + k];
        if n > 0 {
            metric::events_total(kind, n);
        }
    }
    metric::http_in_flight_total(t[IN_FLIGHT] as i64 as f64);
    metric::kafka_delivered_total(t[KAFKA_DELIVERED]);
    let mut out = String::new();
    let routes: Vec<(&str, &[u64])> = ROUTES
        .iter()
        .enumerate()
        .map(|(r, route)| (*route, &t[DURATION + r * HIST..DURATION + (r + 1) * HIST]))
        .filter(|(_, h)| h[..HIST - 1].iter().any(|n| *n > 0))
        .collect();
    histogram(&mut out, metric::HTTP_DURATION, "route", &routes);
    for (name, base) in [
        (metric::JOURNAL_APPEND_DURATION, APPEND),
        (metric::KAFKA_DELIVERY_LATENCY, KAFKA_LATENCY),
    ] {
        let h = &t[base..base + HIST];
        if h[..HIST - 1].iter().any(|n| *n > 0) {
            histogram(&mut out, name, "", &[("", h)]);
        }
    }
    out
}

/// One histogram family in the text format; `label` empty for none.
fn histogram(out: &mut String, name: &str, label: &str, series: &[(&str, &[u64])]) {
    if series.is_empty() {
        return;
    }
    let help = metric::ALL
        .iter()
        .find(|(n, ..)| *n == name)
        .map_or("", |(_, _, h)| h);
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (value, h) in series {
        let (lead, tail) = if label.is_empty() {
            (String::new(), String::new())
        } else {
            (
                format!("{label}=\"{value}\","),
                format!("{{{label}=\"{value}\"}}"),
            )
        };
        let mut cumulative = 0;
        for (i, le) in BUCKETS.iter().enumerate() {
            cumulative += h[i];
            let _ = writeln!(out, "{name}_bucket{{{lead}le=\"{le}\"}} {cumulative}");
        }
        cumulative += h[HIST - 2];
        let _ = writeln!(out, "{name}_bucket{{{lead}le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(out, "{name}_sum{tail} {}", f64::from_bits(h[HIST - 1]));
        let _ = writeln!(out, "{name}_count{tail} {cumulative}");
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(text: &str, line_start: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn figures_from_every_thread_add_up_and_survive_the_thread() {
        let before = flush();
        let was = series(
            &before,
            "http_request_duration_seconds_count{route=\"seg\"}",
        )
        .unwrap_or(0.0);
        let threads: Vec<_> = (0..3)
            .map(|_| {
                std::thread::spawn(|| {
                    for _ in 0..1000 {
                        http_request(RouteLabel::Seg, 200, 0.0003);
                    }
                    // An ended thread's figures stay counted.
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        http_request(RouteLabel::Seg, 200, 2.0);
        let text = flush();
        let count = series(&text, "http_request_duration_seconds_count{route=\"seg\"}").unwrap();
        assert_eq!(count - was, 3001.0);
        // 0.0003 s is in the 0.0005 bucket, not the 0.00025 one.
        let at = |le: &str| {
            series(
                &text,
                &format!("http_request_duration_seconds_bucket{{route=\"seg\",le=\"{le}\"}}"),
            )
            .unwrap()
        };
        assert!(at("0.0005") - at("0.00025") >= 3000.0);
        assert_eq!(at("+Inf"), count);
        assert!(text.contains("# TYPE http_request_duration_seconds histogram"));
    }

    #[test]
    fn every_per_thread_histogram_is_written_out() {
        journal_appended(0.001);
        kafka_delivered(Some(0.05));
        kafka_delivered(None);
        http_request(RouteLabel::Px, 200, 0.001);
        let text = flush();
        for name in [
            "http_request_duration_seconds",
            "journal_append_duration_seconds",
            "kafka_delivery_latency_seconds",
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} histogram")),
                "{name} missing from:\n{text}"
            );
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&format!("{name}_count"))),
                "{name} has no count"
            );
        }
    }

    /// Each route and event type is counted under its own label.
    #[test]
    fn every_route_and_event_type_has_its_own_labelled_slot() {
        for route in RouteLabel::ALL {
            assert_eq!(ROUTES[route.index()], route.as_str());
            assert_eq!(RouteLabel::parse(route.as_str()), Some(route));
        }
        for kind in EventType::ALL {
            assert_eq!(EVENT_TYPES[kind.index()], kind.as_str());
        }
    }

    #[test]
    fn histogram_sums_are_at_the_end_of_each_histogram() {
        assert!(is_sum(DURATION + HIST - 1) && !is_sum(DURATION + HIST - 2));
        assert!(is_sum(APPEND + HIST - 1) && !is_sum(EVENTS));
        assert!(is_sum(KAFKA_DELIVERED - 1) && !is_sum(KAFKA_DELIVERED));
    }
}
