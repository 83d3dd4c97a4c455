-- barkeep's PostgreSQL schema (POSTGRES_URL), the same tables as schema.sql (SQLite). Applied at
-- every start, idempotent, under an advisory lock so that shards starting together against one
-- database do not race. Times are Unix milliseconds (UTC). Several shards share one database:
-- each writes only the symbols it owns, so their rows never collide.

-- Every closed bar, upserted by (symbol, timeframe, open time).
CREATE TABLE IF NOT EXISTS bars (
    symbol    TEXT             NOT NULL,
    timeframe TEXT             NOT NULL,
    ts        BIGINT           NOT NULL,
    open      DOUBLE PRECISION NOT NULL,
    high      DOUBLE PRECISION NOT NULL,
    low       DOUBLE PRECISION NOT NULL,
    close     DOUBLE PRECISION NOT NULL,
    volume    DOUBLE PRECISION NOT NULL,
    source    TEXT             NOT NULL,
    quality   DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (symbol, timeframe, ts)
);

-- What the validator (or the bar builder) refused: the dead-letter table, for inspection.
-- Prices are stored as received; NaN and infinities are stored as NULL with the text in raw.
CREATE TABLE IF NOT EXISTS rejects (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    symbol      TEXT             NOT NULL,
    source      TEXT             NOT NULL,
    reason      TEXT             NOT NULL,
    ts          BIGINT           NOT NULL,
    received_at BIGINT           NOT NULL,
    open        DOUBLE PRECISION,
    high        DOUBLE PRECISION,
    low         DOUBLE PRECISION,
    close       DOUBLE PRECISION,
    volume      DOUBLE PRECISION,
    raw         TEXT             NOT NULL
);
CREATE INDEX IF NOT EXISTS rejects_by_symbol ON rejects (symbol, received_at);

-- Intervals without data between two bars ([from_ts, to_ts)); recorded, never filled.
-- status: open (not filled yet), repaired (its bars were fetched again and stored), empty (the
-- provider confirmed no trades in it; not asked again).
CREATE TABLE IF NOT EXISTS gaps (
    symbol    TEXT   NOT NULL,
    timeframe TEXT   NOT NULL,
    from_ts   BIGINT NOT NULL,
    to_ts     BIGINT NOT NULL,
    status    TEXT   NOT NULL DEFAULT 'open',
    PRIMARY KEY (symbol, timeframe, from_ts)
);

-- Indicator checkpoints: MessagePack state (with its own format version) after the bar at
-- last_ts, so a restart resumes exactly.
CREATE TABLE IF NOT EXISTS indicator_state (
    symbol     TEXT   NOT NULL,
    timeframe  TEXT   NOT NULL,
    last_ts    BIGINT NOT NULL,
    state      BYTEA  NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (symbol, timeframe)
);

-- Run-time settings the control API keeps across restarts: one JSON text per shard and name;
-- shard is SHARD (`0/2`), or '' for an instance that is not sharded, so shards sharing this
-- database keep their own.
CREATE TABLE IF NOT EXISTS runtime_settings (
    shard      TEXT   NOT NULL DEFAULT '',
    name       TEXT   NOT NULL,
    value      TEXT   NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (shard, name)
);
-- A table made before the shard column (primary key name alone): the column is added, its rows
-- kept under '', and the primary key becomes (shard, name). Does nothing the second time.
ALTER TABLE runtime_settings ADD COLUMN IF NOT EXISTS shard TEXT NOT NULL DEFAULT '';
DO $$
DECLARE
    old_key TEXT;
BEGIN
    SELECT c.conname INTO old_key FROM pg_constraint c
     WHERE c.conrelid = 'runtime_settings'::regclass AND c.contype = 'p'
       AND array_length(c.conkey, 1) = 1;
    IF old_key IS NOT NULL THEN
        EXECUTE format('ALTER TABLE runtime_settings DROP CONSTRAINT %I', old_key);
        ALTER TABLE runtime_settings ADD PRIMARY KEY (shard, name);
    END IF;
END
$$;

-- TimescaleDB, where the extension is installed (or can be): bars becomes a hypertable
-- partitioned on ts in chunks of 7 days (604 800 000 ms; ts is an integer time column), existing
-- rows migrated. Without the extension this does nothing and bars stays a plain table.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')
       AND EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
        BEGIN
            CREATE EXTENSION IF NOT EXISTS timescaledb;
        EXCEPTION WHEN OTHERS THEN
            RAISE NOTICE 'barkeep: TimescaleDB is available but cannot be created here (%); bars stays a plain table', SQLERRM;
        END;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        PERFORM create_hypertable('bars', 'ts', chunk_time_interval => 604800000::bigint,
                                  if_not_exists => TRUE, migrate_data => TRUE);
    END IF;
END
$$;

-- Instruments changed at run time over the HTTP API (/streaming/config/instruments), applied on
-- top of SYMBOLS at every start (as in schema.sql).
CREATE TABLE IF NOT EXISTS instruments (
    symbol     TEXT    NOT NULL PRIMARY KEY,
    calendar   TEXT,
    active     BOOLEAN NOT NULL,
    added_at   BIGINT  NOT NULL,
    updated_at BIGINT  NOT NULL
);
