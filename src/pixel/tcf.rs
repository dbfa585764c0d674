//! IAB TCF v2 core strings (the `gdpr_consent` an ad server passes): what
//! the person consented to, for which vendors, and the publisher's
//! restrictions.
//!
//! A TC string is segments joined by `.`, each unpadded base64url; the first
//! is the core segment, read here bit by bit (IAB Tech Lab, "Transparency
//! and Consent String with Global Vendor List Format", v2):
//!
//! ```text
//! Version 6 | Created 36 | LastUpdated 36 | CmpId 12 | CmpVersion 12
//! | ConsentScreen 6 | ConsentLanguage 12 | VendorListVersion 12
//! | TcfPolicyVersion 6 | IsServiceSpecific 1 | UseNonStandardTexts 1
//! | SpecialFeatureOptIns 12 | PurposesConsent 24 | PurposesLITransparency 24
//! | PurposeOneTreatment 1 | PublisherCC 12
//! | vendor consents | vendor legitimate interests | publisher restrictions
//! ```
//! A vendor section is `MaxVendorId 16 | IsRangeEncoding 1` then either a
//! bit field of MaxVendorId bits or `NumEntries 12` entries of
//! `IsARange 1 | Start 16 [| End 16]`. Restrictions are `NumPubRestrictions
//! 12` entries of `PurposeId 6 | RestrictionType 2 | NumEntries 12 | ranges`.
//! The other segments (disclosed vendors, publisher TC) do not bear on
//! pixeld's decisions and are not read.

use super::b64::unbase64url_bits;

/// Purpose 1: store and/or access information on a device (the cookie).
pub const STORAGE: u8 = 1;
/// Purpose 7: measure advertising performance (attribution).
pub const MEASUREMENT: u8 = 7;

/// Vendor ids as sorted, disjoint, inclusive ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Vendors(Vec<(u16, u16)>);

impl Vendors {
    pub fn contains(&self, id: u16) -> bool {
        let i = self.0.partition_point(|(_, end)| *end < id);
        self.0.get(i).is_some_and(|(start, _)| *start <= id)
    }

    pub fn ids(&self) -> impl Iterator<Item = u16> + '_ {
        self.0.iter().flat_map(|(a, b)| *a..=*b)
    }

    /// From ranges in any order, overlapping or not.
    fn from_ranges(mut r: Vec<(u16, u16)>) -> Vendors {
        r.sort_unstable();
        let mut out: Vec<(u16, u16)> = Vec::with_capacity(r.len());
        for (a, b) in r {
            match out.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => out.push((a, b)),
            }
        }
        Vendors(out)
    }
}

/// A publisher restriction's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restriction {
    /// Purpose flatly not allowed for these vendors.
    NotAllowed,
    /// Only with consent (legitimate interest not accepted).
    RequireConsent,
    /// Only on legitimate interest (consent not accepted).
    RequireLegitimateInterest,
}

/// The core segment, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcString {
    pub version: u8,
    pub cmp_id: u16,
    pub cmp_version: u16,
    pub vendor_list_version: u16,
    pub policy_version: u8,
    /// Bit `p - 1` set: consent to purpose `p` (1..=24).
    pub purposes_consent: u32,
    /// Bit `p - 1` set: legitimate interest in purpose `p` established.
    pub purposes_li: u32,
    pub vendor_consents: Vendors,
    pub vendor_li: Vendors,
    /// (purpose, type, vendors).
    pub restrictions: Vec<(u8, Restriction, Vendors)>,
}

/// Why a string was not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcfError {
    /// Not base64url, or shorter than its fields say.
    Malformed,
    /// Not a version 2 core string.
    Version(u8),
}

