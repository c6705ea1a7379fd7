#!/usr/bin/env bash
# `make demo`: show what the product does today, on this machine, and report
# only what was observed.
set -euo pipefail
cd "$(dirname "$0")/.."
export AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}"

step() { printf '\n== %s\n' "$*"; }

step "1. Commands a producer may publish, checked as the worker checks them"
b24-worker validate examples/commands.jsonl

step "2. Commands the worker refuses, with the one-line reason a producer gets back"
if b24-worker validate --quiet examples/invalid-commands.jsonl; then
  echo "demo: FAILED: the invalid sample was accepted" >&2
  exit 1
fi

step "3. The sandbox portal: a local Bitrix24 with the cloud's limits and traps"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
portal_log="$(mktemp)"
b24-worker sandbox --port "$port" --seed 3 >"$portal_log" 2>&1 &
portal=$!
trap 'kill "$portal" 2>/dev/null || true' EXIT
webhook="http://127.0.0.1:$port/rest/1/sandboxwebhook01/"
for _ in $(seq 1 100); do
  grep -q "limits:" "$portal_log" && break
  sleep 0.1
done
cat "$portal_log"
python scripts/demo_portal.py "$webhook"
kill -TERM "$portal"
wait "$portal" || true
trap - EXIT
rm -f "$portal_log"

step "4. The worker against the local RabbitMQ"
bash scripts/ensure_broker.sh
log="$(mktemp)"
b24-worker run >"$log" 2>&1 &
pid=$!
for _ in $(seq 1 50); do
  grep -q '"worker.started"' "$log" && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.2
done
if ! grep -q '"worker.started"' "$log"; then
  kill "$pid" 2>/dev/null || true
  echo "demo: FAILED: the worker did not start; its output:" >&2
  cat "$log" >&2
  exit 1
fi
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
cat "$log"
rm -f "$log"
if [ "$status" -ne 0 ]; then
  echo "demo: FAILED: the worker exited with $status after SIGTERM" >&2
  exit 1
fi
echo
echo "demo: the worker connected to the broker, logged its settings with secrets masked,"
echo "and stopped cleanly on SIGTERM. Applying commands to a portal is not built yet."
