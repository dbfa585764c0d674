//! `/clktr` and `/clktrb`: a click recorded through a click tracker, then a
//! redirect to the landing page.

use super::click_id::{self, ClickId};
use super::{expand, impression::ancost, Context, Outcome, Reply, Request, Target};
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
                Target::Go(url) => Reply::Redirect(url),
                _ => Reply::BadRequest(no_target_reason(&r, ctx.allow)),
            };
            let body = r.invalid(reason);
            return r.finish(body, reply);
        }
    };
    let cachebuster = r.cachebuster();
    let ancost_micros = ancost(&mut r);
    let mut reply = match target {
        Target::Go(url) => Reply::Redirect(url),
        Target::Absent | Target::Refused => match &tracker.click_url {
            Some(url) => Reply::Redirect(expand(url, r.common.uid)),
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
        *url = click_id::append(url, &ctx.click_ids.param, &token);
    }
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
    });
    r.finish(body, reply)
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
