#!/usr/bin/env bash
# How pixeld scales with cores, beside nginx (`empty_gif`, buffered access
# log, `worker_processes N`, `reuseport`) and bare hyper (`hyper-gif`), the
# three alternated on the same cores: for each N in CORES, each server is
# pinned to cores 0..N-1 and driven by wrk (benches/load/mix.lua) on the
# cores left, tansu (memory storage, nice 19) on the last core. Per run:
# requests per second, and CPU per request (the server's CPU time from /proc
# divided by the requests answered); for pixeld also the events answered
# versus those in Kafka after the run (a run that lost one fails).
#
# N that do not leave a core for wrk are run with wrk sharing the server's
# cores: their CPU per request is still the server's own, but their req/s
# is not a capacity figure (marked "shared"). On this 2-core machine that
# means N = 1 (server on core 0, wrk and tansu on core 1) and N = 2 (shared):
# the pair gives CPU per request with 1 and with 2 workers, nothing about
# 16 cores. The full table needs a machine with at least 2N + 2 cores.
#
# Runs from the repository (builds with cargo, uses Debian's nginx and wrk)
# or from the bundle made by benches/load/bundle.sh (BUNDLE=dir: everything
# in dir/bin and dir/lib, no network, no Rust toolchain).
#
#   benches/load/scale.sh [CORES] [ROUNDS] [SECONDS]     e.g. "1 2 4 8" 3 8
# PIXELD_BEFORE=path/to/an/older/pixeld adds it as a fourth server, in the
# same rounds (a before/after measured side by side).
# Writes benches/results/scale-DATE.json (or ./scale-DATE.json in a bundle).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
NPROC=$(nproc)
CORES=${1:-"1 2 4 8"}
ROUNDS=${2:-3}
SECONDS_PER_RUN=${3:-8}
SECRET=7e57c00c1e5ec7e77e57c00c1e5ec7e7

if [ -n "${BUNDLE:-}" ]; then
  BIN="$BUNDLE/bin"
  export LD_LIBRARY_PATH="$BUNDLE/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  CONFIG="$BUNDLE/pixeld.toml"
  MIX="$BUNDLE/mix.lua"
  OUT_DIR="."
  PIXELD="$BIN/pixeld" HYPER="$BIN/hyper-gif" TOOL="$BIN/load-tool"
  TANSU="$BIN/tansu" NGINX="$BIN/nginx" WRK="$BIN/wrk"
else
  cd "$HERE/../.."
  . benches/load/common.sh
  need_tools wrk:wrk nginx:nginx-light
  cargo build --release --locked -q --bin pixeld --example hyper-gif --example load-tool
  CONFIG=config/pixeld.toml MIX=benches/load/mix.lua OUT_DIR=benches/results
  PIXELD=target/release/pixeld HYPER=target/release/examples/hyper-gif TOOL=target/release/examples/load-tool
  TANSU=$(command -v tansu) NGINX=$(command -v nginx || echo /usr/sbin/nginx) WRK=$(command -v wrk)
fi

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work=$(mktemp -d)
SERVER="" BROKER=""
# Removes the scratch directory after a successful run (nginx's access logs
# alone take gigabytes); a failed run, or KEEP_WORK=1, keeps it.
cleanup() {
  local status=$?
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null
  [ -n "$BROKER" ] && kill "$BROKER" 2>/dev/null
  wait 2>/dev/null || true
  if [ "$status" -eq 0 ] && [ "${KEEP_WORK:-}" != 1 ]; then rm -rf "$work"; else echo "scratch files kept in $work" >&2; fi
}
trap cleanup EXIT
"$TOOL" cookies "$SECRET" 1000 >"$work/cookies.txt"
export PIXELD_COOKIES="$work/cookies.txt"

# The cores a run uses: the server's, wrk's, the broker's.
layout() { # $1 = N
  local n=$1 last=$((NPROC - 1))
  SERVER_CORES="0-$((n - 1))"
  if [ $((n + 1)) -le "$last" ]; then
    WRK_CORES="$n-$((last - 1))" BROKER_CORE=$last SHARED=false
  elif [ "$n" -lt "$NPROC" ]; then
    WRK_CORES="$last" BROKER_CORE=$last SHARED=false
  else
    WRK_CORES="0-$last" BROKER_CORE=$last SHARED=true
  fi
  WRK_THREADS=$(( $(echo "$WRK_CORES" | awk -F- '{print ($2==""?$1:$2) - $1 + 1}') ))
}

