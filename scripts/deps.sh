#!/usr/bin/env bash
# Installs the system packages pixeld builds against (librdkafka is compiled
# from source by rdkafka-sys: it needs a C toolchain, OpenSSL and zlib).
# Sourced by run.sh and test.sh; safe to run again. Extra package names given
# as arguments are installed too (test.sh: the browser for the browser tests).
set -euo pipefail

need=()
for pkg in build-essential pkg-config libssl-dev zlib1g-dev python3 perl "$@"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "deps: installing ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
command -v cargo >/dev/null || { echo "deps: cargo not found; install Rust (rustup) first" >&2; exit 1; }
