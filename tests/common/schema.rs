//! The committed JSON Schemas, compiled once per test process.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value;

/// The committed JSON Schemas, by event type.
pub fn schemas() -> &'static HashMap<String, jsonschema::Validator> {
    static SCHEMAS: OnceLock<HashMap<String, jsonschema::Validator>> = OnceLock::new();
    SCHEMAS.get_or_init(compile)
}

fn compile() -> HashMap<String, jsonschema::Validator> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/event/schemas");
    let mut out = HashMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        out.insert(name, jsonschema::validator_for(&schema).unwrap());
    }
    out
}

/// Fails unless `event` is valid against the schema of its `type`.
pub fn assert_schema(event: &Value) {
    let schemas = schemas();
    let kind = event["type"].as_str().unwrap();
    let validator = schemas
        .get(kind)
        .unwrap_or_else(|| panic!("no schema for {kind}"));
    let errors: Vec<String> = validator
        .iter_errors(event)
        .map(|e| e.to_string())
        .collect();
    assert!(
        errors.is_empty(),
        "{kind} event {event} breaks its schema: {errors:?}"
    );
}

/// Asserts the fields every event has, and returns the event id.
pub fn assert_common(event: &Value, kind: &str) -> String {
    assert_eq!(event["v"], 1);
    assert_eq!(event["type"], kind);
    let id = event["event_id"].as_str().unwrap();
    assert_eq!(id.len(), 36);
    assert_eq!(&id[14..15], "7", "event ids are UUIDv7");
    let ts = event["ts"].as_u64().unwrap();
    let now = pixeld::telemetry::now_ms();
    assert!(ts <= now && now - ts < 120_000, "ts {ts} is not recent");
    assert_schema(event);
    id.to_string()
}
