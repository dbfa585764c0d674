//! Reading an API request's JSON body: the only bodies pixeld reads. Its
//! size is bounded before and while it is read, and so is the time a
//! caller may take to send it, so a slow or endless body holds nothing.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Request, StatusCode};

use super::Refusal;

/// The largest body taken.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// How long a caller may take to send it.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

pub const NOT_JSON_TYPE: Refusal = Refusal::new(
    StatusCode::UNSUPPORTED_MEDIA_TYPE,
    "Content-Type must be application/json",
);
pub const TOO_LARGE: Refusal = Refusal::new(
    StatusCode::PAYLOAD_TOO_LARGE,
    "the body is larger than 1 MiB: send fewer items per request",
);
const TOO_SLOW: Refusal = Refusal::new(
    StatusCode::REQUEST_TIMEOUT,
    "the body did not arrive within 10 seconds",
);
const UNREADABLE: Refusal = Refusal::new(StatusCode::BAD_REQUEST, "the body could not be read");

/// The body of a JSON request, whole, or why not.
pub async fn read_json<B>(req: Request<B>) -> Result<Bytes, Refusal>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    if !is_json(req.headers().get(CONTENT_TYPE)) {
        return Err(NOT_JSON_TYPE);
    }
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(TOO_LARGE);
    }
    let limited = Limited::new(req.into_body(), MAX_BODY_BYTES);
    match tokio::time::timeout(READ_TIMEOUT, limited.collect()).await {
        Err(_) => Err(TOO_SLOW),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(TOO_LARGE),
        Ok(Err(_)) => Err(UNREADABLE),
    }
}

/// `application/json`, with or without parameters (`; charset=utf-8`).
fn is_json(v: Option<&hyper::header::HeaderValue>) -> bool {
    let Some(v) = v.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let media = v.split(';').next().unwrap_or("").trim();
    media.eq_ignore_ascii_case("application/json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_json_media_types_are_json() {
        let h = |s: &'static str| hyper::header::HeaderValue::from_static(s);
        assert!(is_json(Some(&h("application/json"))));
        assert!(is_json(Some(&h("Application/JSON; charset=utf-8"))));
        assert!(!is_json(Some(&h("text/plain"))));
        assert!(!is_json(Some(&h("application/jsonp"))));
        assert!(!is_json(None));
    }
}
