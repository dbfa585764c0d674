//! A real browser for the tests: Debian's headless Chromium driven through
//! its ChromeDriver (W3C WebDriver over plain HTTP, plus ChromeDriver's
//! DevTools passthrough), and small local web sites for it to visit.
//!
//! Host names make pixeld third-party, as on the web: the publisher page is
//! served from `127.0.0.1`, the advertiser's site and the third-party pixel
//! catcher from `advertiser.test` and `catcher.test` (mapped to 127.0.0.1 by
//! Chromium's `--host-resolver-rules`), pixeld from `localhost` (where
//! Chromium accepts `Secure` cookies over plain HTTP, so `SameSite=None`
//! works as it does over HTTPS in production).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// An ordinary desktop Chrome's user agent: headless Chromium announces
/// itself as `HeadlessChrome`, which pixeld rightly flags as automation.
pub const CHROME_UA: &str = super::BROWSER_UA;

/// How the browser treats third-party cookies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThirdPartyCookies {
    /// Allowed (Chromium's setting "Allow third-party cookies").
    Allowed,
    /// Chromium's default, as shipped: blocked in third-party contexts.
    Default,
}

/// One request a site received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub host: String,
    /// Path and query.
    pub target: String,
    pub cookie: Option<String>,
    pub referer: Option<String>,
}

/// The publisher's, the advertiser's and the pixel catcher's web sites: one
/// server on one port, answering by path (whatever the host name), and
/// remembering every request.
pub struct Sites {
    pub port: u16,
    pages: Arc<Mutex<HashMap<String, (String, String)>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Sites {
    pub fn start() -> Sites {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let pages: Arc<Mutex<HashMap<String, (String, String)>>> = Default::default();
        let seen: Arc<Mutex<Vec<Seen>>> = Default::default();
        let (p, s) = (pages.clone(), seen.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (p, s) = (p.clone(), s.clone());
                std::thread::spawn(move || serve_site(conn, &p, &s));
            }
        });
        Sites { port, pages, seen }
    }

    /// Serves `body` as HTML at `path`.
    pub fn page(&self, path: &str, body: impl Into<String>) {
        self.pages.lock().unwrap().insert(
            path.to_string(),
            ("text/html; charset=utf-8".into(), body.into()),
        );
    }

    /// The publisher's page at `path` (served from 127.0.0.1).
    pub fn publisher(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The advertiser's page at `path` (served as advertiser.test).
    pub fn advertiser(&self, path: &str) -> String {
        format!("http://advertiser.test:{}{path}", self.port)
    }

    /// The catcher's URL for `path`.
    pub fn catcher(&self, path: &str) -> String {
        format!("http://catcher.test:{}{path}", self.port)
    }

    /// Every request so far whose host starts with `host`.
    pub fn seen(&self, host: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.host.starts_with(host))
            .cloned()
            .collect()
    }
}

fn serve_site(
    mut conn: TcpStream,
    pages: &Mutex<HashMap<String, (String, String)>>,
    seen: &Mutex<Vec<Seen>>,
) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let target = line.split(' ').nth(1).unwrap_or("/").to_string();
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        seen.lock().unwrap().push(Seen {
            host: headers.get("host").cloned().unwrap_or_default(),
            target: target.clone(),
            cookie: headers.get("cookie").cloned(),
            referer: headers.get("referer").cloned(),
        });
        let path = target.split('?').next().unwrap_or("/");
        let page = pages.lock().unwrap().get(path).cloned();
        let (status, ctype, body): (&str, String, Vec<u8>) = match page {
            Some((ctype, body)) => ("200 OK", ctype, body.into_bytes()),
            // The catcher answers what a pixel host would.
            None if path.ends_with(".js") => (
                "200 OK",
                "application/javascript".into(),
                b"/* caught */".to_vec(),
            ),
            None if path.starts_with("/catch") => ("200 OK", "image/gif".into(), GIF.to_vec()),
            None => ("404 Not Found", "text/plain".into(), b"not found".to_vec()),
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n\r\n",
            body.len()
        );
        if conn.write_all(head.as_bytes()).is_err() || conn.write_all(&body).is_err() {
            return;
        }
    }
}

const GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// Headless Chromium in a WebDriver session; closed (and its driver
/// stopped) when dropped.
pub struct Browser {
    /// One browser at a time on this 2-core machine: held while it lives.
    _turn: std::sync::MutexGuard<'static, ()>,
    driver: Child,
    port: u16,
    session: String,
}

impl Browser {
    pub fn start(cookies: ThirdPartyCookies) -> Browser {
        static TURN: Mutex<()> = Mutex::new(());
        let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
        let (driver, port) = start_driver();
        let mut prefs = json!({});
        if cookies == ThirdPartyCookies::Allowed {
            // 0: allow third-party cookies (Settings > Privacy > Third-party cookies).
            prefs = json!({ "profile.cookie_controls_mode": 0 });
        }
        let profile = tempfile::tempdir().unwrap().keep();
        let caps = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "pageLoadStrategy": "normal",
                "goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": [
                        "--headless=new",
                        "--no-sandbox",
                        "--disable-gpu",
                        "--disable-dev-shm-usage",
                        "--no-first-run",
                        format!("--user-data-dir={}", profile.display()),
                        format!("--user-agent={CHROME_UA}"),
                        "--host-resolver-rules=MAP advertiser.test 127.0.0.1, MAP catcher.test 127.0.0.1",
                        // Plain-HTTP test sites: no automatic upgrade to HTTPS.
                        "--disable-features=HttpsUpgrades,HttpsFirstBalancedModeAutoEnable",
                    ],
                    "prefs": prefs,
                }
            }}
        });
        let mut b = Browser {
            _turn: turn,
            driver,
            port,
            session: String::new(),
        };
        let v = b.call("POST", "/session", Some(caps));
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_string();
        b
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        call(self.port, method, path, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let v = self.call(method, &format!("/session/{}{path}", self.session), body);
        if let Some(e) = v.get("error") {
            panic!("WebDriver {method} {path}: {e}: {}", v["message"]);
        }
        v
    }

    /// Navigates and waits for the page's load event.
    pub fn goto(&self, url: &str) {
        self.session_call("POST", "/url", Some(json!({ "url": url })));
    }

    pub fn url(&self) -> String {
        self.session_call("GET", "/url", None)
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Runs `script` (a function body; `return` gives the value).
    pub fn run(&self, script: &str) -> Value {
        self.session_call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// Clicks the first element matching `css`, as a user would.
    pub fn click(&self, css: &str) {
        let el = self.session_call(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        );
        let id = el
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {el}"))
            .to_string();
        self.session_call("POST", &format!("/element/{id}/click"), Some(json!({})));
    }

    /// Waits until `script` returns true.
    pub fn wait_for(&self, script: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.run(script) == Value::Bool(true) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// A Chrome DevTools Protocol command, through ChromeDriver.
    pub fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.session_call(
            "POST",
            "/goog/cdp/execute",
            Some(json!({ "cmd": cmd, "params": params })),
        )
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.call("DELETE", &format!("/session/{}", self.session), None)
            }));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// ChromeDriver on a free port, answering as ChromeDriver (another test's
/// server may grab the port between choosing and binding it: then retry).
fn start_driver() -> (Child, u16) {
    for _ in 0..5 {
        let port = super::free_tcp_port();
        let mut driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver, installed by scripts/test.sh)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if driver.try_wait().ok().flatten().is_some() {
                break;
            }
            let status = call(port, "GET", "/status", None);
            if status.is_ok_and(|v| v["ready"] == Value::Bool(true)) {
                return (driver, port);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = driver.kill();
        let _ = driver.wait();
    }
    panic!("chromedriver did not start");
}

/// One WebDriver command; the response's `value`.
fn call(port: u16, method: &str, path: &str, body: Option<Value>) -> std::io::Result<Value> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            port,
            body.len()
        );
    s.write_all(req.as_bytes())?;
    // ChromeDriver keeps the connection open: read exactly the body.
    let mut r = BufReader::new(s);
    let mut length = 0;
    loop {
        let mut line = String::new();
        r.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().map_err(std::io::Error::other)?;
            }
        }
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body)?;
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| std::io::Error::other(format!("{e}: {}", String::from_utf8_lossy(&body))))?;
    Ok(v["value"].clone())
}
