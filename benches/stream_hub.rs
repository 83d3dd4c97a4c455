//! What the streaming hub adds to a tick: `Hub::publish` of one tick's batch at 1 000 and
//! 10 000 symbols (two timeframes, `1s` closing a bar every tick and `1m` forming), with no
//! client subscribed — every message is still numbered, rendered once and kept for resumes.
//!
//! Baseline in the same run: `pipeline_tick`, the pipelines' own work that produced that batch
//! (one quote per symbol through validate → bars → indicators, then `finish_tick`), so the
//! ratio says what streaming costs per symbol-tick next to the collection itself.

use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

use barkeep::config::ValidationConfig;
use barkeep::indicators::IndicatorParams;
use barkeep::metrics::Metrics;
use barkeep::model::{Quote, SymbolTable, TickBatch, Timeframe};
use barkeep::pipeline::SymbolPipeline;
use barkeep::store::snapshot::Snapshot;
use barkeep::stream::hub::{Hub, StreamSettings};
use barkeep::stream::message::Names;

const T0: i64 = 1_700_000_100_000;
const WARM_TICKS: i64 = 40;

fn pipelines(n: usize, frames: &[Timeframe]) -> Vec<SymbolPipeline> {
    let validation = ValidationConfig::default();
    let params = IndicatorParams::default();
    (0..n)
        .map(|i| {
            SymbolPipeline::new(
                i as u32,
                &validation,
                frames,
                &params,
                barkeep::calendar::MarketCalendar::Always,
                1_000,
            )
        })
        .collect()
}

/// One tick of quotes for every symbol at second `t`: a small deterministic walk.
fn tick(pipelines: &mut [SymbolPipeline], t: i64) -> TickBatch {
    let now = T0 + t * 1_000;
    let mut events = Vec::with_capacity(pipelines.len() * 6);
    for (i, p) in pipelines.iter_mut().enumerate() {
        let wiggle = ((t * 7919 + i as i64 * 104_729) % 200 - 100) as f64 * 1e-4;
        let quote = Quote {
            symbol: i as u32,
            ts: now,
            price: 100.0 + i as f64 * 0.01 + wiggle,
            volume: 1.0 + (t % 10) as f64,
        };
        p.on_quote(&quote, "bench", now, &mut events);
        p.finish_tick(now + 999, &mut events);
    }
    TickBatch::new(now, events)
}

fn hub(c: &mut Criterion) {
    let frames: Vec<Timeframe> = ["1s", "1m"]
        .iter()
        .map(|f| f.parse().expect("valid timeframe"))
        .collect();
    let params = IndicatorParams::default();
    let mut group = c.benchmark_group("stream_hub");
    group.sample_size(20);
    for n in [1_000usize, 10_000] {
        let mut ps = pipelines(n, &frames);
        // Warm the indicators so features are real numbers, as in a running sidecar.
        for t in 0..WARM_TICKS {
            tick(&mut ps, t);
        }
        let batch = tick(&mut ps, WARM_TICKS);
        let symbols = SymbolTable::new((0..n).map(|i| format!("S{i:05}")));
        let snapshot = Snapshot::new(symbols, frames.clone(), &params);
        let hub = Hub::new(
            Names::of(&snapshot),
            StreamSettings {
                replay: 100,
                client_queue: 1_024,
                stale_after_ms: 60_000,
            },
            Arc::new(Metrics::new(&["bench"])),
        );
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("publish_{n}"), |b| {
            b.iter(|| hub.publish(black_box(&batch)));
        });
        let mut t = WARM_TICKS + 1;
        group.bench_function(format!("pipeline_tick_{n}"), |b| {
            b.iter_batched_ref(
                || (),
                |()| {
                    t += 1;
                    black_box(tick(&mut ps, t));
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, hub);
criterion_main!(benches);
