#!/usr/bin/env bash
# The production topology on this machine, without containers:
#   nginx (:8080) -> 3 tailcast instances (:8081-8083) -> FerretDB (:27018, or MONGODB_URL)
#                                                      -> NATS JetStream cluster of 3 (:14222-14224)
#
#   bash deploy/local.sh up        start what is not running; prints the address to open
#   bash deploy/local.sh status    what runs, and each instance's /ready
#   bash deploy/local.sh down      stop everything it started (SIGTERM, then SIGKILL after 20 s)
#   bash deploy/local.sh clean     down, then remove the data directory
#   bash deploy/local.sh nginx-conf PREFIX LISTEN UPSTREAM...
#                                  write PREFIX/nginx.conf running deploy/nginx/tailcast.conf on
#                                  LISTEN (e.g. 127.0.0.1:8080) over the UPSTREAM instances
#                                  (host:port ...), as the current user; used by `up` and the tests.
#                                  With TAILCAST_NGINX_TLS_LISTEN (host:port), TAILCAST_NGINX_CERT and
#                                  TAILCAST_NGINX_KEY (PEM files) it also listens there with TLS and HTTP/2
#
# Needs: `npx -y -p node@24.21.0 -- npm ci` (builds dist/, fetches the pinned Node), and nginx, nats-server and FerretDB:
#   bash scripts/test-services.sh install      (as root: apt-get install -y nginx nats-server; FerretDB with go)
# Environment: TAILCAST_LOCAL_DIR (data, logs, pid files; default /tmp/tailcast-local),
# TAILCAST_LOCAL_PORT (nginx, default 8080), TAILCAST_LOCAL_TLS_PORT (nginx HTTPS with HTTP/2, default 8443), MONGODB_URL (use that server instead of starting FerretDB).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${TAILCAST_LOCAL_DIR:-/tmp/tailcast-local}
LISTEN_PORT=${TAILCAST_LOCAL_PORT:-8080}
# nginx's HTTPS (HTTP/2) port, with a self-signed certificate made on the first `up`.
TLS_PORT=${TAILCAST_LOCAL_TLS_PORT:-8443}
SITE="$ROOT/deploy/nginx/tailcast.conf"
# The pinned runtime (README "Runtime") when installed, else the node on PATH.
if [ -x "$ROOT/node_modules/.bin/node" ]; then NODE=${NODE:-$ROOT/node_modules/.bin/node}; else NODE=${NODE:-node}; fi
# The instances' ports are the ones in deploy/nginx/tailcast.conf. The others stay clear of the
# usual ones (4222, 27017): Debian's nats-server package runs its own server on 4222.
INSTANCE_PORTS=(8081 8082 8083)
NATS_PORTS=(14222 14223 14224)
NATS_ROUTE_PORTS=(16222 16223 16224)
NATS_MONITOR_PORTS=(18222 18223 18224)
FERRETDB_PORT=27018

die() {
  echo "local.sh: $*" >&2
  exit 1
}
say() { echo "local.sh: $*"; }

# A self-signed certificate for localhost and 127.0.0.1 in $DIR/tls (made once, kept across ups):
# browsers ask to accept it once. For a real name, put its certificate and key there instead.
tls_cert() {
  [ -s "$DIR/tls/cert.pem" ] && [ -s "$DIR/tls/key.pem" ] && return
  command -v openssl >/dev/null || die "openssl is missing (apt-get install -y openssl): it makes the local HTTPS certificate"
  mkdir -p "$DIR/tls"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 365 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$DIR/tls/key.pem" -out "$DIR/tls/cert.pem" 2>/dev/null ||
    die "openssl could not make the certificate in $DIR/tls"
  chmod 600 "$DIR/tls/key.pem"
  say "made a self-signed certificate: $DIR/tls/cert.pem"
}

