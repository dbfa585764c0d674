//! HTTP limits, each with a raw TCP client: what a hostile or broken client
//! gets, and that the limit really holds.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{example_config, Server};
use pixeld::config::Config;
use pixeld::serve::Outputs;
use pixeld::sink::memory::MemorySink;

fn config() -> Config {
    let mut cfg = example_config("unused:9092");
    cfg.journal.durability = pixeld::config::Durability::Memory;
    cfg.attribution.enabled = false;
    cfg
}

/// Reads until the peer closes (or the read timeout); returns what came.
fn read_all(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Writes an oversized request in one go. The server may answer and close
/// before it has read all of it (that is the limit working), so a write
/// cut short by the close is not an error: the answer is what is checked.
/// (`write!` sent the request in pieces, and a piece written after the
/// server's close failed with a broken pipe under load.)
fn send_oversized(s: &mut TcpStream, request: &str) {
    match s.write_all(request.as_bytes()) {
        Ok(()) => {}
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ) => {}
        Err(e) => panic!("writing the request: {e}"),
    }
}

fn status_line(resp: &str) -> &str {
    resp.lines().next().unwrap_or("")
}

/// Runs blocking client code against a fresh server built from `cfg`.
async fn with_server(
    cfg: Config,
    client: impl FnOnce(std::net::SocketAddr) + Send + 'static,
) -> Server {
    // No readiness polling: its pooled connection would count against caps.
    let sink = Arc::new(MemorySink::default());
    let server = Server::spawn(cfg, Outputs { sink, kafka: None }).await;
    let addr = server.addr;
    tokio::task::spawn_blocking(move || client(addr))
        .await
        .unwrap();
    server
}

