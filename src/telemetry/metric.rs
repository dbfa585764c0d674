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
    (API_REQUESTS, Unit::Count, "Server-side API calls (POST /v1/conversions), by route, key (the [[api_keys]] id; none when unauthenticated) and status."),
    (API_ITEMS, Unit::Count, "Items of server-side API calls, by route, key and result (accepted, not_stored, or the rejection reason)."),
    (HANDLER_PANICS, Unit::Count, "Handlers that panicked; each still answered the GIF."),
    (COOKIE_BOUNCES, Unit::Count, "Pixel requests without an id answered with the cookie bounce (cookie.bounce)."),
    (ATTRIBUTION_EVICTED, Unit::Count, "Users evicted from the attribution state because it held attribution.max_users."),
    (ATTRIBUTION_DROPPED, Unit::Count, "Attribution inputs lost to a full engine channel (memory mode)."),
    (ATTRIBUTION_USERS, Unit::Count, "Users the attribution engine holds state for."),
    (ATTRIBUTION_ENTRIES, Unit::Count, "Touches, repeat marks, order ids and source click ids the attribution engine holds."),
    (ATTRIBUTION_SNAPSHOT_BYTES, Unit::Bytes, "Size of the last attribution snapshot."),
    (JOURNAL_BYTES, Unit::Bytes, "Bytes of journal segments on disk."),
    (JOURNAL_RECORDS_BEHIND, Unit::Count, "Journal records not yet acknowledged by Kafka."),
    (JOURNAL_OLDEST_UNSHIPPED_AGE, Unit::Seconds, "Age of the oldest journal record not yet acknowledged by Kafka."),
    (JOURNAL_SHIPPED, Unit::Count, "Journal records acknowledged by Kafka."),
    (JOURNAL_SHIP_RETRIES, Unit::Count, "Journal records produced again after a retriable delivery failure."),
    (JOURNAL_DEAD_LETTERS, Unit::Count, "Journal records the broker refused for good, written to the dead-letter file."),
    (JOURNAL_TORN_BYTES, Unit::Bytes, "Bytes truncated from a torn journal tail at start-up."),
    (JOURNAL_CORRUPT_BYTES, Unit::Bytes, "Journal bytes skipped because their segment was unreadable past a point (read by the shipper and the attribution engine, so counted by each)."),
    (KAFKA_DELIVERED, Unit::Count, "Messages acknowledged by Kafka (all producers)."),
    (KAFKA_DELIVERY_FAILED, Unit::Count, "Messages Kafka reported as failed (all producers)."),
    (KAFKA_CLIENT_ERRORS, Unit::Count, "Errors reported by the Kafka client library."),
    (CLUSTER_LAG, Unit::Count, "pixeld attribute: input messages not yet read, by topic and partition."),
    (CLUSTER_WATERMARK_AGE, Unit::Seconds, "pixeld attribute: how far a partition's event-time watermark is behind the clock, by partition."),
    (CLUSTER_HELD, Unit::Count, "pixeld attribute: inputs held in a partition's event-time buffer, by partition."),
    (CLUSTER_RESTORE, Unit::Seconds, "pixeld attribute: how long the last restore of a partition from the changelog took, by partition."),
    (CLUSTER_REBALANCES, Unit::Count, "pixeld attribute: consumer-group rebalances this member took part in, by kind (assign, revoke)."),
    (CLUSTER_LATE, Unit::Count, "pixeld attribute: inputs that arrived after the grace period, applied and flagged late, by type."),
    (CLUSTER_RECORDS, Unit::Count, "pixeld attribute: messages produced, by topic kind (attribution, changelog, tombstone, adjustment_by_user: adjustments by order id alone sent on to their user's member)."),
    (CLUSTER_COMMITS, Unit::Count, "pixeld attribute: input offset commits, by result (ok, failed)."),
    (CLUSTER_RESUMED_AHEAD, Unit::Count, "pixeld attribute: times the client skipped past the next input offset (at an assignment or mid-stream) and was sought back."),
    (CLUSTER_ORPHANED, Unit::Count, "pixeld attribute: partitions whose committed offset stalled behind their log for several session timeouts while this member does not own them: owned by no live member (the member rejoins the group)."),
    (CLUSTER_EXACTLY_ONCE, Unit::Count, "pixeld attribute: 1 when this member commits records, changelog and input offsets in Kafka transactions (exactly once for read_committed readers), 0 when it runs at least once (attribution.transactions, the probe at start)."),
    (CLUSTER_FUTURE, Unit::Count, "pixeld attribute: inputs dated beyond attribution.max_future_ms, applied as they arrived instead of waiting for the watermark."),
    (CLUSTER_MALFORMED, Unit::Count, "pixeld attribute: messages on an input topic that are not a pixeld event of their kind (skipped, their offset committed), by topic and reason (no_type, not_an_event, event_id, uid)."),
    (CLUSTER_CHANGELOG_INVALID, Unit::Count, "pixeld attribute: changelog values that could not be read at a restore; the user started with an empty state."),
    (CLUSTER_DECISION_DELAY, Unit::Seconds, "pixeld attribute: from a conversion's arrival to its record being produced (the event-time buffer's wait)."),
    (HTTP_REQUESTS, Unit::Count, "Requests answered, by route and status code."),
    (HTTP_DURATION, Unit::Seconds, "From the handler's entry to the response, the wait for the journal included, by route."),
    (HTTP_OPEN_CONNECTIONS, Unit::Count, "Open client connections, by listener (public, admin)."),
    (HTTP_IN_FLIGHT, Unit::Count, "Requests being handled."),
    (JOURNAL_APPEND_DURATION, Unit::Seconds, "From a request's append to its record being written to the journal: by its serving thread's lane, or by the journal writer thread (and fsynced, in fsync mode)."),
    (KAFKA_DELIVERY_LATENCY, Unit::Seconds, "From a record being handed to the Kafka producer to its acknowledgement."),
    (KAFKA_BROKER_RTT, Unit::Seconds, "Average round-trip time to each broker over the last statistics interval (librdkafka statistics)."),
    (KAFKA_QUEUE_MESSAGES, Unit::Count, "Messages in the producer's queue, not yet acknowledged (librdkafka statistics)."),
    (KAFKA_QUEUE_BYTES, Unit::Bytes, "Bytes in the producer's queue (librdkafka statistics)."),
    (KAFKA_TX_ERRORS, Unit::Count, "Transmission errors per broker since start (librdkafka statistics)."),
    (BUILD_INFO, Unit::Count, "Always 1; the version and git commit of this build as labels."),
    (CONFIG_RELOADS, Unit::Count, "Config reloads, by result: ok, invalid (the running config stays), restart_needed (applied except the keys named in the log)."),
    (CONFIG_LAST_RELOAD, Unit::Seconds, "When the config in force was loaded (Unix seconds)."),
    (CONFIG_INFO, Unit::Count, "1 for the SHA-256 of the config file in force (label sha256): instances that disagree show on a dashboard."),
    (ATTRIBUTION_RECORDS, Unit::Count, "Attribution records published, by result (post_click, post_view, or the reason: no_uid, no_line_items, no_touch, outside_window, repeat, duplicate; for adjustments retract, restate, or unknown_order, not_counted, already_retracted)."),
    (RECENT_ORDERS_FULL, Unit::Count, "Conversions with an order id this instance did not remember for the duplicate_order_id warning: its table of recent orders was full of unexpired ones (the attribution record still deduplicates)."),
    (IVT_REQUESTS, Unit::Count, "Pixel requests flagged as invalid traffic, by category (crawler, preview, prefetch, automation, no_user_agent, ...)."),
    (READY, Unit::Count, "1 while /readyz answers 200, 0 while it answers 503 (checked every second)."),
    (JOURNAL_MAX_BYTES, Unit::Bytes, "journal.max_bytes: the disk budget journal_bytes is measured against."),
    (FORWARD_ATTEMPTS, Unit::Count, "pixeld forward: calls to destinations, by destination and result (delivered, or the failure class: invalid_request, timeout, connect, status_3xx, status_408, status_429, status_4xx, status_5xx)."),
    (FORWARD_RETRIES, Unit::Count, "pixeld forward: attempts scheduled again after a retriable failure, by destination."),
    (FORWARD_DEAD_LETTERS, Unit::Count, "pixeld forward: calls written to the dead-letter topic, by destination and reason (final_answer: a 3xx or 4xx other than 408 and 429, or a request the HTTP client refuses to build; attempts_exhausted)."),
    (FORWARD_RECORDS, Unit::Count, "pixeld forward: attribution records read, by destination and result (queued, or why not: filtered, not_forwarded, no_click_id, no_user_data, not_supported)."),
    (FORWARD_MALFORMED, Unit::Count, "pixeld forward: messages on the attributions topic that are not an attribution record (skipped, committed)."),
    (FORWARD_DURATION, Unit::Seconds, "pixeld forward: one attempt's duration, by destination."),
    (FORWARD_QUEUE_DEPTH, Unit::Count, "pixeld forward: calls queued or in flight, by destination; at forward.queue_capacity the partitions feeding it pause."),
    (FORWARD_LAG, Unit::Count, "pixeld forward: records of an owned partition not yet committed (finished by every destination), by partition."),
    (FORWARD_ORPHANED, Unit::Count, "pixeld forward: partitions whose commit stalled behind their log longer than any live owner's can while this instance does not own them (it rejoins the group)."),
    (FORWARD_COMMITS, Unit::Count, "pixeld forward: offset commits, by result (ok, failed)."),
    (USERSYNC_REQUESTS, Unit::Count, "User-id sync requests (/getuid, /getuidnb, /getuidj, /getuidp), by route and answer: uid (an id was handed out), zero (uid 0: no cookie, GPC, opted out, no consent), refused (sync off, a target or callback refused)."),
];

