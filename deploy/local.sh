#!/usr/bin/env bash
# The production topology on this machine, without containers (ports with the default base 8080):
#   nginx (:8080) -> 3 tailcast instances (:8081-8083) -> FerretDB (:8100, or MONGODB_URL)
#                                                      -> NATS JetStream cluster of 3 (:8090-8092)
#
#   bash deploy/local.sh up        start what is not running (every port checked first); prints the address to open
#   bash deploy/local.sh status    one line per component: instances ready or not, their NATS node, the writer-lease holder
#   bash deploy/local.sh roll      restart the instances one after another, each once the one before is ready again
#   bash deploy/local.sh down      stop everything it started, in parallel (front first: nginx and the instances, then NATS and FerretDB)
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
# Environment (read by `up`; status, roll and down read what `up` wrote in the data directory):
#   TAILCAST_LOCAL_DIR            data, logs, pid files and the ports in use (default /tmp/tailcast-local)
#   TAILCAST_LOCAL_PORT           the base port (default 8080): nginx on it, the others after it:
#   TAILCAST_LOCAL_INSTANCE_PORT  first of the 3 instances (default base+1)
#   TAILCAST_LOCAL_NATS_PORT      first of the 3 NATS client ports (default base+10); routes +3, monitoring +6
#   TAILCAST_LOCAL_FERRETDB_PORT  FerretDB (default base+20)
#   TAILCAST_LOCAL_TLS_PORT       nginx's HTTPS with HTTP/2, self-signed certificate (default base+363: 8443)
#   MONGODB_URL                   use that server instead of starting FerretDB
# Any TAILCAST_* setting in the environment reaches the instances (README "Configuration").
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${TAILCAST_LOCAL_DIR:-/tmp/tailcast-local}
STATE="$DIR/local.env"
SITE="$ROOT/deploy/nginx/tailcast.conf"
# The pinned runtime (README "Runtime") when installed, else the node on PATH.
if [ -x "$ROOT/node_modules/.bin/node" ]; then NODE=${NODE:-$ROOT/node_modules/.bin/node}; else NODE=${NODE:-node}; fi
COMPONENTS=(nginx tailcast1 tailcast2 tailcast3 nats1 nats2 nats3 ferretdb)

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

# http_ok URL: the URL answers 2xx. (Connection: close: a kept-alive connection would hold an
# instance's shutdown drain until the drain deadline.)
http_ok() { "$NODE" -e 'fetch(process.argv[1], { headers: { connection: "close" } }).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))' "$1"; }

running() { [ -f "$DIR/run/$1.pid" ] && kill -0 "$(cat "$DIR/run/$1.pid")" 2>/dev/null; }
any_running() {
  local name
  for name in "${COMPONENTS[@]}"; do running "$name" && return 0; done
  return 1
}

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
  nohup "$@" >>"$DIR/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$DIR/run/$name.pid"
  say "$name started (pid $!, log $DIR/logs/$name.log)"
}

# --- Ports -------------------------------------------------------------------------------------
# `up` takes them from the environment and writes them to $STATE; everything else reads $STATE, so
# that status, roll and down work from any shell that names the same data directory.
ports_from_env() {
  local base=${TAILCAST_LOCAL_PORT:-8080} inst nats
  inst=${TAILCAST_LOCAL_INSTANCE_PORT:-$((base + 1))}
  nats=${TAILCAST_LOCAL_NATS_PORT:-$((base + 10))}
  LISTEN_PORT=$base
  INSTANCE_PORTS=("$inst" "$((inst + 1))" "$((inst + 2))")
  NATS_PORTS=("$nats" "$((nats + 1))" "$((nats + 2))")
  NATS_ROUTE_PORTS=("$((nats + 3))" "$((nats + 4))" "$((nats + 5))")
  NATS_MONITOR_PORTS=("$((nats + 6))" "$((nats + 7))" "$((nats + 8))")
  FERRETDB_PORT=${TAILCAST_LOCAL_FERRETDB_PORT:-$((base + 20))}
  TLS_PORT=${TAILCAST_LOCAL_TLS_PORT:-$((base + 363))}
  MONGO=${MONGODB_URL:-}
}

save_state() {
  (
    umask 077
    {
      echo "# Written by deploy/local.sh up; read by status, roll and down."
      # -g: load_state sources this inside a function.
      declare -p LISTEN_PORT TLS_PORT INSTANCE_PORTS NATS_PORTS NATS_ROUTE_PORTS NATS_MONITOR_PORTS FERRETDB_PORT MONGO NATS_URL_ALL | sed -e 's/^declare -- /declare -g /' -e 's/^declare -a /declare -ga /'
    } >"$STATE"
  )
}

load_state() {
  [ -f "$STATE" ] || return 1
  # shellcheck disable=SC1090
  source "$STATE"
}

