#!/usr/bin/env bash
# Runs pixeld on the example config. With no kafka.brokers it starts the
# embedded in-memory Kafka and logs a kcat command to watch the events.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
exec cargo run --release --locked -- serve "$@"