fn dial(addr: std::net::SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_lines_over_the_limit_get_414_and_heads_over_the_limit_431() {
    let server = with_server(config(), |addr| {
        // Default limits: query 8192 (an invalid event), line 16384 (414), head 32768 (431).
        let mut s = dial(addr);
        write!(
            s,
            "GET /imptr?id=2766&cachebuster={} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "9".repeat(12_000)
        )
        .unwrap();
        assert_eq!(
            status_line(&read_all(&mut s)),
            "HTTP/1.1 200 OK",
            "long query: still the GIF"
        );
        let mut s = dial(addr);
        send_oversized(
            &mut s,
            &format!(
                "GET /imptr?id=2766&cachebuster={} HTTP/1.1\r\nHost: x\r\n\r\n",
                "9".repeat(20_000)
            ),
        );
        let r = read_all(&mut s);
        assert_eq!(status_line(&r), "HTTP/1.1 414 URI Too Long");
        assert!(r.to_ascii_lowercase().contains("connection: close"), "{r}");
        let mut s = dial(addr);
        send_oversized(
            &mut s,
            &format!(
                "GET /imptr?id=2766 HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                "a".repeat(40_000)
            ),
        );
        assert_eq!(
            status_line(&read_all(&mut s)),
            "HTTP/1.1 431 Request Header Fields Too Large"
        );
    })
    .await;
    let metrics = server.admin_get("/metrics").await;
    let text = std::str::from_utf8(&metrics.body).unwrap().to_string();
    assert!(
        text.contains("http_refused_total{reason=\"uri_too_long\"}"),
        "{text}"
    );
    assert!(
        text.contains("http_refused_total{reason=\"head_too_large\"}"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off_and_idle_connections_closed_after_the_header_timeout() {
    let mut cfg = config();
    cfg.server.header_read_timeout_ms = 1000;
    let server = with_server(cfg, |addr| {
        // Slowloris: a header line every 100 ms would take 3 s.
        let mut s = dial(addr);
        let started = Instant::now();
        s.write_all(b"GET /imptr?id=2766 HTTP/1.1\r\n").unwrap();
        for _ in 0..30 {
            if s.write_all(b"X-A: b\r\n").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let r = read_all(&mut s);
        assert!(
            !r.contains("HTTP/1.1 302"),
            "a slow client must not be served: {r}"
        );
        assert!(started.elapsed() < Duration::from_millis(3500));
        // Idle keep-alive: one request, then silence.
        let mut s = dial(addr);
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let started = Instant::now();
        let r = read_all(&mut s);
        assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
        let idle = started.elapsed();
        assert!(
            idle >= Duration::from_millis(800) && idle < Duration::from_secs(5),
            "closed after {idle:?}"
        );
    })
    .await;
    // Both closes are counted as the operator's dashboards expect.
    let metrics = server.admin_get("/metrics").await;
    let text = std::str::from_utf8(&metrics.body).unwrap().to_string();
    let closed = text
        .lines()
        .find_map(|l| l.strip_prefix("http_refused_total{reason=\"header_timeout\"} "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert_eq!(closed, Some(2.0), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_refused_without_harming_the_open_ones() {
    let mut cfg = config();
    cfg.server.max_connections = 3;
    with_server(cfg, |addr| {
        // One keep-alive round trip on an open connection.
        let healthy = |s: &mut TcpStream| {
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut buf = [0u8; 512];
            let n = s.read(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        };
        let mut open: Vec<TcpStream> = (0..3).map(|_| dial(addr)).collect();
        for s in &mut open {
            let r = healthy(s);
            assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
        }
        let mut extra = dial(addr);
        let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        let r = read_all(&mut extra);
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        for s in &mut open {
            assert!(
                healthy(s).starts_with("HTTP/1.1 200 OK"),
                "an open connection was harmed"
            );
        }
        drop(open);
        std::thread::sleep(Duration::from_millis(300));
        let mut again = dial(addr);
        again
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        assert!(
            read_all(&mut again).starts_with("HTTP/1.1 200 OK"),
            "room again once they closed"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    with_server(config(), |addr| {
        let mut s = dial(addr);
        s.write_all(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\nGET /imptr?id=2766 HTTP/1.1\r\nHost: x\r\n\r\nGET /robots.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        let r = read_all(&mut s);
        let statuses: Vec<&str> = r.lines().filter(|l| l.starts_with("HTTP/1.1 ")).collect();
        assert_eq!(statuses, ["HTTP/1.1 200 OK", "HTTP/1.1 404 Not Found", "HTTP/1.1 302 Found", "HTTP/1.1 200 OK"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_framing_is_refused_and_a_body_is_never_read() {
    with_server(config(), |addr| {
        // Both framings, in either order, then a request smuggled behind the
        // body: refused with 400 and the connection closed, so the smuggled
        // request is never served and no event is recorded.
        for head in [
            "Content-Length: 5\r\nTransfer-Encoding: chunked",
            "Transfer-Encoding: chunked\r\nContent-Length: 5",
            // A chunked body alone: no pixel has a body.
            "Transfer-Encoding: chunked",
        ] {
            let mut s = dial(addr);
            let req = format!("GET /imptr?id=2766 HTTP/1.1\r\nHost: x\r\n{head}\r\n\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
            s.write_all(req.as_bytes()).unwrap();
            let r = read_all(&mut s);
            let statuses: Vec<&str> = r.lines().filter(|l| l.starts_with("HTTP/1.1 ")).collect();
            assert_eq!(statuses, ["HTTP/1.1 400 Bad Request"], "{head}: {r}");
            assert!(r.to_ascii_lowercase().contains("connection: close"), "{r}");
        }
        // A GET announcing 100 MB: answered at once, the connection closed,
        // the body never read.
        let mut s = dial(addr);
        s.write_all(b"GET /imptr?id=2766 HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\nabc").unwrap();
        let started = Instant::now();
        let r = read_all(&mut s);
        assert_eq!(status_line(&r), "HTTP/1.1 302 Found");
        assert!(started.elapsed() < Duration::from_secs(2), "waited for the body");
    })
    .await;
}
