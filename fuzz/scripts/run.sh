#!/usr/bin/env bash
# Usage: fuzz/scripts/run.sh TARGET SECONDS — one libFuzzer job (fork mode: it goes on after a
# crash, each crash saved under fuzz/artifacts/TARGET/), niced, on fuzz/work/TARGET plus the
# seeds and the committed corpus. Build first: (cd fuzz && cargo fuzz build -s none -a -O).
set -euo pipefail
cd "$(dirname "$0")/.."
t=$1; secs=$2
bin=target/x86_64-unknown-linux-gnu/release/$t
mkdir -p "work/$t" "artifacts/$t" "corpus/$t"
dict=(); [ -f "dicts/$t.dict" ] && dict=(-dict="dicts/$t.dict")
max_len=4096; [ "$t" = http ] && max_len=20000
exec nice -n 19 "$bin" -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
  -max_total_time="$secs" -timeout=10 -rss_limit_mb=1024 -max_len=$max_len \
  -artifact_prefix="artifacts/$t/" "${dict[@]}" "work/$t" "seeds/$t" "corpus/$t"
