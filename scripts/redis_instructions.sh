#!/usr/bin/env bash
# Redis's cost per symbol-tick in instructions (deterministic, unlike CPU time on a shared box):
# redis-server runs under valgrind's callgrind, a barkeep binary writes N simulated symbols to it
# (TIMEFRAMES=1s,1m, every market open, a PSUBSCRIBE barkeep:events:* subscriber as in the load
# harness); the counts are zeroed after WARM seconds and dumped after WINDOW more, then divided
# by symbols x ticks in that window. Needs valgrind, redis-server, redis-cli, curl, python3.
#   scripts/redis_instructions.sh BARKEEP_BINARY [SYMBOLS=1000] [WARM=12] [WINDOW=20] [NAME=VALUE ...]
# Prints the total and, per command, the instructions inside it (inclusive).
set -euo pipefail
bin=$1 n=${2:-1000} warm=${3:-12} window=${4:-20}
shift $(($# < 4 ? $# : 4))
dir=$(mktemp -d)
port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
rp=$(port) hp=$(port)
valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" \
  redis-server --port "$rp" --save '' --appendonly no --dir "$dir" >"$dir/redis.log" 2>&1 &
vg=$!
trap 'kill "$vg" "${bk:-}" "${sub:-}" 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 150); do redis-cli -p "$rp" ping >/dev/null 2>&1 && break; sleep 0.2; done
redis-cli -p "$rp" psubscribe 'barkeep:events:*' >/dev/null 2>&1 &
sub=$!
symbols=$(python3 -c "print(','.join('S%05d' % i for i in range($n)))")
env -i PATH="$PATH" SYMBOLS="$symbols" TIMEFRAMES=1s,1m MARKET_HOURS='*:always' WARMUP_BARS=0 \
  BOOTSTRAP_ON_START=false SYNTHETIC_BAD_TICK_RATE=0 REDIS_URL="redis://127.0.0.1:$rp" \
  SQLITE_PATH="$dir/b.db" HTTP_ADDR="127.0.0.1:$hp" RUST_LOG=warn "$@" "$bin" run >"$dir/barkeep.log" 2>&1 &
bk=$!
ticks() {
  curl -s "127.0.0.1:$hp/metrics/json" \
    | python3 -c 'import json, sys; print(int(json.load(sys.stdin)["counters"]["ticks_total"]))'
}
sleep "$warm"
t0=$(ticks)
callgrind_control -z "$vg" >/dev/null 2>&1
sleep "$window"
t1=$(ticks)
callgrind_control -d "$vg" >/dev/null 2>&1
sleep 1
out=$(ls -t "$dir"/cg.out* | head -1)
callgrind_annotate --inclusive=yes --threshold=100 "$out" 2>/dev/null | python3 -c "
import re, sys
per = $n * ($t1 - $t0)
wanted = ['setCommand', 'xaddCommand', 'publishCommand', 'rpushCommand', 'ltrimCommand',
          'processMultibulkBuffer', 'serverCron']
found = {}
for line in sys.stdin:
    m = re.match(r'\s*([\d,]+) \(.*?\)\s+(.*)', line)
    if not m:
        continue
    value, name = int(m.group(1).replace(',', '')), m.group(2)
    if 'PROGRAM TOTALS' in name:
        found.setdefault('total', value)
    for w in wanted:
        if ':' + w + ' ' in name:
            found.setdefault(w, value)
print('%d symbols, %d ticks: instructions per symbol-tick' % ($n, $t1 - $t0))
for k, v in found.items():
    print('  %-24s %8.0f' % (k, v / per))
"
