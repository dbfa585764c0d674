//! `POST /v1/conversions` and `POST /v1/adjustments`: a batch of items from
//! an advertiser's server. Each item is accepted (and becomes a conversion
//! or adjustment event) or rejected with a stable reason; the answer is
//! sent once every accepted item is as safe as `journal.durability`
//! promises, as for a pixel.

use std::sync::Arc;

use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{body, ApiKey, ApiRoute, Refusal};
use crate::delivery::Receipt;
use crate::event::JsonWriter;
use crate::http::response::{self, Body};
use crate::http::App;
use crate::ids::EventId;
use crate::pixel::server_adjustment::{self, AdjustmentItem};
use crate::pixel::server_conversion::{self, Caller, Item, Rejection};
use crate::telemetry::{metric, now_ms};

/// The most items one request may carry.
pub const MAX_ITEMS: usize = 1000;

const UNAUTHORIZED: Refusal = Refusal::new(
    StatusCode::UNAUTHORIZED,
    "unauthorized: send Authorization: Bearer <the secret of an [[api_keys]] entry>",
);
const TOO_MANY: Refusal = Refusal::new(
    StatusCode::PAYLOAD_TOO_LARGE,
    "more than 1000 items: split the batch",
);

/// The body's shape; each item is read on its own so that one bad item is
/// rejected alone.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Conversions<'a> {
    #[serde(borrow)]
    conversions: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Adjustments<'a> {
    #[serde(borrow)]
    adjustments: Vec<&'a RawValue>,
}

/// The batch's items, or the one-line reason it is not a batch.
fn items(route: ApiRoute, bytes: &[u8]) -> Result<Vec<&RawValue>, Refusal> {
    let items = match route {
        ApiRoute::Conversions => {
            serde_json::from_slice(bytes).map(|b: Conversions<'_>| b.conversions)
        }
        ApiRoute::Adjustments => {
            serde_json::from_slice(bytes).map(|b: Adjustments<'_>| b.adjustments)
        }
    };
    let not_a_batch = match route {
        ApiRoute::Conversions => Refusal::new(
            StatusCode::BAD_REQUEST,
            "the body must be a JSON object {\"conversions\": [...]}",
        ),
        ApiRoute::Adjustments => Refusal::new(
            StatusCode::BAD_REQUEST,
            "the body must be a JSON object {\"adjustments\": [...]}",
        ),
    };
    let items = items.map_err(|_| not_a_batch)?;
    if items.len() > MAX_ITEMS {
        return Err(TOO_MANY);
    }
    Ok(items)
}

/// What became of one item.
enum Outcome {
    Accepted(EventId),
    Rejected(Rejection, Option<String>),
    /// Accepted, then not stored (the journal is full or failing): the
    /// caller should send it again.
    NotStored,
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Outcome::Accepted(_) => "accepted",
            Outcome::Rejected(r, _) => r.as_str(),
            Outcome::NotStored => "not_stored",
        }
    }
}

/// Answers one call (the route and method are checked already).
pub async fn answer<B>(route: ApiRoute, req: Request<B>, app: Arc<App>) -> Response<Body>
where
    B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let live = app.live.load_full();
    let Some(key) = live.api_keys.authenticate(req.headers()) else {
        metric::api_request(route.label(), "none", 401);
        return UNAUTHORIZED.response();
    };
    let name = key.name;
    let refused = |r: Refusal| {
        metric::api_request(route.label(), name.as_str(), r.status.as_u16());
        r.response()
    };
    let bytes = match body::read_json(req).await {
        Ok(b) => b,
        Err(r) => return refused(r),
    };
    let (mut outcomes, receipts) = match accept(route, &bytes, key, &app) {
        Ok(x) => x,
        Err(r) => return refused(r),
    };
    settle(&mut outcomes, receipts).await;
    for o in &outcomes {
        metric::api_item(route.label(), name.as_str(), o.label());
    }
    metric::api_request(route.label(), name.as_str(), 200);
    response::json(StatusCode::OK, results(&outcomes))
}

/// Each item's outcome, and the receipts of the accepted ones by index.
type Checked = (Vec<Outcome>, Vec<(usize, Receipt)>);

