//! Consent signals on a pixel request: `gdpr`, `gdpr_consent` (an IAB TCF
//! v2 string), `gpp` and `gpp_sid`, the macros ad servers fill in. They are
//! recorded on the event; with `privacy.tcf_vendor_id` set and `gdpr=1`
//! they decide whether pixeld may use the cookie (TCF purpose 1) and
//! attribute the event (purpose 7). Unreplaced placeholders (`${GDPR}`,
//! `${GDPR_CONSENT_755}`) count as absent.

use std::borrow::Cow;

use super::query::{Key, Param, Query};
use super::tcf::{TcString, MEASUREMENT, STORAGE};
use crate::event::{Consent, TcfSummary, Warnings};

/// What consent allows for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allowed {
    /// Read and set the id cookie (purpose 1).
    pub storage: bool,
    /// Attribute the event (purpose 7).
    pub measurement: bool,
}

impl Allowed {
    pub const ALL: Allowed = Allowed {
        storage: true,
        measurement: true,
    };
}

/// Reads the consent parameters of `q`. `vendor` is `privacy.tcf_vendor_id`:
/// without it consent is recorded, not enforced. Problems are warnings,
/// never errors: a malformed string is `consent_invalid` and counts as no
/// consent where consent is enforced.
pub fn read<'a>(
    q: &Query<'a>,
    vendor: Option<u16>,
    warnings: &mut Warnings,
) -> (Option<Box<Consent<'a>>>, Allowed) {
    let keys = [Key::Gdpr, Key::GdprConsent, Key::Gpp, Key::GppSid];
    if keys.iter().all(|k| q.raw(*k).is_none()) {
        return (None, Allowed::ALL);
    }
    let mut c = Consent::default();
    match q.param(Key::Gdpr) {
        Param::Absent => {}
        Param::Present(v) if v == "1" => c.gdpr = Some(true),
        Param::Present(v) if v == "0" => c.gdpr = Some(false),
        _ => warnings.push("gdpr_invalid"),
    }
    let (tc, consent_sent) = read_tc_string(q, &mut c, warnings);
    read_gpp(q, &mut c, warnings);
    c.tcf = tc.as_ref().map(|t| TcfSummary {
        purposes: t.purposes_consent,
        vendor_storage: vendor.map(|v| t.allows(v, STORAGE)),
        vendor_measurement: vendor.map(|v| t.allows(v, MEASUREMENT)),
        cmp_id: t.cmp_id,
    });
    let allowed = allowed(vendor, c.gdpr, tc.as_ref(), consent_sent, warnings);
    (Some(Box::new(c)), allowed)
}

/// `gdpr_consent`, recorded on `c` and parsed; with whether it was sent at
/// all (even malformed).
fn read_tc_string<'a>(
    q: &Query<'a>,
    c: &mut Consent<'a>,
    warnings: &mut Warnings,
) -> (Option<TcString>, bool) {
    let mut tc = None;
    let consent_param = q.param(Key::GdprConsent);
    let consent_sent = !matches!(consent_param, Param::Absent);
    match consent_param {
        Param::Absent => {}
        Param::Malformed => warnings.push("consent_invalid"),
        // Decided on exactly what is recorded: a string longer than that is
        // refused whole (and not recorded), never judged on bytes the
        // event does not keep.
        Param::Present(ref v) if v.len() > Consent::MAX_RAW => warnings.push("consent_invalid"),
        Param::Present(v) => {
            match TcString::parse(&v) {
                Ok(t) => tc = Some(t),
                Err(_) => warnings.push("consent_invalid"),
            }
            c.tc_string = Some(v);
        }
    }
    (tc, consent_sent)
}

/// `gpp` and `gpp_sid`, recorded on `c`.
fn read_gpp<'a>(q: &Query<'a>, c: &mut Consent<'a>, warnings: &mut Warnings) {
    match q.param(Key::Gpp) {
        Param::Absent => {}
        Param::Malformed => warnings.push("gpp_invalid"),
        Param::Present(v) => c.gpp = Some(cut(v)),
    }
    match q.param(Key::GppSid) {
        Param::Absent => {}
        Param::Malformed => warnings.push("gpp_sid_invalid"),
        Param::Present(v) => {
            let ids: Option<Vec<u16>> = v
                .split([',', '_'])
                .take(32)
                .map(|s| s.trim().parse().ok())
                .collect();
            match ids {
                Some(ids) => c.gpp_sid = ids,
                None => warnings.push("gpp_sid_invalid"),
            }
        }
    }
}

/// What the TC string allows `vendor`, enforced only with a vendor id and
/// `gdpr=1`; what it does not allow is also a warning.
fn allowed(
    vendor: Option<u16>,
    gdpr: Option<bool>,
    tc: Option<&TcString>,
    consent_sent: bool,
    warnings: &mut Warnings,
) -> Allowed {
    let allowed = match (vendor, gdpr) {
        (Some(v), Some(true)) => match tc {
            Some(t) => Allowed {
                storage: t.allows(v, STORAGE),
                measurement: t.allows(v, MEASUREMENT),
            },
            None => {
                // One warning per problem: a string that came but was
                // refused is `consent_invalid` only.
                if !consent_sent {
                    warnings.push("consent_missing");
                }
                Allowed {
                    storage: false,
                    measurement: false,
                }
            }
        },
        _ => Allowed::ALL,
    };
    if !allowed.storage {
        warnings.push("no_storage_consent");
    }
    if !allowed.measurement {
        warnings.push("no_measurement_consent");
    }
    allowed
}

