#!/usr/bin/env bash
# A self-contained tarball for benches/load/scale.sh, to run on a machine
# with no network and no Rust toolchain (the many-core machine operators
# size fleets on): stripped pixeld, hyper-gif and load-tool (release), tansu,
# nginx and wrk, the shared libraries they need beyond the C library, the
# example config, the request mix and the script. It must stay under 60 MiB.
#
#   benches/load/bundle.sh [OUT]        default target/pixeld-scale-bundle.tar.gz
#   tar xzf pixeld-scale-bundle.tar.gz && cd pixeld-scale-bundle && BUNDLE=$PWD ./scale.sh "1 2 4 8" 3 8
#
# The target needs a glibc at least as new as this machine's (Debian 12:
# 2.36; Ubuntu 24.04 has 2.39), python3, curl, taskset and nproc.
set -euo pipefail
cd "$(dirname "$0")/../.."
. benches/load/common.sh
OUT=${1:-target/pixeld-scale-bundle.tar.gz}
need_tools wrk:wrk nginx:nginx-light
cargo build --release --locked -q --bin pixeld --example hyper-gif --example load-tool

name=pixeld-scale-bundle
stage=$(mktemp -d)/$name
mkdir -p "$stage/bin" "$stage/lib"
cp target/release/pixeld target/release/examples/hyper-gif target/release/examples/load-tool \
   "$(command -v tansu)" "$(command -v nginx || echo /usr/sbin/nginx)" "$(command -v wrk)" "$stage/bin/"
strip "$stage"/bin/*
# Every shared library but the C library's own (those come from the target).
for b in "$stage"/bin/*; do
  ldd "$b" | awk '/=> \// {print $3}'
done | sort -u | grep -vE '/(libc|libm|libpthread|libdl|librt|ld-linux[^/]*)\.so' | while read -r lib; do
  cp -L "$lib" "$stage/lib/"
done
cp config/pixeld.toml config/ivt-user-agents.txt "$stage/"
cp benches/load/mix.lua benches/load/scale.sh "$stage/"
cat >"$stage/README" <<TXT
pixeld scale bundle, built $(date -u +%Y-%m-%d) from $(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown).
  BUNDLE=\$PWD ./scale.sh "1 2 4 8" 3 8
needs: glibc >= $(ldd --version | head -1 | awk '{print $NF}'), python3, curl, taskset, nproc.
Writes ./scale-DATE.json; a run that loses an answered event fails.
TXT
mkdir -p "$(dirname "$OUT")"
tar -C "$(dirname "$stage")" -czf "$OUT" "$name"
size=$(stat -c %s "$OUT")
echo "$OUT: $((size / 1024 / 1024)) MiB ($(ls "$stage/bin" | tr '\n' ' '); $(ls "$stage/lib" | wc -l) libraries)"
if [ "$size" -gt $((60 * 1024 * 1024)) ]; then
  echo "the bundle is over 60 MiB" >&2
  exit 1
fi
