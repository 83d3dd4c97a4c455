//! The source chain through the real collector loop, on tokio's paused clock: history asked
//! after a stream reconnect runs beside the ticks, never inside them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use barkeep::clock::Clock;
use barkeep::collector::Collector;
use barkeep::config::Config;
use barkeep::metrics::Metrics;
use barkeep::model::{Bar, Event, Quote, SymbolId, SymbolTable, Timeframe};
use barkeep::sources::{Capabilities, Source, SourceError, StreamEvent, StreamTask};
use barkeep::store::snapshot::Snapshot;

const T0: i64 = 1_700_000_100_000;
const SYMBOLS: usize = 50;
/// The stream is silent from 10 s to 20 s after the start.
const OUTAGE: (u64, u64) = (10, 20);
/// Each history request takes this long.
const HISTORY_TAKES: Duration = Duration::from_secs(5);

/// A push provider whose stream drops for ten seconds, whose REST quotes fail meanwhile, and
/// whose history answers slowly.
struct Pusher {
    history_calls: AtomicU32,
}

fn wall(start: tokio::time::Instant) -> i64 {
    T0 + start.elapsed().as_millis() as i64
}

impl Source for Pusher {
    fn name(&self) -> &'static str {
        "pusher"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            batched_quotes: true,
            max_batch: 100,
            history: true,
            stream: true,
        }
    }
    fn quotes<'a>(
        &'a self,
        _symbols: &'a [SymbolId],
        _now_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<Quote>, SourceError>> {
        Box::pin(async {
            Err(SourceError::Network {
                source_name: "pusher",
                reason: "connection refused".into(),
            })
        })
    }
    fn stream(
        self: Arc<Self>,
        out: mpsc::Sender<StreamEvent>,
        shutdown: CancellationToken,
    ) -> Option<StreamTask> {
        Some(Box::pin(async move {
            let start = tokio::time::Instant::now();
            let mut every = tokio::time::interval(Duration::from_millis(250));
            let mut down_since = None;
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = every.tick() => {}
                }
                let s = start.elapsed().as_secs();
                if (OUTAGE.0..OUTAGE.1).contains(&s) {
                    down_since.get_or_insert(wall(start));
                    continue;
                }
                if let Some(since_ms) = down_since.take() {
                    let _ = out.send(StreamEvent::Reconnected { since_ms }).await;
                }
                // Every symbol of the test's table.
                for symbol in 0..SYMBOLS as SymbolId {
                    let quote = Quote {
                        symbol,
                        ts: wall(start),
                        price: 100.0,
                        volume: 1.0,
                    };
                    let _ = out.send(StreamEvent::Quote(quote)).await;
                }
            }
        }))
    }
    fn history(
        &self,
        _symbol: SymbolId,
        timeframe: Timeframe,
        from_ms: i64,
        to_ms: i64,
    ) -> BoxFuture<'_, Result<Vec<Bar>, SourceError>> {
        self.history_calls.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move {
            tokio::time::sleep(HISTORY_TAKES).await;
            Ok((from_ms..to_ms)
                .step_by(timeframe.ms() as usize)
                .map(|ts| Bar {
                    ts,
                    open: 100.0,
                    high: 100.0,
                    low: 100.0,
                    close: 100.0,
                    volume: 4.0,
                })
                .collect())
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_stream_reconnect_of_50_symbols_is_repaired_beside_the_ticks_not_inside_them() {
    let names: Vec<String> = (0..SYMBOLS).map(|i| format!("BTC{i:02}")).collect();
    let config = Config::from_lookup(|name| match name {
        "SYMBOLS" => Some(names.join(",")),
        "TIMEFRAMES" => Some("1s".into()),
        "MARKET_HOURS" => Some("*:always".into()),
        _ => None,
    })
    .expect("valid config");
    let pusher = Arc::new(Pusher {
        history_calls: AtomicU32::new(0),
    });
    let symbols = SymbolTable::new(&config.symbols);
    let metrics = Arc::new(Metrics::new(&["pusher"]));
    let snapshot = Arc::new(Snapshot::new(
        symbols.clone(),
        config.timeframes.clone(),
        &config.indicators,
    ));
    let (tx, mut sink) = mpsc::channel(100_000);
    let collector = Collector::new(
        &config,
        symbols,
        vec![pusher.clone()],
        snapshot,
        Arc::clone(&metrics),
        vec![tx],
        Clock::tokio(T0),
    );
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(collector.run(shutdown.clone()));

    // Until every symbol's hole is filled: 50 requests of 5 s each, one at a time.
    let mut waited = Duration::ZERO;
    while metrics.gaps_repaired.get() < SYMBOLS as u64 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        waited += Duration::from_secs(1);
        assert!(
            waited < Duration::from_secs(600),
            "repaired {} of {SYMBOLS}; gaps {}, pending {}, history requests {}, ticks {}",
            metrics.gaps_repaired.get(),
            metrics.gaps.get(),
            metrics.gaps_pending.get(),
            pusher.history_calls.load(Ordering::Relaxed),
            metrics.ticks.get()
        );
    }
    shutdown.cancel();
    run.await.expect("collector");

    let repair_time = HISTORY_TAKES * SYMBOLS as u32;
    assert!(
        waited >= repair_time,
        "the repairs took their time: {waited:?}"
    );
    assert_eq!(pusher.history_calls.load(Ordering::Relaxed), SYMBOLS as u32);
    // REST failed during the outage and opened the breaker: the repairs waited for its trial
    // instead of spending their attempts on refusals.
    assert!(metrics.sources[0].breaker_opens.get() >= 1);
    // Meanwhile every tick ran on time and took no (virtual) time at all.
    assert_eq!(metrics.missed_ticks.get(), 0);
    assert_eq!(metrics.tick_deadline_hits.get(), 0);
    assert!(
        metrics.ticks.get() >= repair_time.as_secs(),
        "a tick every second: {}",
        metrics.ticks.get()
    );
    assert!(
        metrics.tick_duration.quantile_ms(1.0) < 100.0,
        "the longest tick: {} ms",
        metrics.tick_duration.quantile_ms(1.0)
    );
    // The repaired bars went the way of any other: one closed bar per second, no hole.
    let mut closed: Vec<i64> = Vec::new();
    while let Ok(batch) = sink.try_recv() {
        for e in &batch.events {
            if let Event::Closed { record, .. } = e
                && record.symbol == 0
            {
                closed.push(record.bar.ts);
            }
        }
    }
    closed.sort_unstable();
    closed.dedup();
    let holes: Vec<_> = closed
        .windows(2)
        .filter(|w| w[1] - w[0] != 1_000)
        .map(|w| (w[0] - T0, w[1] - T0))
        .collect();
    assert!(holes.is_empty(), "holes in symbol 0's bars: {holes:?}");
    assert!(
        closed.len() as u64 >= repair_time.as_secs(),
        "{} bars",
        closed.len()
    );
}

