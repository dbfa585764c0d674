//! Shared helpers for the integration tests, by concern: a real tansu
//! broker ([`broker`]), test configs ([`config`]), pixeld in this process
//! and an HTTP client ([`server`]), pixeld as a real process ([`process`]),
//! consuming the topics ([`consume`]) and the JSON Schemas ([`schema`]).
#![allow(dead_code, unused_imports)]

pub mod broker;
pub mod browser;
pub mod catcher;
pub mod cluster;
pub mod config;
pub mod consume;
pub mod forward;
pub mod process;
pub mod schema;
pub mod server;

pub use broker::*;
pub use config::*;
pub use consume::*;
pub use process::*;
pub use schema::*;
pub use server::*;
