//! Which guarantee the member gives, decided once at start from
//! `attribution.transactions` and a probe of the brokers, and never changed
//! silently afterwards: `required` stops start-up when the probe fails,
//! `auto` logs why it runs at least once.
//!
//! The probe is one real transaction on the member's own producer: it
//! commits an offset for a group of its own, `<transactional id>.transactions-probe`
//! (one per live member, so members starting together do not race on it),
//! which no pixeld reader uses; it writes no message to any topic (an
//! offset is enough: librdkafka sends `EndTxn` for a transaction that holds
//! offsets or messages, and completes an empty one locally without asking
//! the broker). It then reads that offset back
//! ([`broker_quirks::txn_offsets_applied`]): a broker that acknowledges
//! `EndTxn` but drops the transaction's offsets cannot give exactly once.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tracing::warn;

use super::broker_quirks;
use super::output::{Output, TxnFailed};
use super::{ClusterError, Settings};
use crate::config::Transactions;
use crate::sink::transactional::TXN_TIMEOUT;

/// What a member promises its readers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Guarantee {
    /// Records, changelog writes and input offsets commit in one Kafka
    /// transaction: a `read_committed` reader sees each conversion's record
    /// exactly once.
    ExactlyOnce,
    /// Records and changelog acknowledged before the offsets commit: a
    /// crash can repeat a record, never change it.
    AtLeastOnce { why: String },
}

impl Guarantee {
    /// As logged at start (`guarantee = ...`).
    pub fn describe(&self) -> &'static str {
        match self {
            Guarantee::ExactlyOnce => {
                "exactly once for read_committed readers (Kafka transactions)"
            }
            Guarantee::AtLeastOnce { .. } => {
                "at least once, every repeat identical (no Kafka transactions)"
            }
        }
    }
}

/// The member's producer and the guarantee it gives.
pub fn choose(settings: &Settings) -> Result<(Output, Guarantee), ClusterError> {
    let idempotent = settings.producer.get("enable.idempotence") != Some("false");
    let why = match settings.transactions {
        Transactions::Off => "attribution.transactions is \"off\"".to_string(),
        Transactions::Auto | Transactions::Required if !idempotent => {
            "the producer's idempotence is off (kafka.acks is not \"all\", or kafka.librdkafka sets enable.idempotence = false), and transactions need it".to_string()
        }
        Transactions::Auto | Transactions::Required => match probe(settings) {
            Ok(output) => return Ok((output, Guarantee::ExactlyOnce)),
            Err(why) => why,
        },
    };
    if settings.transactions == Transactions::Required {
        return Err(ClusterError::Guarantee { why });
    }
    if settings.transactions == Transactions::Auto {
        warn!(why = %why, "Kafka transactions are not available; this member runs at least once");
    }
    let output = Output::new(&settings.producer, None)?;
    Ok((output, Guarantee::AtLeastOnce { why }))
}

/// One transaction that carries an offset of the probe group; the
/// transactional producer if the broker took it and applied the offset.
fn probe(settings: &Settings) -> Result<Output, String> {
    let id = &settings.transactional_id;
    let mut output = Output::new(&settings.producer, Some(id)).map_err(|e| e.to_string())?;
    output.init().map_err(|e| {
        format!("the brokers refused to register transactional.id {id:?} (InitProducerId): {e}")
    })?;
    let mut config = settings.consumer.clone();
    config
        // A probe group per transactional id (one per live member): members
        // starting together would otherwise race on one group's offset,
        // and one would see the other's value and give up on transactions.
        .set("group.id", format!("{id}.transactions-probe"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed");
    let reader: BaseConsumer = config.create().map_err(|e| e.to_string())?;
    let topic = &settings.topics.changelog;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let before = reader
        .committed_offsets(tpl.clone(), TXN_TIMEOUT)
        .map_err(|e| format!("reading the probe group's offset failed: {e}"))?;
    let next = match before.find_partition(topic, 0).map(|e| e.offset()) {
        Some(Offset::Offset(o)) if o >= 0 => o + 1,
        _ => 1,
    };
    tpl.set_all_offsets(Offset::Offset(next))
        .map_err(|e| e.to_string())?;
    let group = reader
        .group_metadata()
        .ok_or("the probe consumer has no group metadata")?;
    output.commit(Some((&tpl, &group))).map_err(|e| match e {
        TxnFailed::Aborted(e) => format!("the brokers aborted a probe transaction: {e}"),
        TxnFailed::Fatal(ClusterError::Fenced { what, source }) => {
            format!("the brokers refused a probe transaction ({what}): {source}")
        }
        TxnFailed::Fatal(e) => format!("the brokers refused a probe transaction: {e}"),
    })?;
    broker_quirks::txn_offsets_applied(&reader, &tpl, next)?;
    Ok(output)
}

#[cfg(test)]
mod tests {
    //! On librdkafka's mock cluster, which takes transactions but drops
    //! their offsets (`broker_quirks`, item 4).

    use rdkafka::mocking::MockCluster;

    use super::*;

    fn settings(brokers: &str, transactions: Transactions) -> Settings {
        Settings {
            transactions,
            transactional_id: "members-probe-test".into(),
            ..crate::attribution::cluster::commit::tests::settings(brokers)
        }
    }

    fn mock() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("state", 1, 1).unwrap();
        mock
    }

    #[test]
    fn auto_on_the_mock_runs_at_least_once_because_it_drops_the_transaction_s_offsets() {
        let mock = mock();
        let (output, guarantee) =
            choose(&settings(&mock.bootstrap_servers(), Transactions::Auto)).unwrap();
        assert!(!output.transactional());
        match guarantee {
            Guarantee::AtLeastOnce { why } => {
                assert!(why.contains("did not apply the offset"), "{why}")
            }
            g => panic!("{g:?}"),
        }
    }

    #[test]
    fn required_on_the_mock_stops_naming_the_key_and_the_reason() {
        let mock = mock();
        let refused = choose(&settings(&mock.bootstrap_servers(), Transactions::Required));
        let e = refused.err().expect("started without transactions");
        let text = e.to_string();
        assert!(
            text.starts_with("attribution.transactions = \"required\""),
            "{text}"
        );
        assert!(text.contains("did not apply the offset"), "{text}");
        assert!(text.contains("\"auto\""), "names the fix: {text}");
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn required_with_idempotence_off_stops_without_asking_the_brokers() {
        let mut s = settings("127.0.0.1:1", Transactions::Required);
        s.producer.set("enable.idempotence", "false");
        let text = choose(&s).err().expect("started").to_string();
        assert!(text.contains("idempotence is off"), "{text}");
    }

    #[test]
    fn off_runs_at_least_once_without_a_probe() {
        // No broker at all: a probe would fail after its timeout.
        let (output, guarantee) = choose(&settings("127.0.0.1:1", Transactions::Off)).unwrap();
        assert!(!output.transactional());
        assert!(matches!(guarantee, Guarantee::AtLeastOnce { .. }));
    }
}
