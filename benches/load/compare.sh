#!/usr/bin/env bash
# pixeld against what operators would run instead, on one machine, one after
# another on the same pinned core:
#   (a) pixeld: the example config, durability = journal, Kafka (a local
#       tansu broker) and attribution on;
#   (b) nginx, one worker, empty_gif, a buffered access log of the request
#       line, cookie and user agent;
#   (c) hyper-gif: bare hyper returning the static GIF (the ceiling).
# Each gets the same wrk settings and request mix (benches/load/mix.lua),
# alternating a b c for ROUNDS rounds of SECONDS s. The server runs on core
# 0; wrk and the broker (nice 19, standing in for a remote cluster) on core 1.
# After each pixeld run its events are counted in the broker: a run that lost
# answered events fails the script. Then a fixed-rate run (oha) at half of
# nginx's measured maximum gives p50/p99/p99.9 for pixeld and nginx.
# Prints a table and writes benches/results/compare-DATE.json.
#
# PIXELD_BEFORE=path/to/an/older/pixeld runs it too, in the same rounds and
# at the same fixed rate ("pixeld-before"): a before/after side by side.
#
#   benches/load/compare.sh [ROUNDS] [SECONDS]
#   CONNECTIONS=64 FIXED_SECONDS=20 benches/load/compare.sh 3 10
# FIXED_RATE=N sets the fixed rate instead (when half of nginx's maximum is
# more than pixeld's own, its p99 measures a queue, not the server).
set -euo pipefail
cd "$(dirname "$0")/../.."
. benches/load/common.sh
ROUNDS=${1:-3}
SECONDS_PER_RUN=${2:-10}
CONNECTIONS=${CONNECTIONS:-64}
FIXED_SECONDS=${FIXED_SECONDS:-20}

need_tools wrk:wrk nginx:nginx-light
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
command -v oha >/dev/null || cargo install oha --version 1.16.0 --locked -q
cargo build --release --locked -q --bin pixeld --example hyper-gif --example load-tool

setup_run

cookies "$work/cookies.txt"
COOKIE=$(head -1 "$work/cookies.txt")
UA="Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"

wait_up() {
  for _ in $(seq 1 200); do
    curl -sf -o /dev/null "http://127.0.0.1:$PORT$1" && return 0
    sleep 0.05
  done
  echo "server did not come up; see $work" >&2
  exit 1
}

start_broker() {
  BROKER_PORT=$(free_port)
  start_tansu "$BROKER_PORT" "$work/tansu.log"
}

stop_broker() { kill "$TANSU" 2>/dev/null; wait "$TANSU" 2>/dev/null || true; TANSU=""; }

# Starts server $1 on core 0 and waits until it answers.
start() {
  local dir="$work/$1-$2"
  mkdir -p "$dir"
  case $1 in
    pixeld|pixeld-before)
      local bin=target/release/pixeld; [ "$1" = pixeld-before ] && bin=$PIXELD_BEFORE
      start_broker
      pixeld_config "$dir/pixeld.toml" "$PORT" "$BROKER_PORT" "$dir/data" journal
      taskset -c 0 "$bin" serve --config "$dir/pixeld.toml" 2>"$dir/pixeld.log" &
      SERVER=$!
      wait_up /readyz ;;
    nginx)
      mkdir -p "$dir/logs"
      cat >"$dir/nginx.conf" <<CONF
worker_processes 1;
daemon off;
master_process off;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  log_format pixel '\$time_iso8601 "\$request" "\$http_cookie" "\$http_user_agent"';
  server {
    listen 127.0.0.1:$PORT;
    location / {
      empty_gif;
      access_log $dir/logs/access.log pixel buffer=64k flush=1s;
    }
  }
}
CONF
      taskset -c 0 "$NGINX" -p "$dir" -c "$dir/nginx.conf" 2>"$dir/nginx.stderr" &
      SERVER=$!
      wait_up /imptr ;;
    hyper)
      taskset -c 0 target/release/examples/hyper-gif "127.0.0.1:$PORT" &
      SERVER=$!
      wait_up / ;;
  esac
}

# Stops the server; for pixeld, also checks its events reached the broker.
stop() {
  kill -TERM "$SERVER"
  wait "$SERVER" 2>/dev/null || true
  SERVER=""
  if [ "$1" = pixeld ] || [ "$1" = pixeld-before ]; then
    local counts
    counts=$(target/release/examples/load-tool count "127.0.0.1:$BROKER_PORT" \
      pixel.impressions pixel.clicks pixel.conversions pixel.segments pixel.invalid pixel.attributions)
    stop_broker
    echo "$counts"
  fi
}

