//! What the attribution engine needs of an event, as a type below both the
//! engine and the journal: derived from an [`Event`] on the request path (no
//! parsing), or from its JSON payload wherever the event was stored (the
//! journal, a Kafka topic). Both derivations give the same value
//! (`tests::the_json_and_the_event_agree`).

use std::borrow::Cow;

use serde::Deserialize;

use super::context::ConversionContext;
use super::source_click::OwnedSourceClick;
use super::{Body, Event, EventType, SourceClickKind};
use crate::ids::{
    AdvertiserId, ClickTrackerId, EventId, LineItemId, PixelId, PlacementId, PublisherId, UserId,
};

/// Whether a touch was a view (impression) or a click.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TouchKind {
    View,
    Click,
}

/// `order_id` kept inline (at most 36 letters and digits), so an input on the
/// engine's channel owns no heap memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderId {
    /// The bytes, zero-padded.
    bytes: [u8; 36],
    /// How many are used.
    len: u8,
}

impl OrderId {
    pub fn new(s: &str) -> Option<OrderId> {
        if s.is_empty() || s.len() > 36 || !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        let mut bytes = [0u8; 36];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Some(OrderId {
            bytes,
            len: s.len() as u8,
        })
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or_default()
    }

    /// A stable 64-bit fingerprint (SipHash-2-4 under fixed keys: the same
    /// in every process and release, since it is stored in the changelog
    /// and snapshots), for deduplication.
    pub fn fingerprint(&self) -> u64 {
        use std::hash::Hasher;
        let mut h = siphasher::sip::SipHasher24::new_with_keys(
            0x6f72_6465_7269_6431,
            0x7069_7865_6c64_6470,
        );
        h.write(self.as_str().as_bytes());
        h.finish()
    }
}

/// An impression or click of a user with an id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TouchInput {
    pub uid: UserId,
    pub kind: TouchKind,
    pub line_item: LineItemId,
    /// The touch's v7 event id: it carries the touch time.
    pub event_id: EventId,
    /// Impression or click tracker id.
    pub tracker: u32,
    pub publisher: PublisherId,
    pub placement: Option<PlacementId>,
    /// A click's traffic-source click id: the engine keeps it with the
    /// click, for the record of the conversion the click is credited with.
    /// Boxed (the only heap memory an input may own): inline, every input
    /// on the engine's channel would be [`super::source_click::MAX_LEN`]
    /// bytes longer.
    pub source_click: Option<OwnedSourceClick>,
}

/// The click a conversion's click id (`clid`) stands for: everything the
/// attribution record says of a credited click, so it needs no lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClickRef {
    /// The click event's id (v7: its time in milliseconds).
    pub event_id: EventId,
    pub line_item: LineItemId,
    pub tracker: ClickTrackerId,
    pub publisher: PublisherId,
    pub placement: Option<PlacementId>,
    /// Who clicked, when the click knew (click ids since version 2).
    pub user: Option<UserId>,
}

/// A conversion as the engine receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConversionInput {
    /// None for anonymous and opted-out users.
    pub uid: Option<UserId>,
    /// A verified click id that came with the conversion.
    pub click: Option<ClickRef>,
    pub event_id: EventId,
    pub ts_ms: u64,
    pub pixel: PixelId,
    pub advertiser: AdvertiserId,
    pub order_id: Option<OrderId>,
    pub value_micros: Option<u64>,
    /// A conversion's browser context, for its attribution record only
    /// (never kept in the engine's state); None for a server's conversion
    /// and for every adjustment. Boxed, so an input without one costs 8
    /// bytes, not the strings' bounds.
    pub context: Option<Box<ConversionContext>>,
}

crate::indexed::indexed_enum! {
    /// What an adjustment does to the conversion it names. Its text is the
    /// event's `adjustment` and the serde name (`rename_all = "lowercase"`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum AdjustmentKind {
        /// Withdrawn (a refund, a cancelled order).
        Retract => "retract",
        /// Its value changed (a partial refund, a corrected amount).
        Restate => "restate",
    }
}

/// An adjustment as the engine receives it: `conversion` names the
/// original (its user or click, pixel and order id) and carries the
/// adjustment's own event id and time, and for a restatement the new value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdjustmentInput {
    pub kind: AdjustmentKind,
    pub conversion: ConversionInput,
}

/// A browser that opted out: its state is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForgetInput {
    pub uid: UserId,
    /// The opt-out event's v7 id: it carries the time.
    pub event_id: EventId,
}

/// What the engine is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttributionInput {
    Touch(TouchInput),
    /// A conversion, with or without an id.
    Conversion(ConversionInput),
    Forget(ForgetInput),
    /// A retraction or restatement of a conversion, by order id.
    Adjustment(AdjustmentInput),
}

/// Warnings that keep an event out of attribution: a HEAD request (a link
/// checker, not a browser), a rate-limited client, and a person who did not
/// consent to measurement (TCF purpose 7).
const UNATTRIBUTABLE: [&str; 3] = ["head_request", "rate_limited", "no_measurement_consent"];

