//! One request in, one response out: routing, identity, the pixel handler,
//! publishing the event.

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::header::{
    HeaderMap, HeaderName, HOST, REFERER, SET_COOKIE, TRANSFER_ENCODING, USER_AGENT,
};
use hyper::{Method, Request, Response, StatusCode};

use super::api::ApiRoute;
use super::client_ip::client_ip;
use super::cookie::Identity;
use super::reload_queue::Ticket;
use super::response::{self, Body};
use super::{App, Live};
use crate::delivery::Receipt;
use crate::event::{Common, Consent, Warnings};
use crate::ids::EventId;
use crate::pixel::query::{Key, Query};
use crate::pixel::{self, consent, Context, PixelKind, PixelRequest};
use crate::telemetry::metric::{self, RouteLabel, SyncRoute};

/// Which listener a request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Browsers and ad servers: pixels, `/optout`, `/robots.txt`, and the
    /// probes for load balancers that can only reach this port. Never
    /// `/metrics`: a public pixel host should not tell the internet its
    /// traffic, error rates and queue depths.
    Public,
    /// Operators (`server.admin_listen`): `/metrics`, the probes, and
    /// `POST /-/reload`.
    Admin,
}

enum Route {
    Pixel(PixelKind),
    OptOut,
    Health,
    Ready,
    Metrics,
    Robots,
    Reload,
    /// The server-side API (`/v1/...`): a JSON body, a bearer key.
    Api(ApiRoute),
    /// User-id sync with partners (`/getuid*`, [`super::sync`]).
    Sync(SyncRoute),
}

impl Route {
    /// The `route` label of the request metrics: a match, so a new route
    /// does not compile until it has its label.
    fn label(&self) -> RouteLabel {
        match self {
            Route::Pixel(PixelKind::Impression) => RouteLabel::Imptr,
            Route::Pixel(PixelKind::Click) => RouteLabel::Clktr,
            Route::Pixel(PixelKind::Conversion) => RouteLabel::Px,
            Route::Pixel(PixelKind::Segment) => RouteLabel::Seg,
            Route::Pixel(PixelKind::UserSync) => RouteLabel::MapUid,
            Route::OptOut => RouteLabel::OptOut,
            Route::Health => RouteLabel::Healthz,
            Route::Ready => RouteLabel::Readyz,
            Route::Metrics => RouteLabel::Metrics,
            Route::Robots => RouteLabel::Robots,
            Route::Reload => RouteLabel::Reload,
            Route::Api(ApiRoute::Conversions) => RouteLabel::V1Conversions,
            Route::Api(ApiRoute::Adjustments) => RouteLabel::V1Adjustments,
            Route::Sync(SyncRoute::GetUid) => RouteLabel::GetUid,
            Route::Sync(SyncRoute::GetUidNb) => RouteLabel::GetUidNb,
            Route::Sync(SyncRoute::GetUidJ) => RouteLabel::GetUidJ,
            Route::Sync(SyncRoute::GetUidP) => RouteLabel::GetUidP,
        }
    }
}

fn route(path: &str, role: Role) -> Option<Route> {
    Some(match (path, role) {
        ("/imptr", Role::Public) => Route::Pixel(PixelKind::Impression),
        ("/clktr" | "/clktrb", Role::Public) => Route::Pixel(PixelKind::Click),
        ("/px", Role::Public) => Route::Pixel(PixelKind::Conversion),
        ("/seg", Role::Public) => Route::Pixel(PixelKind::Segment),
        ("/mapuid", Role::Public) => Route::Pixel(PixelKind::UserSync),
        ("/optout", Role::Public) => Route::OptOut,
        ("/robots.txt", Role::Public) => Route::Robots,
        ("/healthz", _) => Route::Health,
        ("/readyz", _) => Route::Ready,
        ("/metrics", Role::Admin) => Route::Metrics,
        ("/-/reload", Role::Admin) => Route::Reload,
        ("/v1/conversions", Role::Public) => Route::Api(ApiRoute::Conversions),
        ("/v1/adjustments", Role::Public) => Route::Api(ApiRoute::Adjustments),
        ("/getuid", Role::Public) => Route::Sync(SyncRoute::GetUid),
        ("/getuidnb", Role::Public) => Route::Sync(SyncRoute::GetUidNb),
        ("/getuidj", Role::Public) => Route::Sync(SyncRoute::GetUidJ),
        ("/getuidp", Role::Public) => Route::Sync(SyncRoute::GetUidP),
        _ => return None,
    })
}

