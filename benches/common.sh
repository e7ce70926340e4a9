# Sourced by benches/compare.sh and benches/pgo.sh: what both put on loopback, and how both
# get their tools and wait for what they start.

# Installs the Debian packages given, if any, with apt-get (the tools a script found missing).
apt_install() {
  [ $# -gt 0 ] || return 0
  echo "installing $* with apt-get" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Waits up to about 10 s for a 2xx from curl's arguments (a URL and options); 1 if none came.
answers() { for _ in $(seq 100); do curl -sf -o /dev/null "$@" && return 0; sleep 0.1; done; return 1; }

# The backends: one nginx worker answers a small fixed body on three ports, and DIR/asset at
# /asset. Writes DIR/backends.conf; run it with `nginx -c DIR/backends.conf -p DIR`.
#   backends_conf DIR PORT1 PORT2 PORT3
backends_conf() {
  local dir=$1
  # nginx's workers run as nobody when started as root, and mktemp makes directories 0700.
  chmod 711 "$dir"; chmod 644 "$dir/asset"
  cat > "$dir/backends.conf" <<CONF
worker_processes 1;
daemon off;
error_log $dir/backends.err warn;
pid $dir/backends.pid;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  sendfile on;
  server { listen 127.0.0.1:$2; location / { return 200 "node-1\n"; } location = /asset { alias $dir/asset; } }
  server { listen 127.0.0.1:$3; location / { return 200 "node-2\n"; } location = /asset { alias $dir/asset; } }
  server { listen 127.0.0.1:$4; location / { return 200 "node-3\n"; } location = /asset { alias $dir/asset; } }
}
CONF
}

# A sessiongate config in front of those backends, round robin: the admin port, whether the
# access log is on, the connection limit, then the listeners (and any other tables).
#   sg_config ADMIN_PORT true|false MAX_CONNECTIONS "[[listener]] ..." PORT1 PORT2 PORT3
sg_config() {
  cat <<CONF
[admin]
listen = "127.0.0.1:$1"
[reload]
watch = false
[log]
level = "warn"
access_log = $2
[limits]
max_connections = $3
max_connections_per_ip = $3
[upstream]
pool_max_idle_per_backend = 256
$4
[[site]]
backends = { static = ["127.0.0.1:$5", "127.0.0.1:$6", "127.0.0.1:$7"] }
CONF
}