impl AttributionInput {
    /// When it happened (ms): the order the engine applies inputs in.
    pub fn ts_ms(&self) -> u64 {
        match self {
            AttributionInput::Touch(t) => t.event_id.timestamp_ms(),
            AttributionInput::Conversion(c) => c.ts_ms,
            AttributionInput::Forget(f) => f.event_id.timestamp_ms(),
            AttributionInput::Adjustment(a) => a.conversion.ts_ms,
        }
    }

    /// The event's id: ties in time go by it.
    pub fn event_id(&self) -> EventId {
        match self {
            AttributionInput::Touch(t) => t.event_id,
            AttributionInput::Conversion(c) => c.event_id,
            AttributionInput::Forget(f) => f.event_id,
            AttributionInput::Adjustment(a) => a.conversion.event_id,
        }
    }

    /// The engine's view of an event, if it needs one: impressions and clicks
    /// of users with an id that are not invalid traffic, and every
    /// conversion; never a HEAD request, a rate-limited one, or one without
    /// consent to measurement.
    pub fn from_event(event: &Event<'_>) -> Option<AttributionInput> {
        let c = &event.common;
        if UNATTRIBUTABLE.iter().any(|w| c.warnings.contains(w)) {
            return None;
        }
        // A crawler's or a prefetch's touch would only fill the state.
        let touch_ok = c.ivt.is_none();
        let touch = |kind, line_item, tracker, publisher, placement, source_click| {
            c.uid.filter(|_| touch_ok).map(|uid| {
                AttributionInput::Touch(TouchInput {
                    uid,
                    kind,
                    line_item,
                    event_id: c.event_id,
                    tracker,
                    publisher,
                    placement,
                    source_click,
                })
            })
        };
        match &event.body {
            Body::Impression(t) => touch(
                TouchKind::View,
                t.line_item_id,
                t.tracker_id.0,
                t.publisher_id,
                t.placement_id,
                None,
            ),
            Body::Click(t) => touch(
                TouchKind::Click,
                t.line_item_id,
                t.tracker_id.0,
                t.publisher_id,
                t.placement_id,
                // Copied only for a click the engine takes (a user with
                // an id, not invalid traffic).
                t.source_click
                    .as_ref()
                    .filter(|_| touch_ok && c.uid.is_some())
                    .map(OwnedSourceClick::from),
            ),
            Body::Conversion(cv) => {
                let context =
                    ConversionContext::new(c.user_agent.as_deref(), c.ip, c.referer.as_deref());
                Some(AttributionInput::Conversion(conversion_input(
                    c, cv, context,
                )))
            }
            // An adjustment's record goes to nobody's browser-matching API.
            Body::Adjustment(a) => Some(AttributionInput::Adjustment(AdjustmentInput {
                kind: a.kind,
                conversion: conversion_input(c, &a.conversion, None),
            })),
            Body::OptOut => c.uid.map(|uid| {
                AttributionInput::Forget(ForgetInput {
                    uid,
                    event_id: c.event_id,
                })
            }),
            Body::Segment(_) | Body::Invalid(_) | Body::UserSync(_) => None,
        }
    }

    /// The same, from the event's JSON as pixeld encoded it (`kind` from the
    /// record's topic or `type` header). None for events the engine does not
    /// need, and for payloads that are not a pixeld event of that kind. The
    /// journal's records carry the binary form ([`AttributionInput::encode`]);
    /// this is for events stored without it (version-1 journals).
    pub fn from_json(kind: EventType, payload: &[u8]) -> Option<AttributionInput> {
        Self::read_json(kind, payload).ok().flatten()
    }

    /// [`AttributionInput::from_json`], telling a message that is not a
    /// pixeld event of its kind (`Err`, with what was wrong) from an event
    /// the engine has no use for (`Ok(None)`): the first is a producer's
    /// bug an operator must see, the second is ordinary traffic.
    pub fn read_json(
        kind: EventType,
        payload: &[u8],
    ) -> Result<Option<AttributionInput>, Malformed> {
        if !matches!(
            kind,
            EventType::Impression
                | EventType::Click
                | EventType::Conversion
                | EventType::OptOut
                | EventType::Adjustment
        ) {
            return Ok(None);
        }
        let e: Fields<'_> = serde_json::from_slice(payload).map_err(|_| Malformed::NotAnEvent)?;
        if EventId::parse(e.event_id).is_none() {
            return Err(Malformed::EventId);
        }
        if e.uid.is_some_and(|u| UserId::parse(u).is_none()) {
            return Err(Malformed::Uid);
        }
        Ok(Self::from_fields(kind, e))
    }

