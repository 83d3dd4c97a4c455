#!/usr/bin/env bash
# Runs the load harness at 100, 1 000 and 10 000 symbols (figures for BENCHMARKS.md).
# Needs redis-server on PATH. Usage: scripts/loadtest.sh [seconds per run]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-20}"
cargo build --release --bin barkeep --example loadtest
for n in 100 1000 10000; do
  ./target/release/examples/loadtest --symbols "$n" --seconds "$seconds" | tee "target/loadtest-$n.txt"
done