impl TcString {
    pub fn parse(s: &str) -> Result<TcString, TcfError> {
        let core = s.split('.').next().unwrap_or_default();
        let bytes = unbase64url_bits(core).ok_or(TcfError::Malformed)?;
        let mut r = Bits::new(&bytes);
        let version = r.take(6)? as u8;
        if version != 2 {
            return Err(TcfError::Version(version));
        }
        r.skip(36 + 36)?;
        let cmp_id = r.take(12)? as u16;
        let cmp_version = r.take(12)? as u16;
        r.skip(6 + 12)?;
        let vendor_list_version = r.take(12)? as u16;
        let policy_version = r.take(6)? as u8;
        r.skip(1 + 1 + 12)?;
        let purposes_consent = r.take(24)? as u32;
        let purposes_li = r.take(24)? as u32;
        r.skip(1 + 12)?;
        let vendor_consents = r.vendor_section()?;
        let vendor_li = r.vendor_section()?;
        // Strings from before restrictions were common may end here.
        let mut restrictions = Vec::new();
        if let Ok(n) = r.take(12) {
            for _ in 0..n {
                let purpose = r.take(6)? as u8;
                let kind = match r.take(2)? {
                    0 => Restriction::NotAllowed,
                    1 => Restriction::RequireConsent,
                    2 => Restriction::RequireLegitimateInterest,
                    _ => return Err(TcfError::Malformed),
                };
                let vendors = r.ranges()?;
                restrictions.push((purpose, kind, vendors));
            }
        }
        Ok(TcString {
            version,
            cmp_id,
            cmp_version,
            vendor_list_version,
            policy_version,
            // Purpose bits are written first-purpose-first: bit 23 of the
            // field is purpose 1.
            purposes_consent: reverse24(purposes_consent),
            purposes_li: reverse24(purposes_li),
            vendor_consents,
            vendor_li,
            restrictions,
        })
    }

    pub fn purpose_consent(&self, p: u8) -> bool {
        (1..=24).contains(&p) && self.purposes_consent & (1 << (p - 1)) != 0
    }

    pub fn purposes(&self) -> impl Iterator<Item = u8> + '_ {
        (1..=24).filter(|p| self.purpose_consent(*p))
    }

    fn restricted(&self, purpose: u8, vendor: u16, kind: Restriction) -> bool {
        self.restrictions
            .iter()
            .any(|(p, k, v)| *p == purpose && *k == kind && v.contains(vendor))
    }

    /// Whether `vendor` may process data for `purpose` on consent: the person
    /// consented to the purpose and to the vendor, and the publisher did not
    /// forbid it or require legitimate interest instead.
    pub fn consents(&self, vendor: u16, purpose: u8) -> bool {
        self.purpose_consent(purpose)
            && self.vendor_consents.contains(vendor)
            && !self.restricted(purpose, vendor, Restriction::NotAllowed)
            && !self.restricted(purpose, vendor, Restriction::RequireLegitimateInterest)
    }

    /// Whether `vendor` may process data for `purpose` on consent or, where
    /// the TCF allows it (not purpose 1), on legitimate interest.
    pub fn allows(&self, vendor: u16, purpose: u8) -> bool {
        if self.consents(vendor, purpose) {
            return true;
        }
        purpose != STORAGE
            && (1..=24).contains(&purpose)
            && self.purposes_li & (1 << (purpose - 1)) != 0
            && self.vendor_li.contains(vendor)
            && !self.restricted(purpose, vendor, Restriction::NotAllowed)
            && !self.restricted(purpose, vendor, Restriction::RequireConsent)
    }
}

fn reverse24(v: u32) -> u32 {
    v.reverse_bits() >> 8
}

