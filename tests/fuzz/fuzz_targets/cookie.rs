//! The cookie reader: an id is trusted only when the header holds exactly
//! `uid=<32 lowercase hex>.<its tag under our secret>`; anything else gets a
//! fresh id or the opt-out.
#![no_main]

use hyper::header::{HeaderMap, HeaderValue, COOKIE};
use libfuzzer_sys::fuzz_target;
use pixeld::config::CookieConfig;
use pixeld::http::cookie::{Cookies, Identity, Secret};

/// The fuzzer may find the tag of one id (the seeds hold it), never forge one.
const SECRET: &str = "7e57c00c1e5ec7e77e57c00c1e5ec7e7";

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(COOKIE, value);
    let text = String::from_utf8_lossy(data).into_owned();
    let cfg = CookieConfig {
        secret: pixeld::config::Secret::parse(SECRET),
        ..CookieConfig::default()
    };
    let jar = Cookies::new(&cfg, Secret::generate());
    match jar.identify(&headers) {
        Identity::Known(uid) => {
            let value = jar.value(uid);
            let (plain, quoted) = (format!("uid={value}"), format!("uid=\"{value}\""));
            assert!(text.contains(&plain) || text.contains(&quoted), "{text:?}");
        }
        Identity::OptedOut => assert!(text.contains("OPTOUT")),
        Identity::Issued(uid) => assert!(!text.contains(&jar.value(uid))),
        Identity::Renewed(_) => panic!("no previous secrets are configured"),
        // Decided by the router (GPC, consent, the bounce), never by the cookie.
        Identity::Private | Identity::Unconsented | Identity::Refused => {
            panic!("identify never answers these")
        }
    }
});
