/*!
Handing batches to the stores: checkpoints of every indicator set, and each batch to the
stores' queue (`store::writer`, which gives it to SQLite, then Redis), with an overflow list
when the queue is full (nothing dropped, counted in `sink_queue_full_total`).
*/

use std::sync::Arc;

use tokio::sync::mpsc::error::TrySendError;

use super::Collector;
use crate::model::{Checkpoint, TickBatch};
use crate::pipeline::SymbolPipeline;

impl Collector {
    /// Every collected symbol's checkpoints.
    pub(super) fn checkpoints(&self) -> Vec<Checkpoint> {
        self.pipelines
            .iter()
            .zip(&self.live)
            .filter(|(_, live)| **live)
            .flat_map(|(p, _)| self.checkpoints_of(p))
            .collect()
    }

    /// One symbol's checkpoints, a timeframe each (those with a bar).
    pub(super) fn checkpoints_of(&self, p: &SymbolPipeline) -> Vec<Checkpoint> {
        let mut out = Vec::new();
        for (frame, &timeframe) in self.timeframes.iter().enumerate() {
            let engine = p.engine(frame);
            if let Some(last_ts) = engine.last_ts() {
                out.push(Checkpoint {
                    symbol: p.symbol(),
                    timeframe,
                    last_ts,
                    state: engine.checkpoint(),
                });
            }
        }
        out
    }

    pub(super) fn emit(&mut self, batch: TickBatch) {
        if batch.events.is_empty() && batch.checkpoints.is_empty() {
            return;
        }
        let batch = Arc::new(batch);
        for sink in &mut self.sinks {
            sink.overflow.push_back(Arc::clone(&batch));
            while let Some(front) = sink.overflow.pop_front() {
                match sink.tx.try_send(front) {
                    Ok(()) => {}
                    Err(TrySendError::Full(back)) => {
                        sink.overflow.push_front(back);
                        self.metrics.sink_queue_full.inc();
                        break;
                    }
                    Err(TrySendError::Closed(_)) => {
                        tracing::error!("a sink has stopped; dropping its queue");
                        sink.overflow.clear();
                        break;
                    }
                }
            }
        }
    }
}
