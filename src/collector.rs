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
*/

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::Config;
use crate::indicators::IndicatorSet;
use crate::metrics::Metrics;
use crate::model::{Quote, SymbolId, SymbolTable, Timeframe};
use crate::pipeline::{BarRecord, Event, QuoteOutcome, SymbolPipeline};
use crate::repair::{self, RepairJob, RepairOutcome};
use crate::sources::breaker::CircuitBreaker;
use crate::sources::ratelimit::{RateBudget, SharedBudget};
use crate::sources::{ErrorKind, Source, StreamEvent};
use crate::store::TickBatch;
use crate::store::snapshot::{FrameView, Snapshot, SymbolView};
use crate::store::sqlite::{Checkpoint, SqliteStore, StoreError};
use crate::validate::Verdict;

/// Symbols per request for sources that batch quotes.
const BATCH_SIZE: usize = 200;
/// At most this many bars since the last stored one are fetched again at start (a longer
/// downtime is filled in SQLite by the bootstrap; the indicators then continue from the
/// newest of them).
const MAX_REPAIR_BARS: i64 = 5_000;
/// Events a push stream may queue between two ticks.
const STREAM_QUEUE: usize = 65_536;

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
                budget: Arc::new(Mutex::new(RateBudget::new(
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

    /// Restores indicator state from checkpoints and stored bars, then tops up missing history
    /// from the first source that serves it. History bars are sent to the sinks like any other
    /// closed bars. Blocking SQLite reads run on the blocking pool.
    ///
    /// A source is asked only for a symbol it serves and a timeframe its history serves
    /// ([`Source::serves_history`]; a pair it does not is said once and skipped), and a unit of
    /// its budget is taken right before the request goes out.
    ///
    /// # Errors
    /// A failed SQLite read.
    pub async fn warm_up(&mut self, store: &Arc<SqliteStore>) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        let mut events = Vec::new();
        // (index in `sources` and `guards`, source) of the sources that serve history.
        let history_sources: Vec<(usize, Arc<dyn Source>)> = self
            .sources
            .iter()
            .enumerate()
            .filter(|(_, s)| s.capabilities().history)
            .map(|(i, s)| (i, Arc::clone(s)))
            .collect();
        for (_, src) in &history_sources {
            for &tf in &self.timeframes {
                if !src.serves_history(tf) {
                    tracing::info!(
                        source = src.name(),
                        timeframe = %tf,
                        "this source's history has no such bars; warm-up does not ask it for them"
                    );
                }
            }
        }
        for sym in 0..self.pipelines.len() {
            for (frame, &tf) in self.timeframes.clone().iter().enumerate() {
                let symbol = sym as SymbolId;
                let (engine, bars) = load_frame(
                    store,
                    symbol,
                    tf,
                    self.pipelines[sym].engine(frame),
                    self.warmup_bars,
                )
                .await?;
                if let Some(engine) = engine {
                    self.pipelines[sym].set_engine(frame, engine);
                }
                self.pipelines[sym].warm(frame, &bars);
                if frame == 0 {
                    // The validator's reference: the newest stored bars, whatever the
                    // checkpoint covered, so the first live quote is judged against them.
                    let reference = newest_bars(store, symbol, tf, 30).await?;
                    self.pipelines[sym].seed_validator(&reference);
                }
                let stored_last = self.pipelines[sym].engine(frame).last_ts();
                let have = self.pipelines[sym].engine(frame).bars_seen() as usize;
                // What history must fill before live bars: the warm-up bars still missing, and
                // every bar since the last stored one (the downtime, and what a crash lost
                // before it was flushed), so the indicators continue as if never interrupted.
                let calendar = self.pipelines[sym].calendar();
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
                    // The first source that serves this symbol's history, falling back on error.
                    let serving = history_sources
                        .iter()
                        .filter(|(_, s)| s.supports(symbol) && s.serves_history(tf));
                    for (si, src) in serving {
                        // History requests spend the same budget as quotes, taken right before
                        // the request.
                        let budget = self.guards.get(*si).map(|g| Arc::clone(&g.budget));
                        if let Some(budget) = &budget
                            && !budget
                                .lock()
                                .try_acquire(tokio::time::Instant::now(), now, 1)
                        {
                            continue;
                        }
                        match src.history(symbol, tf, from, to).await {
                            Ok(history) => {
                                let before = events.len();
                                self.pipelines[sym].ingest_history(
                                    frame,
                                    &history,
                                    src.name(),
                                    now,
                                    &mut events,
                                );
                                let added = events[before..]
                                    .iter()
                                    .filter(|e| matches!(e, Event::Closed { .. }))
                                    .count();
                                self.metrics.history_bars.add(added as u64);
                                break;
                            }
                            Err(e) if e.kind() == ErrorKind::NotServed => tracing::info!(
                                source = src.name(),
                                symbol = %self.symbols.name(symbol),
                                timeframe = %tf,
                                error = %e,
                                "history not served; trying the next source"
                            ),
                            Err(e) => {
                                if e.kind() == ErrorKind::RateLimited
                                    && let Some(budget) = &budget
                                {
                                    budget.lock().on_rate_limited(
                                        tokio::time::Instant::now(),
                                        e.retry_after(),
                                    );
                                }
                                tracing::warn!(
                                    source = src.name(),
                                    symbol = %self.symbols.name(symbol),
                                    error = %e,
                                    "history unavailable; trying the next source"
                                );
                            }
                        }
                    }
                }
                let engine = self.pipelines[sym].engine(frame);
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
                    self.views[sym].frames[frame].last_closed = Some((record, engine.last()));
                }
            }
        }
        self.update_sessions(now, &mut events);
        self.apply_events(&events);
        for sym in 0..self.views.len() {
            self.snapshot
                .publish(sym as SymbolId, Arc::new(self.views[sym].clone()));
        }
        self.emit(TickBatch::new(now, events));
        Ok(())
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

    /// Starts the push stream of every source that has one; its events are taken at the start
    /// of each tick.
    fn start_streams(&mut self, shutdown: &CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        for (si, source) in self.sources.iter().enumerate() {
            if !source.capabilities().stream {
                continue;
            }
            let served: Vec<SymbolId> = self
                .all_ids
                .iter()
                .copied()
                .filter(|&id| source.supports(id))
                .collect();
            let (tx, rx) = mpsc::channel(STREAM_QUEUE);
            if let Some(task) =
                Arc::clone(source).stream(served.clone(), tx, shutdown.child_token())
            {
                tasks.push(tokio::spawn(task));
                self.streams.push(StreamLink {
                    source: si,
                    served,
                    rx,
                    last_message: None,
                });
            }
        }
        tasks
    }

    /// Takes what the push streams delivered since the last tick: quotes join this tick's
    /// quotes, provider bars are upserted. Symbols whose stream is alive are not polled. What a
    /// reconnect missed shows as a gap in the bars, which the repair worker fills off the tick
    /// (`repair.rs`) like any other.
    fn drain_streams(&mut self, now: i64, events: &mut Vec<Event>) {
        let t = tokio::time::Instant::now();
        let alive_for = (self.interval * 3).max(Duration::from_secs(3));
        for link in &mut self.streams {
            let name = self.sources[link.source].name();
            while let Ok(event) = link.rx.try_recv() {
                link.last_message = Some(t);
                match event {
                    StreamEvent::Quote(q) => {
                        if let Some(a) = self.answered.get_mut(q.symbol as usize) {
                            *a = true;
                            self.quotes.push((q, name));
                        }
                    }
                    StreamEvent::Bar {
                        symbol,
                        timeframe,
                        bar,
                    } => {
                        if let Some(p) = self.pipelines.get_mut(symbol as usize) {
                            p.on_provider_bar(timeframe, &bar, name, now, events);
                            self.answered[symbol as usize] = true;
                        }
                    }
                    StreamEvent::Reconnected { .. } => self.metrics.stream_reconnects.inc(),
                }
            }
            if link
                .last_message
                .is_some_and(|at| t.duration_since(at) < alive_for)
            {
                for &id in &link.served {
                    self.answered[id as usize] = true;
                }
            }
        }
    }

    /// Starts the gap-repair worker on the history sources, within the collector's budgets.
    fn start_repairs(&mut self, shutdown: &CancellationToken) -> tokio::task::JoinHandle<()> {
        let (jobs, job_rx) = mpsc::channel(repair::QUEUE);
        let (outcome_tx, outcomes) = mpsc::channel(repair::QUEUE);
        self.repair = Some(RepairLink {
            jobs,
            outcomes,
            retries: Vec::new(),
        });
        let clock = self.clock;
        tokio::spawn(repair::run_worker(
            self.budgets(),
            job_rx,
            outcome_tx,
            move || clock.now_ms(),
            shutdown.child_token(),
        ))
    }

    /// Takes what the repair worker fetched: each gap's bars go through their pipeline (stored,
    /// indicators rewound and replayed); gaps no source could serve are asked again later, then
    /// left recorded.
    fn take_repairs(&mut self, now: i64, events: &mut Vec<Event>) {
        let Some(link) = &mut self.repair else {
            return;
        };
        while let Ok(outcome) = link.outcomes.try_recv() {
            match outcome {
                RepairOutcome::Fetched { job, source, bars } => {
                    let sym = job.symbol as usize;
                    let Some(p) = self.pipelines.get_mut(sym) else {
                        continue;
                    };
                    if !p.repair(job.timeframe, job.gap, &bars, source, now, events) {
                        continue;
                    }
                    // The newest closed bar's features after the replay.
                    let frame = self.timeframes.iter().position(|&t| t == job.timeframe);
                    if let Some(frame) = frame {
                        let engine = p.engine(frame);
                        let view = &mut self.views[sym].frames[frame];
                        if let Some((record, features)) = &mut view.last_closed
                            && engine.last_ts() == Some(record.bar.ts)
                        {
                            *features = engine.last();
                        }
                    }
                }
                RepairOutcome::Failed(mut job) => {
                    job.tries += 1;
                    if job.tries < repair::MAX_TRIES {
                        let at = tokio::time::Instant::now() + repair::RETRY_AFTER;
                        link.retries.push((at, job));
                    } else if let Some(p) = self.pipelines.get_mut(job.symbol as usize) {
                        tracing::info!(symbol = %self.symbols.name(job.symbol), timeframe = %job.timeframe, from_ms = job.gap.from_ts, to_ms = job.gap.to_ts, "no source could fill the gap; it stays recorded");
                        p.abandon_repair(job.timeframe, job.gap);
                    }
                }
            }
        }
        let pending: usize = self
            .pipelines
            .iter()
            .map(|p| p.pending_repairs().count())
            .sum();
        self.metrics.gaps_pending.set(pending as i64);
        let t = tokio::time::Instant::now();
        let (due, waiting): (Vec<_>, Vec<_>) = link.retries.drain(..).partition(|(at, _)| *at <= t);
        link.retries = waiting;
        self.new_gaps.extend(due.into_iter().map(|(_, job)| job));
        self.send_repairs();
    }

    /// Hands the gaps found (or due again) to the repair worker; without one, or with its queue
    /// full, they stay recorded only.
    fn send_repairs(&mut self) {
        for job in self.new_gaps.drain(..) {
            let sent = self
                .repair
                .as_ref()
                .is_some_and(|link| link.jobs.try_send(job).is_ok());
            if !sent && let Some(p) = self.pipelines.get_mut(job.symbol as usize) {
                p.abandon_repair(job.timeframe, job.gap);
            }
        }
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

    /// Notes each symbol's market session in its view and tells the sinks when it changed;
    /// the views that changed are published with the next events.
    fn update_sessions(&mut self, now: i64, events: &mut Vec<Event>) {
        for (pipeline, view) in self.pipelines.iter_mut().zip(&mut self.views) {
            let session = pipeline.session(now);
            if view.session.is_none_or(|s| s.open != session.open) {
                events.push(Event::Session {
                    symbol: pipeline.symbol(),
                    session,
                });
            }
            if view.session != Some(session) {
                view.session = Some(session);
                self.session_changed.push(pipeline.symbol());
            }
        }
    }

    /// Keeps the per-symbol views and counters in step with a batch of events, and publishes
    /// the views that changed.
    fn apply_events(&mut self, events: &[Event]) {
        let mut touched: Vec<SymbolId> = std::mem::take(&mut self.session_changed);
        for event in events {
            match event {
                Event::Closed { record, features } => {
                    self.metrics.bars_closed.inc();
                    if let Some(frame) = self.frame_view(record.symbol, record.timeframe) {
                        // A repaired bar is older than the newest: it does not replace it.
                        if frame
                            .last_closed
                            .as_ref()
                            .is_none_or(|(r, _)| r.bar.ts <= record.bar.ts)
                        {
                            frame.last_closed = Some((*record, *features));
                        }
                        if frame
                            .forming
                            .as_ref()
                            .is_some_and(|(f, _)| f.bar.ts <= record.bar.ts)
                        {
                            frame.forming = None;
                        }
                    }
                    touched.push(record.symbol);
                }
                Event::Forming { record, features } => {
                    if let Some(frame) = self.frame_view(record.symbol, record.timeframe) {
                        frame.forming = Some((*record, *features));
                    }
                    touched.push(record.symbol);
                }
                Event::Rejected(r) => self.metrics.reject(r.reason),
                Event::Gap {
                    symbol,
                    timeframe,
                    gap,
                } => {
                    self.metrics.gaps.inc();
                    let tracked = self.pipelines.get(*symbol as usize).is_some_and(|p| {
                        p.pending_repairs()
                            .any(|(tf, g)| tf == *timeframe && g == *gap)
                    });
                    if tracked {
                        self.new_gaps.push(RepairJob {
                            symbol: *symbol,
                            timeframe: *timeframe,
                            gap: *gap,
                            tries: 0,
                        });
                    }
                }
                Event::Session { .. } => {}
                Event::Revision { bars, .. } => {
                    if *bars == 0 {
                        self.metrics.gaps_empty.inc();
                    } else {
                        self.metrics.gaps_repaired.inc();
                        self.metrics.repaired_bars.add(u64::from(*bars));
                    }
                }
            }
        }
        self.send_repairs();
        touched.sort_unstable();
        touched.dedup();
        for symbol in touched {
            self.snapshot
                .publish(symbol, Arc::new(self.views[symbol as usize].clone()));
        }
    }

    fn frame_view(&mut self, symbol: SymbolId, timeframe: Timeframe) -> Option<&mut FrameView> {
        let frame = self.timeframes.iter().position(|&t| t == timeframe)?;
        self.views.get_mut(symbol as usize)?.frames.get_mut(frame)
    }

    fn checkpoints(&self) -> Vec<Checkpoint> {
        let mut out = Vec::new();
        for p in &self.pipelines {
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
        }
        out
    }

    fn emit(&mut self, batch: TickBatch) {
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

/// The newest `n` stored closed bars of a series, oldest first.
async fn newest_bars(
    store: &Arc<SqliteStore>,
    symbol: SymbolId,
    tf: Timeframe,
    n: usize,
) -> Result<Vec<crate::model::Bar>, StoreError> {
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || store.bars_after(symbol, tf, None, n))
        .await
        .map_err(|e| StoreError::Join(e.to_string()))?
}

/// Loads the checkpoint (if it matches the configured parameters) and the stored bars after
/// it, or the newest `warmup` bars when there is no usable checkpoint.
async fn load_frame(
    store: &Arc<SqliteStore>,
    symbol: SymbolId,
    tf: Timeframe,
    fresh: &IndicatorSet,
    warmup: usize,
) -> Result<(Option<IndicatorSet>, Vec<crate::model::Bar>), StoreError> {
    let store = Arc::clone(store);
    let params = fresh.params().clone();
    tokio::task::spawn_blocking(move || {
        let restored = match store.checkpoint(symbol, tf)? {
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
        let limit = if restored.is_some() { usize::MAX >> 2 } else { warmup };
        let bars = store.bars_after(symbol, tf, after, limit)?;
        // A checkpoint with a gap of unknown length behind it would resume from the wrong
        // place; it cannot happen (bars and checkpoints commit together) but is cheap to check.
        Ok((restored, bars))
    })
    .await
    .map_err(|e| StoreError::Join(e.to_string()))?
}
