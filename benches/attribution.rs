//! Attribution engine throughput on one thread: a mix of impressions, clicks
//! and conversions over 1M users.
//! `cargo bench --bench attribution`

use std::hint::black_box;
use std::sync::Arc;

use arc_swap::ArcSwap;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pixeld::attribution::{ConversionInput, Engine, Input, State, TouchKind};
use pixeld::config::Catalog;
use pixeld::event::{EventType, TouchInput};
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
    Arc::new(ArcSwap::new(Catalog::new(&cfg).unwrap()))
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
                Input::Touch(TouchInput {
                    uid,
                    kind,
                    line_item: LineItemId(5001),
                    event_id: EventId::new_v7(ts),
                    tracker: 2766,
                    publisher: PublisherId(777),
                    placement: Some(PlacementId(4242)),
                    source_click: None,
                })
            } else {
                Input::Conversion(ConversionInput {
                    click: None,
                    uid: Some(uid),
                    event_id: EventId::new_v7(ts),
                    ts_ms: ts,
                    pixel: PixelId(if roll < 95 { 7313 } else { 8371 }),
                    advertiser: AdvertiserId(100),
                    order_id: None,
                    value_micros: Some(1_000_000),
                    context: None,
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
            engine.apply(Input::Touch(TouchInput {
                uid,
                kind,
                line_item: LineItemId(5001),
                event_id: EventId::new_v7(1_800_000_000_000),
                tracker: 2766,
                publisher: PublisherId(777),
                placement: None,
                source_click: None,
            }));
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

/// What reading the engine's input from a journaled (or consumed) event's
/// JSON costs, per event, against taking it from the typed event.
fn input_from_json(c: &mut Criterion) {
    let impression = br#"{"v":1,"event_id":"019abf40-1f3e-7c2a-9d10-6c1b2e3f4a5b","type":"impression","ts":1764180000000,"uid":"0123456789abcdef0123456789abcdef","new_uid":false,"ip":"203.0.113.7","user_agent":"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36","referer":"https://publisher.example/article","warnings":[],"ivt":null,"tracker_id":2766,"line_item_id":5001,"advertiser_id":100,"publisher_id":777,"placement_id":4242,"cachebuster":"1764180000","ancost_micros":420000,"redir":null,"segments_added":[]}"#;
    let conversion = br#"{"v":1,"event_id":"019abf40-1f3e-7c2a-9d10-6c1b2e3f4a5c","type":"conversion","ts":1764180000000,"uid":"0123456789abcdef0123456789abcdef","new_uid":false,"ip":"203.0.113.7","user_agent":"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36","referer":"https://shop.example/thanks","warnings":[],"ivt":null,"pixel_id":7313,"advertiser_id":100,"order_id":"ORD42","value_micros":12500000,"other":null,"segments_added":[],"segments_removed":[],"redir":null}"#;
    assert!(Input::from_json(EventType::Impression, impression).is_some());
    assert!(Input::from_json(EventType::Conversion, conversion).is_some());
    let mut g = c.benchmark_group("attribution_input");
    g.bench_function("from_json_impression", |b| {
        b.iter(|| Input::from_json(EventType::Impression, black_box(impression)))
    });
    g.bench_function("from_json_conversion", |b| {
        b.iter(|| Input::from_json(EventType::Conversion, black_box(conversion)))
    });
    g.finish();
}

criterion_group!(benches, engine_throughput, input_from_json);
criterion_main!(benches);
