//! The embedded default: with no brokers configured, pixeld starts
//! librdkafka's in-process mock cluster, so it runs with no set-up at all.
//! Events live only in this process's memory.

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

/// Keeps the mock cluster alive; dropping it stops the cluster.
pub struct EmbeddedKafka {
    /// The in-process cluster.
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl EmbeddedKafka {
    /// Starts a one-broker cluster on a loopback port.
    pub fn start() -> Result<EmbeddedKafka, String> {
        let cluster = MockCluster::new(1).map_err(|e| format!("embedded kafka: {e}"))?;
        Ok(EmbeddedKafka { cluster })
    }

    /// Creates `topics` (the mock cluster does not serve CreateTopics).
    pub fn create_topics(&self, topics: &[&str], partitions: i32) -> Result<(), String> {
        for t in topics {
            self.cluster
                .create_topic(t, partitions, 1)
                .map_err(|e| format!("embedded kafka: creating {t}: {e}"))?;
        }
        Ok(())
    }

    /// `host:port` for clients such as `kcat -b`.
    pub fn bootstrap_servers(&self) -> String {
        self.cluster.bootstrap_servers()
    }
}
