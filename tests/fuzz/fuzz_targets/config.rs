//! The config loader: any text is either a valid config or a list of
//! problems, each naming where it is; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = pixeld::config::parse(text, "fuzz.toml") {
        assert!(!e.problems.is_empty());
        for p in &e.problems {
            assert!(!p.message.is_empty());
        }
    }
});
