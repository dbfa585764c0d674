//! The query parser: never panics, and `redir` is exactly the raw tail after
//! the first `redir=` key, decoded at most once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pixeld::pixel::query::{decode, Key, Param, Query};

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(q) = Query::parse(raw, 8192) else {
        assert!(raw.len() > 8192);
        return;
    };
    // Reference: pairs from the left; the first starting `redir=` takes the rest.
    let mut want = None;
    let mut at = 0;
    loop {
        let rest = &raw[at..];
        let end = rest.find('&').unwrap_or(rest.len());
        if rest[..end].starts_with("redir=") {
            want = Some(&rest[6..]);
            break;
        }
        if end == rest.len() {
            break;
        }
        at += end + 1;
    }
    assert_eq!(q.raw_redir(), want);
    if let (Param::Present(v), Some(tail)) = (q.redir(), q.raw_redir()) {
        let once = decode(tail, false).ok();
        assert!(v == tail || once.as_deref() == Some(v.as_ref()));
    }
    for key in [
        Key::Id,
        Key::Cachebuster,
        Key::Ancost,
        Key::T,
        Key::OrderId,
        Key::Value,
        Key::Other,
        Key::Add,
    ] {
        let _ = q.param(key);
    }
});