/// Every item checked, and the accepted ones handed to the delivery.
fn accept(route: ApiRoute, bytes: &[u8], key: &ApiKey, app: &App) -> Result<Checked, Refusal> {
    let items = items(route, bytes)?;
    let catalog = app.catalog.load();
    let caller = Caller {
        catalog: &catalog,
        click_ids: &app.click_ids,
        key: key.name,
        advertisers: &key.advertisers,
        now_ms: now_ms(),
        orders_by_id: app.orders_by_id,
    };
    let mut outcomes = Vec::with_capacity(items.len());
    let mut receipts = Vec::new();
    for (i, raw) in items.iter().enumerate() {
        let submitted = match route {
            ApiRoute::Conversions => submit_conversion(raw, &caller, app),
            ApiRoute::Adjustments => submit_adjustment(raw, &caller, app),
        };
        match submitted {
            Ok((id, receipt)) => {
                outcomes.push(Outcome::Accepted(id));
                receipts.push((i, receipt));
            }
            Err((r, detail)) => outcomes.push(Outcome::Rejected(r, detail)),
        }
    }
    Ok((outcomes, receipts))
}

/// An item refused: why, and serde's words when it is malformed.
type Refused = (Rejection, Option<String>);

fn submit_conversion(
    raw: &RawValue,
    caller: &Caller<'_>,
    app: &App,
) -> Result<(EventId, Receipt), Refused> {
    let item: Item<'_> =
        serde_json::from_str(raw.get()).map_err(|e| (Rejection::Malformed, Some(detail(&e))))?;
    let mut event = server_conversion::event(&item, caller).map_err(|r| (r, None))?;
    app.recent_orders.flag(&mut event, caller.catalog);
    Ok((event.common.event_id, app.delivery.submit(&event)))
}

fn submit_adjustment(
    raw: &RawValue,
    caller: &Caller<'_>,
    app: &App,
) -> Result<(EventId, Receipt), Refused> {
    let item: AdjustmentItem<'_> =
        serde_json::from_str(raw.get()).map_err(|e| (Rejection::Malformed, Some(detail(&e))))?;
    let conversion = item.as_conversion().map_err(|r| (r, None))?;
    let event = server_adjustment::event(item.kind, &conversion, caller).map_err(|r| (r, None))?;
    Ok((event.common.event_id, app.delivery.submit(&event)))
}

/// serde's message without its position (which says nothing of an item
/// read on its own), e.g. `missing field `pixel_id``.
fn detail(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.find(" at line ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// Waits for every accepted item together (a journal append each), and
/// marks the ones that were not stored.
async fn settle(outcomes: &mut [Outcome], receipts: Vec<(usize, Receipt)>) {
    let mut pending = tokio::task::JoinSet::new();
    for (i, receipt) in receipts {
        pending.spawn(async move { (i, receipt.settled().await) });
    }
    while let Some(done) = pending.join_next().await {
        match done {
            Ok((_, Ok(()))) => {}
            Ok((i, Err(_))) => outcomes[i] = Outcome::NotStored,
            // A settle task cannot panic short of a bug; the item is then
            // not known to be stored, and the caller is told to resend
            // everything it sent (the order ids make that safe).
            Err(_) => outcomes.iter_mut().for_each(|o| {
                if matches!(o, Outcome::Accepted(_)) {
                    *o = Outcome::NotStored
                }
            }),
        }
    }
}

fn results(outcomes: &[Outcome]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + outcomes.len() * 80);
    let mut w = JsonWriter::object(&mut out);
    let count = |f: fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count() as u64;
    w.u64("accepted", count(|o| matches!(o, Outcome::Accepted(_))));
    w.u64("rejected", count(|o| matches!(o, Outcome::Rejected(..))));
    w.u64("failed", count(|o| matches!(o, Outcome::NotStored)));
    w.objects("results", outcomes.iter().enumerate(), |o, (i, outcome)| {
        o.u64("index", i as u64);
        match outcome {
            Outcome::Accepted(id) => {
                o.str("status", "accepted");
                o.str("event_id", id.to_hyphenated().as_str());
            }
            Outcome::Rejected(r, detail) => {
                o.str("status", "rejected");
                o.str("reason", r.as_str());
                o.opt_str("detail", detail.as_deref());
            }
            Outcome::NotStored => {
                o.str("status", "failed");
                o.str("reason", "not_stored");
            }
        }
    });
    w.end();
    out.push(b'\n');
    out
}
