//! pixeld in a real browser: Debian's headless Chromium visits a publisher
//! page (127.0.0.1) carrying the tags `pixeld tags` exports, clicks through
//! to an advertiser's site (advertiser.test) where the conversion pixel
//! fires, with pixeld third-party on `localhost` and a pixel catcher on
//! catcher.test. Every scenario asserts what Kafka received (a real tansu),
//! not only what the page saw; each runs with third-party cookies allowed
//! and with Chromium's default, which blocks them.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::browser::{Browser, Sites, ThirdPartyCookies, CHROME_UA};
use common::catcher::Catcher;
use common::cluster::{read_all, write_config, Member};
use common::forward::Forward;
use common::{consume, consume_all, free_tcp_port, Broker, Consumed, Process, COOKIE_SECRET};
use serde_json::Value;

/// pixeld on `localhost:port`, third-party to every page of the test sites.
struct Pixeld {
    process: Process,
    broker: Broker,
    port: u16,
    config: PathBuf,
}

/// The config of these tests: the allowlist names the local test hosts
/// (the tests' own config, not a weakened default); third-party pixels are
/// scripts on the catcher, so the image tag answers pixeld's own GIF.
fn config_for(brokers: &str, port: u16, sites: &Sites, extra_cookie: &str) -> String {
    let catcher = sites.catcher("");
    format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
public_url = "http://localhost:{port}"
admin_listen = "127.0.0.1:0"
drain_ms = 0
data_dir = "{data}"
[cookie]
secret = "{COOKIE_SECRET}"
{extra_cookie}
[redirect]
allowed_hosts = ["advertiser.test", "catcher.test"]
[kafka]
brokers = "{brokers}"
partitions = 1
linger_ms = 1
[network]
pixels = [{{ url = "{catcher}/net.js?cb=${{CACHEBUSTER}}&u=${{UID}}", format = "js" }}]
[[advertisers]]
id = 100
pixels = [{{ url = "{catcher}/adv.js?u=${{USER_ID}}", format = "js" }}]
[[line_items]]
id = 5001
advertiser = 100
conversion_pixels = [7313]
[[impression_trackers]]
id = 2766
line_item = 5001
publisher = 777
placement = 4242
pixels = [{{ url = "{catcher}/trk.js?cb=${{CACHEBUSTER}}", format = "js" }}]
[[click_trackers]]
id = 21378
line_item = 5001
publisher = 777
append_click_id = true
[[conversion_pixels]]
id = 7313
advertiser = 100
trigger = "hybrid"
post_view_minutes = 1440
post_click_minutes = 20160
currency = "EUR"
"#,
        data = common::fresh_dir().display(),
    )
}

impl Pixeld {
    fn start(sites: &Sites, extra_cookie: &str) -> Pixeld {
        Pixeld::start_with(sites, extra_cookie, Broker::start(), "")
    }

    /// On `broker`, with `tail` appended to the config.
    fn start_with(sites: &Sites, extra_cookie: &str, broker: Broker, tail: &str) -> Pixeld {
        let port = free_tcp_port();
        let dir = common::fresh_dir();
        let config = dir.join("pixeld.toml");
        let text = config_for(&broker.addr, port, sites, extra_cookie) + tail;
        std::fs::write(&config, text).unwrap();
        let process = Process::start(&config, port, &dir.join("pixeld.log"));
        Pixeld {
            process,
            broker,
            port,
            config,
        }
    }

