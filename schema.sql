-- barkeep's SQLite schema. Applied at every start (idempotent); WAL and synchronous=NORMAL are
-- set on the connection. Times are Unix milliseconds (UTC).

-- Every closed bar, upserted by (symbol, timeframe, open time).
CREATE TABLE IF NOT EXISTS bars (
    symbol    TEXT    NOT NULL,
    timeframe TEXT    NOT NULL,
    ts        INTEGER NOT NULL,
    open      REAL    NOT NULL,
    high      REAL    NOT NULL,
    low       REAL    NOT NULL,
    close     REAL    NOT NULL,
    volume    REAL    NOT NULL,
    source    TEXT    NOT NULL,
    quality   REAL    NOT NULL,
    PRIMARY KEY (symbol, timeframe, ts)
) WITHOUT ROWID;

-- What the validator (or the bar builder) refused: the dead-letter table, for inspection.
-- Prices are stored as received; NaN and infinities are stored as NULL with the text in raw.
CREATE TABLE IF NOT EXISTS rejects (
    id          INTEGER PRIMARY KEY,
    symbol      TEXT    NOT NULL,
    source      TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    ts          INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    open        REAL,
    high        REAL,
    low         REAL,
    close       REAL,
    volume      REAL,
    raw         TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS rejects_by_symbol ON rejects (symbol, received_at);

-- Intervals without data between two bars ([from_ts, to_ts)); recorded, never filled.
CREATE TABLE IF NOT EXISTS gaps (
    symbol    TEXT    NOT NULL,
    timeframe TEXT    NOT NULL,
    from_ts   INTEGER NOT NULL,
    to_ts     INTEGER NOT NULL,
    -- open: not filled (yet); repaired: its bars were fetched again and stored; empty: the
    -- provider confirmed no trades in it (not asked again).
    status    TEXT    NOT NULL DEFAULT 'open',
    PRIMARY KEY (symbol, timeframe, from_ts)
) WITHOUT ROWID;

-- Indicator checkpoints: MessagePack state (with its own format version) after the bar at
-- last_ts, so a restart resumes exactly.
CREATE TABLE IF NOT EXISTS indicator_state (
    symbol     TEXT    NOT NULL,
    timeframe  TEXT    NOT NULL,
    last_ts    INTEGER NOT NULL,
    state      BLOB    NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (symbol, timeframe)
) WITHOUT ROWID;

-- Changes made at run time through /streaming/config/… that outlive a restart (README,
-- Run-time control): a JSON value per shard and name (`cadence:market_data`, `workers`); shard
-- is SHARD (`0/2`), or '' for an instance that is not sharded. (A table made before the shard
-- column is rebuilt with it at start, its rows kept under ''.)
CREATE TABLE IF NOT EXISTS runtime_settings (
    shard      TEXT    NOT NULL DEFAULT '',
    name       TEXT    NOT NULL,
    value      TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (shard, name)
) WITHOUT ROWID;

-- Instruments changed at run time over the HTTP API (/streaming/config/instruments), applied on
-- top of SYMBOLS at every start: active = 1 collects the symbol (with its calendar, when one was
-- given, instead of MARKET_HOURS' or the default), active = 0 is the removal of a symbol that
-- SYMBOLS lists. added_at orders the additions.
CREATE TABLE IF NOT EXISTS instruments (
    symbol     TEXT    NOT NULL PRIMARY KEY,
    calendar   TEXT,
    active     INTEGER NOT NULL,
    added_at   INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
