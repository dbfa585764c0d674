#!/usr/bin/env bash
# Memory under a cookieless flood: every request without a cookie is a new
# user to the attribution engine. Floods /imptr (an ordinary browser's user
# agent, no cookie) for SECONDS s with wrk, once per setting, side by side in
# one run: attribution.max_users at its default (10 million), capped at CAP,
# and the cookie bounce on (a cookieless request is bounced, not recorded, as
# wrk does not follow redirects). pixeld is pinned to core 0; wrk and tansu
# (nice 19) to core 1. Prints RSS, users kept and evicted per setting and
# writes benches/results/flood-DATE.json.
#
#   benches/load/flood.sh [SECONDS] [CAP]
set -euo pipefail
cd "$(dirname "$0")/../.."
. benches/load/common.sh
SECONDS_PER_RUN=${1:-20}
CAP=${2:-100000}
UA="Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36"

need_tools wrk:wrk
cargo build --release --locked -q --bin pixeld

setup_run
BROKER_PORT=$(free_port)
start_tansu "$BROKER_PORT" "$work/tansu.log"
metric() { curl -s "http://127.0.0.1:$PORT/metrics" | awk -v m="$1" '$1==m {s+=$2} END {print s+0}'; }
results="$work/results.tsv"
: >"$results"
for setting in default capped bounce; do
  dir="$work/$setting"
  mkdir -p "$dir"
  pixeld_config "$dir/pixeld.toml" "$PORT" "$BROKER_PORT" "$dir/data" journal
  # The users gauge is refreshed by the sweep: every second here.
  sed -i "s|^sweep_interval_secs = .*|sweep_interval_secs = 1|" "$dir/pixeld.toml"
  case $setting in
    capped) sed -i "s|^max_users = .*|max_users = $CAP|" "$dir/pixeld.toml" ;;
    bounce) sed -i "s|^bounce = .*|bounce = true|" "$dir/pixeld.toml" ;;
  esac
  taskset -c 0 target/release/pixeld serve --config "$dir/pixeld.toml" 2>"$dir/pixeld.log" &
  SERVER=$!
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  rss0=$(awk '/VmRSS/ {print $2}' "/proc/$SERVER/status")
  taskset -c 1 wrk -t1 -c64 -d"${SECONDS_PER_RUN}s" -H "User-Agent: $UA" \
    "http://127.0.0.1:$PORT/imptr?id=2766&cachebuster=1&ancost=0.1" >"$dir/wrk.txt" &
  WRK=$!
  # RSS every second of the flood: a cap shows as a plateau.
  series=""
  while kill -0 "$WRK" 2>/dev/null; do
    sleep 1
    series="$series$(awk '/VmRSS/ {print int($2/1024)}' "/proc/$SERVER/status") "
  done
  out=$(cat "$dir/wrk.txt")
  sleep 2 # the engine drains its backlog
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$SERVER/status")
  users=$(metric attribution_users)
  evicted=$(metric attribution_evicted_users_total)
  bounces=$(metric cookie_bounces_total)
  requests=$(echo "$out" | awk '/requests in/ {print $1}')
  kill -TERM "$SERVER"; wait "$SERVER" || true; SERVER=""
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$setting" "$requests" "$rss0" "$rss" "$users" "$evicted" "$bounces" "$series" >>"$results"
  echo "$setting: $requests requests, RSS $((rss0 / 1024)) -> $((rss / 1024)) MiB (each second: $series), users kept $users, evicted $evicted, bounced $bounces" >&2
done

mkdir -p benches/results
python3 - "$results" "$SECONDS_PER_RUN" "$CAP" <<'PY'
import json, sys, datetime
path, secs, cap = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = []
for line in open(path):
    s, req, rss0, rss, users, ev, bounces, series = line.rstrip("\n").split("\t")
    rows.append({"setting": s, "requests": int(req), "rss_start_kib": int(rss0), "rss_end_kib": int(rss),
                 "rss_mib_each_second": [int(x) for x in series.split()],
                 "users_kept": int(float(users)), "evicted": int(float(ev)), "bounced": int(float(bounces))})
out = {"date": datetime.date.today().isoformat(), "seconds": secs, "cap": cap,
       "command": f"benches/load/flood.sh {secs} {cap}", "runs": rows}
name = f"benches/results/flood-{out['date']}.json"
json.dump(out, open(name, "w"), indent=1)
print(f"{'setting':8} {'requests':>9} {'RSS MiB':>14} {'users kept':>10} {'evicted':>8} {'bounced':>8}")
for r in rows:
    print(f"{r['setting']:8} {r['requests']:>9} {r['rss_start_kib']//1024:>6} -> {r['rss_end_kib']//1024:<5} {r['users_kept']:>10} {r['evicted']:>8} {r['bounced']:>8}")
for r in rows:
    print(f"{r['setting']:8} RSS MiB each second: {r['rss_mib_each_second']}")
print(f"written to {name}")
PY
