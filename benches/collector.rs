//! One collection tick of the collector, the whole per-tick hot path except the sinks' own
//! work: the synthetic source's quotes for every symbol, validation, bars, indicators, the
//! views published to the snapshot and the batches handed to a sink queue (drained here).
//!
//! - `collector/tick_{100,1000}`: one tick of 100 or 1 000 symbols (one element: one symbol);
//!   the clock moves one second per tick, so every tick is a fresh quote and every 60th closes
//!   a 1m bar.
//! - `collector/symbol_name_10000`: `SymbolTable::name` over 10 000 ids (the look-up every sink
//!   does per row).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use barkeep::clock::Clock;
use barkeep::collector::Collector;
use barkeep::config::Config;
use barkeep::metrics::Metrics;
use barkeep::model::SymbolTable;
use barkeep::store::snapshot::Snapshot;

fn config(n: usize) -> Config {
    let symbols: Vec<String> = (0..n).map(|i| format!("S{i:05}")).collect();
    let symbols = symbols.join(",");
    Config::from_lookup(|name| match name {
        "SYMBOLS" => Some(symbols.clone()),
        "SYNTHETIC_BAD_TICK_RATE" => Some("0".into()),
        _ => None,
    })
    .expect("a valid configuration")
}

fn tick(c: &mut Criterion, n: usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    let config = config(n);
    let symbols = SymbolTable::new(&config.symbols);
    let (tx, mut rx) = tokio::sync::mpsc::channel(1_024);
    let mut collector = runtime.block_on(async {
        let sources = barkeep::sources::build(&config, &symbols);
        let names: Vec<&'static str> = sources.iter().map(|s| s.name()).collect();
        let metrics = Arc::new(Metrics::new(&names));
        let snapshot = Arc::new(Snapshot::new(
            symbols.clone(),
            config.timeframes.clone(),
            &config.indicators,
        ));
        Collector::new(
            &config,
            symbols.clone(),
            sources,
            snapshot,
            metrics,
            vec![tx],
            Clock::tokio(1_700_000_000_000),
        )
    });
    let mut group = c.benchmark_group("collector");
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function(format!("tick_{n}"), |b| {
        b.iter(|| {
            runtime.block_on(async {
                tokio::time::advance(Duration::from_secs(1)).await;
                let batch = collector.tick().await;
                while rx.try_recv().is_ok() {}
                black_box(batch);
            });
        });
    });
    group.finish();
}

fn names(c: &mut Criterion) {
    let table = SymbolTable::new((0..10_000).map(|i| format!("S{i:05}")));
    let mut group = c.benchmark_group("collector");
    group.throughput(Throughput::Elements(10_000));
    group.bench_function("symbol_name_10000", |b| {
        b.iter(|| {
            let mut total = 0usize;
            for id in 0..10_000u32 {
                total += table.name(black_box(id)).len();
            }
            black_box(total)
        });
    });
    group.finish();
}

fn collector(c: &mut Criterion) {
    tick(c, 100);
    tick(c, 1_000);
    names(c);
}

criterion_group!(benches, collector);
criterion_main!(benches);
