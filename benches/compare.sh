#!/usr/bin/env bash
# sessiongate side by side with nginx and HAProxy, each configured for the same job, in one run:
#   the same three fast backends (one nginx worker, core 1);
#   TLS termination with the same ECDSA P-256 certificate (certs/tls.crt), round robin over the
#   three backends, upstream keep-alive, X-Forwarded-* set, /metrics denied, no access log;
#   each proxy with one worker pinned to core 0; load generators and backends on core 1.
#
#   benches/compare.sh                                 # everything, 3 interleaved runs x 8 s
#   RUNS=5 DURATION=15 benches/compare.sh
#   LEGS="plain tls" benches/compare.sh                # a subset
#   PGO=0 benches/compare.sh                           # sessiongate's plain release build
#
# sessiongate is measured as its profile-guided build (benches/pgo.sh), which adds about ten
# minutes of building and training on two cores.
#
# Legs (BENCHMARKS.md says what each number means):
#   memory   idle PSS of each proxy, then PSS per idle TLS connection with IDLE_CONNS held open,
#            then what it still holds above idle KEPT_AFTER seconds after they closed
#   plain    HTTP/1.1 keep-alive (wrk)            tls      HTTP/1.1 over TLS keep-alive (wrk)
#   h2       HTTP/2 over TLS (h2load)             newtls   a new TLS connection per request, full
#                                                          handshakes (loadgen)
#   resume   a new TLS connection per request, resumed with the ticket the last one got (loadgen)
#   latency  open loop at half the best peer's plain capacity: p50/p99 added over going direct
#   sticky   HTTP/1.1 keep-alive, every request in one of three sessions pinned to a backend: the
#            proxy's own cookie (sessiongate, HAProxy's `cookie insert`); nginx, which has no
#            session cookie outside nginx Plus, hashes the same cookie (`hash ... consistent`)
#   asset    HTTP/1.1 over TLS keep-alive, every answer a static file of ASSET_KIB from the
#            backends (the size of a login theme's stylesheet or a console's script bundle)
#   h2asset  the same file over HTTP/2 (h2load), 4 streams on each connection, as browsers fetch
#
# CPU per request is read from each proxy's own /proc accounting (utime+stime), which is steadier
# than throughput on a shared machine. Traffic stays on 127.0.0.1; every load stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
. benches/common.sh

RUNS=${RUNS:-3}
DURATION=${DURATION:-8}
# Open-loop tails are the noisiest figure here (BENCHMARKS.md), so the latency leg takes more,
# shorter rounds: by default twice RUNS at half DURATION, the same sampling time per target.
LATENCY_ROUNDS=${LATENCY_ROUNDS:-$((RUNS * 2))}
LATENCY_DURATION=${LATENCY_DURATION:-$(((DURATION + 1) / 2))}
CONNECTIONS=${CONNECTIONS:-50}
H2_CONNECTIONS=${H2_CONNECTIONS:-20}
H2_STREAMS=${H2_STREAMS:-10}
IDLE_CONNS=${IDLE_CONNS:-10000}
# Seconds after the held connections close before the memory a proxy kept is read.
KEPT_AFTER=${KEPT_AFTER:-5}
# The asset leg: the file's size and the connections asking for it (a browser opens a few).
ASSET_KIB=${ASSET_KIB:-256}
ASSET_CONNECTIONS=${ASSET_CONNECTIONS:-10}
LEGS=${LEGS:-"memory plain tls h2 newtls resume sticky asset h2asset latency"}
BASE_PORT=${BASE_PORT:-19080}
# This machine is a VM: its hypervisor sometimes runs a neighbour on our cores ("steal" in
# /proc/stat). One 50 ms steal burst in an 8 s open-loop sample is the whole p99. A sample during
# which the hypervisor took more than STEAL_MAX percent of the machine is measured again, up to
# TRIES times in all; the cleanest is kept, and every sample's steal is printed and tabled. A
# share over the whole sample cannot see one 20 ms burst (0.1%): this trims the worst samples only.
STEAL_MAX=${STEAL_MAX:-1}
TRIES=${TRIES:-4}
# The environment every proxy runs in. A glibc with its bug 30994 (this machine's Debian 12
# glibc 2.36) copies 2 KiB and more with `rep movsb`, which AMD EPYC runs up to 20 times slower
# at some alignments; rustls' record copies meet them, OpenSSL's do not. This has all three
# proxies copy with glibc's vector loop instead, as sessiongate's image and systemd unit do
# (README). Set it empty to run without.
PROXY_GLIBC_TUNABLES=${PROXY_GLIBC_TUNABLES-glibc.cpu.x86_rep_movsb_threshold=4194304}
# Runs a proxy on core 0 in that environment. `exec`: started with `&`, the proxy keeps the pid
# in $!, which its CPU and memory are read by.
on_proxy_core() { exec taskset -c 0 env GLIBC_TUNABLES="$PROXY_GLIBC_TUNABLES" "$@"; }

