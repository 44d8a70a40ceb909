#!/usr/bin/env bash
# Makes sure a Redis server answers on 127.0.0.1:6379 for the tests (the scale-out tests'
# Celery broker) and that redis-server is installed (the broker-drop test starts a private
# one of its own). Where either is missing, installs Debian's redis-server and starts it.
set -euo pipefail
cd "$(dirname "$0")/.."

reachable() {
    .venv/bin/python -c "import redis; redis.Redis('127.0.0.1', 6379, socket_connect_timeout=3).ping()" \
        2>/dev/null
}

if ! command -v redis-server >/dev/null; then
    echo "redis-server is not installed: installing it." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q redis-server
fi
reachable && exit 0
echo "Redis is not answering on 127.0.0.1:6379: starting it." >&2
redis-server --port 6379 --bind 127.0.0.1 --daemonize yes --save '' --appendonly no
for _ in $(seq 1 30); do
    reachable && exit 0
    sleep 1
done
echo "Redis still unreachable on 127.0.0.1:6379" >&2
exit 1
