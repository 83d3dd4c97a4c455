#!/usr/bin/env bash
# Fault-injection soak (examples/soak.rs): barkeep for N minutes under random provider errors,
# timeouts and outages, Redis kills, SIGKILL/SIGTERM restarts and a full disk, then the
# invariants. Needs redis-server on PATH (and `unshare` for the full-disk fault).
# Usage: scripts/soak.sh [minutes] [more soak arguments, e.g. --seed 42 --symbols 30]
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-6}"
shift || true
cargo build --release --bin barkeep --example soak
exec "${CARGO_TARGET_DIR:-target}/release/examples/soak" --minutes "$minutes" "$@"
