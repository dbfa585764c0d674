#!/usr/bin/env bash
# pixeld forward's own cost per call: N counted attribution records (each
# with a source click id) are produced to a local tansu, then one `pixeld
# forward` instance, pinned to core 0, sends each to a postback destination
# served by nginx (`return 200`) on core 1, with tansu (sqlite storage,
# nice 19). The figure is calls per CPU-second of the forward process (its
# /proc times): the catcher's and the broker's work is on the other core
# and not counted. Prints one JSON object.
#
#   benches/load/forward.sh [N]     (default 20000)
set -euo pipefail
cd "$(dirname "$0")/../.."
. benches/load/common.sh

N=${1:-20000}
need_tools taskset:util-linux curl:curl python3:python3 nginx:nginx-light
cargo build --release --locked --bin pixeld --example load-tool >&2
BIN=target/release/pixeld
TOOL=target/release/examples/load-tool

WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null; rm -rf "$WORK"' EXIT
BROKER_PORT=$(free_port)
# sqlite storage: tansu's memory engine skips the rest of a record batch
# when a fetch starts inside it, which a paused and resumed partition does
# (src/attribution/cluster/broker_quirks.rs).
(cd "$WORK" && nice -n 19 taskset -c 1 tansu broker --listener-url "tcp://127.0.0.1:$BROKER_PORT" \
  --advertised-listener-url "tcp://127.0.0.1:$BROKER_PORT" --storage-engine sqlite://tansu.db >>"$WORK/tansu.log" 2>&1) &
sleep 1
scripts/tansu-index.sh "$WORK/tansu.db"
BROKERS="127.0.0.1:$BROKER_PORT"
taskset -c 1 "$TOOL" records "$BROKERS" "$N" >&2

CATCHER_PORT=$(free_port)
mkdir -p "$WORK/nginx"
cat > "$WORK/nginx.conf" <<CONF
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx;
  server { listen 127.0.0.1:$CATCHER_PORT; keepalive_requests 1000000; location / { return 200 "ok"; } }
}
CONF
taskset -c 1 nginx -c "$WORK/nginx.conf" -p "$WORK/nginx"

STATUS_PORT=$(free_port)
pixeld_config "$WORK/pixeld.toml" "$(free_port)" "$BROKER_PORT" "$WORK/data" journal
cat >> "$WORK/pixeld.toml" <<CONF

[forward]
listen = "127.0.0.1:$STATUS_PORT"
start_from = "earliest"

[[destinations]]
id = "bench"
kind = "postback"
url = "http://127.0.0.1:$CATCHER_PORT/pb?c=\${CLICK_ID}&v=\${VALUE}&o=\${ORDER_ID}&s=\${STATUS}"
rate_per_s = 1000000
concurrency = 64
CONF

metric() { curl -s "http://127.0.0.1:$STATUS_PORT/metrics" | awk -v n="$1" 'index($0, n) == 1 { s += $NF } END { print s + 0 }'; }
cpu_seconds() { awk '{ print ($14 + $15) / 100 }' "/proc/$1/stat"; }

taskset -c 0 "$BIN" forward --config "$WORK/pixeld.toml" 2>"$WORK/forward.log" &
FWD=$!
for _ in $(seq 600); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$STATUS_PORT/readyz")" = 200 ] && break
  sleep 0.1
done
START=$(date +%s.%N)
CPU0=$(cpu_seconds $FWD)
while [ "$(metric 'forward_attempts_total{destination="bench",result="delivered"}')" -lt "$N" ]; do
  sleep 0.2
  kill -0 $FWD 2>/dev/null || { echo "forward died:" >&2; cat "$WORK/forward.log" >&2; exit 1; }
done
END=$(date +%s.%N)
CPU1=$(cpu_seconds $FWD)
kill -TERM $FWD; wait $FWD || true
python3 - "$N" "$START" "$END" "$CPU0" "$CPU1" <<'PY'
import json, sys
n, start, end, c0, c1 = int(sys.argv[1]), *map(float, sys.argv[2:])
wall, cpu = end - start, max(c1 - c0, 1e-9)
print(json.dumps({"calls": n, "wall_seconds": round(wall, 2), "calls_per_second_wall": round(n / wall),
                  "forward_cpu_seconds": round(cpu, 2), "calls_per_cpu_second": round(n / cpu),
                  "us_cpu_per_call": round(cpu / n * 1e6, 1)}))
PY
