//! `/px`: a conversion pixel firing (`id`, `order_id`, `value`, `other`,
//! `seg`, `remove`, `redir`).

use super::click_id::ClickId;
use super::query::Key;
use super::{add_sync, decimal, reply_in, segment, Context, Outcome, Request};
use crate::event::{Body, Conversion, ConversionSource};
use crate::ids::PixelId;

pub const MAX_ORDER_ID: usize = 36;
pub const MAX_OTHER_CHARS: usize = 30;

pub fn handle<'a>(mut r: Request<'a>, ctx: &Context<'a>) -> Outcome<'a> {
    let form = r.form();
    let (redir, target) = r.redir(ctx.allow);
    let id = match r.id(PixelId::parse) {
        Ok(id) => id,
        Err(reason) => return r.reject(reason, form, target),
    };
    let Some(pixel) = ctx.catalog.conversion_pixels.get(&id) else {
        return r.reject("unknown_id", form, target);
    };
    let order_id = r
        .opt(Key::OrderId, "order_id_invalid")
        .filter(|o| o.len() <= MAX_ORDER_ID && o.bytes().all(|b| b.is_ascii_alphanumeric()));
    if order_id.is_none() && !r.q.param(Key::OrderId).is_absent() {
        r.warn("order_id_invalid");
    }
    let value_micros = match r
        .opt(Key::Value, "value_invalid")
        .map(|v| decimal::parse_money(&v))
    {
        None => None,
        Some(decimal::Money::Micros(m)) => Some(m),
        Some(decimal::Money::TooLarge) => {
            r.warn("value_too_large");
            None
        }
        Some(decimal::Money::Malformed) => {
            r.warn("value_invalid");
            None
        }
    };
    let other = other(&mut r);
    let click = click_id(&mut r, ctx, pixel);
    let segments_added = segment::id_list(&mut r, ctx, Key::Seg, "seg_invalid");
    let segments_removed = segment::id_list(&mut r, ctx, Key::Remove, "remove_invalid");
    let uid = r.common.uid;
    let mut reply = reply_in(form, target, &pixel.piggybacks, uid);
    add_sync(&mut reply, &ctx.catalog.sync_pixels, uid);
    let body = Body::Conversion(Conversion {
        pixel_id: pixel.id,
        advertiser_id: pixel.advertiser,
        order_id,
        value_micros,
        other,
        segments_added,
        segments_removed,
        redir,
        click,
        source: ConversionSource::Browser,
    });
    r.finish(body, reply)
}

/// `clid`: the click a click id stands for, if it is ours, ran for the
/// pixel's advertiser and is inside the pixel's post-click window; else a
/// warning (`clid_invalid`, `clid_foreign`, `clid_expired`) and none. A
/// foreign click is dropped from the event: a consumer joining conversions
/// to clicks on `click_id` would otherwise credit another advertiser's ad.
fn click_id(
    r: &mut Request<'_>,
    ctx: &Context<'_>,
    pixel: &crate::config::ConversionPixel,
) -> Option<ClickId> {
    let token = r.opt(Key::Clid, "clid_invalid")?;
    match ctx.click_ids.verify(&token) {
        Ok(click) => {
            let at = click.event_id.timestamp_ms();
            let advertiser = ctx.catalog.line_items.get(&click.line_item);
            if advertiser != Some(&pixel.advertiser) {
                r.warn("clid_foreign");
                return None;
            }
            // A click from the future (clock skew between instances) is
            // allowed a minute.
            if at > r.common.ts_ms + 60_000
                || r.common.ts_ms.saturating_sub(at) > pixel.post_click_ms
            {
                r.warn("clid_expired");
                None
            } else {
                Some(click)
            }
        }
        Err(_) => {
            r.warn("clid_invalid");
            None
        }
    }
}

/// `other`: free text of at most 30 characters, else a warning and null.
pub fn other<'a>(r: &mut Request<'a>) -> Option<std::borrow::Cow<'a, str>> {
    let v = r.opt(Key::Other, "other_invalid")?;
    if v.chars().count() > MAX_OTHER_CHARS || !crate::event::text::is_plain(&v) {
        r.warn("other_invalid");
        return None;
    }
    Some(v)
}
