"""How a bot reads barkeep's Redis keys (redis-py + msgpack).

    pip install redis msgpack
    python3 examples/bot_reader.py redis://127.0.0.1:6379 EURUSD 1m

Keys carry the symbol as a hash tag: barkeep:bars:{EURUSD}:1m (the braces are in the name).
Prints one JSON line with the newest closed bars, the latest features, and the first event
received on the symbol's channel.
"""
import json
import sys
import time

import msgpack
import redis

url, symbol, tf = (sys.argv[1:4] + ["redis://127.0.0.1:6379", "EURUSD", "1m"][len(sys.argv[1:4]):])
r = redis.Redis.from_url(url)

# The newest 5 closed bars, oldest first: maps {ts, open, high, low, close, volume, source, quality}.
bars = [msgpack.unpackb(b) for b in r.lrange(f"barkeep:bars:{{{symbol}}}:{tf}", -5, -1)]

# The newest bar and its features: {ts, age_ms, forming, open, high, low, close, volume, sma_20,
# rsi_14, ...}; None once barkeep stops.
raw = r.get(f"barkeep:features:{{{symbol}}}:{tf}")
features = msgpack.unpackb(raw) if raw else None

# Push: one message per tick, {data_type: "tick", timestamp, seq, data: {"1m": {closed: [{bar,
# features}, ...], live: {bar}}}} (the forming bar's features: the features value above);
# "revision" when a gap was filled after the fact.
pubsub = r.pubsub()
pubsub.subscribe(f"barkeep:events:{{{symbol}}}")
event = None
deadline = time.monotonic() + 10
while event is None and time.monotonic() < deadline:
    message = pubsub.get_message(timeout=1.0)
    if message and message["type"] == "message":
        event = msgpack.unpackb(message["data"])
if event is None:
    sys.exit("no event within 10 s: is barkeep running and writing to this Redis?")

print(json.dumps({"bars": bars, "features": features, "event": event}))