/// A big-endian bit reader.
struct Bits<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Bits<'a> {
    fn new(bytes: &'a [u8]) -> Bits<'a> {
        Bits { bytes, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<u64, TcfError> {
        debug_assert!(n <= 64);
        if self.pos + n > self.bytes.len() * 8 {
            return Err(TcfError::Malformed);
        }
        let mut v = 0u64;
        for _ in 0..n {
            let bit = self.bytes[self.pos / 8] >> (7 - self.pos % 8) & 1;
            v = v << 1 | bit as u64;
            self.pos += 1;
        }
        Ok(v)
    }

    fn skip(&mut self, n: usize) -> Result<(), TcfError> {
        if self.pos + n > self.bytes.len() * 8 {
            return Err(TcfError::Malformed);
        }
        self.pos += n;
        Ok(())
    }

    fn vendor_section(&mut self) -> Result<Vendors, TcfError> {
        let max = self.take(16)? as u16;
        if self.take(1)? == 1 {
            return self.ranges();
        }
        let mut ranges: Vec<(u16, u16)> = Vec::new();
        for id in 1..=max {
            if self.take(1)? == 1 {
                match ranges.last_mut() {
                    Some(last) if last.1 + 1 == id => last.1 = id,
                    _ => ranges.push((id, id)),
                }
            }
        }
        Ok(Vendors(ranges))
    }

    fn ranges(&mut self) -> Result<Vendors, TcfError> {
        let n = self.take(12)?;
        let mut ranges = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let is_range = self.take(1)? == 1;
            let start = self.take(16)? as u16;
            let end = if is_range {
                self.take(16)? as u16
            } else {
                start
            };
            if start == 0 || end < start {
                return Err(TcfError::Malformed);
            }
            ranges.push((start, end));
        }
        Ok(Vendors::from_ranges(ranges))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Strings made with the IAB Tech Lab's own encoder
    /// (`tests/fixtures/tcf/gen.js`, @iabtechlabtcf/core 1.5.21) and what
    /// that library decodes from them.
    #[derive(serde::Deserialize)]
    struct Vector {
        name: String,
        tc: String,
        purposes: Vec<u8>,
        vendors: Vec<u16>,
        li_vendors: Vec<u16>,
        restrictions: Vec<VectorRestriction>,
    }

    #[derive(serde::Deserialize)]
    struct VectorRestriction {
        purpose: u8,
        #[serde(rename = "type")]
        kind: u8,
        vendors: Vec<u16>,
    }

    fn vectors() -> Vec<Vector> {
        let text = include_str!("../../tests/fixtures/tcf/vectors.json");
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn the_iab_libraries_strings_decode_to_what_it_says() {
        let vectors = vectors();
        assert!(vectors.len() >= 6);
        for v in vectors {
            let tc = TcString::parse(&v.tc).unwrap_or_else(|e| panic!("{}: {e:?}", v.name));
            assert_eq!(tc.version, 2);
            assert_eq!(tc.cmp_id, 10, "{}", v.name);
            assert_eq!(tc.cmp_version, 2, "{}", v.name);
            assert_eq!(tc.vendor_list_version, 150, "{}", v.name);
            assert_eq!(tc.policy_version, 4, "{}", v.name);
            assert_eq!(tc.purposes().collect::<Vec<_>>(), v.purposes, "{}", v.name);
            assert_eq!(
                tc.vendor_consents.ids().collect::<Vec<_>>(),
                v.vendors,
                "{}",
                v.name
            );
            assert_eq!(
                tc.vendor_li.ids().collect::<Vec<_>>(),
                v.li_vendors,
                "{}",
                v.name
            );
            let mut got: Vec<(u8, u8, Vec<u16>)> = tc
                .restrictions
                .iter()
                .map(|(p, k, vs)| (*p, *k as u8, vs.ids().collect()))
                .collect();
            let mut want: Vec<(u8, u8, Vec<u16>)> = v
                .restrictions
                .iter()
                .map(|r| (r.purpose, r.kind, r.vendors.clone()))
                .collect();
            got.sort();
            want.sort();
            assert_eq!(got, want, "{}", v.name);
        }
    }

    #[test]
    fn both_vendor_encodings_are_covered_by_the_vectors() {
        // The 6 + 36 + 36 + 12 + 12 + 6 + 12 + 12 + 6 + 1 + 1 + 12 + 24 +
        // 24 + 1 + 12 bits before the vendor section, then MaxVendorId.
        let mut seen = [false; 2];
        for v in vectors() {
            let bytes = unbase64url_bits(v.tc.split('.').next().unwrap()).unwrap();
            let mut r = Bits::new(&bytes);
            r.skip(213 + 16).unwrap();
            seen[r.take(1).unwrap() as usize] = true;
        }
        assert_eq!(seen, [true, true], "bit field and range encodings");
    }

    #[test]
    fn decisions_follow_consent_legitimate_interest_and_restrictions() {
        let by_name = |n: &str| {
            let v = vectors().into_iter().find(|v| v.name == n).unwrap();
            TcString::parse(&v.tc).unwrap()
        };
        let none = by_name("no consent at all");
        assert!(!none.allows(755, STORAGE) && !none.allows(755, MEASUREMENT));
        let both = by_name("purposes 1 and 7, bit-field vendors");
        assert!(both.allows(755, STORAGE) && both.allows(755, MEASUREMENT));
        assert!(!both.allows(756, STORAGE), "vendor not consented");
        let seven = by_name("purpose 7 only, vendor 755");
        assert!(!seven.allows(755, STORAGE));
        assert!(seven.allows(755, MEASUREMENT));
        assert!(!seven.allows(3, MEASUREMENT));
        let restricted = by_name("publisher restrictions");
        assert!(restricted.allows(755, STORAGE));
        assert!(
            !restricted.allows(755, MEASUREMENT),
            "the publisher forbids purpose 7 for vendor 755"
        );
    }

    #[test]
    fn junk_is_an_error_not_a_panic() {
        for s in [
            "",
            "!!!",
            "A",
            "AAAA",
            "BAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "CO.",
            "C",
        ] {
            assert!(TcString::parse(s).is_err(), "{s}");
        }
        // A version 1 string.
        assert_eq!(
            TcString::parse("BOEFEAyOEFEAyAHABDENAI4AAAB9vABAASA"),
            Err(TcfError::Version(1))
        );
    }

    /// A core-segment encoder, for the round trip (pixeld itself never
    /// writes TC strings).
    fn encode(tc: &TcString, ranges: bool) -> String {
        struct W(Vec<bool>);
        impl W {
            fn put(&mut self, v: u64, n: usize) {
                for i in (0..n).rev() {
                    self.0.push(v >> i & 1 == 1);
                }
            }
            fn ranges(&mut self, v: &Vendors) {
                self.put(v.0.len() as u64, 12);
                for (a, b) in &v.0 {
                    self.put((a != b) as u64, 1);
                    self.put(*a as u64, 16);
                    if a != b {
                        self.put(*b as u64, 16);
                    }
                }
            }
            fn vendors(&mut self, v: &Vendors, ranges: bool) {
                let max = v.0.last().map_or(0, |r| r.1);
                self.put(max as u64, 16);
                self.put(ranges as u64, 1);
                if ranges {
                    self.ranges(v);
                } else {
                    for id in 1..=max {
                        self.put(v.contains(id) as u64, 1);
                    }
                }
            }
        }
        let mut w = W(Vec::new());
        w.put(tc.version as u64, 6);
        w.put(0, 36);
        w.put(0, 36);
        w.put(tc.cmp_id as u64, 12);
        w.put(tc.cmp_version as u64, 12);
        w.put(0, 18);
        w.put(tc.vendor_list_version as u64, 12);
        w.put(tc.policy_version as u64, 6);
        w.put(0, 14);
        w.put(reverse24(tc.purposes_consent) as u64, 24);
        w.put(reverse24(tc.purposes_li) as u64, 24);
        w.put(0, 13);
        w.vendors(&tc.vendor_consents, ranges);
        w.vendors(&tc.vendor_li, ranges);
        w.put(tc.restrictions.len() as u64, 12);
        for (p, k, v) in &tc.restrictions {
            w.put(*p as u64, 6);
            w.put(*k as u64, 2);
            w.ranges(v);
        }
        let bytes: Vec<u8> =
            w.0.chunks(8)
                .map(|c| {
                    c.iter()
                        .enumerate()
                        .fold(0u8, |b, (i, bit)| b | (*bit as u8) << (7 - i))
                })
                .collect();
        crate::pixel::b64::base64url(&bytes)
    }

    fn vendors() -> impl proptest::strategy::Strategy<Value = Vendors> {
        proptest::collection::vec((1u16..3000, 0u16..40), 0..20).prop_map(|v| {
            Vendors::from_ranges(
                v.into_iter()
                    .map(|(a, n)| (a, a.saturating_add(n)))
                    .collect(),
            )
        })
    }

    use proptest::strategy::Strategy;

    proptest::proptest! {
        #[test]
        fn an_encoded_string_reads_back_the_same(
            purposes in 0u32..(1 << 24),
            li in 0u32..(1 << 24),
            cmp_id in 0u16..4096,
            consents in vendors(),
            lis in vendors(),
            restricted in vendors(),
            ranges: bool,
        ) {
            let tc = TcString {
                version: 2,
                cmp_id,
                cmp_version: 3,
                vendor_list_version: 150,
                policy_version: 4,
                purposes_consent: purposes,
                purposes_li: li,
                vendor_consents: consents,
                vendor_li: lis,
                restrictions: if restricted.0.is_empty() {
                    vec![]
                } else {
                    vec![(7, Restriction::NotAllowed, restricted)]
                },
            };
            proptest::prop_assert_eq!(TcString::parse(&encode(&tc, ranges)), Ok(tc));
        }

        #[test]
        fn parsing_never_panics(s in "[A-Za-z0-9_.-]{0,300}") {
            let _ = TcString::parse(&s);
        }

        #[test]
        fn parsing_cut_or_edited_vectors_never_panics(i in 0usize..6, cut in 0usize..120, flip in 0usize..120) {
            let v = &vectors()[i % 6];
            let mut s: Vec<u8> = v.tc.bytes().take(cut.max(1)).collect();
            let at = flip % s.len().max(1);
            if let Some(b) = s.get_mut(at) {
                *b = if *b == b'A' { b'_' } else { b'A' };
            }
            let _ = TcString::parse(std::str::from_utf8(&s).unwrap());
        }
    }
}
