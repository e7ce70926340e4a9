#!/usr/bin/env bash
# A profile-guided release build of sessiongate (PGO), the build BENCHMARKS.md measures:
#
#   benches/pgo.sh        # prints the binary's path: <target dir>/pgo/<host>/release/sessiongate
#
# 1. builds sessiongate instrumented (`-Cprofile-generate`);
# 2. trains it on loopback for about 40 s with what a proxy in front of Keycloak does most:
#    kept-alive HTTP/1.1 plain and over TLS, HTTP/2, new and resumed TLS connections, sticky
#    cookies with access logging on, 256 KiB answers, uploads and the denied /metrics;
# 3. builds it again with the counts (`-Cprofile-use`): the compiler then inlines, lays out and
#    splits hot from cold code by what ran, not by guesses.
# A path the training never takes is compiled for size, so the training covers every path a
# request commonly takes; a stale profile (older code) only loses part of the gain.
#
# Needs llvm-profdata from the LLVM that rustc uses (`rustc -vV`): rustup's `llvm-tools`
# component, or Debian's llvm-<major> (installed with apt when missing), and wrk, h2load and
# nginx for the training (nginx serves the backends). Both builds keep their own target
# directories, so neither undoes the plain release build's cache. Traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
. benches/common.sh
PGO_BASE_PORT=${PGO_BASE_PORT:-19580}
say() { echo "pgo: $*" >&2; }

# llvm-profdata must read what this rustc's LLVM writes: same major version.
host=$(rustc -vV | sed -n 's/^host: //p')
llvm_major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
profdata_major() { "$1" --version 2>/dev/null | sed -n 's/.*LLVM version \([0-9]*\).*/\1/p' | head -1; }
find_profdata() {
  local c
  for c in "$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata" \
    "$(command -v "llvm-profdata-$llvm_major" || true)" "$(command -v llvm-profdata || true)"; do
    [ -n "$c" ] && [ -x "$c" ] && [ "$(profdata_major "$c")" = "$llvm_major" ] && { echo "$c"; return; }
  done
  return 1
}
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v nginx >/dev/null || need+=(nginx-light)
find_profdata >/dev/null || need+=("llvm-$llvm_major")
if command -v apt-get >/dev/null; then
  apt_install "${need[@]}" || say "apt-get could not install them all"
fi
profdata=$(find_profdata) || {
  say "no llvm-profdata of LLVM $llvm_major (this rustc's): rustup component add llvm-tools, or install llvm-$llvm_major"
  exit 1
}

