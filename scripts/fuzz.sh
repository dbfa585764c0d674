#!/usr/bin/env bash
# Runs each fuzz target (tests/fuzz) for SECONDS (default 30) from its seeds;
# fails on the first crash or broken property, printing the reproducer.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     targets: query redirect cookie config pixel
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${1:-30}
shift || true
TARGETS=${*:-query redirect cookie config pixel}
export PATH="$HOME/.cargo/bin:$PATH"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --version 0.13.2 --locked
# libFuzzer's coverage instrumentation needs -Z flags and this machine has only
# a stable toolchain; ASan is left out (--sanitizer none): the code is safe Rust,
# and the C libraries it links would not build under it.
export RUSTC_BOOTSTRAP=1
work=$(mktemp -d)
for t in $TARGETS; do
  mkdir -p "$work/$t"
  cp tests/fuzz/seeds/"$t"/* "$work/$t/"
  if cargo fuzz run --sanitizer none "$t" --fuzz-dir tests/fuzz "$work/$t" -- \
      -max_total_time="$SECONDS_PER_TARGET" -artifact_prefix="$work/$t-" >"$work/$t.log" 2>&1; then
    echo "fuzz $t: $(grep -E '^Done' "$work/$t.log")"
  else
    echo "fuzz $t: FAILED (log: $work/$t.log)"
    grep -v '^#' "$work/$t.log" | tail -40
    exit 1
  fi
done
