//! Helpers for `benches/load/compare.sh` that need pixeld's own code or a
//! Kafka client (Debian's kcat cannot talk to tansu):
//!
//!   load-tool cookies SECRET N        N signed `uid=...` cookies, one per line
//!   load-tool count BROKERS TOPIC...  consume each topic from the start and
//!                                     print {"topic": [messages, distinct event ids]}
//!   load-tool inputs BROKERS USERS    create the attribution input topics (6
//!                                     partitions) and produce USERS users' events
//!                                     (an impression each, a click for one in
//!                                     two, a conversion for one in four), an
//!                                     hour old; print the counts
//!   load-tool changelog BROKERS TOPIC consume a changelog and print messages,
//!                                     bytes (keys and values), distinct keys
//!   load-tool ship BROKERS N [COMPRESSION]
//!                                     journal N impressions, then ship them with
//!                                     pixeld's shipper and producer; print the
//!                                     CPU per event of the process and of each
//!                                     thread (Kafka delivery's own cost)
//!   load-tool records BROKERS N      create pixel.attributions (6 partitions) and
//!                                     produce N counted post-click records with a
//!                                     source click id (benches/load/forward.sh)
//!   load-tool fleet-load ... | fleet-check ...
//!                                     the fault campaign's load and checker
//!                                     (benches/faults/cluster.sh; see
//!                                     tool/fleet/mod.rs)

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use pixeld::config::CookieConfig;
use pixeld::http::cookie::{Cookies, Secret};
use pixeld::ids::UserId;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

#[path = "tool/fleet/mod.rs"]
mod fleet;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if fleet::run(
        args.first().map_or("", String::as_str),
        args.get(1..).unwrap_or(&[]),
    ) {
        return;
    }
    match args.first().map(String::as_str) {
        Some("cookies") if args.len() == 3 => cookies(&args[1], args[2].parse().expect("N")),
        Some("count") if args.len() >= 3 => count(&args[1], &args[2..]),
        Some("inputs") if args.len() == 3 => inputs(&args[1], args[2].parse().expect("USERS")),
        Some("changelog") if args.len() == 3 => changelog(&args[1], &args[2]),
        Some("records") if args.len() == 3 => records(&args[1], args[2].parse().expect("N")),
        Some("ship") if args.len() >= 3 => ship(
            &args[1],
            args[2].parse().expect("N"),
            args.get(3).map_or("lz4", String::as_str),
        ),
        _ => {
            eprintln!("usage: load-tool cookies SECRET N | count BROKERS TOPIC... | inputs BROKERS USERS | changelog BROKERS TOPIC | records BROKERS N | ship BROKERS N [COMPRESSION]\n{}", fleet::USAGE);
            std::process::exit(2);
        }
    }
}

fn cookies(secret: &str, n: usize) {
    let cfg = CookieConfig {
        secret: pixeld::config::Secret::parse(secret),
        ..CookieConfig::default()
    };
    let jar = Cookies::new(&cfg, Secret::generate());
    for _ in 0..n {
        println!("uid={}", jar.value(UserId::generate()));
    }
}

fn count(brokers: &str, topics: &[String]) {
    let mut out = BTreeMap::new();
    for topic in topics {
        out.insert(topic.clone(), count_topic(brokers, topic));
    }
    println!("{}", serde_json::to_string(&out).expect("json"));
}

/// A consumer of every partition of `topic` from the beginning.
fn reader(brokers: &str, topic: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "pixeld-load-tool")
        .set("enable.auto.commit", "false")
        .create()
        .expect("a consumer");
    let meta = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    for t in meta.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .expect("partition");
        }
    }
    consumer.assign(&tpl).expect("assign");
    consumer
}

/// Every partition from the beginning until nothing arrived for 3 s: the
/// broker's high watermark is not a reliable count on tansu.
fn count_topic(brokers: &str, topic: &str) -> (u64, usize) {
    let consumer = reader(brokers, topic);
    let (mut messages, mut ids) = (0u64, HashSet::new());
    let mut last = Instant::now();
    while last.elapsed() < Duration::from_secs(3) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            messages += 1;
            last = Instant::now();
            let id = m
                .payload()
                .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
                .and_then(|j| j["event_id"].as_str().map(String::from));
            ids.insert(id.unwrap_or_default());
        }
    }
    (messages, ids.len())
}

const INPUTS: [&str; 3] = ["pixel.impressions", "pixel.clicks", "pixel.conversions"];

