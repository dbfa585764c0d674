//! Events: what a pixel request becomes, and their JSON encoding.
//!
//! An event borrows its strings from the request it came from; it lives only
//! as long as it takes to encode it into a reused buffer.

pub mod context;
mod encode;
pub mod input;
pub mod source_click;
pub mod text;
mod warnings;

pub use context::ConversionContext;
pub use encode::{encode, JsonWriter};
pub use input::{
    AdjustmentInput, AdjustmentKind, AttributionInput, ClickRef, ConversionInput, ForgetInput,
    Malformed, OrderId, TouchInput, TouchKind,
};
pub use source_click::{OwnedSourceClick, SourceClick, SourceClickKind};
pub use warnings::Warnings;

use std::borrow::Cow;
use std::fmt::Display;
use std::net::IpAddr;

use crate::ids::{
    AdvertiserId, ApiKeyName, ClickTrackerId, EventId, LineItemId, MemberId, PixelId, PlacementId,
    PublisherId, SegmentId, TrackerId, UserId,
};

/// Version of the event format; bumped on incompatible changes.
pub const VERSION: u32 = 1;

crate::indexed::indexed_enum! {
    /// The `type` field and Kafka header of each event. The declaration
    /// order is part of the journal's version-1 format (a kind's code is
    /// its index): append, never reorder.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum EventType {
        Impression => "impression",
        Click => "click",
        Conversion => "conversion",
        Segment => "segment",
        Invalid => "invalid",
        Attribution => "attribution",
        /// A browser opted out (`/optout`): consumers forget the id; published
        /// on the segments topic, the one that holds what is known of a user.
        OptOut => "optout",
        /// An advertiser's server retracted or restated a conversion
        /// (`POST /v1/adjustments`).
        Adjustment => "adjustment",
        /// A partner told us its id for the browser (`/mapuid`).
        UserSync => "usersync",
        /// `pixeld forward`: one attempt to call a destination, and its outcome.
        Postback => "postback",
        /// `pixeld forward`: a call given up on (a final answer, or every attempt failed).
        PostbackDead => "postback_dead",
    }
}

/// Fields every event carries.
#[derive(Clone, Debug)]
pub struct Common<'a> {
    pub event_id: EventId,
    /// Milliseconds since the epoch, when the request was answered.
    pub ts_ms: u64,
    /// None for anonymous and opted-out users.
    pub uid: Option<UserId>,
    /// The id was issued by this response.
    pub new_uid: bool,
    /// None for opted-out users.
    pub ip: Option<IpAddr>,
    pub user_agent: Option<Cow<'a, str>>,
    pub referer: Option<Cow<'a, str>>,
    /// Short codes for whatever was wrong but did not stop the event.
    pub warnings: Warnings,
    /// Why this looks like invalid traffic (`crawler:Googlebot`, `prefetch`,
    /// `no_user_agent`, ...); None for an ordinary browser.
    pub ivt: Option<&'a str>,
    /// The consent signals that came with the request; None when none did.
    pub consent: Option<Box<Consent<'a>>>,
}

/// Consent signals (`gdpr`, `gdpr_consent`, `gpp`, `gpp_sid`), as recorded.
/// Boxed in [`Common`]: most requests carry none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Consent<'a> {
    /// `gdpr=1` (true) or `gdpr=0` (false); None when absent.
    pub gdpr: Option<bool>,
    /// The TC string as given, cut to [`Consent::MAX_RAW`] bytes.
    pub tc_string: Option<Cow<'a, str>>,
    /// What the TC string says, when it decoded.
    pub tcf: Option<TcfSummary>,
    /// The GPP string as given, cut to [`Consent::MAX_RAW`] bytes.
    pub gpp: Option<Cow<'a, str>>,
    /// `gpp_sid`: the GPP sections that apply.
    pub gpp_sid: Vec<u16>,
}

impl Consent<'_> {
    /// Longest consent string kept on an event.
    pub const MAX_RAW: usize = 1024;
}

/// A TC string's bearing on pixeld.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcfSummary {
    /// Bit `p - 1`: consent to purpose `p`.
    pub purposes: u32,
    /// Whether `privacy.tcf_vendor_id` has consent (or a legitimate interest
    /// where allowed) for storage and measurement; None without a vendor id.
    pub vendor_storage: Option<bool>,
    pub vendor_measurement: Option<bool>,
    pub cmp_id: u16,
}

/// An impression or a click, recorded through a tracker.
#[derive(Clone, Debug)]
pub struct Touch<'a, T> {
    pub tracker_id: T,
    pub line_item_id: LineItemId,
    pub advertiser_id: AdvertiserId,
    pub publisher_id: PublisherId,
    pub placement_id: Option<PlacementId>,
    pub cachebuster: Option<Cow<'a, str>>,
    /// Media cost in millionths, parsed exactly from the decimal.
    pub ancost_micros: Option<u64>,
    pub redir: Option<Cow<'a, str>>,
    /// The tracker's server-side segment adds.
    pub segments_added: &'a [SegmentId],
    /// A click's traffic-source click id (`sclid`, `gclid`, `fbclid`...);
    /// always None for an impression.
    pub source_click: Option<SourceClick<'a>>,
}

/// A conversion pixel firing.
#[derive(Clone, Debug)]
pub struct Conversion<'a> {
    pub pixel_id: PixelId,
    pub advertiser_id: AdvertiserId,
    pub order_id: Option<Cow<'a, str>>,
    pub value_micros: Option<u64>,
    pub other: Option<Cow<'a, str>>,
    pub segments_added: Vec<SegmentId>,
    pub segments_removed: Vec<SegmentId>,
    pub redir: Option<Cow<'a, str>>,
    /// The click a valid `clid` stands for.
    pub click: Option<ClickRef>,
    pub source: ConversionSource,
}

