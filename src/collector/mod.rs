/*!
The collection loop: every `COLLECTION_INTERVAL`, fetch all symbols, run them through their
pipelines, publish the snapshot and hand the tick's events to the sinks.

- Fetching: per source in priority order, symbols are requested in batches (one request per
  batch for sources with batched quotes, one per symbol otherwise) with at most
  `MAX_CONCURRENCY` requests in flight. Symbols a source failed for fall through to the next
  source in the same tick.
- Run-time control: each tick reads the cadence (`cadence.rs`): a new interval applies from
  the next tick, a paused collection asks nothing and builds nothing (the pause shows as a
  gap), a failed request is retried as it says, and with fallback off a symbol is asked only
  of its first source. A source whose quote worker is stopped is skipped (its stream too).
- Deadline: the fetch phase ends at `TICK_DEADLINE` whatever is still in flight (those requests
  are dropped and counted), so a slow provider never delays the next tick.
- Missed ticks: if a tick overruns, the ticks it covered are skipped and counted, never queued.
- Streams: what push streams delivered joins the tick; symbols with a live stream are not
  polled.
- Gaps: a gap in the bars (an outage, a stream reconnect) goes to the repair worker
  (`repair.rs`), whose answers come back at the start of a tick and are replayed through the
  pipeline; gaps found at start-up are filled by the warm-up, before live bars.
- Sinks: the store writer (`store::writer`: SQLite, then Redis) and any other consumer of the
  batches each get the tick's batch via `try_send`; when a queue is full the batch waits in an
  overflow list that is retried first on the next tick, so a slow consumer delays nothing and
  loses nothing. Both happenings are counted.

Everything per symbol lives in this one task, so the hot path takes no lock.

Rooms: this file holds the state, the tick loop and the fetch with its fallback, breakers and
budgets; `warmup.rs` the start-up (checkpoints, stored bars, history before live bars);
`streams.rs` the push streams; `cadence.rs` the interval, pause, retries and fallback
switch the API may change while running; `repairs.rs` the collector's side of gap repair;
`instruments.rs` symbols added and deleted at run time (commands drained at the start of a
tick, the added ones warmed up off the loop); `views.rs` the views the API reads; `sinks.rs`
checkpoints and the hand-off of batches to the stores.
*/

pub mod cadence;
mod instruments;
mod repairs;
mod sinks;
mod streams;
mod views;
mod warmup;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use instruments::{Command, CommandSender};