# nginx-conf PREFIX LISTEN UPSTREAM...: the shipped site file with its listen address and upstream
# servers replaced, in a main config of its own (pid, logs, temp files under PREFIX).
nginx_conf() {
  local prefix=$1 listen=$2
  shift 2
  [ $# -gt 0 ] || die "usage: local.sh nginx-conf PREFIX LISTEN UPSTREAM..."
  mkdir -p "$prefix/tmp"
  # HTTPS (HTTP/2) too when TAILCAST_NGINX_TLS_LISTEN, TAILCAST_NGINX_CERT and TAILCAST_NGINX_KEY are set.
  local tls=${TAILCAST_NGINX_TLS_LISTEN:-}
  if [ -n "$tls" ] && { [ -z "${TAILCAST_NGINX_CERT:-}" ] || [ -z "${TAILCAST_NGINX_KEY:-}" ]; }; then
    die "TAILCAST_NGINX_TLS_LISTEN needs TAILCAST_NGINX_CERT and TAILCAST_NGINX_KEY"
  fi
  awk -v listen="$listen" -v ups="$*" -v tls="$tls" -v cert="${TAILCAST_NGINX_CERT:-}" -v key="${TAILCAST_NGINX_KEY:-}" '
    /^upstream tailcast/ { inup = 1 }
    inup && /^[ \t]*server / {
      if (!done) { n = split(ups, a, " "); for (i = 1; i <= n; i++) { line = $0; sub(/server [^ ;]+/, "server " a[i], line); print line }; done = 1 }
      next
    }
    inup && /^}/ { inup = 0 }
    /^[ \t]*listen .*ssl/ { if (tls != "") print "    listen " tls " ssl http2;"; next }
    /^[ \t]*listen / { print "    listen " listen ";"; next }
    /^[ \t]*ssl_certificate / { if (tls != "") print "    ssl_certificate     " cert ";"; next }
    /^[ \t]*ssl_certificate_key / { if (tls != "") print "    ssl_certificate_key " key ";"; next }
    /^[ \t]*ssl_/ { if (tls != "") print; next }
    { print }
  ' "$SITE" >"$prefix/tailcast.conf"
  {
    echo "# Written by deploy/local.sh nginx-conf: nginx as the current user, everything under $prefix."
    # Only a master started as root switches users; here its workers stay the user who started it.
    if [ "$(id -u)" = 0 ]; then echo "user root;"; fi
    cat <<EOF
worker_processes 1;
pid $prefix/nginx.pid;
error_log $prefix/error.log notice;
# A reload lets old workers finish their streams this long; their clients then reconnect and resume.
worker_shutdown_timeout ${TAILCAST_NGINX_SHUTDOWN_TIMEOUT:-10s};
events { worker_connections 4096; }
http {
    access_log $prefix/access.log;
    client_body_temp_path $prefix/tmp/body;
    proxy_temp_path $prefix/tmp/proxy;
    fastcgi_temp_path $prefix/tmp/fastcgi;
    uwsgi_temp_path $prefix/tmp/uwsgi;
    scgi_temp_path $prefix/tmp/scgi;
    include $prefix/tailcast.conf;
}
EOF
  } >"$prefix/nginx.conf"
}

