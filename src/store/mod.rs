/*!
Where the pipeline's output goes.

- `sqlite.rs` — durable history, rejects, gaps and indicator checkpoints (batched writer task).
- `redis.rs` — the bot's knowledge base: rings of closed bars, live bar, features, events.
- `snapshot.rs` — the in-process latest state per symbol, read lock-free by the HTTP API.

Each sink gets the same [`TickBatch`] (behind an `Arc`) through its own bounded channel, so a
slow sink never slows the collector or another sink.
*/

pub mod redis;
pub mod snapshot;
pub mod sqlite;

use crate::pipeline::Event;

/// Everything one collection tick produced, shared by all sinks.
#[derive(Debug, Default)]
pub struct TickBatch {
    /// The collector's clock when the tick ran, Unix ms.
    pub now_ms: i64,
    pub events: Vec<Event>,
    pub checkpoints: Vec<sqlite::Checkpoint>,
}

impl TickBatch {
    pub fn new(now_ms: i64, events: Vec<Event>) -> Self {
        Self {
            now_ms,
            events,
            checkpoints: Vec::new(),
        }
    }
}