/// What a response waits for before it is sent.
pub enum Then {
    Nothing,
    /// The event to be as safe as the durability mode promises.
    Settle(Receipt),
    /// A reload's answer, which becomes the response.
    Reload(Ticket),
}

/// The hyper service function. The pixel is handled before the future is
/// made, borrowing the connection's `App`: the future owns only what it
/// waits for, so no request takes a reference on state every worker shares.
/// `local` is the address the client connected to (the admin listener's
/// `Host` check).
pub fn serve<B>(
    mut req: Request<B>,
    peer: SocketAddr,
    local: SocketAddr,
    app: &Arc<App>,
    role: Role,
) -> impl std::future::Future<Output = Result<Response<Body>, Infallible>> + Send + 'static
where
    B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let started = std::time::Instant::now();
    metric::http_in_flight(1);
    // Looked up once, outside the guard: a panicking handler's request is
    // still counted under its own route.
    let found = route(req.uri().path(), role);
    let label = found.as_ref().map_or(RouteLabel::NotFound, Route::label);
    // An API call is answered in the future: it reads its body.
    // Only an API call's future holds the app: a reference count taken per
    // pixel is a cache line every serving thread writes.
    let mut api_request = None;
    let (mut resp, then) = match (api_call(&req, app, found.as_ref()), &found) {
        (Some(refused), _) => (refused, Then::Nothing),
        (None, Some(Route::Api(api))) => {
            api_request = Some((*api, req, app.clone()));
            (response::text(StatusCode::OK, ""), Then::Nothing)
        }
        (None, _) => {
            let answered = guarded(|| respond_to(&req, peer, local, app, role, found));
            // Read to the end (the event is encoded): the request's header
            // map serves a later answer on this thread.
            response::give_back(std::mem::take(req.headers_mut()));
            answered
        }
    };
    async move {
        if let Some((api, req, app)) = api_request {
            resp = super::api::batch::answer(api, req, app).await;
        }
        match then {
            // The response waits until the event is as safe as the durability
            // mode promises: an answered pixel is never lost. A refusal is
            // counted by the receipt, never shown to the browser.
            Then::Settle(receipt) => {
                let _ = receipt.settled().await;
            }
            Then::Reload(ticket) => resp = reload_answer(ticket.answer().await),
            Then::Nothing => {}
        }
        metric::http_in_flight(-1);
        metric::http_request(
            label,
            resp.status().as_u16(),
            started.elapsed().as_secs_f64(),
        );
        Ok(resp)
    }
}

/// For an API route, the answer when the request cannot go on to read its
/// body (the limits, the method); None when it may, or for other routes.
fn api_call<B>(req: &Request<B>, app: &App, route: Option<&Route>) -> Option<Response<Body>> {
    let Some(Route::Api(api)) = route else {
        return None;
    };
    if let Some(refused) = refuse_head(req, app) {
        return Some(refused);
    }
    if req.method() != Method::POST {
        metric::api_request(api.label(), "none", 405);
        return Some(counted(
            response::method_not_allowed(),
            "method_not_allowed",
        ));
    }
    None
}

fn reload_answer(answer: Result<String, String>) -> Response<Body> {
    match answer {
        Ok(said) => response::owned_text(StatusCode::OK, said),
        Err(said) => response::owned_text(StatusCode::BAD_REQUEST, said),
    }
}

