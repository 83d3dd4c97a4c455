//! ns per update of every barkeep indicator next to the equivalent of the `yata` 0.7 and `ta`
//! 0.5 crates, in the same run on the same input, plus the whole bundle (`IndicatorSet::update`)
//! and a forming-bar `IndicatorSet::peek`.
//!
//! Groups are named by indicator, functions by crate: `ema/barkeep`, `ema/yata`, `ema/ta`, …
//! Each iteration feeds ONE bar, cycling through GOOG's daily bars (`tests/fixtures/goog.csv`),
//! so the reported time is the time per update. Run: `cargo bench --bench indicators`.
//!
//! The competitors are the closest each crate has, not identical definitions: yata's RSI uses
//! its RMA (Wilder), its ATR is its TR + RMA methods, ta's slow stochastic smooths with an EMA
//! and has no %D; neither crate has a session VWAP, and yata has no OBV.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use barkeep::indicators::{
    Atr, Bollinger, Ema, IndicatorParams, IndicatorSet, Macd, Obv, Rsi, Sma, Stochastic, Vwap,
};
use barkeep::model::Bar;
use criterion::{Criterion, criterion_group, criterion_main};
use ta::Next as _;
use yata::core::{Candle, IndicatorConfig as _, IndicatorInstance as _, Method as _};
use yata::helpers::MA;

/// Bars per cycle; a power of two so the index wraps with a mask.
const CYCLE: usize = 2048;

struct Inputs {
    bars: Vec<Bar>,
    candles: Vec<Candle>,
    items: Vec<ta::DataItem>,
}

fn inputs() -> Inputs {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/goog.csv");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/golden.py)", path.display()));
    let bars: Vec<Bar> = text
        .lines()
        .skip(2)
        .take(CYCLE)
        .map(|line| {
            let c: Vec<&str> = line.split(',').collect();
            let num = |i: usize| c[i].parse::<f64>().expect("number");
            Bar {
                ts: c[0].parse().expect("ts"),
                open: num(1),
                high: num(2),
                low: num(3),
                close: num(4),
                volume: num(5),
            }
        })
        .collect();
    assert_eq!(bars.len(), CYCLE, "goog.csv has fewer than {CYCLE} bars");
    let candles = bars
        .iter()
        .map(|b| Candle {
            open: b.open,
            high: b.high,
            low: b.low,
            close: b.close,
            volume: b.volume,
        })
        .collect();
    let items = bars
        .iter()
        .map(|b| {
            ta::DataItem::builder()
                .open(b.open)
                .high(b.high)
                .low(b.low)
                .close(b.close)
                .volume(b.volume)
                .build()
                .expect("valid bar")
        })
        .collect();
    Inputs {
        bars,
        candles,
        items,
    }
}

/// Benchmarks `step` on one input per iteration, cycling through `inputs`; the input is opaque
/// to the optimiser and the output must be materialised.
fn per_update<T, O>(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    inputs: &[T],
    mut step: impl FnMut(&T) -> O,
) {
    c.bench_function(name, |b| {
        let mut i = 0usize;
        b.iter(|| {
            let x = &inputs[i & (CYCLE - 1)];
            i = i.wrapping_add(1);
            let out = step(black_box(x));
            // Only the address escapes: the output must exist, but it is not copied back, so
            // a crate returning a wider struct pays no store-forwarding penalty for it.
            black_box(&out);
        });
    });
}

fn closes(inputs: &Inputs) -> Vec<f64> {
    inputs.bars.iter().map(|b| b.close).collect()
}

fn moving_averages(c: &mut Criterion) {
    let inp = inputs();
    let xs = closes(&inp);

    let mut g = c.benchmark_group("sma");
    let mut ours = Sma::new(20);
    per_update(&mut g, "barkeep", &xs, |&x| ours.update(x));
    let mut yata_sma = yata::methods::SMA::new(20, &xs[0]).expect("yata sma");
    per_update(&mut g, "yata", &xs, |x| yata_sma.next(x));
    let mut ta_sma = ta::indicators::SimpleMovingAverage::new(20).expect("ta sma");
    per_update(&mut g, "ta", &xs, |&x| ta_sma.next(x));
    g.finish();

    let mut g = c.benchmark_group("ema");
    let mut ours = Ema::new(12);
    per_update(&mut g, "barkeep", &xs, |&x| ours.update(x));
    let mut yata_ema = yata::methods::EMA::new(12, &xs[0]).expect("yata ema");
    per_update(&mut g, "yata", &xs, |x| yata_ema.next(x));
    let mut ta_ema = ta::indicators::ExponentialMovingAverage::new(12).expect("ta ema");
    per_update(&mut g, "ta", &xs, |&x| ta_ema.next(x));
    g.finish();
}

