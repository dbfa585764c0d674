//! `/mapuid?member=M&user=PARTNER_ID[&seg=IDS][&redir=URL]`: a partner tells
//! us its own id for this browser, so that its segment data and its
//! server-side calls find the same person. The mapping is published as a
//! `usersync` event keyed by our id; the consumer that stores it decides
//! how long it lives.

use super::query::Key;
use super::segment::id_list;
use super::source_click;
use super::{fallback_reply, reply_in, Context, Form, Outcome, Request, Target};
use crate::config::FireList;
use crate::event::{Body, Invalid, UserSync};
use crate::ids::MemberId;

pub fn handle<'a>(mut r: Request<'a>, ctx: &Context<'a>) -> Outcome<'a> {
    let (redir, target) = r.redir(ctx.allow);
    let Some(member) = r.opt(Key::Member, "member_invalid") else {
        return refuse(r, "member_missing", target);
    };
    let Some(member) = MemberId::parse(&member) else {
        return refuse(r, "member_invalid", target);
    };
    let Some(user) = r.opt(Key::User, "user_invalid") else {
        return refuse(r, "user_missing", target);
    };
    if !source_click::plausible(&user) {
        return refuse(r, "user_invalid", target);
    }
    let segments = id_list(&mut r, ctx, Key::Seg, "seg_invalid");
    // Without an id of ours (GPC, opted out, no storage consent, cookies
    // refused) there is nobody to map the partner's id to, and keeping it
    // would track a browser that said no.
    let partner_uid = if r.common.uid.is_some() {
        Some(user)
    } else {
        r.warn("not_mapped");
        None
    };
    let reply = reply_in(Form::Image, target, &FireList::default(), None);
    let body = Body::UserSync(UserSync {
        member,
        partner_uid,
        segments,
        redir,
    });
    r.finish(body, reply)
}

/// An invalid event, answered as an image (a partner fires `/mapuid` as a
/// pixel or a redirect hop). Its query holds the partner's id for the
/// browser: kept only when the browser has an id of ours, as a valid
/// mapping would be.
fn refuse<'a>(r: Request<'a>, reason: &'static str, target: Target) -> Outcome<'a> {
    let query = if r.common.uid.is_some() { r.query } else { "" };
    let body = Body::Invalid(Invalid::new(r.path, query, reason));
    r.finish(body, fallback_reply(Form::Image, target))
}
