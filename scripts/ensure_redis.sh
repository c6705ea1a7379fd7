#!/usr/bin/env bash
# Make sure Redis answers at 127.0.0.1:6379 (tests marked `redis` use it): start it,
# installing Debian's redis-server first if it is absent; fail clearly otherwise.
set -euo pipefail

ping_redis() {
  python3 -c 'import socket,sys; s=socket.create_connection(("127.0.0.1",6379),2); s.sendall(b"PING\r\n"); sys.exit(0 if s.recv(7).startswith(b"+PONG") else 1)' 2>/dev/null
}

if ping_redis; then
  echo "redis answers at 127.0.0.1:6379"
  exit 0
fi
echo "no Redis answers at 127.0.0.1:6379; starting one"
if ! command -v redis-server >/dev/null 2>&1 && ! command -v apt-get >/dev/null 2>&1; then
  if docker info >/dev/null 2>&1; then
    echo "no redis-server here, but Docker runs: the tests start Redis in a container"
    exit 0
  fi
  echo "no redis-server, no apt-get and no Docker engine: start Redis and set REDIS_URL" >&2
  exit 1
fi
if ! command -v redis-server >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq redis-server
fi
redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
for _ in $(seq 1 30); do
  ping_redis && { echo "redis answers at 127.0.0.1:6379"; exit 0; }
  sleep 1
done
echo "Redis still does not answer at 127.0.0.1:6379 after 30 s" >&2
exit 1
