//! `/optout`: a user's choice, so only the user can make it. A page cannot
//! opt its visitors out with an `<img>` or a `<script>`, and a browser's
//! prefetch does not either. Browsers that send fetch metadata
//! (`Sec-Fetch-Dest`) get a page with a button that confirms by a same-site
//! POST; a plain link in a client without fetch metadata (older browsers,
//! `curl`) still opts out at once.

use hyper::header::{HeaderMap, HOST, SET_COOKIE};
use hyper::{Method, Response, StatusCode};

use super::cookie::{Cookies, Identity};
use super::response::{self, Body};
use crate::config::ivt::is_prefetch;
use crate::ids::UserId;

const DONE: &str =
    "You have opted out: this browser's visits are no longer tracked or attributed.\n";

/// The confirmation page; nothing from the request is written into it.
const PAGE: &str =
    "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Opt out</title>\
<meta name=\"viewport\" content=\"width=device-width\"></head><body>\
<h1>Opt out of tracking</h1>\
<p>Opting out stops this browser's visits from being tracked or attributed. \
It is kept in a cookie: clearing cookies undoes it.</p>\
<form method=\"post\" action=\"/optout\"><button type=\"submit\">Opt out</button></form>\
</body></html>\n";

/// What `/optout` answers, by how it was asked, and the id that just opted
/// out (from a valid cookie) so its data can be forgotten.
pub fn answer(
    method: &Method,
    headers: &HeaderMap,
    cookies: &Cookies,
) -> (Response<Body>, Option<UserId>) {
    let page = |resp| (resp, None);
    let fetch = |name: &str| headers.get(name).map(|v| v.as_bytes());
    if method == Method::POST {
        // The page's own form posts same-origin; anything cross-site is
        // another page deciding for the user.
        return match fetch("sec-fetch-site") {
            None | Some(b"same-origin" | b"same-site" | b"none") => opted_out(headers, cookies),
            Some(_) => page(response::text(
                StatusCode::FORBIDDEN,
                "opt-out must be confirmed on this site's own page: open /optout\n",
            )),
        };
    }
    if is_prefetch(headers) {
        return page(response::html(PAGE));
    }
    match fetch("sec-fetch-dest") {
        None => opted_out(headers, cookies),
        Some(b"document") => page(response::html(PAGE)),
        Some(_) => page(response::text(
            StatusCode::FORBIDDEN,
            "opt-out is a page to open, not a resource to load: open /optout\n",
        )),
    }
}

fn opted_out(headers: &HeaderMap, cookies: &Cookies) -> (Response<Body>, Option<UserId>) {
    let host = headers.get(HOST).and_then(|h| h.to_str().ok());
    let was = match cookies.identify(headers) {
        Identity::Known(uid) | Identity::Renewed(uid) => Some(uid),
        _ => None,
    };
    let mut resp = response::text(StatusCode::OK, DONE);
    resp.headers_mut().insert(SET_COOKIE, cookies.opt_out(host));
    (resp, was)
}
