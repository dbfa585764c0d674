#!/usr/bin/env bash
# Public /imptr throughput with and without a flood of POST /-/reload on the
# admin listener (issue 25: with each reload run on a shared worker behind a
# mutex, 26k req/s fell to 167 req/s). Side by side in one run: wrk on
# /imptr (64 connections) for SECONDS s alone, then again while a second wrk
# sends reloads on 64 connections of its own. pixeld is pinned to core 0;
# both wrk and tansu (nice 19) to core 1. Prints both rates, their ratio,
# and how many reloads the flood's requests actually ran
# (config_reloads_total): coalesced, they are far fewer. Not a test: the
# figures depend on the machine; tests/hostile3.rs checks the behaviour.
#
#   benches/load/reload_flood.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
. benches/load/common.sh
SECONDS_PER_RUN=${1:-10}
UA="Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36"

need_tools wrk:wrk
cargo build --release --locked -q --bin pixeld

setup_run
BROKER_PORT=$(free_port)
ADMIN_PORT=$(free_port)
start_tansu "$BROKER_PORT" "$work/tansu.log"
pixeld_config "$work/pixeld.toml" "$PORT" "$BROKER_PORT" "$work/data" journal
sed -i "s|^admin_listen = .*|admin_listen = \"127.0.0.1:$ADMIN_PORT\"|" "$work/pixeld.toml"
taskset -c 0 target/release/pixeld serve --config "$work/pixeld.toml" 2>"$work/pixeld.log" &
SERVER=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done

# wrk sends Host: 127.0.0.1:PORT, the admin listener's own address; the
# content type is what an operator's script sends (a page cannot).
cat >"$work/reload.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
LUA
rate() { awk '/Requests\/sec/ {print int($2)}' "$1"; }
reloads() {
  curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" |
    awk '$1 ~ /^config_reloads_total/ {s+=$2} END {print s+0}'
}
imptr() {
  taskset -c 1 wrk -t1 -c64 -d"${SECONDS_PER_RUN}s" -H "User-Agent: $UA" \
    "http://127.0.0.1:$PORT/imptr?id=2766&cachebuster=1&ancost=0.1" >"$1"
}

imptr "$work/alone.txt"
before=$(reloads)
taskset -c 1 wrk -t1 -c64 -d"$((SECONDS_PER_RUN + 2))s" -s "$work/reload.lua" \
  "http://127.0.0.1:$ADMIN_PORT/-/reload" >"$work/flood.txt" &
FLOOD=$!
sleep 1 # the flood is under way before the second measurement starts
imptr "$work/flooded.txt"
wait "$FLOOD"
after=$(reloads)

alone=$(rate "$work/alone.txt")
flooded=$(rate "$work/flooded.txt")
answered=$(awk '/requests in/ {print $1}' "$work/flood.txt")
echo "imptr alone:                  $alone req/s"
echo "imptr under the reload flood: $flooded req/s ($(awk -v a="$alone" -v f="$flooded" 'BEGIN {printf "%.0f", 100 * f / a}')% of alone)"
echo "reload requests answered:     $answered in $((SECONDS_PER_RUN + 2)) s; reloads run: $((after - before))"
