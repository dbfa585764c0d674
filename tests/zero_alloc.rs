//! Parsing a typical `/imptr` query allocates nothing, and a whole request
//! only its response: proven with a counting allocator, not assumed.

use std::alloc::{GlobalAlloc, Layout, System};

use pixeld::pixel::query::{Key, Param, Query};

struct Counting;

thread_local! {
    /// This thread's allocations: tests run on threads of their own, so
    /// another test's allocations never count.
    static MINE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Allocations made on this thread so far.
fn allocs() -> usize {
    MINE.with(|m| m.get())
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // A const thread-local without a destructor: reading it never
        // allocates.
        MINE.with(|m| m.set(m.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn parsing_a_typical_imptr_query_allocates_nothing() {
    let raw = String::from("id=2766&cachebuster=1732551234567&ancost=0.42&t=2&redir=https://ads.example.com/click?c=1&d=2");
    let before = allocs();
    let q = Query::parse(&raw, 8192).unwrap();
    let id = q.param(Key::Id);
    let cb = q.param(Key::Cachebuster);
    let ancost = q.param(Key::Ancost);
    let t = q.param(Key::T);
    let redir = q.redir();
    let after = allocs();
    assert_eq!(after - before, 0, "parsing allocated");
    assert!(matches!(
        id,
        Param::Present(std::borrow::Cow::Borrowed("2766"))
    ));
    assert!(matches!(
        cb,
        Param::Present(std::borrow::Cow::Borrowed("1732551234567"))
    ));
    assert!(matches!(
        ancost,
        Param::Present(std::borrow::Cow::Borrowed("0.42"))
    ));
    assert!(matches!(t, Param::Present(std::borrow::Cow::Borrowed("2"))));
    assert!(matches!(
        redir,
        Param::Present(std::borrow::Cow::Borrowed(
            "https://ads.example.com/click?c=1&d=2"
        ))
    ));

    // The counter is live: a decoded value does allocate.
    let q = Query::parse("other=a%20b", 8192).unwrap();
    let before = allocs();
    let _ = q.param(Key::Other);
    assert!(allocs() > before);
}

/// A sink that keeps nothing: the request path's own allocations only.
struct Discard;

impl pixeld::sink::Sink for Discard {
    fn publish(&self, _msg: pixeld::sink::Message<'_>) -> Result<(), pixeld::sink::SinkError> {
        Ok(())
    }
    fn is_ready(&self) -> bool {
        true
    }
    fn flush(&self, _timeout: std::time::Duration) -> usize {
        0
    }
}

/// A typical `/imptr` with a valid signed cookie, served by an app that
/// delivers into `delivery`.
fn imptr_request(
    delivery: pixeld::delivery::Delivery,
) -> (pixeld::http::App, hyper::Request<()>, std::net::SocketAddr) {
    use std::sync::Arc;
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/pixeld.toml"))
        .unwrap();
    let mut cfg = pixeld::config::parse(&text, "config/pixeld.toml").unwrap();
    cfg.attribution.enabled = false;
    let secret = pixeld::config::Secret::parse("7e57c00c1e5ec7e77e57c00c1e5ec7e7").unwrap();
    cfg.cookie.secret = Some(secret);
    let catalog = Arc::new(arc_swap::ArcSwap::new(
        pixeld::config::Catalog::new(&cfg).unwrap(),
    ));
    let app = pixeld::http::App::new(&cfg, catalog, Arc::new(delivery), secret);
    let uid = pixeld::ids::UserId(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
    let cookie = format!("uid={}", app.cookies.value(uid));
    let req = hyper::Request::get("/imptr?id=2766&cachebuster=1732551234567&ancost=0.42&t=2")
        .header("cookie", &cookie)
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36",
        )
        .header("referer", "https://news.example.net/article/42")
        .body(())
        .unwrap();
    (app, req, "203.0.113.9:5555".parse().unwrap())
}

/// The whole request (route, cookie check, event, JSON, delivery, the
/// response) for a typical `/imptr` with a valid signed cookie, in memory
/// mode with a sink that keeps nothing, allocates 4 times, none of them in
/// the event's way: the example config answers with a redirect to a
/// third-party pixel, whose URL is expanded (1) and becomes the `Location`
/// value (1), and hyper's `Response` allocates its header map on the first
/// insert (2: the table and its extra values).
#[test]
fn a_whole_imptr_request_allocates_only_its_response() {
    let delivery = pixeld::delivery::Delivery::direct(std::sync::Arc::new(Discard), None);
    let (app, req, peer) = imptr_request(delivery);
    let public = pixeld::http::Role::Public;
    // Warm: per-thread buffers and caches grow once.
    for _ in 0..3 {
        let (_, receipt) = pixeld::http::router::respond(&req, peer, &app, public);
        assert_eq!(receipt.map(|r| r.wait()), Some(Ok(())));
    }
    let before = allocs();
    let (resp, receipt) = pixeld::http::router::respond(&req, peer, &app, public);
    let settled = receipt.map(|r| r.wait());
    let allocated = allocs() - before;
    assert_eq!(settled, Some(Ok(())), "the event was delivered");
    assert_eq!(resp.status(), 302, "the third-party pixel's redirect");
    assert!(
        allocated <= 4,
        "{allocated} allocations for one request (its response's 4 expected)"
    );
}

/// The same request in `journal` durability, on a serving thread (its own
/// runtime and journal lane), answered once its record is written to the
/// journal, allocates no more than in memory mode: the record's body goes
/// into the lane's reused buffer, and its completion is a slot of the
/// lane, not a channel. Without the lane (the writer thread's path) it
/// allocated 2 more.
#[test]
fn in_journal_mode_a_serving_thread_s_request_allocates_nothing_more() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let journal = Arc::new(
        pixeld::journal::Journal::open(&pixeld::journal::Settings {
            dir: dir.path().join("journal"),
            fsync: false,
            max_bytes: 1 << 30,
            segment_bytes: 64 << 20,
        })
        .unwrap(),
    );
    let delivery = pixeld::delivery::Delivery::journal(journal.clone(), Arc::new(Discard), false);
    let (app, req, peer) = imptr_request(delivery);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let public = pixeld::http::Role::Public;
    let allocated = runtime.block_on(async {
        let _lane = app
            .delivery
            .open_lane()
            .expect("a lane in journal durability");
        for _ in 0..3 {
            let (_, receipt) = pixeld::http::router::respond(&req, peer, &app, public);
            assert_eq!(receipt.unwrap().settled().await, Ok(()));
        }
        let before = allocs();
        let (resp, receipt) = pixeld::http::router::respond(&req, peer, &app, public);
        let settled = receipt.unwrap().settled().await;
        let allocated = allocs() - before;
        assert_eq!(settled, Ok(()), "the event was written to the journal");
        assert_eq!(resp.status(), 302, "the third-party pixel's redirect");
        allocated
    });
    assert_eq!(
        journal.shared.written(),
        4,
        "every request's record is in the journal"
    );
    assert!(
        allocated <= 4,
        "{allocated} allocations for one journaled request (its response's 4 expected)"
    );
}