up() { # waits until $1 answers
  for _ in $(seq 1 200); do curl -sf -o /dev/null "$1" && return 0; sleep 0.05; done
  echo "server did not come up: $1 (see $work)" >&2; exit 1
}

start() { # $1 server, $2 N, $3 dir
  local dir=$3; mkdir -p "$dir"; PORT=$(port)
  case $1 in
    pixeld|pixeld-before)
      local bin=$PIXELD; [ "$1" = pixeld-before ] && bin=$PIXELD_BEFORE
      BPORT=$(port)
      nice -n 19 taskset -c "$BROKER_CORE" "$TANSU" broker --listener-url "tcp://127.0.0.1:$BPORT" \
        --advertised-listener-url "tcp://127.0.0.1:$BPORT" --storage-engine memory://tansu/ >"$dir/tansu.log" 2>&1 &
      BROKER=$!
      sed -e "s|^listen = .*|listen = \"127.0.0.1:$PORT\"|" -e "s|^admin_listen = .*|admin_listen = \"127.0.0.1:$(port)\"|" \
          -e "s|^brokers = .*|brokers = \"127.0.0.1:$BPORT\"|" -e "s|^data_dir = .*|data_dir = \"$dir/data\"|" \
          -e "s|^drain_ms = .*|drain_ms = 0|" -e "s|^\[cookie\]\$|[cookie]\nsecret = \"$SECRET\"|" "$CONFIG" >"$dir/pixeld.toml"
      taskset -c "$SERVER_CORES" "$bin" serve --config "$dir/pixeld.toml" 2>"$dir/pixeld.log" &
      SERVER=$!
      up "http://127.0.0.1:$PORT/readyz" ;;
    nginx)
      mkdir -p "$dir/logs"
      cat >"$dir/nginx.conf" <<CONF
worker_processes $2;
daemon off;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  log_format pixel '\$time_iso8601 "\$request" "\$http_cookie" "\$http_user_agent"';
  server {
    listen 127.0.0.1:$PORT reuseport;
    location / { empty_gif; access_log $dir/logs/access.log pixel buffer=64k flush=1s; }
  }
}
CONF
      taskset -c "$SERVER_CORES" "$NGINX" -p "$dir" -c "$dir/nginx.conf" 2>"$dir/nginx.stderr" &
      SERVER=$!
      up "http://127.0.0.1:$PORT/imptr" ;;
    hyper)
      taskset -c "$SERVER_CORES" "$HYPER" "127.0.0.1:$PORT" &
      SERVER=$!
      up "http://127.0.0.1:$PORT/" ;;
  esac
}