# Every port this `up` will open: distinct, and free unless its component already runs.
check_ports() {
  local -A seen=()
  local -a entries=("nginx:$LISTEN_PORT:TAILCAST_LOCAL_PORT" "nginx:$TLS_PORT:TAILCAST_LOCAL_TLS_PORT")
  local entry name port var i
  for i in 0 1 2; do entries+=("tailcast$((i + 1)):${INSTANCE_PORTS[$i]}:TAILCAST_LOCAL_INSTANCE_PORT"); done
  for i in 0 1 2; do
    entries+=("nats$((i + 1)):${NATS_PORTS[$i]}:TAILCAST_LOCAL_NATS_PORT" "nats$((i + 1)):${NATS_ROUTE_PORTS[$i]}:TAILCAST_LOCAL_NATS_PORT" "nats$((i + 1)):${NATS_MONITOR_PORTS[$i]}:TAILCAST_LOCAL_NATS_PORT")
  done
  [ -n "$MONGO" ] || entries+=("ferretdb:$FERRETDB_PORT:TAILCAST_LOCAL_FERRETDB_PORT")
  for entry in "${entries[@]}"; do
    IFS=: read -r name port var <<<"$entry"
    [[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] || die "port '$port' for $name is not a port number (from $var or the base TAILCAST_LOCAL_PORT)"
    [ -z "${seen[$port]:-}" ] || die "port $port is wanted by both ${seen[$port]} and $name: set $var (or the base TAILCAST_LOCAL_PORT) apart"
    seen[$port]=$name
  done
  for entry in "${entries[@]}"; do
    IFS=: read -r name port var <<<"$entry"
    running "$name" && continue
    if port_busy "$port"; then die "port $port (for $name) is in use by another program: stop it, or choose other ports with $var (or the base TAILCAST_LOCAL_PORT)"; fi
  done
}

# --- Starting ----------------------------------------------------------------------------------
start_ferretdb() {
  local ferretdb
  ferretdb=$(ferretdb_bin)
  [ -n "$ferretdb" ] || die "FerretDB is missing: bash scripts/test-services.sh install (or set MONGODB_URL to a MongoDB replica set)"
  mkdir -p "$DIR/ferretdb"
  start ferretdb "$ferretdb" --handler=sqlite --sqlite-url="file:$DIR/ferretdb/" --state-dir="$DIR/ferretdb" \
    --listen-addr="127.0.0.1:$FERRETDB_PORT" --debug-addr=- --telemetry=disable --log-level=warn || true
  wait_for ferretdb "its port" port_busy "$FERRETDB_PORT"
}

start_nats() {
  local nats i routes
  nats=$(nats_bin)
  [ -n "$nats" ] || die "nats-server is missing: bash scripts/test-services.sh install (or as root: apt-get install -y nats-server)"
  for i in 0 1 2; do
    routes=$(for k in 0 1 2; do [ "$k" = "$i" ] || printf 'nats://127.0.0.1:%s,' "${NATS_ROUTE_PORTS[$k]}"; done)
    mkdir -p "$DIR/nats/n$((i + 1))"
    start "nats$((i + 1))" "$nats" -js -a 127.0.0.1 -p "${NATS_PORTS[$i]}" -m "${NATS_MONITOR_PORTS[$i]}" -n "n$((i + 1))" \
      -sd "$DIR/nats/n$((i + 1))" --cluster_name tailcast --cluster "nats://127.0.0.1:${NATS_ROUTE_PORTS[$i]}" --routes "${routes%,}" || true
  done
  # Healthy once JetStream is current on the node: the cluster has its meta leader.
  for i in 0 1 2; do wait_for "nats$((i + 1))" "JetStream" http_ok "http://127.0.0.1:${NATS_MONITOR_PORTS[$i]}/healthz"; done
}

# start_instance N (1-3): one tailcast instance, as the roll restarts it too.
start_instance() {
  local n=$1 mongo=$MONGO
  local -a sized=()
  if [ -z "$mongo" ]; then
    mongo="mongodb://127.0.0.1:$FERRETDB_PORT/"
    # FerretDB scans the collection for range reads (README "What differs on FerretDB"): a capped
    # collection of 10,000 events, not the 100,000 meant for MongoDB, unless set otherwise.
    sized=(TAILCAST_MONGODB_CAPPED_MAX="${TAILCAST_MONGODB_CAPPED_MAX:-10000}" TAILCAST_MONGODB_CAPPED_SIZE="${TAILCAST_MONGODB_CAPPED_SIZE:-16777216}")
  fi
  # TAILCAST_TRUST_PROXY: nginx's X-Forwarded-For names the client (for the per-address cap, logs,
  # presence). Ignored by a tailcast that does not know the setting yet.
  start "tailcast$n" env HOST=127.0.0.1 PORT="${INSTANCE_PORTS[$((n - 1))]}" TAILCAST_STORE=mongodb MONGODB_URL="$mongo" "${sized[@]}" \
    NATS_URL="$NATS_URL_ALL" TAILCAST_NATS_REPLICAS=3 TAILCAST_TRUST_PROXY=127.0.0.1 "$NODE" "$ROOT/dist/cli.js" serve
}

start_nginx() {
  local nginx i
  local -a ups=()
  nginx=$(nginx_bin)
  [ -n "$nginx" ] || die "nginx is missing: bash scripts/test-services.sh install (or as root: apt-get install -y nginx)"
  for i in 0 1 2; do ups+=("127.0.0.1:${INSTANCE_PORTS[$i]}"); done
  tls_cert
  TAILCAST_NGINX_TLS_LISTEN="127.0.0.1:$TLS_PORT" TAILCAST_NGINX_CERT="$DIR/tls/cert.pem" TAILCAST_NGINX_KEY="$DIR/tls/key.pem" \
    nginx_conf "$DIR/nginx" "127.0.0.1:$LISTEN_PORT" "${ups[@]}"
  "$nginx" -t -q -p "$DIR/nginx" -c "$DIR/nginx/nginx.conf" -e "$DIR/nginx/error.log" || die "nginx refused the configuration (see above)"
  # nginx daemonizes itself and writes its pid file; the copy in run/ is what status and down read.
  rm -f "$DIR/nginx/nginx.pid"
  "$nginx" -p "$DIR/nginx" -c "$DIR/nginx/nginx.conf" -e "$DIR/nginx/error.log"
  for i in $(seq 1 100); do [ -s "$DIR/nginx/nginx.pid" ] && break; sleep 0.1; done
  cp "$DIR/nginx/nginx.pid" "$DIR/run/nginx.pid"
  say "nginx started (pid $(cat "$DIR/run/nginx.pid"), logs $DIR/nginx/)"
}

up() {
  [ -f "$ROOT/dist/cli.js" ] || die "dist/cli.js is missing: run npm install (it builds dist/) in $ROOT"
  mkdir -p "$DIR/run" "$DIR/logs"
  # Something still runs from this directory: keep its ports (a restart must not move them).
  if any_running && load_state; then
    say "using the ports in $STATE (components of it still run)"
  else
    ports_from_env
    NATS_URL_ALL=$(printf 'nats://127.0.0.1:%s,' "${NATS_PORTS[@]}")
    NATS_URL_ALL=${NATS_URL_ALL%,}
  fi
  check_ports
  save_state

  if [ -z "$MONGO" ]; then start_ferretdb; fi
  start_nats
  local i
  # The first one alone: it creates the collection and the streams.
  start_instance 1 || true
  wait_for tailcast1 "/ready" http_ok "http://127.0.0.1:${INSTANCE_PORTS[0]}/ready"
  for i in 2 3; do start_instance "$i" || true; done
  for i in 2 3; do wait_for "tailcast$i" "/ready" http_ok "http://127.0.0.1:${INSTANCE_PORTS[$((i - 1))]}/ready"; done
  running nginx || start_nginx
  wait_for nginx "/ready through it" http_ok "http://127.0.0.1:$LISTEN_PORT/ready"
  say "up: open https://127.0.0.1:$TLS_PORT/ (HTTP/2; self-signed certificate $DIR/tls/cert.pem: accept it once in the browser, or trust it)"
  say "up: plain HTTP on http://127.0.0.1:$LISTEN_PORT/ (nginx -> tailcast on ${INSTANCE_PORTS[*]} -> ${MONGO:-FerretDB on $FERRETDB_PORT}, NATS $NATS_URL_ALL)"
}

# --- status ------------------------------------------------------------------------------------
# One line per component, from the pid files and ports in the data directory.
status() {
  load_state || {
    echo "nothing started from $DIR (no $STATE; TAILCAST_LOCAL_DIR names another directory?)"
    return 0
  }
  local name pid
  local -a nats_names=()
  for i in 0 1 2; do nats_names+=("127.0.0.1:${NATS_PORTS[$i]}=nats$((i + 1))"); done
  for name in "${COMPONENTS[@]}"; do
    if ! running "$name"; then
      if [ "$name" = ferretdb ] && [ -n "$MONGO" ]; then echo "ferretdb:  not used (MONGODB_URL given to up)"; else printf '%-10s stopped\n' "$name:"; fi
      continue
    fi
    pid=$(cat "$DIR/run/$name.pid")
    case "$name" in
      nginx) printf '%-10s running (pid %s) on http://127.0.0.1:%s/ and https://127.0.0.1:%s/\n' "$name:" "$pid" "$LISTEN_PORT" "$TLS_PORT" ;;
      tailcast*)
        local n=${name#tailcast}
        printf '%-10s %s\n' "$name:" "$("$NODE" -e '
          const [url, pid, port, names] = process.argv.slice(1)
          const node = (s) => (names.split(" ").find((x) => x.startsWith(`${s}=`)) ?? `=${s}`).split("=")[1]
          fetch(url, { headers: { connection: "close" } }).then(async (r) => {
            const b = await r.json().catch(() => ({}))
            const nats = b.nats === undefined ? "" : b.nats.connected ? `, NATS ${node(b.nats.server)}` : ", NATS disconnected"
            const writer = b.nats?.writer ? ", writer-lease holder" : ""
            const why = r.ok ? "" : ` (${b.status ?? r.status}${b.store && b.store !== "ok" ? `: store ${b.store}` : ""}${b.history ? `: history ${b.history}` : ""})`
            console.log(`${r.ok ? "ready" : "not ready"}${why} (pid ${pid}, :${port})${nats}${writer}`)
          }, (e) => console.log(`running (pid ${pid}, :${port}), /ready unanswered: ${e.cause?.code ?? e.message}`))
        ' "http://127.0.0.1:${INSTANCE_PORTS[$((n - 1))]}/ready" "$pid" "${INSTANCE_PORTS[$((n - 1))]}" "${nats_names[*]}")"
        ;;
      nats*)
        local k=${name#nats}
        if http_ok "http://127.0.0.1:${NATS_MONITOR_PORTS[$((k - 1))]}/healthz"; then h="JetStream healthy"; else h="JetStream not healthy yet"; fi
        printf '%-10s running (pid %s, :%s), %s\n' "$name:" "$pid" "${NATS_PORTS[$((k - 1))]}" "$h"
        ;;
      ferretdb) printf '%-10s running (pid %s, :%s)\n' "$name:" "$pid" "$FERRETDB_PORT" ;;
    esac
  done
}