/// N counted records as the engine writes them (post-click, with the
/// source's click id), for `pixeld forward` to send.
fn records(brokers: &str, n: u64) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin");
    let new = [NewTopic::new(
        "pixel.attributions",
        6,
        TopicReplication::Fixed(1),
    )];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _ = rt.block_on(admin.create_topics(&new, &AdminOptions::new()));
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "50")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    let now = pixeld::telemetry::now_ms();
    for i in 0..n {
        let uid = UserId::generate().to_hex();
        let id = |ts: u64| pixeld::ids::EventId::new_v7(ts).to_hyphenated();
        let body = format!(
            r#"{{"v":1,"event_id":"{}","type":"attribution","ts":{now},"uid":"{}","conversion_event_id":"{}","pixel_id":7313,"advertiser_id":100,"counted":true,"attributed":true,"kind":"post_click","reason":null,"matched_by":"uid","touch_event_id":"{}","touch_ts":{},"line_item_id":5001,"tracker_id":21378,"publisher_id":777,"placement_id":null,"seconds_to_conversion":60,"order_id":"ORD{i}","value_micros":12500000,"late":false,"adjustment":null,"adjusts":null,"retracted":false,"conversions_delta":1,"value_delta_micros":12500000,"source_click_id":"SC{i}","source_click_kind":"source"}}"#,
            id(now).as_str(),
            uid.as_str(),
            id(now).as_str(),
            id(now - 60_000).as_str(),
            now - 60_000
        );
        let mut record = BaseRecord::to("pixel.attributions")
            .key(uid.as_str())
            .payload(&body);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    let _ = producer.flush(Duration::from_secs(60));
    println!("{{\"records\":{n}}}");
}

fn inputs(brokers: &str, users: u64) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin");
    // The members read the segments topic too (opt-outs).
    let new: Vec<NewTopic<'_>> = INPUTS
        .iter()
        .chain(&["pixel.segments"])
        .map(|t| NewTopic::new(t, 6, TopicReplication::Fixed(1)))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _ = rt.block_on(admin.create_topics(&new, &AdminOptions::new()));
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "50")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("compression.type", "lz4")
        .create()
        .expect("producer");
    let t0 = pixeld::telemetry::now_ms() - 3_600_000;
    let started = Instant::now();
    let mut counts = [0u64; 3];
    let with_header = std::env::var("PIXELD_INPUT_HEADER").as_deref() != Ok("0");
    for i in 0..users {
        let uid = UserId::generate().to_hex();
        let uid = uid.as_str();
        let ts = t0 + i * 3_000_000 / users.max(1);
        let mut send = |kind: usize, ts: u64, body: String| {
            // The engine's input as `pixeld serve` in cluster mode sends it
            // beside the JSON (PIXELD_INPUT_HEADER=0: JSON only, as before).
            let mut input = Vec::new();
            let mut record = BaseRecord::to(INPUTS[kind]).key(uid).payload(&body);
            if with_header {
                let kind = [
                    pixeld::event::EventType::Impression,
                    pixeld::event::EventType::Click,
                    pixeld::event::EventType::Conversion,
                ][kind];
                if let Ok(Some(i)) =
                    pixeld::event::AttributionInput::read_json(kind, body.as_bytes())
                {
                    i.encode(&mut input);
                }
                record = record.headers(
                    rdkafka::message::OwnedHeaders::new()
                        .insert(rdkafka::message::Header {
                            key: "type",
                            value: Some(kind.as_str()),
                        })
                        .insert(rdkafka::message::Header {
                            key: pixeld::sink::headers::INPUT,
                            value: Some(&input[..]),
                        }),
                );
            }
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((_, r)) => {
                        record = r;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
            counts[kind] += 1;
            let _ = ts;
        };
        let id = |ts: u64| pixeld::ids::EventId::new_v7(ts).to_hyphenated();
        send(
            0,
            ts,
            format!(
                r#"{{"v":1,"event_id":"{}","type":"impression","ts":{ts},"uid":"{uid}","tracker_id":2766,"line_item_id":5001,"publisher_id":777,"placement_id":4242,"warnings":[]}}"#,
                id(ts).as_str()
            ),
        );
        if i % 2 == 0 {
            let t = ts + 1;
            send(
                1,
                t,
                format!(
                    r#"{{"v":1,"event_id":"{}","type":"click","ts":{t},"uid":"{uid}","tracker_id":21378,"line_item_id":5001,"publisher_id":777,"placement_id":4242,"warnings":[]}}"#,
                    id(t).as_str()
                ),
            );
        }
        if i % 4 == 0 {
            let t = ts + 2;
            send(
                2,
                t,
                format!(
                    r#"{{"v":1,"event_id":"{}","type":"conversion","ts":{t},"uid":"{uid}","pixel_id":7313,"advertiser_id":100,"order_id":"O{i}","value_micros":1000000,"warnings":[]}}"#,
                    id(t).as_str()
                ),
            );
        }
    }
    producer.flush(Duration::from_secs(300)).expect("flush");
    println!(
        r#"{{"users":{users},"impressions":{},"clicks":{},"conversions":{},"inputs":{},"produce_seconds":{:.2}}}"#,
        counts[0],
        counts[1],
        counts[2],
        counts.iter().sum::<u64>(),
        started.elapsed().as_secs_f64()
    );
}

