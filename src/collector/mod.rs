/*!
The collection loop: every `COLLECTION_INTERVAL`, fetch all symbols, run them through their
pipelines, publish the snapshot and hand the tick's events to the sinks.

- Fetching: per source in priority order, symbols are requested in batches (one request per
  batch for sources with batched quotes, one per symbol otherwise) with at most
  `MAX_CONCURRENCY` requests in flight. Symbols a source failed for fall through to the next
  source in the same tick.
- Deadline: the fetch phase ends at `TICK_DEADLINE` whatever is still in flight (those requests
  are dropped and counted), so a slow provider never delays the next tick.
- Missed ticks: if a tick overruns, the ticks it covered are skipped and counted, never queued.
- Streams: what push streams delivered joins the tick; symbols with a live stream are not
  polled.
- Gaps: a gap in the bars (an outage, a stream reconnect) goes to the repair worker
  (`repair.rs`), whose answers come back at the start of a tick and are replayed through the
  pipeline; gaps found at start-up are filled by the warm-up, before live bars.
- Sinks: each gets the tick's batch via `try_send`; when its queue is full the batch waits in
  an overflow list that is retried first on the next tick, so a slow sink delays nothing and
  loses nothing. Both happenings are counted.

Everything per symbol lives in this one task, so the hot path takes no lock.

Rooms: this file holds the state, the tick loop and the fetch with its fallback, breakers and
budgets; `warmup.rs` the start-up (checkpoints, stored bars, history before live bars);
`streams.rs` the push streams; `repairs.rs` the collector's side of gap repair; `views.rs` the
views the API reads; `sinks.rs` checkpoints and the hand-off of batches to the stores.
*/

mod repairs;
mod sinks;
mod streams;
mod views;
mod warmup;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::model::{Quote, SymbolId, SymbolTable, Timeframe};
use crate::pipeline::{Event, QuoteOutcome, SymbolPipeline};
use crate::repair::{RepairJob, RepairOutcome};
use crate::sources::breaker::CircuitBreaker;
use crate::sources::ratelimit::{RateBudget, SharedBudget};
use crate::sources::{ErrorKind, Source, StreamEvent};
use crate::store::TickBatch;
use crate::store::snapshot::{FrameView, Snapshot, SymbolView};
use crate::validate::Verdict;

/// Symbols per request for sources that batch quotes.
const BATCH_SIZE: usize = 200;

/// A sink's queue plus what is waiting because the queue was full.
struct SinkLink {
    tx: mpsc::Sender<Arc<TickBatch>>,
    overflow: VecDeque<Arc<TickBatch>>,
}