/// A bug must never show: a panicking handler still answers the GIF (and is
/// counted in `handler_panics_total`).
fn guarded(answer: impl FnOnce() -> (Response<Body>, Then)) -> (Response<Body>, Then) {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(answer)).unwrap_or_else(|_| {
        metric::handler_panicked();
        (response::gif(), Then::Nothing)
    })
}

/// Answers one request (tests call it without a listener: the admin
/// listener's address is taken to be `peer`'s); the body, if any, is never
/// read. A pixel also returns its event's receipt, to settle before
/// answering; a reload is not run.
pub fn respond<B>(
    req: &Request<B>,
    peer: SocketAddr,
    app: &App,
    role: Role,
) -> (Response<Body>, Option<Receipt>) {
    let found = route(req.uri().path(), role);
    match respond_to(req, peer, peer, app, role, found) {
        (resp, Then::Settle(receipt)) => (resp, Some(receipt)),
        (resp, _) => (resp, None),
    }
}

fn respond_to<B>(
    req: &Request<B>,
    peer: SocketAddr,
    local: SocketAddr,
    app: &App,
    role: Role,
    route: Option<Route>,
) -> (Response<Body>, Then) {
    if let Some(refused) = refuse(req, app) {
        return (refused, Then::Nothing);
    }
    if role == Role::Admin {
        let health = matches!(route, Some(Route::Health));
        let reload = matches!(route, Some(Route::Reload)) && req.method() == Method::POST;
        if let Err(why) = app.admin.check(req, local, health, reload) {
            let mut resp = response::text(why.status(), why.message());
            if why == super::admin::Refusal::Token {
                resp.headers_mut().insert(
                    hyper::header::WWW_AUTHENTICATE,
                    hyper::header::HeaderValue::from_static("Bearer"),
                );
            }
            return (counted(resp, why.reason()), Then::Nothing);
        }
    }
    let Some(route) = route else {
        return (counted(response::not_found(), "not_found"), Then::Nothing);
    };
    let post_ok = matches!(route, Route::OptOut | Route::Reload) && req.method() == Method::POST;
    let get_ok = (req.method() == Method::GET || req.method() == Method::HEAD)
        && !matches!(route, Route::Reload);
    if !get_ok && !post_ok {
        return (
            counted(response::method_not_allowed(), "method_not_allowed"),
            Then::Nothing,
        );
    }
    let resp = match route {
        Route::Pixel(kind) => {
            let (resp, receipt) = pixel(req, peer, app, kind);
            return (resp, receipt.map_or(Then::Nothing, Then::Settle));
        }
        Route::OptOut => {
            let (resp, was) = super::optout::answer(req.method(), req.headers(), &app.cookies);
            // The id that opted out: consumers and the engine forget it.
            let then = match was {
                Some(uid) => Then::Settle(app.delivery.submit(&opt_out_event(uid))),
                None => Then::Nothing,
            };
            return (resp, then);
        }
        Route::Health => response::text(StatusCode::OK, "ok\n"),
        Route::Ready => ready(app),
        Route::Metrics => response::metrics(crate::telemetry::render()),
        Route::Reload => match app.reloader.get() {
            // Answered when the reload (joined or queued) is done.
            Some(r) => {
                return (
                    response::text(StatusCode::OK, ""),
                    Then::Reload(app.reloads.request(r)),
                )
            }
            None => response::text(StatusCode::NOT_FOUND, "no config file to reload\n"),
        },
        Route::Robots => response::text(StatusCode::OK, "User-agent: *\nDisallow: /\n"),
        Route::Sync(sync) => super::sync::answer(req, app, sync),
        // Answered by `serve`, which reads the body; never here.
        Route::Api(_) => response::not_found(),
    };
    (resp, Then::Nothing)
}