    fn from_fields(kind: EventType, e: Fields<'_>) -> Option<AttributionInput> {
        if e.warnings.iter().any(|w| UNATTRIBUTABLE.contains(w)) {
            return None;
        }
        let event_id = EventId::parse(e.event_id)?;
        let uid = match e.uid {
            Some(u) => Some(UserId::parse(u)?),
            None => None,
        };
        match kind {
            EventType::OptOut => Some(AttributionInput::Forget(ForgetInput {
                uid: uid?,
                event_id,
            })),
            EventType::Impression | EventType::Click => {
                if e.ivt.is_some() {
                    return None;
                }
                let is_click = kind == EventType::Click;
                let touch = TouchInput {
                    uid: uid?,
                    kind: if is_click {
                        TouchKind::Click
                    } else {
                        TouchKind::View
                    },
                    line_item: LineItemId(e.line_item_id?),
                    event_id,
                    tracker: e.tracker_id?,
                    publisher: PublisherId(e.publisher_id?),
                    placement: e.placement_id.map(PlacementId),
                    source_click: e.source_click().filter(|_| is_click),
                };
                Some(AttributionInput::Touch(touch))
            }
            _ => {
                // Read before `click_id` moves out of `e`.
                let context = e.context();
                let click = match e.click_id {
                    Some(c) => Some(ClickRef {
                        event_id: EventId::parse(c.event_id)?,
                        line_item: LineItemId(c.line_item_id),
                        tracker: ClickTrackerId(c.tracker_id),
                        publisher: PublisherId(c.publisher_id),
                        placement: c.placement_id.map(PlacementId),
                        user: match c.uid {
                            Some(u) => Some(UserId::parse(u)?),
                            None => None,
                        },
                    }),
                    None => None,
                };
                let conversion = ConversionInput {
                    uid: conversion_user(uid, e.new_uid, click.as_ref()),
                    click,
                    event_id,
                    ts_ms: e.ts,
                    pixel: PixelId(e.pixel_id?),
                    advertiser: AdvertiserId(e.advertiser_id?),
                    order_id: e.order_id.as_deref().and_then(OrderId::new),
                    value_micros: e.value_micros,
                    context: None,
                };
                if kind == EventType::Adjustment {
                    let kind = AdjustmentKind::parse(e.adjustment?)?;
                    return Some(AttributionInput::Adjustment(AdjustmentInput {
                        kind,
                        conversion,
                    }));
                }
                Some(AttributionInput::Conversion(ConversionInput {
                    context,
                    ..conversion
                }))
            }
        }
    }
}

/// A conversion's (or adjustment's) engine input.
fn conversion_input(
    c: &super::Common<'_>,
    cv: &super::Conversion<'_>,
    context: Option<Box<ConversionContext>>,
) -> ConversionInput {
    ConversionInput {
        uid: conversion_user(c.uid, c.new_uid, cv.click.as_ref()),
        click: cv.click,
        event_id: c.event_id,
        ts_ms: c.ts_ms,
        pixel: cv.pixel_id,
        advertiser: cv.advertiser_id,
        order_id: cv.order_id.as_deref().and_then(OrderId::new),
        value_micros: cv.value_micros,
        context,
    }
}

/// The user a conversion is attributed and capped as. An id issued by this
/// very request (no cookie came: a browser that blocks pixeld's cookie) is
/// a stranger's each time, so when a click id came too, the conversion is
/// the clicker's (known to click ids since version 2): the page's tag, a
/// reload without cookies and the shop's server (`POST /v1/conversions`)
/// then meet the same order ids, repeat marks and touches (issue 25,
/// finding 3; issue 23).
pub fn conversion_user(
    uid: Option<UserId>,
    issued_now: bool,
    click: Option<&ClickRef>,
) -> Option<UserId> {
    match click {
        Some(k) if issued_now || uid.is_none() => k.user,
        _ => uid,
    }
}

impl ConversionInput {
    /// Whose state the conversion reads and writes: its user's; without
    /// one, an id derived from its click (a click that knew no user), so
    /// that its order ids and repeat marks are kept per click. None:
    /// anonymous.
    pub fn state_user(&self) -> Option<UserId> {
        self.uid
            .or_else(|| self.click.map(|k| UserId::of_click(k.event_id)))
    }
}

/// The id an event is keyed (partitioned) by: its user's, except for a
/// conversion, which goes where its state is ([`ConversionInput::state_user`]),
/// so that every conversion of one user or click meets the same order ids
/// and repeat marks in `pixeld attribute`. None: anonymous (a NULL key).
pub fn partition_user(event: &Event<'_>) -> Option<UserId> {
    let c = &event.common;
    match &event.body {
        Body::Conversion(cv) | Body::Adjustment(super::Adjustment { conversion: cv, .. }) => {
            conversion_user(c.uid, c.new_uid, cv.click.as_ref())
                .or_else(|| cv.click.map(|k| UserId::of_click(k.event_id)))
        }
        _ => c.uid,
    }
}