    /// `pixeld tags` with `args`, as an ad-ops person would run it.
    fn tag(&self, args: &[&str]) -> String {
        let out = std::process::Command::new(common::pixeld_bin())
            .args(["tags", "--config"])
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Stops pixeld (everything answered is then in Kafka) and reads `topic`.
    fn events(&mut self, topic: &str) -> Vec<Consumed> {
        consume_all(
            &self.broker.addr,
            topic,
            Duration::from_millis(1500),
            Duration::from_secs(20),
        )
    }

    fn stop(&mut self) {
        assert_eq!(self.process.stop(), 0);
    }
}

/// The macros an ad server fills in when it serves the tag.
fn as_served(tag: &str, redirect: &str) -> String {
    tag.replace("[CACHEBUSTER]", "918273")
        .replace("[ANCOST]", "0.25")
        .replace("[REDIRECT_URL]", redirect)
}

fn page(body: &str) -> String {
    format!("<!doctype html><html><head><meta charset=\"utf-8\"><title>test</title></head><body>{body}</body></html>")
}

/// Waits until every image on the page has loaded or failed.
fn images_done(b: &Browser) {
    assert!(
        b.wait_for(
            "return Array.from(document.images).every(i => i.complete);",
            Duration::from_secs(10)
        ),
        "images did not finish"
    );
}

fn one_by_one_gif_loaded(b: &Browser) -> bool {
    b.run("const i = document.images[0]; return i.complete && i.naturalWidth === 1 && i.naturalHeight === 1;")
        == Value::Bool(true)
}

#[test]
fn the_exported_image_tag_fires_as_a_third_party_and_keeps_its_id_where_cookies_are_allowed() {
    let sites = Sites::start();
    let mut px = Pixeld::start(&sites, "");
    let tag = as_served(&px.tag(&["--tracker", "2766"]), "");
    assert!(tag.contains("http://localhost:"), "{tag}");
    sites.page("/article", page(&format!("<h1>News</h1>{tag}")));

    for mode in [ThirdPartyCookies::Allowed, ThirdPartyCookies::Default] {
        let b = Browser::start(mode);
        for _ in 0..2 {
            b.goto(&sites.publisher("/article"));
            images_done(&b);
            assert!(
                one_by_one_gif_loaded(&b),
                "{mode:?}: the pixel is a 1x1 GIF"
            );
        }
    }
    px.stop();
    let imps = px.events("pixel.impressions");
    assert_eq!(imps.len(), 4, "one event per page view");
    for e in &imps {
        common::assert_schema(&e.json);
        assert_eq!(e.json["user_agent"], CHROME_UA, "the browser's own agent");
        // Browsers send only the origin to another site
        // (`strict-origin-when-cross-origin`, the default policy).
        assert_eq!(e.json["referer"], sites.publisher("/"));
        assert_eq!(e.json["cachebuster"], "918273");
        assert_eq!(e.json["ancost_micros"], 250_000);
        assert_eq!(e.json["ivt"], Value::Null);
    }
    // Allowed: the second view brings the id back.
    assert_eq!(imps[0].json["new_uid"], true);
    assert_eq!(imps[1].json["new_uid"], false);
    assert_eq!(imps[0].json["uid"], imps[1].json["uid"]);
    // Chromium's default: the cookie is never sent to a third party, so
    // every view is a new id (the bounce, below, tells pixeld so).
    assert_eq!(imps[2].json["new_uid"], true);
    assert_eq!(imps[3].json["new_uid"], true);
    assert_ne!(imps[2].json["uid"], imps[3].json["uid"]);
}

#[test]
fn the_javascript_tag_fires_every_third_party_pixel_and_nothing_breaks_out() {
    let sites = Sites::start();
    let mut px = Pixeld::start(&sites, "");
    let tag = px.tag(&["--tracker", "2766", "--js"]);
    // An ad server that fills the cachebuster with something hostile: the
    // script pixeld answers carries nothing from the request.
    let hostile = "%22%3B%3C%2Fscript%3E%3Cscript%3Ewindow.pwned%3D1%3C%2Fscript%3E";
    let served = tag
        .replace("[CACHEBUSTER]", hostile)
        .replace("[ANCOST]", "0.25");
    sites.page(
        "/js-article",
        page(&format!(
            "<p id=\"before\">a</p>{served}<p id=\"after\">b</p>"
        )),
    );
    let b = Browser::start(ThirdPartyCookies::Allowed);
    b.goto(&sites.publisher("/js-article"));
    assert!(
        b.wait_for(
            "return performance.getEntriesByType('resource').filter(r => r.name.includes('catcher.test')).length >= 3;",
            Duration::from_secs(10)
        ),
        "the three third-party pixels fired"
    );
    assert_eq!(
        b.run("return window.pwned === undefined;"),
        Value::Bool(true)
    );
    assert_eq!(
        b.run("return document.getElementById('after') !== null && document.scripts.length >= 1;"),
        Value::Bool(true)
    );
    drop(b);
    px.stop();
    let imps = px.events("pixel.impressions");
    assert_eq!(imps.len(), 1);
    let uid = imps[0].json["uid"].as_str().unwrap().to_string();
    // The hostile cachebuster is printable text: recorded as given on the
    // event, and never written into the script.
    assert_eq!(
        imps[0].json["cachebuster"],
        "\";</script><script>window.pwned=1</script>"
    );
    let caught = sites.seen("catcher.test");
    let net = caught
        .iter()
        .find(|s| s.target.starts_with("/net.js"))
        .expect("network pixel");
    assert!(net.target.contains(&format!("&u={uid}")), "{}", net.target);
    let cb = net
        .target
        .split("cb=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    assert!(
        !cb.is_empty() && cb.bytes().all(|c| c.is_ascii_digit()),
        "{cb}"
    );
    let adv = caught
        .iter()
        .find(|s| s.target.starts_with("/adv.js"))
        .expect("advertiser pixel");
    assert_eq!(adv.target, format!("/adv.js?u={uid}"));
    let trk = caught
        .iter()
        .find(|s| s.target.starts_with("/trk.js"))
        .expect("tracker pixel");
    assert!(!trk.target.contains("${"), "{}", trk.target);
}

/// Clicks the ad on the publisher page, lands on the advertiser's page, then
/// buys on a second page of that site; returns the landing URL.
fn click_and_buy(b: &Browser, sites: &Sites, px: &Pixeld, conversion_tag: &str) -> String {
    click_and_buy_from(b, sites, px, conversion_tag, "")
}

/// [`click_and_buy`], the traffic source having put `source` (`&sclid=...`)
/// on the click tracker's URL, before its `redir`.
fn click_and_buy_from(
    b: &Browser,
    sites: &Sites,
    px: &Pixeld,
    conversion_tag: &str,
    source: &str,
) -> String {
    let link = px
        .tag(&["--click-tracker", "21378"])
        .replace("&redir=", &format!("{source}&redir="))
        .replace("[CACHEBUSTER]", "1")
        .replace("[ANCOST]", "0.5")
        // Encoded, as ad servers pass a landing URL with its own query and
        // fragment.
        .replace(
            "[REDIRECT_URL]",
            &common::encode_component(&sites.advertiser("/landing?utm=ad#top")),
        );
    let keeper = px.tag(&["--landing"]);
    sites.page(
        "/with-ad",
        page(&format!("<a id=\"ad\" href=\"{link}\">Autumn sale</a>")),
    );
    sites.page(
        "/landing",
        page(&format!(
            "<h1>Autumn sale</h1><a id=\"buy\" href=\"/checkout\">Buy</a>{keeper}"
        )),
    );
    sites.page(
        "/checkout",
        page(&format!("<h1>Thanks</h1>{conversion_tag}")),
    );
    b.goto(&sites.publisher("/with-ad"));
    b.click("#ad");
    assert!(
        b.wait_for(
            "return location.pathname === '/landing' && document.readyState === 'complete';",
            Duration::from_secs(10)
        ),
        "landed: {}",
        b.url()
    );
    let landing = b.url();
    b.click("#buy");
    assert!(b.wait_for(
        "return location.pathname === '/checkout' && document.readyState === 'complete';",
        Duration::from_secs(10)
    ));
    // The conversion pixel is fired by the page (image, or the script's
    // own request): wait for it to reach pixeld.
    assert!(
        b.wait_for(
            "return performance.getEntriesByType('resource').some(r => r.name.includes('/px?id=7313'));",
            Duration::from_secs(10)
        ),
        "the conversion pixel fired"
    );
    std::thread::sleep(Duration::from_millis(300));
    landing
}

fn the_record(px: &mut Pixeld) -> (Vec<Consumed>, Vec<Consumed>, Value) {
    let clicks = px.events("pixel.clicks");
    let conversions = px.events("pixel.conversions");
    let records = consume(&px.broker.addr, "pixel.attributions", 1);
    assert_eq!(records.len(), 1, "one record per conversion");
    common::assert_schema(&records[0].json);
    (clicks, conversions, records[0].json.clone())
}

#[test]
fn a_click_is_credited_through_the_cookie_where_third_party_cookies_are_allowed() {
    let sites = Sites::start();
    let mut px = Pixeld::start(&sites, "");
    let img = px.tag(&["--pixel", "7313"]);
    let b = Browser::start(ThirdPartyCookies::Allowed);
    let landing = click_and_buy(&b, &sites, &px, &img);
    assert!(
        landing.starts_with(&sites.advertiser("/landing?utm=ad&pxclid=")),
        "{landing}"
    );
    assert!(landing.ends_with("#top"), "the fragment is kept: {landing}");
    drop(b);
    px.stop();
    let (clicks, conversions, record) = the_record(&mut px);
    assert_eq!(clicks.len(), 1);
    assert_eq!(conversions.len(), 1);
    assert_eq!(
        clicks[0].json["uid"], conversions[0].json["uid"],
        "one browser, one id"
    );
    assert!(clicks[0].json["uid"].is_string());
    assert_eq!(record["kind"], "post_click");
    assert_eq!(record["matched_by"], "uid");
    assert_eq!(record["touch_event_id"], clicks[0].json["event_id"]);
}

#[test]
fn a_click_is_credited_through_the_click_id_with_chromiums_default_cookie_blocking() {
    let sites = Sites::start();
    let mut px = Pixeld::start(&sites, "");
    let script = px.tag(&["--pixel", "7313", "--js"]);
    let b = Browser::start(ThirdPartyCookies::Default);
    click_and_buy(&b, &sites, &px, &script);
    // The click id was kept in a first-party cookie of the advertiser's site.
    let kept = b.run("return document.cookie;");
    assert!(kept.as_str().unwrap().contains("_pxclid="), "{kept}");
    drop(b);
    px.stop();
    let (clicks, conversions, record) = the_record(&mut px);
    assert_ne!(
        clicks[0].json["uid"], conversions[0].json["uid"],
        "no third-party cookie: the two requests look like two people"
    );
    assert_eq!(
        conversions[0].json["click_id"]["event_id"],
        clicks[0].json["event_id"]
    );
    assert_eq!(record["attributed"], true);
    assert_eq!(record["kind"], "post_click");
    assert_eq!(record["matched_by"], "click_id");
    assert_eq!(record["touch_event_id"], clicks[0].json["event_id"]);
    assert_eq!(record["tracker_id"], 21378);
}

#[test]
fn a_view_is_credited_where_third_party_cookies_are_allowed_and_not_without_them() {
    let sites = Sites::start();
    let mut px = Pixeld::start(&sites, "");
    let imp = as_served(&px.tag(&["--tracker", "2766"]), "");
    let conv = px.tag(&["--pixel", "7313"]);
    sites.page("/seen", page(&imp));
    sites.page("/bought", page(&conv));
    for mode in [ThirdPartyCookies::Allowed, ThirdPartyCookies::Default] {
        let b = Browser::start(mode);
        b.goto(&sites.publisher("/seen"));
        images_done(&b);
        b.goto(&sites.advertiser("/bought"));
        images_done(&b);
        std::thread::sleep(Duration::from_millis(300));
    }
    px.stop();
    let imps = px.events("pixel.impressions");
    let records = consume(&px.broker.addr, "pixel.attributions", 2);
    assert_eq!(records.len(), 2);
    let allowed = &records[0].json;
    assert_eq!(allowed["kind"], "post_view");
    assert_eq!(allowed["matched_by"], "uid");
    assert_eq!(allowed["touch_event_id"], imps[0].json["event_id"]);
    // Without third-party cookies a view cannot be linked to a purchase on
    // another site: the honest answer is no_touch.
    let blocked = &records[1].json;
    assert_eq!(blocked["attributed"], false);
    assert_eq!(blocked["reason"], "no_touch");
}

#[test]
fn opting_out_in_the_browser_makes_later_pixels_anonymous_and_gpc_does_too() {
    let sites = Sites::start();
    let mut px = Pixeld::start(&sites, "");
    let imp = as_served(&px.tag(&["--tracker", "2766"]), "");
    let conv = px.tag(&["--pixel", "7313"]);
    sites.page("/seen", page(&imp));
    sites.page("/bought", page(&conv));
    let b = Browser::start(ThirdPartyCookies::Allowed);
    // Tracked first.
    b.goto(&sites.publisher("/seen"));
    images_done(&b);
    // The opt-out page, its button, as a person would.
    b.goto(&format!("http://localhost:{}/optout", px.port));
    b.click("button");
    assert!(b.wait_for(
        "return document.body.innerText.includes('opted out');",
        Duration::from_secs(10)
    ));
    b.goto(&sites.publisher("/seen"));
    images_done(&b);
    b.goto(&sites.advertiser("/bought"));
    images_done(&b);
    drop(b);
    // Global Privacy Control, sent by a second browser.
    let b = Browser::start(ThirdPartyCookies::Allowed);
    b.cdp("Network.enable", serde_json::json!({}));
    b.cdp(
        "Network.setExtraHTTPHeaders",
        serde_json::json!({ "headers": { "Sec-GPC": "1" } }),
    );
    b.goto(&sites.publisher("/seen"));
    images_done(&b);
    drop(b);
    std::thread::sleep(Duration::from_millis(300));
    px.stop();
    let imps = px.events("pixel.impressions");
    assert_eq!(imps.len(), 3);
    assert!(imps[0].json["uid"].is_string(), "before the opt-out");
    for e in &imps[1..] {
        assert_eq!(e.json["uid"], Value::Null, "{}", e.json);
        assert_eq!(e.json["ip"], Value::Null);
    }
    let records = consume(&px.broker.addr, "pixel.attributions", 1);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].json["attributed"], false);
    assert_eq!(records[0].json["reason"], "no_uid", "never attributed");
    // Consumers are told to forget the id that opted out.
    let optouts = px.events("pixel.segments");
    assert_eq!(optouts.len(), 1);
    assert_eq!(optouts[0].kind, "optout");
    assert_eq!(optouts[0].key, imps[0].json["uid"].as_str().unwrap());
    common::assert_schema(&optouts[0].json);
}

