//! `/clktr` and `/clktrb`: a click recorded through a click tracker, then a
//! redirect to the landing page.

use super::click_id::{self, ClickId};
use super::source_click::{self, Found, SourceClick};
use super::{impression::ancost, Context, Location, Outcome, Reply, Request, Target};
use crate::config::AllowList;
use crate::event::{Body, Touch};
use crate::ids::ClickTrackerId;

pub fn handle<'a>(mut r: Request<'a>, ctx: &Context<'a>) -> Outcome<'a> {
    let (redir, target) = r.redir(ctx.allow);
    let tracker = r
        .id(ClickTrackerId::parse)
        .and_then(|id| ctx.catalog.click_trackers.get(&id).ok_or("unknown_id"));
    let tracker = match tracker {
        Ok(t) => t,
        Err(reason) => {
            // Still take the user where the ad said, if that is allowed.
            let reply = match target {
                Target::Go(url) => Reply::Redirect(url.into()),
                _ => Reply::BadRequest(no_target_reason(&r, ctx.allow)),
            };
            let body = r.invalid(reason);
            return r.finish(body, reply);
        }
    };
    let cachebuster = r.cachebuster();
    let ancost_micros = ancost(&mut r);
    let mut reply = match target {
        Target::Go(url) => Reply::Redirect(url.into()),
        Target::Absent | Target::Refused => match &tracker.click_url {
            Some(url) => Reply::Redirect(Location::expand(url, r.common.uid)),
            None => {
                r.warn("no_landing_page");
                Reply::BadRequest(no_target_reason(&r, ctx.allow))
            }
        },
    };
    if let (Reply::Redirect(url), true) = (&mut reply, tracker.append_click_id) {
        let token = ctx.click_ids.sign(&ClickId {
            event_id: r.common.event_id,
            line_item: tracker.line_item,
            tracker: tracker.id,
            publisher: tracker.publisher,
            placement: tracker.placement,
            user: r.common.uid,
        });
        *url = click_id::append(url.as_str(), &ctx.click_ids.param, &token).into();
    }
    let source_click = source_click(&mut r, ctx, &reply);
    let body = Body::Click(Touch {
        tracker_id: tracker.id,
        line_item_id: tracker.line_item,
        advertiser_id: tracker.advertiser,
        publisher_id: tracker.publisher,
        placement_id: tracker.placement,
        cachebuster,
        ancost_micros,
        redir,
        segments_added: &tracker.add_segments,
        source_click,
    });
    r.finish(body, reply)
}

/// The traffic source's click id, from the tracker's parameters or the
/// landing URL the browser is sent to.
fn source_click<'a>(
    r: &mut Request<'a>,
    ctx: &Context<'a>,
    reply: &Reply,
) -> Option<SourceClick<'a>> {
    let landing = match reply {
        Reply::Redirect(url) => Some(url.as_str()),
        _ => None,
    };
    match source_click::find(r.query, landing, ctx.source_click_param) {
        Found::Id(id) => Some(id),
        Found::None => None,
        Found::Invalid => {
            r.warn("source_click_id_invalid");
            None
        }
    }
}

/// Why a click has nowhere to go, in one line for the 400 body.
fn no_target_reason(r: &Request<'_>, allow: &AllowList) -> &'static str {
    match r.q.redir() {
        super::query::Param::Present(t) => match allow.validate(&t) {
            Err(e) => e.reason(),
            Ok(()) => "no landing page",
        },
        super::query::Param::Malformed => "redirect target has a bad percent-encoding",
        super::query::Param::Absent => "no redir parameter and no click_url configured",
    }
}
