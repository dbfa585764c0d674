//! Per-request costs of the pixel path, stage by stage.
//! `cargo bench --bench pixel`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use pixeld::config::{Catalog, Secret};
use pixeld::event::{encode, Common, Warnings};
use pixeld::ids::{EventId, UserId};
use pixeld::pixel::click_id::ClickIds;
use pixeld::pixel::query::{Key, Query};
use pixeld::pixel::{handle, Context, PixelKind, PixelRequest};

const IMPTR: &str =
    "id=2766&cachebuster=1732551234567&ancost=0.42&t=2&redir=https://ads.example.com/click?c=1&d=2";

const CLKTRB: &str = "id=21378&cachebuster=1732551234567&redir=https%3A%2F%2Fwww.example.com%2Fautumn-sale%3Fsrc%3Dad";
const PX: &str = "id=7313&t=2&order_id=ORD42&value=19.99&other=blue+shoes";
const SEG: &str = "add=12192,12304&remove=23145&t=2";

fn config() -> pixeld::config::Config {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/pixeld.toml"))
        .unwrap();
    pixeld::config::parse(&text, "config/pixeld.toml").unwrap()
}

fn common<'a>() -> Common<'a> {
    Common {
        event_id: EventId::new_v7(1_732_551_234_567),
        ts_ms: 1_732_551_234_567,
        uid: Some(UserId(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef)),
        new_uid: false,
        ip: Some([203, 0, 113, 9].into()),
        user_agent: Some(
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36".into(),
        ),
        referer: Some("https://news.example.net/article/42".into()),
        warnings: Warnings::default(),
        ivt: None,
        consent: None,
    }
}

fn parsing(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    g.bench_function("imptr_query", |b| {
        b.iter(|| {
            let q = Query::parse(black_box(IMPTR), 8192).unwrap();
            black_box((
                q.param(Key::Id),
                q.param(Key::Cachebuster),
                q.param(Key::Ancost),
                q.param(Key::T),
                q.redir(),
            ))
        })
    });
    for (name, query) in [
        ("clktrb_query", CLKTRB),
        ("px_query", PX),
        ("seg_query", SEG),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let q = Query::parse(black_box(query), 8192).unwrap();
                black_box((q.param(Key::Id), q.param(Key::T), q.redir()))
            })
        });
    }
    g.finish();
}

fn pipeline(c: &mut Criterion) {
    let cfg = config();
    let catalog = Catalog::new(&cfg).unwrap();
    let allow = cfg.redirect.allowed_hosts.clone();
    let click_ids = ClickIds::new(Secret::generate(), vec![], "pxclid".into());
    let ctx = Context {
        catalog: &catalog,
        allow: &allow,
        click_ids: &click_ids,
        source_click_param: "sclid",
    };
    let mut g = c.benchmark_group("pipeline");
    g.bench_function("imptr_to_event", |b| {
        b.iter(|| {
            let req = PixelRequest {
                kind: PixelKind::Impression,
                path: "/imptr",
                query: IMPTR,
                parsed: Query::parse(black_box(IMPTR), 8192),
                common: common(),
            };
            black_box(handle(req, &ctx))
        })
    });
    let req = PixelRequest {
        kind: PixelKind::Impression,
        path: "/imptr",
        query: IMPTR,
        parsed: Query::parse(IMPTR, 8192),
        common: common(),
    };
    let outcome = handle(req, &ctx);
    let mut buf = Vec::with_capacity(1024);
    g.bench_function("encode_impression", |b| {
        b.iter(|| {
            buf.clear();
            encode(black_box(&outcome.event), &mut buf);
            black_box(buf.len())
        })
    });
    g.bench_function("new_event_id", |b| {
        b.iter(|| black_box(EventId::new_v7(black_box(1))))
    });
    g.finish();
}

fn cookies(c: &mut Criterion) {
    use hyper::header::{HeaderMap, HeaderValue, COOKIE};
    use pixeld::http::cookie::{Cookies, Secret};
    let jar = Cookies::new(
        &pixeld::config::CookieConfig::default(),
        Secret::parse("7e57c00c1e5ec7e77e57c00c1e5ec7e7").unwrap(),
    );
    let uid = UserId(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
    let mut headers = HeaderMap::new();
    let cookie = format!("_ga=GA1.2.3.4; uid={}; theme=dark", jar.value(uid));
    headers.insert(COOKIE, HeaderValue::from_str(&cookie).unwrap());
    let mut g = c.benchmark_group("cookie");
    g.bench_function("identify_signed", |b| {
        b.iter(|| black_box(jar.identify(black_box(&headers))))
    });
    g.bench_function("issue", |b| {
        b.iter(|| black_box(jar.issue(black_box(uid), None)))
    });
    g.finish();
}

criterion_group!(benches, parsing, pipeline, cookies);
criterion_main!(benches);