/// The label values each labelled counter starts at 0 with, so that
/// dashboards and alerts see a series before the first occurrence.
const KNOWN: &[(&str, &str, &[&str])] = &[
    (
        EVENTS_DROPPED,
        "reason",
        &[
            "journal_full",
            "journal_unavailable",
            "queue_full",
            "too_large",
            "unavailable",
        ],
    ),
    (
        HTTP_REFUSED,
        "reason",
        &[
            "not_found",
            "method_not_allowed",
            "uri_too_long",
            "head_too_large",
            "transfer_encoding",
            "too_many_connections",
            "header_timeout",
            "malformed_request",
            "accept_failed",
        ],
    ),
    (
        CONFIG_RELOADS,
        "result",
        &["ok", "invalid", "restart_needed"],
    ),
    (
        ATTRIBUTION_RECORDS,
        "result",
        &[
            "post_click",
            "post_view",
            "no_uid",
            "no_line_items",
            "no_touch",
            "outside_window",
            "repeat",
            "duplicate",
            "unknown_order",
            "not_counted",
            "already_retracted",
            "retract",
            "restate",
        ],
    ),
    (
        IVT_REQUESTS,
        "category",
        &[
            "crawler",
            "preview",
            "prefetch",
            "automation",
            "no_user_agent",
        ],
    ),
];

