//! A sink that keeps messages in memory, for tests and benchmarks.

use std::sync::Mutex;
use std::time::Duration;

use super::{Message, Sink, SinkError, Topic};
use crate::event::EventType;

/// A message as the memory sink stored it.
#[derive(Clone, Debug)]
pub struct Record {
    pub topic: Topic,
    pub key: Vec<u8>,
    pub kind: EventType,
    pub payload: Vec<u8>,
    /// The `pixeld-input` header's value, when the message has one.
    pub input: Option<Vec<u8>>,
}

impl Record {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).expect("the memory sink holds JSON")
    }
}

/// Keeps every message, in order.
#[derive(Default)]
pub struct MemorySink {
    /// Everything published so far.
    records: Mutex<Vec<Record>>,
}

impl MemorySink {
    pub fn take(&self) -> Vec<Record> {
        std::mem::take(&mut *self.records.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Sink for MemorySink {
    fn publish(&self, msg: Message<'_>) -> Result<(), SinkError> {
        let record = Record {
            topic: msg.topic,
            key: msg.key.to_vec(),
            kind: msg.kind,
            payload: msg.payload.to_vec(),
            input: msg.input.map(<[u8]>::to_vec),
        };
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(record);
        Ok(())
    }

    fn is_ready(&self) -> bool {
        true
    }

    fn flush(&self, _timeout: Duration) -> usize {
        0
    }
}
