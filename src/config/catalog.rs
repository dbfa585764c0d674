//! The validated configuration turned into the lookup tables handlers use:
//! ids resolved to their line item, advertiser and pixels once, at start-up.

use std::collections::HashMap;
use std::sync::Arc;

use super::validate::{MAX_POST_CLICK_MINUTES, MAX_POST_VIEW_MINUTES, MAX_SEGMENT_EXPIRE_MINUTES};
use super::{Config, PixelConfig, PixelFormat, Trigger};
use crate::ids::{
    AdvertiserId, ClickTrackerId, LineItemId, PixelId, PlacementId, PublisherId, SegmentId,
    TrackerId,
};

/// How repeat conversions of one user on one pixel are counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repeat {
    All,
    OnePerUser,
    /// At most one per this many minutes.
    EveryMinutes(u32),
}

impl Repeat {
    pub const MAX_EVERY_MINUTES: u32 = 32_767;

    /// `all`, `one_per_user` or `every N minutes`.
    pub fn parse(s: &str) -> Result<Repeat, String> {
        match s {
            "all" => return Ok(Repeat::All),
            "one_per_user" => return Ok(Repeat::OnePerUser),
            _ => {}
        }
        let n = s
            .strip_prefix("every ")
            .and_then(|r| {
                r.strip_suffix(" minutes")
                    .or_else(|| r.strip_suffix(" minute"))
            })
            .and_then(|n| n.trim().parse::<u32>().ok());
        match n {
            Some(n) if (1..=Self::MAX_EVERY_MINUTES).contains(&n) => Ok(Repeat::EveryMinutes(n)),
            Some(n) => Err(format!(
                "every {n} minutes is outside 1..={} (about 22 days)",
                Self::MAX_EVERY_MINUTES
            )),
            None => Err(format!(
                "{s:?} is not a repeat mode; write \"all\", \"one_per_user\" or \"every N minutes\""
            )),
        }
    }
}

/// A pixel to fire alongside a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirePixel {
    pub url: String,
    pub format: PixelFormat,
}

impl From<&PixelConfig> for FirePixel {
    fn from(p: &PixelConfig) -> Self {
        FirePixel {
            url: p.url.clone(),
            format: p.format,
        }
    }
}

/// Pixels to fire, with the one the image response may redirect to.
#[derive(Clone, Debug, Default)]
pub struct FireList {
    /// All of them, for the JavaScript response.
    pub all: Vec<FirePixel>,
    /// The first `img` one, for the image response's single redirect.
    pub image: Option<usize>,
}

impl FireList {
    fn new(all: Vec<FirePixel>) -> Self {
        let image = all.iter().position(|p| p.format == PixelFormat::Img);
        FireList { all, image }
    }

    pub fn image(&self) -> Option<&FirePixel> {
        self.image.map(|i| &self.all[i])
    }
}

/// `/imptr?id=` resolved.
#[derive(Clone, Debug)]
pub struct ImpressionTracker {
    pub id: TrackerId,
    pub line_item: LineItemId,
    pub advertiser: AdvertiserId,
    pub publisher: PublisherId,
    pub placement: Option<PlacementId>,
    /// The tracker's own pixels, then its advertiser's, then the network's.
    pub pixels: FireList,
    pub add_segments: Vec<SegmentId>,
}

/// `/clktr?id=` resolved.
#[derive(Clone, Debug)]
pub struct ClickTracker {
    pub id: ClickTrackerId,
    pub line_item: LineItemId,
    pub advertiser: AdvertiserId,
    pub publisher: PublisherId,
    pub placement: Option<PlacementId>,
    pub click_url: Option<String>,
    pub add_segments: Vec<SegmentId>,
}

/// `/px?id=` resolved, with the rules the attribution engine applies.
#[derive(Clone, Debug)]
pub struct ConversionPixel {
    pub id: PixelId,
    pub advertiser: AdvertiserId,
    pub trigger: Trigger,
    pub post_view_ms: u64,
    pub post_click_ms: u64,
    pub repeat: Repeat,
    pub piggybacks: FireList,
    /// Line items this pixel is attached to; only their touches count.
    pub line_items: Vec<LineItemId>,
}

/// A segment's settings.
#[derive(Clone, Debug)]
pub struct Segment {
    pub id: SegmentId,
    /// Membership lifetime; 0 is this request only.
    pub expire_minutes: u32,
}

