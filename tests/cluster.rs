//! Attribution across a fleet (`attribution.mode = "cluster"`): `pixeld
//! serve` instances publish, `pixeld attribute` members (a consumer group on
//! a real tansu broker) credit every conversion exactly as one engine fed
//! the same events in time order would.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use common::cluster::*;
use common::*;
use pixeld::attribution::cluster::changelog::UserState;
use pixeld::config::Catalog;
use pixeld::event::EventType;
use pixeld::ids::{EventId, UserId};
use rand::seq::SliceRandom;
use serde_json::{json, Value};

const TOPICS: [(&str, EventType); 3] = [
    ("pixel.impressions", EventType::Impression),
    ("pixel.clicks", EventType::Click),
    ("pixel.conversions", EventType::Conversion),
];

/// The members' input topics: the three event topics and the segments
/// topic (opt-outs), co-partitioned.
fn create_inputs(brokers: &str) {
    let mut topics: Vec<(&str, i32)> = TOPICS.iter().map(|(t, _)| (*t, PARTITIONS)).collect();
    topics.push(("pixel.segments", PARTITIONS));
    topics.push(("pixel.adjustments", PARTITIONS));
    create_topics(brokers, &topics);
}

/// Every event of the three input topics, with its type; waits for `n`.
fn input_events(brokers: &str, n: usize) -> Vec<(EventType, Value)> {
    let read = read_topics(
        brokers,
        &TOPICS.map(|(t, _)| t),
        |r| r.len() >= n,
        Duration::from_secs(30),
        Duration::from_millis(500),
    );
    assert_eq!(read.len(), n, "input events in Kafka");
    read.iter()
        .map(|r| {
            let kind = TOPICS.iter().find(|(t, _)| *t == r.topic).unwrap().1;
            (kind, r.json())
        })
        .collect()
}