/// What a message is keyed (partitioned) by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionKey {
    /// A user's events, and the state their conversions keep
    /// ([`partition_user`]).
    User(UserId),
    /// An adjustment named by its pixel and order id alone, and in cluster
    /// mode a copy of each conversion with an order id: both meet on the
    /// partition of this key, whose member learns from the copies whose
    /// order it is and sends the adjustment on to that user's member.
    Order { pixel: PixelId, order: u64 },
    /// Anonymous: Kafka's NULL key.
    Null,
}

impl PartitionKey {
    /// The key of `event` ([`partition_user`], or for an adjustment that
    /// names no user or click, its order).
    pub fn of(event: &Event<'_>) -> PartitionKey {
        if let Some(uid) = partition_user(event) {
            return PartitionKey::User(uid);
        }
        match &event.body {
            Body::Adjustment(a) => a
                .conversion
                .order_id
                .as_deref()
                .and_then(OrderId::new)
                .map_or(PartitionKey::Null, |o| {
                    PartitionKey::order(a.conversion.pixel_id, &o)
                }),
            _ => PartitionKey::Null,
        }
    }

    pub fn order(pixel: PixelId, order: &OrderId) -> PartitionKey {
        PartitionKey::Order {
            pixel,
            order: order.fingerprint(),
        }
    }

    /// Calls `with` with the key's bytes (empty for the NULL key, which is
    /// the sink's key rule).
    pub fn with_bytes<R>(self, with: impl FnOnce(&[u8]) -> R) -> R {
        match self {
            PartitionKey::User(uid) => with(uid.to_hex().as_str().as_bytes()),
            PartitionKey::Order { pixel, order } => {
                let mut text = [0u8; 30];
                let n = order_key(pixel, order, &mut text);
                with(&text[..n])
            }
            PartitionKey::Null => with(&[]),
        }
    }

    /// Parses what [`PartitionKey::with_bytes`] wrote for an order.
    pub fn parse_order(bytes: &[u8]) -> Option<(PixelId, u64)> {
        let text = std::str::from_utf8(bytes).ok()?.strip_prefix('o')?;
        let (pixel, order) = text.split_once('-')?;
        if order.len() != 16 {
            return None;
        }
        Some((
            PixelId(pixel.parse().ok()?),
            u64::from_str_radix(order, 16).ok()?,
        ))
    }
}

/// Writes `o<pixel>-<order id's fingerprint, 16 hex>`, which no user key
/// (32 hex digits) can be, into `out`; returns its length (at most 28).
fn order_key(pixel: PixelId, order: u64, out: &mut [u8; 30]) -> usize {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut out[..]);
    // 1 + 10 + 1 + 16 bytes always fit in 30.
    let _ = write!(cursor, "o{}-{order:016x}", pixel.0);
    cursor.position() as usize
}

/// The compact binary form, for readers of a store that keeps it beside the
/// event (the journal's record `aux` bytes): decoding it costs a few
/// nanoseconds where reading the JSON costs a few hundred.
///
/// ```text
/// touch:      u8 1 (view) | 2 (click) | u128 uid | u32 line_item | u128 event_id | u32 tracker | u32 publisher | u32 placement (0: none)
///             [ | source click (a click's: u8 kind code | u16 length | id) ]
/// conversion: u8 3 | u8 has_uid | u128 uid | u128 event_id | u64 ts | u32 pixel | u32 advertiser | u8 order_len | order | u8 has_value | u64 value
///             [ | u128 click event_id | u32 line_item | u32 tracker | u32 publisher | u32 placement (0: none) [ | u128 click user ] ]
/// forget:     u8 4 | u128 uid | u128 event_id
/// adjustment: u8 5 | u8 kind (1 retract, 2 restate) | the conversion's bytes after its tag
/// conversion with a context: u8 6 | context (ConversionContext::put) | the conversion's bytes after its tag
/// ```
/// The click is appended only when there is one, so the records of the
/// release before click ids still decode; so is a click's source click id,
/// for the records of the release before it. A conversion's context has a
/// tag of its own (the conversion's tail is already told by its length),
/// so a conversion without one is written as before and tag 3 still reads.
impl AttributionInput {
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            AttributionInput::Forget(f) => {
                out.push(4);
                out.extend_from_slice(&f.uid.0.to_le_bytes());
                out.extend_from_slice(&f.event_id.0.to_le_bytes());
            }
            AttributionInput::Touch(t) => {
                out.push(match t.kind {
                    TouchKind::View => 1,
                    TouchKind::Click => 2,
                });
                out.extend_from_slice(&t.uid.0.to_le_bytes());
                out.extend_from_slice(&t.line_item.0.to_le_bytes());
                out.extend_from_slice(&t.event_id.0.to_le_bytes());
                out.extend_from_slice(&t.tracker.to_le_bytes());
                out.extend_from_slice(&t.publisher.0.to_le_bytes());
                out.extend_from_slice(&t.placement.map_or(0, |p| p.0).to_le_bytes());
                if let Some(s) = &t.source_click {
                    s.put(out);
                }
            }
            AttributionInput::Conversion(c) => {
                match &c.context {
                    Some(context) => {
                        out.push(6);
                        context.put(out);
                    }
                    None => out.push(3),
                }
                encode_conversion(c, out);
            }
            AttributionInput::Adjustment(a) => {
                out.push(5);
                out.push(match a.kind {
                    AdjustmentKind::Retract => 1,
                    AdjustmentKind::Restate => 2,
                });
                encode_conversion(&a.conversion, out);
            }
        }
    }
}