#[test]
fn the_cookie_bounce_tells_a_browser_that_refuses_cookies_from_a_new_one() {
    let sites = Sites::start();
    let mut px = Pixeld::start(&sites, "bounce = true");
    let tag = as_served(&px.tag(&["--tracker", "2766"]), "");
    sites.page("/article", page(&tag));
    for mode in [ThirdPartyCookies::Default, ThirdPartyCookies::Allowed] {
        let b = Browser::start(mode);
        for _ in 0..2 {
            b.goto(&sites.publisher("/article"));
            images_done(&b);
            assert!(one_by_one_gif_loaded(&b), "{mode:?}: still a 1x1 GIF");
        }
    }
    px.stop();
    let imps = px.events("pixel.impressions");
    assert_eq!(imps.len(), 4, "each view recorded once, never twice");
    // Chromium's default: the bounce came back without the cookie.
    for e in &imps[..2] {
        assert_eq!(e.json["uid"], Value::Null);
        assert_eq!(e.json["new_uid"], false);
        let w = e.json["warnings"].as_array().unwrap();
        assert!(w.contains(&"cookies_blocked".into()), "{w:?}");
    }
    // Allowed: an id from the bounce, and the same one the next time.
    assert_eq!(imps[2].json["new_uid"], true);
    assert_eq!(imps[3].json["new_uid"], false);
    assert!(imps[2].json["uid"].is_string());
    assert_eq!(imps[2].json["uid"], imps[3].json["uid"]);
}

