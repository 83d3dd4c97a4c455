/*!
Where the pipeline's output goes, in one direction:

```text
collector ──TickBatch──▶ writer ──▶ sqlite (buffer, then a transaction every BATCH_WRITE_INTERVAL)
                                └─▶ redis  (its own queue; only after SQLite has the batch)
                                      ▲
                         reconcile ───┘ reads SQLite, rebuilds the rings (and gives SQLite
                                        the bars only a ring kept after a crash)
```

- `writer.rs` — the one place the collector hands batches to: SQLite first, then Redis.
- `sqlite/` — durable history, rejects, gaps and indicator checkpoints; knows nothing of Redis.
- `redis/` — the bot's knowledge base: rings of closed bars, features, messages (pub/sub and a
  stream per symbol); never reads SQLite itself.
- `reconcile.rs` — resync, the only place the two stores meet.
- `snapshot.rs` — the in-process latest state per symbol, read lock-free by the HTTP API (the
  collector swaps it; it is not fed by the writer).

Every store gets the same [`TickBatch`] (behind an `Arc`), so a slow Redis never slows SQLite or
the collector: a batch Redis cannot queue is recovered from SQLite by a resync.
*/

pub mod reconcile;
pub mod redis;
pub mod snapshot;
pub mod sqlite;
pub mod writer;
