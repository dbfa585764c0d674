#!/usr/bin/env bash
# One `pixeld attribute` member end to end against a local tansu: how many
# inputs per second it consumes, decodes, orders, applies and answers (records
# and changelog produced, offsets committed), how long a fresh member takes to
# restore the state from the changelog, and the changelog's bytes per user.
#
#   benches/load/cluster.sh [USERS]       (default 200000)
#
# USERS users get an impression each, a click for one in two and a conversion
# for one in four (2.0 inputs per user with one in four converting), all an hour
# old, produced into the three input topics (6 partitions) before the member
# starts, each with the engine's input as a `pixeld-input` header beside the
# JSON as `pixeld serve` in cluster mode sends it (PIXELD_INPUT_HEADER=0: JSON
# only, so the member decodes the JSON). The member runs pinned to core 0; tansu (memory storage, nice 19)
# and the load tool on core 1. Prints one JSON object.
set -euo pipefail
cd "$(dirname "$0")/../.."
. benches/load/common.sh

USERS=${1:-200000}
need_tools taskset:util-linux curl:curl python3:python3
cargo build --release --locked --bin pixeld --example load-tool >&2
BIN=target/release/pixeld
TOOL=target/release/examples/load-tool

WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
BROKER_PORT=$(free_port)
start_tansu "$BROKER_PORT" "$WORK/tansu.log"
sleep 1
BROKERS="127.0.0.1:$BROKER_PORT"

PRODUCED=$(taskset -c 1 "$TOOL" inputs "$BROKERS" "$USERS")
echo "inputs: $PRODUCED" >&2
INPUTS=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['inputs'])" "$PRODUCED")
CONVERSIONS=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['conversions'])" "$PRODUCED")

STATUS_PORT=$(free_port)
pixeld_config "$WORK/pixeld.toml" "$(free_port)" "$BROKER_PORT" "$WORK/data" journal
sed -i -e "s|^mode = .*|mode = \"cluster\"|" \
  -e "/^\[attribution\]/,/^\[journal\]/ s|^listen = .*|listen = \"127.0.0.1:$STATUS_PORT\"|" "$WORK/pixeld.toml"

metric() { curl -s "http://127.0.0.1:$STATUS_PORT/metrics" | awk -v n="$1" 'index($0, n) == 1 { s += $NF } END { print s + 0 }'; }
cpu_seconds() { awk '{ print ($14 + $15) / 100 }' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
wait_ready() {
  for _ in $(seq 600); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$STATUS_PORT/readyz")" = 200 ] && return 0
    sleep 0.1
  done
  echo "member not ready; log:" >&2; cat "$1" >&2; exit 1
}

# Run 1: the whole backlog.
taskset -c 0 "$BIN" attribute --config "$WORK/pixeld.toml" 2>"$WORK/member1.log" &
MEMBER=$!
sleep 0.3
RSS_BASE=$(rss_kib $MEMBER)  # connecting: no state, no fetched data yet
wait_ready "$WORK/member1.log"
START=$(date +%s.%N)
CPU0=$(cpu_seconds $MEMBER)
while [ "$(metric 'attribution_cluster_produced_total{kind="attribution"}')" -lt "$CONVERSIONS" ]; do
  sleep 0.2
  kill -0 $MEMBER 2>/dev/null || { echo "member died:" >&2; cat "$WORK/member1.log" >&2; exit 1; }
done
END=$(date +%s.%N)
CPU1=$(cpu_seconds $MEMBER)
LATE=$(metric attribution_late_events_total)
kill -TERM $MEMBER; wait $MEMBER || true

CHANGELOG=$(taskset -c 1 "$TOOL" changelog "$BROKERS" pixel.attribution-state)
echo "changelog: $CHANGELOG" >&2

# Run 2: a fresh member of the same group restores all six partitions.
taskset -c 0 "$BIN" attribute --config "$WORK/pixeld.toml" 2>"$WORK/member2.log" &
MEMBER=$!
wait_ready "$WORK/member2.log"
RESTORE_CPU=$(cpu_seconds $MEMBER)
# Holding every user, with nothing left to fetch: what the state costs.
sleep 2
RSS_RESTORED=$(rss_kib $MEMBER)
kill -TERM $MEMBER; wait $MEMBER || true

python3 - "$INPUTS" "$CONVERSIONS" "$START" "$END" "$CPU0" "$CPU1" "$LATE" "$CHANGELOG" "$WORK/member2.log" "$USERS" "$RESTORE_CPU" "$RSS_BASE" "$RSS_RESTORED" <<'EOF'
import json, os, re, sys
inputs, conversions = int(sys.argv[1]), int(sys.argv[2])
wall = float(sys.argv[4]) - float(sys.argv[3])
cpu = float(sys.argv[6]) - float(sys.argv[5])
changelog = json.loads(sys.argv[8])
users = restore_ms = 0
for line in open(sys.argv[9]):
    m = re.search(r'partition restored .*users=(\d+) .*ms=(\d+)', re.sub(r'\x1b\[[0-9;]*m', '', line))
    if m:
        users += int(m.group(1)); restore_ms += int(m.group(2))
print(json.dumps({
    "users": int(sys.argv[10]), "input_header": os.environ.get("PIXELD_INPUT_HEADER") != "0", "inputs": inputs, "conversions": conversions,
    "wall_seconds": round(wall, 2), "inputs_per_second": round(inputs / wall),
    "member_cpu_seconds": round(cpu, 2), "inputs_per_cpu_second": round(inputs / cpu) if cpu else None,
    "late": float(sys.argv[7]),
    "changelog_messages": changelog["messages"], "changelog_keys": changelog["keys"],
    "changelog_bytes_per_user": round(changelog["bytes"] / max(changelog["keys"], 1), 1),
    "restored_users": users, "restore_seconds": round(restore_ms / 1000, 2),
    "restore_seconds_per_million_users": round(restore_ms / 1000 / max(users, 1) * 1e6, 2),
    "restore_member_cpu_seconds": float(sys.argv[11]),
    "restored_member_rss_bytes_per_user": round((int(sys.argv[13]) - int(sys.argv[12])) * 1024 / int(sys.argv[10]), 1),
}))
EOF
