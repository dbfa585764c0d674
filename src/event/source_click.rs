//! The traffic source's own click id as a click records it (found by
//! [`crate::pixel::source_click`]).

use std::borrow::Cow;

/// Which parameter carried the id: a postback destination takes `Source`,
/// Meta's Conversions API `Fbclid`, Google's upload `Gclid`, `Gbraid` or
/// `Wbraid`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceClickKind {
    Source,
    Gclid,
    Gbraid,
    Wbraid,
    Fbclid,
}

impl SourceClickKind {
    /// In the order they are looked for: the configured parameter wins.
    pub const ALL: [SourceClickKind; 5] = [
        SourceClickKind::Source,
        SourceClickKind::Gclid,
        SourceClickKind::Gbraid,
        SourceClickKind::Wbraid,
        SourceClickKind::Fbclid,
    ];

    /// The event's `source_click_kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceClickKind::Source => "source",
            SourceClickKind::Gclid => "gclid",
            SourceClickKind::Gbraid => "gbraid",
            SourceClickKind::Wbraid => "wbraid",
            SourceClickKind::Fbclid => "fbclid",
        }
    }

    /// The query parameter this kind is read from.
    pub fn param(self, source_param: &str) -> &str {
        match self {
            SourceClickKind::Source => source_param,
            other => other.as_str(),
        }
    }
}

/// A source click id as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceClick<'a> {
    pub kind: SourceClickKind,
    pub id: Cow<'a, str>,
}
