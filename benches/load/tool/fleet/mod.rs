//! The fault campaign's helpers (benches/faults/cluster.sh), shared by
//! `load-tool` and tests/fleet_faults.rs (whose binary is the campaign's
//! checker, as integration tests are not handed the examples' binaries):
//!
//!   fleet-load --a PORT --b PORT --secret HEX --log FILE --stop FILE [--rate USERS_PER_S]
//!       new users at a steady rate: touches on serve A, purchases on B a
//!       second later; every request logged; ends once FILE exists and the
//!       last purchases went out
//!   fleet-check --brokers B --config FILE --cycles FILE --sent FILE --cycle K
//!               --details FILE [--wait SECONDS]
//!       waits for cycle K's records to settle, compares them with the
//!       single-node engine's and prints `fault=NAME conversions=N missing=M
//!       disagreeing=D wrong=W ...`

mod args;
mod check;
mod consume;
mod http;
mod load;
mod reference;
mod seen;
mod sent;
mod verdict;
mod windows;

pub const USAGE: &str = "usage: fleet-load --a PORT --b PORT --secret HEX --log FILE --stop FILE [--rate N] | fleet-check --brokers B --config FILE --cycles FILE --sent FILE --cycle K --details FILE [--wait S]";

/// Runs `command` if it is one of the campaign's; false if it is not.
pub fn run(command: &str, rest: &[String]) -> bool {
    match command {
        "fleet-load" => load::run(&args::Args::parse(rest)),
        "fleet-check" => check::run(&args::Args::parse(rest)),
        _ => return false,
    }
    true
}
