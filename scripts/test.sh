#!/usr/bin/env bash
# The test command: installs what the tests need on a fresh machine (system
# packages, the tansu broker), then runs every test. Each integration test
# starts its own tansu broker on a free port.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian's Chromium and its ChromeDriver (tests/browser.rs drives them),
# Prometheus and promtool (tests/deploy.rs), systemd-analyze (the unit),
# python3-venv for scripts/kafka.sh (noida-db from PyPI: tests/transactions.rs).
scripts/deps.sh chromium chromium-driver prometheus systemd curl python3-venv
scripts/tansu.sh
export PATH="$HOME/.cargo/bin:$PATH"

# A CI run builds once: incremental state would only take disk (1.8 GiB of a
# clean build's 7.9), and a CI machine once ran out of it while linking.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi
free_kib=$(df -k --output=avail . | tail -1 | tr -d ' ')
echo "disk free before the build: $((free_kib / 1024 / 1024)) GiB"
if [ "$free_kib" -lt $((4 * 1024 * 1024)) ]; then
  echo "warning: the build and test run need about 4 GiB free here; a full disk shows as a linker crash (SIGBUS) or ENOSPC" >&2
fi

# Style and lints first: they fail in seconds, before the long suite.
rustup component add rustfmt clippy >/dev/null 2>&1 || true
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings

# Each fuzz target runs briefly as a smoke test (properties included).
scripts/fuzz.sh "${FUZZ_SECONDS:-30}"
# The fuzz build (1.4 GiB) is not used again in a CI run.
if [ "${CI:-}" = true ]; then rm -rf tests/fuzz/target; fi

# --no-fail-fast: one failing test binary must not hide the others' results.
cargo test --all-targets --locked --no-fail-fast
