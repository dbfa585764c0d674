# Shared by the load scripts (sourced, not run).

# The cookie secret the load configs use, so load-tool can sign cookies.
SECRET=7e57c00c1e5ec7e77e57c00c1e5ec7e7

# need_tools COMMAND:DEBIAN_PACKAGE...: the build's system packages, tansu,
# and each command's package unless the command is there already.
need_tools() {
  scripts/deps.sh
  scripts/tansu.sh
  export PATH="$HOME/.cargo/bin:$PATH"
  local missing=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null || [ -x "/usr/sbin/${pair%%:*}" ] || missing+=("${pair#*:}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# pixeld_config OUT PORT BROKER_PORT DATA_DIR DURABILITY: the example config
# on these ports, with the load scripts' cookie secret.
pixeld_config() {
  sed -e "s|^listen = .*|listen = \"127.0.0.1:$2\"|" \
      -e "s|^brokers = .*|brokers = \"127.0.0.1:$3\"|" \
      -e "s|^data_dir = .*|data_dir = \"$4\"|" \
      -e "s|^durability = .*|durability = \"$5\"|" \
      -e "s|^\[cookie\]\$|[cookie]\nsecret = \"$SECRET\"|" config/pixeld.toml >"$1"
}

# start_tansu PORT LOG: a broker on core 1 at the lowest priority (it stands
# in for a remote cluster); sets TANSU to its pid.
start_tansu() {
  nice -n 19 taskset -c 1 tansu broker --listener-url "tcp://127.0.0.1:$1" \
    --advertised-listener-url "tcp://127.0.0.1:$1" --storage-engine memory://tansu/ >>"$2" 2>&1 &
  TANSU=$!
}

# cookies FILE: signed cookies of 1,000 users for benches/load/mix.lua.
cookies() {
  target/release/examples/load-tool cookies "$SECRET" 1000 >"$1"
  export PIXELD_COOKIES="$1"
}

# setup_run: a scratch directory ($work), a free port for the server
# ($PORT), and a trap that stops the server ($SERVER) and the broker
# ($TANSU) however the script ends, and removes $work when it succeeded
# (nginx's access logs and the journals take gigabytes a run; a failed run
# keeps them to look at, and KEEP_WORK=1 keeps them always).
setup_run() {
  work=$(mktemp -d)
  PORT=$(free_port)
  SERVER=""
  TANSU=""
  trap stop_all EXIT
}

stop_all() {
  local status=$?
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null
  [ -n "$TANSU" ] && kill "$TANSU" 2>/dev/null
  wait 2>/dev/null || true
  remove_work "$status" "$work"
}

# remove_work STATUS DIR: removes DIR after a successful run.
remove_work() {
  if [ "$1" -eq 0 ] && [ "${KEEP_WORK:-}" != 1 ]; then
    rm -rf "$2"
  else
    echo "scratch files kept in $2" >&2
  fi
}
