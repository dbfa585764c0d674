//! User-id sync: partners learn this browser's id so that their records and
//! ours can be joined. `/getuid?URL` and `/getuidnb?URL` redirect to the
//! partner with the id in the URL, `/getuidj` answers JSON to the partner's
//! script (CORS), `/getuidp?callback=NAME` answers JSONP.
//!
//! An id is handed out only where a pixel would read it: never with
//! `Sec-GPC: 1`, to an opted-out browser, or without storage consent; the
//! partner then gets `0`. Only hosts on `sync.allowed_hosts` receive
//! anything: an id sent to any URL would let any page learn (and leak) its
//! visitors' ids. Refusals are fixed text: nothing of the request is
//! reflected.

use std::borrow::Cow;

use hyper::header::{HeaderMap, HeaderValue, HOST, SET_COOKIE};
use hyper::{Request, Response, StatusCode};

use super::app::Live;
use super::cookie::Identity;
use super::response::{self, Body};
use super::App;
use crate::config::redirect::RedirectError;
use crate::event::Warnings;
use crate::ids::UserId;
use crate::pixel::consent;
use crate::pixel::query::{self, Query};
use crate::telemetry::metric::{self, SyncAnswer, SyncRoute};

/// The id a partner gets when it may not have the real one.
const ZERO: &str = "0";

/// The placeholder a partner writes in its URL where the id goes.
const PLACEHOLDER: &str = "$UID";

/// Why a request was refused: the one line the browser gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    Off,
    HostNotAllowed,
    NotAUrl,
    Callback,
}

impl Refusal {
    fn response(self) -> Response<Body> {
        let (status, text) = match self {
            // 404: with sync off the routes do not exist for partners.
            Refusal::Off => (StatusCode::NOT_FOUND, "user-id sync is not configured\n"),
            Refusal::HostNotAllowed => (
                StatusCode::BAD_REQUEST,
                "sync target refused: host not on sync.allowed_hosts\n",
            ),
            Refusal::NotAUrl => (
                StatusCode::BAD_REQUEST,
                "sync target refused: not a valid URL\n",
            ),
            Refusal::Callback => (
                StatusCode::BAD_REQUEST,
                "callback must be a plain JavaScript identifier\n",
            ),
        };
        response::text(status, text)
    }
}

/// Answers one sync request (GET or HEAD; the router checked the method).
pub fn answer<B>(req: &Request<B>, app: &App, route: SyncRoute) -> Response<Body> {
    let live = app.live.load();
    let (resp, answer) = match respond(req, app, &live, route) {
        Ok(answered) => answered,
        Err(refusal) => (refusal.response(), SyncAnswer::Refused),
    };
    metric::usersync_request(route, answer);
    resp
}

fn respond<B>(
    req: &Request<B>,
    app: &App,
    live: &Live,
    route: SyncRoute,
) -> Result<(Response<Body>, SyncAnswer), Refusal> {
    if live.sync_hosts.is_empty() {
        return Err(Refusal::Off);
    }
    let raw = req.uri().query().unwrap_or("");
    let headers = req.headers();
    match route {
        SyncRoute::GetUid | SyncRoute::GetUidNb => {
            let target = target(raw, live)?;
            // The whole query is the partner's URL: no consent parameter of
            // ours can come with it, so where consent is enforced it cannot
            // be known, and no id is read.
            let storage = live.tcf_vendor.is_none();
            let issue = route == SyncRoute::GetUidNb;
            let (identity, cookie) = identify(headers, app, storage, issue);
            let uid = shown(identity, issue);
            let mut resp = response::redirect(with_uid(&target, uid.as_deref().unwrap_or(ZERO)));
            if let Some(cookie) = cookie {
                resp.headers_mut().insert(SET_COOKIE, cookie);
            }
            Ok((resp, answered(&uid)))
        }
        SyncRoute::GetUidJ => {
            let uid = read_only_uid(raw, headers, app, live);
            let mut resp = response::json(StatusCode::OK, json(uid.as_deref()).into_bytes());
            cors(&mut resp, headers, &live.sync_origins);
            Ok((resp, answered(&uid)))
        }
        SyncRoute::GetUidP => {
            let name = callback(raw).ok_or(Refusal::Callback)?;
            // A script answer is readable by whatever page includes it (no
            // CORS applies): the real id goes only to a page on a partner's
            // host, as its `Referer` shows; any other page, or one that
            // sends no `Referer`, gets `0`.
            let partner_page = headers
                .get(hyper::header::REFERER)
                .and_then(|r| r.to_str().ok())
                .is_some_and(|r| live.sync_hosts.validate(r).is_ok());
            let uid = partner_page
                .then(|| read_only_uid(raw, headers, app, live))
                .flatten();
            let script = format!("{name}({});", json(uid.as_deref()));
            Ok((response::javascript(script), answered(&uid)))
        }
    }
}

