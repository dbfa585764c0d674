//! The journal's cost per event: appending (the handler's wait, group commit
//! included) with many requests in flight, and reading records back in
//! order as the shipper and the engine do. `cargo bench --bench journal`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use pixeld::event::EventType;
use pixeld::journal::{Cursor, Journal, Settings};
use pixeld::sink::Topic;

/// A typical impression: its key and a ~600-byte JSON payload.
fn body() -> Vec<u8> {
    let payload = vec![b'x'; 600];
    Journal::body(
        Topic::Impressions,
        &[("type", EventType::Impression.as_str().as_bytes())],
        b"0123456789abcdef0123456789abcdef",
        &payload,
        &[3; 80],
    )
}

fn open(fsync: bool) -> (tempfile::TempDir, Arc<Journal>) {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        dir: dir.path().join("journal"),
        fsync,
        max_bytes: u64::MAX,
        segment_bytes: 64 << 20,
    };
    (dir, Arc::new(Journal::open(&settings).unwrap()))
}

/// `n` appends from `in_flight` concurrent tasks on a one-thread runtime, as
/// a pinned server would issue them; the time per append.
fn appends(journal: &Arc<Journal>, n: u64, in_flight: u64) -> Duration {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let body = body();
    let started = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..in_flight {
            let (journal, body) = (journal.clone(), body.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..n / in_flight {
                    black_box(journal.append(body.clone(), 1).await.unwrap());
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    started.elapsed()
}

fn append(c: &mut Criterion) {
    let mut g = c.benchmark_group("journal");
    g.sample_size(10);
    for in_flight in [1u64, 64] {
        let (_dir, journal) = open(false);
        g.bench_function(format!("append_{in_flight}_in_flight"), |b| {
            b.iter_custom(|iters| appends(&journal, iters.max(in_flight), in_flight))
        });
    }
    let (_dir, journal) = open(false);
    appends(&journal, 100_000, 64);
    g.bench_function("read_back", |b| {
        b.iter_custom(|iters| {
            let mut cursor = Cursor::new(journal.shared.clone(), 0);
            let started = Instant::now();
            let mut left = iters;
            while left > 0 {
                let n = cursor.read_each(left.min(4096) as usize, |r| {
                    black_box(r.seq);
                });
                if n == 0 {
                    cursor = Cursor::new(journal.shared.clone(), 0);
                }
                left -= n as u64;
            }
            started.elapsed()
        })
    });
    g.finish();
}

criterion_group!(benches, append);
criterion_main!(benches);