/// The tick loop and the state it owns.
pub struct Collector {
    interval: Duration,
    deadline: Duration,
    max_concurrency: usize,
    checkpoint_every: Duration,
    warmup_bars: usize,
    timeframes: Vec<Timeframe>,
    symbols: SymbolTable,
    all_ids: Vec<SymbolId>,
    sources: Vec<Arc<dyn Source>>,
    pipelines: Vec<SymbolPipeline>,
    views: Vec<SymbolView>,
    snapshot: Arc<Snapshot>,
    metrics: Arc<Metrics>,
    sinks: Vec<SinkLink>,
    clock: Clock,
    /// Quotes of the tick in progress; reused so steady-state ticks do not grow it.
    quotes: Vec<(Quote, &'static str)>,
    /// Which symbols got a quote this tick (indexed by symbol id).
    answered: Vec<bool>,
    /// Which symbols' tick is finished (forming bars reported), so they are not again at the
    /// end of the tick.
    finished: Vec<bool>,
    /// Circuit breaker and request budget per source, in `sources` order.
    guards: Vec<SourceGuard>,
    /// Push streams and what they still owe.
    streams: Vec<StreamLink>,
    /// Symbols whose market session changed this tick, to publish with the touched ones.
    session_changed: Vec<SymbolId>,
    /// Gap repair off the tick (`repair.rs`); `None` until `run` starts the worker.
    repair: Option<RepairLink>,
    /// Gaps found by the events being applied, to hand to the repair worker.
    new_gaps: Vec<RepairJob>,
}

/// The collector's end of the repair worker.
struct RepairLink {
    jobs: mpsc::Sender<RepairJob>,
    outcomes: mpsc::Receiver<RepairOutcome>,
    /// Jobs whose sources all failed, with when to ask again.
    retries: Vec<(tokio::time::Instant, RepairJob)>,
    /// Jobs handed to the worker whose outcome has not come back yet.
    in_flight: usize,
}

/// One running push stream.
struct StreamLink {
    /// Index in `sources`.
    source: usize,
    served: Vec<SymbolId>,
    rx: mpsc::Receiver<StreamEvent>,
    last_message: Option<tokio::time::Instant>,
}

/// The health bookkeeping of one source.
struct SourceGuard {
    breaker: CircuitBreaker,
    budget: SharedBudget,
}

impl Collector {
    #[allow(clippy::too_many_arguments, reason = "wired once by app::run")]
    pub fn new(
        config: &Config,
        symbols: SymbolTable,
        sources: Vec<Arc<dyn Source>>,
        snapshot: Arc<Snapshot>,
        metrics: Arc<Metrics>,
        sinks: Vec<mpsc::Sender<Arc<TickBatch>>>,
        clock: Clock,
    ) -> Self {
        let pipelines = symbols
            .iter()
            .map(|(id, _)| {
                let calendar = config
                    .calendars
                    .get(id as usize)
                    .copied()
                    .unwrap_or(crate::calendar::MarketCalendar::Always);
                SymbolPipeline::new(
                    id,
                    &config.validation,
                    &config.timeframes,
                    &config.indicators_for(calendar),
                    calendar,
                    config.collection_interval_ms as i64,
                )
            })
            .collect();
        let now = tokio::time::Instant::now();
        let guards = sources
            .iter()
            .map(|s| SourceGuard {
                breaker: CircuitBreaker::new(
                    config.breaker_failures,
                    Duration::from_millis(config.breaker_open_ms),
                ),
                budget: Arc::new(Mutex::new(RateBudget::for_live(
                    config
                        .providers
                        .rate_limit(s.name())
                        .unwrap_or(s.rate_limit()),
                    now,
                ))),
            })
            .collect();
        let symbol_count = symbols.len();
        let views = symbols
            .iter()
            .map(|_| SymbolView {
                frames: vec![FrameView::default(); config.timeframes.len()],
                ..SymbolView::default()
            })
            .collect();
        Self {
            interval: Duration::from_millis(config.collection_interval_ms),
            deadline: Duration::from_millis(config.tick_deadline_ms),
            max_concurrency: config.max_concurrency,
            checkpoint_every: Duration::from_millis(config.checkpoint_interval_ms),
            warmup_bars: config.warmup_bars,
            timeframes: config.timeframes.clone(),
            all_ids: symbols.iter().map(|(id, _)| id).collect(),
            symbols,
            sources,
            pipelines,
            views,
            snapshot,
            metrics,
            sinks: sinks
                .into_iter()
                .map(|tx| SinkLink {
                    tx,
                    overflow: VecDeque::new(),
                })
                .collect(),
            clock,
            quotes: Vec::new(),
            answered: vec![false; symbol_count],
            finished: vec![false; symbol_count],
            guards,
            streams: Vec::new(),
            session_changed: Vec::new(),
            repair: None,
            new_gaps: Vec::new(),
        }
    }

    /// Runs ticks until `shutdown`, then checkpoints every indicator set and hands the last
    /// batch to the sinks. Dropping the collector closes the sink channels, which tells the
    /// sinks to flush and stop.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut stream_tasks = self.start_streams(&shutdown);
        stream_tasks.push(self.start_repairs(&shutdown));
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut last_tick: Option<tokio::time::Instant> = None;
        let mut last_checkpoint = Instant::now();
        loop {
            let at = tokio::select! {
                _ = shutdown.cancelled() => break,
                at = ticker.tick() => at,
            };
            if let Some(prev) = last_tick {
                let periods = (at - prev).as_nanos() / self.interval.as_nanos().max(1);
                self.metrics
                    .missed_ticks
                    .add(periods.saturating_sub(1) as u64);
            }
            last_tick = Some(at);
            let started = Instant::now();
            let mut batch = self.tick().await;
            if last_checkpoint.elapsed() >= self.checkpoint_every {
                batch.checkpoints = self.checkpoints();
                last_checkpoint = Instant::now();
            }
            self.emit(batch);
            self.metrics.tick_duration.record(started.elapsed());
            self.metrics.ticks.inc();
        }
        let batch = TickBatch {
            now_ms: self.clock.now_ms(),
            events: Vec::new(),
            checkpoints: self.checkpoints(),
        };
        self.emit(batch);
        for task in stream_tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
        for sink in &mut self.sinks {
            while let Some(batch) = sink.overflow.pop_front() {
                if sink.tx.send(batch).await.is_err() {
                    tracing::error!(
                        "a sink stopped before the collector; its last batches are lost"
                    );
                    break;
                }
            }
        }
    }

