//! The server-side API on the public listener: advertisers' servers report
//! conversions (`POST /v1/conversions`) and their retractions and
//! restatements (`POST /v1/adjustments`) with a bearer key. JSON in and out.
//!
//! - [`keys`]: who is calling (`[[api_keys]]`);
//! - [`body`]: the request body, bounded in size and time;
//! - [`batch`]: the batch, item by item, and the answer.

pub mod batch;
pub mod body;
pub mod keys;

use hyper::StatusCode;

use super::response::{self, Body};
use crate::event::JsonWriter;

pub use keys::{ApiKey, ApiKeys};

/// The API's routes, as the `route` label of its metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiRoute {
    Conversions,
    Adjustments,
}

impl ApiRoute {
    pub fn label(self) -> &'static str {
        match self {
            ApiRoute::Conversions => "conversions",
            ApiRoute::Adjustments => "adjustments",
        }
    }
}

/// A whole request refused: its status and a one-line reason, as
/// `{"error": "..."}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub reason: &'static str,
}

impl Refusal {
    pub const fn new(status: StatusCode, reason: &'static str) -> Refusal {
        Refusal { status, reason }
    }

    pub fn response(self) -> hyper::Response<Body> {
        let mut out = Vec::with_capacity(self.reason.len() + 16);
        let mut w = JsonWriter::object(&mut out);
        w.str("error", self.reason);
        w.end();
        out.push(b'\n');
        let mut resp = response::json(self.status, out);
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}
