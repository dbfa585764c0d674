#!/usr/bin/env bash
# Before/after: this tree's pixeld against an earlier commit's, alternated in
# one run under the same conditions (same request mix, the server on core 0,
# wrk and a fresh tansu broker at nice 19 on core 1, durability = journal,
# attribution on), so that a change's cost is not lost in the machine's
# run-to-run noise. Each side serves its own commit's example config.
# Prints req/s and CPU per request (from /proc) per round, the medians and
# the new/old ratios; writes benches/results/ab-DATE.json.
#
#   benches/load/ab.sh REV [ROUNDS] [SECONDS]     e.g. benches/load/ab.sh 579a988 3 10
set -euo pipefail
cd "$(dirname "$0")/../.."
. benches/load/common.sh
REV=${1:?usage: benches/load/ab.sh REV [ROUNDS] [SECONDS]}
ROUNDS=${2:-3}
SECONDS_PER_RUN=${3:-10}
CONNECTIONS=${CONNECTIONS:-64}

need_tools wrk:wrk
cargo build --release --locked -q --bin pixeld --example load-tool
# The old commit, built once into its own target directory.
base="target/ab/$REV"
if [ ! -d "$base/src" ]; then
  mkdir -p "$base"
  git worktree add -f --detach "$base/src" "$REV" >/dev/null
fi
if [ ! -x "$base/target/release/pixeld" ]; then
  (cd "$base/src" && CARGO_TARGET_DIR="$PWD/../target" cargo build --release --locked -q --bin pixeld)
fi

setup_run
cookies "$work/cookies.txt"

# run SIDE ROUND: one measured run; prints "SIDE ROUND req/s cpu_us_per_request".
run() {
  local side=$1 dir="$work/$1-$2" bin conf_src
  mkdir -p "$dir"
  if [ "$side" = old ]; then bin="$base/target/release/pixeld"; conf_src="$base/src/config/pixeld.toml"
  else bin="target/release/pixeld"; conf_src="config/pixeld.toml"; fi
  local broker; broker=$(free_port)
  start_tansu "$broker" "$dir/tansu.log"
  sed -e "s|^listen = .*|listen = \"127.0.0.1:$PORT\"|" \
      -e "s|^brokers = .*|brokers = \"127.0.0.1:$broker\"|" \
      -e "s|^data_dir = .*|data_dir = \"$dir/data\"|" \
      -e "s|^\[cookie\]\$|[cookie]\nsecret = \"$SECRET\"|" "$conf_src" >"$dir/pixeld.toml"
  taskset -c 0 "$bin" serve --config "$dir/pixeld.toml" 2>"$dir/pixeld.log" &
  SERVER=$!
  for _ in $(seq 1 200); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/readyz" && break; sleep 0.05; done
  taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d2s -s benches/load/mix.lua "http://127.0.0.1:$PORT" >/dev/null
  local before after out
  before=$(awk '{print $14+$15}' /proc/"$SERVER"/stat)
  out=$(taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" -s benches/load/mix.lua \
    "http://127.0.0.1:$PORT" | sed -n 's/^RESULT //p')
  after=$(awk '{print $14+$15}' /proc/"$SERVER"/stat)
  kill -TERM "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=""
  kill "$TANSU" 2>/dev/null; wait "$TANSU" 2>/dev/null || true; TANSU=""
  python3 - "$side" "$2" "$out" "$before" "$after" "$(getconf CLK_TCK)" <<'PY'
import json, sys
side, rnd, out, before, after, tck = sys.argv[1:]
w = json.loads(out)
rps = w["requests"] / w["seconds"]
cpu = (int(after) - int(before)) / int(tck) * 1e6 / max(w["requests"], 1)
print(f"{side} {rnd} {rps:.0f} {cpu:.2f}")
PY
}

results="$work/ab.txt"
: >"$results"
for round in $(seq 1 "$ROUNDS"); do
  # Alternate which side goes first, so drift over the run hits both.
  if [ $((round % 2)) -eq 1 ]; then order="old new"; else order="new old"; fi
  for side in $order; do
    run "$side" "$round" | tee -a "$results" >&2
  done
done

mkdir -p benches/results
out="benches/results/ab-$(date -u +%Y-%m-%d).json"
python3 - "$results" "$out" "$REV" "$(git rev-parse --short HEAD)" "$ROUNDS" "$SECONDS_PER_RUN" <<'PY'
import json, statistics, sys
path, out, rev, head, rounds, secs = sys.argv[1:]
runs = [l.split() for l in open(path)]
def med(side, i):
    return statistics.median(float(r[i]) for r in runs if r[0] == side)
old_rps, new_rps = med("old", 2), med("new", 2)
old_cpu, new_cpu = med("old", 3), med("new", 3)
print(f"old {rev}: {old_rps:,.0f} req/s, {old_cpu:.2f} us CPU per request (median of {rounds})")
print(f"new {head}: {new_rps:,.0f} req/s, {new_cpu:.2f} us CPU per request")
print(f"new/old: {new_rps / old_rps:.3f}x req/s, {new_cpu / old_cpu:.3f}x CPU per request")
json.dump({"old": rev, "new": head, "rounds": int(rounds), "seconds": int(secs),
           "runs": [{"side": r[0], "round": int(r[1]), "rps": float(r[2]), "cpu_us_per_request": float(r[3])} for r in runs],
           "median": {"old": {"rps": old_rps, "cpu_us_per_request": old_cpu},
                      "new": {"rps": new_rps, "cpu_us_per_request": new_cpu}}},
          open(out, "w"), indent=1)
print(f"written to {out}")
PY