/// The names in [`ALL`] recorded as histograms.
pub const HISTOGRAMS: &[&str] = &[
    CLUSTER_DECISION_DELAY,
    FORWARD_DURATION,
    HTTP_DURATION,
    JOURNAL_APPEND_DURATION,
    KAFKA_DELIVERY_LATENCY,
];

/// Histogram buckets (seconds): 50 µs to 60 s, for request latencies and
/// broker acknowledgements alike.
pub const BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0, 60.0,
];

pub const EVENTS: &str = "events_total";
pub const EVENTS_DROPPED: &str = "events_dropped_total";
pub const HTTP_REFUSED: &str = "http_refused_total";
pub const API_REQUESTS: &str = "api_requests_total";
pub const API_ITEMS: &str = "api_items_total";
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
pub const JOURNAL_CORRUPT_BYTES: &str = "journal_corrupt_bytes_total";
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
pub const CLUSTER_ORPHANED: &str = "attribution_orphaned_partitions";
pub const CLUSTER_EXACTLY_ONCE: &str = "attribution_exactly_once";
pub const CLUSTER_FUTURE: &str = "attribution_future_inputs_total";
pub const CLUSTER_MALFORMED: &str = "attribution_inputs_malformed_total";
pub const CLUSTER_CHANGELOG_INVALID: &str = "attribution_changelog_invalid_total";
pub const CLUSTER_DECISION_DELAY: &str = "attribution_decision_delay_seconds";
pub const HTTP_REQUESTS: &str = "http_requests_total";
pub const HTTP_DURATION: &str = "http_request_duration_seconds";
pub const HTTP_OPEN_CONNECTIONS: &str = "http_open_connections";
pub const HTTP_IN_FLIGHT: &str = "http_requests_in_flight";
pub const JOURNAL_APPEND_DURATION: &str = "journal_append_duration_seconds";
pub const KAFKA_DELIVERY_LATENCY: &str = "kafka_delivery_latency_seconds";
pub const KAFKA_BROKER_RTT: &str = "kafka_broker_rtt_seconds";
pub const KAFKA_QUEUE_MESSAGES: &str = "kafka_producer_queue_messages";
pub const KAFKA_QUEUE_BYTES: &str = "kafka_producer_queue_bytes";
pub const KAFKA_TX_ERRORS: &str = "kafka_broker_tx_errors_total";
pub const BUILD_INFO: &str = "pixeld_build_info";
pub const CONFIG_RELOADS: &str = "config_reloads_total";
pub const CONFIG_LAST_RELOAD: &str = "config_last_reload_timestamp_seconds";
pub const CONFIG_INFO: &str = "config_info";
pub const ATTRIBUTION_RECORDS: &str = "attribution_records_total";
pub const RECENT_ORDERS_FULL: &str = "duplicate_order_hints_dropped_total";
pub const IVT_REQUESTS: &str = "ivt_requests_total";
pub const READY: &str = "pixeld_ready";
pub const JOURNAL_MAX_BYTES: &str = "journal_max_bytes";
pub const USERSYNC_REQUESTS: &str = "usersync_requests_total";
pub const FORWARD_ATTEMPTS: &str = "forward_attempts_total";
pub const FORWARD_RETRIES: &str = "forward_retries_total";
pub const FORWARD_DEAD_LETTERS: &str = "forward_dead_letters_total";
pub const FORWARD_RECORDS: &str = "forward_records_total";
pub const FORWARD_MALFORMED: &str = "forward_records_malformed_total";
pub const FORWARD_DURATION: &str = "forward_call_duration_seconds";
pub const FORWARD_QUEUE_DEPTH: &str = "forward_queue_depth";
pub const FORWARD_LAG: &str = "forward_partition_lag";
pub const FORWARD_ORPHANED: &str = "forward_orphaned_partitions";
pub const FORWARD_COMMITS: &str = "forward_commits_total";

