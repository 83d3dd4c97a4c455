//! Golden tests: every output of `IndicatorSet`, at every bar from bar 0, against TA-Lib 0.8.1
//! (`ta-lib==0.8.2`) as written to `tests/fixtures/*.csv` by `scripts/golden.py`.
//!
//! A value matches when |got − want| / max(|want|, floor) ≤ 1e-9, floor = 1e-6 × the series'
//! median |close| (INDICATORS.md). Missing values (not ready yet) must be missing on exactly
//! the same bars; EMA, RSI and ATR, which use TA-Lib's exact arithmetic, must be bit-identical.
//! `cargo test --test golden -- --nocapture` prints the worst error per output.
//!
//! The real series in [`REPLAYED`] are also replayed as `barkeep replay` does (validator, then
//! indicators): every bar must be accepted and every output must match TA-Lib the same way.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use barkeep::indicators::{IndicatorParams, IndicatorSet, idx};
use barkeep::model::{Bar, FEATURE_COUNT};

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
    "eurusd_1h",
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
    let mut report = Report::new();
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
            report.compare(&fx.name, i, k, &names[k], g, w, floor);
        }
    }
    report
}

impl Report {
    fn new() -> Self {
        Self {
            mismatches: Vec::new(),
            worst: [0.0; FEATURE_COUNT],
            bit_equal: [0; FEATURE_COUNT],
            present: [0; FEATURE_COUNT],
        }
    }

    /// Output `k` (`name`) at bar `i`: `got` against TA-Lib's `want`.
    #[allow(clippy::too_many_arguments, reason = "one value and where it is")]
    fn compare(&mut self, fx: &str, i: usize, k: usize, name: &str, g: f64, w: f64, floor: f64) {
        if w.is_nan() || g.is_nan() {
            if w.is_nan() != g.is_nan() {
                self.mismatches.push(format!(
                    "{fx} bar {i} {name}: got {g}, TA-Lib {w} (readiness differs)"
                ));
            }
            return;
        }
        self.present[k] += 1;
        if g.to_bits() == w.to_bits() {
            self.bit_equal[k] += 1;
        }
        let rel = (g - w).abs() / w.abs().max(floor);
        self.worst[k] = self.worst[k].max(rel);
        if rel > TOLERANCE || rel.is_nan() {
            self.mismatches.push(format!(
                "{fx} bar {i} {name}: got {g:e}, TA-Lib {w:e}, relative error {rel:e}"
            ));
        }
    }

    /// The mismatches, and the bit-exact outputs that were not bit-identical everywhere.
    fn failures(self, fx: &str, names: &[String]) -> Vec<String> {
        let mut failures = self.mismatches;
        for k in BIT_EXACT {
            if self.bit_equal[k] != self.present[k] {
                failures.push(format!(
                    "{fx} {}: only {}/{} values bit-identical to TA-Lib",
                    names[k], self.bit_equal[k], self.present[k]
                ));
            }
        }
        failures
    }
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
        failures.extend(report.failures(name, &names));
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

/// Real series replayed the way `barkeep replay` does it: every bar through the validator, then
/// the indicators. Each one is ordinary market data, so no bar may be rejected; EURUSD's hourly
/// bars include weekend closures (Friday 20:00 to Sunday 21:00).
/// The fields of one flat JSON object (`barkeep replay`'s line: no nesting, no commas or
/// colons in strings), each as its JSON text. Numbers are parsed with `str::parse` afterwards,
/// which is correctly rounded; serde_json's default float parser may be one ulp off, which the
/// bit-exact outputs would not survive.
fn flat_json(line: &str) -> HashMap<String, String> {
    let inner = line
        .trim()
        .strip_prefix('{')
        .and_then(|l| l.strip_suffix('}'))
        .expect("a JSON object");
    inner
        .split(',')
        .map(|field| {
            let (key, value) = field.split_once(':').expect("key:value");
            (key.trim_matches('"').to_owned(), value.to_owned())
        })
        .collect()
}

const REPLAYED: &[&str] = &["goog", "eurusd_1h"];

#[test]
fn real_series_replay_with_no_bar_rejected_and_match_talib_from_bar_zero() {
    let mut failures = Vec::new();
    for name in REPLAYED {
        let fx = load(name);
        let mut config = barkeep::config::Config::from_lookup(|_| None).expect("default config");
        config.indicators = fx.params.clone();
        let mut csv = String::from("ts,open,high,low,close,volume\n");
        for b in &fx.bars {
            csv.push_str(&format!(
                "{},{},{},{},{},{}\n",
                b.ts, b.open, b.high, b.low, b.close, b.volume
            ));
        }
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let stats =
            barkeep::replay::replay(&config, csv.as_bytes(), Some(name), &mut out, &mut err)
                .expect("replay");
        let err = String::from_utf8(err).expect("utf-8");
        failures.extend(err.lines().map(|l| format!("{name}: {l}")));
        let lines: Vec<HashMap<String, String>> = String::from_utf8(out)
            .expect("utf-8")
            .lines()
            .map(flat_json)
            .collect();
        assert_eq!(stats.printed, lines.len(), "{name}");
        if stats.rejected > 0 || lines.len() != fx.bars.len() {
            failures.push(format!(
                "{name}: {} of {} bars printed, {} rejected",
                lines.len(),
                fx.bars.len(),
                stats.rejected
            ));
            continue;
        }
        let names = fx.params.feature_names();
        let floor = FLOOR_FRACTION_OF_MEDIAN_CLOSE * median_abs_close(&fx.bars);
        let mut report = Report::new();
        for (i, (line, want)) in lines.iter().zip(&fx.want).enumerate() {
            assert_eq!(line["ts"], fx.bars[i].ts.to_string(), "{name} bar {i}");
            for k in 0..FEATURE_COUNT {
                let got = match line[&names[k]].as_str() {
                    "null" => f64::NAN,
                    text => text.parse().expect("a number"),
                };
                report.compare(name, i, k, &names[k], got, want[k], floor);
            }
        }
        failures.extend(report.failures(name, &names));
    }
    assert!(
        failures.is_empty(),
        "{} failures, first ones:\n{}",
        failures.len(),
        failures[..failures.len().min(40)].join("\n")
    );
}
