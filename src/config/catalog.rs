//! The validated configuration turned into the lookup tables handlers use:
//! ids resolved to their line item, advertiser and pixels once, at start-up.

use std::collections::HashMap;
use std::sync::Arc;

use super::load::Problem;
use super::validate::{MAX_POST_CLICK_MINUTES, MAX_POST_VIEW_MINUTES, MAX_SEGMENT_EXPIRE_MINUTES};
use super::{Config, PixelConfig, PixelFormat, Repeat, Trigger};
use crate::ids::{
    AdvertiserId, ClickTrackerId, LineItemId, PixelId, PlacementId, PublisherId, SegmentId,
    TrackerId,
};

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
    /// Sign a click id onto the landing URL.
    pub append_click_id: bool,
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
    /// The order-id deduplication window (ms); 0: off.
    pub dedup_ms: u64,
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
    /// `sync.pixels`, for the JavaScript form of segment and conversion pixels.
    pub sync_pixels: FireList,
}

fn minutes_ms(m: u32, max: u32) -> u64 {
    let m = if m == 0 { max } else { m };
    m as u64 * 60_000
}

impl Catalog {
    /// How long a conversion pixel remembers order ids (`dedup_minutes`);
    /// 0 for a pixel that deduplicates nothing or is not in the catalog.
    pub fn dedup_ms(&self, pixel: PixelId) -> u64 {
        self.conversion_pixels.get(&pixel).map_or(0, |p| p.dedup_ms)
    }

    /// Builds the tables from a config that passed validation. A reference
    /// to an undefined line item is refused here too (validation reports it
    /// first), rather than resolved to a made-up advertiser.
    pub fn new(cfg: &Config) -> Result<Arc<Catalog>, Problem> {
        let line_items: HashMap<_, _> = cfg
            .line_items
            .iter()
            .map(|l| (l.id, l.advertiser))
            .collect();
        let impression_trackers = impression_trackers(cfg, &line_items)?;
        let click_trackers = click_trackers(cfg, &line_items)?;
        Ok(Arc::new(Catalog {
            impression_trackers,
            click_trackers,
            conversion_pixels: conversion_pixels(cfg),
            segments: segments(cfg),
            line_items,
            sync_pixels: FireList::new(cfg.sync.pixels.iter().map(Into::into).collect()),
        }))
    }
}

/// The advertiser of line item `li`, which the tracker at `at` names.
fn advertiser_of(
    line_items: &HashMap<LineItemId, AdvertiserId>,
    li: LineItemId,
    at: String,
) -> Result<AdvertiserId, Problem> {
    line_items.get(&li).copied().ok_or_else(|| Problem {
        path: at,
        message: format!("{li} is not defined; add it under [[line_items]] or fix the id"),
    })
}

fn impression_trackers(
    cfg: &Config,
    line_items: &HashMap<LineItemId, AdvertiserId>,
) -> Result<HashMap<TrackerId, ImpressionTracker>, Problem> {
    let advertiser_pixels: HashMap<_, _> =
        cfg.advertisers.iter().map(|a| (a.id, &a.pixels)).collect();
    cfg.impression_trackers
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let at = format!("impression_trackers[{i}].line_item");
            let advertiser = advertiser_of(line_items, t.line_item, at)?;
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
            Ok((t.id, tracker))
        })
        .collect()
}

fn click_trackers(
    cfg: &Config,
    line_items: &HashMap<LineItemId, AdvertiserId>,
) -> Result<HashMap<ClickTrackerId, ClickTracker>, Problem> {
    cfg.click_trackers
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let at = format!("click_trackers[{i}].line_item");
            let tracker = ClickTracker {
                id: t.id,
                line_item: t.line_item,
                advertiser: advertiser_of(line_items, t.line_item, at)?,
                publisher: t.publisher,
                placement: t.placement,
                click_url: t.click_url.clone(),
                append_click_id: t.append_click_id,
                add_segments: t.add_segments.clone(),
            };
            Ok((t.id, tracker))
        })
        .collect()
}

fn conversion_pixels(cfg: &Config) -> HashMap<PixelId, ConversionPixel> {
    cfg.conversion_pixels
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
                repeat: p.repeat,
                dedup_ms: p.dedup_minutes as u64 * 60_000,
                piggybacks: FireList::new(p.piggybacks.iter().map(Into::into).collect()),
                line_items: attached,
            };
            (p.id, pixel)
        })
        .collect()
}

fn segments(cfg: &Config) -> HashMap<SegmentId, Segment> {
    cfg.segments
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
        .collect()
}