# CPU ticks of the server and its children (nginx's workers).
ticks() {
  local pids="$SERVER $(pgrep -P "$SERVER" 2>/dev/null | tr '\n' ' ')" t=0 p
  for p in $pids; do
    for task in /proc/"$p"/task/*; do
      t=$((t + $(awk '{print $14+$15}' "$task/stat" 2>/dev/null || echo 0)))
    done
  done
  echo "$t"
}

drive() { # $1 seconds, $2 connections: wrk's RESULT json
  taskset -c "$WRK_CORES" "$WRK" -t"$WRK_THREADS" -c"$2" -d"${1}s" -s "$MIX" "http://127.0.0.1:$PORT" | sed -n 's/^RESULT //p'
}

results="$work/results.tsv"; : >"$results"
for n in $CORES; do
  [ "$n" -le "$NPROC" ] || { echo "skip N=$n: this machine has $NPROC cores" >&2; continue; }
  layout "$n"
  for round in $(seq 1 "$ROUNDS"); do
    for server in ${PIXELD_BEFORE:+pixeld-before} pixeld nginx hyper; do
      dir="$work/$server-$n-$round"
      start "$server" "$n" "$dir"
      conns=$((64 * n))
      drive 2 "$conns" >/dev/null
      t0=$(ticks); out=$(drive "$SECONDS_PER_RUN" "$conns"); t1=$(ticks)
      kill -TERM "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=""
      shipped=0
      if [ "$server" = pixeld ] || [ "$server" = pixeld-before ]; then
        shipped=$("$TOOL" count "127.0.0.1:$BPORT" pixel.impressions pixel.clicks pixel.conversions pixel.segments pixel.invalid \
          | python3 -c 'import json,sys; print(sum(v[1] for v in json.load(sys.stdin).values()))')
        kill "$BROKER" 2>/dev/null; wait "$BROKER" 2>/dev/null || true; BROKER=""
      fi
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$server" "$n" "$round" "$SHARED" "$((t1 - t0))" "$out" "$shipped" >>"$results"
      echo "N=$n round $round $server: $(echo "$out" | python3 -c 'import json,sys; w=json.load(sys.stdin); print(int(w["requests"]/w["seconds"]), "req/s")') shared=$SHARED" >&2
    done
  done
done

mkdir -p "$OUT_DIR"
python3 - "$results" "$OUT_DIR" "$(getconf CLK_TCK)" "$CORES" "$ROUNDS" "$SECONDS_PER_RUN" "$NPROC" <<'PY'
import json, statistics, sys, datetime
path, out_dir, tck, cores, rounds, secs, nproc = sys.argv[1:]
rows = {}
lost = []
for line in open(path):
    server, n, rnd, shared, ticks, wrk, shipped = line.rstrip("\n").split("\t")
    w = json.loads(wrk)
    cpu_us = int(ticks) / int(tck) * 1e6 / max(w["requests"], 1)
    r = {"round": int(rnd), "rps": w["requests"] / w["seconds"], "cpu_us_per_request": cpu_us,
         "p99_ms": w["p99_ms"], "requests": w["requests"], "shared_cores": shared == "true"}
    if server.startswith("pixeld"):
        r["events_in_kafka"] = int(shipped)
        # The warm-up's events are in Kafka too: at least every measured answer.
        if int(shipped) < w["requests"]:
            lost.append(f"N={n} round {rnd}: {w['requests']} answered, {shipped} in Kafka")
    rows.setdefault(int(n), {}).setdefault(server, []).append(r)
table = {}
for n, servers in sorted(rows.items()):
    table[n] = {s: {"rps": statistics.median(x["rps"] for x in rs),
                    "cpu_us_per_request": statistics.median(x["cpu_us_per_request"] for x in rs),
                    "shared_cores": rs[0]["shared_cores"], "runs": rs} for s, rs in servers.items()}
doc = {"date": datetime.date.today().isoformat(), "cores": int(nproc),
       "command": f"benches/load/scale.sh \"{cores}\" {rounds} {secs}", "table": table, "lost": lost}
name = f"{out_dir}/scale-{doc['date']}.json"
json.dump(doc, open(name, "w"), indent=1)
print(f"\n{doc['date']}, {nproc} cores, {rounds} rounds of {secs} s (medians)")
print(f"{'N':>3} {'pixeld req/s':>13} {'nginx':>9} {'hyper':>9} {'px/nginx':>9} {'CPU µs/req: pixeld':>19} {'nginx':>6} {'hyper':>6}")
for n, t in table.items():
    p, ng, h = t["pixeld"], t["nginx"], t["hyper"]
    mark = " (wrk shares the cores: not a capacity figure)" if p["shared_cores"] else ""
    print(f"{n:>3} {p['rps']:>13,.0f} {ng['rps']:>9,.0f} {h['rps']:>9,.0f} {p['rps']/ng['rps']:>8.2f}x {p['cpu_us_per_request']:>19.1f} {ng['cpu_us_per_request']:>6.1f} {h['cpu_us_per_request']:>6.1f}{mark}")
    if "pixeld-before" in t:
        b = t["pixeld-before"]
        print(f"    before: {b['rps']:>10,.0f} req/s {b['rps']/ng['rps']:>22.2f}x {b['cpu_us_per_request']:>19.1f} µs/req")
ns = sorted(table)
if len(ns) > 1:
    a, b = ns[0], ns[-1]
    for s in [s for s in ("pixeld-before", "pixeld", "nginx", "hyper") if s in table[a]]:
        g = table[b][s]["cpu_us_per_request"] / table[a][s]["cpu_us_per_request"] - 1
        print(f"{s}: CPU per request {a} -> {b} cores: {g:+.1%}")
print(f"written to {name}")
if lost:
    print("LOST EVENTS: " + "; ".join(lost)); sys.exit(1)
PY
