//! Newtype ids. Every id that crosses a module boundary has its own type, so a
//! tracker id can never be passed where a line item id is expected, and the hot
//! path keys maps by integers, never by formatted strings.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;
use serde::{Deserialize, Serialize};

macro_rules! numeric_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub u32);

        impl $name {
            /// Parses the decimal form used in pixel queries (`id=2766`).
            pub fn parse(s: &str) -> Option<Self> {
                parse_u32(s).map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

numeric_id!(
    /// An impression tracker (`/imptr?id=`).
    TrackerId
);
numeric_id!(
    /// A click tracker (`/clktr?id=`, `/clktrb?id=`).
    ClickTrackerId
);
numeric_id!(
    /// A line item: the unit conversion pixels are attached to.
    LineItemId
);
numeric_id!(
    /// An advertiser: owns line items, conversion pixels and third-party pixels.
    AdvertiserId
);
numeric_id!(
    /// A publisher a tracker reports its impressions and clicks under.
    PublisherId
);
numeric_id!(
    /// An optional placement of a publisher.
    PlacementId
);
numeric_id!(
    /// A conversion pixel (`/px?id=`).
    PixelId
);
numeric_id!(
    /// A segment (`/seg?add=`), also added server-side by trackers.
    SegmentId
);
numeric_id!(
    /// A member (seat) whose segment codes `add_code`/`remove_code` refer to.
    MemberId
);

/// Strict decimal u32: digits only, no sign, no leading `+`, no whitespace.
pub fn parse_u32(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn write_hex(value: u128, out: &mut [u8]) {
    let n = out.len();
    for (i, slot) in out.iter_mut().enumerate() {
        let shift = 4 * (n - 1 - i);
        *slot = HEX[((value >> shift) & 0xf) as usize];
    }
}

/// The low `4 * N` bits of `value` as `N` lowercase hex digits, on the stack.
pub fn hex<const N: usize>(value: u128) -> HexId<N> {
    let mut buf = [0u8; N];
    write_hex(value, &mut buf);
    HexId(buf)
}

/// Exactly `digits` lowercase hex characters (at most 32); anything else,
/// upper case included, is refused.
pub fn parse_hex(s: &str, digits: usize) -> Option<u128> {
    let b = s.as_bytes();
    if b.len() != digits || digits > 32 {
        return None;
    }
    let mut v: u128 = 0;
    for &c in b {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | d as u128;
    }
    Some(v)
}

/// A browser's identity: 128 random bits, carried in the `uid` cookie as 32
/// lowercase hex characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(pub u128);

impl UserId {
    /// The id a click stands in for when a conversion has no user of its
    /// own: its repeat marks are kept, and its events partitioned, under it.
    pub fn of_click(click: EventId) -> UserId {
        const TAG: u64 = 0x636c_6963_6b75_6964; // "clickuid"
        UserId(EventId::derive(click, TAG).0)
    }
}

impl UserId {
    /// A fresh id from the thread's CSPRNG (ChaCha, reseeded from the OS).
    pub fn generate() -> Self {
        UserId(rand::rng().random())
    }

    /// Accepts exactly 32 lowercase hex characters; anything else is not ours.
    pub fn parse(s: &str) -> Option<Self> {
        parse_hex(s, 32).map(UserId)
    }

    /// The cookie form, on the stack.
    pub fn to_hex(self) -> HexId<32> {
        hex(self.0)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.to_hex().as_str())
    }
}

/// A fixed-size ASCII rendering of an id, so formatting one never allocates.
#[derive(Clone, Copy)]
pub struct HexId<const N: usize>([u8; N]);

impl<const N: usize> HexId<N> {
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits and hyphens are ever written into the buffer.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// An event's id: a UUIDv7 (48-bit millisecond time, version, random bits),
/// so ids sort by time and downstream deduplication can use them as keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(pub u128);

impl EventId {
    /// A new UUIDv7 for an event that happened at `ts_ms`.
    pub fn new_v7(ts_ms: u64) -> Self {
        let rand: u128 = rand::rng().random();
        Self::from_parts(ts_ms, rand)
    }

    /// A new UUIDv7 for an event happening now, and its millisecond time.
    /// The 12 bits after the version carry the fraction of the millisecond
    /// (RFC 9562, method 3): "latest touch wins" compares ids at the same
    /// millisecond, and two events a browser fired one after the other must
    /// then sort in the order they came, not by chance.
    pub fn now_v7() -> (u64, Self) {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let ts_ms = since.as_millis() as u64;
        let fraction = u128::from(since.subsec_nanos() % 1_000_000) * 4096 / 1_000_000;
        let rand: u128 = rand::rng().random();
        (ts_ms, Self::from_parts(ts_ms, (rand & !0xfff) | fraction))
    }

    fn from_parts(ts_ms: u64, rand: u128) -> Self {
        let ts = ((ts_ms as u128) & 0xffff_ffff_ffff) << 80;
        let version = 0x7u128 << 76;
        let rand_a = (rand & 0xfff) << 64;
        let variant = 0b10u128 << 62;
        let rand_b = (rand >> 12) & ((1u128 << 62) - 1);
        EventId(ts | version | rand_a | variant | rand_b)
    }

    /// A UUIDv8 derived from another id and a purpose tag: the same input
    /// always yields the same id, so a replayed event produces the same
    /// derived record id.
    pub fn derive(from: EventId, tag: u64) -> Self {
        // SplitMix64 over both halves: cheap, deterministic and well mixed.
        fn mix(mut z: u64) -> u64 {
            z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        let hi = mix((from.0 >> 64) as u64 ^ mix(tag));
        let lo = mix(from.0 as u64 ^ hi);
        let raw = ((hi as u128) << 64) | lo as u128;
        let cleared = raw & !(0xf << 76) & !(0b11 << 62);
        EventId(cleared | (0x8 << 76) | (0b10 << 62))
    }

    /// Milliseconds since the epoch, for a v7 id.
    pub fn timestamp_ms(self) -> u64 {
        (self.0 >> 80) as u64
    }

    /// The canonical hyphenated form, on the stack.
    pub fn to_hyphenated(self) -> HexId<36> {
        let mut hex = [0u8; 32];
        write_hex(self.0, &mut hex);
        let mut out = [b'-'; 36];
        out[0..8].copy_from_slice(&hex[0..8]);
        out[9..13].copy_from_slice(&hex[8..12]);
        out[14..18].copy_from_slice(&hex[12..16]);
        out[19..23].copy_from_slice(&hex[16..20]);
        out[24..36].copy_from_slice(&hex[20..32]);
        HexId(out)
    }

    /// Parses the hyphenated form.
    pub fn parse(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() != 36 || b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
            return None;
        }
        let mut v: u128 = 0;
        for (i, &c) in b.iter().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                continue;
            }
            let d = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => return None,
            };
            v = (v << 4) | d as u128;
        }
        Some(EventId(v))
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.to_hyphenated().as_str())
    }
}

