//! pixeld: a tracking-pixel server.
//!
//! A request flows one way through these modules:
//!
//! - [`http`]: accept loop, routing, responses, the user-id cookie, the client address;
//! - [`pixel`]: zero-copy query parsing, then one module per pixel type turning a
//!   request into an event and a reply (GIF, redirect or JavaScript);
//! - [`event`]: the event types and their JSON encoding;
//! - [`journal`]: the event on disk before the answer; its shipper produces
//!   to Kafka;
//! - [`sink`]: the boundary to Kafka (real, embedded, or in memory for tests);
//! - [`attribution`]: reads impressions, clicks and conversions from the
//!   journal (or a channel without one), credits each conversion and
//!   publishes the verdict.
//!
//! Around them: [`config`] (load, validate, the lookup catalog), [`app`] (the
//! shared state built from it), [`serve`] (start-up and shutdown order),
//! [`tags`] (exportable tags), [`ids`] (newtype ids), [`telemetry`]
//! (metrics and logs), [`background`] (threads that never preempt the
//! request path) and [`alloc`] (mimalloc, and huge pages for the large
//! tables).

pub mod alloc;
pub mod attribution;
pub mod background;
pub mod config;
pub mod delivery;
pub mod event;
pub mod files;
pub mod http;
pub mod ids;
pub mod journal;
pub mod pixel;
pub mod serve;
pub mod sink;
pub mod tags;
pub mod telemetry;