# sed, not a JSON parser: the container image's build stage runs this too, without python.
target_dir=$(cargo metadata --format-version 1 --no-deps --locked | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
raw="$target_dir/pgo/profiles"
rm -rf "$raw"; mkdir -p "$raw"
# --target: with it, RUSTFLAGS reach only what goes into the binary, not build scripts and
# proc macros, which would otherwise be instrumented too and write their own counts.
say "building sessiongate instrumented"
RUSTFLAGS="-Cprofile-generate=$raw" cargo build --release --locked -q --bin sessiongate --target "$host" \
  --target-dir "$target_dir/pgo/generate"
loadgen=${LOADGEN:-$(cargo bench --locked --bench loadgen --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -1)}
[ -x "$loadgen" ] || { say "cannot find the loadgen bench binary"; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
head -c $((256 * 1024)) /dev/urandom > "$work/asset"
head -c $((64 * 1024)) /dev/urandom > "$work/upload"
b1=$((PGO_BASE_PORT + 1)) b2=$((PGO_BASE_PORT + 2)) b3=$((PGO_BASE_PORT + 3))
plain=$((PGO_BASE_PORT + 10)) tls=$((PGO_BASE_PORT + 20)) sticky=$((PGO_BASE_PORT + 30))
backends_conf "$work" $b1 $b2 $b3
nginx -c "$work/backends.conf" -p "$work" & pids+=($!)

# Two processes (configs from benches/common.sh), as stickiness is global in a config: round
# robin on a plain and a TLS listener, and sticky cookies with the access log on (to /dev/null).
sg_config $((PGO_BASE_PORT + 11)) false 10000 "[[listener]]
name = \"plain\"
listen = \"127.0.0.1:$plain\"
[[listener]]
name = \"tls\"
listen = \"127.0.0.1:$tls\"
tls = { cert = \"$repo/certs/tls.crt\", key = \"$repo/certs/tls.key\" }" $b1 $b2 $b3 > "$work/main.toml"
sg_config $((PGO_BASE_PORT + 31)) true 10000 "[[listener]]
name = \"sticky\"
listen = \"127.0.0.1:$sticky\"
[balance.sticky]
mode = \"cookie\"
secret = \"$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')\"" $b1 $b2 $b3 > "$work/sticky.toml"
sg="$target_dir/pgo/generate/$host/release/sessiongate"
"$sg" --threads 1 --config "$work/main.toml" & main_pid=$!
"$sg" --threads 1 --config "$work/sticky.toml" > /dev/null & sticky_pid=$!
pids+=($main_pid $sticky_pid)
ca=$repo/certs/dev-ca.crt
up() { answers "$@" || { say "nothing answers: $*"; exit 1; }; }
up "http://127.0.0.1:$plain/"; up --cacert "$ca" "https://127.0.0.1:$tls/"; up "http://127.0.0.1:$sticky/"

say "training (about 40 s)"
# Each load is bounded: h2load's -D does not end a client that keeps reconnecting. An upload
# load once ran 13 minutes instead of 3 s when the proxy closed every connection whose answer
# came before its body (it now reads and drops a small rest). What a killed load trained counts.
quiet() { timeout 30 "$@" > /dev/null 2>&1 || say "training load failed: $*"; }
quiet wrk -t1 -c50 -d4s "http://127.0.0.1:$plain/"
quiet wrk -t1 -c50 -d4s "https://127.0.0.1:$tls/"
quiet h2load -t1 -c20 -m10 -D4 "https://127.0.0.1:$tls/"
quiet "$loadgen" newtls "https://127.0.0.1:$tls/" 3 20 "$ca"
quiet "$loadgen" resume "https://127.0.0.1:$tls/" 3 20 "$ca"
quiet "$loadgen" latency "http://127.0.0.1:$plain/" 5000 3 50
quiet wrk -t1 -c10 -d3s "https://127.0.0.1:$tls/asset"
quiet h2load -t1 -c10 -m4 -D3 "https://127.0.0.1:$tls/asset"
quiet h2load -t1 -c10 -m4 -D3 -d "$work/upload" "https://127.0.0.1:$tls/"
quiet h2load -t1 --h1 -c10 -D3 -d "$work/upload" "http://127.0.0.1:$plain/"
cookie=$(curl -sf -D - -o /dev/null "http://127.0.0.1:$sticky/" | sed -n 's/^set-cookie: *\([^;]*\).*/\1/Ip' | head -1)
[ -n "$cookie" ] || say "the sticky process set no cookie: its path goes untrained"
quiet wrk -t1 -c50 -d4s -H "Cookie: AUTH_SESSION_ID=3f1c6a4e.keycloak-0; $cookie" "http://127.0.0.1:$sticky/"
quiet wrk -t1 -c20 -d2s "http://127.0.0.1:$sticky/"
for _ in $(seq 200); do curl -s -o /dev/null "http://127.0.0.1:$plain/metrics"; done

# The counts are written as each process exits; a graceful stop exits main.
kill -INT $main_pid $sticky_pid
wait $main_pid $sticky_pid 2>/dev/null || true
"$profdata" merge -o "$work/merged.profdata" "$raw"
# Named by its content: cargo rebuilds when its flags change, not when a file they name does.
profile="$target_dir/pgo/sessiongate-$(sha256sum "$work/merged.profdata" | cut -c1-16).profdata"
rm -f "$target_dir"/pgo/sessiongate-*.profdata
mv "$work/merged.profdata" "$profile"
say "building sessiongate with the profile"
RUSTFLAGS="-Cprofile-use=$profile" cargo build --release --locked -q --bin sessiongate --target "$host" \
  --target-dir "$target_dir/pgo"
echo "$target_dir/pgo/$host/release/sessiongate"
