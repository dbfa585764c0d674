#!/usr/bin/env bash
# Throughput and latency of pixeld in each durability mode, side by side in
# one run: memory, journal, fsync, alternating for ROUNDS rounds of SECONDS s,
# driven with the request mix of benches/load/mix.lua (wrk -t1 -c64).
# pixeld is pinned to core 0; wrk and the tansu broker (nice 19) to core 1.
# Prints a table and writes benches/results/durability-DATE.json.
#
#   benches/load/durability.sh [ROUNDS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
. benches/load/common.sh
ROUNDS=${1:-3}
SECONDS_PER_RUN=${2:-10}
CONNECTIONS=${CONNECTIONS:-64}

need_tools wrk:wrk
cargo build --release --locked -q --bin pixeld --example load-tool

work=$(mktemp -d)
cookies "$work/cookies.txt" # the request mix of the load comparison
BROKER_PORT=$(free_port)
PORT=$(free_port)
start_tansu "$BROKER_PORT" "$work/tansu.log"
PIXELD=""
cleanup() {
  local status=$?
  [ -n "$PIXELD" ] && kill "$PIXELD" 2>/dev/null
  kill "$TANSU" 2>/dev/null
  wait 2>/dev/null || true
  remove_work "$status" "$work"
}
trap cleanup EXIT

results="$work/results.tsv"
: >"$results"
for round in $(seq 1 "$ROUNDS"); do
  for mode in memory journal fsync; do
    dir="$work/$mode-$round"
    mkdir -p "$dir"
    pixeld_config "$dir/pixeld.toml" "$PORT" "$BROKER_PORT" "$dir/data" "$mode"
    taskset -c 0 target/release/pixeld serve --config "$dir/pixeld.toml" 2>"$dir/pixeld.log" &
    PIXELD=$!
    for _ in $(seq 1 100); do
      curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
      sleep 0.1
    done
    taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d2s -s benches/load/mix.lua "http://127.0.0.1:$PORT" >/dev/null
    out=$(taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" --latency -s benches/load/mix.lua "http://127.0.0.1:$PORT")
    kill -TERM "$PIXELD"; wait "$PIXELD" || true; PIXELD=""
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p50=$(echo "$out" | awk '$1=="50%" {print $2}')
    p99=$(echo "$out" | awk '$1=="99%" {print $2}')
    errors=$(echo "$out" | awk '/Non-2xx or 3xx/ {print $NF}')
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$round" "$rps" "$p50" "$p99" "${errors:-0}" >>"$results"
    echo "round $round $mode: $rps req/s, p50 $p50, p99 $p99" >&2
  done
done

mkdir -p benches/results
python3 - "$results" "$ROUNDS" "$SECONDS_PER_RUN" "$CONNECTIONS" <<'PY'
import json, statistics, sys, datetime, os
path, rounds, secs, conns = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def ms(v):
    v = v.strip()
    for unit, f in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if v.endswith(unit):
            return float(v[: -len(unit)]) * f
    return float(v)
rows = [l.rstrip("\n").split("\t") for l in open(path) if l.strip()]
table = {}
for mode, rnd, rps, p50, p99, errors in rows:
    t = table.setdefault(mode, {"rps": [], "p50_ms": [], "p99_ms": [], "errors": 0})
    t["rps"].append(float(rps)); t["p50_ms"].append(ms(p50)); t["p99_ms"].append(ms(p99)); t["errors"] += int(errors)
summary = {m: {"median_rps": statistics.median(v["rps"]), "median_p50_ms": statistics.median(v["p50_ms"]),
               "median_p99_ms": statistics.median(v["p99_ms"]), "non_2xx_3xx": v["errors"], "runs": v["rps"]} for m, v in table.items()}
base = summary["memory"]["median_rps"]
print(f"{'mode':8} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'vs memory':>10}")
for m in ("memory", "journal", "fsync"):
    s = summary[m]
    print(f"{m:8} {s['median_rps']:>10.0f} {s['median_p50_ms']:>8.2f} {s['median_p99_ms']:>8.2f} {s['median_rps']/base:>9.2f}x")
date = datetime.date.today().isoformat()
out = {"date": date, "cores": os.cpu_count(), "rounds": rounds, "seconds": secs, "connections": conns,
       "command": f"benches/load/durability.sh {rounds} {secs}", "modes": summary}
with open(f"benches/results/durability-{date}.json", "w") as f:
    json.dump(out, f, indent=2)
print(f"written benches/results/durability-{date}.json")
PY