    /// One collection tick: fetch, validate, build, compute, publish. The symbols of each
    /// provider answer are processed and sent to the sinks as soon as it arrives (a slow
    /// request delays only its own symbols); the returned batch holds the rest: streamed
    /// quotes, provider bars, and the symbols no source answered this tick.
    pub async fn tick(&mut self) -> TickBatch {
        let now = self.clock.now_ms();
        let mut events = Vec::new();
        self.answered.fill(false);
        self.finished.fill(false);
        self.drain_streams(now, &mut events);
        self.take_repairs(now, &mut events);
        self.fetch(now).await;
        self.take_quotes(now, &mut events);
        for (pipeline, finished) in self.pipelines.iter_mut().zip(&self.finished) {
            if !finished {
                pipeline.finish_tick(now, &mut events);
            }
        }
        self.update_sessions(now, &mut events);
        self.apply_events(&events);
        TickBatch::new(now, events)
    }

    /// Runs the quotes received so far through their pipelines, then finishes those symbols'
    /// tick (clock-closed bars, forming bars with their features).
    fn take_quotes(&mut self, now: i64, events: &mut Vec<Event>) {
        let mut quoted = Vec::with_capacity(self.quotes.len());
        for (quote, source) in self.quotes.drain(..) {
            let Some(pipeline) = self.pipelines.get_mut(quote.symbol as usize) else {
                continue;
            };
            quoted.push(quote.symbol);
            match pipeline.on_quote(&quote, source, now, events) {
                QuoteOutcome::Judged(Verdict::Accept { .. }) => {
                    self.metrics.quotes_accepted.inc();
                    let view = &mut self.views[quote.symbol as usize];
                    view.last_data_ms =
                        Some(view.last_data_ms.map_or(quote.ts, |t| t.max(quote.ts)));
                    view.source = Some(source);
                }
                QuoteOutcome::Judged(Verdict::Duplicate) => self.metrics.quotes_duplicate.inc(),
                QuoteOutcome::Closed => self.metrics.quotes_closed.inc(),
                // Stored once already; counted each time, like the first.
                QuoteOutcome::RepeatedReject(reason) => {
                    self.metrics.reject(reason);
                    self.metrics.rejects_repeated.inc();
                }
                QuoteOutcome::Judged(Verdict::Reject(_)) => {}
            }
        }
        for symbol in quoted {
            let i = symbol as usize;
            if !self.finished[i] {
                self.finished[i] = true;
                self.pipelines[i].finish_tick(now, events);
            }
        }
    }

    /// Processes one provider answer's quotes and sends their events to the sinks at once.
    fn publish_answer(&mut self, now: i64) {
        let mut events = Vec::new();
        self.take_quotes(now, &mut events);
        if !events.is_empty() {
            self.apply_events(&events);
            self.emit(TickBatch::new(now, events));
        }
    }

