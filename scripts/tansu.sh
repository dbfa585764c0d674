#!/usr/bin/env bash
# Makes sure the tansu broker the tests use is on PATH: version 0.6.0 built
# with dynostore (in-memory storage) and libsql (sqlite storage). A binary
# already there is kept only if it starts with in-memory storage.
set -euo pipefail

export PATH="$HOME/.cargo/bin:$PATH"

works() {
  command -v tansu >/dev/null || return 1
  tansu --version 2>/dev/null | grep -q '0\.6\.0' || return 1
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  tansu broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine memory://tansu/ >/dev/null 2>&1 &
  local pid=$! ok=1
  for _ in $(seq 1 50); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then ok=0; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  return $ok
}

if works; then
  echo "tansu: $(tansu --version) ready"
else
  echo "tansu: installing 0.6.0 with dynostore,libsql (about 10 minutes)"
  cargo install tansu --version 0.6.0 --locked --features dynostore,libsql --force
  works || { echo "tansu: installed but does not start with memory storage" >&2; exit 1; }
fi