crate::indexed::indexed_enum! {
    /// The `route` label of `usersync_requests_total` (and of the request
    /// metrics): one per sync route, so a label cannot be misspelt at a call.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum SyncRoute {
        /// `/getuid?URL`: a redirect with the id, never a cookie.
        GetUid => "getuid",
        /// `/getuidnb?URL`: the same, issuing an id to a browser without one.
        GetUidNb => "getuidnb",
        /// `/getuidj`: JSON, for partners' scripts (CORS).
        GetUidJ => "getuidj",
        /// `/getuidp?callback=NAME`: JSONP.
        GetUidP => "getuidp",
    }
}

crate::indexed::indexed_enum! {
    /// The `route` label of the request metrics: one slot per route in each
    /// thread's figures ([`super::local`]), found by its index, never by
    /// comparing text. `NotFound` is every path no route takes.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum RouteLabel {
        Imptr => "imptr",
        Clktr => "clktr",
        Px => "px",
        Seg => "seg",
        MapUid => "mapuid",
        OptOut => "optout",
        Healthz => "healthz",
        Readyz => "readyz",
        Metrics => "metrics",
        Robots => "robots",
        Reload => "reload",
        GetUid => "getuid",
        GetUidNb => "getuidnb",
        GetUidJ => "getuidj",
        GetUidP => "getuidp",
        V1Conversions => "v1_conversions",
        V1Adjustments => "v1_adjustments",
        NotFound => "not_found",
    }
}

crate::indexed::indexed_enum! {
    /// The `answer` label of `usersync_requests_total`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum SyncAnswer {
        /// A real id was handed to the partner.
        Uid => "uid",
        /// `0`: no id may be, or can be, handed out.
        Zero => "zero",
        /// Sync off, or the target or callback was refused (4xx).
        Refused => "refused",
    }
}

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

