#!/usr/bin/env bash
# What an idle tailcast instance costs FerretDB: one server on a fresh collection, 20,000 events
# POSTed, then 20 s with no client and no post; prints the CPU share of the FerretDB process and of
# the server over those 20 s (from /proc/<pid>/stat).
#
#   bash scripts/test-services.sh run -- bash bench/ferretdb-idle.sh [DIST]    # DIST: a build's dist/ (default ./dist)
set -euo pipefail
cd "$(dirname "$0")/.."
DIST=${1:-dist}
NODE=node_modules/node/bin/node
PORT=${TAILCAST_BENCH_PORT:-18123}
FERRETDB_PID=$(pgrep -f "ferretdb.*${TAILCAST_TEST_FERRETDB_DIR:?run under scripts/test-services.sh}" | head -1)
unset NATS_URL
TAILCAST_STORE=mongodb TAILCAST_MONGODB_COLLECTION="idle_$$" TAILCAST_MONGODB_CAPPED_MAX=30000 LOG_LEVEL=warn PORT=$PORT \
  "$NODE" "$DIST/cli.js" serve >/dev/null 2>&1 &
SERVER_PID=$!
trap 'kill $SERVER_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 200); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/ready" && break; sleep 0.3; done
"$NODE" -e '
const url = `http://127.0.0.1:${process.argv[1]}/messages`
let i = 0
const lane = async () => { while (i < 20000) { const k = i++; const r = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ text: `seed ${k}`, room: "idle" }) }); if (r.status !== 202) throw new Error(`POST ${r.status}`) } }
Promise.all(Array.from({ length: 20 }, lane)).then(() => console.log("20,000 events stored"))' "$PORT"
sleep 15
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICKS=$(getconf CLK_TCK)
f0=$(cpu "$FERRETDB_PID"); s0=$(cpu "$SERVER_PID"); sleep 20; f1=$(cpu "$FERRETDB_PID"); s1=$(cpu "$SERVER_PID")
echo "idle 20 s on 20,000 events: FerretDB $(( (f1 - f0) * 100 / TICKS / 20 )) % of a core, tailcast $(( (s1 - s0) * 100 / TICKS / 20 )) % ($(cut -d' ' -f1-3 /proc/loadavg) load)"
