//! Parsing a typical `/imptr` query allocates nothing, and neither does
//! answering the whole request on a serving thread: proven with a counting
//! allocator, not assumed.

use std::alloc::{GlobalAlloc, Layout, System};

use pixeld::pixel::query::{Key, Param, Query};

struct Counting;

thread_local! {
    /// This thread's allocations: tests run on threads of their own, so
    /// another test's allocations never count.
    static MINE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// Set on a serving thread a test started: its allocations are also
    /// counted in [`SERVING_ALLOCS`], which the test's own thread reads.
    static SERVING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Allocations made on serving threads (the one test that starts one).
static SERVING_ALLOCS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Allocations made on this thread so far.
fn allocs() -> usize {
    MINE.with(|m| m.get())
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // A const thread-local without a destructor: reading it never
        // allocates.
        MINE.with(|m| m.set(m.get() + 1));
        if SERVING.with(|s| s.get()) {
            SERVING_ALLOCS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
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

/// A journal in `dir` (page-cache durability, as `journal` mode) and a
/// delivery into it that ships to a sink keeping nothing.
fn journal_delivery(
    dir: &std::path::Path,
) -> (
    std::sync::Arc<pixeld::journal::Journal>,
    pixeld::delivery::Delivery,
) {
    use std::sync::Arc;
    let journal = Arc::new(
        pixeld::journal::Journal::open(&pixeld::journal::Settings {
            dir: dir.join("journal"),
            fsync: false,
            max_bytes: 1 << 30,
            segment_bytes: 64 << 20,
        })
        .unwrap(),
    );
    let delivery = pixeld::delivery::Delivery::journal(journal.clone(), Arc::new(Discard), false);
    (journal, delivery)
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

/// What `router::serve` does once a request is answered: its header map is
/// given back for a later answer. Here a copy of the request's, with room
/// for an answer's headers, as the maps going round on a connection have
/// after their first answer (made before the count starts).
fn give_back_a_request_s_map(req: &hyper::Request<()>) {
    let mut map = hyper::HeaderMap::with_capacity(16);
    map.extend(req.headers().clone());
    pixeld::http::response::give_back(map);
}

/// The whole request (route, cookie check, event, JSON, delivery, the
/// response) for a typical `/imptr` with a valid signed cookie, in memory
/// mode with a sink that keeps nothing, allocates nothing. The example
/// config answers with a redirect to a third-party pixel: its URL is
/// filled into the thread's URL buffer and becomes the `Location` value as
/// it is, and the response's header map is one an earlier request gave
/// back (as `router::serve` does with each request's; here the test gives
/// one back, and the serving-thread test below shows the maps going
/// round). Before this, 4: the URL, its copy as a header value, and the
/// header map's two parts.
#[test]
fn a_whole_imptr_request_allocates_nothing() {
    let delivery = pixeld::delivery::Delivery::direct(std::sync::Arc::new(Discard), None);
    let (app, req, peer) = imptr_request(delivery);
    let public = pixeld::http::Role::Public;
    // Warm: per-thread buffers and caches grow once.
    for _ in 0..3 {
        let (_, receipt) = pixeld::http::router::respond(&req, peer, &app, public);
        assert_eq!(receipt.map(|r| r.wait()), Some(Ok(())));
    }
    give_back_a_request_s_map(&req);
    let before = allocs();
    let (resp, receipt) = pixeld::http::router::respond(&req, peer, &app, public);
    let settled = receipt.map(|r| r.wait());
    let allocated = allocs() - before;
    assert_eq!(settled, Some(Ok(())), "the event was delivered");
    assert_eq!(resp.status(), 302, "the third-party pixel's redirect");
    assert!(allocated == 0, "{allocated} allocations for one request");
}

/// The same request in `journal` durability, on a serving thread (its own
/// runtime and journal lane), answered once its record is written to the
/// journal, allocates no more than in memory mode: the record's body goes
/// into the lane's reused buffer, and its completion is a slot of the
/// lane, not a channel. Without the lane (the writer thread's path) it
/// allocated 2 more.
#[test]
fn in_journal_mode_a_serving_thread_s_request_allocates_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, delivery) = journal_delivery(dir.path());
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
        give_back_a_request_s_map(&req);
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
        allocated == 0,
        "{allocated} allocations for one journaled request"
    );
}

/// Sends `request` on the keep-alive connection `conn` and reads its whole
/// answer; returns its status line.
fn exchange(conn: &mut std::net::TcpStream, request: &[u8], buf: &mut Vec<u8>) -> String {
    use std::io::{Read, Write};
    conn.write_all(request).unwrap();
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn.read(&mut chunk).unwrap();
        assert!(n > 0, "the server closed the connection");
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = std::str::from_utf8(&buf[..end])
            .unwrap()
            .to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        if buf.len() >= end + 4 + length {
            return head.lines().next().unwrap().to_string();
        }
    }
}

/// The whole request path as it runs in production: a serving thread (its
/// runtime, its listener, its journal lane, hyper) answering a typical
/// `/imptr` with a valid signed cookie, again and again on one keep-alive
/// connection, in `journal` durability. Everything the serving thread
/// allocates counts: hyper's parsing and encoding, the route, the cookie
/// check, the event and its journal record, the response.
#[test]
fn a_serving_thread_answers_typical_imptr_requests_without_allocating() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let (journal, delivery) = journal_delivery(dir.path());
    let (app, req, _) = imptr_request(delivery);
    let cookie = req.headers()["cookie"].to_str().unwrap().to_string();
    let listener = pixeld::http::bind_public("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let thread = pixeld::http::ServingThread::prepare(listener).unwrap();
    let limits = pixeld::http::Limits {
        header_read_timeout: std::time::Duration::from_secs(30),
        max_header_bytes: 8192,
        shutdown_timeout: std::time::Duration::from_secs(5),
        max_connections: 16,
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let app = Arc::new(app);
    let server = std::thread::spawn(move || {
        SERVING.with(|s| s.set(true));
        thread.serve(app, limits, Arc::new(AtomicUsize::new(0)), stopped);
    });
    let request = format!(
        "GET /imptr?id=2766&cachebuster=1732551234567&ancost=0.42&t=2 HTTP/1.1\r\n\
         Host: px.example.com\r\n\
         Cookie: {cookie}\r\n\
         User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36\r\n\
         Referer: https://news.example.net/article/42\r\n\r\n"
    );
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut buf = Vec::new();
    // Warm: the connection's buffers, the lane, the spare header maps.
    const WARM: usize = 50;
    const MEASURED: usize = 500;
    for _ in 0..WARM {
        assert_eq!(
            exchange(&mut conn, request.as_bytes(), &mut buf),
            "http/1.1 302 found"
        );
    }
    let before = SERVING_ALLOCS.load(Ordering::Relaxed);
    for _ in 0..MEASURED {
        assert_eq!(
            exchange(&mut conn, request.as_bytes(), &mut buf),
            "http/1.1 302 found"
        );
    }
    let allocated = SERVING_ALLOCS.load(Ordering::Relaxed) - before;
    drop(conn);
    stop.send(true).unwrap();
    server.join().unwrap();
    assert_eq!(
        journal.shared.written(),
        (WARM + MEASURED) as u64,
        "every answered request's record is in the journal"
    );
    assert!(
        SERVING_ALLOCS.load(Ordering::Relaxed) > 0,
        "the counter is live: the serving thread's start allocated"
    );
    assert_eq!(
        allocated, 0,
        "{allocated} allocations for {MEASURED} requests"
    );
}