fn encode_conversion(c: &ConversionInput, out: &mut Vec<u8>) {
    out.push(c.uid.is_some() as u8);
    out.extend_from_slice(&c.uid.map_or(0, |u| u.0).to_le_bytes());
    out.extend_from_slice(&c.event_id.0.to_le_bytes());
    out.extend_from_slice(&c.ts_ms.to_le_bytes());
    out.extend_from_slice(&c.pixel.0.to_le_bytes());
    out.extend_from_slice(&c.advertiser.0.to_le_bytes());
    let order = c.order_id.as_ref().map_or("", |o| o.as_str());
    out.push(order.len() as u8);
    out.extend_from_slice(order.as_bytes());
    out.push(c.value_micros.is_some() as u8);
    out.extend_from_slice(&c.value_micros.unwrap_or(0).to_le_bytes());
    if let Some(k) = &c.click {
        out.extend_from_slice(&k.event_id.0.to_le_bytes());
        for v in [
            k.line_item.0,
            k.tracker.0,
            k.publisher.0,
            k.placement.map_or(0, |p| p.0),
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        if let Some(user) = k.user {
            out.extend_from_slice(&user.0.to_le_bytes());
        }
    }
}

impl AttributionInput {
    pub fn decode(b: &[u8]) -> Option<AttributionInput> {
        let mut r = Bytes(b);
        let input = match r.u8()? {
            tag @ (1 | 2) => AttributionInput::Touch(TouchInput {
                kind: if tag == 1 {
                    TouchKind::View
                } else {
                    TouchKind::Click
                },
                uid: UserId(r.u128()?),
                line_item: LineItemId(r.u32()?),
                event_id: EventId(r.u128()?),
                tracker: r.u32()?,
                publisher: PublisherId(r.u32()?),
                placement: Some(r.u32()?).filter(|p| *p != 0).map(PlacementId),
                source_click: match r.0 {
                    [] => None,
                    _ if tag == 1 => return None,
                    rest => {
                        let (s, rest) = OwnedSourceClick::take(rest).ok()?;
                        r.0 = rest;
                        Some(s)
                    }
                },
            }),
            3 => AttributionInput::Conversion(decode_conversion(&mut r)?),
            6 => {
                let (context, rest) = ConversionContext::take(r.0)?;
                r.0 = rest;
                AttributionInput::Conversion(ConversionInput {
                    context,
                    ..decode_conversion(&mut r)?
                })
            }
            5 => {
                let kind = match r.u8()? {
                    1 => AdjustmentKind::Retract,
                    2 => AdjustmentKind::Restate,
                    _ => return None,
                };
                let conversion = decode_conversion(&mut r)?;
                AttributionInput::Adjustment(AdjustmentInput { kind, conversion })
            }
            4 => AttributionInput::Forget(ForgetInput {
                uid: UserId(r.u128()?),
                event_id: EventId(r.u128()?),
            }),
            _ => return None,
        };
        r.0.is_empty().then_some(input)
    }
}

fn decode_conversion(r: &mut Bytes<'_>) -> Option<ConversionInput> {
    let has_uid = r.u8()? == 1;
    let uid = r.u128()?;
    let event_id = EventId(r.u128()?);
    let ts_ms = r.u64()?;
    let pixel = PixelId(r.u32()?);
    let advertiser = AdvertiserId(r.u32()?);
    let n = r.u8()? as usize;
    let order = std::str::from_utf8(r.take(n)?).ok()?;
    let has_value = r.u8()? == 1;
    let value = r.u64()?;
    let click = if r.0.is_empty() {
        None
    } else {
        Some(ClickRef {
            event_id: EventId(r.u128()?),
            line_item: LineItemId(r.u32()?),
            tracker: ClickTrackerId(r.u32()?),
            publisher: PublisherId(r.u32()?),
            placement: Some(r.u32()?).filter(|p| *p != 0).map(PlacementId),
            user: if r.0.is_empty() {
                None
            } else {
                Some(UserId(r.u128()?))
            },
        })
    };
    Some(ConversionInput {
        uid: has_uid.then_some(UserId(uid)),
        click,
        event_id,
        ts_ms,
        pixel,
        advertiser,
        order_id: OrderId::new(order),
        value_micros: has_value.then_some(value),
        context: None,
    })
}

struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)?.try_into().ok().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)?.try_into().ok().map(u64::from_le_bytes)
    }
    fn u128(&mut self) -> Option<u128> {
        self.take(16)?.try_into().ok().map(u128::from_le_bytes)
    }
}

