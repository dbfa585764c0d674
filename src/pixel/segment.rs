//! `/seg`: segment adds and removes, by id (`add=ID,ID:VALUE`, `remove=`) or
//! by a member's codes (`add_code=`, `remove_code=` with `member=`).

use std::borrow::Cow;

use super::query::Key;
use super::{add_sync, conversion::other, reply_in, Context, Outcome, Request};
use crate::config::FireList;
use crate::event::{Body, SegmentChange};
use crate::ids::{parse_u32, MemberId, SegmentId};

/// Largest value `add=ID:VALUE` may carry.
pub const MAX_VALUE: u32 = 2_147_483_647;
const MAX_CODE: usize = 100;

pub fn handle<'a>(mut r: Request<'a>, ctx: &Context<'a>) -> Outcome<'a> {
    let form = r.form();
    let (redir, target) = r.redir(ctx.allow);
    let given = [Key::Add, Key::Remove, Key::AddCode, Key::RemoveCode]
        .iter()
        .any(|k| !r.q.param(*k).is_absent());
    if !given {
        return r.reject("missing_id", form, target);
    }
    let mut change = SegmentChange::default();
    let mut seen = std::collections::HashSet::new();
    if let Some(list) = r.opt(Key::Add, "add_invalid") {
        for item in list.split(',').filter(|s| !s.is_empty()) {
            let (id, value) = match item.split_once(':') {
                Some((id, v)) => (id, Some(v)),
                None => (item, None),
            };
            let value = match value.map(|v| parse_u32(v).filter(|v| *v <= MAX_VALUE)) {
                Some(None) => {
                    r.warn("add_value_invalid");
                    continue;
                }
                Some(Some(v)) => Some(v),
                None => None,
            };
            if let Some(id) = known(&mut r, ctx, id, "add_invalid") {
                // The first of a repeated id wins: a query repeating one
                // add hundreds of times is one add.
                if seen.insert(id.0) {
                    change.adds.push((id, value));
                }
            }
        }
    }
    change.removes = id_list(&mut r, ctx, Key::Remove, "remove_invalid");
    change.add_codes = codes(&mut r, Key::AddCode, "add_code_invalid");
    change.remove_codes = codes(&mut r, Key::RemoveCode, "remove_code_invalid");
    change.member = r.opt(Key::Member, "member_invalid").and_then(|m| {
        let id = MemberId::parse(&m);
        if id.is_none() {
            r.warn("member_invalid");
        }
        id
    });
    if change.member.is_none() && !(change.add_codes.is_empty() && change.remove_codes.is_empty()) {
        r.warn("member_missing");
    }
    change.other = other(&mut r);
    change.redir = redir;
    let nothing = change.adds.is_empty()
        && change.removes.is_empty()
        && change.add_codes.is_empty()
        && change.remove_codes.is_empty();
    if nothing {
        return r.reject("unknown_id", form, target);
    }
    let uid = r.common.uid;
    let none = FireList::default();
    let mut reply = reply_in(form, target, &none, uid);
    add_sync(&mut reply, &ctx.catalog.sync_pixels, uid);
    r.finish(Body::Segment(change), reply)
}

/// A comma list of segment ids; bad entries warn with `invalid`, ids the
/// config does not know warn with `unknown_segment`. Both are left out.
pub fn id_list(
    r: &mut Request<'_>,
    ctx: &Context<'_>,
    key: Key,
    invalid: &'static str,
) -> Vec<SegmentId> {
    let Some(list) = r.opt(key, invalid) else {
        return Vec::new();
    };
    let mut seen = std::collections::HashSet::new();
    list.split(',')
        .filter(|s| !s.is_empty())
        .filter_map(|s| known(r, ctx, s, invalid))
        .filter(|id| seen.insert(id.0))
        .collect()
}

fn known(
    r: &mut Request<'_>,
    ctx: &Context<'_>,
    s: &str,
    invalid: &'static str,
) -> Option<SegmentId> {
    match SegmentId::parse(s) {
        None => {
            r.warn(invalid);
            None
        }
        Some(id) if !ctx.catalog.segments.contains_key(&id) => {
            r.warn("unknown_segment");
            None
        }
        Some(id) => Some(id),
    }
}

/// A comma list of segment codes: letters, digits, `_`, `-`, `.`; case kept.
fn codes<'a>(r: &mut Request<'a>, key: Key, invalid: &'static str) -> Vec<Cow<'a, str>> {
    let Some(list) = r.opt(key, invalid) else {
        return Vec::new();
    };
    let ok = |c: &str| {
        !c.is_empty()
            && c.len() <= MAX_CODE
            && c.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
    };
    // Each code once, first occurrence kept, in linear time.
    let mut seen = std::collections::HashSet::new();
    let mut bad = false;
    let mut keep = |c: &str| {
        if !ok(c) {
            bad = true;
            false
        } else {
            seen.insert(c.to_string())
        }
    };
    let out: Vec<Cow<'a, str>> = match list {
        Cow::Borrowed(s) => s
            .split(',')
            .filter(|c| !c.is_empty() && keep(c))
            .map(Cow::Borrowed)
            .collect(),
        Cow::Owned(s) => s
            .split(',')
            .filter(|c| !c.is_empty() && keep(c))
            .map(|c| Cow::Owned(c.to_string()))
            .collect(),
    };
    if bad {
        r.warn(invalid);
    }
    out
}
