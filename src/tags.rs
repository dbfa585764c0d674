//! `pixeld tags`: the exportable tags, with their placeholders, pointing at
//! `server.public_url`.

use crate::config::Config;
use crate::ids::{ClickTrackerId, PixelId, SegmentId, TrackerId};

/// What to print a tag for.
#[derive(Clone, Copy, Debug)]
pub enum TagFor {
    Tracker(TrackerId),
    ClickTracker(ClickTrackerId),
    Pixel(PixelId),
    Segment(SegmentId),
}

/// The tag, or why there is none.
pub fn tag(cfg: &Config, what: TagFor, js: bool) -> Result<String, String> {
    let base = cfg.server.public_url.trim_end_matches('/');
    match what {
        TagFor::Tracker(id) => {
            if !cfg.impression_trackers.iter().any(|t| t.id == id) {
                return Err(format!("impression tracker {id} is not in the config"));
            }
            Ok(if js {
                format!("<!-- Imp Tracker DO NOT MODIFY --> <script type=\"text/javascript\" src=\"{base}/imptr?id={id}&cachebuster=[CACHEBUSTER]&ancost=[ANCOST]&t=1\"></script> <!-- End of Imp Tracker -->")
            } else {
                format!("<!-- Imp Tracker DO NOT MODIFY --> <img src=\"{base}/imptr?id={id}&cachebuster=[CACHEBUSTER]&ancost=[ANCOST]&t=2&redir=[REDIRECT_URL]\" width=\"1\" height=\"1\" /> <!-- End of Imp Tracker -->")
            })
        }
        TagFor::ClickTracker(id) => {
            if !cfg.click_trackers.iter().any(|t| t.id == id) {
                return Err(format!("click tracker {id} is not in the config"));
            }
            if js {
                return Err("a click tracker is a link, it has no JavaScript form".into());
            }
            Ok(format!("{base}/clktrb?id={id}&cachebuster=[CACHEBUSTER]&ancost=[ANCOST]&redir=[REDIRECT_URL]"))
        }
        TagFor::Pixel(id) => {
            if !cfg.conversion_pixels.iter().any(|p| p.id == id) {
                return Err(format!("conversion pixel {id} is not in the config"));
            }
            Ok(if js {
                format!("<!-- Conversion Pixel - DO NOT MODIFY --> <script src=\"{base}/px?id={id}&t=1\" type=\"text/javascript\"></script> <!-- End of Conversion Pixel -->")
            } else {
                format!("<!-- Conversion Pixel - DO NOT MODIFY --> <img src=\"{base}/px?id={id}&t=2\" width=\"1\" height=\"1\" /> <!-- End of Conversion Pixel -->")
            })
        }
        TagFor::Segment(id) => {
            if !cfg.segments.iter().any(|s| s.id == id) {
                return Err(format!("segment {id} is not in the config"));
            }
            Ok(if js {
                format!("<!-- Segment Pixel - DO NOT MODIFY --> <script src=\"{base}/seg?add={id}&t=1\" type=\"text/javascript\"></script> <!-- End of Segment Pixel -->")
            } else {
                format!("<!-- Segment Pixel - DO NOT MODIFY --> <img src=\"{base}/seg?add={id}&t=2\" width=\"1\" height=\"1\" /> <!-- End of Segment Pixel -->")
            })
        }
    }
}
