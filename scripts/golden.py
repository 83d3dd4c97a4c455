#!/usr/bin/env python3
"""Regenerate the indicator golden fixtures in tests/fixtures/ from TA-Lib.

Reference: the TA-Lib C library bundled in the `ta-lib==0.8.2` wheel (`import talib`):

    pip install ta-lib==0.8.2 numpy
    python3 scripts/golden.py [--data-dir tests/data] [--out tests/fixtures]

Inputs: GOOG.csv, BTCUSD.csv and EURUSD.csv from tests/data (header `,Open,High,Low,Close,Volume`,
first column a date or a date-time; tests/data/README.md says where they come from; of
EURUSD.csv only the first 2000 hourly bars, which hold 17 weekend closures), plus synthetic
series generated here deterministically (fixed seeds): flat stretches, tiny (~1e-4) and huge
(~1e6) prices, and a 1-second random walk at 0.01 % volatility that crosses UTC midnight.

Each fixture is a CSV file. Its first line is `# ` followed by a JSON object with the series
name and the indicator parameters (barkeep's `IndicatorParams` field names); then a header and
one row per bar: ts (bar open, Unix ms), open, high, low, close, volume, and the 15 outputs in
barkeep's order. An empty cell is a NaN (not ready yet). Floats are written with repr(), which
round-trips exactly.

VWAP has no TA-Lib function: it is recomputed exactly here, Σ(typical·volume) / Σ volume per
session with math.fsum (correctly rounded sums), typical = (high + low + close) / 3, sessions
starting every `vwap_session_ms` at `vwap_offset_ms` after the epoch (UTC midnight by default),
NaN while the session has no volume — pandas-ta's `vwap(anchor="D")` without its rounding drift.
"""

import argparse
import csv
import datetime as dt
import json
import math
import os
import sys

import numpy as np
import talib

TALIB_PIP_VERSION = "0.8.2"

DEFAULT_PARAMS = {
    "sma": 20,
    "ema_fast": 12,
    "ema_slow": 26,
    "rsi": 14,
    "bb_period": 20,
    "bb_k": 2.0,
    "atr": 14,
    "macd_fast": 12,
    "macd_slow": 26,
    "macd_signal": 9,
    "stoch_k": 14,
    "stoch_slow_k": 3,
    "stoch_d": 3,
    "vwap_session_ms": 86_400_000,
    "vwap_offset_ms": 0,
}

# Short periods: more warm-up edges and flat windows per bar, a non-default VWAP anchor.
ALT_PARAMS = {
    "sma": 5,
    "ema_fast": 3,
    "ema_slow": 7,
    "rsi": 5,
    "bb_period": 10,
    "bb_k": 1.5,
    "atr": 7,
    "macd_fast": 5,
    "macd_slow": 13,
    "macd_signal": 4,
    "stoch_k": 5,
    "stoch_slow_k": 2,
    "stoch_d": 4,
    "vwap_session_ms": 3_600_000 * 6,
    "vwap_offset_ms": 3_600_000 * 2,
}

OUTPUTS = [
    "sma", "ema_fast", "ema_slow", "rsi", "bb_upper", "bb_middle", "bb_lower", "atr",
    "macd", "macd_signal", "macd_hist", "stoch_k", "stoch_d", "obv", "vwap",
]

DAY_MS = 86_400_000
# Bars of tests/data/EURUSD.csv in the eurusd_1h fixture (the file has 5000).
EURUSD_BARS = 2000


def load_csv(path, limit=None):
    """Bars from a `,Open,High,Low,Close,Volume` file, the first `limit` rows (all by default);
    ts = the date's UTC midnight, or the date-time (`YYYY-MM-DD HH:MM:SS`, read as UTC like
    `barkeep replay` does), in ms."""
    ts, o, h, l, c, v = [], [], [], [], [], []
    with open(path, newline="") as f:
        rows = csv.reader(f)
        next(rows)
        for row in rows:
            if limit is not None and len(ts) == limit:
                break
            fmt = "%Y-%m-%d" if len(row[0]) == 10 else "%Y-%m-%d %H:%M:%S"
            t = dt.datetime.strptime(row[0], fmt).replace(tzinfo=dt.timezone.utc)
            ts.append(int(t.timestamp()) * 1000)
            o.append(float(row[1]))
            h.append(float(row[2]))
            l.append(float(row[3]))
            c.append(float(row[4]))
            v.append(float(row[5]))
    return np.array(ts, dtype=np.int64), *(np.array(x, dtype=np.float64) for x in (o, h, l, c, v))


