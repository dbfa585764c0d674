//! One GET as a browser sends it: a fresh connection, the user's cookie and
//! an ordinary browser's User-Agent (without one, pixeld flags the event as
//! invalid traffic and attribution ignores it).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const UA: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36";

/// The answer's status code; 0 when there was none (refused, timed out).
pub fn get(port: u16, target: &str, cookie: &str) -> u16 {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let head = format!(
        "GET {target} HTTP/1.1\r\nHost: track.example.com\r\nCookie: {cookie}\r\nUser-Agent: {UA}\r\nConnection: close\r\n\r\n"
    );
    if s.write_all(head.as_bytes()).is_err() {
        return 0;
    }
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    // "HTTP/1.1 200 OK": the code is the second word.
    String::from_utf8_lossy(&answer)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}
