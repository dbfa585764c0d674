//! Pixel requests to events: one module per pixel type, each turning a parsed
//! query into an [`Event`] and the [`Reply`] the browser gets.

mod b64;
pub mod click;
pub mod click_id;
pub mod consent;
pub mod conversion;
pub mod decimal;
pub mod impression;
pub mod js;
pub mod location;
pub mod query;
pub mod segment;
pub mod server_adjustment;
pub mod server_conversion;
pub mod source_click;
pub mod tcf;
pub mod usersync;

use std::borrow::Cow;

use crate::config::AllowList;
use crate::config::Catalog;
use crate::config::FireList;
use crate::event::{Body, Common, Event, Invalid};
use crate::ids::UserId;
pub use location::Location;
use query::{Key, Param, Query, QueryError};

/// Which pixel a path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PixelKind {
    Impression,
    Click,
    Conversion,
    Segment,
    /// `/mapuid`: a partner's id for the browser.
    UserSync,
}

/// What the browser gets back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The 1x1 transparent GIF.
    Gif,
    /// 302 to this absolute URL.
    Redirect(Location),
    /// A script that fires these pixels (possibly none).
    Js(js::Script),
    /// 400 with a one-line reason (a click with nowhere to go).
    BadRequest(&'static str),
}

/// Everything a handler needs besides the request.
pub struct Context<'c> {
    pub catalog: &'c Catalog,
    pub allow: &'c AllowList,
    /// Signs the click ids of click trackers with `append_click_id` and
    /// checks the ones conversions hand back.
    pub click_ids: &'c click_id::ClickIds,
    /// `redirect.source_click_param`: the traffic source's click id on a
    /// click tracker request.
    pub source_click_param: &'c str,
}

/// The request as the pixel layer sees it.
pub struct PixelRequest<'a> {
    pub kind: PixelKind,
    pub path: &'a str,
    /// The raw query, without `?`.
    pub query: &'a str,
    /// The parsed query, or why it could not be parsed.
    pub parsed: Result<Query<'a>, QueryError>,
    /// Identity, address and headers, filled in by the HTTP layer.
    pub common: Common<'a>,
}

/// An event and its reply.
pub struct Outcome<'a> {
    pub event: Event<'a>,
    pub reply: Reply,
}

/// Routes a request to its pixel's handler.
pub fn handle<'a>(req: PixelRequest<'a>, ctx: &Context<'a>) -> Outcome<'a> {
    let PixelRequest {
        kind,
        path,
        query,
        parsed,
        common,
    } = req;
    let q = match parsed {
        Ok(q) => q,
        Err(QueryError::TooLong) => {
            let event = Event {
                common,
                body: Body::Invalid(Invalid::new(path, query, "query_too_long")),
            };
            let reply = if kind == PixelKind::Click {
                Reply::BadRequest("query string too long")
            } else {
                Reply::Gif
            };
            return Outcome { event, reply };
        }
    };
    let r = Request {
        path,
        query,
        q,
        common,
    };
    match kind {
        PixelKind::Impression => impression::handle(r, ctx),
        PixelKind::Click => click::handle(r, ctx),
        PixelKind::Conversion => conversion::handle(r, ctx),
        PixelKind::Segment => segment::handle(r, ctx),
        PixelKind::UserSync => usersync::handle(r, ctx),
    }
}

/// A parsed request with the helpers all handlers share.
pub struct Request<'a> {
    pub path: &'a str,
    pub query: &'a str,
    pub q: Query<'a>,
    pub common: Common<'a>,
}

/// Where a `redir` parameter may send the browser.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// No `redir` was given.
    Absent,
    /// A valid target, macros filled in.
    Go(String),
    /// A `redir` was given but refused: the image form answers the GIF.
    Refused,
}

/// The response form asked for with `t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    Image,
    Script,
}

impl<'a> Request<'a> {
    pub fn warn(&mut self, code: &'static str) {
        self.common.warnings.push(code);
    }

