//! Fallback, circuit breaker and rate budget through the real collector, with tokio's clock
//! paused so the 60-second open period takes no time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;

use barkeep::clock::Clock;
use barkeep::collector::Collector;
use barkeep::config::Config;
use barkeep::metrics::Metrics;
use barkeep::model::{Event, Quote, SymbolId, SymbolTable};
use barkeep::sources::chain::{DataType, Work};
use barkeep::sources::{Capabilities, RateLimit, Source, SourceError};
use barkeep::store::snapshot::Snapshot;

const T0: i64 = 1_700_000_100_000;

/// A provider that can be told to fail, or to answer "rate limited".
struct Fixture {
    name: &'static str,
    failing: AtomicBool,
    rate_limited: AtomicBool,
    /// Answers "unknown symbol" (the provider does not serve it).
    not_served: AtomicBool,
    calls: AtomicU32,
    limit: RateLimit,
    /// One symbol per request, and this symbol's request answers only after the delay.
    slow: Option<(SymbolId, Duration)>,
}

impl Fixture {
    fn new(name: &'static str, limit: RateLimit) -> Arc<Self> {
        Arc::new(Self {
            name,
            failing: AtomicBool::new(false),
            rate_limited: AtomicBool::new(false),
            not_served: AtomicBool::new(false),
            calls: AtomicU32::new(0),
            limit,
            slow: None,
        })
    }
}

impl Source for Fixture {
    fn name(&self) -> &'static str {
        self.name
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            batched_quotes: self.slow.is_none(),
            max_batch: if self.slow.is_some() { 1 } else { 100 },
            history: false,
            stream: false,
        }
    }
    fn rate_limit(&self) -> RateLimit {
        self.limit
    }
    fn quotes<'a>(
        &'a self,
        symbols: &'a [SymbolId],
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<Quote>, SourceError>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let result = if self.failing.load(Ordering::Relaxed) {
            Err(SourceError::Http {
                source_name: self.name,
                status: 503,
                reason: "Service Unavailable".into(),
            })
        } else if self.not_served.load(Ordering::Relaxed) {
            Err(SourceError::UnknownSymbol {
                source_name: self.name,
                symbol: "EURUSD".into(),
            })
        } else if self.rate_limited.load(Ordering::Relaxed) {
            Err(SourceError::RateLimited {
                source_name: self.name,
                retry_after: Some(Duration::from_secs(30)),
            })
        } else {
            let price = 100.0 + ((now_ms / 1_000) % 5) as f64 * 0.01;
            Ok(symbols
                .iter()
                .map(|&symbol| Quote {
                    symbol,
                    ts: now_ms,
                    price,
                    volume: 1.0,
                })
                .collect())
        };
        let delay = self
            .slow
            .filter(|(slow, _)| symbols.contains(slow))
            .map(|(_, delay)| delay);
        Box::pin(async move {
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            result
        })
    }
}

fn config() -> Config {
    config_with(&[])
}

fn config_with(extra: &[(&str, &str)]) -> Config {
    Config::from_lookup(|name| match name {
        "SYMBOLS" => Some("EURUSD,XAUUSD".into()),
        "TIMEFRAMES" => Some("1s".into()),
        _ => extra
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_string()),
    })
    .expect("valid config")
}

struct Harness {
    collector: Collector,
    metrics: Arc<Metrics>,
    /// What the collector sends its sinks (each provider answer's events, as they arrive).
    sink: tokio::sync::mpsc::Receiver<Arc<barkeep::model::TickBatch>>,
    closed: Vec<(i64, &'static str)>,
}

impl Harness {
    fn new(sources: Vec<Arc<dyn Source>>) -> Self {
        Self::with_config(sources, config())
    }

    fn with_config(sources: Vec<Arc<dyn Source>>, config: Config) -> Self {
        let (tx, sink) = tokio::sync::mpsc::channel(1_024);
        let symbols = SymbolTable::new(&config.symbols);
        let names: Vec<&'static str> = sources.iter().map(|s| s.name()).collect();
        let metrics = Arc::new(Metrics::new(&names));
        let snapshot = Arc::new(Snapshot::new(
            symbols.clone(),
            config.timeframes.clone(),
            &config.indicators,
        ));
        let collector = Collector::new(
            &config,
            symbols,
            sources,
            snapshot,
            Arc::clone(&metrics),
            vec![tx],
            Clock::tokio(T0),
        );
        Self {
            collector,
            metrics,
            sink,
            closed: Vec::new(),
        }
    }

    /// One tick, then one second.
    async fn tick(&mut self) {
        let last = Arc::new(self.collector.tick().await);
        let mut batches = vec![];
        while let Ok(batch) = self.sink.try_recv() {
            batches.push(batch);
        }
        batches.push(last);
        for e in batches.iter().flat_map(|b| &b.events) {
            if let Event::Closed { record, .. } = e
                && record.symbol == 0
            {
                self.closed.push((record.bar.ts, record.source));
            }
        }
        tokio::time::advance(Duration::from_secs(1)).await;
    }