/// The attribution records, once every one of `conversions` has one.
fn records(brokers: &str, conversions: &[String], limit: Duration) -> Vec<Value> {
    let read_once = |limit: Duration| {
        let mut missing: std::collections::HashSet<String> = conversions.iter().cloned().collect();
        let mut looked = 0;
        read_all(
            brokers,
            "pixel.attributions",
            |r| {
                for m in &r[looked..] {
                    missing.remove(m.json()["conversion_event_id"].as_str().unwrap());
                }
                looked = r.len();
                missing.is_empty()
            },
            limit,
            Duration::from_secs(1),
        )
    };
    let first = read_once(limit);
    let seen: std::collections::HashSet<String> = first
        .iter()
        .map(|m| {
            m.json()["conversion_event_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    if conversions.iter().all(|c| seen.contains(c)) {
        return first.iter().map(Read::json).collect();
    }
    // A reader that followed the topic while it was written can miss a
    // message on tansu 0.6; a second, fresh read of the finished topic is
    // what a consumer team would see.
    let again = read_once(Duration::from_secs(30));
    eprintln!(
        "records: the following read saw {} messages, a fresh read {}",
        first.len(),
        again.len()
    );
    again.iter().map(Read::json).collect()
}

/// Groups records by conversion; asserts one answer per conversion.
fn by_conversion(records: &[Value]) -> HashMap<String, Value> {
    let mut out: HashMap<String, Value> = HashMap::new();
    for r in records {
        assert_schema(r);
        let c = r["conversion_event_id"].as_str().unwrap().to_string();
        if let Some(first) = out.get(&c) {
            assert_eq!(first, r, "two different records for conversion {c}");
        }
        out.insert(c, r.clone());
    }
    out
}

fn conversion_ids(events: &[(EventType, Value)]) -> Vec<String> {
    events
        .iter()
        .filter(|(k, _)| *k == EventType::Conversion)
        .map(|(_, j)| j["event_id"].as_str().unwrap().to_string())
        .collect()
}

fn get(port: u16, target: &str, uid: &str) {
    let cookie = format!("Cookie: {}", uid_cookie(uid));
    let ua = format!("User-Agent: {}", common::BROWSER_UA);
    let r = raw_get_with(port, target, &[&cookie, &ua]);
    assert!(matches!(status_of(&r), 200 | 302), "{target}: {r}");
}

#[test]
fn two_serve_instances_and_two_members_credit_like_one_engine_in_time_order() {
    let _turn = turn();
    let broker = Broker::start_sqlite();
    let (pa, pb) = (free_tcp_port(), free_tcp_port());
    let (s1, s2) = (free_tcp_port(), free_tcp_port());
    // The default grace (10 s): this 2-core machine runs two debug-built
    // servers, two members, tansu and the client at once.
    let grace: [(&str, String); 0] = [];
    let serve_a = serve(&cluster_config(&broker.addr, pa, s1, &grace), pa);
    let serve_b = serve(&cluster_config(&broker.addr, pb, s1, &grace), pb);
    assert!(serve_a.wait_ready(200, Duration::from_secs(30)));
    assert!(serve_b.wait_ready(200, Duration::from_secs(30)));
    let m1 = Member::start(
        &write_config(&cluster_config(&broker.addr, pa, s1, &grace)),
        s1,
    );
    let m2 = Member::start(
        &write_config(&cluster_config(&broker.addr, pa, s2, &grace)),
        s2,
    );

    // Views and clicks on instance A, purchases on instance B.
    let users: Vec<String> = (0..1000)
        .map(|_| UserId::generate().to_hex().as_str().to_string())
        .collect();
    let mut sent = 0;
    for (i, u) in users.iter().enumerate() {
        if i % 10 != 9 {
            get(pa, "/imptr?id=2766&cachebuster=1", u);
            sent += 1;
        }
        if i % 3 == 0 {
            get(pa, "/clktr?id=21378", u);
            sent += 1;
        }
    }
    for (i, u) in users.iter().enumerate() {
        get(pb, &format!("/px?id=7313&order_id=O{i}"), u);
        sent += 1;
        if i % 4 == 0 {
            // One per user: the second is a repeat.
            get(pb, "/px?id=8371", u);
            get(pb, "/px?id=8371", u);
            sent += 2;
        }
    }
    let events = input_events(&broker.addr, sent);
    let conversions = conversion_ids(&events);
    assert_eq!(conversions.len(), 1500);
    let got = by_conversion(&records(
        &broker.addr,
        &conversions,
        Duration::from_secs(90),
    ));
    let cfg = parsed(&cluster_config(&broker.addr, pa, s1, &grace));
    let want = reference(&cfg, &events);
    let mut kinds: HashMap<String, usize> = HashMap::new();
    for c in &conversions {
        let g = got
            .get(c)
            .unwrap_or_else(|| panic!("no record for conversion {c}"));
        assert_eq!(g, &want[c], "conversion {c}");
        let k = g["kind"]
            .as_str()
            .or(g["reason"].as_str())
            .unwrap()
            .to_string();
        *kinds.entry(k).or_default() += 1;
    }
    // The reference itself is varied: every kind of answer is checked.
    for k in ["post_click", "post_view", "no_touch", "repeat"] {
        assert!(kinds.get(k).copied().unwrap_or(0) > 0, "{kinds:?}");
    }
    // Both members did work, and neither flagged anything late.
    for m in [&m1, &m2] {
        let metrics = m.metrics();
        assert!(
            metric_sum(
                &metrics,
                "attribution_cluster_produced_total{kind=\"attribution\"}"
            ) > 0.0
        );
        assert_eq!(metric_sum(&metrics, "attribution_late_events_total"), 0.0);
    }
}

/// A pixeld-shaped event of `kind` at `ts` for `uid`.
fn event(kind: EventType, ts: u64, uid: &str, n: u64) -> Value {
    let id = EventId::new_v7(ts).to_hyphenated().as_str().to_string();
    match kind {
        EventType::Impression => json!({"event_id": id, "type": "impression", "ts": ts, "uid": uid,
            "tracker_id": 2766, "line_item_id": 5001, "publisher_id": 777, "placement_id": 4242}),
        EventType::Click => json!({"event_id": id, "type": "click", "ts": ts, "uid": uid,
            "tracker_id": 21378, "line_item_id": 5001, "publisher_id": 777, "placement_id": 4242}),
        _ => json!({"event_id": id, "type": "conversion", "ts": ts, "uid": uid,
            "pixel_id": if n % 2 == 0 { 7313 } else { 8371 }, "advertiser_id": 100}),
    }
}

#[test]
fn shuffled_arrival_within_the_grace_gives_the_time_ordered_records_and_a_later_event_is_flagged_late(
) {
    let _turn = turn();
    let broker = Broker::start_sqlite();
    create_inputs(&broker.addr);
    let status = free_tcp_port();
    let text = cluster_config(
        &broker.addr,
        free_tcp_port(),
        status,
        &[("grace_ms", "5000".into())],
    );
    let cfg = parsed(&text);
    let member = Member::start(&write_config(&text), status);

    let t0 = pixeld::telemetry::now_ms() - 1_000;
    let mut events = Vec::new();
    for i in 0..300u64 {
        let uid = UserId::generate().to_hex().as_str().to_string();
        let t = t0 + i * 3;
        events.push((
            EventType::Impression,
            event(EventType::Impression, t, &uid, i),
        ));
        if i % 3 == 0 {
            events.push((EventType::Click, event(EventType::Click, t + 1, &uid, i)));
        }
        // Some conversions come before their user's touches in time: in
        // arrival order they would be credited, in time order they are not.
        let tc = if i % 5 == 0 { t - 1 } else { t + 2 };
        events.push((
            EventType::Conversion,
            event(EventType::Conversion, tc, &uid, i),
        ));
        if i % 7 == 0 {
            events.push((
                EventType::Conversion,
                event(EventType::Conversion, t + 2, &uid, i + 2),
            ));
        }
    }
    events.shuffle(&mut rand::rng());
    let producer = producer(&broker.addr);
    publish(&producer, &cfg.kafka.topics, &events);
    let conversions = conversion_ids(&events);
    let got = by_conversion(&records(
        &broker.addr,
        &conversions,
        Duration::from_secs(60),
    ));
    let want = reference(&cfg, &events);
    let mut no_touch = 0;
    for c in &conversions {
        let Some(record) = got.get(c) else {
            // Seen once in 10 runs beside the fault campaign and leaked
            // brokers: the member's own account is what tells why.
            panic!(
                "no record for {c}; the member's log:\n{}",
                member.log_text()
            );
        };
        assert_eq!(record, &want[c], "conversion {c}");
        assert_eq!(got[c]["late"], false);
        no_touch += usize::from(got[c]["reason"] == "no_touch");
    }
    assert!(no_touch >= 60, "conversions before their touch: {no_touch}");

    // Well past the grace: applied at once, flagged.
    let uid = UserId::generate().to_hex().as_str().to_string();
    let old = pixeld::telemetry::now_ms() - 60_000;
    let late = vec![
        (
            EventType::Impression,
            event(EventType::Impression, old - 10, &uid, 0),
        ),
        (
            EventType::Conversion,
            event(EventType::Conversion, old, &uid, 0),
        ),
    ];
    publish(&producer, &cfg.kafka.topics, &late);
    let late_id = conversion_ids(&late);
    let got = by_conversion(&records(&broker.addr, &late_id, Duration::from_secs(30)));
    let r = &got[&late_id[0]];
    assert_eq!(r["late"], true, "{r}");
    assert_eq!(r["kind"], "post_view", "still applied: {r}");
    assert!(metric_sum(&member.metrics(), "attribution_late_events_total") >= 2.0);
}

#[test]
fn a_killed_member_s_partitions_move_and_a_joining_member_takes_some_without_a_different_answer() {
    let _turn = turn();
    let broker = Broker::start_sqlite();
    let port = free_tcp_port();
    let (s1, s2, s3) = (free_tcp_port(), free_tcp_port(), free_tcp_port());
    let grace: [(&str, String); 0] = [];
    let server = serve(&cluster_config(&broker.addr, port, s1, &grace), port);
    assert!(server.wait_ready(200, Duration::from_secs(30)));
    let mut m1 = Member::start(
        &write_config(&cluster_config(&broker.addr, port, s1, &grace)),
        s1,
    );
    let m2 = Member::start(
        &write_config(&cluster_config(&broker.addr, port, s2, &grace)),
        s2,
    );

    let load = std::thread::spawn(move || {
        let started = Instant::now();
        let mut sent = 0;
        let mut i = 0u64;
        while started.elapsed() < Duration::from_secs(20) {
            let u = UserId::generate().to_hex().as_str().to_string();
            if i % 4 != 3 {
                get(port, "/imptr?id=2766", &u);
                sent += 1;
            }
            if i % 3 == 0 {
                get(port, "/clktr?id=21378", &u);
                sent += 1;
            }
            get(port, "/px?id=7313", &u);
            sent += 1;
            i += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
        sent
    });
    // Killed once records flow (the grace is 10 s), so that some of its
    // decisions are not committed yet and are made again by another member.
    std::thread::sleep(Duration::from_secs(13));
    m1.kill9();
    std::thread::sleep(Duration::from_secs(4));
    let m3 = Member::start(
        &write_config(&cluster_config(&broker.addr, port, s3, &grace)),
        s3,
    );
    let sent = load.join().unwrap();

    let events = input_events(&broker.addr, sent);
    let conversions = conversion_ids(&events);
    let all = records(&broker.addr, &conversions, Duration::from_secs(120));
    // Duplicates are allowed, different answers are not (checked here).
    let got = by_conversion(&all);
    let cfg = parsed(&cluster_config(&broker.addr, port, s1, &grace));
    let want = reference(&cfg, &events);
    let mut late = 0;
    for c in &conversions {
        let g = got.get(c).unwrap_or_else(|| {
            let e = events
                .iter()
                .find(|(_, j)| j["event_id"] == c.as_str())
                .unwrap();
            let uid = e.1["uid"].as_str().unwrap_or_default();
            let conv = read_all(
                &broker.addr,
                "pixel.conversions",
                |_| false,
                Duration::from_secs(3),
                Duration::ZERO,
            );
            let at = conv
                .iter()
                .find(|r| r.json()["event_id"] == c.as_str())
                .map(|r| (r.partition, r.offset));
            eprintln!("MISSING at {at:?}");
            if let Some((p, o)) = at {
                let needle = format!("partition={p} offset={o} ");
                for (name, text) in [
                    ("m1", std::fs::read_to_string(&m1.log).unwrap()),
                    ("m2", m2.log_text()),
                    ("m3", m3.log_text()),
                ] {
                    for l in text.lines().filter(|l| l.contains(&needle)) {
                        eprintln!("TRACE {name}: {l}");
                    }
                }
            }
            let dump = |t: String| {
                t.lines()
                    .filter(|l| {
                        l.contains("committed")
                            || l.contains("revoked")
                            || l.contains("restored")
                            || l.contains("WARN")
                            || l.contains("ERROR")
                    })
                    .map(|l| l.chars().take(400).collect::<String>())
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            eprintln!(
                "M1\n{}\nM2\n{}\nM3\n{}",
                dump(std::fs::read_to_string(&m1.log).unwrap()),
                dump(m2.log_text()),
                dump(m3.log_text())
            );
            panic!(
                "no record for conversion {c} (partition {}); member logs:\n{}\n{}\n{}\n{}",
                pixeld::sink::partition::for_key(uid.as_bytes(), PARTITIONS),
                m2.log_text()
                    .lines()
                    .filter(|l| !l.contains("restored"))
                    .collect::<Vec<_>>()
                    .join("\n"),
                m3.log_text()
                    .lines()
                    .filter(|l| !l.contains("restored"))
                    .collect::<Vec<_>>()
                    .join("\n"),
                m2.metrics()
                    .lines()
                    .filter(|l| l.starts_with("attribution_inputs_held")
                        || l.starts_with("attribution_watermark"))
                    .collect::<Vec<_>>()
                    .join("\n"),
                m3.metrics()
                    .lines()
                    .filter(|l| l.starts_with("attribution_inputs_held")
                        || l.starts_with("attribution_watermark"))
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
        });
        if g["late"] == true {
            late += 1;
        } else {
            assert_eq!(g, &want[c], "conversion {c}");
        }
    }
    eprintln!(
        "{} conversions, {} records ({} duplicates), {late} late; resumed ahead of the committed offset: {}",
        conversions.len(),
        all.len(),
        all.len() - got.len(),
        metric_sum(&m2.metrics(), "attribution_resumed_ahead_total")
            + metric_sum(&m3.metrics(), "attribution_resumed_ahead_total")
    );
    assert!(
        late * 20 <= conversions.len(),
        "{late} late of {}",
        conversions.len()
    );
    assert!(metric_sum(&m3.metrics(), "attribution_restore_seconds") >= 0.0);
    // The joining member takes some partitions over. Every record may be
    // in before it does (m2 decided them all); its share comes with the
    // rebalance that follows the killed member's session timeout, which on
    // a loaded machine can come after the last record: so it is awaited,
    // not assumed (one loop run in three failed here, 2026-12-07).
    let joined = Instant::now();
    while !m3.log_text().contains("attribution partition restored") {
        assert!(
            joined.elapsed() < Duration::from_secs(60),
            "the joining member took no partition in 60 s:\n{}",
            m3.log_text()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // librdkafka's statistics are metrics, never 4 KB INFO lines.
    assert!(
        !m2.log_text().contains("Client stats"),
        "statistics logged by the member"
    );
}

#[test]
fn a_fresh_member_restores_the_state_from_the_changelog_alone_and_expired_users_become_tombstones()
{
    let _turn = turn();
    let broker = Broker::start_sqlite();
    create_inputs(&broker.addr);
    // One-minute view windows, swept every second: an old impression
    // expires at once (clicks keep theirs: a fresh member credits them).
    let text = cluster_config(
        &broker.addr,
        free_tcp_port(),
        free_tcp_port(),
        &[
            ("grace_ms", "1000".into()),
            ("sweep_interval_secs", "1".into()),
        ],
    )
    .replace("post_view_minutes = 1440", "post_view_minutes = 1")
    .replace("post_view_minutes = 10080", "post_view_minutes = 1");
    let cfg = parsed(&text);
    let start = |cfg: &pixeld::config::Config| {
        let mut settings = pixeld::attribute::settings(cfg).unwrap();
        // The member's fetches in the log (see `member_log`): a run where
        // the member read nothing at all is otherwise mute.
        settings.consumer.set("debug", "fetch,cgrp");
        let catalog = Arc::new(ArcSwap::new(Catalog::new(cfg).unwrap()));
        let m = pixeld::attribution::cluster::Member::start(settings, catalog, 1).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !m.status.ready() || m.dump().len() < PARTITIONS as usize {
            assert!(Instant::now() < deadline, "member not ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        m
    };
    let a = start(&cfg);
    let now = pixeld::telemetry::now_ms();
    let mut events = Vec::new();
    for i in 0..200u64 {
        let uid = UserId::generate().to_hex().as_str().to_string();
        events.push((
            EventType::Impression,
            event(EventType::Impression, now + i, &uid, i),
        ));
        if i % 2 == 0 {
            events.push((EventType::Click, click_of_source(now + i, &uid, i)));
        }
        if i % 4 == 0 {
            events.push((
                EventType::Conversion,
                event(EventType::Conversion, now + i + 1, &uid, i + 1),
            ));
        }
    }
    // A user whose only touch is ten minutes old: swept, then a tombstone.
    let expired = UserId::generate().to_hex().as_str().to_string();
    events.push((
        EventType::Impression,
        event(EventType::Impression, now - 600_000, &expired, 0),
    ));
    publish(&producer(&broker.addr), &cfg.kafka.topics, &events);
    let conversions = conversion_ids(&events);
    records(&broker.addr, &conversions, Duration::from_secs(60));
    // Let a commit write every change. Under load the member may have
    // lost and retaken its partitions meanwhile (a missed heartbeat): its
    // state is then restored from the changelog, so wait until it is ready
    // again (seen 3 of 10 runs with stress-ng and a build beside it: the
    // dump was taken mid-restore and held no user).
    std::thread::sleep(Duration::from_secs(2));
    let deadline = Instant::now() + Duration::from_secs(60);
    let (before, users) = loop {
        let before = a.dump();
        let users: usize = before.iter().map(|(_, u)| u.len()).sum();
        let whole = a.status.ready() && before.len() == PARTITIONS as usize;
        if (whole && users == 200) || Instant::now() > deadline {
            break (before, users);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if users != 200 {
        // Tell a member that read nothing from a broker that kept nothing.
        let inputs = read_all(
            &broker.addr,
            &cfg.kafka.topics.impressions,
            |r| r.len() >= 201,
            Duration::from_secs(10),
            Duration::ZERO,
        );
        eprintln!("the broker holds {} impressions", inputs.len());
    }
    assert_eq!(users, 200, "the expired user is gone from memory");
    a.stop().unwrap();

    let b = start(&cfg);
    let after = b.dump();
    for ((pa, ua), (pb, ub)) in before.iter().zip(after.iter()) {
        assert_eq!(pa, pb);
        for (x, y) in ua.iter().zip(ub.iter()) {
            assert_eq!(x, y, "partition {pa}: restored from the changelog alone");
        }
        assert_eq!(ua.len(), ub.len(), "partition {pa}: users restored");
    }
    assert_eq!(after.len(), before.len());
    source_click_ids_outlive_their_member(&broker.addr, &cfg, &events, now, &after);
    b.stop().unwrap();

    let changelog = read_all(
        &broker.addr,
        "pixel.attribution-state",
        |r| r.iter().any(|m| m.key == expired && m.payload.is_none()),
        Duration::from_secs(10),
        Duration::ZERO,
    );
    let of_expired: Vec<&Read> = changelog.iter().filter(|m| m.key == expired).collect();
    assert!(
        of_expired.last().is_some_and(|m| m.payload.is_none()),
        "the expired user's last changelog message is a tombstone: {of_expired:?}"
    );
    // Every value is a user id key on the user's own partition.
    let expected_partition =
        |uid: &str| pixeld::sink::partition::for_key(uid.as_bytes(), PARTITIONS);
    for m in &changelog {
        assert_eq!(m.partition, expected_partition(&m.key), "{}", m.key);
    }
}

/// The `i`th user's click at `ts`: every other one (`i % 4 == 2`) with its
/// traffic source's click id, `sc-{i}`.
fn click_of_source(ts: u64, uid: &str, i: u64) -> Value {
    let mut click = event(EventType::Click, ts, uid, i);
    if i % 4 == 2 {
        click["source_click_id"] = json!(format!("sc-{i}"));
        click["source_click_kind"] = json!("source");
    }
    click
}

/// After the restore test's fresh member restored from the changelog
/// alone (`after`, its dump): every source click id came back with its
/// click, and that member credits a purchase (7313, hybrid) to a click with
/// one (user 2 of `events`) and to one without (user 4), and only the first
/// record carries an id.
fn source_click_ids_outlive_their_member(
    brokers: &str,
    cfg: &pixeld::config::Config,
    events: &[(EventType, Value)],
    now: u64,
    after: &[(i32, Vec<(UserId, UserState)>)],
) {
    let sourced: usize = after
        .iter()
        .flat_map(|(_, users)| users.iter())
        .map(|(_, u)| u.source_clicks.len())
        .sum();
    assert_eq!(sourced, 50, "every source click id restored with its click");

    let clicked = |i: u64| {
        let (_, click) = &events
            .iter()
            .filter(|(k, _)| *k == EventType::Click)
            .nth(i as usize / 2)
            .unwrap();
        assert_eq!(click["ts"], now + i);
        click["uid"].as_str().unwrap().to_string()
    };
    let purchases: Vec<(EventType, Value)> = [2u64, 4]
        .into_iter()
        .map(|i| {
            let mut c = event(EventType::Conversion, now + 1_000 + i, &clicked(i), 0);
            c["pixel_id"] = json!(7313);
            (EventType::Conversion, c)
        })
        .collect();
    publish(&producer(brokers), &cfg.kafka.topics, &purchases);
    let got = by_conversion(&records(
        brokers,
        &conversion_ids(&purchases),
        Duration::from_secs(60),
    ));
    let record = |n: usize| &got[purchases[n].1["event_id"].as_str().unwrap()];
    assert_eq!(record(0)["kind"], "post_click", "{}", record(0));
    assert_eq!(record(0)["source_click_id"], "sc-2");
    assert_eq!(record(0)["source_click_kind"], "source");
    assert_eq!(record(1)["kind"], "post_click", "{}", record(1));
    assert!(record(1)["source_click_id"].is_null(), "{}", record(1));
}

#[test]
fn topics_with_different_partition_counts_stop_the_member_with_the_counts() {
    let _turn = turn();
    let broker = Broker::start_sqlite();
    create_topics(
        &broker.addr,
        &[
            ("pixel.impressions", 6),
            ("pixel.clicks", 3),
            ("pixel.conversions", 6),
            ("pixel.segments", 6),
        ],
    );
    let status = free_tcp_port();
    let config = write_config(&cluster_config(&broker.addr, free_tcp_port(), status, &[]));
    let log = fresh_dir().join("attribute.log");
    let mut m = Member::spawn(&config, status, &log);
    let deadline = Instant::now() + Duration::from_secs(60);
    let code = loop {
        if let Some(s) = m.child.try_wait().unwrap() {
            break s.code();
        }
        assert!(Instant::now() < deadline, "pixeld attribute kept running");
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = m.log_text();
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("pixel.clicks: 3"), "{text}");
    assert!(text.contains("pixel.impressions: 6"), "{text}");
    assert!(text.contains("same partition count"), "{text}");
}

/// `pixeld attribute --replay` on `config`: its printed summary.
fn replay(config: &std::path::Path, from: &str, to: &str, output: &str) -> Value {
    let out = std::process::Command::new(pixeld_bin())
        .args([
            "attribute",
            "--replay",
            "--from",
            from,
            "--to",
            to,
            "--output-topic",
            output,
            "--config",
        ])
        .arg(config)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The summary a replay should print, from the reference engine.
fn summary_of(records: &HashMap<String, Value>, from: u64, to: u64) -> Value {
    let mut attributed: std::collections::BTreeMap<String, u64> = Default::default();
    let mut not: std::collections::BTreeMap<String, u64> = Default::default();
    let (mut conversions, mut counted) = (0, 0);
    for r in records.values() {
        let ts = r["ts"].as_u64().unwrap();
        if ts < from || ts >= to {
            continue;
        }
        conversions += 1;
        counted += u64::from(r["counted"] == true);
        match r["kind"].as_str() {
            Some(k) => *attributed.entry(k.into()).or_default() += 1,
            None => *not.entry(r["reason"].as_str().unwrap().into()).or_default() += 1,
        }
    }
    json!({"conversions": conversions, "counted": counted, "attributed": attributed, "not_attributed": not})
}

fn iso(ms: u64) -> String {
    let out = std::process::Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("@{}", ms / 1000),
            "+%Y-%m-%dT%H:%M:%SZ",
        ])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn a_what_if_replay_with_a_longer_window_credits_exactly_the_conversions_the_reference_says() {
    let _turn = turn();
    let broker = Broker::start_sqlite();
    create_inputs(&broker.addr);
    let base = cluster_config(&broker.addr, free_tcp_port(), free_tcp_port(), &[]);
    // Pixel 7313 (hybrid): a 1-day post-view window, and the what-if's 7 days.
    let week = base.replace("post_view_minutes = 1440", "post_view_minutes = 10080");
    assert_ne!(base, week);
    let hour = 3_600_000;
    let t0 = (pixeld::telemetry::now_ms() - 30 * 24 * hour) / 1000 * 1000;
    let mut events = Vec::new();
    for i in 0..120u64 {
        let uid = UserId::generate().to_hex().as_str().to_string();
        let view = t0 + i * 60_000;
        events.push((
            EventType::Impression,
            event(EventType::Impression, view, &uid, 0),
        ));
        // 0, 10, 20, 30, 40 or 50 hours after the view.
        let delay = (i % 6) * 10 * hour;
        events.push((
            EventType::Conversion,
            event(EventType::Conversion, view + delay + 1, &uid, 0),
        ));
    }
    // A conversion before --from and one after --to: applied, not counted.
    let outside = UserId::generate().to_hex().as_str().to_string();
    events.push((
        EventType::Conversion,
        event(EventType::Conversion, t0 - 2 * hour, &outside, 0),
    ));
    events.push((
        EventType::Conversion,
        event(EventType::Conversion, t0 + 20 * 24 * hour, &outside, 0),
    ));
    publish(
        &producer(&broker.addr),
        &parsed(&base).kafka.topics,
        &events,
    );

    let (from, to) = (t0 - hour, t0 + 10 * 24 * hour);
    let day = replay(
        &write_config(&base),
        &iso(from),
        &iso(to),
        "pixel.attributions.whatif-day",
    );
    let seven = replay(
        &write_config(&week),
        &iso(from),
        &iso(to),
        "pixel.attributions.whatif-week",
    );
    let want_day = summary_of(&reference(&parsed(&base), &events), from, to);
    let want_week = summary_of(&reference(&parsed(&week), &events), from, to);
    for (got, want) in [(&day, &want_day), (&seven, &want_week)] {
        for k in ["conversions", "counted", "attributed", "not_attributed"] {
            assert_eq!(got[k], want[k], "{k}: got {got}, want {want}");
        }
    }
    // The difference is exactly the views 30-50 hours before their purchase.
    assert_eq!(day["attributed"]["post_view"], 60);
    assert_eq!(day["not_attributed"]["outside_window"], 60);
    assert_eq!(seven["attributed"]["post_view"], 120);
    assert_eq!(day["conversions"], 120);
    let written = read_all(
        &broker.addr,
        "pixel.attributions.whatif-week",
        |r| r.len() >= 120,
        Duration::from_secs(20),
        Duration::from_millis(500),
    );
    assert_eq!(written.len(), 120, "one record per replayed conversion");
    // The live topic got nothing.
    let live = read_all(
        &broker.addr,
        "pixel.attributions",
        |_| false,
        Duration::from_secs(2),
        Duration::ZERO,
    );
    assert!(live.is_empty());
}

/// Erasure in the fleet: an `optout` event on the segments topic (as
/// `/optout` publishes it) removes the user from the member's memory and
/// writes a tombstone for the id to the changelog within a commit interval.
#[test]
fn an_opt_out_erases_the_user_in_the_member_and_tombstones_the_changelog() {
    let _turn = turn();
    let broker = Broker::start_sqlite();
    create_inputs(&broker.addr);
    let text = cluster_config(
        &broker.addr,
        free_tcp_port(),
        free_tcp_port(),
        &[("grace_ms", "500".into())],
    );
    let cfg = parsed(&text);
    let settings = pixeld::attribute::settings(&cfg).unwrap();
    let catalog = Arc::new(ArcSwap::new(Catalog::new(&cfg).unwrap()));
    let m = pixeld::attribution::cluster::Member::start(settings, catalog, 1).unwrap();
    let uid = UserId::generate().to_hex().as_str().to_string();
    let other = UserId::generate().to_hex().as_str().to_string();
    let now = pixeld::telemetry::now_ms();
    let touches = vec![
        (
            EventType::Impression,
            event(EventType::Impression, now, &uid, 0),
        ),
        (EventType::Click, event(EventType::Click, now, &uid, 1)),
        (
            EventType::Impression,
            event(EventType::Impression, now, &other, 2),
        ),
    ];
    let producer = producer(&broker.addr);
    publish(&producer, &cfg.kafka.topics, &touches);
    let has_value = |r: &[Read]| r.iter().any(|m| m.key == uid && m.payload.is_some());
    let limit = Duration::from_secs(60);
    let state = read_all(
        &broker.addr,
        "pixel.attribution-state",
        has_value,
        limit,
        Duration::ZERO,
    );
    assert!(has_value(&state), "the user's state reached the changelog");

    let optout_ts = pixeld::telemetry::now_ms();
    let id = EventId::new_v7(optout_ts)
        .to_hyphenated()
        .as_str()
        .to_string();
    let payload =
        json!({"event_id": id, "type": "optout", "ts": optout_ts, "uid": uid}).to_string();
    let headers = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
        key: "type",
        value: Some("optout"),
    });
    producer
        .send(
            rdkafka::producer::BaseRecord::with_opaque_to("pixel.segments", 0)
                .key(&uid)
                .payload(&payload)
                .headers(headers)
                .timestamp(optout_ts as i64),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    flushed(&producer);

    let tombstoned = |r: &[Read]| r.iter().any(|m| m.key == uid && m.payload.is_none());
    let changelog = read_all(
        &broker.addr,
        "pixel.attribution-state",
        tombstoned,
        limit,
        Duration::ZERO,
    );
    let of_user: Vec<&Read> = changelog.iter().filter(|m| m.key == uid).collect();
    assert!(
        of_user.last().is_some_and(|m| m.payload.is_none()),
        "the opted-out user's last changelog message is a tombstone: {of_user:?}"
    );
    assert!(
        changelog
            .iter()
            .any(|m| m.key == other && m.payload.is_some()),
        "another user's state stays"
    );
    let kept: Vec<String> = m
        .dump()
        .into_iter()
        .flat_map(|(_, users)| {
            users
                .into_iter()
                .map(|(u, _)| u.to_hex().as_str().to_string())
        })
        .collect();
    assert!(
        !kept.contains(&uid),
        "nothing of the user in the member's memory"
    );
    assert!(kept.contains(&other));
    m.stop().unwrap();
}

/// A changelog value no pixeld wrote (three hostile bytes) once stopped
/// every member with exit code 2, which systemd does not restart: now that
/// user starts with an empty state, counted, and the member serves.
#[test]
fn an_unreadable_changelog_value_is_skipped_and_counted_and_the_member_serves() {
    let _turn = turn();
    let broker = Broker::start_sqlite();
    create_inputs(&broker.addr);
    create_topics(&broker.addr, &[("pixel.attribution-state", PARTITIONS)]);
    let uid = UserId::generate().to_hex().as_str().to_string();
    let partition = pixeld::sink::partition::for_key(uid.as_bytes(), PARTITIONS);
    let producer = producer(&broker.addr);
    producer
        .send(
            rdkafka::producer::BaseRecord::with_opaque_to("pixel.attribution-state", 0)
                .key(&uid)
                .payload(&b"{1}"[..])
                .partition(partition),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    flushed(&producer);
    let status = free_tcp_port();
    let config = write_config(&cluster_config(&broker.addr, free_tcp_port(), status, &[]));
    let m = Member::start(&config, status);
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric_sum(&m.metrics(), "attribution_changelog_invalid_total") < 1.0 {
        assert!(Instant::now() < deadline, "{}", m.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(m.log_text().contains("changelog value unreadable"));
    assert_eq!(
        raw_get(status, "/readyz").map(|(code, _)| code),
        Some(200),
        "the member serves: {}",
        m.log_text()
    );
}

/// Messages no pixeld producer writes, on the input topics: skipped and
/// counted by topic and reason, logged, and the member stays ready. A
/// segment event (a `type` header the engine does not read) is ordinary
/// traffic and not counted: it sits before the headerless message in the
/// same partition, so when that one is counted the segment was read too.
#[test]
fn malformed_input_messages_are_counted_by_reason_and_segment_events_are_not() {
    let _turn = turn();
    let broker = Broker::start_sqlite();
    create_inputs(&broker.addr);
    let producer = producer(&broker.addr);
    let send = |topic: &str, payload: &[u8], kind: Option<&str>| {
        let mut record = rdkafka::producer::BaseRecord::<(), [u8], usize>::with_opaque_to(topic, 0)
            .payload(payload)
            .partition(0);
        if let Some(kind) = kind {
            record = record.headers(rdkafka::message::OwnedHeaders::new().insert(
                rdkafka::message::Header {
                    key: "type",
                    value: Some(kind),
                },
            ));
        }
        producer.send(record).map_err(|(e, _)| e).unwrap();
    };
    let segment = br#"{"event_id":"0190a5b0-0000-7000-8000-000000000000","ts":1,"uid":null}"#;
    send("pixel.segments", segment, Some("segment"));
    send("pixel.segments", b"{}", None);
    send("pixel.conversions", b"not json", None);
    send(
        "pixel.conversions",
        br#"{"event_id":"0190a5b0-0000-7000-8000-000000000000","ts":1,"uid":"forged"}"#,
        None,
    );
    flushed(&producer);
    let status = free_tcp_port();
    let config = write_config(&cluster_config(&broker.addr, free_tcp_port(), status, &[]));
    let m = Member::start(&config, status);
    let name = "attribution_inputs_malformed_total";
    let series = |body: &str, topic: &str, reason: &str| -> f64 {
        body.lines()
            .filter(|l| l.starts_with(name))
            .filter(|l| l.contains(&format!("topic=\"{topic}\"")))
            .filter(|l| l.contains(&format!("reason=\"{reason}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let body = m.metrics();
        if metric_sum(&body, name) >= 3.0 {
            break body;
        }
        assert!(Instant::now() < deadline, "{body}\n{}", m.log_text());
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(metric_sum(&body, name), 3.0, "{body}");
    assert_eq!(series(&body, "segments", "no_type"), 1.0, "{body}");
    assert_eq!(series(&body, "conversions", "not_an_event"), 1.0, "{body}");
    assert_eq!(series(&body, "conversions", "uid"), 1.0, "{body}");
    assert!(
        m.log_text().contains("is not a pixeld event of its kind"),
        "{}",
        m.log_text()
    );
    assert_eq!(raw_get(status, "/readyz").map(|(code, _)| code), Some(200));
}

const FLEET_KEY: &str = "fleet-shop-key-0123456789abcdef";

/// A cluster config whose serve takes `POST /v1/...` for advertiser 100.
fn with_api_key(text: String) -> String {
    format!(
        "{text}\n\n[[api_keys]]\nid = \"fleet-shop\"\nsecret = \"{FLEET_KEY}\"\nadvertisers = [100]\n"
    )
}

/// `POST path` with the fleet key: the answer's JSON.
fn post_api(port: u16, path: &str, body: &Value) -> Value {
    let body = body.to_string();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {FLEET_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let out = raw_exchange(port, head.as_bytes()).unwrap_or_default();
    assert_eq!(status_of(&out), 200, "{out}");
    let json = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn accepted_ids(answer: &Value) -> Vec<String> {
    answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["status"], "accepted", "{answer}");
            r["event_id"].as_str().unwrap().to_string()
        })
        .collect()
}

/// Orders reported to one instance and refunded or corrected through
/// another, after every member that decided them is gone: a fresh member
/// restores the orders' outcomes from the changelog alone (the members left
/// with SIGTERM, committing everything they read, so nothing is read again),
/// and each adjustment's record names its original and carries its credit.
#[test]
fn adjustments_through_the_fleet_name_the_original_after_its_members_are_gone() {
    let _turn = turn();
    let broker = Broker::start_sqlite();
    let (pa, pb) = (free_tcp_port(), free_tcp_port());
    let (s1, s2, s3, s4) = (
        free_tcp_port(),
        free_tcp_port(),
        free_tcp_port(),
        free_tcp_port(),
    );
    let text = |port, status| with_api_key(cluster_config(&broker.addr, port, status, &[]));
    let serve_a = serve(&text(pa, s1), pa);
    let serve_b = serve(&text(pb, s1), pb);
    assert!(serve_a.wait_ready(200, Duration::from_secs(30)));
    assert!(serve_b.wait_ready(200, Duration::from_secs(30)));
    let mut m1 = Member::start(&write_config(&text(pa, s1)), s1);
    let mut m2 = Member::start(&write_config(&text(pa, s2)), s2);

    let users: Vec<String> = (0..24)
        .map(|_| UserId::generate().to_hex().as_str().to_string())
        .collect();
    for u in &users {
        get(pa, "/imptr?id=2766&cachebuster=1", u);
    }
    let sales: Vec<Value> = users
        .iter()
        .enumerate()
        .map(|(i, u)| json!({"pixel_id": 7313, "uid": u, "order_id": format!("O{i}"), "value": "10"}))
        .collect();
    let conversions = accepted_ids(&post_api(
        pb,
        "/v1/conversions",
        &json!({ "conversions": sales }),
    ));
    let originals = by_conversion(&records(
        &broker.addr,
        &conversions,
        Duration::from_secs(90),
    ));
    for c in &conversions {
        let log = || format!("{}\n---\n{}", m1.log_text(), m2.log_text());
        let found = originals
            .get(c)
            .unwrap_or_else(|| panic!("no record of {c}; logs:\n{}", log()));
        assert_eq!(found["kind"], "post_view", "{found}");
    }
    assert_eq!((m1.terminate(), m2.terminate()), (Some(0), Some(0)));
    let m3 = Member::spawn(
        &write_config(&text(pa, s3)),
        s3,
        &fresh_dir().join("m3.log"),
    );
    let m4 = Member::spawn(
        &write_config(&text(pa, s4)),
        s4,
        &fresh_dir().join("m4.log"),
    );
    m3.wait_ready();
    m4.wait_ready();

    // Every third item names its order alone: the member owning the
    // order's key finds its user in the index (restored from the
    // changelog) and sends it on to the member holding that user.
    let mut items: Vec<Value> = users
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let mut item = match i % 2 {
                0 => json!({"pixel_id": 7313, "uid": u, "order_id": format!("O{i}"), "type": "retract"}),
                _ => json!({"pixel_id": 7313, "uid": u, "order_id": format!("O{i}"), "type": "restate", "value": "4"}),
            };
            if i % 3 == 2 {
                item.as_object_mut().unwrap().remove("uid");
            }
            item
        })
        .collect();
    items.push(json!({"pixel_id": 7313, "uid": users[0], "order_id": "NEVER", "type": "retract"}));
    items.push(json!({"pixel_id": 7313, "order_id": "NEVER2", "type": "retract"}));
    let adjustments = accepted_ids(&post_api(
        pa,
        "/v1/adjustments",
        &json!({ "adjustments": items }),
    ));
    let got = by_conversion(&records(
        &broker.addr,
        &adjustments,
        Duration::from_secs(90),
    ));
    let (mut count, mut value) = (0, 0);
    for (i, a) in adjustments.iter().enumerate().take(users.len()) {
        let (r, original) = (&got[a], &originals[&conversions[i]]);
        assert_eq!(r["adjusts"], original["event_id"], "{r}");
        assert_eq!(r["touch_event_id"], original["touch_event_id"], "{r}");
        assert_eq!(r["kind"], "post_view", "{r}");
        count += r["conversions_delta"].as_i64().unwrap();
        value += r["value_delta_micros"].as_i64().unwrap();
    }
    assert_eq!(got[&adjustments[users.len()]]["reason"], "unknown_order");
    assert_eq!(
        got[&adjustments[users.len() + 1]]["reason"],
        "unknown_order"
    );
    // 24 sales of 10; 12 retracted, 12 restated to 4.
    assert_eq!((count, value), (-12, -(12 * 10 + 12 * 6) * 1_000_000));
    // The orders came from the changelog: no conversion was decided again,
    // and each adjustment has one record.
    let decided = metric_sum(&m3.metrics(), "attribution_records_total")
        + metric_sum(&m4.metrics(), "attribution_records_total");
    assert_eq!(decided, adjustments.len() as f64, "{}", m3.metrics());
    let sent_on = metric_sum(
        &m3.metrics(),
        "attribution_cluster_produced_total{kind=\"adjustment_by_user\"}",
    ) + metric_sum(
        &m4.metrics(),
        "attribution_cluster_produced_total{kind=\"adjustment_by_user\"}",
    );
    assert_eq!(sent_on, 8.0, "the 8 known orders named alone were sent on");
}

/// Issue 25, finding 6: the member's status listener has serve's header
/// timeout and a connection cap. Held idle connections beyond the cap are
/// answered 503 at once rather than left hanging, the held ones are closed
/// after `server.header_read_timeout_ms`, and `/readyz` answers again.
#[test]
fn the_member_s_status_listener_sheds_held_connections_and_answers_again() {
    let _turn = turn();
    let broker = Broker::start_sqlite();
    create_inputs(&broker.addr);
    let status = free_tcp_port();
    let text = cluster_config(&broker.addr, free_tcp_port(), status, &[]).replace(
        "header_read_timeout_ms = 10000",
        "header_read_timeout_ms = 1000",
    );
    let _member = Member::start(&write_config(&text), status);
    let mut held: Vec<std::net::TcpStream> = (0..100)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", status)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let over = raw_get(status, "/readyz").map(|(s, _)| s);
    assert_eq!(over, Some(503), "over the cap: a short answer, not a hang");
    std::thread::sleep(Duration::from_millis(1500));
    for s in held.iter_mut() {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 256];
        // Closed by the member: end of stream (after a 503 or a timeout's
        // close), never a read that waits.
        let n = std::io::Read::read(s, &mut buf);
        assert!(n.is_ok(), "{n:?}");
    }
    drop(held);
    assert_eq!(raw_get(status, "/readyz").map(|(s, _)| s), Some(200));
}