def bars_from_closes(rng, closes, first_open, spread_vol, decimals, volume_scale, whole_volume=True):
    """OHLCV around a close path: open = previous close, high/low a little outside, prices
    rounded to `decimals` places (the nearest double to a tick, so repr() stays short)."""
    n = len(closes)
    tick = 10.0 ** -decimals
    close = np.round(np.asarray(closes), decimals)
    open_ = np.empty(n)
    open_[0] = round(first_open, decimals)
    open_[1:] = close[:-1]
    top = np.maximum(open_, close)
    bottom = np.minimum(open_, close)
    high = np.round(top * (1 + np.abs(rng.normal(0, spread_vol, n))), decimals)
    low = np.round(bottom * (1 - np.abs(rng.normal(0, spread_vol, n))), decimals)
    high = np.maximum(high, top)
    low = np.maximum(np.minimum(low, bottom), tick)
    volume = rng.exponential(volume_scale, n)
    volume = np.floor(volume) if whole_volume else np.round(volume, 6)
    return open_, high, low, close, volume


def random_walk(rng, start, vol, n):
    return start * np.exp(np.cumsum(rng.normal(0, vol, n)))


def synthetic_flat():
    """Trends, flat closes, fully flat bars (H = L = C), a 3x jump into a flat run, zero volume."""
    rng = np.random.default_rng(20240601)
    parts = []
    price = 50.0
    for kind, n in [("walk", 120), ("flat_bar", 60), ("walk", 80), ("flat_close", 45),
                    ("walk", 50), ("jump_flat", 70), ("walk", 60), ("flat_bar", 25),
                    ("walk", 90), ("flat_bar", 100), ("walk", 60)]:
        if kind == "walk":
            closes = random_walk(rng, price, 0.01, n)
            parts.append(bars_from_closes(rng, closes, price, 0.004, 2, 1000.0))
        else:
            level = price * 3.0 if kind == "jump_flat" else price
            level = round(level, 2)
            closes = np.full(n, level)
            o, h, l, c, v = bars_from_closes(rng, closes, price, 0.004, 2, 1000.0)
            if kind in ("flat_bar", "jump_flat"):
                o, h, l = c.copy(), c.copy(), c.copy()
                o[0] = round(price, 2) if kind == "jump_flat" else c[0]
                h[0] = max(h[0], o[0])
                l[0] = min(l[0], o[0])
            parts.append((o, h, l, c, v))
        price = float(parts[-1][3][-1])
    o, h, l, c, v = (np.concatenate([p[i] for p in parts]) for i in range(5))
    v[::37] = 0.0  # zero-volume bars, some of them at a session start
    start = 1_700_000_000_000 - (1_700_000_000_000 % DAY_MS)
    ts = start + np.arange(len(c), dtype=np.int64) * 3_600_000
    return ts, o, h, l, c, v


def synthetic_scaled(seed, level, vol, decimals, n, bar_ms):
    rng = np.random.default_rng(seed)
    closes = random_walk(rng, level, vol, n)
    o, h, l, c, v = bars_from_closes(rng, closes, level, vol / 2, decimals, 5.0, whole_volume=False)
    start = 1_700_000_000_000 - (1_700_000_000_000 % DAY_MS)
    ts = start + np.arange(n, dtype=np.int64) * bar_ms
    return ts, o, h, l, c, v


def synthetic_seconds():
    """1-second bars of a random walk at 0.01 % volatility, starting 30 minutes before midnight."""
    rng = np.random.default_rng(7)
    n = 2400
    closes = random_walk(rng, 30_000.0, 1e-4, n)
    o, h, l, c, v = bars_from_closes(rng, closes, 30_000.0, 5e-5, 2, 0.3, whole_volume=False)
    midnight = 1_700_006_400_000  # a UTC midnight
    ts = midnight - 1_800_000 + np.arange(n, dtype=np.int64) * 1000
    return ts, o, h, l, c, v


def exact_vwap(ts, h, l, c, v, session_ms, offset_ms):
    out = np.full(len(c), np.nan)
    session = None
    pv, vol = [], []
    for i in range(len(c)):
        s = (int(ts[i]) - offset_ms) // session_ms
        if s != session:
            session, pv, vol = s, [], []
        typical = (h[i] + l[i] + c[i]) / 3.0
        pv.append(typical * v[i])
        vol.append(v[i])
        total = math.fsum(vol)
        if total > 0:
            out[i] = math.fsum(pv) / total
    return out