# --- Stopping ----------------------------------------------------------------------------------
# stop_all NAME...: SIGTERM to all at once, then wait for all (SIGKILL after 25 s: an instance's
# own deadline, shutdownTimeoutSeconds, is 20 s).
stop_all() {
  local name i
  local -A pids=()
  for name in "$@"; do
    if running "$name"; then
      pids[$name]=$(cat "$DIR/run/$name.pid")
      kill -TERM "${pids[$name]}" 2>/dev/null || true
    else
      rm -f "$DIR/run/$name.pid"
    fi
  done
  for i in $(seq 1 250); do
    for name in "${!pids[@]}"; do
      if ! kill -0 "${pids[$name]}" 2>/dev/null; then
        unset "pids[$name]"
        rm -f "$DIR/run/$name.pid"
        say "$name stopped"
      fi
    done
    [ ${#pids[@]} -gt 0 ] || return 0
    sleep 0.1
  done
  for name in "${!pids[@]}"; do
    say "$name (pid ${pids[$name]}) still runs after 25 s: SIGKILL"
    kill -KILL "${pids[$name]}" 2>/dev/null || true
    rm -f "$DIR/run/$name.pid"
  done
}

down() {
  [ -d "$DIR/run" ] || {
    say "nothing started from $DIR"
    return 0
  }
  # Front first: nginx and the instances (which hand the writer lease over and close their NATS
  # and store connections), then NATS and FerretDB.
  stop_all nginx tailcast1 tailcast2 tailcast3
  stop_all nats1 nats2 nats3 ferretdb
}

# --- roll --------------------------------------------------------------------------------------
# The instances one after another: SIGTERM (the instance drains: README "Rolling restart"), start
# it again with the same settings, wait until it is ready, then the next.
roll() {
  load_state || die "nothing started from $DIR (no $STATE): run up first"
  local n pid i started
  for n in 1 2 3; do
    started=$(date +%s%N)
    if running "tailcast$n"; then
      pid=$(cat "$DIR/run/tailcast$n.pid")
      kill -TERM "$pid"
      for i in $(seq 1 250); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      if kill -0 "$pid" 2>/dev/null; then
        say "tailcast$n (pid $pid) still runs after 25 s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
      fi
      rm -f "$DIR/run/tailcast$n.pid"
    fi
    start_instance "$n"
    wait_for "tailcast$n" "/ready" http_ok "http://127.0.0.1:${INSTANCE_PORTS[$((n - 1))]}/ready"
    say "tailcast$n restarted and ready in $((($(date +%s%N) - started) / 1000000)) ms"
  done
  say "roll: done"
}

case "${1:-}" in
  up) up ;;
  status) status ;;
  roll) roll ;;
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
  *) die "usage: local.sh up | status | roll | down | clean | nginx-conf PREFIX LISTEN UPSTREAM..." ;;
esac
