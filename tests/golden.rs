//! Golden tests: every output of `IndicatorSet`, at every bar from bar 0, against TA-Lib 0.8.1
//! (`ta-lib==0.8.2`) as written to `tests/fixtures/*.csv` by `scripts/golden.py`.
//!
//! A value matches when |got − want| / max(|want|, floor) ≤ 1e-9, floor = 1e-6 × the series'
//! median |close| (INDICATORS.md). Missing values (not ready yet) must be missing on exactly
//! the same bars; EMA, RSI and ATR, which use TA-Lib's exact arithmetic, must be bit-identical.
//! `cargo test --test golden -- --nocapture` prints the worst error per output.

use std::fs;
use std::path::{Path, PathBuf};

use barkeep::indicators::{FEATURE_COUNT, IndicatorParams, IndicatorSet, idx};
use barkeep::model::Bar;

const TOLERANCE: f64 = 1e-9;
const FLOOR_FRACTION_OF_MEDIAN_CLOSE: f64 = 1e-6;

/// Outputs computed with TA-Lib's own arithmetic (same operations, same order, same fused
/// multiply-adds): they must be bit-identical, not merely within tolerance.
const BIT_EXACT: [usize; 4] = [idx::EMA_FAST, idx::EMA_SLOW, idx::RSI, idx::ATR];

/// Every fixture `scripts/golden.py` writes; a missing file fails the test.
const FIXTURES: &[&str] = &[
    "goog",
    "btcusd",
    "btcusd_alt",
    "flat",
    "flat_alt",
    "tiny",
    "huge",
    "seconds",
];

struct Fixture {
    name: String,
    params: IndicatorParams,
    bars: Vec<Bar>,
    /// TA-Lib's outputs per bar; NaN = not ready.
    want: Vec<[f64; FEATURE_COUNT]>,
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn parse_cell(s: &str) -> f64 {
    if s.is_empty() {
        f64::NAN
    } else {
        s.parse()
            .unwrap_or_else(|e| panic!("bad number {s:?}: {e}"))
    }
}

fn load(name: &str) -> Fixture {
    let path = fixtures_dir().join(format!("{name}.csv"));
    let text = fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/golden.py)", path.display()));
    let mut lines = text.lines();
    let meta_line = lines.next().expect("meta line");
    let meta: serde_json::Value =
        serde_json::from_str(meta_line.trim_start_matches('#').trim()).expect("meta json");
    let params: IndicatorParams =
        serde_json::from_value(meta["params"].clone()).expect("params in meta");
    let header = lines.next().expect("header");
    assert_eq!(
        header.split(',').count(),
        6 + FEATURE_COUNT,
        "{name}: columns"
    );
    let mut bars = Vec::new();
    let mut want = Vec::new();
    for line in lines {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells.len(), 6 + FEATURE_COUNT, "{name}: row {line}");
        let num = |i: usize| parse_cell(cells[i]);
        bars.push(Bar {
            ts: cells[0].parse().expect("ts"),
            open: num(1),
            high: num(2),
            low: num(3),
            close: num(4),
            volume: num(5),
        });
        want.push(std::array::from_fn(|k| num(6 + k)));
    }
    Fixture {
        name: name.to_owned(),
        params,
        bars,
        want,
    }
}

fn median_abs_close(bars: &[Bar]) -> f64 {
    let mut closes: Vec<f64> = bars.iter().map(|b| b.close.abs()).collect();
    closes.sort_by(f64::total_cmp);
    let n = closes.len();
    if n % 2 == 1 {
        closes[n / 2]
    } else {
        (closes[n / 2 - 1] + closes[n / 2]) / 2.0
    }
}

struct Report {
    mismatches: Vec<String>,
    worst: [f64; FEATURE_COUNT],
    bit_equal: [usize; FEATURE_COUNT],
    present: [usize; FEATURE_COUNT],
}

fn check(fx: &Fixture) -> Report {
    let names = fx.params.feature_names();
    let floor = FLOOR_FRACTION_OF_MEDIAN_CLOSE * median_abs_close(&fx.bars);
    let mut set = IndicatorSet::new(&fx.params);
    let mut report = Report {
        mismatches: Vec::new(),
        worst: [0.0; FEATURE_COUNT],
        bit_equal: [0; FEATURE_COUNT],
        present: [0; FEATURE_COUNT],
    };
    for (i, (bar, want)) in fx.bars.iter().zip(&fx.want).enumerate() {
        let peeked = set.peek(bar);
        let got = set.update(bar);
        for k in 0..FEATURE_COUNT {
            let (g, w) = (got.values[k], want[k]);
            assert_eq!(
                g.to_bits(),
                peeked.values[k].to_bits(),
                "{}: peek and update differ at bar {i}, {}",
                fx.name,
                names[k]
            );
            if w.is_nan() || g.is_nan() {
                if w.is_nan() != g.is_nan() {
                    report.mismatches.push(format!(
                        "{} bar {i} {}: got {g}, TA-Lib {w} (readiness differs)",
                        fx.name, names[k]
                    ));
                }
                continue;
            }
            report.present[k] += 1;
            if g.to_bits() == w.to_bits() {
                report.bit_equal[k] += 1;
            }
            let rel = (g - w).abs() / w.abs().max(floor);
            report.worst[k] = report.worst[k].max(rel);
            if rel > TOLERANCE || rel.is_nan() {
                report.mismatches.push(format!(
                    "{} bar {i} {}: got {g:e}, TA-Lib {w:e}, relative error {rel:e}",
                    fx.name, names[k]
                ));
            }
        }
    }
    report
}

#[test]
fn every_output_matches_talib_from_bar_zero() {
    let mut failures = Vec::new();
    for name in FIXTURES {
        let fx = load(name);
        assert!(fx.params.validate().is_ok(), "{name}: params");
        let report = check(&fx);
        let names = fx.params.feature_names();
        println!(
            "{name}: {} bars, worst relative error per output (bit-identical / present):",
            fx.bars.len()
        );
        for (k, name) in names.iter().enumerate() {
            println!(
                "  {:<12} {:>9.2e}  ({}/{})",
                name, report.worst[k], report.bit_equal[k], report.present[k]
            );
        }
        failures.extend(report.mismatches);
        for k in BIT_EXACT {
            if report.bit_equal[k] != report.present[k] {
                failures.push(format!(
                    "{name} {}: only {}/{} values bit-identical to TA-Lib",
                    names[k], report.bit_equal[k], report.present[k]
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches, first ones:\n{}",
        failures.len(),
        failures[..failures.len().min(40)].join("\n")
    );
}

#[test]
fn fixtures_cover_the_warmup_and_every_output() {
    for name in FIXTURES {
        let fx = load(name);
        let warmup = fx.params.warmup_bars();
        assert!(fx.bars.len() > warmup, "{name}: too short");
        // The first bar where TA-Lib has every output is the warm-up bar count − 1 (VWAP aside,
        // which waits for volume).
        let first_full = fx
            .want
            .iter()
            .position(|w| w[..FEATURE_COUNT - 1].iter().all(|v| !v.is_nan()))
            .expect("some bar has every output");
        assert_eq!(first_full + 1, warmup, "{name}: warmup_bars");
    }
}
