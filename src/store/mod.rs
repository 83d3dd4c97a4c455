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
  stream per symbol); never reads history itself.
- `reconcile.rs` — resync, the only place the two stores meet.
- `snapshot.rs` — the in-process latest state per symbol, read lock-free by the HTTP API (the
  collector swaps it; it is not fed by the writer).

Every store gets the same [`TickBatch`] (behind an `Arc`), so a slow Redis never slows history or
the collector: a batch Redis cannot queue is recovered from history by a resync.
*/

mod buffer;
pub mod fault;
pub mod history;
pub mod postgres;
pub mod reconcile;
pub mod redis;
pub mod snapshot;
pub mod sqlite;
pub mod writer;