# CPU ticks per thread name of the server: "name ticks" lines.
threads() {
  for t in /proc/"$SERVER"/task/*; do
    printf '%s %s\n' "$(tr ' ' '_' <"$t/comm")" "$(awk '{print $14+$15}' "$t/stat")"
  done 2>/dev/null | awk '{a[$1]+=$2} END {for (k in a) print k, a[k]}'
}

drive() { # $1 = seconds; prints wrk's RESULT json
  taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${1}s" -s benches/load/mix.lua "http://127.0.0.1:$PORT" \
    | sed -n 's/^RESULT //p'
}

results="$work/results.tsv"
: >"$results"
for round in $(seq 1 "$ROUNDS"); do
  for server in ${PIXELD_BEFORE:+pixeld-before} pixeld nginx hyper; do
    start "$server" "$round"
    drive 2 >/dev/null # warm-up, not counted
    threads >"$work/cpu-before"
    out=$(drive "$SECONDS_PER_RUN")
    threads >"$work/cpu-after"
    # Microseconds of CPU per request, per thread (where the core goes).
    cpu=$(python3 - "$work/cpu-before" "$work/cpu-after" "$out" "$(getconf CLK_TCK)" <<'PY'
import json, sys
before = dict(l.split() for l in open(sys.argv[1]))
after = dict(l.split() for l in open(sys.argv[2]))
w = json.loads(sys.argv[3])
tck = int(sys.argv[4])
per = {k: (int(v) - int(before.get(k, 0))) / tck * 1e6 / max(w["requests"], 1) for k, v in after.items()}
print(json.dumps({k: round(v, 2) for k, v in sorted(per.items(), key=lambda kv: -kv[1]) if v > 0}))
PY
)
    out=$(python3 -c 'import json,sys; w=json.loads(sys.argv[1]); w["cpu_us_per_request"]=json.loads(sys.argv[2]); print(json.dumps(w))' "$out" "$cpu")
    counts=$(stop "$server")
    printf '%s\t%s\t%s\t%s\n' "$server" "$round" "$out" "${counts:-{\}}" >>"$results"
    echo "round $round $server $out ${counts}" >&2
  done
done

# Fixed rate: half of nginx's median maximum, the same /imptr for both.
fixed="$work/fixed.tsv"
: >"$fixed"
rate=${FIXED_RATE:-$(python3 - "$results" <<'PY'
import json, statistics, sys
rps = [json.loads(l.split("\t")[2])["requests"] / json.loads(l.split("\t")[2])["seconds"]
       for l in open(sys.argv[1]) if l.startswith("nginx\t")]
print(int(statistics.median(rps) / 2))
PY
)}
for server in ${PIXELD_BEFORE:+pixeld-before} pixeld nginx; do
  start "$server" fixed
  taskset -c 1 oha --worker-threads 1 -z 2s -q "$rate" -c "$CONNECTIONS" --no-tui -H "Cookie: $COOKIE" -H "User-Agent: $UA" \
    "http://127.0.0.1:$PORT/imptr?id=2766&cachebuster=1&ancost=0.42&t=2" >/dev/null
  taskset -c 1 oha --worker-threads 1 -z "${FIXED_SECONDS}s" -q "$rate" -c "$CONNECTIONS" --latency-correction --no-tui --output-format json \
    -H "Cookie: $COOKIE" -H "User-Agent: $UA" \
    "http://127.0.0.1:$PORT/imptr?id=2766&cachebuster=1&ancost=0.42&t=2" >"$work/oha-$server.json"
  stop "$server" >/dev/null
  printf '%s\t%s\n' "$server" "$work/oha-$server.json" >>"$fixed"
done

mkdir -p benches/results
out="benches/results/compare-$(date -u +%Y-%m-%d).json"
python3 - "$results" "$fixed" "$out" "$ROUNDS" "$SECONDS_PER_RUN" "$CONNECTIONS" "$rate" <<'PY'
import json, os, statistics, sys
results, fixed, out, rounds, secs, conns, rate = sys.argv[1:]
runs = {}
lost = []
for line in open(results):
    server, rnd, wrk, counts = line.rstrip("\n").split("\t")
    w = json.loads(wrk)
    c = json.loads(counts)
    run = {"round": int(rnd), "rps": w["requests"] / w["seconds"], **w}
    if server.startswith("pixeld"):
        events = {t: v[0] for t, v in c.items()}
        distinct = sum(v[1] for t, v in c.items() if t != "pixel.attributions")
        answered = w["requests"] + 0
        run["events"] = events
        run["distinct_pixel_events"] = distinct
        # The warm-up's requests are in the broker too: at least every
        # measured answer must be there.
        if distinct < answered:
            lost.append(f"round {rnd}: {answered} answered, {distinct} distinct events in Kafka")
    runs.setdefault(server, []).append(run)
med = {s: {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50_ms", "p99_ms", "p999_ms")}
       for s, rs in runs.items()}
fixed_rate = {}
for line in open(fixed):
    server, path = line.rstrip("\n").split("\t")
    j = json.load(open(path))
    p = j["latencyPercentiles"]
    fixed_rate[server] = {"p50_ms": p["p50"] * 1e3, "p99_ms": p["p99"] * 1e3, "p999_ms": p["p99.9"] * 1e3,
                          "rps": j["summary"]["requestsPerSec"], "success_rate": j["summary"]["successRate"]}
doc = {
    "date": __import__("datetime").datetime.utcnow().strftime("%Y-%m-%d"),
    "cores": os.cpu_count(),
    "command": f"benches/load/compare.sh {rounds} {secs}",
    "connections": int(conns),
    "median": med,
    "ratios": {"pixeld/nginx": med["pixeld"]["rps"] / med["nginx"]["rps"],
               "pixeld/hyper": med["pixeld"]["rps"] / med["hyper"]["rps"]},
    "fixed_rate": {"rps": int(rate), "seconds": int(os.environ.get("FIXED_SECONDS", "20")), **fixed_rate},
    "runs": runs,
    "lost": lost,
}
json.dump(doc, open(out, "w"), indent=2)
print(f"\n{doc['date']}, {doc['cores']} cores, wrk -t1 -c{conns}, {rounds} rounds of {secs} s (median)")
print(f"{'server':<8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
servers = [s for s in ("pixeld-before", "pixeld", "nginx", "hyper") if s in med]
for s in servers:
    m = med[s]
    print(f"{s:<14} {m['rps']:>9,.0f} {m['p50_ms']:>8.2f} {m['p99_ms']:>8.2f}")
print(f"pixeld/nginx {doc['ratios']['pixeld/nginx']:.2f}x   pixeld/hyper {doc['ratios']['pixeld/hyper']:.2f}x")
if "pixeld-before" in med:
    doc["ratios"]["pixeld-before/nginx"] = med["pixeld-before"]["rps"] / med["nginx"]["rps"]
    print(f"pixeld-before/nginx {doc['ratios']['pixeld-before/nginx']:.2f}x")
print(f"\nfixed rate {rate} req/s for {doc['fixed_rate']['seconds']} s (oha, latency-corrected)")
print(f"{'server':<8} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9}")
for s in [s for s in ("pixeld-before", "pixeld", "nginx") if s in fixed_rate]:
    f = fixed_rate[s]
    print(f"{s:<14} {f['p50_ms']:>8.2f} {f['p99_ms']:>8.2f} {f['p999_ms']:>9.2f}")
print("\nCPU per request by thread (µs, median over rounds)")
for s in servers:
    names = sorted({k for r in runs[s] for k in r.get("cpu_us_per_request", {})})
    cells = {k: statistics.median(r.get("cpu_us_per_request", {}).get(k, 0) for r in runs[s]) for k in names}
    total = sum(cells.values())
    doc.setdefault("cpu_us_per_request", {})[s] = cells
    print(f"{s:<14} total {total:5.1f}  " + "  ".join(f"{k} {v:.1f}" for k, v in sorted(cells.items(), key=lambda kv: -kv[1]) if v >= 0.05))
json.dump(doc, open(out, "w"), indent=2)
for r in runs["pixeld"] + runs.get("pixeld-before", []):
    print(f"pixeld round {r['round']}: {r['requests']} answered, {r['distinct_pixel_events']} distinct pixel events in Kafka, events {r['events']}")
print(f"written to {out}")
if lost:
    print("LOST EVENTS: " + "; ".join(lost))
    sys.exit(1)
PY
