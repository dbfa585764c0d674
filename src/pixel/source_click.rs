//! The traffic source's own click id on a click tracker request: the value
//! a postback must hand back for the source to pay (`sclid`, the name is
//! `redirect.source_click_param`), or the ad platforms' `gclid`, `gbraid`,
//! `wbraid` and `fbclid`.
//!
//! Read from the click tracker's own parameters first, then from the
//! landing URL in `redir`: Google and Meta append their id to the end of the
//! URL they send the browser to, which, with `redir` last, is inside the
//! target.

use std::borrow::Cow;

use super::query::decode;
pub use crate::event::source_click::{plausible, MAX_LEN};
pub use crate::event::{SourceClick, SourceClickKind};

/// What the request says about a source click id.
#[derive(Debug, PartialEq, Eq)]
pub enum Found<'a> {
    None,
    Id(SourceClick<'a>),
    /// A parameter was there but its value cannot be a click id (too long,
    /// bad encoding, characters no click id has): `source_click_id_invalid`.
    Invalid,
}

/// The first source click id in `query` (the part before `redir=`), else in
/// the query of the landing URL `target` (already validated and decoded).
pub fn find<'a>(query: &'a str, target: Option<&str>, source_param: &str) -> Found<'a> {
    let own = query.split("&redir=").next().unwrap_or(query);
    let own = own.strip_prefix("redir=").map_or(own, |_| "");
    if let Some(found) = first(own, source_param) {
        return found;
    }
    let landing = target
        .and_then(|t| t.split_once('?'))
        .map(|(_, q)| q.split('#').next().unwrap_or(q));
    match landing.and_then(|q| first(q, source_param)) {
        Some(Found::Id(SourceClick { kind, id })) => Found::Id(SourceClick {
            kind,
            id: Cow::Owned(id.into_owned()),
        }),
        Some(Found::Invalid) => Found::Invalid,
        Some(Found::None) | None => Found::None,
    }
}

/// The value of the first kind present in `query`, in [`SourceClickKind::ALL`]'s order.
fn first<'q>(query: &'q str, source_param: &str) -> Option<Found<'q>> {
    SourceClickKind::ALL.iter().find_map(|kind| {
        let name = kind.param(source_param);
        let raw = query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == name && !v.is_empty()).then_some(v)
        })?;
        Some(match decode(raw, true) {
            Ok(id) if plausible(&id) => Found::Id(SourceClick { kind: *kind, id }),
            _ => Found::Invalid,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(found: Found<'_>) -> Option<(&'static str, String)> {
        match found {
            Found::Id(s) => Some((s.kind.as_str(), s.id.into_owned())),
            _ => None,
        }
    }

    #[test]
    fn the_configured_parameter_comes_first_then_the_platforms_ids() {
        let q = "id=1&gclid=G1&sclid=abc-123&redir=https%3A%2F%2Fshop.example%2F";
        assert_eq!(
            id(find(q, None, "sclid")),
            Some(("source", "abc-123".into()))
        );
        assert_eq!(id(find(q, None, "subid")), Some(("gclid", "G1".into())));
        assert_eq!(
            id(find("id=1&fbclid=IwAR0x", None, "sclid")),
            Some(("fbclid", "IwAR0x".into()))
        );
        assert_eq!(find("id=1", None, "sclid"), Found::None);
    }

    #[test]
    fn an_id_appended_to_the_landing_url_is_found_there() {
        let target = "https://shop.example/p?utm=x&gclid=Cj0KCQ#top";
        let q = "id=1&redir=https://shop.example/p?utm=x&gclid=Cj0KCQ#top";
        assert_eq!(
            id(find(q, Some(target), "sclid")),
            Some(("gclid", "Cj0KCQ".into()))
        );
        // Only the part before `redir=` is the tracker's own.
        assert_eq!(find("id=1&redir=x?sclid=1", None, "sclid"), Found::None);
        assert_eq!(find("redir=x?sclid=1", None, "sclid"), Found::None);
    }

    #[test]
    fn values_no_click_id_has_are_invalid() {
        for bad in [
            "a%22b",
            "a%3Cscript",
            "%ZZ",
            "a%20b",
            &"x".repeat(MAX_LEN + 1),
        ] {
            assert_eq!(
                find(&format!("sclid={bad}"), None, "sclid"),
                Found::Invalid,
                "{bad}"
            );
        }
        assert_eq!(
            id(find("sclid=a%2Bb", None, "sclid")),
            Some(("source", "a+b".into()))
        );
        assert_eq!(find("sclid=", None, "sclid"), Found::None);
    }
}
