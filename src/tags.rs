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
    /// A `curl` call of `POST /v1/conversions` reporting this pixel from an
    /// advertiser's server.
    ServerConversion(PixelId),
    /// The advertiser's site-wide snippet that keeps a click id from the
    /// landing URL (for conversions on later pages).
    Landing,
}

/// How to print it.
#[derive(Clone, Copy, Debug, Default)]
pub struct TagForm {
    /// The JavaScript form instead of the image.
    pub js: bool,
    /// Add the consent macros ad servers fill in (`gdpr`, `gdpr_consent`,
    /// `gpp`, `gpp_sid`), with `privacy.tcf_vendor_id` in their names.
    pub consent: bool,
}

/// The tag, or why there is none.
pub fn tag(cfg: &Config, what: TagFor, form: TagForm) -> Result<String, String> {
    let base = cfg.server.public_url.trim_end_matches('/');
    let consent = if form.consent {
        let Some(vendor) = cfg.privacy.tcf_vendor_id else {
            return Err(
                "--consent needs privacy.tcf_vendor_id in the config: the ad server fills \
                 ${GDPR_CONSENT_<vendor id>} with the consent string for that vendor"
                    .into(),
            );
        };
        format!("&gdpr=${{GDPR}}&gdpr_consent=${{GDPR_CONSENT_{vendor}}}&gpp=${{GPP_STRING_{vendor}}}&gpp_sid=${{GPP_SID}}")
    } else {
        String::new()
    };
    let js = form.js;
    match what {
        TagFor::Tracker(id) => {
            if !cfg.impression_trackers.iter().any(|t| t.id == id) {
                return Err(format!("impression tracker {id} is not in the config"));
            }
            Ok(if js {
                format!("<!-- Imp Tracker DO NOT MODIFY --> <script type=\"text/javascript\" src=\"{base}/imptr?id={id}&cachebuster=[CACHEBUSTER]&ancost=[ANCOST]{consent}&t=1\"></script> <!-- End of Imp Tracker -->")
            } else {
                format!("<!-- Imp Tracker DO NOT MODIFY --> <img src=\"{base}/imptr?id={id}&cachebuster=[CACHEBUSTER]&ancost=[ANCOST]{consent}&t=2&redir=[REDIRECT_URL]\" width=\"1\" height=\"1\" /> <!-- End of Imp Tracker -->")
            })
        }
        TagFor::ClickTracker(id) => {
            if !cfg.click_trackers.iter().any(|t| t.id == id) {
                return Err(format!("click tracker {id} is not in the config"));
            }
            if js {
                return Err("a click tracker is a link, it has no JavaScript form".into());
            }
            Ok(format!("{base}/clktrb?id={id}&cachebuster=[CACHEBUSTER]&ancost=[ANCOST]{consent}&redir=[REDIRECT_URL]"))
        }
        TagFor::Pixel(id) => {
            let Some(pixel) = cfg.conversion_pixels.iter().find(|p| p.id == id) else {
                return Err(format!("conversion pixel {id} is not in the config"));
            };
            Ok(if js {
                conversion_script(
                    &format!("{base}/px?id={id}{consent}&t=1"),
                    &cfg.redirect.click_id_param,
                    window_secs(pixel.post_click_minutes),
                )
            } else {
                format!("<!-- Conversion Pixel - DO NOT MODIFY --> <img src=\"{base}/px?id={id}{consent}&t=2\" width=\"1\" height=\"1\" /> <!-- End of Conversion Pixel -->")
            })
        }
        TagFor::ServerConversion(id) => server_conversion(cfg, base, id),
        TagFor::Landing => {
            let longest = cfg
                .conversion_pixels
                .iter()
                .map(|p| window_secs(p.post_click_minutes))
                .max()
                .unwrap_or(window_secs(0));
            Ok(format!(
                "<!-- Click id keeper - DO NOT MODIFY --> <script type=\"text/javascript\">(function(){{{}}})();</script> <!-- End of Click id keeper -->",
                keep_click_id(&cfg.redirect.click_id_param, longest)
            ))
        }
        TagFor::Segment(id) => {
            if !cfg.segments.iter().any(|s| s.id == id) {
                return Err(format!("segment {id} is not in the config"));
            }
            Ok(if js {
                format!("<!-- Segment Pixel - DO NOT MODIFY --> <script src=\"{base}/seg?add={id}{consent}&t=1\" type=\"text/javascript\"></script> <!-- End of Segment Pixel -->")
            } else {
                format!("<!-- Segment Pixel - DO NOT MODIFY --> <img src=\"{base}/seg?add={id}{consent}&t=2\" width=\"1\" height=\"1\" /> <!-- End of Segment Pixel -->")
            })
        }
    }
}