/// Where attribution runs for [`a_browser_and_a_server_reporting_one_order_count_it_once`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    InProcess,
    /// Two `pixeld attribute` members.
    Cluster,
}

const SHOP_KEY: &str = "browser-shop-key-0123456789";

/// The shop's server reports the order the page's tag reported, with the
/// click id the landing URL carried: `POST /v1/conversions` on pixeld.
fn server_reports(port: u16, clid: &str, order: &str) -> String {
    let body = serde_json::json!({"conversions": [
        {"pixel_id": 7313, "clid": clid, "order_id": order, "value": "30"}
    ]})
    .to_string();
    let head = format!(
        "POST /v1/conversions HTTP/1.1\r\nHost: localhost:{port}\r\nAuthorization: Bearer {SHOP_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let out = common::raw_exchange(port, head.as_bytes()).unwrap_or_default();
    let answer: Value = serde_json::from_str(out.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(answer["results"][0]["status"], "accepted", "{answer}");
    answer["results"][0]["event_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A Chromium click lands with `pxclid`, the thank-you page's tag reports
/// order A77 (Chromium's default cookie blocking: the click id is all that
/// ties it to the click), and the shop's server reports A77 with that click
/// id: one sale, counted once, whichever engine decides.
fn a_browser_and_a_server_reporting_one_order_count_it_once(mode: Mode) {
    let _turn = common::cluster::turn();
    let sites = Sites::start();
    let broker = Broker::start_sqlite();
    let port = free_tcp_port();
    let mut text =
        config_for(&broker.addr, port, &sites, "").replace("partitions = 1", "partitions = 6");
    text.push_str(&format!(
        "\n[[api_keys]]\nid = \"browser-shop\"\nsecret = \"{SHOP_KEY}\"\nadvertisers = [100]\n"
    ));
    let member_text = |status: u16| {
        format!("{text}\n[attribution]\nmode = \"cluster\"\ncommit_interval_ms = 200\nlisten = \"127.0.0.1:{status}\"\n")
    };
    let dir = common::fresh_dir();
    let config = dir.join("pixeld.toml");
    let serve_text = match mode {
        Mode::InProcess => text.clone(),
        Mode::Cluster => member_text(free_tcp_port()),
    };
    std::fs::write(&config, &serve_text).unwrap();
    let process = Process::start(&config, port, &dir.join("pixeld.log"));
    // Ready means the topics exist (serve creates them): a member started
    // before that stops with "input topic(s) ... do not exist".
    assert!(
        process.wait_ready(200, Duration::from_secs(60)),
        "pixeld serve did not become ready"
    );
    let mut px = Pixeld {
        process,
        broker,
        port,
        config,
    };
    let _members: Vec<Member> = match mode {
        Mode::InProcess => Vec::new(),
        Mode::Cluster => (0..2)
            .map(|_| {
                let status = free_tcp_port();
                Member::start(&write_config(&member_text(status)), status)
            })
            .collect(),
    };
    let script = px
        .tag(&["--pixel", "7313", "--js"])
        .replace("/px?id=7313&t=1", "/px?id=7313&t=1&order_id=A77");
    let b = Browser::start(ThirdPartyCookies::Default);
    let landing = click_and_buy(&b, &sites, &px, &script);
    let clid = landing
        .split("pxclid=")
        .nth(1)
        .and_then(|rest| rest.split(['&', '#']).next())
        .unwrap_or_else(|| panic!("no pxclid in {landing}"))
        .to_string();
    let from_server = server_reports(port, &clid, "A77");
    drop(b);
    px.stop();

    let conversions = read_all(
        &px.broker.addr,
        "pixel.conversions",
        |r| r.len() >= 2,
        Duration::from_secs(30),
        Duration::from_secs(1),
    );
    assert_eq!(conversions.len(), 2, "{conversions:?}");
    let from_browser = conversions
        .iter()
        .map(|c| c.json())
        .find(|c| c["source"] == "browser")
        .expect("the page's conversion");
    assert_eq!(from_browser["order_id"], "A77");
    let ids = [
        from_browser["event_id"].as_str().unwrap().to_string(),
        from_server,
    ];
    let records = read_all(
        &px.broker.addr,
        "pixel.attributions",
        |r| {
            ids.iter().all(|id| {
                r.iter()
                    .any(|m| m.json()["conversion_event_id"] == id.as_str())
            })
        },
        Duration::from_secs(90),
        Duration::from_secs(2),
    );
    let verdict = |id: &str| {
        let mine: Vec<Value> = records
            .iter()
            .map(|m| m.json())
            .filter(|r| r["conversion_event_id"] == id)
            .collect();
        assert!(!mine.is_empty(), "no record for {id}: {records:?}");
        assert!(
            mine.iter().all(|r| *r == mine[0]),
            "one answer per conversion: {mine:?}"
        );
        common::assert_schema(&mine[0]);
        mine[0].clone()
    };
    let (browser, server) = (verdict(&ids[0]), verdict(&ids[1]));
    assert_eq!(browser["counted"], true, "{browser}");
    assert_eq!(browser["kind"], "post_click");
    assert_eq!(browser["matched_by"], "click_id");
    assert_eq!(server["counted"], false, "{server}");
    assert_eq!(server["reason"], "duplicate");
}

#[test]
fn a_browser_and_a_server_reporting_one_order_count_it_once_in_process() {
    a_browser_and_a_server_reporting_one_order_count_it_once(Mode::InProcess);
}

#[test]
fn a_browser_and_a_server_reporting_one_order_count_it_once_in_a_fleet_of_two_members() {
    a_browser_and_a_server_reporting_one_order_count_it_once(Mode::Cluster);
}

/// `pixeld forward` beside the browser's pixeld: a postback for the
/// traffic source, a Meta-shaped and a Google-shaped endpoint on the
/// tests' own catcher.
fn forward_tail(catcher: &Catcher, status: u16) -> String {
    format!(
        r#"
[forward]
listen = "127.0.0.1:{status}"
start_from = "earliest"
backoff_ms = 100
session_timeout_ms = 6000
[[destinations]]
id = "source"
kind = "postback"
url = "{base}/ok/pb?clickid=${{CLICK_ID}}&payout=${{VALUE}}&tx=${{ORDER_ID}}&status=${{STATUS}}"
pixels = [7313]
[[destinations]]
id = "meta"
kind = "meta_capi"
url = "{base}/ok/meta/events"
token = "meta-access-token-0123456789"
pixels = [7313]
[[destinations]]
id = "google"
kind = "google_ads_upload"
url = "{base}/ok/google/upload"
token = "google-oauth-token-0123456789"
conversion_action = "customers/1234567890/conversionActions/987654321"
pixels = [7313]
"#,
        base = catcher.url("")
    )
}

#[test]
fn a_traffic_sources_click_id_reaches_its_postback_once_with_the_value() {
    for mode in [ThirdPartyCookies::Allowed, ThirdPartyCookies::Default] {
        let sites = Sites::start();
        let catcher = Catcher::start();
        let status = free_tcp_port();
        let px = Pixeld::start_with(
            &sites,
            "",
            Broker::start_sqlite(),
            &forward_tail(&catcher, status),
        );
        let forward = Forward::start(&px.config, status);
        // The script form: without third-party cookies it carries the
        // click id the landing page kept, and the click is found by it.
        let script = px
            .tag(&["--pixel", "7313", "--js"])
            .replace("t=1", "t=1&order_id=B77&value=49.90");
        let b = Browser::start(mode);
        click_and_buy_from(&b, &sites, &px, &script, "&sclid=SRC-42.x");
        drop(b);
        catcher.wait("/ok/pb", Duration::from_secs(60), |c| !c.is_empty());
        // Once more after a second: a duplicate would show by then.
        std::thread::sleep(Duration::from_secs(1));
        let calls = catcher.caught("/ok/pb");
        assert_eq!(
            calls.len(),
            1,
            "{mode:?}: one call: {calls:?}\n{}",
            forward.log_text()
        );
        let c = &calls[0];
        assert_eq!(c.param("clickid").as_deref(), Some("SRC-42.x"), "{mode:?}");
        assert_eq!(c.param("payout").as_deref(), Some("49.9"));
        assert_eq!(c.param("tx").as_deref(), Some("B77"));
        assert_eq!(c.param("status").as_deref(), Some("approved"));
        assert_eq!(c.key().len(), 36, "an idempotency key");
        // Google gets nothing: that click carried no id of Google's. Meta
        // matches on the browser's address and agent: no fbc without an
        // fbclid.
        assert!(catcher.caught("/ok/google").is_empty());
        let meta = catcher.wait("/ok/meta", Duration::from_secs(30), |c| !c.is_empty());
        assert_eq!(meta.len(), 1, "{mode:?}: {meta:?}");
        let user = &meta[0].json()["data"][0]["user_data"];
        assert!(user.get("fbc").is_none(), "{user}");
        assert!(
            user["client_user_agent"].is_string() && user["client_ip_address"].is_string(),
            "{user}"
        );
    }
}

#[test]
fn a_meta_click_reaches_the_conversions_api_with_the_pixels_event_id_and_fbc() {
    let (mut px, catcher, _forward, c) = forwarded_purchase(
        "order_id=M1&value=20",
        "&fbclid=IwAR0xyz",
        "/ok/meta",
        "Bearer meta-access-token-0123456789",
    );
    px.stop();
    let conversions = px.events("pixel.conversions");
    let record = &consume(&px.broker.addr, "pixel.attributions", 1)[0].json;
    let body = c.json();
    let e = &body["data"][0];
    assert_eq!(
        e["event_id"], conversions[0].json["event_id"],
        "the browser pixel's own id"
    );
    assert_eq!(e["event_name"], "Purchase");
    assert_eq!(e["action_source"], "website");
    assert_eq!(
        e["event_time"],
        conversions[0].json["ts"].as_u64().unwrap() / 1000
    );
    assert_eq!(
        e["user_data"]["fbc"],
        format!("fb.1.{}.IwAR0xyz", record["touch_ts"].as_u64().unwrap())
    );
    assert_eq!(e["custom_data"]["value"], 20.0);
    assert_eq!(e["custom_data"]["currency"], "EUR");
    assert_eq!(e["custom_data"]["order_id"], "M1");
    // The browser as the conversion event recorded it (its address after
    // privacy.ip), carried by the attribution record.
    let conversion = &conversions[0].json;
    for (sent, recorded) in [
        (&e["user_data"]["client_user_agent"], "user_agent"),
        (&e["user_data"]["client_ip_address"], "ip"),
        (&e["event_source_url"], "referer"),
    ] {
        assert!(conversion[recorded].is_string(), "{recorded}: {conversion}");
        assert_eq!(sent, &conversion[recorded], "{recorded}");
    }
    assert_eq!(record["client_user_agent"], conversion["user_agent"]);
    assert_eq!(record["client_ip"], conversion["ip"]);
    assert_eq!(record["page_url"], conversion["referer"]);
    // The postback destination needs a click id of its own source: none here.
    assert!(catcher.caught("/ok/pb").is_empty());
}

#[test]
fn a_google_click_reaches_the_upload_with_its_gclid_time_zone_and_value() {
    let (mut px, catcher, _forward, c) = forwarded_purchase(
        "order_id=G1&value=75.5",
        "&gclid=Cj0KCQiA-test",
        "/ok/google",
        "Bearer google-oauth-token-0123456789",
    );
    px.stop();
    let conversions = px.events("pixel.conversions");
    let body = c.json();
    let up = &body["conversions"][0];
    assert_eq!(up["gclid"], "Cj0KCQiA-test");
    assert_eq!(
        up["conversion_action"],
        "customers/1234567890/conversionActions/987654321"
    );
    // "yyyy-mm-dd hh:mm:ss+00:00", the conversion's own time.
    let when = up["conversion_date_time"].as_str().unwrap();
    assert_eq!(when.len(), 25, "{when}");
    assert!(when.ends_with("+00:00"), "{when}");
    let ts = conversions[0].json["ts"].as_u64().unwrap() / 1000;
    let secs_of_day = ts % 86_400;
    let hms = format!(
        "{:02}:{:02}:{:02}",
        secs_of_day / 3600,
        secs_of_day / 60 % 60,
        secs_of_day % 60
    );
    assert_eq!(&when[11..19], hms, "{when}");
    assert_eq!(up["conversion_value"], 75.5);
    assert_eq!(up["currency_code"], "EUR");
    assert_eq!(up["order_id"], "G1");
    assert_eq!(body["partial_failure"], true);
    // The source's postback had no id of its own source; Meta matched on
    // the browser's address and agent, without an fbc.
    assert!(catcher.caught("/ok/pb").is_empty());
    let meta = catcher.wait("/ok/meta", Duration::from_secs(30), |c| !c.is_empty());
    assert_eq!(meta.len(), 1, "{meta:?}");
    assert!(meta[0].json()["data"][0]["user_data"].get("fbc").is_none());
}

/// A click whose landing URL carries `landing` (a source's click id) and a
/// purchase with the tag's `conversion` parameters, in Chromium, with
/// `pixeld forward` running: the one call caught at `path`, checked as a
/// JSON POST with the destination's `authorization`.
fn forwarded_purchase(
    conversion: &str,
    landing: &str,
    path: &str,
    authorization: &str,
) -> (Pixeld, Catcher, Forward, common::catcher::Caught) {
    let sites = Sites::start();
    let catcher = Catcher::start();
    let status = free_tcp_port();
    let px = Pixeld::start_with(
        &sites,
        "",
        Broker::start_sqlite(),
        &forward_tail(&catcher, status),
    );
    let forward = Forward::start(&px.config, status);
    let img = px
        .tag(&["--pixel", "7313"])
        .replace("t=2", &format!("t=2&{conversion}"));
    let b = Browser::start(ThirdPartyCookies::Allowed);
    click_and_buy_from(&b, &sites, &px, &img, landing);
    drop(b);
    let mut calls = catcher.wait(path, Duration::from_secs(60), |c| !c.is_empty());
    assert_eq!(calls.len(), 1, "{calls:?}\n{}", forward.log_text());
    let c = calls.remove(0);
    assert_eq!(c.method, "POST");
    assert_eq!(
        c.headers.get("authorization").map(String::as_str),
        Some(authorization)
    );
    assert_eq!(
        c.headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
    (px, catcher, forward, c)
}
