//! `POST /v1/conversions`: a batch of conversions from an advertiser's
//! server. Each item is accepted (and becomes a conversion event) or
//! rejected with a stable reason; the answer is sent once every accepted
//! item is as safe as `journal.durability` promises, as for a pixel.

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
use crate::pixel::server_conversion::{self, Caller, Item, Rejection};
use crate::telemetry::{metric, now_ms};

/// The most items one request may carry.
pub const MAX_ITEMS: usize = 1000;

const UNAUTHORIZED: Refusal = Refusal::new(
    StatusCode::UNAUTHORIZED,
    "unauthorized: send Authorization: Bearer <the secret of an [[api_keys]] entry>",
);
const NOT_A_BATCH: Refusal = Refusal::new(
    StatusCode::BAD_REQUEST,
    "the body must be a JSON object {\"conversions\": [...]}",
);
const TOO_MANY: Refusal = Refusal::new(
    StatusCode::PAYLOAD_TOO_LARGE,
    "more than 1000 conversions: split the batch",
);

/// The body's shape; each item is read on its own so that one bad item is
/// rejected alone.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch<'a> {
    #[serde(borrow)]
    conversions: Vec<&'a RawValue>,
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
pub async fn answer<B>(req: Request<B>, app: Arc<App>) -> Response<Body>
where
    B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let live = app.live.load_full();
    let Some(key) = live.api_keys.authenticate(req.headers()) else {
        metric::api_request(ApiRoute::Conversions.label(), "none", 401);
        return UNAUTHORIZED.response();
    };
    let name = key.name;
    let refused = |r: Refusal| {
        metric::api_request(
            ApiRoute::Conversions.label(),
            name.as_str(),
            r.status.as_u16(),
        );
        r.response()
    };
    let bytes = match body::read_json(req).await {
        Ok(b) => b,
        Err(r) => return refused(r),
    };
    let (mut outcomes, receipts) = match accept(&bytes, key, &app) {
        Ok(x) => x,
        Err(r) => return refused(r),
    };
    settle(&mut outcomes, receipts).await;
    for o in &outcomes {
        metric::api_item(ApiRoute::Conversions.label(), name.as_str(), o.label());
    }
    metric::api_request(ApiRoute::Conversions.label(), name.as_str(), 200);
    response::json(StatusCode::OK, results(&outcomes))
}

/// Each item's outcome, and the receipts of the accepted ones by index.
type Checked = (Vec<Outcome>, Vec<(usize, Receipt)>);

/// Every item checked, and the accepted ones handed to the delivery.
fn accept(bytes: &[u8], key: &ApiKey, app: &App) -> Result<Checked, Refusal> {
    let batch: Batch<'_> = serde_json::from_slice(bytes).map_err(|_| NOT_A_BATCH)?;
    if batch.conversions.len() > MAX_ITEMS {
        return Err(TOO_MANY);
    }
    let catalog = app.catalog.load();
    let caller = Caller {
        catalog: &catalog,
        click_ids: &app.click_ids,
        key: key.name,
        advertisers: &key.advertisers,
        now_ms: now_ms(),
    };
    let mut outcomes = Vec::with_capacity(batch.conversions.len());
    let mut receipts = Vec::new();
    for (i, raw) in batch.conversions.iter().enumerate() {
        let item: Item<'_> = match serde_json::from_str(raw.get()) {
            Ok(item) => item,
            Err(e) => {
                outcomes.push(Outcome::Rejected(Rejection::Malformed, Some(detail(&e))));
                continue;
            }
        };
        match server_conversion::event(&item, &caller) {
            Ok(event) => {
                outcomes.push(Outcome::Accepted(event.common.event_id));
                receipts.push((i, app.delivery.submit(&event)));
            }
            Err(r) => outcomes.push(Outcome::Rejected(r, None)),
        }
    }
    Ok((outcomes, receipts))
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