/// The `id` of the `[[api_keys]]` entry a server-side call came with
/// (never the secret), kept inline so an event owns no heap memory for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiKeyName {
    bytes: [u8; ApiKeyName::MAX],
    len: u8,
}

impl ApiKeyName {
    pub const MAX: usize = 32;

    /// None unless 1 to 32 letters, digits, `-` or `_`.
    pub fn new(s: &str) -> Option<ApiKeyName> {
        let ok = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
        if s.is_empty() || s.len() > Self::MAX || !s.bytes().all(ok) {
            return None;
        }
        let mut bytes = [0; Self::MAX];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Some(ApiKeyName {
            bytes,
            len: s.len() as u8,
        })
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_id_round_trips_and_rejects_foreign_forms() {
        let id = UserId::generate();
        let hex = id.to_hex();
        assert_eq!(hex.as_str().len(), 32);
        assert_eq!(UserId::parse(hex.as_str()), Some(id));
        assert_eq!(UserId::parse("0123456789ABCDEF0123456789abcdef"), None);
        assert_eq!(UserId::parse("0123456789abcdef0123456789abcde"), None);
        assert_eq!(UserId::parse("OPTOUT"), None);
        assert_ne!(UserId::generate(), UserId::generate());
    }

    #[test]
    fn event_id_is_a_v7_uuid_carrying_its_time() {
        let id = EventId::new_v7(1_700_000_000_123);
        let s = id.to_hyphenated();
        let s = s.as_str();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "7");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"));
        assert_eq!(id.timestamp_ms(), 1_700_000_000_123);
        assert_eq!(EventId::parse(s), Some(id));
    }

    #[test]
    fn ids_made_one_after_the_other_sort_in_that_order() {
        // 244 ns per step of the fraction: a few microseconds apart is enough.
        let mut last = EventId::now_v7().1;
        for _ in 0..200 {
            std::thread::sleep(std::time::Duration::from_micros(5));
            let (ts, next) = EventId::now_v7();
            assert_eq!(next.timestamp_ms(), ts);
            assert!(next > last, "{next:?} after {last:?}");
            last = next;
        }
    }

    #[test]
    fn derived_ids_are_deterministic_v8_and_distinct_per_tag() {
        let base = EventId::new_v7(1);
        let a = EventId::derive(base, 1);
        assert_eq!(a, EventId::derive(base, 1));
        assert_ne!(a, EventId::derive(base, 2));
        assert_eq!(&a.to_hyphenated().as_str()[14..15], "8");
    }

    #[test]
    fn parse_u32_is_strict() {
        assert_eq!(parse_u32("2766"), Some(2766));
        assert_eq!(parse_u32(""), None);
        assert_eq!(parse_u32("+1"), None);
        assert_eq!(parse_u32(" 1"), None);
        assert_eq!(parse_u32("4294967296"), None);
        assert_eq!(parse_u32("4294967295"), Some(u32::MAX));
    }
}