/// The README's catalog of every metric: name, kind, unit, meaning
/// (`tests::the_readme_catalog_is_current` fails when it is stale).
pub fn catalog() -> String {
    let mut out = String::from("| metric | kind | unit | what it says |\n|---|---|---|---|\n");
    let mut all: Vec<&(&str, Unit, &str)> = ALL.iter().collect();
    all.sort_by_key(|(n, ..)| *n);
    for (name, unit, help) in all {
        let kind = if HISTOGRAMS.contains(name) {
            "histogram"
        } else if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        out.push_str(&format!(
            "| `{name}` | {kind} | {} | {} |\n",
            match unit {
                Unit::Seconds => "seconds",
                Unit::Bytes => "bytes",
                _ => "",
            },
            help.replace('|', "\\|")
        ));
    }
    out
}

/// Every known label value of the labelled counters, and the unlabelled
/// ones, at 0 (called once by `pixeld serve` at start).
pub fn start_at_zero() {
    for (name, label, values) in KNOWN {
        for v in *values {
            metrics::counter!(*name, *label => *v).absolute(0);
        }
    }
    // Two labels, so not in KNOWN: every pair.
    for route in SyncRoute::ALL {
        for answer in SyncAnswer::ALL {
            metrics::counter!(USERSYNC_REQUESTS, "route" => route.as_str(), "answer" => answer.as_str())
                .absolute(0);
        }
    }
    for name in [
        KAFKA_DELIVERY_FAILED,
        ATTRIBUTION_DROPPED,
        HANDLER_PANICS,
        KAFKA_CLIENT_ERRORS,
    ] {
        metrics::counter!(name).absolute(0);
    }
}

