#!/usr/bin/env bash
# Make sure an AMQP broker answers at AMQP_URL: start the local RabbitMQ (installing
# Debian's rabbitmq-server first if it is absent) when it does not; fail clearly otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}"
shown="$(python3 scripts/amqp_ping.py --redact "$AMQP_URL")"

if python3 scripts/amqp_ping.py "$AMQP_URL"; then
  echo "broker answers at $shown"
  exit 0
fi

echo "no AMQP broker answers at $shown; starting RabbitMQ"
if ! command -v rabbitmq-server >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq rabbitmq-server
fi
rabbitmq-server -detached || true
for _ in $(seq 1 60); do
  if python3 scripts/amqp_ping.py "$AMQP_URL"; then
    echo "broker answers at $shown"
    exit 0
  fi
  sleep 2
done
echo "RabbitMQ still does not answer at $shown after 120 s; /var/log/rabbitmq/ says why" >&2
exit 1