use crate::clock::Clock;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::model::{Event, Quote, SymbolId, SymbolTable, TickBatch, Timeframe};
use crate::pipeline::{QuoteOutcome, SymbolPipeline};
use crate::repair::{RepairJob, RepairOutcome};
use crate::sources::chain::{Asked, Attempt, DataType, Refusal, SourceChain};
use crate::sources::{ErrorKind, Source, StreamEvent};
use crate::store::snapshot::{FrameView, Snapshot, SymbolView};
use crate::validate::Verdict;
use cadence::{Cadence, CadenceCell};

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
    /// The tick deadline's share of the interval, kept when the interval changes at run time.
    deadline_share: f64,
    /// The cadence in force (`cadence.rs`), read once per tick.
    cadence: Arc<CadenceCell>,
    max_concurrency: usize,
    checkpoint_every: Duration,
    warmup_bars: usize,
    timeframes: Vec<Timeframe>,
    symbols: SymbolTable,
    all_ids: Vec<SymbolId>,
    /// Every source with its breaker and budget: the only way the collector asks them.
    chain: Arc<SourceChain>,
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
    /// Which symbols a source was asked for this tick (indexed by symbol id): a later source
    /// serving them is a fallback.
    tried: Vec<bool>,
    /// Which symbols' tick is finished (forming bars reported), so they are not again at the
    /// end of the tick.
    finished: Vec<bool>,
    /// Push streams and what they still owe.
    streams: Vec<StreamLink>,
    /// Symbols whose market session changed this tick, to publish with the touched ones.
    session_changed: Vec<SymbolId>,
    /// Gap repair off the tick (`repair.rs`); `None` until `run` starts the worker.
    repair: Option<RepairLink>,
    /// Gaps found by the events being applied, to hand to the repair worker.
    new_gaps: Vec<RepairJob>,
    /// `STALE_AFTER`: data older than this while the market is open is reported quiet.
    stale_after_ms: i64,
    /// Which symbols were last reported quiet (indexed by symbol id).
    quiet: Vec<bool>,
    /// Which symbols are collected (indexed by symbol id): not those deleted at run time, nor
    /// those added whose warm-up is still running. Every per-symbol loop skips the others.
    live: Vec<bool>,
    /// What warming a symbol up needs; set by [`Collector::warm_up`].
    warm: Option<warmup::WarmUp>,
    /// Run-time changes of the symbol list (`instruments.rs`).
    instruments: instruments::InstrumentLink,
    command_tx: CommandSender,
    /// What a new pipeline is made of (validation, timeframes, indicators, calendars).
    pipeline_config: Arc<Config>,
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
        let chain = Arc::new(SourceChain::configured(
            config,
            sources,
            true,
            Arc::clone(&metrics),
            clock,
        ));
        let symbol_count = symbols.len();
        let (command_tx, commands) = mpsc::unbounded_channel();
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
            deadline_share: config.tick_deadline_ms as f64
                / config.collection_interval_ms.max(1) as f64,
            cadence: CadenceCell::new(Cadence::of_config(config)),
            max_concurrency: config.max_concurrency,
            checkpoint_every: Duration::from_millis(config.checkpoint_interval_ms),
            warmup_bars: config.warmup_bars,
            timeframes: config.timeframes.clone(),
            all_ids: symbols.iter().map(|(id, _)| id).collect(),
            symbols,
            chain,
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
            tried: vec![false; symbol_count],
            finished: vec![false; symbol_count],
            streams: Vec::new(),
            session_changed: Vec::new(),
            repair: None,
            new_gaps: Vec::new(),
            stale_after_ms: config.validation.stale_after_ms,
            quiet: vec![false; symbol_count],
            live: vec![true; symbol_count],
            warm: None,
            instruments: instruments::InstrumentLink::new(commands),
            command_tx,
            pipeline_config: Arc::new(config.clone()),
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
        // Tokio's clock: tests on a paused clock drive checkpoints and tick durations too.
        let mut last_checkpoint = tokio::time::Instant::now();
        loop {
            let at = tokio::select! {
                _ = shutdown.cancelled() => break,
                at = ticker.tick() => at,
            };
            let cadence = self.cadence.get();
            if self.follow_interval(&cadence) {
                // From the next tick on; this one is taken now, as it is due.
                ticker = tokio::time::interval_at(at + self.interval, self.interval);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                last_tick = None;
            }
            self.cadence
                .set_next_tick_ms(self.clock.now_ms() + self.interval.as_millis() as i64);
            if !cadence.enabled {
                // Paused: nothing asked, no bar built; push streams are drained and dropped.
                self.drop_streamed();
                last_tick = None;
                continue;
            }
            if let Some(prev) = last_tick {
                let periods = (at - prev).as_nanos() / self.interval.as_nanos().max(1);
                self.metrics
                    .missed_ticks
                    .add(periods.saturating_sub(1) as u64);
            }
            last_tick = Some(at);
            let started = tokio::time::Instant::now();
            let mut batch = self.tick().await;
            if last_checkpoint.elapsed() >= self.checkpoint_every {
                batch.checkpoints = self.checkpoints();
                last_checkpoint = tokio::time::Instant::now();
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
        self.take_instruments(&mut events);
        self.answered.fill(false);
        self.finished.fill(false);
        self.drain_streams(now, &mut events);
        self.take_repairs(now, &mut events);
        self.fetch(now).await;
        self.take_quotes(now, &mut events);
        let collected = self
            .pipelines
            .iter_mut()
            .zip(&self.finished)
            .zip(&self.live);
        for ((pipeline, finished), live) in collected {
            if *live && !finished {
                pipeline.finish_tick(now, &mut events);
            }
        }
        self.update_sessions(now, &mut events);
        self.update_liveness(now, &mut events);
        self.apply_events(&events);
        TickBatch::new(now, events)
    }

    /// Runs the quotes received so far through their pipelines, then finishes those symbols'
    /// tick (clock-closed bars, forming bars with their features).
    fn take_quotes(&mut self, now: i64, events: &mut Vec<Event>) {
        let mut quoted = Vec::with_capacity(self.quotes.len());
        for (quote, source) in self.quotes.drain(..) {
            let i = quote.symbol as usize;
            let Some(pipeline) = self.pipelines.get_mut(i).filter(|_| self.live[i]) else {
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

    /// Fetches quotes for every symbol into `self.quotes` through the source chain, falling
    /// back source by source: symbols a source did not answer (refused, failed, not its own) go
    /// to the next source in the same tick. Each request takes its permit when its turn comes
    /// (at most `MAX_CONCURRENCY` in flight); at the deadline requests in flight are cut (a
    /// timeout each) and those not yet sent are not sent at all.
    async fn fetch(&mut self, now: i64) {
        let deadline = tokio::time::Instant::now() + self.deadline;
        let chain = Arc::clone(&self.chain);
        let cadence = self.cadence.get();
        self.tried.fill(false);
        let mut pending: Vec<SymbolId> = self
            .all_ids
            .iter()
            .copied()
            .filter(|&id| !self.answered[id as usize])
            .collect();
        let mut cut = false;
        for si in 0..chain.len() {
            if pending.is_empty() || cut {
                break;
            }
            // A stopped worker is skipped whole, as if the source were not configured.
            if !chain.is_running(si, DataType::MarketData) {
                continue;
            }
            let source = chain.source(si);
            let name = source.name();
            let (mine, mut failed): (Vec<SymbolId>, Vec<SymbolId>) =
                pending.iter().partition(|&&id| source.supports(id));
            if mine.is_empty() {
                pending = failed;
                continue;
            }
            let caps = source.capabilities();
            let size = if caps.batched_quotes {
                caps.max_batch.clamp(1, BATCH_SIZE)
            } else {
                1
            };
            let tried = &self.tried;
            let requests: Vec<(Vec<SymbolId>, bool)> = mine
                .chunks(size)
                .map(|c| (c.to_vec(), c.iter().any(|&id| tried[id as usize])))
                .collect();
            let mut answers =
                futures::stream::iter(requests.into_iter().map(|(chunk, fallback)| {
                    let chain = Arc::clone(&chain);
                    async move {
                        let answer =
                            ask(&chain, si, &chunk, now, deadline, fallback, &cadence).await;
                        (chunk, answer)
                    }
                }))
                .buffer_unordered(self.max_concurrency);
            while let Some((chunk, answer)) = answers.next().await {
                if !matches!(answer, Err(Asked::Refused(Refusal::PastDeadline))) {
                    for &id in &chunk {
                        self.tried[id as usize] = true;
                    }
                }
                match answer {
                    Ok(quotes) => {
                        for q in quotes {
                            if let Some(a) = self.answered.get_mut(q.symbol as usize) {
                                *a = true;
                                self.quotes.push((q, name));
                            }
                        }
                        if cadence.vendor_fallback {
                            failed.extend(chunk.iter().filter(|&&id| !self.answered[id as usize]));
                        }
                        self.publish_answer(now);
                    }
                    Err(asked) => {
                        if asked.timed_out()
                            || matches!(asked, Asked::Refused(Refusal::PastDeadline))
                        {
                            cut = true;
                        }
                        if let Asked::Failed(e) = &asked {
                            tracing::debug!(source = name, error = %e, symbols = chunk.len(), "source failed");
                        }
                        if cadence.vendor_fallback {
                            failed.extend(chunk);
                        }
                    }
                }
            }
            pending = failed;
        }
        if cut {
            self.metrics.tick_deadline_hits.inc();
        }
        chain.publish_states();
    }

    /// The cadence the collector follows, for the API to change.
    pub fn cadence(&self) -> Arc<CadenceCell> {
        Arc::clone(&self.cadence)
    }

    /// Takes a new interval from `cadence`, with the deadline at its share; true when it
    /// changed.
    fn follow_interval(&mut self, cadence: &Cadence) -> bool {
        let interval = Duration::from_millis(cadence.interval_ms);
        if interval == self.interval {
            return false;
        }
        self.interval = interval;
        self.deadline = interval
            .mul_f64(self.deadline_share)
            .max(Duration::from_millis(1));
        tracing::info!(
            interval_ms = cadence.interval_ms,
            deadline_ms = self.deadline.as_millis() as u64,
            "collection interval changed"
        );
        true
    }

    /// The source chain the collector asks, for everything that asks beside it (the
    /// bootstrap, gap repair): their requests then come out of the same budgets and breakers.
    pub fn chain(&self) -> Arc<SourceChain> {
        Arc::clone(&self.chain)
    }
}

/// One request of the tick to source `si`, retried after a failure as `cadence` says (each
/// retry waits twice as long as the one before, none starts past `deadline`).
async fn ask(
    chain: &SourceChain,
    si: usize,
    chunk: &[SymbolId],
    now: i64,
    deadline: tokio::time::Instant,
    fallback: bool,
    cadence: &Cadence,
) -> Result<Vec<Quote>, Asked> {
    let mut retry = 0;
    let mut wait = Duration::from_millis(cadence.retry_backoff_ms);
    loop {
        let attempt = Attempt { retry, fallback };
        let answer = chain.quotes(si, chunk, now, deadline, attempt).await;
        let retryable = matches!(&answer, Err(Asked::Failed(e))
            if e.kind() == ErrorKind::Failure && !matches!(e, crate::sources::SourceError::Timeout { .. }));
        if !retryable
            || retry >= cadence.retry_attempts
            || tokio::time::Instant::now() + wait >= deadline
        {
            return answer;
        }
        tokio::time::sleep(wait).await;
        retry += 1;
        wait = wait.saturating_mul(2);
    }
}
