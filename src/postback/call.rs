//! One attempt at a destination, and what its answer means: the explicit
//! lists of retriable and final outcomes, and the delay before the next
//! attempt.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use hyper::{Method, Request};
use hyper_tls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::destination::Call;
use crate::config::HttpMethod;

pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// One client for every destination: connections are pooled per host.
pub fn client() -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    let https = HttpsConnector::new_with_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(https)
}

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: done.
    Delivered(u16),
    /// Worth another attempt: 408, 429, 5xx, a timeout, a connection that
    /// failed. `after` is the destination's `Retry-After`, if it gave one.
    Retry {
        class: Class,
        status: Option<u16>,
        after: Option<Duration>,
        error: Option<String>,
    },
    /// Any other answer (3xx, 4xx): the same call would get the same
    /// answer; it is dead-lettered at once.
    Final { class: Class, status: u16 },
}

crate::indexed::indexed_enum! {
    /// The failure classes of `forward_attempts_total{result}`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Class {
        /// The request could not be built (a URL the HTTP client refuses):
        /// final, the same record builds the same request.
        InvalidRequest => "invalid_request",
        Timeout => "timeout",
        Connect => "connect",
        Status3xx => "status_3xx",
        Status408 => "status_408",
        Status429 => "status_429",
        Status4xx => "status_4xx",
        Status5xx => "status_5xx",
    }
}

impl Outcome {
    /// The answer's status and `Retry-After` header.
    pub fn of_status(status: u16, retry_after: Option<&HeaderValue>) -> Outcome {
        let retry = |class| Outcome::Retry {
            class,
            status: Some(status),
            after: retry_after.and_then(parse_retry_after),
            error: None,
        };
        match status {
            200..=299 => Outcome::Delivered(status),
            408 => retry(Class::Status408),
            429 => retry(Class::Status429),
            500..=599 => retry(Class::Status5xx),
            300..=399 => Outcome::Final {
                class: Class::Status3xx,
                status,
            },
            _ => Outcome::Final {
                class: Class::Status4xx,
                status,
            },
        }
    }

    /// The `result` label of this attempt.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Delivered(_) => "delivered",
            Outcome::Retry { class, .. } | Outcome::Final { class, .. } => class.as_str(),
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            Outcome::Final { status: 0, .. } => None,
            Outcome::Delivered(s) | Outcome::Final { status: s, .. } => Some(*s),
            Outcome::Retry { status, .. } => *status,
        }
    }
}

/// Seconds only: an HTTP date would need the destination's clock to be
/// ours. A date is treated as no header (the backoff applies).
fn parse_retry_after(v: &HeaderValue) -> Option<Duration> {
    v.to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Sends `call` once, within `timeout`; the body is read (and dropped) so
/// the connection can be reused.
pub async fn attempt(client: &HttpClient, call: &Call, timeout: Duration) -> (Outcome, Duration) {
    let started = Instant::now();
    let outcome = match tokio::time::timeout(timeout, send(client, call)).await {
        Err(_) => Outcome::Retry {
            class: Class::Timeout,
            status: None,
            after: None,
            error: Some(format!("no answer within {} ms", timeout.as_millis())),
        },
        Ok(Err(e)) => Outcome::Retry {
            class: Class::Connect,
            status: None,
            after: None,
            error: Some(e),
        },
        Ok(Ok(outcome)) => outcome,
    };
    (outcome, started.elapsed())
}

async fn send(client: &HttpClient, call: &Call) -> Result<Outcome, String> {
    let req = match request(call) {
        Ok(r) => r,
        Err(_) => {
            return Ok(Outcome::Final {
                class: Class::InvalidRequest,
                status: 0,
            })
        }
    };
    let answer = client.request(req).await.map_err(|e| {
        // hyper's error chain names the cause (refused, reset, TLS).
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    })?;
    let status = answer.status().as_u16();
    let outcome = Outcome::of_status(status, answer.headers().get(RETRY_AFTER));
    // Read and dropped frame by frame (bounded by the timeout around the
    // whole call), so a destination answering a large body costs no memory
    // and the connection can be reused.
    let mut body = answer.into_body();
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            break;
        }
    }
    Ok(outcome)
}

fn request(call: &Call) -> Result<Request<Full<Bytes>>, hyper::http::Error> {
    let (method, body) = match call.method {
        HttpMethod::Get => (Method::GET, Bytes::new()),
        HttpMethod::Post => (
            Method::POST,
            call.body.clone().map(Bytes::from).unwrap_or_default(),
        ),
    };
    let mut req = Request::builder()
        .method(method)
        .uri(&call.url)
        .header(
            USER_AGENT,
            concat!("pixeld-forward/", env!("CARGO_PKG_VERSION")),
        )
        .header("Idempotency-Key", &call.idempotency_key);
    if call.body.is_some() {
        req = req.header(CONTENT_TYPE, "application/json");
    }
    if let Some(token) = &call.bearer {
        req = req.header(AUTHORIZATION, format!("Bearer {}", token.expose()));
    }
    req.body(Full::new(body))
}

/// The wait before attempt `next` (2, 3, ...): `base` doubled per attempt,
/// at most `max`, with full jitter over its upper half so a fleet that
/// failed together does not retry together; a `Retry-After` is honoured
/// (within `max`).
pub fn backoff(next: u32, base: Duration, max: Duration, after: Option<Duration>) -> Duration {
    let exp = base.saturating_mul(1u32 << (next.saturating_sub(2)).min(20));
    let capped = exp.min(max);
    let half = capped / 2;
    let jitter = half.mul_f64(rand::random::<f64>());
    let wait = half + jitter;
    match after {
        Some(a) => a.max(wait).min(max),
        None => wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_by_the_listed_rules() {
        assert_eq!(Outcome::of_status(204, None), Outcome::Delivered(204));
        for (status, class) in [
            (408, Class::Status408),
            (429, Class::Status429),
            (503, Class::Status5xx),
        ] {
            assert!(
                matches!(Outcome::of_status(status, None), Outcome::Retry { class: c, .. } if c == class),
                "{status}"
            );
        }
        for (status, class) in [
            (400, Class::Status4xx),
            (404, Class::Status4xx),
            (301, Class::Status3xx),
        ] {
            assert_eq!(
                Outcome::of_status(status, None),
                Outcome::Final { class, status }
            );
        }
        let h = HeaderValue::from_static("7");
        assert!(matches!(
            Outcome::of_status(429, Some(&h)),
            Outcome::Retry { after: Some(a), .. } if a == Duration::from_secs(7)
        ));
        let date = HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT");
        assert!(matches!(
            Outcome::of_status(503, Some(&date)),
            Outcome::Retry { after: None, .. }
        ));
    }

    #[test]
    fn backoff_doubles_with_jitter_and_honours_retry_after_within_the_cap() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(10);
        for _ in 0..100 {
            let second = backoff(2, base, max, None);
            assert!(
                second >= Duration::from_millis(50) && second <= base,
                "{second:?}"
            );
            let fourth = backoff(4, base, max, None);
            assert!(fourth >= Duration::from_millis(200) && fourth <= Duration::from_millis(400));
            assert!(backoff(40, base, max, None) <= max);
        }
        assert_eq!(
            backoff(2, base, max, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(backoff(2, base, max, Some(Duration::from_secs(3600))), max);
    }
}
