#!/usr/bin/env bash
# Throughput of the sandbox portal for crm.item.update with limits off.
#
# The sandbox runs on one core (taskset -c 0) and wrk on the other (-c 1), so
# the load generator is not the bottleneck. Only 127.0.0.1 is used; the
# sandbox started here is stopped by its PID on exit.
#
# Usage: bench/sandbox_throughput.sh [seconds] [connections]
# The summary is also added to bench/results/sandbox_throughput.txt (every run kept).
# Needs wrk (Debian: apt-get install -y wrk).
set -euo pipefail

cd "$(dirname "$0")/.."
DURATION="${1:-10}"
CONNECTIONS="${2:-64}"
PYTHON="${PYTHON:-.venv/bin/python}"
PORT="$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"

command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install -y wrk)" >&2; exit 2; }
PIN_SERVER=(); PIN_LOAD=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  PIN_SERVER=(taskset -c 0); PIN_LOAD=(taskset -c 1)
fi

LOG="$(mktemp)"
"${PIN_SERVER[@]}" "$PYTHON" -m sandbox --host 127.0.0.1 --port "$PORT" --no-limits --seed 10 >"$LOG" 2>&1 &
SANDBOX_PID=$!
cleanup() { kill "$SANDBOX_PID" 2>/dev/null || true; wait "$SANDBOX_PID" 2>/dev/null || true; rm -f "$LOG"; }
trap cleanup EXIT

URL="http://127.0.0.1:${PORT}/rest/1/sandboxwebhook01/crm.item.update"
for _ in $(seq 100); do
  curl -fs -o /dev/null -X POST -H 'Content-Type: application/json' \
    -d '{"entityTypeId":2,"id":1,"fields":{"title":"warm"}}' "$URL" && break
  sleep 0.1
done

LOAD_BEFORE="$(awk '{print $1 ", " $2 ", " $3}' /proc/loadavg)"
OUT="$("${PIN_LOAD[@]}" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s bench/sandbox_update.lua "$URL")"
echo "$OUT"
NON2XX="$(echo "$OUT" | awk '/Non-2xx/ {print $NF}')"
RPS="$(echo "$OUT" | awk '/Requests\/sec/ {print $2}')"
echo
echo "crm.item.update requests/s (one sandbox core, limits off): ${RPS}"
if [ -n "$NON2XX" ]; then echo "non-2xx responses: ${NON2XX}" >&2; exit 1; fi
SAVES="$(curl -fs "http://127.0.0.1:${PORT}/_sandbox/counters" | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["saves"])')"
echo "items saved by the sandbox: ${SAVES}"

# The summary is added to bench/results like every other benchmark's figures (each run kept).
LATENCY="$(echo "$OUT" | awk '/^ +(50|99)%/ {printf "%s p%s, ", $2, substr($1, 1, length($1) - 1)}')"
mkdir -p bench/results
{
  echo "# sandbox_throughput, run $(date --iso-8601=seconds) on $(nproc) cores"
  echo "crm.item.update JSON posts, each changing an item; sandbox pinned to one core, wrk (${CONNECTIONS} connections, ${DURATION} s) on the other"
  echo "load average ${LOAD_BEFORE} (1, 5, 15 min) at the start"
  echo "requests/s: ${RPS}; latency ${LATENCY%, }; non-2xx: ${NON2XX:-0}; items saved: ${SAVES}"
} >> bench/results/sandbox_throughput.txt
