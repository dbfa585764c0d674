#!/usr/bin/env bash
# Where pixeld's CPU goes under load: the scale runs' layout (pixeld on
# cores 0..N-1, wrk with benches/load/mix.lua, tansu at nice 19), then
#   - CPU per request of every thread (from /proc, as compare.sh), and
#   - a `perf record` of the server (cpu-clock sampling: this machine's VM
#     has no hardware counters) reported by thread and by function.
# N = 2 on a 2-core machine shares the cores with wrk (CPU per request is
# still the server's own).
#
#   benches/load/profile.sh [WORKERS] [SECONDS]       e.g. 1 10
# Writes the report to target/profile-N.txt (samples: target/perf-N.data)
# and prints it. PIXELD_BIN=path profiles another build (an older commit's,
# for a before-and-after).
set -euo pipefail
cd "$(dirname "$0")/../.."
. benches/load/common.sh
N=${1:-1}
SECS=${2:-10}
need_tools wrk:wrk perf:linux-perf
cargo build --release --locked -q --bin pixeld --example load-tool
setup_run
cookies "$work/cookies.txt"
last=$(( $(nproc) - 1 ))
if [ "$N" -le "$last" ]; then WRK_CORES=$N-$last; else WRK_CORES=0-$last; fi
BROKER_PORT=$(free_port)
start_tansu "$BROKER_PORT" "$work/tansu.log"
pixeld_config "$work/pixeld.toml" "$PORT" "$BROKER_PORT" "$work/data" "${DURABILITY:-journal}"
sed -i -e "s|^admin_listen = .*|admin_listen = \"127.0.0.1:$(free_port)\"|" "$work/pixeld.toml"
taskset -c "0-$((N - 1))" "${PIXELD_BIN:-target/release/pixeld}" serve --config "$work/pixeld.toml" 2>"$work/pixeld.log" &
SERVER=$!
for _ in $(seq 1 200); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/readyz" && break; sleep 0.05; done
drive() { taskset -c "$WRK_CORES" wrk -t1 -c64 -d"${1}s" -s benches/load/mix.lua "http://127.0.0.1:$PORT" | sed -n 's/^RESULT //p'; }
threads() {
  for t in /proc/"$SERVER"/task/*; do
    printf '%s %s\n' "$(tr ' ' '_' <"$t/comm")" "$(awk '{print $14+$15}' "$t/stat")"
  done 2>/dev/null | awk '{a[$1]+=$2} END {for (k in a) print k, a[k]}'
}
drive 2 >/dev/null
threads >"$work/before"
perf record -q -e cpu-clock -F 2999 -g -p "$SERVER" -o "$work/perf.data" -- sleep "$SECS" 2>/dev/null &
PERF=$!
out=$(drive "$SECS")
wait "$PERF" || true
threads >"$work/after"
report=target/profile-$N.txt
cp "$work/perf.data" "target/perf-$N.data"
set +o pipefail # `head` ends the reports early
{
  python3 - "$work/before" "$work/after" "$out" "$(getconf CLK_TCK)" "$N" <<'PY'
import json, sys
b = dict(l.split() for l in open(sys.argv[1])); a = dict(l.split() for l in open(sys.argv[2]))
w = json.loads(sys.argv[3]); tck = int(sys.argv[4])
per = {k: (int(v) - int(b.get(k, 0))) / tck * 1e6 / w["requests"] for k, v in a.items()}
print(f"workers {sys.argv[5]}: {w['requests']/w['seconds']:,.0f} req/s, CPU per request {sum(per.values()):.2f} µs")
for k, v in sorted(per.items(), key=lambda kv: -kv[1]):
    if v > 0.005: print(f"  {k:<20} {v:6.2f} µs")
PY
  echo; echo "== perf: share of samples by thread"
  perf report -i "$work/perf.data" --no-children --sort comm --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -12
  echo; echo "== perf: top functions (self)"
  perf report -i "$work/perf.data" --no-children --sort sym --stdio -g none 2>/dev/null | grep -E '^ +[0-9]' | head -${TOP:-60}
  # Serving threads are serve-N (tokio-rt-worker before they had runtimes of their own).
  echo; echo "== perf: request threads (serve-N, or tokio-rt-worker) only, top functions"
  comms=$(perf report -i "$work/perf.data" --no-children --sort comm --stdio 2>/dev/null \
    | awk '$2 ~ /^(serve-[0-9]+|tokio-rt-worker)$/ {print $2}' | paste -sd,)
  perf report -i "$work/perf.data" --comm "${comms:-tokio-rt-worker}" --no-children --sort sym --stdio -g none 2>/dev/null | grep -E '^ +[0-9]' | head -${TOP:-60}
} | tee "$report"
