#!/usr/bin/env bash
# Server-side conversions per second on one core: wrk POSTs batches of
# BATCH items (100, then 1000) to /v1/conversions for SECONDS s each, every
# item with its own uid and order id (benches/load/api.lua). pixeld (journal
# durability, the in-process attribution engine beside it) is pinned to
# core 0; wrk and tansu (nice 19) to core 1. Prints items per second and
# pixeld's CPU per item (from /proc), and writes
# benches/results/api-DATE.json.
#
#   benches/load/api.sh [SECONDS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/../.."
. benches/load/common.sh
SECONDS_PER_RUN=${1:-10}
CONNECTIONS=${2:-8}
KEY=bench-key-0123456789abcdef
BIN=${CARGO_TARGET_DIR:-target}/release/pixeld

need_tools wrk:wrk
cargo build --release --locked -q --bin pixeld

setup_run
BROKER_PORT=$(free_port)
start_tansu "$BROKER_PORT" "$work/tansu.log"
results="$work/results.tsv"
: >"$results"
ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for batch in 100 1000; do
  dir="$work/batch-$batch"
  mkdir -p "$dir"
  pixeld_config "$dir/pixeld.toml" "$PORT" "$BROKER_PORT" "$dir/data" journal
  printf '\n[[api_keys]]\nid = "bench"\nsecret = "%s"\nadvertisers = [100]\n' "$KEY" >>"$dir/pixeld.toml"
  taskset -c 0 "$BIN" serve --config "$dir/pixeld.toml" 2>"$dir/pixeld.log" &
  SERVER=$!
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  before=$(cpu_ticks "$SERVER")
  BATCH=$batch API_KEY=$KEY taskset -c 1 wrk --latency -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" \
    -s benches/load/api.lua "http://127.0.0.1:$PORT/" >"$dir/wrk.txt"
  after=$(cpu_ticks "$SERVER")
  requests=$(awk '/requests in/ {print $1}' "$dir/wrk.txt")
  bad=$(awk '/^bad_answers/ {print $2}' "$dir/wrk.txt")
  p50=$(awk '/50%/ {print $2}' "$dir/wrk.txt")
  p99=$(awk '/99%/ {print $2}' "$dir/wrk.txt")
  kill -TERM "$SERVER"; wait "$SERVER" || true; SERVER=""
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$batch" "$requests" "$bad" "$(( after - before ))" "$p50" "$p99" >>"$results"
  echo "batch $batch: $requests requests ($bad bad answers), $(( after - before )) CPU ticks" >&2
done

mkdir -p benches/results
python3 - "$results" "$SECONDS_PER_RUN" "$CONNECTIONS" "$ticks" <<'PY'
import json, sys, datetime
path, secs, conns, ticks = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rows = []
for line in open(path):
    batch, req, bad, cpu, p50, p99 = line.rstrip("\n").split("\t")
    batch, req, bad, cpu = int(batch), int(req), int(bad), int(cpu)
    items = req * batch
    rows.append({"batch": batch, "requests": req, "bad_answers": bad, "items": items,
                 "items_per_second": items / secs, "cpu_seconds": cpu / ticks,
                 "cpu_us_per_item": cpu / ticks * 1e6 / items if items else None,
                 "latency_p50": p50, "latency_p99": p99})
out = {"date": datetime.date.today().isoformat(), "seconds": secs, "connections": conns,
       "command": f"benches/load/api.sh {secs} {conns}", "durability": "journal", "runs": rows}
name = f"benches/results/api-{out['date']}.json"
json.dump(out, open(name, "w"), indent=1)
print(f"{'batch':>6} {'items/s':>10} {'CPU µs/item':>12} {'p50':>9} {'p99':>9} {'bad':>4}")
for r in rows:
    print(f"{r['batch']:>6} {r['items_per_second']:>10,.0f} {r['cpu_us_per_item']:>12.2f} {r['latency_p50']:>9} {r['latency_p99']:>9} {r['bad_answers']:>4}")
print(f"written to {name}")
PY
