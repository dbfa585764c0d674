//! One user's events land on the same partition number of every topic, the
//! one the Java client's partitioner picks for the user id: what a consumer
//! group partitioned by user (Kafka Streams, or pixeld's cluster
//! attribution) relies on.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_partitioned_by_user_as_the_java_client_would() {
    let broker = Broker::start();
    let mut cfg = example_config(&broker.addr);
    cfg.kafka.partitions = 6;
    let server = Server::start(cfg).await;
    let uids: Vec<String> = (0..24u128)
        .map(|i| {
            format!(
                "{:032x}",
                i.wrapping_mul(0x9e37_79b9_7f4a_7c15_0123_4567_89ab_cdef)
            )
        })
        .collect();
    for uid in &uids {
        let cookie = uid_cookie(uid);
        let r = server.get("/imptr?id=2766", &[("cookie", &cookie)]).await;
        assert_eq!(r.status, 302);
        let r = server.get("/clktr?id=21378", &[("cookie", &cookie)]).await;
        assert_eq!(r.status, 302);
    }
    server.stop().await;
    let mut seen = std::collections::HashMap::new();
    for topic in ["pixel.impressions", "pixel.clicks"] {
        let got = keys_by_partition(&broker.addr, topic, 6, uids.len());
        assert_eq!(got.len(), uids.len(), "{topic}");
        for (partition, key) in got {
            let key = key.expect("a user's event has a key");
            let want = pixeld::sink::partition::for_key(key.as_bytes(), 6);
            assert_eq!(partition, want, "{topic}: user {key}");
            assert_eq!(
                *seen.entry(key).or_insert(partition),
                partition,
                "same partition in every topic"
            );
        }
    }
    let used: std::collections::HashSet<_> = seen.values().collect();
    assert!(
        used.len() > 3,
        "24 users spread over the partitions: {used:?}"
    );
}

/// Anonymous events (no user id: here `Sec-GPC`, which keeps no id) go with
/// a NULL key, which the partitioner spreads; an empty key would hash every
/// anonymous event of the fleet to one partition. The test checks the key
/// itself, not how many partitions a burst reached: librdkafka's sticky
/// partitioner keeps NULL-key messages on one partition per batch, so that
/// count depends on timing (a fresh machine's CI saw 60 events on two).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_events_go_with_a_null_key_and_a_user_s_with_theirs() {
    let broker = Broker::start();
    let mut cfg = example_config(&broker.addr);
    cfg.kafka.partitions = 6;
    let server = Server::start(cfg).await;
    let n = 60;
    for _ in 0..n {
        let r = server.get("/imptr?id=2766", &[("sec-gpc", "1")]).await;
        assert_eq!(r.status, 302);
    }
    let uid = "0123456789abcdef0123456789abcdef";
    let r = server
        .get("/imptr?id=2766", &[("cookie", &uid_cookie(uid))])
        .await;
    assert_eq!(r.status, 302);
    server.stop().await;
    let got = keys_by_partition(&broker.addr, "pixel.impressions", 6, n + 1);
    assert_eq!(got.len(), n + 1);
    let keys: Vec<&Option<String>> = got.iter().map(|(_, key)| key).collect();
    let null = keys.iter().filter(|key| key.is_none()).count();
    assert_eq!(null, n, "every anonymous event has a NULL key: {keys:?}");
    let keyed: Vec<i32> = got
        .iter()
        .filter(|(_, key)| key.as_deref() == Some(uid))
        .map(|(p, _)| *p)
        .collect();
    assert_eq!(keyed, [pixeld::sink::partition::for_key(uid.as_bytes(), 6)]);
}
