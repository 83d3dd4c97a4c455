"""How a bot reads barkeep's Redis stream and resumes where it stopped (redis-py + msgpack).

    pip install redis msgpack
    python3 examples/bot_stream_reader.py redis://127.0.0.1:6379 EURUSD 0 10

Reads COUNT messages of the symbol's stream after LAST_ID ("0": from the oldest kept, "$": only
new ones) with XREAD BLOCK, and prints one JSON line: each message's id, seq, timestamp and
data_type, the last close of each timeframe, and the last id, to pass as LAST_ID next time.
"""
import json
import sys

import msgpack
import redis

url, symbol, last_id, count = (
    sys.argv[1:5] + ["redis://127.0.0.1:6379", "EURUSD", "$", "10"][len(sys.argv[1:5]):]
)
r = redis.Redis.from_url(url)
key = f"barkeep:stream:{{{symbol}}}"  # the braces are part of the name (a hash tag)

read = []
while len(read) < int(count):
    # Blocks up to 10 s for entries after last_id; None when nothing came.
    reply = r.xread({key: last_id}, block=10_000, count=int(count) - len(read))
    if not reply:
        sys.exit(f"no message within 10 s on {key}: is barkeep running with the stream on?")
    for _stream, entries in reply:
        for entry_id, fields in entries:
            msg = msgpack.unpackb(fields[b"msg"])
            # {channel, data_type: "tick" | "revision", timestamp, symbol, data, vendor, seq, ...}
            closes = {}
            if msg["data_type"] == "tick":
                for tf, frame in msg["data"].items():
                    bar = frame["live"] or frame["closed"][-1]
                    closes[tf] = bar["bar"]["close"]
            read.append({
                "id": entry_id.decode(),
                "seq": msg["seq"],
                "timestamp": msg["timestamp"],
                "data_type": msg["data_type"],
                "closes": closes,
            })
            last_id = entry_id  # store it: the next XREAD goes on from here, nothing lost

print(json.dumps({"messages": read, "last_id": last_id.decode() if isinstance(last_id, bytes) else last_id}))
