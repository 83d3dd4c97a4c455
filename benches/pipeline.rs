//! The per-tick hot path without sinks: validate → build bars → indicators.
//!
//! `pipeline/quote_1s_bars`: every quote closes a 1-second bar, so each element is one quote
//! *and* one closed bar with all 15 outputs, plus the forming-bar peek of `finish_tick`.
//! `pipeline/quote_1m_bars`: 60 quotes per closed bar (the default timeframe), each quote
//! peeked. Baseline in the same run: `indicators_only`, the indicator bundle alone on the same
//! bars, so the ratio shows what validation and bar building add.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

use barkeep::config::ValidationConfig;
use barkeep::indicators::{IndicatorParams, IndicatorSet};
use barkeep::model::{Bar, Quote};
use barkeep::pipeline::SymbolPipeline;

const N: usize = 10_000;
const T0: i64 = 1_700_000_100_000;

/// A seeded random walk (xorshift), one quote per second.
fn quotes() -> Vec<Quote> {
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut price = 18_000.0;
    (0..N)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let u = (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
            price *= 1.0 + u * 1e-4;
            Quote {
                symbol: 0,
                ts: T0 + i as i64 * 1_000,
                price,
                volume: 1.0 + (state % 100) as f64,
            }
        })
        .collect()
}

fn run(c: &mut Criterion, name: &str, tf: &str) {
    let quotes = quotes();
    let validation = ValidationConfig::default();
    let params = IndicatorParams::default();
    let timeframes = [tf.parse().expect("valid timeframe")];
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(N as u64));
    group.bench_function(name, |b| {
        b.iter_batched_ref(
            || {
                (
                    SymbolPipeline::new(
                        0,
                        &validation,
                        &timeframes,
                        &params,
                        barkeep::calendar::MarketCalendar::Always,
                        1_000,
                    ),
                    Vec::with_capacity(4 * N),
                )
            },
            |(pipeline, events)| {
                for q in &quotes {
                    events.clear();
                    pipeline.on_quote(q, "bench", q.ts, events);
                    pipeline.finish_tick(q.ts + 999, events);
                    black_box(&events);
                }
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

fn pipeline(c: &mut Criterion) {
    run(c, "quote_1s_bars", "1s");
    run(c, "quote_1m_bars", "1m");
    let bars: Vec<Bar> = quotes()
        .iter()
        .map(|q| Bar::from_price(q.ts, q.price, q.volume))
        .collect();
    let params = IndicatorParams::default();
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(N as u64));
    group.bench_function("indicators_only", |b| {
        b.iter_batched_ref(
            || IndicatorSet::new(&params),
            |set| {
                for bar in &bars {
                    black_box(set.update(bar));
                }
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