fn answered(uid: &Option<String>) -> SyncAnswer {
    if uid.is_some() {
        SyncAnswer::Uid
    } else {
        SyncAnswer::Zero
    }
}

/// The id `/getuidj` and `/getuidp` hand out: their query may carry the
/// consent parameters (`gdpr`, `gdpr_consent`), decided as on a pixel.
fn read_only_uid(raw: &str, headers: &HeaderMap, app: &App, live: &Live) -> Option<String> {
    let storage = match Query::parse(raw, app.max_query_bytes) {
        Ok(q) => consent::read(&q, live.tcf_vendor, &mut Warnings::default()).1,
        // Too long to read its consent: not known, so not allowed.
        Err(_) => consent::Allowed {
            storage: false,
            measurement: false,
        },
    }
    .storage;
    shown(identify(headers, app, storage, false).0, false)
}

/// Who the browser is, as a pixel decides it; with `issue`, a browser
/// without an id gets one (the cookie to set is returned).
fn identify(
    headers: &HeaderMap,
    app: &App,
    storage: bool,
    issue: bool,
) -> (Identity, Option<HeaderValue>) {
    let gpc = headers.get("sec-gpc").is_some_and(|v| v.as_bytes() == b"1");
    let identity = if gpc {
        Identity::Private
    } else if !storage {
        Identity::Unconsented
    } else {
        app.cookies.identify(headers)
    };
    let cookie = match identity {
        // A renewed id is re-signed only where cookies are set at all: the
        // read-only routes never set one.
        Identity::Issued(uid) | Identity::Renewed(uid) if issue => {
            let host = headers.get(HOST).and_then(|h| h.to_str().ok());
            Some(app.cookies.issue(uid, host))
        }
        _ => None,
    };
    (identity, cookie)
}

/// The id a partner may be given (None: `0`). A freshly made id is only
/// real if it is issued with the answer; otherwise it would be new on
/// every request.
fn shown(identity: Identity, issued: bool) -> Option<String> {
    let uid: Option<UserId> = match identity {
        Identity::Known(u) | Identity::Renewed(u) => Some(u),
        Identity::Issued(u) if issued => Some(u),
        _ => None,
    };
    uid.map(|u| u.to_hex().as_str().to_string())
}

/// The partner's URL from the raw query: taken as it is, or decoded once
/// when the whole URL was percent-encoded (`https%3A%2F%2F...`, as an ad
/// server's macro encodes it). It must pass the redirect validator with its
/// host on `sync.allowed_hosts`.
fn target<'a>(raw: &'a str, live: &Live) -> Result<Cow<'a, str>, Refusal> {
    let head = raw.get(..8).unwrap_or(raw).to_ascii_lowercase();
    let encoded = head.starts_with("http%3a") || head.starts_with("https%3a");
    let url = if encoded {
        query::decode(raw, false).map_err(|_| Refusal::NotAUrl)?
    } else {
        Cow::Borrowed(raw)
    };
    match live.sync_hosts.validate(&url) {
        Ok(()) => Ok(url),
        Err(RedirectError::HostNotAllowed) => Err(Refusal::HostNotAllowed),
        Err(_) => Err(Refusal::NotAUrl),
    }
}