has_leg() { [[ " $LEGS " == *" $1 "* ]]; }

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v nginx >/dev/null || need+=(nginx-light)
command -v haproxy >/dev/null || need+=(haproxy)
command -v taskset >/dev/null || need+=(util-linux)
apt_install "${need[@]}"
echo "building sessiongate and the load generator (release)" >&2
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
loadgen=$(cargo bench --bench loadgen --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -1)
[ -x "$loadgen" ] || { echo "cannot find the loadgen bench binary" >&2; exit 1; }
# sessiongate is measured as built for production: profile-guided (benches/pgo.sh, into its
# own target directory). PGO=0 measures the plain release build instead, as does a machine
# where pgo.sh cannot run (it says why). The plain build comes after `cargo bench`, which also
# builds the sessiongate binary, in the bench profile, into the same target/release/sessiongate.
# That build has its own symbol names, which benches/startup.order (build.rs) does not list, so
# it is not the binary operators run: with it there, the memory leg read 8.0-8.4 MiB idle where
# the release build holds 5.2-5.4.
sg_bin="$target_dir/release/sessiongate" sg_build="release build (PGO=0)"
if [ "${PGO:-1}" = 1 ]; then
  if sg_pgo=$(LOADGEN=$loadgen benches/pgo.sh); then
    sg_bin=$sg_pgo sg_build="profile-guided release build (benches/pgo.sh)"
  else
    sg_build="release build: the profile-guided build failed (above)"
    echo "measuring sessiongate's plain release build instead" >&2
  fi
fi
[ "$sg_bin" = "$target_dir/release/sessiongate" ] && cargo build --release -q
echo "sessiongate: $sg_build" >&2

# 10k idle connections need 10k descriptors in the proxy and in the client, and HAProxy
# refuses to start unless the limit covers two per connection (client and server side).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
nofile=$(ulimit -n); [ "$nofile" = unlimited ] && nofile=1048576
haproxy_maxconn=$(( (nofile - 100) / 2 ))
if [ "$IDLE_CONNS" -gt $((haproxy_maxconn - 200)) ]; then
  IDLE_CONNS=$((haproxy_maxconn - 200))
  echo "descriptor limit $nofile (HAProxy needs two per connection): holding $IDLE_CONNS idle connections" >&2
fi

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

cert=$repo/certs/tls.crt key=$repo/certs/tls.key ca=$repo/certs/dev-ca.crt
cat "$cert" "$key" > "$work/haproxy.pem"
b1=$((BASE_PORT + 1)); b2=$((BASE_PORT + 2)); b3=$((BASE_PORT + 3))
declare -A plain_port=([direct]=$b1 [sessiongate]=$((BASE_PORT + 10)) [nginx]=$((BASE_PORT + 11)) [haproxy]=$((BASE_PORT + 12)))
declare -A tls_port=([sessiongate]=$((BASE_PORT + 20)) [nginx]=$((BASE_PORT + 21)) [haproxy]=$((BASE_PORT + 22)))
declare -A sticky_port=([sessiongate]=$((BASE_PORT + 30)) [nginx]=$((BASE_PORT + 31)) [haproxy]=$((BASE_PORT + 32)))
admin=$((BASE_PORT + 13)) sticky_admin=$((BASE_PORT + 33))
max_conns=$((IDLE_CONNS + 2000))

# Backends: one nginx worker answering a small fixed body on three ports (core 1), and the
# asset leg's file.
head -c $((ASSET_KIB * 1024)) /dev/urandom > "$work/asset"
backends_conf "$work" $b1 $b2 $b3
taskset -c 1 nginx -c "$work/backends.conf" -p "$work" & pids+=($!)

