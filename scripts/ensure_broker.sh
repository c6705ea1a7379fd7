#!/usr/bin/env bash
# Make sure an AMQP broker answers at AMQP_URL: start the local RabbitMQ (installing
# Debian's rabbitmq-server first if it is absent) when it does not; fail clearly otherwise.
# Then make sure the local broker has the consistent-hash exchange, which SHARDS > 0 needs.
set -euo pipefail
cd "$(dirname "$0")/.."

AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}"
shown="$(python3 scripts/amqp_ping.py --redact "$AMQP_URL")"
HASH_PLUGIN=rabbitmq_consistent_hash_exchange

# Enabling a plugin that is already enabled changes nothing, and a running node
# takes it without a restart. rabbitmq-plugins reaches only the node on this
# machine: a broker elsewhere (a container, a cluster) needs it enabled there.
enable_hash_exchange() {
  if ! command -v rabbitmq-plugins >/dev/null 2>&1; then
    echo "rabbitmq-plugins is not on this machine: enable $HASH_PLUGIN on the broker" \
      "at $shown yourself if the worker runs with SHARDS > 0" >&2
    return 0
  fi
  if ! rabbitmq-plugins -q enable "$HASH_PLUGIN" >/dev/null; then
    echo "could not enable $HASH_PLUGIN on the local RabbitMQ node;" \
      "run: rabbitmq-plugins enable $HASH_PLUGIN" >&2
    return 1
  fi
  echo "$HASH_PLUGIN enabled"
}

if python3 scripts/amqp_ping.py "$AMQP_URL"; then
  echo "broker answers at $shown"
  enable_hash_exchange
  exit 0
fi

echo "no AMQP broker answers at $shown; starting RabbitMQ"
if ! command -v rabbitmq-server >/dev/null 2>&1 && ! command -v apt-get >/dev/null 2>&1; then
  if docker info >/dev/null 2>&1; then
    echo "no rabbitmq-server here, but Docker runs: the tests start RabbitMQ in a container"
    exit 0
  fi
  echo "no rabbitmq-server, no apt-get and no Docker engine: start a broker and set AMQP_URL" >&2
  exit 1
fi
if ! command -v rabbitmq-server >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq rabbitmq-server
fi
rabbitmq-server -detached || true
for _ in $(seq 1 60); do
  if python3 scripts/amqp_ping.py "$AMQP_URL"; then
    echo "broker answers at $shown"
    enable_hash_exchange
    exit 0
  fi
  sleep 2
done
echo "RabbitMQ still does not answer at $shown after 120 s; /var/log/rabbitmq/ says why" >&2
exit 1