    /// A decoded optional value; a malformed one is a warning and absent.
    pub fn opt(&mut self, key: Key, invalid: &'static str) -> Option<Cow<'a, str>> {
        match self.q.param(key) {
            Param::Present(v) => Some(v),
            Param::Absent => None,
            Param::Malformed => {
                self.warn(invalid);
                None
            }
        }
    }

    /// `t=1` is JavaScript, `t=2` or none the image.
    pub fn form(&mut self) -> Form {
        match self.opt(Key::T, "t_invalid").as_deref() {
            None | Some("2") => Form::Image,
            Some("1") => Form::Script,
            Some(_) => {
                self.warn("t_invalid");
                Form::Image
            }
        }
    }

    /// The `redir` target as given (for the event) and what to do with it.
    pub fn redir(&mut self, allow: &AllowList) -> (Option<Cow<'a, str>>, Target) {
        match self.q.redir() {
            Param::Absent => (None, Target::Absent),
            Param::Malformed => {
                self.warn("redir_invalid");
                (self.q.raw_redir().map(Cow::Borrowed), Target::Refused)
            }
            Param::Present(target) => {
                // Passed on exactly as it came: macros are expanded only in
                // URLs from the config. Expanding `${UID}` here would hand
                // the user's id to whatever destination a page names.
                if allow.validate(&target).is_ok() {
                    let url = target.to_string();
                    (Some(target), Target::Go(url))
                } else {
                    self.warn("redir_rejected");
                    (Some(target), Target::Refused)
                }
            }
        }
    }

    /// Turns the request into an invalid event with `reason`.
    pub fn invalid(&self, reason: &'static str) -> Body<'a> {
        Body::Invalid(Invalid::new(self.path, self.query, reason))
    }

    /// The event and reply a handler ends with.
    pub fn finish(self, body: Body<'a>, reply: Reply) -> Outcome<'a> {
        Outcome {
            event: Event {
                common: self.common,
                body,
            },
            reply,
        }
    }

    /// Ends the request as an invalid event, still answering in its form.
    pub fn reject(self, reason: &'static str, form: Form, target: Target) -> Outcome<'a> {
        let body = self.invalid(reason);
        self.finish(body, fallback_reply(form, target))
    }

    /// `cachebuster`, kept only as printable ASCII of at most 64 bytes
    /// (else null with `cachebuster_invalid`).
    pub fn cachebuster(&mut self) -> Option<Cow<'a, str>> {
        let v = self.opt(query::Key::Cachebuster, "cachebuster_invalid")?;
        if crate::event::text::is_cachebuster(&v) {
            Some(v)
        } else {
            self.warn("cachebuster_invalid");
            None
        }
    }

    /// A required numeric id: `missing_id` or `bad_id` when it cannot be read.
    pub fn id<T>(&mut self, parse: fn(&str) -> Option<T>) -> Result<T, &'static str> {
        match self.opt(Key::Id, "id_invalid") {
            None => Err("missing_id"),
            Some(v) => parse(&v).ok_or("bad_id"),
        }
    }
}

/// Fills in the macros a configured URL (piggyback, third-party pixel,
/// `click_url`) may carry: `${UID}` and `${USER_ID}` (the user id, empty when
/// there is none) and `${CACHEBUSTER}`. Never called on request data.
pub fn expand(url: &str, uid: Option<UserId>) -> String {
    if !url.contains("${") {
        return url.to_string();
    }
    with_macro_values(uid, |uid, cachebuster| {
        // One pass, one allocation: this runs for every piggybacked pixel.
        let mut out = String::with_capacity(url.len() + uid.len());
        fill_macros(url, uid, cachebuster, |piece| out.push_str(piece));
        out
    })
}

/// Calls `then` with the macros' values for one URL: the user id in hex
/// (empty when there is none) and a cachebuster. One value per URL, as
/// every occurrence is the same request.
fn with_macro_values<R>(uid: Option<UserId>, then: impl FnOnce(&str, &str) -> R) -> R {
    let hex = uid.map(|u| u.to_hex());
    let uid = hex.as_ref().map_or("", |h| h.as_str());
    let mut buffer = itoa::Buffer::new();
    then(uid, buffer.format(rand::random::<u32>()))
}

/// Hands `url` to `write` piece by piece, with `${UID}` and `${USER_ID}`
/// as `uid` and `${CACHEBUSTER}` as `cachebuster`; other `${` are kept.
fn fill_macros(url: &str, uid: &str, cachebuster: &str, mut write: impl FnMut(&str)) {
    let mut rest = url;
    while let Some(at) = rest.find("${") {
        write(&rest[..at]);
        rest = &rest[at..];
        let filled = [
            ("${UID}", uid),
            ("${USER_ID}", uid),
            ("${CACHEBUSTER}", cachebuster),
        ]
        .into_iter()
        .find_map(|(name, value)| rest.strip_prefix(name).map(|after| (after, value)));
        match filled {
            Some((after, value)) => {
                write(value);
                rest = after;
            }
            None => {
                write("${");
                rest = &rest[2..];
            }
        }
    }
    write(rest);
}

/// The image reply: `redir` first, else the one image piggyback, else the
/// GIF. A refused `redir` answers the GIF.
pub fn image_reply(redir: Target, pixels: &FireList, uid: Option<UserId>) -> Reply {
    match (redir, pixels.image()) {
        (Target::Go(url), _) => Reply::Redirect(url.into()),
        (Target::Absent, Some(p)) => Reply::Redirect(Location::expand(&p.url, uid)),
        (Target::Absent | Target::Refused, _) => Reply::Gif,
    }
}

/// The JavaScript reply: every configured pixel. Nothing from the request
/// is written into the script: a `redir` is recorded with the event but not
/// fired (the image form follows it).
pub fn script_reply(pixels: &FireList, uid: Option<UserId>) -> Reply {
    let mut s = js::Script::default();
    for p in &pixels.all {
        s.push(p.format, expand(&p.url, uid));
    }
    Reply::Js(s)
}

/// Adds the partners' sync pixels (`sync.pixels`) to a JavaScript reply:
/// never to the image form (one redirect at most, kept for the pixel's own
/// piggyback), and never without an id of ours to hand over.
pub fn add_sync(reply: &mut Reply, sync: &FireList, uid: Option<UserId>) {
    if let (Reply::Js(script), Some(_)) = (reply, uid) {
        for p in &sync.all {
            script.push(p.format, expand(&p.url, uid));
        }
    }
}

/// The reply in the form asked for.
pub fn reply_in(form: Form, redir: Target, pixels: &FireList, uid: Option<UserId>) -> Reply {
    match form {
        Form::Image => image_reply(redir, pixels, uid),
        Form::Script => script_reply(pixels, uid),
    }
}

/// The reply to a request that became an invalid event: still a working
/// response in the form asked for, following a valid `redir`.
pub fn fallback_reply(form: Form, redir: Target) -> Reply {
    reply_in(form, redir, &FireList::default(), None)
}

#[cfg(test)]
mod tests {
    use super::expand;
    use crate::ids::UserId;

    #[test]
    fn expand_fills_every_macro_in_one_pass() {
        let uid = UserId::generate();
        let hex = uid.to_hex();
        let got = expand(
            "https://x.test/p?u=${UID}&v=${USER_ID}&cb=${CACHEBUSTER}&again=${CACHEBUSTER}&k=${OTHER}&end=${",
            Some(uid),
        );
        let (head, tail) = got.split_once("&cb=").unwrap();
        assert_eq!(
            head,
            format!("https://x.test/p?u={}&v={}", hex.as_str(), hex.as_str())
        );
        let (cb, tail) = tail.split_once("&again=").unwrap();
        assert!(
            !cb.is_empty() && cb.bytes().all(|b| b.is_ascii_digit()),
            "{cb}"
        );
        assert_eq!(
            tail,
            format!("{cb}&k=${{OTHER}}&end=${{"),
            "one value per URL; others kept"
        );
        assert_eq!(expand("https://x.test/${UID}/", None), "https://x.test//");
        assert_eq!(expand("https://x.test/plain", None), "https://x.test/plain");
    }
}