/// Why a message on an input topic is not a pixeld event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// No `type` header naming an event type.
    NoType,
    /// Not JSON, or not an event's fields.
    NotAnEvent,
    EventId,
    Uid,
}

impl Malformed {
    /// The `reason` label of `attribution_inputs_malformed_total`.
    pub fn label(self) -> &'static str {
        match self {
            Malformed::NoType => "no_type",
            Malformed::NotAnEvent => "not_an_event",
            Malformed::EventId => "event_id",
            Malformed::Uid => "uid",
        }
    }
}

/// The fields the engine reads; serde skips the rest. Strings borrow from
/// the payload where they hold no escapes (ids and codes never do).
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow)]
    event_id: &'a str,
    #[serde(default)]
    new_uid: bool,
    ts: u64,
    #[serde(borrow)]
    uid: Option<&'a str>,
    #[serde(borrow, default)]
    warnings: Vec<&'a str>,
    tracker_id: Option<u32>,
    line_item_id: Option<u32>,
    publisher_id: Option<u32>,
    placement_id: Option<u32>,
    pixel_id: Option<u32>,
    advertiser_id: Option<u32>,
    /// Owned: a hostile order id may hold escapes (it is then refused by
    /// `OrderId::new` anyway).
    order_id: Option<String>,
    value_micros: Option<u64>,
    #[serde(borrow, default)]
    ivt: Option<&'a str>,
    #[serde(borrow, default)]
    click_id: Option<ClickFields<'a>>,
    /// An adjustment's kind.
    #[serde(borrow, default)]
    adjustment: Option<&'a str>,
    /// A click's; owned, since a producer may escape any character.
    #[serde(default)]
    source_click_id: Option<String>,
    #[serde(borrow, default)]
    source_click_kind: Option<&'a str>,
    /// A conversion's context. Borrowed unless escaped (an agent may quote).
    #[serde(borrow, default)]
    user_agent: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    ip: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    referer: Option<Cow<'a, str>>,
}

impl Fields<'_> {
    /// A click's source click id, when both fields are there and make
    /// sense; one that does not is dropped, not the click: the touch still
    /// counts, only its postback would lack the id.
    fn source_click(&self) -> Option<OwnedSourceClick> {
        let kind = SourceClickKind::parse(self.source_click_kind?)?;
        OwnedSourceClick::new(kind, self.source_click_id.as_deref()?)
    }

    /// A conversion's context, bounded as on the request path; an address
    /// that does not parse is dropped, not the conversion.
    fn context(&self) -> Option<Box<ConversionContext>> {
        let ip = self.ip.as_deref().and_then(|s| s.parse().ok());
        ConversionContext::new(self.user_agent.as_deref(), ip, self.referer.as_deref())
    }
}

