#!/usr/bin/env bash
# Writes benches/startup.order: the functions a release sessiongate runs from its start through
# its first plain and TLS requests, for the linker to put next to each other (build.rs says why).
# Rerun it after changes to start-up, and rebuild: `benches/startup-order.sh && cargo build --release`.
# With PGO_BIN set to the profile-guided build (benches/pgo.sh prints its path), that binary's
# start-up functions follow the plain build's: it inlines differently, so some are its own. A
# name one binary lacks is skipped when the other links, so one order serves both builds
# (idle PSS of the profile-guided build by hand: 7.8-8.0 MiB with the plain build's order alone,
# 6.5-6.8 with both; the plain build's unchanged). Run it as
#   PGO_BIN=$(benches/pgo.sh) benches/startup-order.sh
# Needs valgrind (callgrind) and python3; traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
command -v valgrind >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }

cargo build --release -q
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
backend=$(free_port) plain=$(free_port) tls=$(free_port) admin=$(free_port)
python3 -m http.server "$backend" --bind 127.0.0.1 --directory "$work" >/dev/null 2>&1 & pids+=($!)
cat > "$work/sessiongate.toml" <<CONF
[admin]
listen = "127.0.0.1:$admin"
[reload]
watch = false
[log]
access_log = false
[[listener]]
name = "plain"
listen = "127.0.0.1:$plain"
[[listener]]
name = "tls"
listen = "127.0.0.1:$tls"
tls = { cert = "$repo/certs/tls.crt", key = "$repo/certs/tls.key" }
[[site]]
backends = { static = ["127.0.0.1:$backend"] }
CONF

# Every function callgrind saw run that the binary defines, in the order it lists them.
functions() {
  callgrind_annotate --threshold=100 --inclusive=no "$@" 2>/dev/null |
    sed -n '/file:function/,$p' | tail -n +3 | sed 's/ \[[^]]*\]$//' | awk '{print $NF}' |
    sed 's/^.*://' | grep -Fxf "$work/defined"
}
# What the start and the first requests ran (callgrind's first dump), then what reading each
# example config adds: parsing runs code per table and key, and a deployment's config has more
# of them than this one.
trace() {
  local bin=$1 vg
  nm --defined-only "$bin" | awk '$2 ~ /[tTwW]/ {print $3}' | sort -u > "$work/defined"
  rm -f "$work"/cg*
  valgrind --tool=callgrind --demangle=no --callgrind-out-file="$work/cg" \
    "$bin" --threads 1 --config "$work/sessiongate.toml" >"$work/sg.log" 2>&1 & pids+=($!)
  vg=$!
  for _ in $(seq 200); do curl -s -o /dev/null "http://127.0.0.1:$plain/" && break; sleep 0.3; done
  curl -sk -o /dev/null "https://127.0.0.1:$tls/"
  sleep 2
  callgrind_control -d "$vg" >/dev/null
  sleep 1
  functions "$work/cg.1"
  kill "$vg"; wait "$vg" 2>/dev/null || true
  for example in config/*.toml; do
    valgrind --tool=callgrind --demangle=no --callgrind-out-file="$work/check" \
      "$bin" check-config --quiet "$example" >/dev/null 2>&1 || true
    functions "$work/check"
  done
}
{
  trace "$target_dir/release/sessiongate"
  [ -z "${PGO_BIN:-}" ] || trace "$PGO_BIN"
} | awk '!seen[$0]++' > "$work/order"
# What the names were made by: another compiler or other locked dependencies rename them, and
# build.rs warns when a release build's differ (LLD reads lines starting with # as comments).
{
  echo "# $(rustc --version); Cargo.lock $(sha256sum Cargo.lock | cut -c1-16)"
  cat "$work/order"
} > benches/startup.order
echo "benches/startup.order: $(grep -vc '^#' benches/startup.order) functions" >&2