    fn breaker(&self, source: usize) -> i64 {
        self.metrics.sources[source].breaker_state.get()
    }
}

#[tokio::test(start_paused = true)]
async fn failing_primary_falls_back_without_a_gap_and_recovers_after_the_open_period() {
    let primary = Fixture::new("primary", RateLimit::UNLIMITED);
    let backup = Fixture::new("backup", RateLimit::UNLIMITED);
    let mut h = Harness::new(vec![primary.clone(), backup.clone()]);
    for _ in 0..3 {
        h.tick().await;
    }
    assert!(h.closed.iter().all(|(_, s)| *s == "primary"));

    primary.failing.store(true, Ordering::Relaxed);
    for _ in 0..5 {
        h.tick().await;
    }
    assert_eq!(h.breaker(0), 1, "open after 5 consecutive failures");
    assert_eq!(h.metrics.sources[0].breaker_opens.get(), 1);
    let calls_when_opened = primary.calls.load(Ordering::Relaxed);
    for _ in 0..30 {
        h.tick().await;
    }
    assert_eq!(
        primary.calls.load(Ordering::Relaxed),
        calls_when_opened,
        "an open breaker sends nothing"
    );

    primary.failing.store(false, Ordering::Relaxed);
    for _ in 0..40 {
        h.tick().await; // 60 s after opening, one trial succeeds
    }
    assert_eq!(h.breaker(0), 0, "closed again after the trial");
    let last = h.closed.last().expect("bars");
    assert_eq!(last.1, "primary", "the better source serves again");
    assert!(h.closed.iter().any(|(_, s)| *s == "backup"));
    // Every second has its bar: no gap through failure and recovery.
    assert!(
        h.closed.windows(2).all(|w| w[1].0 - w[0].0 == 1_000),
        "{:?}",
        h.closed
    );
    assert_eq!(h.metrics.gaps.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_failed_trial_reopens_and_rate_limits_are_honoured() {
    let primary = Fixture::new(
        "primary",
        RateLimit {
            per_minute: Some(30),
            per_day: None,
        },
    );
    let backup = Fixture::new("backup", RateLimit::UNLIMITED);
    let mut h = Harness::new(vec![primary.clone(), backup.clone()]);
    // A budget of 30 per minute at one request per second: a full bucket of 30, then one
    // token every 2 s, so about 30 + 120 / 2 = 90 ticks go to the primary, the rest to the backup.
    for _ in 0..120 {
        h.tick().await;
    }
    let primary_bars = h.closed.iter().filter(|(_, s)| *s == "primary").count();
    assert!((85..=92).contains(&primary_bars), "{primary_bars}");
    assert!(h.metrics.sources[0].budget_skips.get() > 0);
    assert!(h.closed.windows(2).all(|w| w[1].0 - w[0].0 == 1_000));

    // "429, retry after 30 s": the primary is left alone for 30 s, then asked again.
    primary.rate_limited.store(true, Ordering::Relaxed);
    h.tick().await;
    primary.rate_limited.store(false, Ordering::Relaxed);
    let calls = primary.calls.load(Ordering::Relaxed);
    for _ in 0..29 {
        h.tick().await;
    }
    assert_eq!(
        primary.calls.load(Ordering::Relaxed),
        calls,
        "Retry-After honoured"
    );
    assert_eq!(h.breaker(0), 0, "a rate limit is not a failure");
    for _ in 0..3 {
        h.tick().await;
    }
    assert!(primary.calls.load(Ordering::Relaxed) > calls);

    // Open, then a trial that fails: open for another full period.
    primary.failing.store(true, Ordering::Relaxed);
    for _ in 0..70 {
        h.tick().await;
    }
    assert_eq!(h.breaker(0), 1, "re-opened after the failed trial");
    assert!(h.metrics.sources[0].breaker_opens.get() >= 2);
    assert!(
        h.closed.windows(2).all(|w| w[1].0 - w[0].0 == 1_000),
        "backup filled every second"
    );
}

#[tokio::test(start_paused = true)]
async fn each_answer_reaches_the_sinks_without_waiting_for_a_slower_request() {
    let slow_for = Duration::from_millis(500);
    let source = Arc::new(Fixture {
        slow: Some((1, slow_for)), // XAUUSD
        ..Arc::into_inner(Fixture::new("primary", RateLimit::UNLIMITED)).expect("fresh")
    });
    let mut h = Harness::new(vec![source]);
    let started = tokio::time::Instant::now();
    let symbols_of = |batch: &barkeep::model::TickBatch| -> Vec<SymbolId> {
        let mut ids: Vec<SymbolId> = batch
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Closed { record, .. } | Event::Forming { record, .. } => Some(record.symbol),
                _ => None,
            })
            .collect();
        ids.dedup();
        ids
    };
    let (last, (first, first_at)) = tokio::join!(h.collector.tick(), async {
        let first = tokio::time::timeout(slow_for * 4, h.sink.recv())
            .await
            .expect("a batch reaches the sinks during the tick")
            .expect("a batch");
        (first, started.elapsed())
    });
    let tick_took = started.elapsed();
    assert_eq!(symbols_of(&first), [0], "EURUSD's answer alone, at once");
    assert!(
        first_at < slow_for,
        "sent after {first_at:?}, not after the slow request"
    );
    assert!(
        tick_took >= slow_for,
        "the tick waited for XAUUSD: {tick_took:?}"
    );
    let mut rest: Vec<SymbolId> = symbols_of(&last);
    while let Ok(batch) = h.sink.try_recv() {
        rest.extend(symbols_of(&batch));
    }
    assert!(rest.contains(&1), "XAUUSD follows: {rest:?}");
    assert!(!rest.contains(&0), "EURUSD finished once: {rest:?}");
}

#[tokio::test(start_paused = true)]
async fn a_budget_spent_elsewhere_is_spent_for_the_collector_too() {
    let limit = RateLimit {
        per_minute: Some(10),
        per_day: None,
    };
    let primary = Fixture::new("primary", limit);
    let backup = Fixture::new("backup", RateLimit::UNLIMITED);
    let mut h = Harness::new(vec![primary.clone(), backup.clone()]);
    let chain = h.collector.chain();
    assert_eq!(chain.source(0).name(), "primary");
    // What a bootstrap beside the collector does: spend the primary's minute.
    while let Ok(permit) = chain.permit(0, DataType::History, Work::Batch, 1) {
        permit.served();
    }
    while let Ok(permit) = chain.permit(0, DataType::MarketData, Work::Live, 1) {
        permit.served();
    }
    let skips = h.metrics.sources[0].budget_skips.get();
    assert_eq!(skips, 1, "the last live permit refused");
    h.tick().await;
    assert_eq!(primary.calls.load(Ordering::Relaxed), 0, "no budget left");
    assert_eq!(h.metrics.sources[0].budget_skips.get(), skips + 1);
    assert_eq!(backup.calls.load(Ordering::Relaxed), 1, "the backup served");
}

#[tokio::test(start_paused = true)]
async fn a_trial_answered_not_served_is_no_verdict_and_the_source_is_tried_again() {
    let primary = Fixture::new("primary", RateLimit::UNLIMITED);
    let backup = Fixture::new("backup", RateLimit::UNLIMITED);
    let mut h = Harness::new(vec![primary.clone(), backup.clone()]);
    primary.failing.store(true, Ordering::Relaxed);
    for _ in 0..5 {
        h.tick().await;
    }
    assert_eq!(h.breaker(0), 1, "open");
    // The open period passes; the trial is answered "not served".
    primary.failing.store(false, Ordering::Relaxed);
    primary.not_served.store(true, Ordering::Relaxed);
    let calls = primary.calls.load(Ordering::Relaxed);
    for _ in 0..61 {
        h.tick().await;
    }
    assert!(
        primary.calls.load(Ordering::Relaxed) > calls,
        "the trial went out"
    );
    assert_ne!(h.breaker(0), 0, "no verdict: not closed by it");
    // Serving again: the next trial goes out and closes the breaker.
    primary.not_served.store(false, Ordering::Relaxed);
    for _ in 0..3 {
        h.tick().await;
    }
    assert_eq!(h.breaker(0), 0, "closed after the next trial");
    assert_eq!(h.closed.last().map(|c| c.1), Some("primary"));
}

#[tokio::test(start_paused = true)]
async fn at_the_deadline_only_requests_sent_count_against_the_breaker() {
    // One request per symbol, one at a time: EURUSD's answers after 2 s, past the deadline,
    // so XAUUSD's request is still queued, never sent, when the tick gives up.
    let source = Arc::new(Fixture {
        slow: Some((0, Duration::from_secs(2))),
        ..Arc::into_inner(Fixture::new("primary", RateLimit::UNLIMITED)).expect("fresh")
    });
    let mut h = Harness::with_config(
        vec![source.clone()],
        config_with(&[("MAX_CONCURRENCY", "1")]),
    );
    let started = tokio::time::Instant::now();
    h.collector.tick().await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the tick ended at its deadline"
    );
    assert_eq!(
        source.calls.load(Ordering::Relaxed),
        1,
        "only EURUSD's request went out"
    );
    assert_eq!(h.metrics.tick_deadline_hits.get(), 1);
    assert_eq!(
        h.metrics.sources[0].timeouts.get(),
        1,
        "the unsent request is no timeout"
    );
    // Four more such ticks are 5 failures of sent requests: now the breaker opens (it would
    // have opened after three ticks if queued requests counted).
    for _ in 0..3 {
        tokio::time::advance(Duration::from_secs(1)).await;
        h.collector.tick().await;
    }
    assert_eq!(h.breaker(0), 0, "4 sent requests failed: still closed");
    tokio::time::advance(Duration::from_secs(1)).await;
    h.collector.tick().await;
    assert_eq!(h.breaker(0), 1, "the 5th opens it");
}