fn oscillators(c: &mut Criterion) {
    let inp = inputs();
    let xs = closes(&inp);

    let mut g = c.benchmark_group("rsi");
    let mut ours = Rsi::new(14);
    per_update(&mut g, "barkeep", &xs, |&x| ours.update(x));
    let cfg = yata::indicators::RSI {
        ma: MA::RMA(14),
        ..Default::default()
    };
    let mut yata_rsi = cfg.init(&inp.candles[0]).expect("yata rsi");
    per_update(&mut g, "yata", &inp.candles, |k| yata_rsi.next(k));
    let mut ta_rsi = ta::indicators::RelativeStrengthIndex::new(14).expect("ta rsi");
    per_update(&mut g, "ta", &xs, |&x| ta_rsi.next(x));
    g.finish();

    let mut g = c.benchmark_group("macd");
    let mut ours = Macd::new(12, 26, 9);
    per_update(&mut g, "barkeep", &xs, |&x| ours.update(x));
    let mut yata_macd = yata::indicators::MACD::default()
        .init(&inp.candles[0])
        .expect("yata macd");
    per_update(&mut g, "yata", &inp.candles, |k| yata_macd.next(k));
    let mut ta_macd =
        ta::indicators::MovingAverageConvergenceDivergence::new(12, 26, 9).expect("ta macd");
    per_update(&mut g, "ta", &xs, |&x| ta_macd.next(x));
    g.finish();

    let mut g = c.benchmark_group("stoch");
    let mut ours = Stochastic::new(14, 3, 3);
    per_update(&mut g, "barkeep", &inp.bars, |b| ours.update(b));
    let cfg = yata::indicators::StochasticOscillator {
        period: 14,
        ma: MA::SMA(3),
        signal: MA::SMA(3),
        ..Default::default()
    };
    let mut yata_stoch = cfg.init(&inp.candles[0]).expect("yata stoch");
    per_update(&mut g, "yata", &inp.candles, |k| yata_stoch.next(k));
    let mut ta_stoch = ta::indicators::SlowStochastic::new(14, 3).expect("ta stoch");
    per_update(&mut g, "ta", &inp.items, |item| ta_stoch.next(item));
    g.finish();
}

fn volatility_and_volume(c: &mut Criterion) {
    let inp = inputs();
    let xs = closes(&inp);

    let mut g = c.benchmark_group("bbands");
    let mut ours = Bollinger::new(20, 2.0);
    per_update(&mut g, "barkeep", &xs, |&x| ours.update(x));
    let mut yata_bb = yata::indicators::BollingerBands::default()
        .init(&inp.candles[0])
        .expect("yata bb");
    per_update(&mut g, "yata", &inp.candles, |k| yata_bb.next(k));
    let mut ta_bb = ta::indicators::BollingerBands::new(20, 2.0).expect("ta bb");
    per_update(&mut g, "ta", &xs, |&x| ta_bb.next(x));
    g.finish();

    let mut g = c.benchmark_group("atr");
    let mut ours = Atr::new(14);
    per_update(&mut g, "barkeep", &inp.bars, |b| ours.update(b));
    let mut yata_tr = yata::methods::TR::new(&inp.candles[0]).expect("yata tr");
    let mut yata_rma = yata::methods::RMA::new(14, &0.0).expect("yata rma");
    per_update(&mut g, "yata", &inp.candles, |k| {
        let tr = yata_tr.next(k);
        yata_rma.next(&tr)
    });
    let mut ta_atr = ta::indicators::AverageTrueRange::new(14).expect("ta atr");
    per_update(&mut g, "ta", &inp.items, |item| ta_atr.next(item));
    g.finish();

    let mut g = c.benchmark_group("obv");
    let mut ours = Obv::new();
    per_update(&mut g, "barkeep", &inp.bars, |b| ours.update(b));
    let mut ta_obv = ta::indicators::OnBalanceVolume::new();
    per_update(&mut g, "ta", &inp.items, |item| ta_obv.next(item));
    g.finish();

    let mut g = c.benchmark_group("vwap");
    let mut ours = Vwap::new(86_400_000, 0, None);
    per_update(&mut g, "barkeep", &inp.bars, |b| ours.update(b));
    g.finish();
}