def outputs(ts, h, l, c, v, p):
    upper, middle, lower = talib.BBANDS(c, p["bb_period"], p["bb_k"], p["bb_k"], 0)
    macd, signal, hist = talib.MACD(c, p["macd_fast"], p["macd_slow"], p["macd_signal"])
    slow_k, slow_d = talib.STOCH(h, l, c, p["stoch_k"], p["stoch_slow_k"], 0, p["stoch_d"], 0)
    return [
        talib.SMA(c, p["sma"]),
        talib.EMA(c, p["ema_fast"]),
        talib.EMA(c, p["ema_slow"]),
        talib.RSI(c, p["rsi"]),
        upper, middle, lower,
        talib.ATR(h, l, c, p["atr"]),
        macd, signal, hist,
        slow_k, slow_d,
        talib.OBV(c, v),
        exact_vwap(ts, h, l, c, v, p["vwap_session_ms"], p["vwap_offset_ms"]),
    ]


def cell(x):
    return "" if math.isnan(x) else repr(float(x))


def write_fixture(out_dir, name, series, params, note):
    ts, o, h, l, c, v = series
    assert np.all(h >= l) and np.all(l > 0) and np.all(v >= 0), name
    outs = outputs(ts, h, l, c, v, params)
    path = os.path.join(out_dir, f"{name}.csv")
    meta = {"name": name, "note": note, "talib": TALIB_PIP_VERSION, "params": params}
    with open(path, "w", newline="") as f:
        f.write("# " + json.dumps(meta, sort_keys=True) + "\n")
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["ts", "open", "high", "low", "close", "volume"] + OUTPUTS)
        for i in range(len(c)):
            w.writerow([int(ts[i])] + [repr(float(x[i])) for x in (o, h, l, c, v)]
                       + [cell(col[i]) for col in outs])
    return path, len(c)


def main():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=os.path.join(repo, "tests", "data"),
                    help="directory with GOOG.csv, BTCUSD.csv and EURUSD.csv "
                    "(default: tests/data)")
    ap.add_argument("--out", default=os.path.join(repo, "tests", "fixtures"),
                    help="output directory (default: tests/fixtures)")
    args = ap.parse_args()

    installed = getattr(talib, "__version__", "?")
    if installed != TALIB_PIP_VERSION:
        sys.exit(f"need ta-lib=={TALIB_PIP_VERSION}, found {installed}")
    os.makedirs(args.out, exist_ok=True)

    goog = load_csv(os.path.join(args.data_dir, "GOOG.csv"))
    btc = load_csv(os.path.join(args.data_dir, "BTCUSD.csv"))
    # EURUSD.csv has 5000 hourly bars (2017-04-19 .. 2018-02-07); the first 2000 keep the
    # fixture modest and still hold 17 weekend closures (Friday 20:00 to Sunday 21:00, 49 h).
    eurusd = load_csv(os.path.join(args.data_dir, "EURUSD.csv"), limit=EURUSD_BARS)
    fixtures = [
        ("goog", goog, DEFAULT_PARAMS, "GOOG daily 2004-2013"),
        ("btcusd", btc, DEFAULT_PARAMS, "BTCUSD monthly from 2012"),
        ("btcusd_alt", btc, ALT_PARAMS, "BTCUSD monthly, short periods"),
        ("flat", synthetic_flat(), DEFAULT_PARAMS, "flat stretches, a jump, zero volumes"),
        ("flat_alt", synthetic_flat(), ALT_PARAMS, "flat stretches, short periods"),
        ("tiny", synthetic_scaled(11, 1e-4, 1e-4, 12, 800, 60_000),
         DEFAULT_PARAMS, "prices ~1e-4, 0.01 % moves, 1-minute bars"),
        ("huge", synthetic_scaled(12, 1e6, 3e-3, 2, 800, 3_600_000),
         DEFAULT_PARAMS, "prices ~1e6, 0.3 % moves, hourly bars"),
        ("seconds", synthetic_seconds(), DEFAULT_PARAMS,
         "1-second random walk at 0.01 % volatility across UTC midnight"),
        ("eurusd_1h", eurusd, DEFAULT_PARAMS,
         f"EURUSD hourly from 2017-04-19, first {EURUSD_BARS} bars, weekend closures"),
    ]
    total = 0
    for name, series, params, note in fixtures:
        path, n = write_fixture(args.out, name, series, params, note)
        size = os.path.getsize(path)
        total += size
        print(f"{path}: {n} bars, {size / 1024:.0f} KiB")
    print(f"total {total / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
