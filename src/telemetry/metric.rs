//! Every metric pixeld exports, named and described once. Each is recorded
//! through its function here, called at the one place that observes it, so
//! a name cannot drift between the code that counts and the dashboards that
//! read it (`tests::every_metric_is_described`).

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// (name, unit, what it counts), for [`describe`] and the test.
pub const ALL: &[(&str, Unit, &str)] = &[
    (EVENTS, Unit::Count, "Events delivered as far as the configured durability promises (journaled, or queued to Kafka in memory mode), by type."),
    (EVENTS_DROPPED, Unit::Count, "Answered events that were not kept, by reason (journal_full, journal_unavailable, queue_full, too_large, unavailable)."),
    (HTTP_REFUSED, Unit::Count, "Requests refused before any pixel handling, by reason."),
    (HANDLER_PANICS, Unit::Count, "Handlers that panicked; each still answered the GIF."),
    (COOKIE_BOUNCES, Unit::Count, "Pixel requests without an id answered with the cookie bounce (cookie.bounce)."),
    (ATTRIBUTION_EVICTED, Unit::Count, "Users evicted from the attribution state because it held attribution.max_users."),
    (ATTRIBUTION_DROPPED, Unit::Count, "Attribution inputs lost to a full engine channel (memory mode)."),
    (ATTRIBUTION_USERS, Unit::Count, "Users the attribution engine holds state for."),
    (ATTRIBUTION_ENTRIES, Unit::Count, "Touches and repeat marks the attribution engine holds."),
    (ATTRIBUTION_SNAPSHOT_BYTES, Unit::Bytes, "Size of the last attribution snapshot."),
    (JOURNAL_BYTES, Unit::Bytes, "Bytes of journal segments on disk."),
    (JOURNAL_RECORDS_BEHIND, Unit::Count, "Journal records not yet acknowledged by Kafka."),
    (JOURNAL_OLDEST_UNSHIPPED_AGE, Unit::Seconds, "Age of the oldest journal record not yet acknowledged by Kafka."),
    (JOURNAL_SHIPPED, Unit::Count, "Journal records acknowledged by Kafka."),
    (JOURNAL_SHIP_RETRIES, Unit::Count, "Journal records produced again after a retriable delivery failure."),
    (JOURNAL_DEAD_LETTERS, Unit::Count, "Journal records the broker refused for good, written to the dead-letter file."),
    (JOURNAL_TORN_BYTES, Unit::Bytes, "Bytes truncated from a torn journal tail at start-up."),
    (JOURNAL_CORRUPT_RECORDS, Unit::Count, "Journal records skipped because their segment was unreadable."),
    (KAFKA_DELIVERED, Unit::Count, "Messages acknowledged by Kafka (all producers)."),
    (KAFKA_DELIVERY_FAILED, Unit::Count, "Messages Kafka reported as failed (all producers)."),
    (KAFKA_CLIENT_ERRORS, Unit::Count, "Errors reported by the Kafka client library."),
    (CLUSTER_LAG, Unit::Count, "pixeld attribute: input messages not yet read, by topic and partition."),
    (CLUSTER_WATERMARK_AGE, Unit::Seconds, "pixeld attribute: how far a partition's event-time watermark is behind the clock, by partition."),
    (CLUSTER_HELD, Unit::Count, "pixeld attribute: inputs held in a partition's event-time buffer, by partition."),
    (CLUSTER_RESTORE, Unit::Seconds, "pixeld attribute: how long the last restore of a partition from the changelog took, by partition."),
    (CLUSTER_REBALANCES, Unit::Count, "pixeld attribute: consumer-group rebalances this member took part in, by kind (assign, revoke)."),
    (CLUSTER_LATE, Unit::Count, "pixeld attribute: inputs that arrived after the grace period, applied and flagged late, by type."),
    (CLUSTER_RECORDS, Unit::Count, "pixeld attribute: messages produced, by topic kind (attribution, changelog, tombstone)."),
    (CLUSTER_COMMITS, Unit::Count, "pixeld attribute: input offset commits, by result (ok, failed)."),
    (CLUSTER_RESUMED_AHEAD, Unit::Count, "pixeld attribute: assignments where the client resumed past the committed offset and was sought back."),
    (CLUSTER_DECISION_DELAY, Unit::Seconds, "pixeld attribute: from a conversion's arrival to its record being produced (the event-time buffer's wait)."),
];

