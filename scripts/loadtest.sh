#!/usr/bin/env bash
# Runs the load harness at 100, 1 000 and 10 000 symbols (figures for BENCHMARKS.md).
# Needs redis-server on PATH.
#   scripts/loadtest.sh [seconds per run]
#   scripts/loadtest.sh redis-cost [seconds per run] [base commit]
# The second measures Redis's cost per symbol-tick of an earlier build (default: e7792c4, the
# key layout with three messages per symbol-tick) and of this one, alternately in one run at
# 1 000 and 10 000 symbols, each against the raw floor on the same server. The earlier build is
# made in a git worktree under target/ with its own target directory.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
if [ "${1:-}" = "redis-cost" ]; then
  seconds="${2:-20}"
  base="${3:-e7792c4}"
  tree="$target/loadtest-base-$base"
  [ -d "$tree" ] || git worktree add --detach "$tree" "$base"
  CARGO_TARGET_DIR="$target/loadtest-base-target" cargo build --release --bin barkeep --manifest-path "$tree/Cargo.toml"
  cargo build --release --bin barkeep --example loadtest
  for n in 1000 10000; do
    for build in base current; do
      bin="$target/release/barkeep"
      [ "$build" = base ] && bin="$target/loadtest-base-target/release/barkeep"
      "$target/release/examples/loadtest" --symbols "$n" --seconds "$seconds" --redis-only --barkeep "$bin" \
        | tee "$target/loadtest-redis-cost-$n-$build.txt"
    done
  done
  exit 0
fi
seconds="${1:-20}"
cargo build --release --bin barkeep --example loadtest
for n in 100 1000 10000; do
  "$target/release/examples/loadtest" --symbols "$n" --seconds "$seconds" | tee "$target/loadtest-$n.txt"
done
