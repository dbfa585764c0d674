//! Consent, click ids, the address policy and the bounced cookie over HTTP,
//! checked in what Kafka received.

mod common;

use common::{consume, example_config, uid_cookie, Broker, Server, BROWSER_UA};
use pixeld::config::{IpPolicy, Secret};
use serde_json::Value;

/// From `tests/fixtures/tcf/vectors.json` (made by the IAB's own encoder).
const P1_AND_P7: &str =
    "CQeEcwAQeEcwAAKACAENCWEgAIIAAAAAAAYgF5wBQAAgADAAQAAwBeYAAAAA.IAAA.YAAAAAAAAAAA";
const P7_ONLY: &str = "CQeEcwAQeEcwAAKACAENCWEgAAIAAEIAAAYgF5wAQF5gXnACAAEAvMAA.IAAA.YAAAAAAAAAAA";
const P1_ONLY: &str = "CQeEcwAQeEcwAAKACAENCWEgAIAAAAAAAAYgF5wAQF5gAAAA.IAAA.YAAAAAAAAAAA";
const UID: &str = "0123456789abcdef0123456789abcdef";

fn ua() -> (&'static str, &'static str) {
    ("user-agent", BROWSER_UA)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_decides_the_cookie_and_attribution_and_is_recorded() {
    let broker = Broker::start();
    let mut cfg = example_config(&broker.addr);
    cfg.privacy.tcf_vendor_id = Some(755);
    let server = Server::start(cfg).await;
    let cookie = uid_cookie(UID);
    let with = [("cookie", cookie.as_str()), ua()];

    // 1. Purpose 7 only: the cookie is neither read nor set.
    let r = server
        .get(
            &format!("/imptr?id=2766&gdpr=1&gdpr_consent={P7_ONLY}"),
            &with,
        )
        .await;
    // The example tracker answers with its network pixel (a redirect).
    assert!(matches!(r.status.as_u16(), 200 | 302), "{}", r.status);
    assert!(r.header("set-cookie").is_none());
    let r = server
        .get(
            &format!("/imptr?id=2766&gdpr=1&gdpr_consent={P7_ONLY}"),
            &[ua()],
        )
        .await;
    assert!(r.header("set-cookie").is_none(), "no cookie issued either");
    // 2. Purposes 1 and 7: tracked as usual.
    server
        .get(
            &format!("/imptr?id=2766&gdpr=1&gdpr_consent={P1_AND_P7}"),
            &with,
        )
        .await;
    // 3. Purpose 1 only: the cookie is read, the touch never attributed.
    server
        .get(
            &format!("/clktr?id=21378&gdpr=1&gdpr_consent={P1_ONLY}"),
            &with,
        )
        .await;
    // 4. A malformed string: no consent, and a warning.
    server
        .get(
            "/imptr?id=2766&gdpr=1&gdpr_consent=CO-not-a-tc-string",
            &with,
        )
        .await;
    // 5. gdpr=0, and the placeholders of an ad server that filled nothing.
    server.get("/imptr?id=2766&gdpr=0", &with).await;
    server
        .get(
            "/imptr?id=2766&gdpr=${GDPR}&gdpr_consent=${GDPR_CONSENT_755}",
            &with,
        )
        .await;
    // The conversion (hybrid: a click first): credited to the latest view,
    // never to the click of step 3, nor to the views of steps 1 and 4.
    server
        .get(
            &format!("/px?id=7313&gdpr=1&gdpr_consent={P1_AND_P7}"),
            &with,
        )
        .await;
    server.stop().await;

    let imps = consume(&broker.addr, "pixel.impressions", 6);
    assert_eq!(imps.len(), 6);
    for e in &imps {
        common::assert_schema(&e.json);
    }
    let warnings = |e: &Value| -> Vec<String> {
        e["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(imps[0].json["uid"], Value::Null);
    assert_eq!(
        imps[0].json["ip"],
        Value::Null,
        "anonymous: no address either"
    );
    assert!(warnings(&imps[0].json).contains(&"no_storage_consent".into()));
    let c = &imps[0].json["consent"];
    assert_eq!(c["gdpr"], true);
    assert_eq!(c["tcf"]["purposes"], serde_json::json!([7]));
    assert_eq!(c["tcf"]["vendor_storage"], false);
    assert_eq!(c["tcf"]["vendor_measurement"], true);
    assert_eq!(c["tc_string"], P7_ONLY);
    assert_eq!(imps[2].json["uid"], UID);
    assert_eq!(imps[2].json["consent"]["tcf"]["vendor_storage"], true);
    assert_eq!(imps[3].json["uid"], Value::Null);
    let w = warnings(&imps[3].json);
    assert!(w.contains(&"consent_invalid".into()), "{w:?}");
    assert_eq!(imps[3].json["consent"]["tcf"], Value::Null);
    assert_eq!(imps[4].json["uid"], UID, "gdpr=0: consent not required");
    assert_eq!(imps[5].json["uid"], UID, "unfilled macros are absent");
    assert_eq!(imps[5].json["consent"]["gdpr"], Value::Null);

    let clicks = consume(&broker.addr, "pixel.clicks", 1);
    assert_eq!(clicks[0].json["uid"], UID);
    assert!(warnings(&clicks[0].json).contains(&"no_measurement_consent".into()));
    let records = consume(&broker.addr, "pixel.attributions", 1);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].json["kind"], "post_view", "{}", records[0].json);
    assert_eq!(records[0].json["touch_event_id"], imps[5].json["event_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_click_id_credits_a_conversion_that_came_without_a_cookie() {
    let broker = Broker::start();
    let mut cfg = example_config(&broker.addr);
    cfg.click_trackers[0].append_click_id = true;
    let server = Server::start(cfg).await;
    let r = server
        .get(
            "/clktrb?id=21378&redir=https%3A%2F%2Fshop.example.com%2Fitem%3Fid%3D9%23reviews",
            &[ua()],
        )
        .await;
    assert_eq!(r.status, 302);
    let location = r.header("location").unwrap().to_string();
    let (head, fragment) = location.split_once('#').unwrap();
    assert_eq!(fragment, "reviews", "the landing URL's fragment is kept");
    let token = head
        .strip_prefix("https://shop.example.com/item?id=9&pxclid=")
        .unwrap_or_else(|| panic!("{location}"))
        .to_string();
    assert!(
        token.len() <= pixeld::pixel::click_id::MAX_TOKEN_CHARS,
        "{token}"
    );
    // The advertiser's page hands it back; no cookie: another browser
    // context, as with third-party cookies blocked.
    server
        .get(&format!("/px?id=7313&clid={token}"), &[ua()])
        .await;
    // An edited token is a warning, never an error.
    let mut edited = token.clone().into_bytes();
    edited[10] = if edited[10] == b'A' { b'B' } else { b'A' };
    let edited = String::from_utf8(edited).unwrap();
    let r = server
        .get(&format!("/px?id=7313&clid={edited}"), &[ua()])
        .await;
    // The pixel's piggyback, as for any conversion.
    assert_eq!(r.status, 302);
    server.stop().await;

    let clicks = consume(&broker.addr, "pixel.clicks", 1);
    let convs = consume(&broker.addr, "pixel.conversions", 2);
    for c in &convs {
        common::assert_schema(&c.json);
    }
    assert_eq!(
        convs[0].json["click_id"]["event_id"],
        clicks[0].json["event_id"]
    );
    assert_eq!(convs[0].json["click_id"]["tracker_id"], 21378);
    assert_eq!(convs[1].json["click_id"], Value::Null);
    assert!(convs[1].json["warnings"]
        .as_array()
        .unwrap()
        .contains(&"clid_invalid".into()));
    let records = consume(&broker.addr, "pixel.attributions", 2);
    let by = |conv: &Value| {
        records
            .iter()
            .find(|r| r.json["conversion_event_id"] == conv["event_id"])
            .unwrap()
            .json
            .clone()
    };
    let good = by(&convs[0].json);
    assert_eq!(good["attributed"], true);
    assert_eq!(good["kind"], "post_click");
    assert_eq!(good["matched_by"], "click_id");
    assert_eq!(good["touch_event_id"], clicks[0].json["event_id"]);
    assert_eq!(good["placement_id"], 4242);
    let bad = by(&convs[1].json);
    assert_eq!(bad["attributed"], false);
    assert_eq!(bad["matched_by"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_are_truncated_or_dropped_before_they_are_recorded() {
    let broker = Broker::start();
    for (policy, want) in [
        (IpPolicy::Truncate, Value::from("127.0.0.0")),
        (IpPolicy::Drop, Value::Null),
    ] {
        let mut cfg = example_config(&broker.addr);
        cfg.privacy.ip = policy;
        cfg.kafka.topics.impressions = format!("pixel.impressions.{policy}");
        let server = Server::start(cfg).await;
        server.get("/imptr?id=2766", &[ua()]).await;
        server.stop().await;
        let imps = consume(&broker.addr, &format!("pixel.impressions.{policy}"), 1);
        assert_eq!(imps[0].json["ip"], want, "{policy}");
        assert!(imps[0].json["uid"].is_string(), "the id is kept");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bounce_records_a_cookieless_pixel_once_without_an_id() {
    let broker = Broker::start();
    let mut cfg = example_config(&broker.addr);
    cfg.cookie.bounce = true;
    cfg.cookie.secret = Secret::parse(common::COOKIE_SECRET);
    let server = Server::start(cfg).await;
    // No cookie: bounced to itself with the cookie, nothing recorded yet.
    let r = server.get("/imptr?id=2766&cachebuster=5", &[ua()]).await;
    assert_eq!(r.status, 302);
    let location = r.header("location").unwrap().to_string();
    assert_eq!(location, "/imptr?pxbounce=1&id=2766&cachebuster=5");
    assert!(r.set_uid().is_some());
    assert!(r.header("cache-control").unwrap().contains("no-store"));
    // A browser that refused it comes back without: recorded, anonymous.
    let r = server.get(&location, &[ua()]).await;
    assert_eq!(
        r.status, 302,
        "the tracker's network pixel, as without the bounce"
    );
    assert!(r.header("set-cookie").is_none());
    // One that kept it comes back with it.
    let cookie = uid_cookie(UID);
    let r = server
        .get(&location, &[("cookie", cookie.as_str()), ua()])
        .await;
    assert_eq!(r.status, 302);
    // Click trackers are never bounced: the landing page comes first.
    let r = server.get("/clktr?id=21378", &[ua()]).await;
    assert_eq!(
        r.header("location"),
        Some("https://www.example.com/autumn-sale")
    );
    server.stop().await;
    let imps = consume(&broker.addr, "pixel.impressions", 2);
    assert_eq!(imps.len(), 2, "the bounce itself is not an event");
    assert_eq!(imps[0].json["uid"], Value::Null);
    assert_eq!(imps[0].json["new_uid"], false);
    assert!(imps[0].json["warnings"]
        .as_array()
        .unwrap()
        .contains(&"cookies_blocked".into()));
    assert_eq!(imps[1].json["uid"], UID);
    assert_eq!(imps[1].json["new_uid"], true, "issued by the bounce");
}

/// Issue 25, finding 3: a browser that never keeps pixeld's cookie (Safari,
/// a reload of the thank-you page) is issued a fresh id on every request;
/// with the conversion's repeat mark kept under that fresh id, one click id
/// gave a credited conversion per reload on a `one_per_user` pixel. The
/// conversion is the click's, and it goes to the click's partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookieless_reloads_with_one_click_id_count_once_on_a_one_per_user_pixel() {
    let broker = Broker::start();
    let mut cfg = example_config(&broker.addr);
    cfg.click_trackers[0].append_click_id = true;
    cfg.conversion_pixels[0].repeat = pixeld::config::Repeat::OnePerUser;
    let server = Server::start(cfg).await;
    let r = server
        .get(
            "/clktrb?id=21378&redir=https%3A%2F%2Fshop.example.com%2Fdone",
            &[ua()],
        )
        .await;
    let location = r.header("location").unwrap().to_string();
    let token = location
        .strip_prefix("https://shop.example.com/done?pxclid=")
        .unwrap_or_else(|| panic!("{location}"))
        .to_string();
    for _ in 0..3 {
        let r = server
            .get(&format!("/px?id=7313&clid={token}"), &[ua()])
            .await;
        assert!(r.header("set-cookie").is_some(), "a fresh id each time");
    }
    server.stop().await;

    let clicks = consume(&broker.addr, "pixel.clicks", 1);
    let convs = consume(&broker.addr, "pixel.conversions", 3);
    let uids: std::collections::HashSet<&Value> = convs.iter().map(|c| &c.json["uid"]).collect();
    assert_eq!(uids.len(), 3, "three fresh ids: {uids:?}");
    let records = consume(&broker.addr, "pixel.attributions", 3);
    let counted: Vec<&Value> = records
        .iter()
        .filter(|r| r.json["counted"] == true)
        .map(|r| &r.json)
        .collect();
    assert_eq!(counted.len(), 1, "one conversion: {records:?}");
    assert_eq!(counted[0]["touch_event_id"], clicks[0].json["event_id"]);
    assert_eq!(counted[0]["matched_by"], "click_id");
    let repeats = records
        .iter()
        .filter(|r| r.json["reason"] == "repeat")
        .count();
    assert_eq!(repeats, 2);
    // Keyed by the click, so one member of a fleet sees all three.
    let keys: std::collections::HashSet<&String> = convs.iter().map(|c| &c.key).collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(!convs[0].key.is_empty());
}