/// Everything a handler looks up, by id.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    pub impression_trackers: HashMap<TrackerId, ImpressionTracker>,
    pub click_trackers: HashMap<ClickTrackerId, ClickTracker>,
    pub conversion_pixels: HashMap<PixelId, ConversionPixel>,
    pub segments: HashMap<SegmentId, Segment>,
    pub line_items: HashMap<LineItemId, AdvertiserId>,
}

fn minutes_ms(m: u32, max: u32) -> u64 {
    let m = if m == 0 { max } else { m };
    m as u64 * 60_000
}

impl Catalog {
    /// Builds the tables from a config that passed validation.
    pub fn new(cfg: &Config) -> Arc<Catalog> {
        let line_items: HashMap<_, _> = cfg
            .line_items
            .iter()
            .map(|l| (l.id, l.advertiser))
            .collect();
        let advertiser_pixels: HashMap<_, _> =
            cfg.advertisers.iter().map(|a| (a.id, &a.pixels)).collect();
        let advertiser_of =
            |li: LineItemId| line_items.get(&li).copied().unwrap_or(AdvertiserId(0));

        let impression_trackers = cfg
            .impression_trackers
            .iter()
            .map(|t| {
                let advertiser = advertiser_of(t.line_item);
                let mut all: Vec<FirePixel> = t.pixels.iter().map(Into::into).collect();
                if let Some(ap) = advertiser_pixels.get(&advertiser) {
                    all.extend(ap.iter().map(FirePixel::from));
                }
                all.extend(cfg.network.pixels.iter().map(FirePixel::from));
                let tracker = ImpressionTracker {
                    id: t.id,
                    line_item: t.line_item,
                    advertiser,
                    publisher: t.publisher,
                    placement: t.placement,
                    pixels: FireList::new(all),
                    add_segments: t.add_segments.clone(),
                };
                (t.id, tracker)
            })
            .collect();
        let click_trackers = cfg
            .click_trackers
            .iter()
            .map(|t| {
                let tracker = ClickTracker {
                    id: t.id,
                    line_item: t.line_item,
                    advertiser: advertiser_of(t.line_item),
                    publisher: t.publisher,
                    placement: t.placement,
                    click_url: t.click_url.clone(),
                    add_segments: t.add_segments.clone(),
                };
                (t.id, tracker)
            })
            .collect();
        let conversion_pixels = cfg
            .conversion_pixels
            .iter()
            .map(|p| {
                let attached = cfg
                    .line_items
                    .iter()
                    .filter(|l| l.conversion_pixels.contains(&p.id))
                    .map(|l| l.id)
                    .collect();
                let pixel = ConversionPixel {
                    id: p.id,
                    advertiser: p.advertiser,
                    trigger: p.trigger,
                    post_view_ms: minutes_ms(p.post_view_minutes, MAX_POST_VIEW_MINUTES),
                    post_click_ms: minutes_ms(p.post_click_minutes, MAX_POST_CLICK_MINUTES),
                    repeat: Repeat::parse(&p.repeat).unwrap_or(Repeat::OnePerUser),
                    piggybacks: FireList::new(p.piggybacks.iter().map(Into::into).collect()),
                    line_items: attached,
                };
                (p.id, pixel)
            })
            .collect();
        let segments = cfg
            .segments
            .iter()
            .map(|s| {
                let expire_minutes = s.expire_minutes.unwrap_or(MAX_SEGMENT_EXPIRE_MINUTES);
                (
                    s.id,
                    Segment {
                        id: s.id,
                        expire_minutes,
                    },
                )
            })
            .collect();
        Arc::new(Catalog {
            impression_trackers,
            click_trackers,
            conversion_pixels,
            segments,
            line_items,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeat_modes() {
        assert_eq!(Repeat::parse("all"), Ok(Repeat::All));
        assert_eq!(Repeat::parse("one_per_user"), Ok(Repeat::OnePerUser));
        assert_eq!(
            Repeat::parse("every 60 minutes"),
            Ok(Repeat::EveryMinutes(60))
        );
        assert_eq!(
            Repeat::parse("every 32767 minutes"),
            Ok(Repeat::EveryMinutes(32767))
        );
        assert!(Repeat::parse("every 32768 minutes")
            .unwrap_err()
            .contains("1..=32767"));
        assert!(Repeat::parse("every 0 minutes").is_err());
        assert!(Repeat::parse("sometimes")
            .unwrap_err()
            .contains("every N minutes"));
    }
}