/// A ready `curl` example of `POST /v1/conversions` for one pixel, naming
/// the keys that may report it (a secret is never printed: the example reads
/// it from `$PIXELD_API_KEY`).
fn server_conversion(cfg: &Config, base: &str, id: PixelId) -> Result<String, String> {
    let Some(pixel) = cfg.conversion_pixels.iter().find(|p| p.id == id) else {
        return Err(format!("conversion pixel {id} is not in the config"));
    };
    let keys: Vec<&str> = cfg
        .api_keys
        .iter()
        .filter(|k| k.advertisers.contains(&pixel.advertiser))
        .map(|k| k.id.as_str())
        .collect();
    if keys.is_empty() {
        return Err(format!(
            "no [[api_keys]] entry may report pixel {id}: add one with advertisers = [{}]",
            pixel.advertiser
        ));
    }
    let param = &cfg.redirect.click_id_param;
    Ok(format!(
        "# Pixel {id} from the advertiser's server; PIXELD_API_KEY holds the secret of api key {keys}.\n\
         # clid: the landing URL's {param} (or the _{param} cookie); ts: the sale's time in ms.\n\
         curl -sS {base}/v1/conversions \\\n  \
         -H \"Authorization: Bearer $PIXELD_API_KEY\" \\\n  \
         -H 'Content-Type: application/json' \\\n  \
         -d '{{\"conversions\": [{{\"pixel_id\": {id}, \"clid\": \"CLICK_ID\", \"order_id\": \"ORDER_ID\", \"value\": \"19.99\", \"ts\": 1795650569700}}]}}'",
        keys = keys.join(" or "),
    ))
}

/// The conversion pixel's JavaScript form. A click tracker with
/// `append_click_id` lands the browser on the advertiser's page with
/// `<param>=<click id>`; this script keeps that id in a first-party cookie
/// on the advertiser's own domain (which no third-party-cookie block
/// touches) for the pixel's post-click window, and sends it as `clid` with
/// the conversion, wherever on the site the pixel fires.
fn conversion_script(src: &str, param: &str, max_age_secs: u64) -> String {
    format!(
        "<!-- Conversion Pixel - DO NOT MODIFY --> <script type=\"text/javascript\">(function(){{{}\
var s=document.createElement(\"script\");s.async=true;\
s.src=\"{src}\"+(v?\"&clid=\"+v:\"\");\
(document.head||document.body||document.documentElement).appendChild(s);}})();</script> <!-- End of Conversion Pixel -->",
        keep_click_id(param, max_age_secs)
    )
}

/// Script that leaves the click id in `v`: from the page's URL (and then
/// kept in the first-party cookie `_<param>` for `max_age_secs`), else from
/// that cookie. Only the token's own alphabet is ever read back: nothing
/// from the URL can leave the pattern.
fn keep_click_id(param: &str, max_age_secs: u64) -> String {
    format!(
        "var k=\"_{param}\",v=(location.search.match(/[?&]{param}=([A-Za-z0-9_-]{{20,{max}}})(?:&|$)/)||[])[1];\
if(v){{document.cookie=k+\"=\"+v+\"; Max-Age={max_age_secs}; Path=/; SameSite=Lax\";}}\
else{{v=(document.cookie.match(new RegExp(\"(?:^|; )\"+k+\"=([A-Za-z0-9_-]{{20,{max}}})\"))||[])[1];}}",
        // Click ids of version 2 carry the clicker's id: up to 82 chars.
        max = crate::pixel::click_id::MAX_TOKEN_CHARS
    )
}

/// A post-click window in seconds (0 minutes means the maximum, 90 days).
fn window_secs(minutes: u32) -> u64 {
    let minutes = if minutes == 0 { 129_600 } else { minutes };
    minutes as u64 * 60
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(vendor: Option<u16>) -> Config {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/pixeld.toml"))
                .unwrap();
        let mut cfg = crate::config::parse(&text, "example").unwrap();
        cfg.privacy.tcf_vendor_id = vendor;
        cfg
    }

    #[test]
    fn consent_macros_come_before_redir_and_name_the_vendor() {
        let form = TagForm {
            js: false,
            consent: true,
        };
        let t = tag(&cfg(Some(755)), TagFor::Tracker(TrackerId(2766)), form).unwrap();
        let consent = "&gdpr=${GDPR}&gdpr_consent=${GDPR_CONSENT_755}&gpp=${GPP_STRING_755}&gpp_sid=${GPP_SID}";
        let at = t.find(consent).expect(&t);
        assert!(at < t.find("&redir=").unwrap(), "redir takes the rest: {t}");
        let click = tag(
            &cfg(Some(755)),
            TagFor::ClickTracker(ClickTrackerId(21378)),
            form,
        )
        .unwrap();
        assert!(
            click.contains(consent) && click.ends_with("&redir=[REDIRECT_URL]"),
            "{click}"
        );
        let e = tag(&cfg(None), TagFor::Tracker(TrackerId(2766)), form).unwrap_err();
        assert!(e.contains("privacy.tcf_vendor_id"), "{e}");
    }

    #[test]
    fn the_conversion_script_keeps_the_click_id_for_the_post_click_window() {
        let form = TagForm {
            js: true,
            consent: false,
        };
        let t = tag(&cfg(None), TagFor::Pixel(PixelId(7313)), form).unwrap();
        // 7313: post_click_minutes = 20160 (14 days).
        assert!(t.contains("Max-Age=1209600"), "{t}");
        assert!(t.contains("[?&]pxclid=([A-Za-z0-9_-]{20,82})"), "{t}");
        assert!(t.contains("\"&clid=\"+v"), "{t}");
        assert!(t.contains("/px?id=7313&t=1"), "{t}");
        let keeper = tag(&cfg(None), TagFor::Landing, TagForm::default()).unwrap();
        assert!(
            keeper.contains("Max-Age=1209600"),
            "the longest window: {keeper}"
        );
        assert!(
            !keeper.contains("/px?"),
            "the keeper fires nothing: {keeper}"
        );
    }
}