/// The names in [`ALL`] recorded as histograms.
pub const HISTOGRAMS: &[&str] = &[CLUSTER_DECISION_DELAY];

pub const EVENTS: &str = "events_total";
pub const EVENTS_DROPPED: &str = "events_dropped_total";
pub const HTTP_REFUSED: &str = "http_refused_total";
pub const HANDLER_PANICS: &str = "handler_panics_total";
pub const COOKIE_BOUNCES: &str = "cookie_bounces_total";
pub const ATTRIBUTION_EVICTED: &str = "attribution_evicted_users_total";
pub const ATTRIBUTION_DROPPED: &str = "attribution_dropped_total";
pub const ATTRIBUTION_USERS: &str = "attribution_users";
pub const ATTRIBUTION_ENTRIES: &str = "attribution_entries";
pub const ATTRIBUTION_SNAPSHOT_BYTES: &str = "attribution_snapshot_bytes";
pub const JOURNAL_BYTES: &str = "journal_bytes";
pub const JOURNAL_RECORDS_BEHIND: &str = "journal_records_behind";
pub const JOURNAL_OLDEST_UNSHIPPED_AGE: &str = "journal_oldest_unshipped_age_seconds";
pub const JOURNAL_SHIPPED: &str = "journal_shipped_total";
pub const JOURNAL_SHIP_RETRIES: &str = "journal_ship_retries_total";
pub const JOURNAL_DEAD_LETTERS: &str = "journal_dead_letters_total";
pub const JOURNAL_TORN_BYTES: &str = "journal_torn_bytes_total";
pub const JOURNAL_CORRUPT_RECORDS: &str = "journal_corrupt_records_total";
pub const KAFKA_DELIVERED: &str = "kafka_delivered_total";
pub const KAFKA_DELIVERY_FAILED: &str = "kafka_delivery_failed_total";
pub const KAFKA_CLIENT_ERRORS: &str = "kafka_client_errors_total";
pub const CLUSTER_LAG: &str = "attribution_partition_lag";
pub const CLUSTER_WATERMARK_AGE: &str = "attribution_watermark_age_seconds";
pub const CLUSTER_HELD: &str = "attribution_inputs_held";
pub const CLUSTER_RESTORE: &str = "attribution_restore_seconds";
pub const CLUSTER_REBALANCES: &str = "attribution_rebalances_total";
pub const CLUSTER_LATE: &str = "attribution_late_events_total";
pub const CLUSTER_RECORDS: &str = "attribution_cluster_produced_total";
pub const CLUSTER_COMMITS: &str = "attribution_commits_total";
pub const CLUSTER_RESUMED_AHEAD: &str = "attribution_resumed_ahead_total";
pub const CLUSTER_DECISION_DELAY: &str = "attribution_decision_delay_seconds";

/// Registers the description and unit of every metric (called once, when
/// the recorder is installed).
pub fn describe() {
    for &(name, unit, help) in ALL {
        if HISTOGRAMS.contains(&name) {
            describe_histogram!(name, unit, help);
        } else if name.ends_with("_total") {
            describe_counter!(name, unit, help);
        } else {
            describe_gauge!(name, unit, help);
        }
    }
}

/// An event was delivered as far as the durability mode promises.
pub fn event_delivered(kind: &'static str) {
    metrics::counter!(EVENTS, "type" => kind).increment(1);
}

/// An answered event was not kept.
pub fn event_dropped(reason: &'static str) {
    metrics::counter!(EVENTS_DROPPED, "reason" => reason).increment(1);
}

pub fn http_refused(reason: &'static str) {
    metrics::counter!(HTTP_REFUSED, "reason" => reason).increment(1);
}

pub fn handler_panicked() {
    metrics::counter!(HANDLER_PANICS).increment(1);
}

pub fn cookie_bounced() {
    metrics::counter!(COOKIE_BOUNCES).increment(1);
}

pub fn attribution_evicted(users: usize) {
    metrics::counter!(ATTRIBUTION_EVICTED).increment(users as u64);
}

pub fn attribution_input_dropped() {
    metrics::counter!(ATTRIBUTION_DROPPED).increment(1);
}