nginx_bin() {
  if [ -x /usr/sbin/nginx ]; then echo /usr/sbin/nginx; else command -v nginx 2>/dev/null || true; fi
}
nats_bin() {
  if [ -x /usr/sbin/nats-server ]; then echo /usr/sbin/nats-server; else command -v nats-server 2>/dev/null || true; fi
}
ferretdb_bin() {
  local b
  b="$(go env GOPATH 2>/dev/null || echo "$HOME/go")/bin/ferretdb"
  if [ -x "$b" ]; then echo "$b"; else command -v ferretdb 2>/dev/null || true; fi
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# http_ok URL: the URL answers 2xx.
http_ok() { "$NODE" -e 'fetch(process.argv[1]).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))' "$1"; }

running() { [ -f "$DIR/run/$1.pid" ] && kill -0 "$(cat "$DIR/run/$1.pid")" 2>/dev/null; }

# wait_for NAME WHAT CMD...: until CMD succeeds (60 s at most) while NAME's process lives.
wait_for() {
  local name=$1 what=$2 i
  shift 2
  for i in $(seq 1 600); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    running "$name" || die "$name exited; see $DIR/logs/$name.log"
    sleep 0.1
  done
  die "$name did not get $what within 60 s; see $DIR/logs/$name.log"
}

# start NAME CMD...: run CMD in the background with its log and pid file, unless NAME runs already.
start() {
  local name=$1
  shift
  if running "$name"; then
    say "$name runs already (pid $(cat "$DIR/run/$name.pid"))"
    return 1
  fi
  nohup "$@" >"$DIR/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$DIR/run/$name.pid"
  say "$name started (pid $!, log $DIR/logs/$name.log)"
}

need_free() {
  local name=$1 port=$2
  running "$name" && return 0
  if port_busy "$port"; then die "port $port (for $name) is in use by another program; stop it first"; fi
}

up() {
  [ -f "$ROOT/dist/cli.js" ] || die "dist/cli.js is missing: run npm install (it builds dist/) in $ROOT"
  local nginx nats ferretdb
  nginx=$(nginx_bin)
  nats=$(nats_bin)
  [ -n "$nginx" ] || die "nginx is missing: bash scripts/test-services.sh install (or as root: apt-get install -y nginx)"
  [ -n "$nats" ] || die "nats-server is missing: bash scripts/test-services.sh install (or as root: apt-get install -y nats-server)"
  mkdir -p "$DIR/run" "$DIR/logs"
  local i
  for i in 0 1 2; do need_free "nats$((i + 1))" "${NATS_PORTS[$i]}"; need_free "tailcast$((i + 1))" "${INSTANCE_PORTS[$i]}"; done
  need_free nginx "$LISTEN_PORT"

  local mongo=${MONGODB_URL:-}
  if [ -z "$mongo" ]; then
    ferretdb=$(ferretdb_bin)
    [ -n "$ferretdb" ] || die "FerretDB is missing: bash scripts/test-services.sh install (or set MONGODB_URL to a MongoDB replica set)"
    need_free ferretdb "$FERRETDB_PORT"
    mkdir -p "$DIR/ferretdb"
    start ferretdb "$ferretdb" --handler=sqlite --sqlite-url="file:$DIR/ferretdb/" --state-dir="$DIR/ferretdb" \
      --listen-addr="127.0.0.1:$FERRETDB_PORT" --debug-addr=- --telemetry=disable --log-level=warn || true
    wait_for ferretdb "its port" port_busy "$FERRETDB_PORT"
    mongo="mongodb://127.0.0.1:$FERRETDB_PORT/"
  fi

  local routes
  for i in 0 1 2; do
    routes=$(for k in 0 1 2; do [ "$k" = "$i" ] || printf 'nats://127.0.0.1:%s,' "${NATS_ROUTE_PORTS[$k]}"; done)
    mkdir -p "$DIR/nats/n$((i + 1))"
    start "nats$((i + 1))" "$nats" -js -a 127.0.0.1 -p "${NATS_PORTS[$i]}" -m "${NATS_MONITOR_PORTS[$i]}" -n "n$((i + 1))" \
      -sd "$DIR/nats/n$((i + 1))" --cluster_name tailcast --cluster "nats://127.0.0.1:${NATS_ROUTE_PORTS[$i]}" --routes "${routes%,}" || true
  done
  # Healthy once JetStream is current on the node: the cluster has its meta leader.
  for i in 0 1 2; do wait_for "nats$((i + 1))" "JetStream" http_ok "http://127.0.0.1:${NATS_MONITOR_PORTS[$i]}/healthz"; done

  local nats_url
  nats_url=$(printf 'nats://127.0.0.1:%s,' "${NATS_PORTS[@]}")
  nats_url=${nats_url%,}
  for i in 0 1 2; do
    # The first one alone: it creates the collection and the streams.
    start "tailcast$((i + 1))" env HOST=127.0.0.1 PORT="${INSTANCE_PORTS[$i]}" TAILCAST_STORE=mongodb MONGODB_URL="$mongo" \
      NATS_URL="$nats_url" TAILCAST_NATS_REPLICAS=3 "$NODE" "$ROOT/dist/cli.js" serve || true
    [ "$i" != 0 ] || wait_for tailcast1 "/ready" http_ok "http://127.0.0.1:${INSTANCE_PORTS[0]}/ready"
  done
  for i in 1 2; do wait_for "tailcast$((i + 1))" "/ready" http_ok "http://127.0.0.1:${INSTANCE_PORTS[$i]}/ready"; done

  if ! running nginx; then
    tls_cert
    export TAILCAST_NGINX_TLS_LISTEN="127.0.0.1:$TLS_PORT" TAILCAST_NGINX_CERT="$DIR/tls/cert.pem" TAILCAST_NGINX_KEY="$DIR/tls/key.pem"
    local ups=()
    for i in 0 1 2; do ups+=("127.0.0.1:${INSTANCE_PORTS[$i]}"); done
    nginx_conf "$DIR/nginx" "127.0.0.1:$LISTEN_PORT" "${ups[@]}"
    "$nginx" -t -q -p "$DIR/nginx" -c "$DIR/nginx/nginx.conf" -e "$DIR/nginx/error.log" || die "nginx refused the configuration (see above)"
    # nginx daemonizes itself and writes its pid file; the copy in run/ is what status and down read.
    "$nginx" -p "$DIR/nginx" -c "$DIR/nginx/nginx.conf" -e "$DIR/nginx/error.log"
    for i in $(seq 1 100); do [ -s "$DIR/nginx/nginx.pid" ] && break; sleep 0.1; done
    cp "$DIR/nginx/nginx.pid" "$DIR/run/nginx.pid"
    say "nginx started (pid $(cat "$DIR/run/nginx.pid"), logs $DIR/nginx/)"
  fi
  wait_for nginx "/ready through it" http_ok "http://127.0.0.1:$LISTEN_PORT/ready"
  say "up: open https://127.0.0.1:$TLS_PORT/ (HTTP/2; self-signed certificate $DIR/tls/cert.pem: accept it once in the browser, or trust it)"
  say "up: plain HTTP on http://127.0.0.1:$LISTEN_PORT/ (nginx -> tailcast on ${INSTANCE_PORTS[*]} -> $mongo, NATS $nats_url)"
}

status() {
  local name pid
  for name in nginx tailcast1 tailcast2 tailcast3 nats1 nats2 nats3 ferretdb; do
    if running "$name"; then pid=$(cat "$DIR/run/$name.pid"); echo "$name: running (pid $pid)"; else echo "$name: stopped"; fi
  done
  local i
  for i in 0 1 2; do
    echo "tailcast$((i + 1)) /ready: $("$NODE" -e 'fetch(process.argv[1]).then(async (r) => console.log(r.status, await r.text()), (e) => console.log(e.cause?.code ?? e.message))' "http://127.0.0.1:${INSTANCE_PORTS[$i]}/ready")"
  done
}

down() {
  local name pid i
  # Front to back: nginx first, so that no request reaches an instance that is going away.
  for name in nginx tailcast1 tailcast2 tailcast3 nats1 nats2 nats3 ferretdb; do
    running "$name" || { rm -f "$DIR/run/$name.pid"; continue; }
    pid=$(cat "$DIR/run/$name.pid")
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      say "$name (pid $pid) still runs after 20 s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$DIR/run/$name.pid"
    say "$name stopped"
  done
}

case "${1:-}" in
  up) up ;;
  status) status ;;
  down) down ;;
  clean)
    down
    rm -rf "$DIR"
    say "removed $DIR"
    ;;
  nginx-conf)
    shift
    [ $# -ge 3 ] || die "usage: local.sh nginx-conf PREFIX LISTEN UPSTREAM..."
    nginx_conf "$@"
    ;;
  *) die "usage: local.sh up | status | down | clean | nginx-conf PREFIX LISTEN UPSTREAM..." ;;
esac
