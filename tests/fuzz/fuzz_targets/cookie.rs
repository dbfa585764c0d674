//! The cookie reader: an id is trusted only when the header holds exactly
//! `uid=<32 lowercase hex>`; anything else gets a fresh id or the opt-out.
#![no_main]

use hyper::header::{HeaderMap, HeaderValue, COOKIE};
use libfuzzer_sys::fuzz_target;
use pixeld::config::CookieConfig;
use pixeld::http::cookie::{Cookies, Identity};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(COOKIE, value);
    let text = String::from_utf8_lossy(data).into_owned();
    match Cookies::new(&CookieConfig::default()).identify(&headers) {
        Identity::Known(uid) => {
            let hex = uid.to_hex();
            let (plain, quoted) = (
                format!("uid={}", hex.as_str()),
                format!("uid=\"{}\"", hex.as_str()),
            );
            assert!(text.contains(&plain) || text.contains(&quoted), "{text:?}");
        }
        Identity::OptedOut => assert!(text.contains("OPTOUT")),
        Identity::Issued(_) | Identity::Private => {}
    }
});