/// The limits every request is held to, whatever its route: None when it
/// may go on.
fn refuse<B>(req: &Request<B>, app: &App) -> Option<Response<Body>> {
    if let Some(refused) = refuse_head(req, app) {
        return Some(refused);
    }
    // No pixel has a body, and hyper drops a `Content-Length` sent alongside
    // `Transfer-Encoding` before we see it: any transfer coding on a request
    // here is a smuggling attempt or a client we would have to frame. Refuse
    // it and close the connection instead of reading a body of unknown size.
    // (The API reads its bodies, bounded, and does not come here.)
    if req.headers().contains_key(TRANSFER_ENCODING) {
        let resp = response::closing(StatusCode::BAD_REQUEST, "request bodies are not accepted\n");
        return Some(counted(resp, "transfer_encoding"));
    }
    None
}

/// The request line's and head's limits.
fn refuse_head<B>(req: &Request<B>, app: &App) -> Option<Response<Body>> {
    let uri_len = req.uri().path_and_query().map_or(1, |p| p.as_str().len());
    if req.method().as_str().len() + uri_len + 10 > app.max_request_line_bytes {
        let resp = response::closing(StatusCode::URI_TOO_LONG, "request line too long\n");
        return Some(counted(resp, "uri_too_long"));
    }
    // hyper's buffer limit is a soft one (it may read past it before it
    // checks): hold the head to `max_header_bytes` here, exactly.
    let head: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if head + uri_len > app.max_header_bytes {
        let resp = response::closing(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request headers too large\n",
        );
        return Some(counted(resp, "head_too_large"));
    }
    None
}

/// The event that tells consumers (and the attribution engine) to forget
/// `uid`: nothing else about the request is kept.
fn opt_out_event(uid: crate::ids::UserId) -> crate::event::Event<'static> {
    let (ts_ms, event_id) = EventId::now_v7();
    crate::event::Event {
        common: Common {
            event_id,
            ts_ms,
            uid: Some(uid),
            new_uid: false,
            ip: None,
            user_agent: None,
            referer: None,
            warnings: Warnings::default(),
            ivt: None,
            consent: None,
        },
        body: crate::event::Body::OptOut,
    }
}

fn ready(app: &App) -> Response<Body> {
    if app.draining.load(std::sync::atomic::Ordering::Relaxed) {
        return response::text(StatusCode::SERVICE_UNAVAILABLE, "draining: shutting down\n");
    }
    match app.delivery.not_ready() {
        Some(why) => response::text(StatusCode::SERVICE_UNAVAILABLE, why),
        None => response::text(StatusCode::OK, "ready\n"),
    }
}

fn counted(resp: Response<Body>, reason: &'static str) -> Response<Body> {
    metric::http_refused(reason);
    resp
}

/// A header as recorded ([`crate::event::text::plain`]), with `warning`
/// when something was replaced.
fn recorded<'w, 'a>(
    warnings: &'w mut Warnings,
    warning: &'static str,
) -> impl FnOnce(Cow<'a, str>) -> Cow<'a, str> + 'w {
    move |value| {
        let plain = crate::event::text::plain(value);
        if matches!(plain, Cow::Owned(_)) {
            warnings.push(warning);
        }
        plain
    }
}

fn header<'a>(headers: &'a HeaderMap, name: HeaderName) -> Option<Cow<'a, str>> {
    headers.get(name).map(|v| match v.to_str() {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(v.as_bytes()),
    })
}

