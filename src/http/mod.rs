//! The HTTP side: accept loop, routing, responses, cookies, client address.

pub mod admin;
pub mod api;
pub mod app;
pub mod client_ip;
pub mod cookie;
pub mod head_deadline;
mod no_store;
mod optout;
pub mod rate_limit;
pub mod recent_orders;
pub mod reload_queue;
pub mod response;
pub mod router;
pub mod server;
pub mod serving;
pub mod status_page;
pub mod sync;

pub use app::{App, Live, Reload};
pub use router::Role;
pub use server::{run, Limits};
pub use serving::{bind_public, ServingThread, ServingThreads};