    /// Fetches quotes for every symbol into `self.quotes`, falling back source by source:
    /// a source whose breaker is open or whose budget is spent is skipped, a half-open breaker
    /// gets one trial request, and symbols a source did not answer go to the next source.
    async fn fetch(&mut self, now: i64) {
        let deadline = tokio::time::Instant::now() + self.deadline;
        let mut pending: Vec<SymbolId> = self
            .all_ids
            .iter()
            .copied()
            .filter(|&id| !self.answered[id as usize])
            .collect();
        for si in 0..self.sources.len() {
            if pending.is_empty() {
                break;
            }
            let source = Arc::clone(&self.sources[si]);
            let name = source.name();
            let t = tokio::time::Instant::now();
            let (mine, mut failed): (Vec<SymbolId>, Vec<SymbolId>) =
                pending.iter().partition(|&&id| source.supports(id));
            let guard = &mut self.guards[si];
            let metrics = Arc::clone(&self.metrics);
            let stats = &metrics.sources[si];
            if mine.is_empty() {
                pending = failed;
                continue;
            }
            let trial = guard.breaker.is_trial(t);
            if !guard.breaker.allow(t) {
                failed.extend(mine);
                pending = failed;
                continue;
            }
            let caps = source.capabilities();
            let size = if caps.batched_quotes {
                caps.max_batch.clamp(1, BATCH_SIZE)
            } else {
                1
            };
            let mut requests: Vec<Vec<SymbolId>> = Vec::new();
            for chunk in mine.chunks(size) {
                // A half-open breaker lets exactly one request through as its trial.
                if (trial && !requests.is_empty())
                    || !guard
                        .budget
                        .lock()
                        .try_acquire(t, now, source.request_cost(chunk.len()))
                {
                    if !trial || !requests.is_empty() {
                        stats.budget_skips.inc();
                    }
                    failed.extend_from_slice(chunk);
                } else {
                    requests.push(chunk.to_vec());
                }
            }
            if requests.is_empty() {
                // The budget refused even the trial: give the breaker its trial back later.
                if trial {
                    guard.breaker.on_success_pending();
                }
                pending = failed;
                continue;
            }
            let total = requests.len();
            let mut in_flight = total;
            // Requests actually started: at most MAX_CONCURRENCY run at once, and those still
            // queued at the deadline were never sent, so they say nothing about the source.
            let sent = Arc::new(AtomicUsize::new(0));
            let mut answers = futures::stream::iter(requests.into_iter().map(|chunk| {
                let source = Arc::clone(&source);
                let sent = Arc::clone(&sent);
                async move {
                    sent.fetch_add(1, AtomicOrdering::Relaxed);
                    let started = Instant::now();
                    let result = source.quotes(&chunk, now).await;
                    (chunk, result, started.elapsed())
                }
            }))
            .buffer_unordered(self.max_concurrency);
            loop {
                match tokio::time::timeout_at(deadline, answers.next()).await {
                    Ok(Some((chunk, result, took))) => {
                        in_flight -= 1;
                        stats.requests.inc();
                        stats.latency.record(took);
                        let guard = &mut self.guards[si];
                        let t = tokio::time::Instant::now();
                        match result {
                            Ok(quotes) => {
                                guard.breaker.on_success();
                                stats.quotes.add(quotes.len() as u64);
                                for q in quotes {
                                    if let Some(a) = self.answered.get_mut(q.symbol as usize) {
                                        *a = true;
                                        self.quotes.push((q, name));
                                    }
                                }
                                failed.extend(
                                    chunk.iter().filter(|&&id| !self.answered[id as usize]),
                                );
                                self.publish_answer(now);
                            }
                            Err(e) => {
                                match e.kind() {
                                    // Not this source's symbol: no verdict on its health, so a
                                    // trial it was goes back to the breaker for the next tick.
                                    ErrorKind::NotServed => guard.breaker.on_success_pending(),
                                    ErrorKind::RateLimited => {
                                        stats.rate_limited.inc();
                                        guard.budget.lock().on_rate_limited(t, e.retry_after());
                                        // The trial did not get an answer either way.
                                        guard.breaker.on_success_pending();
                                    }
                                    ErrorKind::Failure => {
                                        stats.errors.inc();
                                        if guard.breaker.on_failure(t) {
                                            stats.breaker_opens.inc();
                                            tracing::warn!(source = name, error = %e, "circuit breaker open");
                                        }
                                    }
                                }
                                tracing::debug!(source = name, error = %e, symbols = chunk.len(), "source failed");
                                failed.extend(chunk);
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(_) => {
                        self.metrics.tick_deadline_hits.inc();
                        let answered = total - in_flight;
                        let timed_out = sent.load(AtomicOrdering::Relaxed) - answered;
                        stats.timeouts.add(timed_out as u64);
                        let guard = &mut self.guards[si];
                        for _ in 0..timed_out {
                            if guard.breaker.on_failure(tokio::time::Instant::now()) {
                                stats.breaker_opens.inc();
                                tracing::warn!(
                                    source = name,
                                    "circuit breaker open after timeouts"
                                );
                            }
                        }
                        self.publish_source_states();
                        return;
                    }
                }
            }
            pending = failed;
        }
        self.publish_source_states();
    }

    /// Every source with the budget the collector spends for it, for a bootstrap running beside
    /// it: history requests then come out of the same budget as quotes.
    pub fn budgets(&self) -> Vec<(Arc<dyn Source>, SharedBudget)> {
        self.sources
            .iter()
            .zip(&self.guards)
            .map(|(s, g)| (Arc::clone(s), Arc::clone(&g.budget)))
            .collect()
    }

    /// Breaker states and budgets into the metrics, for `/health` and `/metrics`.
    fn publish_source_states(&self) {
        let t = tokio::time::Instant::now();
        let sources = self.guards.iter().zip(&self.sources);
        for ((guard, source), stats) in sources.zip(&self.metrics.sources) {
            stats.breaker_state.set(guard.breaker.state(t) as i64);
            stats.budget_minute.set(
                guard
                    .budget
                    .lock()
                    .remaining_this_minute()
                    .map_or(-1, i64::from),
            );
            stats
                .budget_day
                .set(guard.budget.lock().remaining_today().map_or(-1, i64::from));
            if let Some(skew) = source.clock_skew_ms() {
                stats.clock_skew_ms.set(skew);
            }
        }
    }
}
