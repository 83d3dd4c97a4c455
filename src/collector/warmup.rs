/*!
Warm-up at start: indicator state from checkpoints and stored bars, the validator's reference
from the newest stored bars, and from history what is missing — the warm-up bars and every bar
since the last stored one (downtime, and what a crash lost before its flush), so the indicators
continue as if never stopped. A symbol added at run time goes through the same [`WarmUp`],
on its own.
*/

use std::sync::Arc;
use std::time::Duration;

use super::Collector;
use crate::indicators::IndicatorSet;
use crate::metrics::Metrics;
use crate::model::{Bar, BarRecord, Event, SymbolId, TickBatch, Timeframe};
use crate::pipeline::SymbolPipeline;
use crate::sources::chain::{SourceChain, Work};
use crate::store::history::{History, StoreError};
use crate::store::snapshot::SymbolView;

/// At most this many bars since the last stored one are fetched again at start (a longer
/// downtime is filled in history by the bootstrap; the indicators then continue from the
/// newest of them).
const MAX_REPAIR_BARS: i64 = 5_000;

/// How long one warm-up history request may take.
const HISTORY_TIMEOUT: Duration = Duration::from_secs(15);

/// What warming one symbol up needs besides the symbol's own state: the same at start-up and
/// for a symbol added at run time, which is warmed up on a task of its own
/// (`collector/instruments.rs`) while the others are collected.
#[derive(Clone)]
pub(super) struct WarmUp {
    pub chain: Arc<SourceChain>,
    pub metrics: Arc<Metrics>,
    pub store: History,
    pub timeframes: Vec<Timeframe>,
    pub warmup_bars: usize,
}

impl Collector {
    /// Restores indicator state from checkpoints and stored bars, then tops up missing history
    /// from the first source that serves it. History bars are sent to the sinks like any other
    /// closed bars.
    ///
    /// A source is asked only for a symbol it serves and a timeframe its history serves
    /// ([`Source::serves_history`]; a pair it does not is said once and skipped), and a unit of
    /// its budget is taken right before the request goes out.
    ///
    /// # Errors
    /// A failed history read.
    pub async fn warm_up(&mut self, store: &History) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        let mut events = Vec::new();
        for source in self.chain.sources().filter(|s| s.capabilities().history) {
            for &tf in &self.timeframes {
                if !source.serves_history(tf) {
                    tracing::info!(
                        source = source.name(),
                        timeframe = %tf,
                        "this source's history has no such bars; warm-up does not ask it for them"
                    );
                }
            }
        }
        let warm = WarmUp {
            chain: Arc::clone(&self.chain),
            metrics: Arc::clone(&self.metrics),
            store: store.clone(),
            timeframes: self.timeframes.clone(),
            warmup_bars: self.warmup_bars,
        };
        for (pipeline, view) in self.pipelines.iter_mut().zip(&mut self.views) {
            warm.symbol(pipeline, view, now, &mut events).await?;
        }
        self.warm = Some(warm);
        self.update_sessions(now, &mut events);
        self.apply_events(&events);
        for sym in 0..self.views.len() {
            self.snapshot
                .publish(sym as SymbolId, Arc::new(self.views[sym].clone()));
        }
        self.emit(TickBatch::new(now, events));
        Ok(())
    }
}

impl WarmUp {
    /// Warms one symbol's pipeline up (every timeframe) and fills its view; the history bars
    /// it took go to `events`.
    ///
    /// # Errors
    /// A failed SQLite read.
    pub(super) async fn symbol(
        &self,
        pipeline: &mut SymbolPipeline,
        view: &mut SymbolView,
        now: i64,
        events: &mut Vec<Event>,
    ) -> Result<(), StoreError> {
        let (store, symbol) = (&self.store, pipeline.symbol());
        for (frame, &tf) in self.timeframes.iter().enumerate() {
            let (engine, bars) =
                load_frame(store, symbol, tf, pipeline.engine(frame), self.warmup_bars).await?;
            if let Some(engine) = engine {
                pipeline.set_engine(frame, engine);
            }
            pipeline.warm(frame, &bars);
            if frame == 0 {
                // The validator's reference: the newest stored bars, whatever the
                // checkpoint covered, so the first live quote is judged against them.
                let reference = store.bars_after(symbol, tf, None, 30).await?;
                pipeline.seed_validator(&reference);
            }
            let stored_last = pipeline.engine(frame).last_ts();
            let have = pipeline.engine(frame).bars_seen() as usize;
            // What history must fill before live bars: the warm-up bars still missing, and
            // every bar since the last stored one (the downtime, and what a crash lost
            // before it was flushed), so the indicators continue as if never interrupted.
            let calendar = pipeline.calendar();
            // A closed market's history ends at its last close, not now.
            let session = calendar.session_at(now);
            let to = if session.open || session.since_ms == i64::MIN {
                tf.bucket(now)
            } else {
                tf.bucket(session.since_ms - 1) + tf.ms()
            };
            let missing = self.warmup_bars.saturating_sub(have) as i64;
            let from = match stored_last {
                None => to - missing * tf.ms(),
                Some(t) => (t + tf.ms()).max(to - MAX_REPAIR_BARS.max(missing) * tf.ms()),
            };
            if from < to && calendar.open_within(from, to) {
                // The first source that serves this symbol's history, falling back on
                // error, each within the live budget (collection has not started).
                let answer = self
                    .chain
                    .first_history(symbol, tf, from, to, Work::Live, HISTORY_TIMEOUT)
                    .await;
                if let Ok((source, history)) = answer {
                    let before = events.len();
                    pipeline.ingest_history(frame, &history, source, now, events);
                    let added = events[before..]
                        .iter()
                        .filter(|e| matches!(e, Event::Closed { .. }))
                        .count();
                    self.metrics.history_bars.add(added as u64);
                }
            }
            let engine = pipeline.engine(frame);
            if let (Some(ts), Some(bar)) = (
                engine.last_ts(),
                bars.last().filter(|b| Some(b.ts) == engine.last_ts()),
            ) {
                let record = BarRecord {
                    symbol,
                    timeframe: tf,
                    bar: *bar,
                    source: "stored",
                    quality: 1.0,
                };
                debug_assert_eq!(record.bar.ts, ts);
                view.frames[frame].last_closed = Some((record, engine.last()));
            }
        }
        Ok(())
    }
}

/// Loads the checkpoint (if it matches the configured parameters) and the stored bars after
/// it, or the newest `warmup` bars when there is no usable checkpoint.
async fn load_frame(
    store: &History,
    symbol: SymbolId,
    tf: Timeframe,
    fresh: &IndicatorSet,
    warmup: usize,
) -> Result<(Option<IndicatorSet>, Vec<Bar>), StoreError> {
    let params = fresh.params().clone();
    let restored = match store.checkpoint(symbol, tf).await? {
        Some((_, bytes)) => match IndicatorSet::restore(&bytes, &params) {
            Ok(engine) => Some(engine),
            Err(e) => {
                tracing::info!(error = %e, "indicator checkpoint not usable; warming up from stored bars");
                None
            }
        },
        None => None,
    };
    let after = restored.as_ref().and_then(IndicatorSet::last_ts);
    let limit = if restored.is_some() {
        usize::MAX >> 2
    } else {
        warmup
    };
    // Bars and checkpoints commit together, so a checkpoint has no gap of unknown length
    // behind it: the bars after it are all there.
    let bars = store.bars_after(symbol, tf, after, limit).await?;
    Ok((restored, bars))
}
