//! Fault injection with librdkafka's mock cluster: retriable produce errors
//! are retried until delivered; records librdkafka gives up on are produced
//! again from the journal; a record the broker refuses for good goes to the
//! dead-letter file and does not block the records after it.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{consume, example_config, Server};
use pixeld::config::Config;
use pixeld::serve::Outputs;
use pixeld::sink::kafka::{client_config, KafkaSink};
use pixeld::sink::producer::Topics;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

/// pixeld in this process on a one-broker mock cluster holding its topics;
/// also the cluster's address and pixeld's `data_dir`.
async fn on_mock_cluster(
    adjust: impl FnOnce(&mut Config),
) -> (
    MockCluster<'static, DefaultProducerContext>,
    String,
    Server,
    PathBuf,
) {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let mut cfg = example_config(&brokers);
    adjust(&mut cfg);
    for topic in Topics::from_config(&cfg.kafka.topics).names() {
        cluster.create_topic(topic, 1, 1).unwrap();
    }
    let sink = Arc::new(KafkaSink::start(&cfg.kafka, &brokers).unwrap());
    let outputs = Outputs {
        sink,
        kafka: Some(client_config(&cfg.kafka, &brokers)),
    };
    let data_dir = cfg.server.data_dir.clone();
    let server = Server::start_with(cfg, outputs).await;
    (cluster, brokers, server, data_dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retriable_errors_are_retried_and_permanent_ones_dead_lettered() {
    let (cluster, brokers, server, data_dir) = on_mock_cluster(|_| {}).await;
    let dead_letter = data_dir.join("dead-letter.jsonl");

    // Retriable: the next produce requests fail, then succeed.
    use RDKafkaRespErr::*;
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        ],
    );
    for n in 1..=5 {
        assert_eq!(
            server
                .get(&format!("/imptr?id=2766&cachebuster={n}"), &[])
                .await
                .status,
            302
        );
    }
    let events = consume(&brokers, "pixel.impressions", 5);
    let cbs: Vec<_> = events
        .iter()
        .map(|e| e.json["cachebuster"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(cbs, ["1", "2", "3", "4", "5"]);

    // Permanent: the broker refuses the next request as too large.
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
    );
    assert_eq!(
        server
            .get("/imptr?id=2766&cachebuster=poison", &[])
            .await
            .status,
        302
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let line = loop {
        if let Ok(text) = std::fs::read_to_string(&dead_letter) {
            if let Some(line) = text.lines().find(|l| l.contains("poison")) {
                break line.to_string();
            }
        }
        assert!(Instant::now() < deadline, "no dead-letter line");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let j: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert!(
        j["reason"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("too large"),
        "{j}"
    );
    assert_eq!(j["topic"], "pixel.impressions");
    assert!(j["payload"]
        .as_str()
        .unwrap()
        .contains("\"cachebuster\":\"poison\""));

    // The stream goes on past it.
    assert_eq!(
        server.get("/imptr?id=2766&cachebuster=6", &[]).await.status,
        302
    );
    let events = consume(&brokers, "pixel.impressions", 6);
    assert!(events.iter().any(|e| e.json["cachebuster"] == "6"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_librdkafka_gives_up_on_are_produced_again_from_the_journal() {
    let (cluster, brokers, server, _) = on_mock_cluster(|cfg| {
        cfg.kafka
            .librdkafka
            .insert("message.timeout.ms".into(), toml::Value::Integer(1000));
    })
    .await;
    // Every produce request fails, retriably, for longer than the timeout:
    // librdkafka reports the records failed and the shipper must read them
    // back from the journal and produce them again.
    use RDKafkaRespErr::*;
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 400],
    );
    for n in 1..=20 {
        let r = server
            .get(&format!("/imptr?id=2766&cachebuster=r{n}"), &[])
            .await;
        assert_eq!(r.status, 302);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = server.admin_get("/metrics").await;
        let body = std::str::from_utf8(&m.body).unwrap();
        if common::metric_sum(body, "journal_ship_retries_total") >= 20.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "librdkafka never gave up on a record"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.clear_request_errors(RDKafkaApiKey::Produce);
    let events = common::consume_all(
        &brokers,
        "pixel.impressions",
        Duration::from_secs(2),
        Duration::from_secs(30),
    );
    let mut got: Vec<String> = events
        .iter()
        .map(|e| e.json["cachebuster"].as_str().unwrap().to_string())
        .collect();
    got.sort();
    got.dedup();
    let mut want: Vec<String> = (1..=20).map(|n| format!("r{n}")).collect();
    want.sort();
    assert_eq!(got, want);
    server.stop().await;
}