/// `url` with every `$UID` replaced by `uid`, or `uid=<uid>` added to its
/// query (before any fragment) when it has none.
fn with_uid(url: &str, uid: &str) -> String {
    if url.contains(PLACEHOLDER) {
        return url.replace(PLACEHOLDER, uid);
    }
    let (base, fragment) = match url.find('#') {
        Some(i) => url.split_at(i),
        None => (url, ""),
    };
    let separator = match base.find('?') {
        None => "?",
        Some(_) if base.ends_with('?') || base.ends_with('&') => "",
        Some(_) => "&",
    };
    let mut out = String::with_capacity(url.len() + uid.len() + 5);
    out.push_str(base);
    out.push_str(separator);
    out.push_str("uid=");
    out.push_str(uid);
    out.push_str(fragment);
    out
}

/// `{"uid":"..."}`: the id is hex or `0`, nothing to escape.
fn json(uid: Option<&str>) -> String {
    format!("{{\"uid\":\"{}\"}}", uid.unwrap_or(ZERO))
}

/// The CORS headers, only for an origin on `sync.cors_origins` (compared
/// exactly): with credentials allowed, a wildcard or a reflected origin
/// would let any site read its visitors' ids.
fn cors(resp: &mut Response<Body>, headers: &HeaderMap, origins: &[String]) {
    let Some(origin) = headers.get(hyper::header::ORIGIN) else {
        return;
    };
    if !origins.iter().any(|o| o.as_bytes() == origin.as_bytes()) {
        return;
    }
    let h = resp.headers_mut();
    h.insert(hyper::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    h.insert(
        hyper::header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    h.insert(hyper::header::VARY, HeaderValue::from_static("Origin"));
}

/// The `callback` parameter (its first occurrence), if it is a plain
/// identifier: anything else could be script of the caller's choosing run
/// in the partner's page with our answer.
fn callback(raw: &str) -> Option<Cow<'_, str>> {
    let value = raw
        .split('&')
        .find_map(|pair| pair.strip_prefix("callback="))?;
    // `$` may come encoded; decoding once cannot smuggle anything past the
    // check below, which is made on the decoded name.
    let name = query::decode(value, false).ok()?;
    is_identifier_path(&name).then_some(name)
}

/// `^[A-Za-z_$][A-Za-z0-9_$]{0,63}(\.[A-Za-z_$][A-Za-z0-9_$]{0,63}){0,3}$`.
fn is_identifier_path(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    parts.len() <= 4
        && parts.iter().all(|p| {
            let b = p.as_bytes();
            let word = |c: &u8| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'$';
            (1..=64).contains(&b.len()) && !b[0].is_ascii_digit() && b.iter().all(word)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_is_replaced() {
        assert_eq!(
            with_uid("https://p.example/s?a=$UID&b=$UID", "ab12"),
            "https://p.example/s?a=ab12&b=ab12"
        );
        assert_eq!(
            with_uid("https://p.example/u/$UID/x", "0"),
            "https://p.example/u/0/x"
        );
    }

    #[test]
    fn without_a_placeholder_the_uid_is_appended() {
        let cases = [
            ("https://p.example", "https://p.example?uid=7"),
            ("https://p.example/s", "https://p.example/s?uid=7"),
            ("https://p.example/s?a=1", "https://p.example/s?a=1&uid=7"),
            ("https://p.example/s?", "https://p.example/s?uid=7"),
            ("https://p.example/s?a=1&", "https://p.example/s?a=1&uid=7"),
            ("https://p.example/s#f", "https://p.example/s?uid=7#f"),
            (
                "https://p.example/s?a=1#f?g",
                "https://p.example/s?a=1&uid=7#f?g",
            ),
        ];
        for (url, want) in cases {
            assert_eq!(with_uid(url, "7"), want, "{url}");
        }
    }

    fn live(hosts: &[&str]) -> Live {
        let mut cfg = crate::config::Config::default();
        cfg.sync.allowed_hosts = crate::config::AllowList::new(hosts).unwrap();
        Live::new(&cfg, None)
    }

    #[test]
    fn targets_are_taken_raw_or_decoded_once() {
        let l = live(&["partner.example", "*.cdn.example"]);
        assert_eq!(
            target("https://partner.example/s?u=$UID", &l).unwrap(),
            "https://partner.example/s?u=$UID"
        );
        assert_eq!(
            target("https%3A%2F%2Fpartner.example%2Fs%3Fu%3D%24UID", &l).unwrap(),
            "https://partner.example/s?u=$UID"
        );
        assert_eq!(
            target("HTTPS%3a%2F%2Fx.cdn.example%2F", &l),
            Err(Refusal::NotAUrl),
            "decoded, then refused by the validator (upper-case scheme)"
        );
        // Decoded at most once: a doubly encoded URL stays encoded inside.
        assert_eq!(
            target("https%3A%2F%2Fpartner.example%2F%253F", &l).unwrap(),
            "https://partner.example/%3F"
        );
    }

    #[test]
    fn targets_off_the_list_or_malformed_are_refused() {
        let l = live(&["partner.example"]);
        for t in [
            "https://evil.example/",
            "https://partner.example.evil.example/",
        ] {
            assert_eq!(target(t, &l), Err(Refusal::HostNotAllowed), "{t}");
        }
        for t in [
            "",
            "javascript:alert(1)",
            "https://partner.example@evil.example/",
            "//partner.example/",
            "https%3A%2F%2Fpartner.example%0D%0ASet-Cookie:x",
            "https%3A%2F%2Fpartner.example%ZZ",
            "https://partner.example/a b",
        ] {
            assert_eq!(target(t, &l), Err(Refusal::NotAUrl), "{t}");
        }
    }

    #[test]
    fn callbacks_must_be_plain_identifiers() {
        for ok in ["cb", "cb_1.x", "$", "_a.$b.c1.d", "jQuery123_456", "a%24b"] {
            assert!(callback(&format!("callback={ok}")).is_some(), "{ok}");
        }
        let long = "a".repeat(65);
        for bad in [
            "alert(1)//",
            "alert%281%29",
            "",
            "1a",
            "a..b",
            "a.",
            ".a",
            "a.b.c.d.e",
            "a-b",
            "a%0Ab",
            "é",
            long.as_str(),
        ] {
            assert!(callback(&format!("x=1&callback={bad}")).is_none(), "{bad}");
        }
        assert!(callback("cb=x").is_none(), "no callback at all");
        assert_eq!(callback("callback=a&callback=b").unwrap(), "a");
        assert!(is_identifier_path(&"a".repeat(64)));
    }

    #[test]
    fn the_json_is_fixed_text() {
        assert_eq!(json(None), r#"{"uid":"0"}"#);
        assert_eq!(json(Some("ab")), r#"{"uid":"ab"}"#);
    }

    #[test]
    fn bad_sync_keys_stop_the_load_by_name() {
        let text = "[sync]\nallowed_hosts = [\"partner.example\"]\n\
            cors_origins = [\"https://a.example\", \"https://p.example/\", \"ftp://p.example\", \"http://localhost:8080\", \"https://P.example\"]\n";
        let err = crate::config::parse(text, "t").unwrap_err().to_string();
        for i in [1, 2, 4] {
            assert!(err.contains(&format!("sync.cors_origins[{i}]: ")), "{err}");
        }
        assert!(!err.contains("cors_origins[0]") && !err.contains("cors_origins[3]"));
        assert!(err.contains("e.g. \"https://partner.example\""), "{err}");
        let err = crate::config::parse("[sync]\nallowed_hosts = [\"a b\"]\n", "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sync.allowed_hosts[0]"), "{err}");
        let pixels =
            "pixels = [{ url = \"https://partner.example/p?u=${UID}\", format = \"img\" }, \
            { url = \"https://evil.example/p?u=${UID}\", format = \"js\" }]\n";
        let err = crate::config::parse(
            &format!("[sync]\nallowed_hosts = [\"partner.example\"]\n{pixels}"),
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("sync.pixels[1].url"), "{err}");
        assert!(!err.contains("sync.pixels[0]"), "{err}");
        let err = crate::config::parse(&format!("[sync]\n{pixels}"), "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sync.pixels: sync pixels need"), "{err}");
    }
}
