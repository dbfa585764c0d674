//! What the checker consumed so far: the input events (each once, by event
//! id), the conversions, the attribution records by conversion, and how many
//! events each user's requests published, by type.

use std::collections::{HashMap, HashSet};

use pixeld::event::EventType;
use serde_json::Value;

use super::consume::Msg;

pub const IMPRESSIONS: &str = "pixel.impressions";
pub const CLICKS: &str = "pixel.clicks";
pub const CONVERSIONS: &str = "pixel.conversions";
pub const ATTRIBUTIONS: &str = "pixel.attributions";

/// A conversion event and where it sits (for grepping the members' logs).
pub struct Conversion {
    pub ts: u64,
    pub partition: i32,
    pub offset: i64,
}

#[derive(Default)]
pub struct Seen {
    /// Input events, first copy of each: the reference's input.
    pub inputs: Vec<(EventType, Vec<u8>)>,
    ids: HashSet<String>,
    /// Copies of an input event already seen (a producer's retry).
    pub repeated_inputs: usize,
    pub conversions: HashMap<String, Conversion>,
    pub records: HashMap<String, Vec<Value>>,
    /// Events published per (uid, type).
    pub published: HashMap<(String, String), usize>,
    /// Input event ids and records' conversion ids taken from a fresh read
    /// ([`Seen::merge`]) that this reader had not read yet.
    merged: HashSet<String>,
    /// Of those, how many this reader read later after all: it lagged, it
    /// had not lost them.
    pub merged_then_read: usize,
}

fn kind_of(topic: &str) -> Option<EventType> {
    match topic {
        IMPRESSIONS => Some(EventType::Impression),
        CLICKS => Some(EventType::Click),
        CONVERSIONS => Some(EventType::Conversion),
        _ => None,
    }
}

impl Seen {
    /// Takes in one message; its event's time (a record's is its
    /// conversion's), so the caller can tell whether it concerns a window.
    pub fn fold(&mut self, m: &Msg) -> Option<u64> {
        let json: Value = serde_json::from_slice(&m.payload).ok()?;
        let ts = json["ts"].as_u64()?;
        let str_of = |k: &str| json[k].as_str().unwrap_or_default().to_string();
        if m.topic == ATTRIBUTIONS {
            let c = str_of("conversion_event_id");
            let records = self.records.entry(c.clone()).or_default();
            if self.merged.remove(&c) && records.contains(&json) {
                self.merged_then_read += 1;
            } else {
                records.push(json);
            }
            return Some(ts);
        }
        let kind = kind_of(&m.topic)?;
        let id = str_of("event_id");
        if !self.ids.insert(id.clone()) {
            match self.merged.remove(&id) {
                true => self.merged_then_read += 1,
                false => self.repeated_inputs += 1,
            }
            return Some(ts);
        }
        let key = (str_of("uid"), kind.as_str().to_string());
        *self.published.entry(key).or_default() += 1;
        if kind == EventType::Conversion {
            let at = Conversion {
                ts,
                partition: m.partition,
                offset: m.offset,
            };
            self.conversions.insert(str_of("event_id"), at);
        }
        self.inputs.push((kind, m.payload.clone()));
        Some(ts)
    }

    /// Takes what a fresh read found and this one did not: input events it
    /// lacks, and the records of conversions it has none of.
    pub fn merge(&mut self, fresh: Seen) -> usize {
        let mut found = 0;
        for (kind, payload) in fresh.inputs {
            let json: Value = serde_json::from_slice(&payload).unwrap_or_default();
            let id = json["event_id"].as_str().unwrap_or_default().to_string();
            if self.ids.insert(id.clone()) {
                found += 1;
                self.merged.insert(id.clone());
                let key = (
                    json["uid"].as_str().unwrap_or_default().to_string(),
                    kind.as_str().to_string(),
                );
                *self.published.entry(key).or_default() += 1;
                if let Some(c) = fresh.conversions.get(&id) {
                    let at = Conversion {
                        ts: c.ts,
                        partition: c.partition,
                        offset: c.offset,
                    };
                    self.conversions.insert(id, at);
                }
                self.inputs.push((kind, payload));
            }
        }
        for (id, records) in fresh.records {
            if !self.records.contains_key(&id) {
                found += 1;
                self.merged.insert(id.clone());
                self.records.insert(id, records);
            }
        }
        found
    }
}