fn pixel<B>(
    req: &Request<B>,
    peer: SocketAddr,
    app: &App,
    kind: PixelKind,
) -> (Response<Body>, Option<Receipt>) {
    let headers = req.headers();
    let live = app.live.load();
    let query = req.uri().query().unwrap_or("");
    let parsed = Query::parse(query, app.max_query_bytes);
    let mut warnings = Warnings::default();
    let (consent, allowed) = match &parsed {
        Ok(q) => consent::read(q, live.tcf_vendor, &mut warnings),
        Err(_) => (None, consent::Allowed::ALL),
    };
    // The mark counts only as the bounce writes it (`pxbounce=1`), and only
    // while the bounce is on: any other value, or a mark sent to a server
    // that does not bounce, is an ordinary request.
    let bounced = live.bounce
        && parsed
            .as_ref()
            .is_ok_and(|q| q.raw(Key::Bounced) == Some("1"));
    let visitor = match identify(req, app, &live, kind, allowed, bounced, &mut warnings) {
        Identified::Visitor(visitor) => visitor,
        Identified::Bounce(resp) => return (resp, None),
    };
    let common = common(req, peer, app, &live, visitor, warnings, consent);
    let request = PixelRequest {
        kind,
        path: req.uri().path(),
        query,
        parsed,
        common,
    };
    let catalog = app.catalog.load();
    let ctx = Context {
        catalog: &catalog,
        allow: &live.allow,
        click_ids: &app.click_ids,
        source_click_param: &app.source_click_param,
    };
    let mut outcome = pixel::handle(request, &ctx);
    app.recent_orders.flag(&mut outcome.event, &catalog);
    let receipt = app.delivery.submit(&outcome.event);
    let reply = std::mem::replace(&mut outcome.reply, pixel::Reply::Gif);
    let mut resp = response::reply(reply);
    if let Identity::Issued(uid) | Identity::Renewed(uid) = visitor.identity {
        resp.headers_mut()
            .insert(SET_COOKIE, app.cookies.issue(uid, cookie_host(headers)));
    }
    (resp, Some(receipt))
}

/// Who a pixel request is from, as far as its cookie tells.
#[derive(Clone, Copy)]
struct Visitor {
    identity: Identity,
    /// The request came back from the cookie bounce (`pxbounce=1`).
    bounced: bool,
}

impl Visitor {
    /// Whether the event carries an id first seen with this request.
    fn new_uid(&self) -> bool {
        // With the bounce, the id was issued by the redirect just before.
        matches!(self.identity, Identity::Issued(_))
            || (self.bounced && matches!(self.identity, Identity::Known(_)))
    }
}

/// What the cookie step makes of a pixel request.
enum Identified {
    Visitor(Visitor),
    /// The cookie bounce: this redirect sets the cookie and answers the
    /// request instead of the pixel.
    Bounce(Response<Body>),
}

/// The request's identity: no id under `Sec-GPC` or without consent to
/// storage, otherwise the cookie's; a newly issued id is first bounced, to
/// learn whether the browser keeps cookies.
fn identify<B>(
    req: &Request<B>,
    app: &App,
    live: &Live,
    kind: PixelKind,
    allowed: consent::Allowed,
    bounced: bool,
    warnings: &mut Warnings,
) -> Identified {
    let headers = req.headers();
    let query = req.uri().query().unwrap_or("");
    let gpc = headers.get("sec-gpc").is_some_and(|v| v.as_bytes() == b"1");
    let mut identity = if gpc {
        Identity::Private
    } else if !allowed.storage {
        Identity::Unconsented
    } else {
        app.cookies.identify(headers)
    };
    if let Identity::Issued(uid) = identity {
        if live.bounce && kind != PixelKind::Click && req.method() == Method::GET {
            if bounced {
                warnings.push("cookies_blocked");
                identity = Identity::Refused;
            } else if query.len() + BOUNCE_MARK.len() <= app.max_query_bytes {
                metric::cookie_bounced();
                let url = bounce_url(req.uri().path(), query);
                let mut resp = response::redirect(url);
                resp.headers_mut()
                    .insert(SET_COOKIE, app.cookies.issue(uid, cookie_host(headers)));
                return Identified::Bounce(resp);
            } else {
                // Too long to bounce: whether this browser keeps cookies is
                // not known, and a fresh id per request would make every
                // padded request a new user.
                warnings.push("cookies_unknown");
                identity = Identity::Refused;
            }
        }
    }
    Identified::Visitor(Visitor { identity, bounced })
}

/// The `Host` the cookie is set for.
fn cookie_host(headers: &HeaderMap) -> Option<&str> {
    headers.get(HOST).and_then(|h| h.to_str().ok())
}

