//! Each structure a request touches that other workers touch too, with one
//! thread and with two doing the same thing at once: the time per operation
//! per thread. A structure that scales costs the same with 2 threads as with
//! 1; one whose cache line every thread writes costs more (issue 14's
//! target: no more than 1.5x). `cargo bench --bench contention`
//!
//! Two threads on a 2-core machine say whether one cache line bounces
//! between two cores; they cannot say how it behaves with 16 (contention
//! grows with the number of writers, usually worse than linearly).

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use pixeld::event::EventType;
use pixeld::journal::{lane, Journal, Settings, TryAppend};
use pixeld::sink::Topic;
use pixeld::telemetry::metric::{self, RouteLabel};

/// Runs `op` `iters` times on each of `threads` threads at once; the wall
/// time of the slowest, which criterion divides by `iters`.
fn parallel<S: Send + Sync + 'static>(
    threads: usize,
    iters: u64,
    shared: &Arc<S>,
    op: fn(&S, u64),
) -> Duration {
    let start = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (shared, start) = (shared.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let t = Instant::now();
                for i in 0..iters {
                    op(&shared, i);
                }
                t.elapsed()
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .max()
        .unwrap_or_default()
}

fn bench<S: Send + Sync + 'static>(c: &mut Criterion, name: &str, shared: S, op: fn(&S, u64)) {
    let shared = Arc::new(shared);
    let mut g = c.benchmark_group(format!("contention/{name}"));
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_millis(500));
    for threads in [1, 2] {
        g.bench_with_input(BenchmarkId::from_parameter(threads), &threads, |b, &t| {
            b.iter_custom(|iters| parallel(t, iters, &shared, op))
        });
    }
    g.finish();
}

/// What each request recorded before issue 14: two in-flight gauge updates,
/// a labelled histogram, a labelled counter, the events counter and the
/// journal-append histogram, each through the registry.
fn registry_request(_: &(), i: u64) {
    metrics::gauge!(metric::HTTP_IN_FLIGHT).increment(1.0);
    metrics::histogram!(metric::JOURNAL_APPEND_DURATION).record(0.0001);
    metrics::counter!(metric::EVENTS, "type" => "impression").increment(1);
    metrics::gauge!(metric::HTTP_IN_FLIGHT).decrement(1.0);
    metrics::histogram!(metric::HTTP_DURATION, "route" => "imptr").record((i % 7) as f64 * 1e-4);
    metrics::counter!(metric::HTTP_REQUESTS, "route" => "imptr", "status" => "200").increment(1);
}

/// The same figures recorded per thread (`telemetry::local`), as now.
fn local_request(_: &(), i: u64) {
    metric::http_in_flight(1);
    metric::journal_appended(0.0001);
    metric::event_delivered(EventType::Impression);
    metric::http_in_flight(-1);
    metric::http_request(RouteLabel::Imptr, 200, (i % 7) as f64 * 1e-4);
}

/// A reference taken and dropped on one shared `Arc` (what cloning the
/// `App` for each request cost).
fn arc_clone(shared: &Arc<u64>, _: u64) {
    black_box(shared.clone());
}

/// Loading the live settings, as every pixel does.
fn arc_swap_load(shared: &arc_swap::ArcSwap<u64>, _: u64) {
    black_box(**shared.load());
}

/// One record handed to the journal's writer thread; every 256th waits for
/// its group, as a handler waits for its own.
fn journal_append(j: &(tempfile::TempDir, Journal), i: u64) {
    let mut body = record();
    loop {
        match j.1.try_append(body, 1) {
            Ok(rx) => {
                if i % 256 == 255 {
                    let _ = rx.blocking_recv();
                }
                return;
            }
            Err(TryAppend::Busy(b)) => {
                body = b;
                std::thread::yield_now();
            }
            Err(TryAppend::Closed) => panic!("journal closed"),
        }
    }
}

thread_local! {
    /// The bench thread's runtime and lane, as a serving thread has them.
    static LANE: std::cell::RefCell<Option<(tokio::runtime::Runtime, lane::LaneGuard)>> =
        const { std::cell::RefCell::new(None) };
}

/// One record into this thread's own lane; every 256th writes the group
/// and waits for it, as a serving thread's flusher does once per round of
/// ready requests.
fn journal_lane(j: &(tempfile::TempDir, Arc<Journal>), i: u64) {
    lane_append(&j.1, i);
}

fn lane_append(journal: &Arc<Journal>, i: u64) {
    LANE.with(|l| {
        let mut l = l.borrow_mut();
        if l.is_none() {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let guard = rt.block_on(async { lane::open(journal) }).unwrap();
            *l = Some((rt, guard));
        }
    });
    let ticket = RECORD
        .with(|r| lane::try_append(journal, 1, |out| out.extend_from_slice(r)))
        .unwrap()
        .unwrap();
    if i % 256 == 255 {
        black_box(ticket.wait().unwrap());
    }
}

const SEGMENT_BYTES: u64 = 4 << 20;

thread_local! {
    static RECORD: Vec<u8> = record();
}

fn record() -> Vec<u8> {
    Journal::body(
        Topic::Impressions,
        &[("type", EventType::Impression.as_str().as_bytes())],
        b"0123456789abcdef0123456789abcdef",
        // Small, so that seconds of appends do not fill the disk.
        &[b'x'; 64],
        &[],
    )
}

/// Deletes every segment but each stream's newest, as the shipper deletes
/// shipped ones, so that a benchmark writing a gigabyte a second reuses
/// page-cache pages instead of touching fresh memory (on this VM the first
/// touch of a page is what a 2-thread run measured:
/// `copy_folio_from_iter_atomic`, 60% of its samples).
fn reap_segments(journal: Arc<pixeld::journal::Shared>) {
    std::thread::spawn(move || loop {
        let segs = journal.segments();
        for (i, seg) in segs.iter().enumerate() {
            // A segment followed by a newer one of its stream goes.
            if segs[i + 1..].iter().any(|s| s.stream == seg.stream) {
                let _ = std::fs::remove_file(&seg.path);
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    });
}

fn all(c: &mut Criterion) {
    pixeld::telemetry::prometheus();
    bench(c, "metrics_registry", (), registry_request);
    bench(c, "metrics_per_thread", (), local_request);
    bench(c, "arc_clone", Arc::new(7u64), arc_clone);
    bench(
        c,
        "arc_swap_load",
        arc_swap::ArcSwap::from_pointee(7u64),
        arc_swap_load,
    );
    let dir = tempfile::tempdir().unwrap();
    let journal = open_journal(&dir, "journal");
    bench(c, "journal_append", (dir, journal), journal_append);
    let dir = tempfile::tempdir().unwrap();
    let journal = Arc::new(open_journal(&dir, "journal"));
    bench(c, "journal_lane", (dir, journal), journal_lane);
}

/// A journal in `dir/name` whose old segments are deleted as they roll.
fn open_journal(dir: &tempfile::TempDir, name: &str) -> Journal {
    let journal = Journal::open(&Settings {
        dir: dir.path().join(name),
        fsync: false,
        max_bytes: u64::MAX,
        segment_bytes: SEGMENT_BYTES,
    })
    .unwrap();
    reap_segments(journal.shared.clone());
    journal
}

criterion_group!(benches, all);
criterion_main!(benches);
