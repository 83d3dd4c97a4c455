#!/usr/bin/env python3
"""Writes starting inputs for the fuzz targets into fuzz/seeds/<target>/ (not committed:
`cargo fuzz cmin` / `-merge=1` distils them, with what the fuzzer found, into fuzz/corpus/).

Sources: the JSON payloads of tests/providers/*.rs and tests/e2e_providers.rs, the CSV files of
tests/fixtures and tests/data (first rows), .env.example, and a few hand-written requests."""
import pathlib, re, sys

root = pathlib.Path(__file__).resolve().parents[2]
out = root / "fuzz" / "seeds"
PARSERS = 24  # selectors in fuzz/src/lib.rs::parsers


def write(target, name, data):
    d = out / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


payloads = set()
for f in sorted((root / "tests" / "providers").glob("*.rs")) + [root / "tests" / "e2e_providers.rs"]:
    for m in re.finditer(r'b?r(#+)"(.*?)"\1', f.read_text(), re.S):
        if m.group(2).strip()[:1] in "{[":
            payloads.add(m.group(2).encode())
for i, p in enumerate(sorted(payloads)):
    for which in range(PARSERS):
        # status byte 0 → 200; 10 → 429 with Retry-After (see STATUSES in fuzz/src/lib.rs)
        for meta in (0, 0x1A) if which % 5 == 0 else (0,):
            write("parsers", f"p{i:03}-{which:02}-{meta:02x}", bytes([which, meta]) + p)
for which in (10,):
    for t in (b"2024-01-15 16:00:00", b"2024-01-15", b"2024-01-15T16:00:00Z"):
        write("parsers", f"utc-{t.decode()[:10]}-{len(t)}", bytes([which, 0]) + t)

for f in sorted((root / "tests" / "fixtures").glob("*.csv")) + sorted((root / "tests" / "data").glob("*.csv")):
    lines = f.read_bytes().splitlines(keepends=True)[:30]
    write("replay", f.stem, b"".join(lines))
write("replay", "mixed-times", b"time,o,h,l,c,v\n20200101,1,2,0.5,1.5,10\n1577836800,1,1,1,1,\n"
      b"1577836800000,1,1,1,1,1\n2020-01-02T00:00:00+01:00,1,1,1,1,1\n2020-01-03 10:00,1,1,1,1,1\n"
      b"2020/01/04,1,1,1,1,1\n2020/01/04,2,2,2,2,2\nbad,1,1,1,1,1\n\xff,1,1,1,1,1\n")

env = []
for line in (root / ".env.example").read_text().splitlines():
    line = line.split("#", 1)[0].strip()
    if "=" in line:
        env.append(line)
write("config", "env-example", "\n".join(env).encode())
for line in env:
    write("config", "var-" + line.split("=", 1)[0], line.encode())
extra = [
    "SOURCES=yahoo,binance,synthetic\nSYMBOLS=AAPL,BTC/USD,^NDX",
    "SOURCES=twelvedata,alphavantage,polygon,finnhub\nTWELVEDATA_API_KEY=k\nALPHAVANTAGE_API_KEY=k\nPOLYGON_API_KEY=k\nFINNHUB_API_KEY=k",
    "SYMBOL_MAP=yahoo:NAS100=^NDX,binance:BTCUSD=BTCUSDT",
    "MARKET_HOURS=*:always,NAS100:cme_index,AAPL:us_equity",
    "TIMEFRAMES=1s,15s,1m,5m,1h,4h,1d",
    "VWAP_SESSION=1d\nVWAP_OFFSET=0",
    "COLLECTION_INTERVAL=500ms\nTICK_DEADLINE=400ms",
    "REDIS_URL=redis://user:secret@127.0.0.1:6379/0",
    "FINNHUB_CANDLES=true\nBINANCE_WS_URL=wss://stream.binance.com:9443/ws",
    "YAHOO_RATE_PER_MINUTE=30\nYAHOO_RATE_PER_DAY=2000\nPROVIDER_HTTP_TIMEOUT=5s",
    "STREAM_RECONNECT_MIN=1s\nSTREAM_RECONNECT_MAX=60s\nSTREAM_SILENCE_TIMEOUT=30s",
]
for i, e in enumerate(extra):
    write("config", f"extra-{i}", e.encode())

requests = [
    "GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /metrics HTTP/1.1\r\n\r\nGET /metrics/json HTTP/1.1\r\n\r\n",
    "GET /signals/EURUSD?tf=1m HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /features/eurusd?tf=5m HTTP/1.1\r\n\r\n",
    "GET /signals/BTC%2FUSD HTTP/1.1\r\n\r\n",
    "GET /bars/EURUSD?tf=1m&limit=10 HTTP/1.1\r\n\r\n",
    "HEAD /bars/%5ENDX?limit=1&tf=1d HTTP/1.1\r\nConnection: close\r\n\r\n",
    "POST /health HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
    "GET /nope?a=1&a=2 HTTP/1.0\r\n\r\n",
    "GET /signals/%FF HTTP/1.1\r\n\r\n",
    "GET /features/EURUSD?tf=1m+ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "GARBAGE\r\n\r\n",
    "GET /" + "a" * 9000 + " HTTP/1.1\r\n\r\n",
    "GET /health HTTP/1.1\r\n" + "X-A: b\r\n" * 120 + "\r\n",
    "GET /streaming/sse HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /streaming/channels HTTP/1.1\r\n\r\nGET /streaming/latest/stream:market_data:EURUSD HTTP/1.1\r\n\r\n",
    "GET /streaming/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
]
for i, r in enumerate(requests):
    write("http", f"req-{i:02}", r.encode())
print("seeds in", out, file=sys.stderr)