# sessiongate's config (benches/common.sh): what both of its processes share, with the admin
# port and listeners (and tables) given. Stickiness is global in sessiongate, so the sticky leg has a process of its
# own (started after the memory leg, below).
sg_config "$admin" false "$max_conns" "[[listener]]
name = \"plain\"
listen = \"127.0.0.1:${plain_port[sessiongate]}\"
[[listener]]
name = \"tls\"
listen = \"127.0.0.1:${tls_port[sessiongate]}\"
tls = { cert = \"$cert\", key = \"$key\" }" $b1 $b2 $b3 > "$work/sessiongate.toml"
on_proxy_core "$sg_bin" --threads 1 --config "$work/sessiongate.toml" & pids+=($!)
sg_pid=$!

nginx_proxying='proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
      proxy_set_header X-Forwarded-Port $server_port;'
cat > "$work/nginx.conf" <<CONF
worker_processes 1;
worker_rlimit_nofile $nofile;
daemon off;
error_log $work/nginx.err warn;
pid $work/nginx.pid;
events { worker_connections $max_conns; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream nodes { server 127.0.0.1:$b1; server 127.0.0.1:$b2; server 127.0.0.1:$b3; keepalive 256; }
  upstream by_session {
    hash \$cookie_SERVERID consistent;
    server 127.0.0.1:$b1; server 127.0.0.1:$b2; server 127.0.0.1:$b3; keepalive 256;
  }
  server {
    listen 127.0.0.1:${plain_port[nginx]};
    listen 127.0.0.1:${tls_port[nginx]} ssl http2;
    ssl_certificate $cert;
    ssl_certificate_key $key;
    ssl_protocols TLSv1.2 TLSv1.3; # nginx 1.22's default stops at TLS 1.2; the others offer 1.3
    ssl_conf_command NumTickets 1; # one TLS 1.3 ticket per handshake, as sessiongate sends
    location = /metrics { return 404; }
    location / { proxy_pass http://nodes; $nginx_proxying }
    # Buffers for the asset that hold it in memory, as an operator serving files would set:
    # nginx's default 8 x 4 KiB sends the rest of a larger answer through a file on disk.
    location = /asset {
      proxy_pass http://nodes; $nginx_proxying
      proxy_buffer_size 64k; proxy_buffers 8 64k; proxy_busy_buffers_size 128k;
    }
  }
  server {
    listen 127.0.0.1:${sticky_port[nginx]};
    location = /metrics { return 404; }
    location / { proxy_pass http://by_session; $nginx_proxying }
  }
}
CONF
on_proxy_core nginx -c "$work/nginx.conf" -p "$work" & pids+=($!)
nginx_pid=$!

# HAProxy 2.6 has no setting for the number of TLS 1.3 tickets; it sends OpenSSL's two.
haproxy_forwarding='  http-request deny deny_status 404 if { path /metrics }
  http-request set-header X-Forwarded-Proto https if { ssl_fc }
  http-request set-header X-Forwarded-Proto http if !{ ssl_fc }
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request set-header X-Forwarded-Port %[dst_port]
  option forwardfor'
cat > "$work/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn $haproxy_maxconn
defaults
  mode http
  maxconn $haproxy_maxconn
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
frontend bench
  bind 127.0.0.1:${plain_port[haproxy]}
  bind 127.0.0.1:${tls_port[haproxy]} ssl crt $work/haproxy.pem alpn h2,http/1.1
$haproxy_forwarding
  default_backend nodes
frontend sticky
  bind 127.0.0.1:${sticky_port[haproxy]}
$haproxy_forwarding
  default_backend by_session
backend nodes
  balance roundrobin
  http-reuse always
  server n1 127.0.0.1:$b1
  server n2 127.0.0.1:$b2
  server n3 127.0.0.1:$b3
backend by_session
  balance roundrobin
  http-reuse always
  cookie SERVERID insert indirect nocache
  server n1 127.0.0.1:$b1 cookie n1
  server n2 127.0.0.1:$b2 cookie n2
  server n3 127.0.0.1:$b3 cookie n3
CONF
on_proxy_core haproxy -f "$work/haproxy.cfg" -db 2>"$work/haproxy.err" & pids+=($!)
haproxy_pid=$!

declare -A owner=([sessiongate]=$sg_pid [nginx]=$nginx_pid [haproxy]=$haproxy_pid)
proxies=(sessiongate nginx haproxy)

# Wait until every port answers (benches/common.sh); a proxy that did not start stops the run
# here, not later.
for port in $b1 $b2 $b3 "${plain_port[@]}" "${sticky_port[nginx]}" "${sticky_port[haproxy]}"; do
  answers "http://127.0.0.1:$port/" || { echo "nothing answers on port $port (see the messages above)" >&2; exit 1; }
done
for port in "${tls_port[@]}"; do
  answers --cacert "$ca" "https://127.0.0.1:$port/" || { echo "nothing answers TLS on port $port" >&2; exit 1; }
  if ! curl -sf --cacert "$ca" "https://127.0.0.1:$port/asset" | cmp -s - "$work/asset"; then
    echo "the proxy on port $port does not pass the asset on whole" >&2; exit 1
  fi
done

# The sticky leg's sessions: for each proxy, the Cookie header of one session on each backend,
# which a browser would send after its first answer: the proxy's own cookie as its Set-Cookie
# gave it (nginx sets none: values its hash puts on each backend), beside two Keycloak-like
# cookies the proxy must pass on untouched. Each session is checked to stay on its backend, so
# that the leg cannot measure a proxy on which stickiness is not on.
session_cookies() {
  local name=$1 url="http://127.0.0.1:${sticky_port[$1]}/" i node pin
  local -A found=()
  for i in $(seq 60); do
    if [ "$name" = nginx ]; then
      pin="SERVERID=s$i"
      node=$(curl -sf -b "$pin" "$url")
    else
      node=$(curl -sf -D "$work/headers" "$url")
      pin=$(sed -n 's/^set-cookie: *\([^;]*\).*/\1/Ip' "$work/headers" | head -1)
    fi
    [ -n "$pin" ] && [ -z "${found[$node]:-}" ] && found[$node]=$pin
    [ ${#found[@]} -eq 3 ] && break
  done
  [ ${#found[@]} -eq 3 ] || { echo "$name: no session on each of the three backends" >&2; return 1; }
  for node in "${!found[@]}"; do
    local cookie="AUTH_SESSION_ID=3f1c6a4e-9b2d-4c7a-8e51-0d9f6b2a7c44.keycloak-0; KEYCLOAK_SESSION=bench/8a7d2c1e-5f3b-4e6a-9c0d-1b2e3f4a5b6c/3f1c6a4e-9b2d-4c7a-8e51-0d9f6b2a7c44; ${found[$node]}"
    for i in 1 2 3 4 5; do
      [ "$(curl -sf -H "Cookie: $cookie" "$url")" = "$node" ] ||
        { echo "$name: the session pinned to $node did not stay there" >&2; return 1; }
    done
    echo "$cookie"
  done
}

# A process and its children (nginx: master + worker).
family() { echo "$1"; pgrep -P "$1" 2>/dev/null || true; }
# CPU ticks (utime + stime) of a proxy.
ticks() {
  local total=0 p
  for p in $(family "$1"); do
    [ -r "/proc/$p/stat" ] && total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$total"
}
# Proportional set size in KiB: shared pages (nginx's master and worker) counted once.
pss_kib() {
  local total=0 p
  for p in $(family "$1"); do
    [ -r "/proc/$p/smaps_rollup" ] && total=$((total + $(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup")))
  done
  echo "$total"
}
hz=$(getconf CLK_TCK)
to_us() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000; else if (v ~ /s$/) print n * 1000000; else print n }'; }
results="$work/results.tsv"
: > "$results"
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >> "$results"; }

# Ticks the hypervisor gave to others while this machine's vCPUs wanted to run (all cores).
steal_ticks() { awk '/^cpu / {print $9}' /proc/stat; }
cores=$(nproc)
# Runs "$@" (a command printing one line) until the steal during it is at most STEAL_MAX percent
# of the machine's CPU time, at most TRIES times. Prints the cleanest run's line and its steal %.
calm() {
  local best="" best_pct="" try out s0 t0 pct
  for try in $(seq "$TRIES"); do
    s0=$(steal_ticks); t0=$(date +%s%N)
    out=$("$@")
    pct=$(awk -v s=$(($(steal_ticks) - s0)) -v ns=$(($(date +%s%N) - t0)) -v hz="$hz" -v n="$cores" \
      'BEGIN { printf "%.2f", s / hz / (ns / 1e9 * n) * 100 }')
    if [ -z "$best_pct" ] || awk -v a="$pct" -v b="$best_pct" 'BEGIN { exit !(a < b) }'; then
      best=$out best_pct=$pct
    fi
    awk -v a="$pct" -v m="$STEAL_MAX" 'BEGIN { exit !(a <= m) }' && break
    [ "$try" -lt "$TRIES" ] && echo "  ($2 $3: the hypervisor took ${pct}% of the machine; measuring again)" >&2
  done
  echo "$best $best_pct"
}

# One closed-loop load: prints "requests rps p50_us p99_us".
load() {
  local leg=$1 name=$2 out
  case $leg in
    plain)  out=$(taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "http://127.0.0.1:${plain_port[$name]}/") ;;
    tls)    out=$(taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "https://127.0.0.1:${tls_port[$name]}/") ;;
    asset)  out=$(taskset -c 1 wrk -t1 -c"$ASSET_CONNECTIONS" -d"${DURATION}s" --latency "https://127.0.0.1:${tls_port[$name]}/asset") ;;
    sticky)
      local sessions; mapfile -t sessions < "$work/sessions.$name"
      out=$(taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$repo/benches/sessions.lua" \
        "http://127.0.0.1:${sticky_port[$name]}/" -- "${sessions[@]}") ;;
    h2 | h2asset)
      if [ "$leg" = h2 ]; then
        out=$(taskset -c 1 h2load -t1 -c"$H2_CONNECTIONS" -m"$H2_STREAMS" -D"$DURATION" "https://127.0.0.1:${tls_port[$name]}/" 2>&1)
      else
        out=$(taskset -c 1 h2load -t1 -c"$ASSET_CONNECTIONS" -m4 -D"$DURATION" "https://127.0.0.1:${tls_port[$name]}/asset" 2>&1)
      fi
      grep -qi 'application protocol: h2' <<<"$out" || { echo "h2load did not negotiate h2 with $name" >&2; echo "0 0 - -"; return; }
      awk '/^requests:/ {n = $8} /^finished in/ {r = $4} END {print n, r, "-", "-"}' <<<"$out"
      return ;;
    newtls | resume)
      # Not wrk for new connections: it keeps each connection's TLS session across reconnects,
      # so nearly all of its handshakes would resume.
      read -r n resumed errors <<<"$(taskset -c 1 "$loadgen" "$leg" "https://127.0.0.1:${tls_port[$name]}/" "$DURATION" "$CONNECTIONS" "$ca")"
      if [ "$leg" = newtls ]; then
        [ "$resumed" -eq 0 ] || echo "$resumed of $n new connections to $name resumed" >&2
      else
        # A proxy that does not resume would be measured doing full handshakes: say so.
        [ "$resumed" -ge $((n * 9 / 10)) ] || echo "only $resumed of $n connections to $name resumed ($errors errors)" >&2
      fi
      awk -v n="$n" -v d="$DURATION" 'BEGIN { printf "%d %.0f - -\n", n, n / d }'
      return ;;
  esac
  awk '/requests in/ {n = $1} /Requests\/sec/ {r = $2} $1 == "50%" {p50 = $2} $1 == "99%" {p99 = $2} END {print n, r, p50, p99}' <<<"$out" |
    while read -r n r p50 p99; do echo "$n $r $(to_us "$p50") $(to_us "$p99")"; done
}

# One closed-loop load with the proxy's CPU time read around it: prints "rps p50_us p99_us cpu_us".
closed() {
  local leg=$1 name=$2 pid=${owner[$2]:-} before=0 after=0 n rps p50 p99
  [ "$leg" = sticky ] && [ "$name" = sessiongate ] && pid=$sg_sticky_pid
  [ -n "$pid" ] && before=$(ticks "$pid")
  read -r n rps p50 p99 <<<"$(load "$leg" "$name")"
  [ -n "$pid" ] && after=$(ticks "$pid")
  echo "$rps $p50 $p99 $(awk -v t=$((after - before)) -v hz="$hz" -v n="$n" \
    'BEGIN { if (n > 0 && t > 0) printf "%.1f", t / hz * 1e6 / n; else print "-" }')"
}
# One open-loop load: prints "p50_us p99_us p999_us sent errors".
open_loop() { taskset -c 1 "$loadgen" latency "http://127.0.0.1:${plain_port[$2]}/" "$rate" "$LATENCY_DURATION" "$CONNECTIONS"; }
# The proxies in a different order each run (each run starts one further along the list), so
# that none is always the one measured straight after another's load or after going direct.
rotated() { local k=$(($1 % ${#proxies[@]})); echo "${proxies[@]:k}" "${proxies[@]:0:k}"; }

if has_leg memory; then
  for name in "${proxies[@]}"; do
    idle=$(pss_kib "${owner[$name]}")
    "$loadgen" hold "https://127.0.0.1:${tls_port[$name]}/" "$IDLE_CONNS" "$ca" > "$work/hold.out" 2>&1 &
    holder=$!
    for _ in $(seq 600); do grep -q '^ready' "$work/hold.out" && break; kill -0 $holder 2>/dev/null || break; sleep 0.2; done
    grep -q '^ready' "$work/hold.out" || { echo "holding $IDLE_CONNS connections to $name failed:" >&2; cat "$work/hold.out" >&2; exit 1; }
    sleep 1
    held=$(pss_kib "${owner[$name]}")
    kill $holder; wait $holder 2>/dev/null || true
    per_conn=$(awk -v a="$idle" -v b="$held" -v n="$IDLE_CONNS" 'BEGIN { printf "%.1f", (b - a) * 1024 / n / 1024 }')
    # What the proxy still holds once they are gone and it has been quiet for a few seconds:
    # memory an allocator keeps after a burst is memory the next pod on the node cannot have.
    sleep "$KEPT_AFTER"
    kept=$(( $(pss_kib "${owner[$name]}") - idle ))
    echo "memory $name: idle ${idle} KiB, ${per_conn} KiB per idle TLS connection (${IDLE_CONNS} held), ${kept} KiB kept ${KEPT_AFTER} s after they closed" >&2
    record memory "$name" 1 "$idle" "$per_conn" "$kept" - -
  done
fi

# sessiongate's sticky process starts only now: the memory leg reads proportional set sizes, in
# which two processes running one binary would each count half of its pages.
if has_leg sticky; then
  sg_config "$sticky_admin" false "$max_conns" "[[listener]]
name = \"sticky\"
listen = \"127.0.0.1:${sticky_port[sessiongate]}\"
[balance.sticky]
mode = \"cookie\"
secret = \"$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')\"" $b1 $b2 $b3 > "$work/sessiongate-sticky.toml"
  on_proxy_core "$sg_bin" --threads 1 --config "$work/sessiongate-sticky.toml" & pids+=($!)
  sg_sticky_pid=$!
  answers "http://127.0.0.1:${sticky_port[sessiongate]}/" ||
    { echo "nothing answers on port ${sticky_port[sessiongate]} (see the messages above)" >&2; exit 1; }
  for name in "${proxies[@]}"; do session_cookies "$name" > "$work/sessions.$name" || exit 1; done
fi

for run in $(seq "$RUNS"); do
  for leg in plain tls h2 newtls resume sticky asset h2asset; do
    has_leg "$leg" || continue
    read -ra targets <<<"$(rotated $((run - 1)))"
    [ "$leg" = plain ] && targets=(direct "${targets[@]}")
    for name in "${targets[@]}"; do
      read -r rps p50 p99 cpu steal <<<"$(calm closed "$leg" "$name")"
      record "$leg" "$name" "$run" "$rps" "$p50" "$p99" "$cpu" "$steal"
      echo "run $run $leg $name: $rps req/s, p50 ${p50}us, p99 ${p99}us, cpu ${cpu}us/req, steal ${steal}%" >&2
    done
  done
done

if has_leg latency; then
  # Half the best peer's capacity, from the plain leg's medians (or RATE when it was not run).
  rate=${RATE:-$(python3 - "$results" <<'PY'
import sys, statistics
rows = [l.split("\t") for l in open(sys.argv[1]) if l.startswith("plain\t")]
best = max((statistics.median(float(r[3]) for r in rows if r[1] == p) for p in ("nginx", "haproxy")
            if any(r[1] == p for r in rows)), default=20000)
print(int(best / 2))
PY
)}
  for run in $(seq "$LATENCY_ROUNDS"); do
    read -ra order <<<"$(rotated $((run - 1)))"
    for name in direct "${order[@]}"; do
      read -r p50 p99 p999 sent errors steal <<<"$(calm open_loop latency "$name")"
      record latency "$name" "$run" "$rate" "$p50" "$p99" "$errors" "$steal"
      echo "run $run latency $name at $rate req/s: p50 ${p50}us, p99 ${p99}us, p99.9 ${p999}us, $sent sent, $errors errors, steal ${steal}%" >&2
    done
  done
fi

echo
echo "sessiongate vs nginx and HAProxy: $RUNS interleaved runs x ${DURATION}s (latency: $LATENCY_ROUNDS rounds x ${LATENCY_DURATION}s), medians"
echo "machine: $(nproc) cores, $(awk '/model name/ {sub(/.*: /, ""); print; exit}' /proc/cpuinfo); $(nginx -v 2>&1 | sed 's/.*: //'), $(haproxy -v | awk 'NR==1 {print "HAProxy " $3}')"
echo "every proxy ran with GLIBC_TUNABLES=${PROXY_GLIBC_TUNABLES:-(unset)}; sessiongate: $sg_build"
python3 "$repo/benches/ratios.py" "$results"