/// Who reported a conversion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConversionSource {
    /// A browser fired `/px`: the event time is when it was answered.
    Browser,
    /// The advertiser's server called `POST /v1/conversions`: the event
    /// time is the conversion's own (`ts`), and this is when it came.
    Server {
        received_ts_ms: u64,
        api_key: ApiKeyName,
    },
}

/// A conversion retracted or restated by the advertiser's server: the
/// conversion it names (pixel, order id, the user or click it was
/// reported with) and, for a restatement, its new value in
/// `conversion.value_micros`.
#[derive(Clone, Debug)]
pub struct Adjustment<'a> {
    pub kind: AdjustmentKind,
    pub conversion: Conversion<'a>,
}

/// A segment pixel firing.
#[derive(Clone, Debug, Default)]
pub struct SegmentChange<'a> {
    /// Segment ids with their optional value (`add=ID:VALUE`).
    pub adds: Vec<(SegmentId, Option<u32>)>,
    pub removes: Vec<SegmentId>,
    /// Segment codes of `member`, as given (`add_code=`).
    pub add_codes: Vec<Cow<'a, str>>,
    pub remove_codes: Vec<Cow<'a, str>>,
    pub member: Option<MemberId>,
    pub other: Option<Cow<'a, str>>,
    pub redir: Option<Cow<'a, str>>,
}

/// A partner's id for this browser (`/mapuid`).
#[derive(Clone, Debug)]
pub struct UserSync<'a> {
    /// The partner (`member=`).
    pub member: MemberId,
    /// The partner's id for the browser (`user=`); None when the browser
    /// has no id of ours to map it to (GPC, opted out, no consent).
    pub partner_uid: Option<Cow<'a, str>>,
    /// Segments the partner adds for the browser (`seg=`, known ids).
    pub segments: Vec<SegmentId>,
    pub redir: Option<Cow<'a, str>>,
}

/// A request that could not become an event of its type.
#[derive(Clone, Debug)]
pub struct Invalid<'a> {
    pub path: &'a str,
    /// The raw query, cut to [`Invalid::MAX_QUERY`] bytes.
    pub query: &'a str,
    pub reason: &'static str,
}

impl<'a> Invalid<'a> {
    pub const MAX_QUERY: usize = 2048;

    pub fn new(path: &'a str, query: &'a str, reason: &'static str) -> Self {
        let mut end = query.len().min(Self::MAX_QUERY);
        while !query.is_char_boundary(end) {
            end -= 1;
        }
        Invalid {
            path,
            query: &query[..end],
            reason,
        }
    }
}

/// What happened.
#[derive(Clone, Debug)]
pub enum Body<'a> {
    Impression(Touch<'a, TrackerId>),
    Click(Touch<'a, ClickTrackerId>),
    Conversion(Conversion<'a>),
    Segment(SegmentChange<'a>),
    Invalid(Invalid<'a>),
    /// `uid` (in [`Common`]) opted out.
    OptOut,
    Adjustment(Adjustment<'a>),
    UserSync(UserSync<'a>),
}

/// One event, ready to encode.
#[derive(Clone, Debug)]
pub struct Event<'a> {
    pub common: Common<'a>,
    pub body: Body<'a>,
}

impl Event<'_> {
    pub fn kind(&self) -> EventType {
        match self.body {
            Body::Impression(_) => EventType::Impression,
            Body::Click(_) => EventType::Click,
            Body::Conversion(_) => EventType::Conversion,
            Body::Segment(_) => EventType::Segment,
            Body::Invalid(_) => EventType::Invalid,
            Body::OptOut => EventType::OptOut,
            Body::Adjustment(_) => EventType::Adjustment,
            Body::UserSync(_) => EventType::UserSync,
        }
    }
}

/// Ids that encode as JSON numbers.
pub trait NumericId: Display + Copy {
    fn get(self) -> u32;
}

macro_rules! numeric {
    ($($t:ty),*) => { $(impl NumericId for $t { fn get(self) -> u32 { self.0 } })* };
}
numeric!(
    TrackerId,
    ClickTrackerId,
    LineItemId,
    AdvertiserId,
    PublisherId,
    PlacementId,
    PixelId,
    SegmentId,
    MemberId
);

#[cfg(test)]
mod tests {
    use super::EventType;

    /// Each type's text parses back to it, and its slot (the journal's
    /// code, the metrics' slot) holds it.
    #[test]
    fn every_event_type_round_trips_through_its_text_and_its_slot() {
        for (i, kind) in EventType::ALL.into_iter().enumerate() {
            assert_eq!(EventType::parse(kind.as_str()), Some(kind));
            assert_eq!(EventType::ALL[kind.index()], kind);
            assert_eq!(kind.index(), i);
        }
        assert_eq!(EventType::parse("Impression"), None);
    }

    /// The codes are the journal's version-1 format: a journal written
    /// before an upgrade is read after it.
    #[test]
    fn the_journal_codes_of_existing_types_never_move() {
        let codes = [
            "impression",
            "click",
            "conversion",
            "segment",
            "invalid",
            "attribution",
            "optout",
            "adjustment",
            "usersync",
            "postback",
            "postback_dead",
        ];
        for (code, text) in codes.iter().enumerate() {
            assert_eq!(EventType::ALL[code].as_str(), *text);
        }
    }
}
