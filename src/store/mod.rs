/*!
Where the pipeline's output goes.

- `sqlite.rs` — durable history, rejects, gaps and indicator checkpoints (batched writer task).
- `snapshot.rs` — the in-process latest state per symbol, read lock-free by the HTTP API.

Each sink gets the same [`TickBatch`] (behind an `Arc`) through its own bounded channel, so a
slow sink never slows the collector or another sink.
*/

pub mod snapshot;
pub mod sqlite;

use crate::pipeline::Event;

/// Everything one collection tick produced, shared by all sinks.
#[derive(Debug, Default)]
pub struct TickBatch {
    pub events: Vec<Event>,
    pub checkpoints: Vec<sqlite::Checkpoint>,
}

impl TickBatch {
    pub fn new(events: Vec<Event>) -> Self {
        Self {
            events,
            checkpoints: Vec::new(),
        }
    }
}