/// At most [`Consent::MAX_RAW`] bytes, cut on a character boundary.
fn cut(v: Cow<'_, str>) -> Cow<'_, str> {
    if v.len() <= Consent::MAX_RAW {
        return v;
    }
    let mut end = Consent::MAX_RAW;
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    match v {
        Cow::Borrowed(s) => Cow::Borrowed(&s[..end]),
        Cow::Owned(s) => Cow::Owned(s[..end].to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// From `tests/fixtures/tcf/vectors.json`: purposes 1 and 7, vendors
    /// 1, 3, 8, 12 and 755.
    const BOTH: &str =
        "CQeEcwAQeEcwAAKACAENCWEgAIIAAAAAAAYgF5wBQAAgADAAQAAwBeYAAAAA.IAAA.YAAAAAAAAAAA";
    /// Purpose 7 only, vendor 755.
    const SEVEN: &str =
        "CQeEcwAQeEcwAAKACAENCWEgAAIAAEIAAAYgF5wAQF5gXnACAAEAvMAA.IAAA.YAAAAAAAAAAA";

    fn run(
        query: &str,
        vendor: Option<u16>,
    ) -> (Option<Box<Consent<'static>>>, Allowed, Vec<String>) {
        let query: &'static str = Box::leak(query.to_string().into_boxed_str());
        let q = Query::parse(query, 8192).unwrap();
        let mut w = Warnings::default();
        let (c, a) = read(&q, vendor, &mut w);
        (c, a, w.as_slice().iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn no_signals_record_nothing_and_allow_everything() {
        let (c, a, w) = run("id=1&cachebuster=2", Some(755));
        assert!(c.is_none());
        assert_eq!(a, Allowed::ALL);
        assert!(w.is_empty());
        // Placeholders the ad server did not fill are absent values.
        let (c, a, _) = run("gdpr=${GDPR}&gdpr_consent=${GDPR_CONSENT_755}", Some(755));
        assert_eq!(a, Allowed::ALL);
        assert_eq!(c.unwrap().gdpr, None);
    }

    #[test]
    fn consent_is_enforced_only_with_a_vendor_id_and_gdpr_1() {
        let (c, a, w) = run(&format!("gdpr=1&gdpr_consent={BOTH}"), Some(755));
        assert_eq!(a, Allowed::ALL, "{w:?}");
        let c = c.unwrap();
        assert_eq!(c.gdpr, Some(true));
        let t = c.tcf.unwrap();
        assert_eq!(t.vendor_storage, Some(true));
        assert_eq!(t.purposes, 1 | 1 << 6);
        assert_eq!(c.tc_string.as_deref(), Some(BOTH));

        let (_, a, w) = run(&format!("gdpr=1&gdpr_consent={SEVEN}"), Some(755));
        assert_eq!(
            a,
            Allowed {
                storage: false,
                measurement: true
            }
        );
        assert_eq!(w, ["no_storage_consent"]);

        // Another vendor: nothing.
        let (_, a, _) = run(&format!("gdpr=1&gdpr_consent={SEVEN}"), Some(3));
        assert!(!a.storage && !a.measurement);
        // gdpr=0, or no vendor id: recorded, not enforced.
        assert_eq!(
            run(&format!("gdpr=0&gdpr_consent={SEVEN}"), Some(3)).1,
            Allowed::ALL
        );
        let (c, a, _) = run(&format!("gdpr=1&gdpr_consent={SEVEN}"), None);
        assert_eq!(a, Allowed::ALL);
        assert_eq!(c.unwrap().tcf.unwrap().vendor_storage, None);
    }

    #[test]
    fn a_malformed_or_missing_string_is_a_warning_and_no_consent() {
        let (c, a, w) = run("gdpr=1&gdpr_consent=not-a-tc-string!", Some(755));
        assert!(!a.storage && !a.measurement);
        assert!(w.contains(&"consent_invalid".to_string()), "{w:?}");
        assert!(
            !w.contains(&"consent_missing".to_string()),
            "one warning per problem: {w:?}"
        );
        assert!(c.unwrap().tcf.is_none());
        let (_, a, w) = run("gdpr=1", Some(755));
        assert!(!a.storage && !a.measurement);
        assert!(w.contains(&"consent_missing".to_string()), "{w:?}");
    }

    /// Issue 25, finding 9: the decision is taken on what the event keeps.
    /// A valid string padded past what is recorded used to be decided whole
    /// and recorded cut; now it is refused whole and not recorded.
    #[test]
    fn a_consent_string_longer_than_what_is_recorded_is_invalid_and_not_recorded() {
        let padded = format!("{BOTH}.{}", "A".repeat(Consent::MAX_RAW));
        let (c, a, w) = run(&format!("gdpr=1&gdpr_consent={padded}"), Some(755));
        assert!(!a.storage && !a.measurement);
        assert_eq!(
            w,
            [
                "consent_invalid",
                "no_storage_consent",
                "no_measurement_consent"
            ]
        );
        let c = c.unwrap();
        assert!(c.tc_string.is_none() && c.tcf.is_none());
    }

    #[test]
    fn gpp_is_recorded_and_long_strings_are_cut() {
        let long = "D".repeat(5000);
        let (c, _, w) = run(&format!("gpp={long}&gpp_sid=2,6"), Some(755));
        let c = c.unwrap();
        assert_eq!(c.gpp.as_deref().map(str::len), Some(Consent::MAX_RAW));
        assert_eq!(c.gpp_sid, [2, 6]);
        assert!(w.is_empty(), "{w:?}");
        let (_, _, w) = run("gpp_sid=2,x", None);
        assert_eq!(w, ["gpp_sid_invalid"]);
    }
}
