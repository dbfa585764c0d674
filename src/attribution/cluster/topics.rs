//! Co-partitioning, checked before a member joins: the input topics
//! ([`InputTopic`]) and the changelog must have the same partition count, or
//! a user's events and state would meet on different members. A missing
//! changelog is created (compacted) with the inputs' count, as Kafka
//! Streams creates its internal topics, and so are the topics later
//! releases added (adjustments, orders, adjustments by user).

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use tracing::{info, warn};

use super::inputs::{InputTopic, PerInput};
use super::ClusterError;

/// Which topics a member reads and writes.
#[derive(Clone, Debug)]
pub struct ClusterTopics {
    /// The input topics' names.
    pub inputs: PerInput<String>,
    pub changelog: String,
    pub attributions: String,
}

/// Waits (up to `wait`) for the brokers, creates a missing changelog, and
/// returns the common partition count; differing counts are refused.
pub fn check(
    client: &ClientConfig,
    topics: &ClusterTopics,
    replication: i32,
    wait: Duration,
) -> Result<i32, ClusterError> {
    let admin: AdminClient<DefaultClientContext> = client
        .create()
        .map_err(|e| ClusterError::kafka("admin client", e))?;
    let deadline = Instant::now() + wait;
    let counts = loop {
        let wanted: Vec<&String> = topics
            .inputs
            .values()
            .chain([&topics.changelog, &topics.attributions])
            .collect();
        match counts(&admin, &wanted) {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                warn!(error = %e, "kafka not reachable yet; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(ClusterError::Unreachable(e)),
        }
    };
    let mut counts = counts;
    create_later_inputs(&admin, topics, &mut counts, replication)?;
    let exists = |counts: &[(String, i32)], t: &String| counts.iter().any(|(n, _)| n == t);
    let missing: Vec<&String> = topics
        .inputs
        .values()
        .filter(|t| !exists(&counts, t))
        .collect();
    if !missing.is_empty() {
        return Err(ClusterError::Topics(format!(
            "input topic(s) {missing:?} do not exist; start `pixeld serve` against these brokers (it creates them) or create them with the same partition count"
        )));
    }
    let count_of = |t: &str| counts.iter().find(|(n, _)| n == t).map(|(_, c)| *c);
    let inputs: Vec<(String, i32)> = topics
        .inputs
        .values()
        .map(|t| (t.clone(), count_of(t).unwrap_or(0)))
        .collect();
    let n = inputs[0].1;
    let mut all = inputs.clone();
    match count_of(&topics.changelog) {
        Some(c) => all.push((topics.changelog.clone(), c)),
        None => {
            create(&admin, &topics.changelog, n, replication, true)?;
            info!(topic = %topics.changelog, partitions = n, "created the attribution changelog (compacted)");
            all.push((topics.changelog.clone(), n));
        }
    }
    // The output is keyed by user too, but nothing requires it to be
    // co-partitioned; it is created like `serve` creates its topics.
    if count_of(&topics.attributions).is_none() {
        create(&admin, &topics.attributions, n, replication, false)?;
        info!(topic = %topics.attributions, partitions = n, "created the attributions topic");
    }
    if all.iter().any(|(_, c)| *c != n) {
        let listed: Vec<String> = all.iter().map(|(t, c)| format!("{t}: {c}")).collect();
        return Err(ClusterError::Topics(format!(
            "the attribution topics must have the same partition count, so that one member gets partition p of each ({}); recreate or add partitions so that they agree (`kafka-topics --alter --partitions N`), then restart",
            listed.join(", ")
        )));
    }
    Ok(n)
}

/// The adjustments and orders topics came with later releases than the
/// fleet's other topics: a member upgraded before `serve` creates them, with
/// the conversions' count, rather than stop; the adjustments by user are the
/// members' own. Each created one joins `counts`.
fn create_later_inputs(
    admin: &AdminClient<DefaultClientContext>,
    topics: &ClusterTopics,
    counts: &mut Vec<(String, i32)>,
    replication: i32,
) -> Result<(), ClusterError> {
    let conversions = &topics.inputs[InputTopic::Conversions];
    let Some(n) = counts.iter().find(|(t, _)| t == conversions).map(|c| c.1) else {
        return Ok(());
    };
    for later in [
        InputTopic::Adjustments,
        InputTopic::Orders,
        InputTopic::AdjustmentsByUser,
    ] {
        let topic = &topics.inputs[later];
        if counts.iter().any(|(t, _)| t == topic) {
            continue;
        }
        create(admin, topic, n, replication, false)?;
        info!(topic = %topic, partitions = n, "created the {} topic", later.as_str());
        counts.push((topic.clone(), n));
    }
    Ok(())
}

/// (name, partition count) of those of `wanted` that exist.
fn counts(
    admin: &AdminClient<DefaultClientContext>,
    wanted: &[&String],
) -> Result<Vec<(String, i32)>, String> {
    let metadata = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|m| m.error().is_none() && wanted.iter().any(|w| *w == m.name()))
        .map(|m| (m.name().to_string(), m.partitions().len() as i32))
        .collect())
}

fn create(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
    partitions: i32,
    replication: i32,
    compacted: bool,
) -> Result<(), ClusterError> {
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
    if compacted {
        new = new.set("cleanup.policy", "compact");
    }
    crate::sink::kafka::create_topics(admin, &[new]).map_err(ClusterError::Topics)
}

/// Creates `topic` (not compacted) with the inputs' partition count unless
/// it exists: the output of a replay.
pub fn ensure_output(
    client: &ClientConfig,
    inputs: &str,
    topic: &str,
    replication: i32,
) -> Result<(), ClusterError> {
    let admin: AdminClient<DefaultClientContext> = client
        .create()
        .map_err(|e| ClusterError::kafka("admin client", e))?;
    let (inputs, topic) = (inputs.to_string(), topic.to_string());
    let found = counts(&admin, &[&inputs, &topic]).map_err(ClusterError::Unreachable)?;
    let count = |name: &str| found.iter().find(|(n, _)| n == name).map(|(_, c)| *c);
    let Some(n) = count(&inputs) else {
        return Err(ClusterError::Topics(format!(
            "input topic {inputs} does not exist"
        )));
    };
    if count(&topic).is_none() {
        create(&admin, &topic, n, replication, false)?;
    }
    Ok(())
}
