//! pixeld: a tracking-pixel server.
//!
//! A request flows one way through these modules:
//!
//! - [`http`]: accept loop, routing, identity (the user-id cookie, the
//!   client address), responses;
//! - [`pixel`]: zero-copy query parsing, then one module per pixel type turning a
//!   request into an event and a reply (GIF, redirect or JavaScript);
//! - [`event`]: the event types, their JSON encoding, and what the
//!   attribution engine needs of them ([`event::AttributionInput`]);
//! - [`delivery`]: the one place that knows whether an event goes to the
//!   journal or straight to Kafka, and counts what became of it;
//! - [`journal`]: opaque records on disk before the answer; its shipper
//!   produces them to Kafka;
//! - [`sink`]: the boundary to Kafka (the sink, the embedded cluster, the
//!   producer seam shared with the shipper);
//! - [`attribution`]: reads impressions, clicks and conversions (from the
//!   journal, or from the delivery's tap without one), credits each
//!   conversion and hands the verdict to the delivery.
//!
//! [`reload`] re-reads the config of a running `serve` (SIGHUP, `POST
//! /-/reload`, a watched file) and swaps what may change live.
//!
//! [`attribute`] is the second service: `pixeld attribute`, the engine as a
//! Kafka consumer-group member ([`attribution::cluster`]) for fleets of
//! `serve` instances (`attribution.mode = "cluster"`). [`forward`] is the
//! third: `pixeld forward` reads the attribution records and tells
//! traffic sources and ad platforms ([`postback`]: postbacks, Meta's
//! Conversions API, Google Ads uploads), with retries, dead letters and a
//! delivery log.
//!
//! Around them: [`config`] (typed values, validation, the lookup catalog; read
//! by all, reads only the leaves [`ids`] and [`files`]), [`serve`] (start-up and shutdown order),
//! [`tags`] (exportable tags), [`ids`] (newtype ids), [`telemetry`] (every
//! metric's name and description, logs), [`files`] (atomic, durable small
//! files), [`background`] (threads that never preempt the request path),
//! [`fdlimit`] (the open-file limit against the connections allowed),
//! [`alloc`] (mimalloc, and huge pages for the large tables) and `indexed`
//! (enums that index tables: `ALL`, `COUNT` and `index()` derived from the
//! variants, so a new variant cannot miss a table).

pub mod alloc;
pub mod attribute;
pub mod attribution;
pub mod background;
pub mod config;
pub mod delivery;
pub mod event;
pub mod fdlimit;
pub mod files;
pub mod forward;
pub mod http;
pub mod ids;
mod indexed;
pub mod journal;
pub mod pixel;
pub mod postback;
pub mod reload;
pub mod serve;
pub mod sink;
pub mod tags;
pub mod telemetry;