/// The fields every event carries, stamped now: the visitor, where the
/// request came from, and what was wrong with it.
fn common<'a, B>(
    req: &'a Request<B>,
    peer: SocketAddr,
    app: &App,
    live: &'a Live,
    visitor: Visitor,
    mut warnings: Warnings,
    consent: Option<Box<Consent<'a>>>,
) -> Common<'a> {
    let headers = req.headers();
    let identity = visitor.identity;
    let (ts_ms, event_id) = EventId::now_v7();
    if req.method() == Method::HEAD {
        warnings.push("head_request");
    }
    let ip = client_ip(peer.ip(), headers, &app.trusted_proxies);
    if live
        .rate_limit
        .as_ref()
        .is_some_and(|r| !r.allow(ip, ts_ms))
    {
        warnings.push("rate_limited");
    }
    let user_agent = header(headers, USER_AGENT);
    let ivt = live.ivt.classify(headers, user_agent.as_deref());
    // Recorded with hidden characters replaced, as `other` refuses them.
    let user_agent = user_agent.map(recorded(&mut warnings, "user_agent_replaced"));
    if let Some(flag) = ivt {
        metric::ivt_request(flag);
    }
    Common {
        event_id,
        ts_ms,
        uid: identity.uid(),
        new_uid: visitor.new_uid(),
        ip: if identity.is_private() {
            None
        } else {
            live.ip_policy.apply(ip)
        },
        user_agent,
        referer: header(headers, REFERER).map(recorded(&mut warnings, "referer_replaced")),
        warnings,
        ivt,
        consent,
    }
}

/// The parameter that marks a bounced request; first in the query, since
/// `redir` takes everything after it.
const BOUNCE_MARK: &str = "pxbounce=1&";

/// The same pixel again, marked as bounced (a relative URL: same host).
fn bounce_url(path: &str, query: &str) -> String {
    let mut url = String::with_capacity(path.len() + BOUNCE_MARK.len() + query.len() + 1);
    url.push_str(path);
    url.push('?');
    if query.is_empty() {
        url.push_str(&BOUNCE_MARK[..BOUNCE_MARK.len() - 1]);
    } else {
        url.push_str(BOUNCE_MARK);
        url.push_str(query);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every path the router knows is counted under a label of its own,
    /// and every label but `not_found` is some path's: the labels and the
    /// routes are the same table.
    #[test]
    fn every_route_round_trips_through_its_metrics_label() {
        let public = [
            "/imptr",
            "/clktr",
            "/clktrb",
            "/px",
            "/seg",
            "/mapuid",
            "/optout",
            "/robots.txt",
            "/healthz",
            "/readyz",
            "/getuid",
            "/getuidnb",
            "/getuidj",
            "/getuidp",
            "/v1/conversions",
            "/v1/adjustments",
        ];
        let admin = ["/healthz", "/readyz", "/metrics", "/-/reload"];
        let routes = public
            .iter()
            .map(|p| (p, Role::Public))
            .chain(admin.iter().map(|p| (p, Role::Admin)));
        let mut seen = [false; RouteLabel::COUNT];
        for (path, role) in routes {
            let label = route(path, role).expect(path).label();
            assert_ne!(label, RouteLabel::NotFound, "{path}");
            seen[label.index()] = true;
        }
        seen[RouteLabel::NotFound.index()] = true;
        let unused: Vec<_> = RouteLabel::ALL
            .into_iter()
            .filter(|l| !seen[l.index()])
            .collect();
        assert!(unused.is_empty(), "labels no path takes: {unused:?}");
        assert!(route("/nope", Role::Public).is_none());
    }

    #[test]
    fn a_panicking_handler_answers_the_gif() {
        let (resp, receipt) = guarded(|| panic!("a bug in a handler"));
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[hyper::header::CONTENT_TYPE], "image/gif");
        assert!(matches!(receipt, Then::Nothing));
        let (resp, _) = guarded(|| (response::not_found(), Then::Nothing));
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "no panic, no change");
    }
}
