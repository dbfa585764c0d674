//! Building responses. Every pixel response is uncacheable, so a browser
//! fires the pixel again on the next page view.

use std::cell::RefCell;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    HeaderMap, HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE, EXPIRES, LOCATION, PRAGMA,
};
use hyper::{Response, StatusCode};

use crate::pixel::{Location, Reply};

/// The 43-byte transparent 1x1 GIF.
pub const GIF: &[u8; 43] = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff\x21\xf9\x04\x01\x00\x00\x00\x00\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02\x44\x01\x00\x3b";

pub type Body = Full<Bytes>;

fn no_cache(resp: &mut Response<Body>) {
    let h = resp.headers_mut();
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate, private"),
    );
    h.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(EXPIRES, HeaderValue::from_static("0"));
}

thread_local! {
    /// Header maps that requests answered on this thread gave back, for
    /// responses to reuse. hyper parses a connection's next request into
    /// the header map of the response before it, so with each response
    /// taking a map from here and each request giving its own back, the
    /// same few maps go round and no answer allocates one.
    static SPARE_MAPS: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// Spare maps kept per thread: two go round per connection in the steady
/// state; the rest cover bursts without keeping memory for every map ever
/// seen.
const SPARE_MAPS_KEPT: usize = 16;

/// Largest map kept, in headers it has room for: a browser's request and an
/// answer fit. A map never shrinks, so one grown by a request with a
/// hundred headers is let go rather than passed round connections for good.
const SPARE_MAP_HEADERS: usize = 64;

/// A request's header map, no longer needed, given back for a response on
/// this thread to reuse (emptied; its memory kept).
pub fn give_back(mut map: HeaderMap) {
    if map.capacity() > SPARE_MAP_HEADERS {
        return;
    }
    map.clear();
    SPARE_MAPS.with(|spare| {
        if let Ok(mut spare) = spare.try_borrow_mut() {
            if spare.len() < SPARE_MAPS_KEPT {
                spare.push(map);
            }
        }
    });
}

/// An empty header map: a spare one if this thread has one.
fn spare_map() -> HeaderMap {
    SPARE_MAPS
        .with(|spare| spare.try_borrow_mut().ok().and_then(|mut s| s.pop()))
        .unwrap_or_default()
}

fn with(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(Full::new(body));
    *resp.headers_mut() = spare_map();
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    no_cache(&mut resp);
    resp
}

/// Prometheus text (no-store like every answer: a cache must not serve
/// yesterday's counters).
pub fn metrics(text: String) -> Response<Body> {
    with(
        StatusCode::OK,
        "text/plain; version=0.0.4",
        Bytes::from(text),
    )
}

pub fn html(page: &'static str) -> Response<Body> {
    with(
        StatusCode::OK,
        "text/html; charset=utf-8",
        Bytes::from_static(page.as_bytes()),
    )
}

pub fn gif() -> Response<Body> {
    with(StatusCode::OK, "image/gif", Bytes::from_static(GIF))
}

/// 302 to a validated URL; the GIF if the URL cannot be a header value
/// (the validator already refuses that, this is the last line). The
/// [`Location`]'s bytes become the header value without a copy (a `String`
/// is first written into the thread's URL buffer, see [`Location::copied`]).
pub fn redirect(url: impl Into<Location>) -> Response<Body> {
    match HeaderValue::from_maybe_shared(url.into().into_bytes()) {
        Ok(location) => {
            let mut resp = with(StatusCode::FOUND, "text/plain; charset=utf-8", Bytes::new());
            resp.headers_mut().insert(LOCATION, location);
            resp
        }
        Err(_) => gif(),
    }
}

pub fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    with(
        status,
        "text/plain; charset=utf-8",
        Bytes::from_static(body.as_bytes()),
    )
}

/// A JSON answer (the server-side API's).
pub fn json(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    with(status, "application/json", Bytes::from(body))
}

/// A script built at run time (JSONP); `nosniff`, so a browser runs it
/// only as the script it is declared to be.
pub fn javascript(script: String) -> Response<Body> {
    let mut resp = with(
        StatusCode::OK,
        "application/javascript; charset=utf-8",
        Bytes::from(script),
    );
    resp.headers_mut().insert(
        hyper::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// A plain-text answer built at run time (a reload's report).
pub fn owned_text(status: StatusCode, body: String) -> Response<Body> {
    with(status, "text/plain; charset=utf-8", Bytes::from(body))
}

pub fn reply(reply: Reply) -> Response<Body> {
    match reply {
        Reply::Gif => gif(),
        Reply::Redirect(url) => redirect(url),
        Reply::Js(script) => with(
            StatusCode::OK,
            "application/javascript; charset=utf-8",
            Bytes::from(script.render()),
        ),
        Reply::BadRequest(reason) => {
            let mut body = String::with_capacity(reason.len() + 1);
            body.push_str(reason);
            body.push('\n');
            with(
                StatusCode::BAD_REQUEST,
                "text/plain; charset=utf-8",
                Bytes::from(body),
            )
        }
    }
}

/// A refusal after which the connection is closed.
pub fn closing(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut resp = text(status, body);
    resp.headers_mut()
        .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

pub fn method_not_allowed() -> Response<Body> {
    let mut resp = text(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed: use GET or HEAD\n",
    );
    resp.headers_mut()
        .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
    resp
}

pub fn not_found() -> Response<Body> {
    text(StatusCode::NOT_FOUND, "not found\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gif_is_a_43_byte_gif89a() {
        assert_eq!(GIF.len(), 43);
        assert!(GIF.starts_with(b"GIF89a"));
        assert_eq!(GIF[42], 0x3b);
    }

    #[test]
    fn every_pixel_response_is_uncacheable() {
        for resp in [
            gif(),
            redirect("https://a.example/".to_string()),
            reply(Reply::BadRequest("x")),
        ] {
            let h = resp.headers();
            assert_eq!(
                h[CACHE_CONTROL],
                "no-cache, no-store, must-revalidate, private"
            );
            assert_eq!(h[PRAGMA], "no-cache");
            assert_eq!(h[EXPIRES], "0");
        }
        assert_eq!(gif().headers()[CONTENT_TYPE], "image/gif");
    }

    #[test]
    fn a_header_map_given_back_is_reused_unless_grown_large() {
        // Each test runs on a thread of its own: its spare list is empty.
        give_back(HeaderMap::with_capacity(1_000));
        assert_eq!(spare_map().capacity(), 0, "a large map is let go");
        let mut map = HeaderMap::with_capacity(8);
        map.insert(PRAGMA, HeaderValue::from_static("x"));
        give_back(map);
        let reused = spare_map();
        assert!(reused.capacity() >= 8 && reused.is_empty(), "kept, emptied");
        let resp = gif();
        assert_eq!(resp.headers()[CONTENT_TYPE], "image/gif");
    }

    #[test]
    fn a_url_that_is_no_header_value_falls_back_to_the_gif() {
        let resp = redirect("https://a.example/\r\nSet-Cookie: x=1".to_string());
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(resp.headers().get(LOCATION).is_none());
    }
}
