//! A postback URL template: text with `${MACRO}` placeholders, parsed once
//! when the config is read, so an unknown macro stops start-up naming the
//! key instead of reaching a traffic source as literal text.

crate::indexed::indexed_enum! {
    /// A value a postback URL can carry, from the attribution record, the
    /// conversion or the credited click. Its text (`as_str`, `parse`) is the
    /// name between `${` and `}`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum Macro {
        /// The traffic source's own click id: the one the click carried in
        /// `redirect.source_click_param` (`sclid`); a Google or Meta click id
        /// is for those destinations.
        ClickId => "CLICK_ID",
        OrderId => "ORDER_ID",
        /// Decimal, as the conversion gave it (a restatement: the new value).
        Value => "VALUE",
        /// The conversion pixel's `currency`.
        Currency => "CURRENCY",
        /// The attribution record's event id.
        EventId => "EVENT_ID",
        ConversionEventId => "CONVERSION_EVENT_ID",
        /// `post_click` or `post_view`.
        Kind => "KIND",
        /// `approved`, `retracted` or `restated`.
        Status => "STATUS",
        LineItemId => "LINE_ITEM_ID",
        AdvertiserId => "ADVERTISER_ID",
        PixelId => "PIXEL_ID",
        TrackerId => "TRACKER_ID",
        PublisherId => "PUBLISHER_ID",
        PlacementId => "PLACEMENT_ID",
        /// The conversion's time, Unix seconds.
        Ts => "TS",
        /// One per record and destination; also the `Idempotency-Key` header.
        IdempotencyKey => "IDEMPOTENCY_KEY",
    }
}

/// One piece of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Macro(Macro),
}

/// A parsed URL template.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Template(pub Vec<Piece>);

impl Template {
    /// Refuses an unknown or unclosed macro, naming it and the known ones.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find("${") {
            if at > 0 {
                pieces.push(Piece::Text(rest[..at].to_string()));
            }
            let after = &rest[at + 2..];
            let Some(end) = after.find('}') else {
                return Err("has a `${` without its `}`".into());
            };
            let name = &after[..end];
            match Macro::parse(name) {
                Some(m) => pieces.push(Piece::Macro(m)),
                None => {
                    let known: Vec<&str> = Macro::ALL.iter().map(|m| m.as_str()).collect();
                    // The name is bounded: it is the operator's text, not a
                    // secret, but a typo should not quote a whole URL.
                    let shown: String = name.chars().take(40).collect();
                    return Err(format!(
                        "unknown macro ${{{shown}}}; the known ones are {}",
                        known.join(", ")
                    ));
                }
            }
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        Ok(Template(pieces))
    }

    pub fn uses(&self, m: Macro) -> bool {
        self.0.contains(&Piece::Macro(m))
    }

    /// The text before the first macro: what names the scheme and host.
    pub fn prefix(&self) -> &str {
        match self.0.first() {
            Some(Piece::Text(t)) => t,
            _ => "",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macros_are_parsed_and_unknown_or_unclosed_ones_refused() {
        let t = Template::parse("https://s.example/pb?c=${CLICK_ID}&v=${VALUE}").unwrap();
        assert_eq!(
            t.0,
            [
                Piece::Text("https://s.example/pb?c=".into()),
                Piece::Macro(Macro::ClickId),
                Piece::Text("&v=".into()),
                Piece::Macro(Macro::Value),
            ]
        );
        assert!(t.uses(Macro::ClickId) && !t.uses(Macro::Status));
        assert_eq!(t.prefix(), "https://s.example/pb?c=");
        let e = Template::parse("https://s.example/?p=${PAYOUT}").unwrap_err();
        assert!(
            e.starts_with("unknown macro ${PAYOUT}; the known ones are CLICK_ID"),
            "{e}"
        );
        assert!(Template::parse("https://s.example/?p=${VALUE").is_err());
        for m in Macro::ALL {
            assert_eq!(Macro::parse(m.as_str()), Some(m));
        }
    }
}
