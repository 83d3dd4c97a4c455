#!/usr/bin/env bash
# Runs every criterion bench plus the redis-benchmark baseline, for BENCHMARKS.md.
# Needs redis-server and redis-benchmark on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes >/dev/null
trap 'redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true' EXIT
sleep 0.3
echo "redis-benchmark baseline (LPUSH, pipeline 16, 50 clients):"
redis-benchmark -p "$port" -P 16 -t lpush -n 2000000 -q | tr '\r' '\n' | grep -E 'requests per second' | tail -1
redis-benchmark -p "$port" -P 16 -t lpush -n 2000000 -d 110 -q | tr '\r' '\n' | grep -E 'requests per second' | tail -1
cargo bench --bench indicators --bench pipeline --bench redis_sink -- --warm-up-time 1 --measurement-time 5 2>&1 \
  | grep -E '^[a-z_]+/|time:|thrpt:' | tee target/bench.txt
