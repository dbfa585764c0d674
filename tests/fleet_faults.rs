//! The fault campaign (benches/faults/cluster.sh, GitHub issue 21) with one
//! cycle of each fault: kill -9, SIGSTOP past the session timeout, a member
//! joining and leaving, SIGTERM, a broker restart on its storage. Every
//! conversion must get a record, no two records of one conversion may
//! differ, and every record must be the single-node engine's.
//!
//! A test binary of its own (`harness = false`): integration tests are not
//! handed the examples' binaries, and a `cargo build` from inside `cargo
//! test` would wait for the build directory's lock, so this binary is also
//! the campaign's checker: the script runs it as `CHECKER fleet-load ...`
//! and `CHECKER fleet-check ...`.

#[path = "../benches/load/tool/fleet/mod.rs"]
mod fleet;

use std::process::{Command, Stdio};

const NAME: &str = "five_faults_one_cycle_each_lose_no_record_and_change_no_answer";
const FAULTS: [&str; 5] = ["kill9", "stop", "join", "term", "broker"];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some((command, rest)) = args.split_first() {
        if fleet::run(command, rest) {
            return;
        }
    }
    // What the libtest harness would do with these arguments: list the
    // test, or skip it when a name filter does not match.
    if args.iter().any(|a| a == "--list") {
        println!("{NAME}: test");
        return;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if !filters.is_empty() && !filters.iter().any(|f| NAME.contains(f.as_str())) {
        println!("running 0 tests");
        return;
    }
    println!("running 1 test");
    campaign();
    println!("test {NAME} ... ok");
}

fn campaign() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash")
        .arg(format!("{root}/benches/faults/cluster.sh"))
        .arg("5")
        .env(
            "PIXELD",
            std::env::var_os("PIXELD_TEST_BIN")
                .unwrap_or_else(|| env!("CARGO_BIN_EXE_pixeld").into()),
        )
        .env("CHECKER", std::env::current_exe().expect("this binary"))
        .current_dir(root)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("bash runs the campaign");
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    assert!(out.status.success(), "the campaign failed: {}", out.status);
    for fault in FAULTS {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("fault={fault} ")))
            .unwrap_or_else(|| panic!("no line for fault {fault}"));
        for field in ["missing", "disagreeing", "wrong"] {
            assert!(line.contains(&format!(" {field}=0 ")), "{line}");
        }
        assert!(!line.contains(" conversions=0 "), "no load: {line}");
    }
}
