//! The local journal between the handlers and Kafka: every answered event is
//! on disk (in the page cache, or fsynced) before its response is sent, and
//! reaches Kafka at least once with its original `event_id`, whatever happens
//! to the process or the broker in between.
//!
//! A record goes one way through these rooms. A serving thread appends
//! through its own [`lane`], which groups that thread's records and writes
//! each group itself; everyone else (and every append in `fsync` mode)
//! through the [`Journal`] handle ([`handle`]), whose bounded queue feeds
//! the [`writer`] thread. Each owns a core ([`writer::Core`]) writing a
//! stream of [`segment`] files of its own: it frames records ([`frame`])
//! and writes each group with one `write` (one `fdatasync` in `fsync`
//! mode), numbered from the one numbering they share. Readers follow the
//! writers with a [`Cursor`] ([`cursor`]), which merges the streams, one
//! [`stream_reader`] each: the shipper ([`ship`]), which produces
//! to Kafka, moves the [`checkpoint`] past acknowledged records only,
//! dead-letters poison records and deletes shipped segments; and the
//! attribution engine. At open, [`recovery`] truncates a torn tail and
//! resumes the numbering.
//!
//! They know of each other only through the shared progress
//! ([`progress`]: what is written, shipped and snapshotted, the bytes on
//! disk), each figure written by one party through a method and read by
//! the others through methods.

mod checkpoint;
mod cursor;
pub mod frame;
mod handle;
pub mod lane;
mod progress;
mod recovery;
mod segment;
pub mod ship;
mod stream_reader;
mod writer;

pub use cursor::{Cursor, Position};
pub use frame::Record;
pub use handle::{AppendError, Journal, Settings, TryAppend};
pub use progress::Shared;

#[cfg(test)]
mod tests;
