//! The reference: the single-node engine (`pixeld serve`'s own) fed every
//! consumed input event sorted by time, ties by event id: what the fleet
//! promises to answer for every event that arrives within the grace.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use pixeld::attribution::{Engine, Input, State};
use pixeld::config::{Catalog, Config};
use pixeld::event::EventType;
use serde_json::Value;

/// Each conversion's record, as JSON, by conversion event id.
pub fn reference(cfg: &Config, events: &[(EventType, Vec<u8>)]) -> HashMap<String, Value> {
    let mut inputs: Vec<Input> = events
        .iter()
        .filter_map(|(kind, payload)| Input::from_json(*kind, payload))
        .collect();
    inputs.sort_by_key(|i| (i.ts_ms(), i.event_id()));
    let catalog = Arc::new(ArcSwap::new(Catalog::new(cfg).expect("the catalog")));
    let engine = Engine::new(Arc::new(State::default()), catalog);
    let mut out = HashMap::new();
    for input in inputs {
        if let Some(record) = engine.apply(input) {
            let mut buf = Vec::new();
            record.encode(&mut buf);
            let id = record.conversion.event_id.to_hyphenated();
            let json = serde_json::from_slice(&buf).expect("a record is JSON");
            out.insert(id.as_str().to_string(), json);
        }
    }
    out
}
