#!/usr/bin/env bash
# A local single-node broker with Kafka transactions, for the exactly-once
# test in tests/transactions.rs (which runs this script itself, unless
# PIXELD_TXN_BROKERS names another broker). It is NOT Apache Kafka: no
# registry this project reaches carries Kafka's jars or a Redpanda binary.
# It is noida-db (PyPI, MIT), one static binary whose Kafka service
# implements InitProducerId/AddPartitionsToTxn/AddOffsetsToTxn/
# TxnOffsetCommit/EndTxn, fencing, control markers and read_committed
# (last stable offset, aborted transactions hidden).
#
# Known gap (noida-db 0.2.3): its group coordinator never evicts a member
# that died without LeaveGroup (kill -9): session expiry is only noticed on
# that member's own heartbeat, so a new member's JoinGroup waits forever.
# The kill -9 test therefore gives its members one static group.instance.id
# (KIP-345): the replacement takes the killed member's place at once.
#
#   scripts/kafka.sh [PORT]    install if needed, start on 127.0.0.1:PORT
#                              (default 19092) with empty storage; prints
#                              PIXELD_TXN_BROKERS=... and the pid
#   scripts/kafka.sh stop      stop the broker this script started
#
# Then, against it: PIXELD_TXN_BROKERS=127.0.0.1:PORT cargo test --test transactions
set -euo pipefail

VERSION=0.2.3
TOOLS="${PIXELD_TOOLS:-$HOME/.cache/pixeld}"
VENV="$TOOLS/noida-db-$VERSION"
RUN="$TOOLS/noida-run"
# The wheel's noida-db command is a Python wrapper that runs the binary as
# a child; the binary itself is started (and stopped) here.
bin() { ls "$VENV"/lib/python3*/site-packages/noida_db/noida-db 2>/dev/null | head -1; }

if [ "${1:-}" = stop ]; then
  if [ -f "$RUN/pid" ]; then
    kill "$(cat "$RUN/pid")" 2>/dev/null || true
    rm -f "$RUN/pid"
    # Until its port is free (a zombie still answers kill -0).
    for _ in $(seq 1 50); do
      (exec 3<>"/dev/tcp/127.0.0.1/$(cat "$RUN/port")") 2>/dev/null || break
      sleep 0.1
    done
    echo "kafka: stopped"
  fi
  exit 0
fi

PORT="${1:-19092}"

if ! "$(bin)" version >/dev/null 2>&1; then
  echo "kafka: installing noida-db $VERSION from PyPI (5 MB wheel)"
  mkdir -p "$TOOLS"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "noida-db==$VERSION"
fi

if [ -f "$RUN/pid" ] && kill -0 "$(cat "$RUN/pid")" 2>/dev/null; then
  echo "kafka: already running (pid $(cat "$RUN/pid")); 'scripts/kafka.sh stop' first" >&2
  exit 1
fi

if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  echo "kafka: 127.0.0.1:$PORT is already in use" >&2
  exit 1
fi

# Fresh storage on every start: the test wants an empty broker.
rm -rf "$RUN"
mkdir -p "$RUN/data"
# The binary names glibc 2.39 as a *weak* version; on Debian 12 (2.36) the
# loader warns and it runs.
nohup "$(bin)" start --only kafka --host 127.0.0.1 --kafka-port "$PORT" \
  --data-dir "$RUN/data" >"$RUN/log" 2>&1 &
echo $! >"$RUN/pid"
echo "$PORT" >"$RUN/port"

for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    echo "kafka: noida-db $VERSION on 127.0.0.1:$PORT (pid $(cat "$RUN/pid"), log $RUN/log)"
    echo "PIXELD_TXN_BROKERS=127.0.0.1:$PORT"
    exit 0
  fi
  kill -0 "$(cat "$RUN/pid")" 2>/dev/null || break
  sleep 0.1
done
echo "kafka: noida-db did not start:" >&2
cat "$RUN/log" >&2
exit 1