fn bundle(c: &mut Criterion) {
    let inp = inputs();
    let params = IndicatorParams::default();

    let mut g = c.benchmark_group("bundle");
    let mut set = IndicatorSet::new(&params);
    per_update(&mut g, "barkeep_update", &inp.bars, |b| set.update(b));

    // A forming bar re-evaluated against a warmed-up set: the state never moves.
    let mut warm = IndicatorSet::new(&params);
    for b in &inp.bars[..100] {
        warm.update(b);
    }
    per_update(&mut g, "barkeep_peek", &inp.bars, |b| {
        warm.peek(&Bar {
            ts: warm.last_ts().unwrap_or(0) + 86_400_000,
            ..*b
        })
    });

    // The same 15 outputs from each crate's equivalents, one bar at a time.
    let mut y_sma = yata::methods::SMA::new(20, &inp.bars[0].close).expect("sma");
    let mut y_ema12 = yata::methods::EMA::new(12, &inp.bars[0].close).expect("ema");
    let mut y_ema26 = yata::methods::EMA::new(26, &inp.bars[0].close).expect("ema");
    let mut y_rsi = yata::indicators::RSI {
        ma: MA::RMA(14),
        ..Default::default()
    }
    .init(&inp.candles[0])
    .expect("rsi");
    let mut y_bb = yata::indicators::BollingerBands::default()
        .init(&inp.candles[0])
        .expect("bb");
    let mut y_tr = yata::methods::TR::new(&inp.candles[0]).expect("tr");
    let mut y_rma = yata::methods::RMA::new(14, &0.0).expect("rma");
    let mut y_macd = yata::indicators::MACD::default()
        .init(&inp.candles[0])
        .expect("macd");
    let mut y_stoch = yata::indicators::StochasticOscillator {
        period: 14,
        ma: MA::SMA(3),
        signal: MA::SMA(3),
        ..Default::default()
    }
    .init(&inp.candles[0])
    .expect("stoch");
    per_update(&mut g, "yata_equivalents", &inp.candles, |k| {
        let tr = y_tr.next(k);
        (
            y_sma.next(&k.close),
            y_ema12.next(&k.close),
            y_ema26.next(&k.close),
            y_rsi.next(k),
            y_bb.next(k),
            y_rma.next(&tr),
            y_macd.next(k),
            y_stoch.next(k),
        )
    });

    let mut t_sma = ta::indicators::SimpleMovingAverage::new(20).expect("sma");
    let mut t_ema12 = ta::indicators::ExponentialMovingAverage::new(12).expect("ema");
    let mut t_ema26 = ta::indicators::ExponentialMovingAverage::new(26).expect("ema");
    let mut t_rsi = ta::indicators::RelativeStrengthIndex::new(14).expect("rsi");
    let mut t_bb = ta::indicators::BollingerBands::new(20, 2.0).expect("bb");
    let mut t_atr = ta::indicators::AverageTrueRange::new(14).expect("atr");
    let mut t_macd =
        ta::indicators::MovingAverageConvergenceDivergence::new(12, 26, 9).expect("macd");
    let mut t_stoch = ta::indicators::SlowStochastic::new(14, 3).expect("stoch");
    let mut t_obv = ta::indicators::OnBalanceVolume::new();
    per_update(&mut g, "ta_equivalents", &inp.items, |item| {
        use ta::Close as _;
        let x = item.close();
        (
            t_sma.next(x),
            t_ema12.next(x),
            t_ema26.next(x),
            t_rsi.next(x),
            t_bb.next(x),
            t_atr.next(item),
            t_macd.next(x),
            t_stoch.next(item),
            t_obv.next(item),
        )
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(700))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = moving_averages, oscillators, volatility_and_volume, bundle
}
criterion_main!(benches);
