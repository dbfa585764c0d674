//! The redirect validator: whatever it accepts is an http(s) URL whose host
//! is on the allowlist, with nothing a browser or a header could read
//! differently.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pixeld::config::AllowList;

fuzz_target!(|data: &[u8]| {
    let Ok(url) = std::str::from_utf8(data) else {
        return;
    };
    let allow = AllowList::new(&["example.com", "*.example.com"]).unwrap();
    if allow.validate(url).is_ok() {
        assert!(
            !url.bytes().any(|b| b <= b' ' || b == b'\\' || b >= 0x7f),
            "{url:?}"
        );
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .expect("http(s)");
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        assert!(!authority.contains('@'), "{url:?}");
        let host = authority
            .rsplit_once(':')
            .map_or(authority, |(h, _)| h)
            .to_ascii_lowercase();
        assert!(
            host == "example.com" || host.ends_with(".example.com"),
            "{url:?}"
        );
    }
});
