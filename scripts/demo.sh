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

step "4. The worker: the samples published to RabbitMQ, applied to the sandbox, outcomes read back"
bash scripts/ensure_broker.sh
python scripts/demo.py
echo
echo "demo: every outcome above was read from the worker's result and dead-letter queues."
