//! `/imptr`: an impression recorded through an impression tracker.

use super::query::Key;
use super::{decimal, reply_in, Context, Outcome, Request};
use crate::event::{Body, Touch};
use crate::ids::TrackerId;

/// Highest `ancost` (999999.999999) the platform accepts without a warning.
pub const MAX_ANCOST_MICROS: u64 = 999_999_999_999;

pub fn handle<'a>(mut r: Request<'a>, ctx: &Context<'a>) -> Outcome<'a> {
    let form = r.form();
    let (redir, target) = r.redir(ctx.allow);
    let id = match r.id(TrackerId::parse) {
        Ok(id) => id,
        Err(reason) => return r.reject(reason, form, target),
    };
    let Some(tracker) = ctx.catalog.impression_trackers.get(&id) else {
        return r.reject("unknown_id", form, target);
    };
    let cachebuster = r.cachebuster();
    let ancost_micros = ancost(&mut r);
    let uid = r.common.uid;
    let reply = reply_in(form, target, &tracker.pixels, uid);
    let body = Body::Impression(Touch {
        tracker_id: tracker.id,
        line_item_id: tracker.line_item,
        advertiser_id: tracker.advertiser,
        publisher_id: tracker.publisher,
        placement_id: tracker.placement,
        cachebuster,
        ancost_micros,
        redir,
        segments_added: &tracker.add_segments,
        source_click: None,
    });
    r.finish(body, reply)
}

/// `ancost` in micros; unparsable is a warning, above the maximum too.
pub fn ancost(r: &mut Request<'_>) -> Option<u64> {
    let raw = r.opt(Key::Ancost, "ancost_invalid")?;
    match decimal::parse_money(&raw) {
        decimal::Money::Micros(m) => {
            if m > MAX_ANCOST_MICROS {
                r.warn("ancost_above_max");
            }
            Some(m)
        }
        decimal::Money::TooLarge => {
            r.warn("ancost_too_large");
            None
        }
        decimal::Money::Malformed => {
            r.warn("ancost_invalid");
            None
        }
    }
}