/// `pixeld forward`'s labelled counters at 0 for each destination, so
/// alerts see a series before the first failure.
pub fn forward_start_at_zero<'a>(
    destinations: impl Iterator<Item = &'a str>,
    attempt_results: &[&'static str],
    record_results: &[&'static str],
) {
    for d in destinations {
        for r in attempt_results {
            metrics::counter!(FORWARD_ATTEMPTS, "destination" => d.to_string(), "result" => *r)
                .absolute(0);
        }
        for r in record_results {
            metrics::counter!(FORWARD_RECORDS, "destination" => d.to_string(), "result" => *r)
                .absolute(0);
        }
        for reason in ["final_answer", "attempts_exhausted"] {
            metrics::counter!(FORWARD_DEAD_LETTERS, "destination" => d.to_string(), "reason" => reason).absolute(0);
        }
        metrics::counter!(FORWARD_RETRIES, "destination" => d.to_string()).absolute(0);
    }
    metrics::counter!(FORWARD_MALFORMED).absolute(0);
    for result in ["ok", "failed"] {
        metrics::counter!(FORWARD_COMMITS, "result" => result).absolute(0);
    }
}

pub fn forward_attempt(destination: &str, result: &'static str, seconds: f64) {
    metrics::counter!(FORWARD_ATTEMPTS, "destination" => destination.to_string(), "result" => result).increment(1);
    metrics::histogram!(FORWARD_DURATION, "destination" => destination.to_string()).record(seconds);
}

pub fn forward_retry(destination: &str) {
    metrics::counter!(FORWARD_RETRIES, "destination" => destination.to_string()).increment(1);
}

pub fn forward_dead_letter(destination: &str, reason: &'static str) {
    metrics::counter!(FORWARD_DEAD_LETTERS, "destination" => destination.to_string(), "reason" => reason).increment(1);
}

pub fn forward_record(destination: &str, result: &'static str) {
    metrics::counter!(FORWARD_RECORDS, "destination" => destination.to_string(), "result" => result).increment(1);
}

pub fn forward_malformed() {
    metrics::counter!(FORWARD_MALFORMED).increment(1);
}

pub fn forward_queue_depth(destination: &str, depth: usize) {
    metrics::gauge!(FORWARD_QUEUE_DEPTH, "destination" => destination.to_string())
        .set(depth as f64);
}

pub fn forward_lag(partition: i32, lag: i64) {
    metrics::gauge!(FORWARD_LAG, "partition" => partition.to_string()).set(lag.max(0) as f64);
}

pub fn forward_orphaned(partitions: usize) {
    metrics::gauge!(FORWARD_ORPHANED).set(partitions as f64);
}

pub fn forward_commit(result: &'static str) {
    metrics::counter!(FORWARD_COMMITS, "result" => result).increment(1);
}

/// One user-id sync request answered.
pub fn usersync_request(route: SyncRoute, answer: SyncAnswer) {
    metrics::counter!(USERSYNC_REQUESTS, "route" => route.as_str(), "answer" => answer.as_str())
        .increment(1);
}

/// An order not remembered for the `duplicate_order_id` warning.
pub fn recent_orders_full() {
    metrics::counter!(RECENT_ORDERS_FULL).increment(1);
}

/// One attribution record published, by its result.
pub fn attribution_record(result: &'static str) {
    metrics::counter!(ATTRIBUTION_RECORDS, "result" => result).increment(1);
}

/// A pixel request flagged as invalid traffic (`crawler:Googlebot` counts
/// as `crawler`).
pub fn ivt_request(flag: &str) {
    let category = flag.split(':').next().unwrap_or(flag);
    let category: &'static str = KNOWN
        .iter()
        .find(|(n, ..)| *n == IVT_REQUESTS)
        .and_then(|(_, _, values)| values.iter().find(|v| **v == category).copied())
        .unwrap_or("other");
    metrics::counter!(IVT_REQUESTS, "category" => category).increment(1);
}

pub fn ready(ready: bool) {
    metrics::gauge!(READY).set(if ready { 1.0 } else { 0.0 });
}

pub fn journal_max_bytes(bytes: u64) {
    metrics::gauge!(JOURNAL_MAX_BYTES).set(bytes as f64);
}

/// An event was delivered as far as the durability mode promises.
pub fn event_delivered(kind: crate::event::EventType) {
    super::local::event_delivered(kind);
}

/// An answered event was not kept.
pub fn event_dropped(reason: &'static str) {
    metrics::counter!(EVENTS_DROPPED, "reason" => reason).increment(1);
}

pub fn http_refused(reason: &'static str) {
    metrics::counter!(HTTP_REFUSED, "reason" => reason).increment(1);
}

pub fn api_request(route: &'static str, key: &str, status: u16) {
    let status = itoa::Buffer::new().format(status).to_string();
    metrics::counter!(API_REQUESTS, "route" => route, "key" => key.to_string(), "status" => status)
        .increment(1);
}

pub fn api_item(route: &'static str, key: &str, result: &'static str) {
    metrics::counter!(API_ITEMS, "route" => route, "key" => key.to_string(), "result" => result)
        .increment(1);
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

pub fn journal_corrupt(bytes: u64) {
    metrics::counter!(JOURNAL_CORRUPT_BYTES).increment(bytes);
}

/// A message acknowledged, `seconds` after its CreateTime (recorded per
/// thread: one per message on the delivery-report thread).
pub fn kafka_delivered(seconds: Option<f64>) {
    super::local::kafka_delivered(seconds);
}

/// The journal shipper's `n` messages, confirmed by one delivery barrier
/// (its producer reports only failures): `seconds` from the range's
/// produce to its confirmation, observed once for the range.
pub fn kafka_delivered_range(n: u64, seconds: f64) {
    super::local::kafka_delivered_many(n, Some(seconds));
}

/// The per-thread total of [`kafka_delivered`], when `/metrics` is scraped.
pub(super) fn kafka_delivered_total(total: u64) {
    metrics::counter!(KAFKA_DELIVERED).absolute(total);
}

pub fn kafka_delivery_failed() {
    metrics::counter!(KAFKA_DELIVERY_FAILED).increment(1);
}

/// A producer's librdkafka statistics: its queue, and per broker the round
/// trip and transmit errors (every producer's context calls this).
pub fn kafka_producer_statistics(s: &rdkafka::Statistics) {
    kafka_queue(s.msg_cnt, s.msg_size);
    for b in s.brokers.values() {
        // `avg` is in microseconds.
        let rtt = b.rtt.as_ref().map_or(0.0, |w| w.avg as f64 / 1e6);
        kafka_broker(&b.name, rtt, b.txerrs);
    }
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

pub fn cluster_orphaned(partitions: usize) {
    metrics::gauge!(CLUSTER_ORPHANED).set(partitions as f64);
}

pub fn cluster_exactly_once(on: bool) {
    metrics::gauge!(CLUSTER_EXACTLY_ONCE).set(if on { 1.0 } else { 0.0 });
}

pub fn cluster_future_input() {
    metrics::counter!(CLUSTER_FUTURE).increment(1);
}

pub fn cluster_malformed_input(topic: &'static str, reason: &'static str) {
    metrics::counter!(CLUSTER_MALFORMED, "topic" => topic, "reason" => reason).increment(1);
}

pub fn cluster_changelog_invalid() {
    metrics::counter!(CLUSTER_CHANGELOG_INVALID).increment(1);
}

pub fn cluster_decision_delay(seconds: f64) {
    metrics::histogram!(CLUSTER_DECISION_DELAY).record(seconds);
}

/// One request answered on `route` with `status`, after `seconds`
/// (recorded per thread: [`super::local`]).
pub fn http_request(route: RouteLabel, status: u16, seconds: f64) {
    super::local::http_request(route, status, seconds);
}

/// The per-thread totals of `http_requests_total`, put in the registry
/// when `/metrics` is scraped.
pub(super) fn http_requests_total(route: &'static str, status: &'static str, total: u64) {
    metrics::counter!(HTTP_REQUESTS, "route" => route, "status" => status).absolute(total);
}

/// The per-thread totals of `events_total`, as above.
pub(super) fn events_total(kind: &'static str, total: u64) {
    metrics::counter!(EVENTS, "type" => kind).absolute(total);
}

/// Connections opened (+1) or closed (-1) on `listener` (public, admin).
pub fn http_connections(listener: &'static str, delta: f64) {
    metrics::gauge!(HTTP_OPEN_CONNECTIONS, "listener" => listener).increment(delta);
}

/// A request started (+1) or ended (-1), recorded per thread.
pub fn http_in_flight(delta: i64) {
    super::local::in_flight(delta);
}

/// The per-thread sum of [`http_in_flight`], when `/metrics` is scraped.
pub(super) fn http_in_flight_total(requests: f64) {
    metrics::gauge!(HTTP_IN_FLIGHT).set(requests);
}

/// Recorded per thread and written out by [`super::local::flush`].
pub fn journal_appended(seconds: f64) {
    super::local::journal_appended(seconds);
}

/// librdkafka's statistics for one broker.
pub fn kafka_broker(broker: &str, rtt_avg_seconds: f64, tx_errors: u64) {
    let b = broker.to_string();
    metrics::gauge!(KAFKA_BROKER_RTT, "broker" => b.clone()).set(rtt_avg_seconds);
    metrics::counter!(KAFKA_TX_ERRORS, "broker" => b).absolute(tx_errors);
}

/// librdkafka's statistics for the producer's queue.
pub fn kafka_queue(messages: u64, bytes: u64) {
    metrics::gauge!(KAFKA_QUEUE_MESSAGES).set(messages as f64);
    metrics::gauge!(KAFKA_QUEUE_BYTES).set(bytes as f64);
}

/// Set once at start.
pub fn build_info(version: &'static str, commit: &'static str) {
    metrics::gauge!(BUILD_INFO, "version" => version, "commit" => commit).set(1.0);
}

/// A reload's result: `ok`, `invalid` or `restart_needed`.
pub fn config_reload(result: &'static str) {
    metrics::counter!(CONFIG_RELOADS, "result" => result).increment(1);
}

/// The config now in force: its hash (the previous one's series goes to 0)
/// and when it was loaded.
pub fn config_in_force(sha256: &str, previous: Option<&str>, at_unix_seconds: f64) {
    if let Some(p) = previous.filter(|p| *p != sha256) {
        metrics::gauge!(CONFIG_INFO, "sha256" => p.to_string()).set(0.0);
    }
    metrics::gauge!(CONFIG_INFO, "sha256" => sha256.to_string()).set(1.0);
    metrics::gauge!(CONFIG_LAST_RELOAD).set(at_unix_seconds);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sync route is counted under the same `route` label in
    /// `usersync_requests_total` and in the request metrics, and its text
    /// parses back.
    #[test]
    fn every_sync_route_and_answer_round_trips_through_its_label() {
        for route in SyncRoute::ALL {
            assert_eq!(SyncRoute::parse(route.as_str()), Some(route));
            let label = RouteLabel::parse(route.as_str());
            assert!(label.is_some(), "{route:?}");
        }
        for answer in SyncAnswer::ALL {
            assert_eq!(SyncAnswer::parse(answer.as_str()), Some(answer));
        }
    }

    #[test]
    fn the_readme_catalog_is_current() {
        crate::files::check_readme_section(
            "metrics-table",
            &catalog(),
            "PIXELD_WRITE_METRICS_TABLE",
        );
    }

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