fn changelog(brokers: &str, topic: &str) {
    let consumer = reader(brokers, topic);
    let (mut messages, mut bytes, mut keys) = (0u64, 0u64, HashSet::new());
    let mut last = Instant::now();
    while last.elapsed() < Duration::from_secs(3) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            messages += 1;
            last = Instant::now();
            bytes += (m.key_len() + m.payload_len()) as u64;
            keys.insert(m.key().unwrap_or_default().to_vec());
        }
    }
    println!(
        r#"{{"messages":{messages},"bytes":{bytes},"keys":{}}}"#,
        keys.len()
    );
}

/// CPU ticks (user + system) of each thread of this process, by name.
fn thread_ticks() -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let path = task.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
        // Fields after the parenthesised name: utime and stime are 14 and 15.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        *out.entry(name.trim().to_string()).or_insert(0) += ticks;
    }
    out
}

/// Kafka delivery's cost per event, without HTTP: `n` impressions (the
/// size and shape pixeld journals) are written to a journal first, then the
/// shipper produces them all; the CPU the process spends meanwhile (shipper,
/// librdkafka's threads, delivery reports) divided by `n`.
fn ship(brokers: &str, n: u64, compression: &str) {
    use pixeld::config::{KafkaCompression, KafkaConfig};
    use pixeld::event::EventType;
    use pixeld::journal::ship::{ShipSettings, Shipper};
    use pixeld::journal::{Journal, Settings};
    use pixeld::sink::producer::Topics;
    use pixeld::sink::Topic;
    let cfg = KafkaConfig {
        compression: match compression {
            "none" => KafkaCompression::None,
            "zstd" => KafkaCompression::Zstd,
            _ => KafkaCompression::Lz4,
        },
        ..KafkaConfig::default()
    };
    let client = pixeld::sink::kafka::client_config(&cfg, brokers);
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        client.create().expect("admin");
    let topic = cfg.topics.impressions.clone();
    let new = [rdkafka::admin::NewTopic::new(
        &topic,
        cfg.partitions,
        rdkafka::admin::TopicReplication::Fixed(1),
    )];
    pixeld::sink::kafka::create_topics(&admin, &new).expect("topic");
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = Journal::open(&Settings {
        dir: dir.path().join("journal"),
        fsync: false,
        max_bytes: u64::MAX,
        segment_bytes: 64 << 20,
    })
    .expect("journal");
    let mut waits = Vec::new();
    for i in 0..n {
        let uid = UserId::generate().to_hex();
        let payload = format!(
            r#"{{"schema":1,"type":"impression","event_id":"0190f3a2-7c1e-7b3a-9d2f-{i:012x}","ts_ms":1764201600000,"uid":"{}","new_uid":false,"ip":"203.0.113.0","user_agent":"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36","referer":"https://news.example.com/","warnings":[],"tracker_id":2766,"line_item_id":88,"creative_id":512,"publisher_id":7,"placement_id":31,"cachebuster":"{i}","ancost":{{"micros":420000,"currency":"USD"}},"consent":null,"ivt":null}}"#,
            uid.as_str()
        );
        let body = Journal::body(
            Topic::Impressions,
            &[("type", EventType::Impression.as_str().as_bytes())],
            uid.as_str().as_bytes(),
            payload.as_bytes(),
            &[],
        );
        waits.push(
            journal
                .append_queued(body, 1_764_201_600_000)
                .expect("append"),
        );
        if waits.len() == 4096 {
            for w in waits.drain(..) {
                let _ = w.blocking_recv();
            }
        }
    }
    for w in waits.drain(..) {
        let _ = w.blocking_recv();
    }
    let ticks = thread_ticks();
    let started = Instant::now();
    let shipper = Shipper::start(
        journal.shared.clone(),
        &client,
        Duration::from_secs(300),
        ShipSettings {
            topics: Topics::from_config(&cfg.topics),
            dead_letter: dir.path().join("dead-letter.jsonl"),
            drain_timeout: Duration::from_secs(30),
        },
    )
    .expect("shipper");
    while journal.shared.shipped() < n {
        if started.elapsed() > Duration::from_secs(300) {
            eprintln!("not shipped within 300 s");
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = thread_ticks();
    let left = shipper.stop();
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let per: BTreeMap<String, f64> = after
        .iter()
        .map(|(k, v)| {
            let d = v.saturating_sub(*ticks.get(k).unwrap_or(&0)) as f64;
            (
                k.clone(),
                (d / tck * 1e6 / n as f64 * 100.0).round() / 100.0,
            )
        })
        .filter(|(_, v)| *v > 0.0)
        .collect();
    let total: f64 = per.values().sum();
    println!(
        "{}",
        serde_json::json!({
            "events": n, "compression": compression, "seconds": seconds,
            "events_per_second": n as f64 / seconds,
            "cpu_us_per_event": (total * 100.0).round() / 100.0,
            "threads": per, "unshipped_at_stop": left,
        })
    );
    journal.stop();
}
