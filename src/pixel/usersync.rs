//! `/mapuid?member=M&user=PARTNER_ID[&seg=IDS][&redir=URL]`: a partner tells
//! us its own id for this browser, so that its segment data and its
//! server-side calls find the same person. The mapping is published as a
//! `usersync` event keyed by our id; the consumer that stores it decides
//! how long it lives.

use super::query::Key;
use super::segment::id_list;
use super::source_click;
use super::{reply_in, Context, Form, Outcome, Request};
use crate::config::FireList;
use crate::event::{Body, UserSync};
use crate::ids::MemberId;

pub fn handle<'a>(mut r: Request<'a>, ctx: &Context<'a>) -> Outcome<'a> {
    // An image, always: a partner fires it as a pixel or a redirect hop.
    let form = Form::Image;
    let (redir, target) = r.redir(ctx.allow);
    let Some(member) = r.opt(Key::Member, "member_invalid") else {
        return r.reject("member_missing", form, target);
    };
    let Some(member) = MemberId::parse(&member) else {
        return r.reject("member_invalid", form, target);
    };
    let Some(user) = r.opt(Key::User, "user_invalid") else {
        return r.reject("user_missing", form, target);
    };
    if !source_click::plausible(&user) {
        return r.reject("user_invalid", form, target);
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
    let reply = reply_in(form, target, &FireList::default(), None);
    let body = Body::UserSync(UserSync {
        member,
        partner_uid,
        segments,
        redir,
    });
    r.finish(body, reply)
}