pub fn attribution_state(users: usize, entries: usize) {
    metrics::gauge!(ATTRIBUTION_USERS).set(users as f64);
    metrics::gauge!(ATTRIBUTION_ENTRIES).set(entries as f64);
}

pub fn attribution_snapshot_written(bytes: usize) {
    metrics::gauge!(ATTRIBUTION_SNAPSHOT_BYTES).set(bytes as f64);
}

pub fn journal_size(bytes: u64) {
    metrics::gauge!(JOURNAL_BYTES).set(bytes as f64);
}

pub fn journal_backlog(records_behind: u64, oldest_age_seconds: f64) {
    metrics::gauge!(JOURNAL_RECORDS_BEHIND).set(records_behind as f64);
    metrics::gauge!(JOURNAL_OLDEST_UNSHIPPED_AGE).set(oldest_age_seconds);
}

pub fn journal_shipped(records: u64) {
    metrics::counter!(JOURNAL_SHIPPED).increment(records);
}

pub fn journal_ship_retry() {
    metrics::counter!(JOURNAL_SHIP_RETRIES).increment(1);
}

pub fn journal_dead_letter() {
    metrics::counter!(JOURNAL_DEAD_LETTERS).increment(1);
}

pub fn journal_torn(bytes: u64) {
    metrics::counter!(JOURNAL_TORN_BYTES).increment(bytes);
}

pub fn journal_corrupt(records: u64) {
    metrics::counter!(JOURNAL_CORRUPT_RECORDS).increment(records);
}

pub fn kafka_delivered() {
    metrics::counter!(KAFKA_DELIVERED).increment(1);
}

pub fn kafka_delivery_failed() {
    metrics::counter!(KAFKA_DELIVERY_FAILED).increment(1);
}

pub fn kafka_client_error() {
    metrics::counter!(KAFKA_CLIENT_ERRORS).increment(1);
}

/// A partition's progress, after a batch of inputs.
pub fn cluster_partition(partition: i32, held: usize, watermark_age_seconds: f64) {
    let p = partition.to_string();
    metrics::gauge!(CLUSTER_HELD, "partition" => p.clone()).set(held as f64);
    metrics::gauge!(CLUSTER_WATERMARK_AGE, "partition" => p).set(watermark_age_seconds);
}

pub fn cluster_lag(topic: &str, partition: i32, lag: i64) {
    metrics::gauge!(CLUSTER_LAG, "topic" => topic.to_string(), "partition" => partition.to_string())
        .set(lag.max(0) as f64);
}

pub fn cluster_restored(partition: i32, seconds: f64) {
    metrics::gauge!(CLUSTER_RESTORE, "partition" => partition.to_string()).set(seconds);
}

pub fn cluster_rebalance(kind: &'static str) {
    metrics::counter!(CLUSTER_REBALANCES, "kind" => kind).increment(1);
}

pub fn cluster_late(kind: &'static str) {
    metrics::counter!(CLUSTER_LATE, "type" => kind).increment(1);
}

pub fn cluster_produced(kind: &'static str, n: u64) {
    metrics::counter!(CLUSTER_RECORDS, "kind" => kind).increment(n);
}

pub fn cluster_commit(ok: bool) {
    metrics::counter!(CLUSTER_COMMITS, "result" => if ok { "ok" } else { "failed" }).increment(1);
}

pub fn cluster_resumed_ahead() {
    metrics::counter!(CLUSTER_RESUMED_AHEAD).increment(1);
}

pub fn cluster_decision_delay(seconds: f64) {
    metrics::histogram!(CLUSTER_DECISION_DELAY).record(seconds);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_described_once_and_every_recorded_name_is_listed() {
        let mut names: Vec<&str> = ALL.iter().map(|(n, ..)| *n).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n, "a metric is listed twice");
        // No `metrics::counter!("literal"` outside this file: every name
        // goes through a function here.
        let src = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
        let mut stack = vec![std::path::PathBuf::from(src)];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs")
                    && !path.ends_with("telemetry/metric.rs")
                {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for macro_ in ["counter!(\"", "gauge!(\"", "histogram!(\""] {
                        assert!(
                            !text.contains(macro_),
                            "{} names a metric inline; add it to telemetry/metric.rs",
                            path.display()
                        );
                    }
                }
            }
        }
    }
}
