//! A postback URL template: text with `${MACRO}` placeholders, parsed once
//! when the config is read, so an unknown macro stops start-up naming the
//! key instead of reaching a traffic source as literal text.

/// A value a postback URL can carry, from the attribution record, the
/// conversion or the credited click.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Macro {
    /// The traffic source's own click id: the one the click carried in
    /// `redirect.source_click_param` (`sclid`); a Google or Meta click id
    /// is for those destinations.
    ClickId,
    OrderId,
    /// Decimal, as the conversion gave it (a restatement: the new value).
    Value,
    /// The conversion pixel's `currency`.
    Currency,
    /// The attribution record's event id.
    EventId,
    ConversionEventId,
    /// `post_click` or `post_view`.
    Kind,
    /// `approved`, `retracted` or `restated`.
    Status,
    LineItemId,
    AdvertiserId,
    PixelId,
    TrackerId,
    PublisherId,
    PlacementId,
    /// The conversion's time, Unix seconds.
    Ts,
    /// One per record and destination; also the `Idempotency-Key` header.
    IdempotencyKey,
}

impl Macro {
    pub const ALL: [Macro; 16] = [
        Macro::ClickId,
        Macro::OrderId,
        Macro::Value,
        Macro::Currency,
        Macro::EventId,
        Macro::ConversionEventId,
        Macro::Kind,
        Macro::Status,
        Macro::LineItemId,
        Macro::AdvertiserId,
        Macro::PixelId,
        Macro::TrackerId,
        Macro::PublisherId,
        Macro::PlacementId,
        Macro::Ts,
        Macro::IdempotencyKey,
    ];

    /// The name between `${` and `}`.
    pub const fn name(self) -> &'static str {
        match self {
            Macro::ClickId => "CLICK_ID",
            Macro::OrderId => "ORDER_ID",
            Macro::Value => "VALUE",
            Macro::Currency => "CURRENCY",
            Macro::EventId => "EVENT_ID",
            Macro::ConversionEventId => "CONVERSION_EVENT_ID",
            Macro::Kind => "KIND",
            Macro::Status => "STATUS",
            Macro::LineItemId => "LINE_ITEM_ID",
            Macro::AdvertiserId => "ADVERTISER_ID",
            Macro::PixelId => "PIXEL_ID",
            Macro::TrackerId => "TRACKER_ID",
            Macro::PublisherId => "PUBLISHER_ID",
            Macro::PlacementId => "PLACEMENT_ID",
            Macro::Ts => "TS",
            Macro::IdempotencyKey => "IDEMPOTENCY_KEY",
        }
    }

    fn parse(name: &str) -> Option<Macro> {
        Macro::ALL.into_iter().find(|m| m.name() == name)
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
                    let known: Vec<&str> = Macro::ALL.iter().map(|m| m.name()).collect();
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
            assert_eq!(Macro::parse(m.name()), Some(m));
        }
    }
}