/// A conversion's `click_id` object.
#[derive(Deserialize)]
struct ClickFields<'a> {
    #[serde(borrow)]
    event_id: &'a str,
    line_item_id: u32,
    tracker_id: u32,
    publisher_id: u32,
    placement_id: Option<u32>,
    #[serde(borrow, default)]
    uid: Option<&'a str>,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn order_ids_are_checked_and_kept_inline() {
        assert_eq!(OrderId::new("ORD42").unwrap().as_str(), "ORD42");
        assert!(OrderId::new(&"A".repeat(37)).is_none());
        assert!(OrderId::new("a-b").is_none());
        assert!(OrderId::new("").is_none());
    }

    #[test]
    fn an_adjustment_kind_deserializes_from_its_text() {
        for k in AdjustmentKind::ALL {
            let text = serde_json::to_string(k.as_str()).unwrap();
            assert_eq!(serde_json::from_str::<AdjustmentKind>(&text).unwrap(), k);
            assert_eq!(AdjustmentKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(AdjustmentKind::parse("Retract"), None);
    }

    use crate::event::{encode, Common, Conversion, Touch, Warnings};
    use crate::ids::{ClickTrackerId, TrackerId};

    pub(crate) fn common(uid: Option<UserId>, warnings: Warnings) -> Common<'static> {
        Common {
            event_id: EventId::new_v7(1_764_000_000_123),
            ts_ms: 1_764_000_000_123,
            uid,
            new_uid: false,
            ip: None,
            user_agent: Some("Mozilla/5.0 \"quoted\"".into()),
            referer: None,
            warnings,
            ivt: None,
            consent: None,
        }
    }

    pub(crate) fn touch<T>(tracker_id: T, placement: Option<PlacementId>) -> Touch<'static, T> {
        Touch {
            tracker_id,
            line_item_id: LineItemId(5001),
            advertiser_id: AdvertiserId(100),
            publisher_id: PublisherId(777),
            placement_id: placement,
            cachebuster: Some("42".into()),
            ancost_micros: Some(420_000),
            redir: None,
            segments_added: &[],
            source_click: None,
        }
    }

    #[test]
    fn the_json_and_the_event_agree() {
        let uid = Some(UserId(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef));
        let mut head = Warnings::default();
        head.push("head_request");
        let conversion = |order: &'static str, value| Conversion {
            pixel_id: PixelId(7313),
            advertiser_id: AdvertiserId(100),
            order_id: Some(order.into()),
            value_micros: value,
            other: Some("a \u{2028} b".into()),
            segments_added: vec![],
            segments_removed: vec![],
            redir: None,
            click: None,
            source: super::super::ConversionSource::Browser,
        };
        let events = [
            Event {
                common: common(uid, Warnings::default()),
                body: Body::Impression(touch(TrackerId(2766), Some(PlacementId(9)))),
            },
            Event {
                common: common(uid, Warnings::default()),
                body: Body::Click(touch(ClickTrackerId(21378), None)),
            },
            Event {
                common: common(None, Warnings::default()),
                body: Body::Impression(touch(TrackerId(2766), None)),
            },
            Event {
                common: common(uid, head),
                body: Body::Click(touch(ClickTrackerId(21378), None)),
            },
            Event {
                common: common(uid, Warnings::default()),
                body: Body::Conversion(conversion("ORD42", Some(12_500_000))),
            },
            Event {
                common: common(None, Warnings::default()),
                body: Body::Conversion(conversion("bad-id", None)),
            },
        ];
        let mut some = 0;
        for event in &events {
            let mut json = Vec::new();
            encode(event, &mut json);
            let typed = AttributionInput::from_event(event);
            assert_eq!(
                AttributionInput::from_json(event.kind(), &json),
                typed,
                "{}",
                String::from_utf8_lossy(&json)
            );
            if let Some(t) = &typed {
                let mut bin = Vec::new();
                t.encode(&mut bin);
                assert_eq!(AttributionInput::decode(&bin), typed, "the binary form");
                assert_eq!(AttributionInput::decode(&bin[..bin.len() - 1]), None);
            }
            some += typed.is_some() as usize;
        }
        assert_eq!(some, 4, "anonymous touches and HEAD requests give nothing");
    }

    #[test]
    fn a_click_s_source_click_id_rides_along_in_every_form() {
        let id = "Cj0KCQ-x_1";
        let mut click = touch(ClickTrackerId(21378), None);
        click.source_click = Some(crate::event::SourceClick {
            kind: SourceClickKind::Gclid,
            id: id.into(),
        });
        let event = Event {
            common: common(Some(UserId(7)), Warnings::default()),
            body: Body::Click(click),
        };
        let typed = AttributionInput::from_event(&event).unwrap();
        let AttributionInput::Touch(t) = &typed else {
            panic!("{typed:?}")
        };
        assert_eq!(
            t.source_click,
            OwnedSourceClick::new(SourceClickKind::Gclid, id)
        );
        let mut json = Vec::new();
        encode(&event, &mut json);
        let from_json = AttributionInput::from_json(EventType::Click, &json);
        assert_eq!(from_json.as_ref(), Some(&typed));
        let mut bin = Vec::new();
        typed.encode(&mut bin);
        assert_eq!(AttributionInput::decode(&bin).as_ref(), Some(&typed));
        assert_eq!(AttributionInput::decode(&bin[..bin.len() - 1]), None);
        // The release before wrote the same click without the id's bytes.
        let without = AttributionInput::Touch(TouchInput {
            source_click: None,
            ..t.clone()
        });
        let mut old = Vec::new();
        without.encode(&mut old);
        assert_eq!(old.len() + 3 + id.len(), bin.len());
        assert_eq!(AttributionInput::decode(&old).as_ref(), Some(&without));
        // A view never carries one.
        bin[0] = 1;
        assert_eq!(AttributionInput::decode(&bin), None);
        // A kind that makes no sense drops the id, not the click.
        let text = String::from_utf8(json).unwrap();
        let bad = text.replace("\"gclid\"", "\"msclkid\"");
        assert_ne!(bad, text);
        assert_eq!(
            AttributionInput::from_json(EventType::Click, bad.as_bytes()),
            Some(without)
        );
    }

    /// A browser's conversion: its agent, address and page, as the pixel
    /// recorded them.
    fn browser_conversion(ip: Option<&str>) -> Event<'static> {
        let mut c = common(Some(UserId(7)), Warnings::default());
        c.ip = ip.map(|s| s.parse().unwrap());
        c.referer = Some("https://shop.example/thanks?o=1&q=\"x\"".into());
        Event {
            common: c,
            body: Body::Conversion(Conversion {
                pixel_id: PixelId(7313),
                advertiser_id: AdvertiserId(100),
                order_id: Some("ORD42".into()),
                value_micros: Some(12_500_000),
                other: None,
                segments_added: vec![],
                segments_removed: vec![],
                redir: None,
                click: None,
                source: super::super::ConversionSource::Browser,
            }),
        }
    }

    #[test]
    fn a_conversion_s_context_rides_along_in_every_form() {
        for ip in [Some("203.0.113.0"), Some("2001:db8::"), None] {
            let event = browser_conversion(ip);
            let typed = AttributionInput::from_event(&event).unwrap();
            let AttributionInput::Conversion(c) = &typed else {
                panic!("{typed:?}")
            };
            let context = c.context.as_deref().unwrap();
            assert_eq!(
                context.user_agent.as_deref(),
                Some("Mozilla/5.0 \"quoted\"")
            );
            assert_eq!(context.ip, event.common.ip);
            assert_eq!(
                context.page_url.as_deref(),
                Some("https://shop.example/thanks?o=1&q=\"x\"")
            );
            // The member's path: the event's JSON (escaped quotes and all).
            let mut json = Vec::new();
            encode(&event, &mut json);
            let read = AttributionInput::read_json(EventType::Conversion, &json);
            assert_eq!(read.as_ref().ok().and_then(|i| i.as_ref()), Some(&typed));
            // The journal's path: the binary form, cut anywhere refused.
            let mut bin = Vec::new();
            typed.encode(&mut bin);
            assert_eq!(bin[0], 6);
            assert_eq!(AttributionInput::decode(&bin).as_ref(), Some(&typed));
            for cut in 1..bin.len() {
                assert_eq!(AttributionInput::decode(&bin[..cut]), None, "cut {cut}");
            }
            // The release before wrote the same conversion under tag 3,
            // without the context: it still reads.
            let without = AttributionInput::Conversion(ConversionInput {
                context: None,
                ..c.clone()
            });
            let mut old = Vec::new();
            without.encode(&mut old);
            assert_eq!(old[0], 3);
            assert_eq!(AttributionInput::decode(&old), Some(without));
        }
    }

    #[test]
    fn a_context_is_bounded_alike_from_the_event_and_the_json_and_never_on_an_adjustment() {
        let mut event = browser_conversion(Some("203.0.113.0"));
        let long = "A".repeat(crate::event::context::MAX_USER_AGENT + 1);
        event.common.user_agent = Some(long.into());
        let typed = AttributionInput::from_event(&event).unwrap();
        let AttributionInput::Conversion(c) = &typed else {
            panic!("{typed:?}")
        };
        assert_eq!(c.context.as_ref().unwrap().user_agent, None);
        let mut json = Vec::new();
        encode(&event, &mut json);
        assert_eq!(
            AttributionInput::from_json(EventType::Conversion, &json),
            Some(typed)
        );
        // An address that does not parse is dropped, not the conversion.
        let text = String::from_utf8(json).unwrap();
        let bad = text.replace("\"203.0.113.0\"", "\"not-an-ip\"");
        assert_ne!(bad, text);
        let Some(AttributionInput::Conversion(c)) =
            AttributionInput::from_json(EventType::Conversion, bad.as_bytes())
        else {
            panic!("{bad}")
        };
        assert_eq!(c.context.unwrap().ip, None);
        // The same fields on an adjustment's JSON are not carried.
        let adjustment = text.replace("\"order_id\"", "\"adjustment\":\"retract\",\"order_id\"");
        let Some(AttributionInput::Adjustment(a)) =
            AttributionInput::from_json(EventType::Adjustment, adjustment.as_bytes())
        else {
            panic!("{adjustment}")
        };
        assert_eq!(a.conversion.context, None);
    }

    #[test]
    fn foreign_or_broken_payloads_give_nothing() {
        for bad in [&b"not json"[..], b"{}", b"{\"event_id\":\"x\",\"ts\":1}"] {
            assert_eq!(
                AttributionInput::from_json(EventType::Conversion, bad),
                None
            );
        }
        let segment = br#"{"event_id":"0190a5b0-0000-7000-8000-000000000000","ts":1,"uid":null}"#;
        assert_eq!(
            AttributionInput::from_json(EventType::Segment, segment),
            None
        );
    }

    #[test]
    fn a_broken_payload_is_malformed_and_an_unused_event_is_not() {
        let read = |kind, bad: &[u8]| AttributionInput::read_json(kind, bad);
        let conversion = EventType::Conversion;
        assert_eq!(read(conversion, b"not json"), Err(Malformed::NotAnEvent));
        assert_eq!(read(conversion, b"{}"), Err(Malformed::NotAnEvent));
        assert_eq!(
            read(conversion, br#"{"event_id":"x","ts":1,"uid":null}"#),
            Err(Malformed::EventId)
        );
        let id = "0190a5b0-0000-7000-8000-000000000000";
        let forged = format!(r#"{{"event_id":"{id}","ts":1,"uid":"forged"}}"#);
        assert_eq!(read(conversion, forged.as_bytes()), Err(Malformed::Uid));
        let anonymous = format!(r#"{{"event_id":"{id}","ts":1,"uid":null}}"#);
        assert_eq!(read(conversion, anonymous.as_bytes()), Ok(None));
        assert_eq!(read(EventType::Segment, b"not json"), Ok(None));
    }
}
