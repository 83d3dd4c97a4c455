/*!
Where the pipeline's output goes, in one direction:

```text
collector ──TickBatch──▶ writer ──▶ history (buffer, then a transaction every BATCH_WRITE_INTERVAL)
                                │     = sqlite or postgres
                                └─▶ redis  (its own queue; only after history has the batch)
                                      ▲
                         reconcile ───┘ reads history, rebuilds the rings (and gives history
                                        the bars only a ring kept after a crash)
```

- `writer.rs` — the one place the collector hands batches to: history first, then Redis.
- `history.rs` — the one type everything above the stores holds: SQLite or PostgreSQL, with the
  same semantics; `buffer.rs` (the rows not written yet) and `fault.rs` (why writes fail, for
  `/health` and the log) are shared by both.
- `sqlite/` — durable history, rejects, gaps and indicator checkpoints in one SQLite file (the
  default); knows nothing of Redis.
- `postgres/` — the same in PostgreSQL (`POSTGRES_URL`), which several shards can share.
- `redis/` — the bot's knowledge base: rings of closed bars, features, messages (pub/sub and a
  stream per symbol), on one Redis or a Redis Cluster (`redis/conn.rs`); never reads history
  itself.
- `reconcile.rs` — resync, the only place the two stores meet.
- `snapshot.rs` — the in-process latest state per symbol, read lock-free by the HTTP API (the
  collector swaps it; it is not fed by the writer).

Every store gets the same [`TickBatch`] (behind an `Arc`), so a slow Redis never slows history or
the collector: a batch Redis cannot queue is recovered from history by a resync.
*/

/// A symbol the HTTP API added or removed (`/streaming/config/instruments`), as every history
/// store keeps it (`sqlite::SqliteStore::instruments`, `save_instrument`, `forget_instrument`);
/// `crate::instruments` applies the rows on top of `SYMBOLS` at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstrumentRow {
    /// Upper-cased, as `SYMBOLS` spells it.
    pub symbol: String,
    /// A calendar name (`MARKET_HOURS`' names), when one was given.
    pub calendar: Option<String>,
    /// `true`: collected; `false`: a symbol of `SYMBOLS` removed.
    pub active: bool,
    /// When it was first added (Unix ms): additions start in this order.
    pub added_ms: i64,
    pub updated_ms: i64,
}

mod buffer;
pub mod fault;
pub mod history;
pub mod postgres;
pub mod reconcile;
pub mod redis;
pub mod snapshot;
pub mod sqlite;
pub mod writer;
