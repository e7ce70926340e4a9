#!/usr/bin/env bash
# Side-by-side: the same wrk load straight to the backends, and through sessiongate, nginx and
# HAProxy, each configured for the same job (round robin over three keep-alive backends,
# X-Forwarded-* set, /metrics denied where the proxy can, no access log), each pinned to core 0
# with one worker; wrk and the backends on core 1. Prints medians of interleaved runs.
#
#   benches/compare.sh                       # 3 runs x 10 s, 50 connections
#   RUNS=5 DURATION=20 CONNECTIONS=100 benches/compare.sh
#
# CPU per request is read from each proxy's own /proc accounting (utime+stime), which is
# steadier than requests per second on a shared machine. Traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-50}
BASE_PORT=${BASE_PORT:-19080}

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
command -v haproxy >/dev/null || need+=(haproxy)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} with apt-get" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release -q

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

b1=$((BASE_PORT + 1)); b2=$((BASE_PORT + 2)); b3=$((BASE_PORT + 3))
p_sg=$((BASE_PORT + 10)); p_nginx=$((BASE_PORT + 11)); p_haproxy=$((BASE_PORT + 12)); admin=$((BASE_PORT + 13))

# Backends: one nginx worker answering a small fixed body on three ports (core 1).
cat > "$work/backends.conf" <<CONF
worker_processes 1;
daemon off;
error_log $work/backends.err warn;
pid $work/backends.pid;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$b1; location / { return 200 "node-1\n"; } }
  server { listen 127.0.0.1:$b2; location / { return 200 "node-2\n"; } }
  server { listen 127.0.0.1:$b3; location / { return 200 "node-3\n"; } }
}
CONF
taskset -c 1 nginx -c "$work/backends.conf" -p "$work" & pids+=($!)

cat > "$work/sessiongate.toml" <<CONF
[admin]
listen = "127.0.0.1:$admin"
[log]
level = "warn"
access_log = false
[[listener]]
name = "bench"
listen = "127.0.0.1:$p_sg"
[[site]]
backends = { static = ["127.0.0.1:$b1", "127.0.0.1:$b2", "127.0.0.1:$b3"] }
CONF
taskset -c 0 ./target/release/sessiongate --threads 1 --config "$work/sessiongate.toml" & pids+=($!)
sg_pid=$!

cat > "$work/nginx.conf" <<CONF
worker_processes 1;
daemon off;
error_log $work/nginx.err warn;
pid $work/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream nodes { server 127.0.0.1:$b1; server 127.0.0.1:$b2; server 127.0.0.1:$b3; keepalive 64; }
  server {
    listen 127.0.0.1:$p_nginx;
    location = /metrics { return 404; }
    location / {
      proxy_pass http://nodes;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$host;
      proxy_set_header X-Forwarded-Port \$server_port;
    }
  }
}
CONF
taskset -c 0 nginx -c "$work/nginx.conf" -p "$work" & pids+=($!)
nginx_master=$!

cat > "$work/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 4000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
frontend bench
  bind 127.0.0.1:$p_haproxy
  http-request deny deny_status 404 if { path /metrics }
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request set-header X-Forwarded-Port %[dst_port]
  option forwardfor
  default_backend nodes
backend nodes
  balance roundrobin
  http-reuse always
  server n1 127.0.0.1:$b1
  server n2 127.0.0.1:$b2
  server n3 127.0.0.1:$b3
CONF
taskset -c 0 haproxy -f "$work/haproxy.cfg" -db & pids+=($!)
haproxy_pid=$!

# Wait until every port answers.
for port in $b1 $b2 $b3 $p_sg $p_nginx $p_haproxy; do
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
done

# CPU ticks (utime+stime) of a process and its children's threads (nginx: master + workers).
ticks() {
  local total=0 p
  for p in "$@" $(pgrep -P "$1" 2>/dev/null || true); do
    [ -r "/proc/$p/stat" ] || continue
    total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$total"
}
hz=$(getconf CLK_TCK)

# Latency in wrk's units → microseconds.
to_us() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000; else if (v ~ /s$/) print n * 1000000; else print n }'; }

declare -A targets=([direct]=$b1 [sessiongate]=$p_sg [nginx]=$p_nginx [haproxy]=$p_haproxy)
declare -A owner=([direct]="" [sessiongate]=$sg_pid [nginx]=$nginx_master [haproxy]=$haproxy_pid)
order=(direct sessiongate nginx haproxy)
results="$work/results.tsv"
: > "$results"

for run in $(seq "$RUNS"); do
  for name in "${order[@]}"; do
    port=${targets[$name]}
    pid=${owner[$name]}
    before=0; [ -n "$pid" ] && before=$(ticks "$pid")
    out=$(taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "http://127.0.0.1:$port/")
    after=0; [ -n "$pid" ] && after=$(ticks "$pid")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    total=$(awk '/requests in/ {print $1}' <<<"$out")
    p50=$(to_us "$(awk '$1 == "50%" {print $2}' <<<"$out")")
    p99=$(to_us "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    cpu_us=$(awk -v t=$((after - before)) -v hz="$hz" -v n="$total" 'BEGIN { if (n > 0 && t > 0) printf "%.1f", t / hz * 1e6 / n; else print "-" }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$run" "$rps" "$p50" "$p99" "$cpu_us" >> "$results"
    echo "run $run $name: $rps req/s, p50 ${p50}us, p99 ${p99}us, cpu ${cpu_us}us/req" >&2
  done
done

echo
echo "plain HTTP/1.1 keep-alive, $CONNECTIONS connections, ${DURATION}s x $RUNS interleaved runs (medians)"
echo "machine: $(nproc) cores, $(awk '/model name/ {sub(/.*: /, ""); print; exit}' /proc/cpuinfo)"
python3 - "$results" <<'PY'
import sys, statistics
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
by = {}
for name, _, rps, p50, p99, cpu in rows:
    by.setdefault(name, []).append((float(rps), float(p50), float(p99), None if cpu == "-" else float(cpu)))
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None
print(f"{'target':<12} {'req/s':>10} {'p50 us':>8} {'p99 us':>8} {'cpu us/req':>11}")
for name in ["direct", "sessiongate", "nginx", "haproxy"]:
    r = by.get(name, [])
    if not r:
        continue
    rps, p50, p99, cpu = (med([x[i] for x in r]) for i in range(4))
    cpu_s = f"{cpu:.1f}" if cpu is not None else "-"
    print(f"{name:<12} {rps:>10.0f} {p50:>8.0f} {p99:>8.0f} {cpu_s:>11}")
PY
