#!/usr/bin/env bash
# Kafka delivery's CPU per event, without HTTP: `load-tool ship` journals N
# impressions, then pixeld's shipper and producer deliver them to a local
# tansu broker; the process's CPU meanwhile (shipper, librdkafka's threads,
# delivery reports), per event and per thread. The tool runs on core 0, the
# broker (memory storage, nice 19) on core 1. ROUNDS runs per compression.
# BEFORE=path/to/an/older/load-tool alternates it with this build, same
# broker, same rounds (a before/after in one run). COMPRESSIONS="lz4 none"
# by default; e.g. COMPRESSIONS="none lz4 zstd" compares all three.
#
#   benches/load/ship.sh [N] [ROUNDS]          e.g. 500000 3
# Writes benches/results/ship-DATE.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
. benches/load/common.sh
N=${1:-500000}
ROUNDS=${2:-3}
COMPRESSIONS=${COMPRESSIONS:-lz4 none}
need_tools
cargo build --release --locked -q --example load-tool
setup_run
builds="now=target/release/examples/load-tool"
[ -n "${BEFORE:-}" ] && builds="before=$BEFORE $builds"
results="$work/ship.jsonl"; : >"$results"
for round in $(seq 1 "$ROUNDS"); do
  for compression in $COMPRESSIONS; do
    for b in $builds; do
      # A fresh broker per run: every run produces to an empty topic.
      BROKER_PORT=$(free_port)
      start_tansu "$BROKER_PORT" "$work/tansu.log"
      sleep 0.5
      out=$(taskset -c 0 "${b#*=}" ship "127.0.0.1:$BROKER_PORT" "$N" "$compression")
      kill "$TANSU"; wait "$TANSU" 2>/dev/null || true; TANSU=""
      echo "{\"build\":\"${b%%=*}\",\"round\":$round,\"run\":$out}" | tee -a "$results" >&2
    done
  done
done
mkdir -p benches/results
python3 - "$results" "$N" "$ROUNDS" <<'PY'
import json, statistics, sys, datetime, os
path, n, rounds = sys.argv[1:]
rows = [json.loads(l) for l in open(path)]
table = {}
for r in rows:
    key = (r["build"], r["run"]["compression"])
    table.setdefault(key, []).append(r["run"])
med = {f"{b}/{c}": {"cpu_us_per_event": statistics.median(x["cpu_us_per_event"] for x in rs),
                    "events_per_second": statistics.median(x["events_per_second"] for x in rs),
                    "threads": {t: statistics.median(x["threads"].get(t, 0) for x in rs)
                                for t in sorted({t for x in rs for t in x["threads"]})}}
       for (b, c), rs in sorted(table.items())}
env = " ".join(f'{k}="{os.environ[k]}"' for k in ("COMPRESSIONS", "BEFORE") if os.environ.get(k))
doc = {"date": datetime.date.today().isoformat(), "cores": os.cpu_count(),
       "command": f"{env} benches/load/ship.sh {n} {rounds}".strip(), "events": int(n), "median": med, "runs": rows}
out = f"benches/results/ship-{doc['date']}.json"
json.dump(doc, open(out, "w"), indent=1)
print(f"\n{doc['date']}: Kafka delivery, {n} events, median of {rounds}")
for k, m in med.items():
    threads = "  ".join(f"{t} {v:.2f}" for t, v in m["threads"].items() if v >= 0.01)
    print(f"{k:<12} {m['cpu_us_per_event']:5.2f} µs/event  {m['events_per_second']:>9,.0f} events/s   {threads}")
print(f"written to {out}")
PY
