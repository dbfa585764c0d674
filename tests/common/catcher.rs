//! A local HTTP server of the tests' own, standing in for a postback
//! destination, Meta or Google: it records every request and answers by
//! the first segment of its path.
//!
//! - `/ok...`: 200;
//! - `/flaky...`: 500 for the first three requests with an
//!   `Idempotency-Key`, then 200;
//! - `/bad...`: 400;
//! - `/hang...`: the first request with a key is held (no answer) until
//!   [`Catcher::release`], later ones get 200;
//! - `/slow...`: 200 after 100 ms.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request as the destination saw it.
#[derive(Clone, Debug)]
pub struct Caught {
    pub at: Instant,
    pub method: String,
    pub target: String,
    /// Lower-case names.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Caught {
    pub fn key(&self) -> &str {
        self.headers
            .get("idempotency-key")
            .map_or("", String::as_str)
    }

    /// A query parameter of the target, percent-decoded.
    pub fn param(&self, name: &str) -> Option<String> {
        let query = self.target.split_once('?')?.1;
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then(|| decode(v))
        })
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[derive(Default)]
struct State {
    caught: Mutex<Vec<Caught>>,
    released: AtomicBool,
}

pub struct Catcher {
    pub port: u16,
    state: Arc<State>,
}

impl Catcher {
    pub fn start() -> Catcher {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State::default());
        let s = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || serve(conn, &s));
            }
        });
        Catcher { port, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Every request so far whose path starts with `prefix`.
    pub fn caught(&self, prefix: &str) -> Vec<Caught> {
        self.state
            .caught
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.target.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Waits (up to `limit`) until `done` holds for the requests to `prefix`.
    pub fn wait(
        &self,
        prefix: &str,
        limit: Duration,
        done: impl Fn(&[Caught]) -> bool,
    ) -> Vec<Caught> {
        let deadline = Instant::now() + limit;
        loop {
            let seen = self.caught(prefix);
            if done(&seen) || Instant::now() > deadline {
                return seen;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Lets the held `/hang` requests go (they get 200).
    pub fn release(&self) {
        self.state.released.store(true, Ordering::SeqCst);
    }
}

fn serve(conn: TcpStream, state: &State) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    loop {
        let Some(caught) = read_request(&mut reader) else {
            return;
        };
        let status = answer(&caught, state);
        if write!(conn, "HTTP/1.1 {status} X\r\nContent-Length: 2\r\n\r\nok").is_err() {
            return;
        }
    }
}

fn answer(c: &Caught, state: &State) -> u16 {
    let key = c.key().to_string();
    let earlier = {
        let mut all = state.caught.lock().unwrap();
        let n = all
            .iter()
            .filter(|o| o.key() == key && o.target.split('?').next() == c.target.split('?').next())
            .count();
        all.push(c.clone());
        n
    };
    let path = c.target.trim_start_matches('/');
    if path.starts_with("flaky") {
        return if earlier < 3 { 500 } else { 200 };
    }
    if path.starts_with("bad") {
        return 400;
    }
    if path.starts_with("hang") && earlier == 0 {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !state.released.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    if path.starts_with("slow") {
        std::thread::sleep(Duration::from_millis(100));
    }
    200
}

fn read_request(r: &mut BufReader<TcpStream>) -> Option<Caught> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Caught {
        at: Instant::now(),
        method,
        target,
        headers,
        body,
    })
}