/// A source whose third request stalls the whole tick for 2.5 s (as a blocked runtime would):
/// the ticks it covered are skipped and counted, never queued up and run back to back.
struct Stalling {
    calls: AtomicU32,
}

impl Source for Stalling {
    fn name(&self) -> &'static str {
        "stalling"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            batched_quotes: true,
            max_batch: 100,
            history: false,
            stream: false,
        }
    }
    fn quotes<'a>(
        &'a self,
        symbols: &'a [SymbolId],
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<Quote>, SourceError>> {
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move {
            if call == 2 {
                tokio::time::advance(Duration::from_millis(2_500)).await;
            }
            Ok(symbols
                .iter()
                .map(|&symbol| Quote {
                    symbol,
                    ts: now_ms,
                    price: 100.0,
                    volume: 1.0,
                })
                .collect())
        })
    }
}

#[tokio::test(start_paused = true)]
async fn ticks_covered_by_an_overrun_are_skipped_and_counted() {
    let config = Config::from_lookup(|name| match name {
        "SYMBOLS" => Some("BTCUSD".into()),
        "TIMEFRAMES" => Some("1s".into()),
        _ => None,
    })
    .expect("valid config");
    let source = Arc::new(Stalling {
        calls: AtomicU32::new(0),
    });
    let symbols = SymbolTable::new(&config.symbols);
    let metrics = Arc::new(Metrics::new(&["stalling"]));
    let snapshot = Arc::new(Snapshot::new(
        symbols.clone(),
        config.timeframes.clone(),
        &config.indicators,
    ));
    let (tx, _sink) = mpsc::channel(1_000);
    let collector = Collector::new(
        &config,
        symbols,
        vec![source.clone()],
        snapshot,
        Arc::clone(&metrics),
        vec![tx],
        Clock::tokio(T0),
    );
    let shutdown = CancellationToken::new();
    let start = tokio::time::Instant::now();
    let run = tokio::spawn(collector.run(shutdown.clone()));
    // Ticks at 0, 1 and 2 s; the one at 2 s takes until 4.5 s. The one due at 3 s runs at once,
    // late, the one at 4 s is skipped, and the schedule goes on at 5, 6, 7, 8 and 9 s.
    tokio::time::sleep_until(start + Duration::from_millis(9_500)).await;
    shutdown.cancel();
    run.await.expect("collector");
    assert_eq!(metrics.missed_ticks.get(), 1);
    assert_eq!(metrics.ticks.get(), 9);
    assert_eq!(source.calls.load(Ordering::Relaxed), 9, "no tick ran twice");
    assert!(metrics.tick_duration.quantile_ms(1.0) >= 2_500.0);
}
