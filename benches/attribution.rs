//! Attribution engine throughput on one thread: a mix of impressions, clicks
//! and conversions over 1M users.
//! `cargo bench --bench attribution`

use std::hint::black_box;
use std::sync::Arc;

use arc_swap::ArcSwap;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pixeld::attribution::{ConversionInput, Engine, Input, Mark, State, TouchKind};
use pixeld::config::Catalog;
use pixeld::ids::{AdvertiserId, EventId, LineItemId, PixelId, PlacementId, PublisherId, UserId};
use rand::{Rng, SeedableRng};

#[global_allocator]
static ALLOC: pixeld::alloc::HugePages = pixeld::alloc::HugePages;

const USERS: u64 = 1_000_000;
const BATCH: usize = 200_000;

fn catalog() -> Arc<ArcSwap<Catalog>> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/pixeld.toml"))
        .unwrap();
    let cfg = pixeld::config::parse(&text, "config/pixeld.toml").unwrap();
    Arc::new(ArcSwap::new(Catalog::new(&cfg)))
}

/// 60% impressions, 25% clicks, 15% conversions, users drawn uniformly.
fn inputs(n: usize, seed: u64) -> Vec<Input> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let t0 = 1_800_000_000_000u64;
    (0..n)
        .map(|i| {
            let uid = UserId(rng.random_range(0..USERS) as u128 * 0x9e37_79b9_7f4a_7c15);
            let ts = t0 + i as u64;
            let roll: u32 = rng.random_range(0..100);
            if roll < 85 {
                let kind = if roll < 60 {
                    TouchKind::View
                } else {
                    TouchKind::Click
                };
                let mark = Mark::new(
                    EventId::new_v7(ts),
                    2766,
                    PublisherId(777),
                    Some(PlacementId(4242)),
                );
                Input::Touch {
                    uid,
                    kind,
                    line_item: LineItemId(5001),
                    mark,
                }
            } else {
                Input::Conversion(ConversionInput {
                    uid: Some(uid),
                    event_id: EventId::new_v7(ts),
                    ts_ms: ts,
                    pixel: PixelId(if roll < 95 { 7313 } else { 8371 }),
                    advertiser: AdvertiserId(100),
                    order_id: None,
                    value_micros: Some(1_000_000),
                })
            }
        })
        .collect()
}

fn engine_throughput(c: &mut Criterion) {
    let catalog = catalog();
    let engine = Engine::new(Arc::new(State::default()), catalog);
    // Warm the state to 1M users, each with an impression and a click (a
    // thousand when run as a test by `cargo test --all-targets`).
    let users = if std::env::args().any(|a| a == "--bench") {
        USERS
    } else {
        1000
    };
    for u in 0..users {
        let uid = UserId(u as u128 * 0x9e37_79b9_7f4a_7c15);
        for kind in [TouchKind::View, TouchKind::Click] {
            let mark = Mark::new(
                EventId::new_v7(1_800_000_000_000),
                2766,
                PublisherId(777),
                None,
            );
            engine.apply(Input::Touch {
                uid,
                kind,
                line_item: LineItemId(5001),
                mark,
            });
        }
    }
    let mut seed = 0;
    let mut g = c.benchmark_group("attribution");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(20);
    let mut buf = Vec::with_capacity(1024);
    g.bench_function("mixed_inputs_1m_users", |b| {
        b.iter_batched(
            || {
                seed += 1;
                inputs(BATCH, seed)
            },
            |batch| {
                for input in batch {
                    if let Some(record) = engine.apply(input) {
                        buf.clear();
                        record.encode(&mut buf);
                        black_box(buf.len());
                    }
                }
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, engine_throughput);
criterion_main!(benches);
