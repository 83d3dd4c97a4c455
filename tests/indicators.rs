//! Behavioural tests of the indicator engine: forming-bar peeks never double-count, checkpoints
//! resume to the last bit, drift stays bounded over ten million 1-second bars, flat windows give
//! exactly zero spread, state stays small, and what invalid input does.
//!
//! Golden values against TA-Lib live in `tests/golden.rs`.

use barkeep::indicators::window::RollingMoments;
use barkeep::indicators::{
    Atr, Bollinger, CheckpointError, Ema, IndicatorParams, IndicatorSet, Macd, Obv, Rsi, Sma,
    Stochastic, Vwap, idx,
};
use barkeep::model::{Bar, FEATURE_COUNT, Features};
use proptest::prelude::*;

/// SplitMix64: a tiny deterministic generator, so tests need no RNG crate.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Roughly standard normal (Irwin–Hall with 4 terms, rescaled).
    fn normal(&mut self) -> f64 {
        let s = self.uniform() + self.uniform() + self.uniform() + self.uniform();
        (s - 2.0) * 3f64.sqrt()
    }
}

const SECOND_MS: i64 = 1_000;
const START_TS: i64 = 1_700_000_000_000;

/// A random-walk bar after `prev_close`, sometimes flat (all four prices equal), sometimes with
/// zero volume; `bar_ms` apart.
fn next_bar(rng: &mut Rng, prev_close: f64, ts: i64) -> Bar {
    let flat = rng.uniform() < 0.15;
    let close = if flat {
        prev_close
    } else {
        (prev_close * (1.0 + 0.01 * rng.normal()) * 100.0).round() / 100.0
    }
    .max(0.01);
    let open = prev_close;
    let (hi, lo) = if flat {
        (close, close)
    } else {
        (
            open.max(close) * (1.0 + 0.003 * rng.uniform()),
            open.min(close) * (1.0 - 0.003 * rng.uniform()),
        )
    };
    let volume = if rng.uniform() < 0.1 {
        0.0
    } else {
        (rng.uniform() * 1000.0 * 1e3).round() / 1e3
    };
    Bar {
        ts,
        open,
        high: hi,
        low: lo,
        close,
        volume,
    }
}

/// `n` bars one hour apart (so VWAP sessions roll over every 24 bars).
fn series(seed: u64, n: usize) -> Vec<Bar> {
    let mut rng = Rng(seed);
    let mut close = 100.0;
    (0..n)
        .map(|i| {
            let b = next_bar(&mut rng, close, START_TS + i as i64 * 3_600_000);
            close = b.close;
            b
        })
        .collect()
}

fn short_params() -> IndicatorParams {
    IndicatorParams {
        sma: 3,
        ema_fast: 2,
        ema_slow: 5,
        rsi: 3,
        bb_period: 4,
        bb_k: 1.5,
        atr: 3,
        macd_fast: 3,
        macd_slow: 6,
        macd_signal: 2,
        stoch_k: 4,
        stoch_slow_k: 2,
        stoch_d: 2,
        vwap_session_ms: 6 * 3_600_000,
        vwap_offset_ms: 3_600_000,
        vwap_daily: None,
    }
}

fn param_sets() -> [IndicatorParams; 2] {
    [IndicatorParams::default(), short_params()]
}

fn bits(f: &Features) -> [u64; FEATURE_COUNT] {
    f.values.map(f64::to_bits)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Amending the forming bar k times (each evaluated with `peek`) and then closing it gives
    /// bit-identical outputs and state to one `update` with the final values.
    #[test]
    fn amending_the_forming_bar_never_double_counts(
        seed in any::<u64>(),
        committed in 0usize..70,
        amendments in 1usize..12,
        which in 0usize..2,
    ) {
        let params = &param_sets()[which];
        let bars = series(seed, committed + 1);
        let mut amended = IndicatorSet::new(params);
        let mut direct = IndicatorSet::new(params);
        for b in &bars[..committed] {
            prop_assert_eq!(bits(&amended.update(b)), bits(&direct.update(b)));
        }
        let before = amended.checkpoint();
        let last = bars[committed];
        let mut rng = Rng(seed ^ 0xA5A5);
        let mut forming = Bar { high: last.open, low: last.open, close: last.open, volume: 0.0, ..last };
        for _ in 0..amendments {
            let price = (last.low + (last.high - last.low) * rng.uniform()).max(0.01);
            forming.high = forming.high.max(price);
            forming.low = forming.low.min(price);
            forming.close = price;
            forming.volume += rng.uniform() * 10.0;
            let _ = amended.peek(&forming);
            prop_assert_eq!(&amended.checkpoint(), &before, "peek changed the state");
        }
        // The tick that closes the bar carries the final values.
        let peeked = amended.peek(&last);
        let closed = amended.update(&last);
        let once = direct.update(&last);
        prop_assert_eq!(bits(&peeked), bits(&closed));
        prop_assert_eq!(bits(&closed), bits(&once));
        prop_assert_eq!(amended.checkpoint(), direct.checkpoint());
        prop_assert_eq!(bits(&amended.last()), bits(&once));
    }

    /// N bars, checkpoint, restore, M more bars == N + M bars uninterrupted, to the last bit.
    #[test]
    fn checkpoint_round_trip_resumes_exactly(
        seed in any::<u64>(),
        n in 0usize..120,
        m in 1usize..120,
        which in 0usize..2,
    ) {
        let params = &param_sets()[which];
        let bars = series(seed, n + m);
        let mut uninterrupted = IndicatorSet::new(params);
        let mut first = IndicatorSet::new(params);
        for b in &bars[..n] {
            uninterrupted.update(b);
            first.update(b);
        }
        let bytes = first.checkpoint();
        let mut resumed = IndicatorSet::restore(&bytes, params).expect("restore");
        prop_assert_eq!(resumed.bars_seen(), n as u64);
        prop_assert_eq!(resumed.last_ts(), first.last_ts());
        prop_assert_eq!(bits(&resumed.last()), bits(&first.last()));
        for b in &bars[n..] {
            prop_assert_eq!(bits(&resumed.update(b)), bits(&uninterrupted.update(b)));
        }
        prop_assert_eq!(resumed.checkpoint(), uninterrupted.checkpoint());
    }

    /// The spread is never negative or NaN, whatever mix of noise, flats and jumps.
    #[test]
    fn variance_is_never_negative_or_nan(
        seed in any::<u64>(),
        period in 2usize..30,
        scale_exp in -6i32..7,
    ) {
        let scale = 10f64.powi(scale_exp);
        let mut rng = Rng(seed);
        let mut m = RollingMoments::new(period);
        let mut x = scale;
        for _ in 0..400 {
            let r = rng.uniform();
            x = if r < 0.4 {
                x
            } else if r < 0.42 {
                x * 5.0
            } else if r < 0.44 {
                x / 5.0
            } else {
                x * (1.0 + 1e-4 * rng.normal())
            };
            if let Some(got) = m.update(x) {
                prop_assert!(got.variance >= 0.0, "negative variance {}", got.variance);
                prop_assert!(got.mean.is_finite());
            }
        }
    }
}

/// From-scratch window statistics: mean and population variance, two-pass.
fn window_stats(window: &[f64]) -> (f64, f64) {
    let n = window.len() as f64;
    let mean = window.iter().sum::<f64>() / n;
    let var = window.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    (mean, var)
}

/// Shewchuk's exact running sum (as Python's `math.fsum`): the reference for cumulative sums.
#[derive(Default)]
struct ExactSum {
    partials: Vec<f64>,
}

impl ExactSum {
    fn add(&mut self, mut x: f64) {
        let mut i = 0;
        for j in 0..self.partials.len() {
            let mut y = self.partials[j];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                self.partials[i] = lo;
                i += 1;
            }
            x = hi;
        }
        self.partials.truncate(i);
        self.partials.push(x);
    }

    /// The sum, rounded (nearly always correctly; the last partial dominates).
    fn value(&self) -> f64 {
        self.partials.iter().rev().fold(0.0, |acc, p| acc + p)
    }
}

/// Ten million 1-second bars of a 0.01 %-volatility random walk (with a few 20 % jumps) through
/// the running-sum indicators, compared at a sample of bars with an exact recomputation: the
/// SMA and Bollinger spread against a two-pass over the window, OBV against an exact integer
/// sum, VWAP against exact (Shewchuk) session sums. A naive running `E[x²] − mean²` is carried
/// alongside to show what the test would catch.
#[test]
fn drift_stays_bounded_over_ten_million_one_second_bars() {
    const BARS: usize = 10_000_000;
    const PERIOD: usize = 20;
    const SAMPLE_EVERY: usize = 99_991;
    /// Volumes are multiples of 2^-20, so their exact signed sum fits an i128.
    const VOLUME_UNIT: f64 = 1.0 / (1u64 << 20) as f64;
    let mut rng = Rng(42);
    let mut sma = Sma::new(PERIOD);
    let mut bb = Bollinger::new(PERIOD, 2.0);
    let mut moments = RollingMoments::new(PERIOD);
    let mut obv = Obv::new();
    let mut vwap = Vwap::new(86_400_000, 0, None);
    let mut window = [0.0f64; PERIOD];
    let (mut naive_sum, mut naive_sq) = (0.0f64, 0.0f64);
    let mut obv_exact: i128 = 0;
    let mut prev_close = f64::NAN;
    let mut session = i64::MIN;
    let (mut pv_exact, mut v_exact) = (ExactSum::default(), ExactSum::default());
    let (mut worst_mean, mut worst_band_sigma, mut worst_sigma) = (0.0f64, 0.0f64, 0.0f64);
    let mut worst_naive_sigma = 0.0f64;
    let (mut worst_obv, mut worst_vwap) = (0.0f64, 0.0f64);
    let mut close = 30_000.0;
    let start = 1_700_006_400_000 - 3_600_000; // one hour before a UTC midnight
    for i in 0..BARS {
        let open = close;
        close *= if i % 2_000_003 == 1_000_000 {
            1.2
        } else {
            1.0 + 1e-4 * rng.normal()
        };
        let high = open.max(close) * (1.0 + 2e-5 * rng.uniform());
        let low = open.min(close) * (1.0 - 2e-5 * rng.uniform());
        let units = (rng.next_u64() >> 34) as i64; // < 2^30
        let bar = Bar {
            ts: start + i as i64 * SECOND_MS,
            open,
            high,
            low,
            close,
            volume: units as f64 * VOLUME_UNIT,
        };

        let mean = sma.update(close);
        let bands = bb.update(close);
        let variance = moments.update(close).map(|m| m.variance);
        let obv_value = obv.update(&bar);
        let vwap_value = vwap.update(&bar);

        let old = window[i % PERIOD];
        window[i % PERIOD] = close;
        naive_sum += close;
        naive_sq += close * close;
        if i >= PERIOD {
            naive_sum -= old;
            naive_sq -= old * old;
        }
        if i > 0 {
            if close > prev_close {
                obv_exact += units as i128;
            } else if close < prev_close {
                obv_exact -= units as i128;
            }
        } else {
            obv_exact = units as i128;
        }
        prev_close = close;
        let s = vwap.session_of(bar.ts);
        if s != session {
            session = s;
            pv_exact = ExactSum::default();
            v_exact = ExactSum::default();
        }
        pv_exact.add((high + low + close) / 3.0 * bar.volume);
        v_exact.add(bar.volume);

        if i >= PERIOD && (i % SAMPLE_EVERY == 0 || i == BARS - 1) {
            let (want_mean, want_var) = window_stats(&window);
            let want_sigma = want_var.sqrt();
            let got_mean = mean.expect("sma ready");
            let b = bands.expect("bands ready");
            let got_sigma = (b.upper - b.middle) / 2.0;
            worst_mean = worst_mean.max((got_mean - want_mean).abs() / want_mean);
            worst_mean = worst_mean.max((b.middle - want_mean).abs() / want_mean);
            // Band half-widths carry the rounding of `middle ± width`: judge σ against the
            // price scale it is added to, and directly through the moments below.
            worst_band_sigma = worst_band_sigma.max((got_sigma - want_sigma).abs() / want_mean);
            let sigma = variance.expect("moments ready").sqrt();
            worst_sigma = worst_sigma.max((sigma - want_sigma).abs() / want_sigma);
            let n = PERIOD as f64;
            let naive_var = naive_sq / n - (naive_sum / n) * (naive_sum / n);
            worst_naive_sigma =
                worst_naive_sigma.max((naive_var.max(0.0).sqrt() - want_sigma).abs() / want_sigma);

            let want_obv = obv_exact as f64 * VOLUME_UNIT;
            let got_obv = obv_value.expect("obv ready");
            worst_obv = worst_obv.max((got_obv - want_obv).abs() / want_obv.abs().max(1.0));
            let want_vwap = pv_exact.value() / v_exact.value();
            let got_vwap = vwap_value.expect("vwap ready");
            worst_vwap = worst_vwap.max((got_vwap - want_vwap).abs() / want_vwap);
        }
    }
    println!(
        "worst relative errors over {BARS} bars: sma {worst_mean:e}, sigma {worst_sigma:e} \
         (band half-width vs price {worst_band_sigma:e}), obv {worst_obv:e}, vwap {worst_vwap:e}; \
         naive E[x²]−mean² sigma {worst_naive_sigma:e}"
    );
    assert!(worst_mean < 1e-14, "SMA drifted: {worst_mean:e}");
    assert!(worst_sigma < 1e-12, "sigma drifted: {worst_sigma:e}");
    assert!(
        worst_band_sigma < 1e-14,
        "Bollinger width drifted: {worst_band_sigma:e}"
    );
    assert!(worst_obv < 1e-15, "OBV drifted: {worst_obv:e}");
    assert!(worst_vwap < 1e-14, "VWAP drifted: {worst_vwap:e}");
    // The naive form this engine avoids is visibly wrong at this volatility.
    assert!(worst_naive_sigma > 1e-6, "naive sigma unexpectedly fine");
}

/// The moments themselves (σ relative to σ, not to the price) stay exact over a long
/// 1-second walk at 0.01 % volatility around 1e6, where `E[x²] − mean²` keeps ~3 digits.
#[test]
fn rolling_variance_keeps_full_precision_at_low_volatility() {
    const PERIOD: usize = 20;
    let mut rng = Rng(7);
    let mut m = RollingMoments::new(PERIOD);
    let mut window = [0.0f64; PERIOD];
    let mut x = 1e6;
    let mut worst = 0.0f64;
    for i in 0..400_000 {
        x *= 1.0 + 1e-4 * rng.normal();
        window[i % PERIOD] = x;
        let got = m.update(x);
        if i >= PERIOD && i % 97 == 0 {
            let (_, want) = window_stats(&window);
            let got = got.expect("ready").variance;
            worst = worst.max((got.sqrt() - want.sqrt()).abs() / want.sqrt());
        }
    }
    println!("worst relative sigma error: {worst:e}");
    assert!(worst < 1e-12, "sigma lost precision: {worst:e}");
}

#[test]
fn flat_windows_give_exactly_zero_spread() {
    for level in [1.234_567e-4_f64, 0.1, 1.0, 123.456_789, 98_765.432_1, 3.3e6] {
        let mut set = IndicatorSet::new(&IndicatorParams::default());
        let mut rng = Rng(level.to_bits());
        // A volatile history, so the running sums carry real rounding residue…
        for i in 0..300 {
            let close = level * (1.0 + 0.05 * rng.normal());
            set.update(&Bar::from_price(START_TS + i, close, 1.0));
        }
        // …then a flat stretch at a level that is not the window mean.
        let flat = level * 1.37;
        for i in 0..60 {
            let f = set.update(&Bar::from_price(START_TS + 300 + i, flat, 1.0));
            if i >= 19 {
                let bands = (
                    f.values[idx::BB_UPPER],
                    f.values[idx::BB_MIDDLE],
                    f.values[idx::BB_LOWER],
                );
                assert_eq!(bands, (flat, flat, flat), "level {level}, flat bar {i}");
            }
            for v in f.values {
                assert!(!v.is_nan(), "NaN on a flat window at level {level}");
            }
        }
        let mut m = RollingMoments::new(7);
        for x in [
            level,
            level * 9.0,
            level / 3.0,
            level,
            level,
            level,
            level,
            level,
            level,
        ] {
            m.update(x);
        }
        let got = m.update(level).expect("ready");
        assert_eq!(got.variance.to_bits(), 0f64.to_bits(), "level {level}");
        assert_eq!(got.mean, level);
    }
}

#[test]
fn state_stays_under_two_kib_with_defaults() {
    let params = IndicatorParams::default();
    let mut set = IndicatorSet::new(&params);
    let fresh = set.state_bytes();
    for b in series(3, 500) {
        set.update(&b);
    }
    let bytes = set.checkpoint();
    println!(
        "IndicatorSet: {} bytes in memory, checkpoint {} bytes",
        set.state_bytes(),
        bytes.len()
    );
    assert_eq!(set.state_bytes(), fresh, "windows must not grow");
    assert!(set.state_bytes() < 2048, "{} bytes", set.state_bytes());
    assert!(bytes.len() < 2048, "checkpoint {} bytes", bytes.len());
}

#[test]
fn restore_refuses_what_it_cannot_resume() {
    let params = IndicatorParams::default();
    let mut set = IndicatorSet::new(&params);
    for b in series(9, 100) {
        set.update(&b);
    }
    let bytes = set.checkpoint();

    assert!(matches!(
        IndicatorSet::restore(b"not msgpack at all", &params),
        Err(CheckpointError::Decode(_))
    ));
    assert!(matches!(
        IndicatorSet::restore(&bytes[..bytes.len() / 2], &params),
        Err(CheckpointError::Decode(_))
    ));
    let other = IndicatorParams {
        rsi: 21,
        ..params.clone()
    };
    assert!(matches!(
        IndicatorSet::restore(&bytes, &other),
        Err(CheckpointError::ParamsMismatch)
    ));

    // Re-encode through a generic value to forge a future version and a broken window.
    let mut value: serde_json::Value = rmp_serde::from_slice(&bytes).expect("generic decode");
    value[0] = serde_json::json!(2);
    let future = rmp_serde::to_vec(&value).expect("encode");
    assert!(matches!(
        IndicatorSet::restore(&future, &params),
        Err(CheckpointError::UnknownVersion {
            found: 2,
            expected: 1
        })
    ));
    let mut value: serde_json::Value = rmp_serde::from_slice(&bytes).expect("generic decode");
    // [version, set = [params, sma = [window = [buf, next, len, ..]], ..]]
    let buf = value[1][1][0][0].as_array_mut().expect("sma window buffer");
    buf.truncate(3);
    let broken = rmp_serde::to_vec(&value).expect("encode");
    assert!(matches!(
        IndicatorSet::restore(&broken, &params),
        Err(CheckpointError::Inconsistent)
    ));
    assert!(IndicatorSet::restore(&bytes, &params).is_ok());
}

#[test]
fn names_warmup_and_validation_follow_the_params() {
    let p = IndicatorParams::default();
    assert_eq!(
        p.feature_names(),
        [
            "sma_20",
            "ema_12",
            "ema_26",
            "rsi_14",
            "bb_upper",
            "bb_middle",
            "bb_lower",
            "atr_14",
            "macd",
            "macd_signal",
            "macd_hist",
            "stoch_k",
            "stoch_d",
            "obv",
            "vwap"
        ]
    );
    assert_eq!(p.warmup_bars(), 34);
    assert!(p.validate().is_ok());
    assert_eq!(short_params().feature_names()[0], "sma_3");

    let bad: [(IndicatorParams, &str); 7] = [
        (
            IndicatorParams {
                sma: 0,
                ..p.clone()
            },
            "sma",
        ),
        (
            IndicatorParams {
                rsi: 1,
                ..p.clone()
            },
            "rsi",
        ),
        (
            IndicatorParams {
                bb_period: 1,
                ..p.clone()
            },
            "bb_period",
        ),
        (
            IndicatorParams {
                macd_fast: 30,
                ..p.clone()
            },
            "macd_fast",
        ),
        (
            IndicatorParams {
                bb_k: f64::NAN,
                ..p.clone()
            },
            "bb_k",
        ),
        (
            IndicatorParams {
                bb_k: -1.0,
                ..p.clone()
            },
            "bb_k",
        ),
        (
            IndicatorParams {
                vwap_session_ms: 0,
                ..p.clone()
            },
            "vwap_session_ms",
        ),
    ];
    for (params, field) in bad {
        let err = params.validate().expect_err(field);
        assert!(err.starts_with(field), "{err}");
    }

    // Readiness, bar by bar, with the defaults: the set is ready exactly at warmup_bars.
    let mut set = IndicatorSet::new(&p);
    assert!(set.last().values.iter().all(|v| v.is_nan()));
    let mut first_ready = None;
    for (i, b) in series(5, 60).iter().enumerate() {
        let bar = Bar {
            volume: b.volume.max(1.0),
            ..*b
        };
        if set.update(&bar).is_ready() && first_ready.is_none() {
            first_ready = Some(i + 1);
        }
    }
    assert_eq!(first_ready, Some(p.warmup_bars()));
}

#[test]
fn macd_is_not_the_difference_of_two_emas_during_warmup() {
    let bars = series(11, 60);
    let mut macd = Macd::new(12, 26, 9);
    let (mut fast, mut slow) = (Ema::new(12), Ema::new(26));
    let mut diffs = 0;
    for b in &bars {
        let m = macd.update(b.close);
        let (f, s) = (fast.update(b.close), slow.update(b.close));
        if let (Some(m), Some(f), Some(s)) = (m, f, s)
            && m.macd != f - s
        {
            diffs += 1;
        }
    }
    assert!(macd.is_ready() && diffs > 0);
}

#[test]
fn every_indicator_peeks_without_mutating_and_resets_to_fresh() {
    let bars = series(21, 80);
    let mut sma = Sma::new(5);
    let mut ema = Ema::new(5);
    let mut rsi = Rsi::new(5);
    let mut bb = Bollinger::new(5, 2.0);
    let mut atr = Atr::new(5);
    let mut macd = Macd::new(3, 7, 3);
    let mut stoch = Stochastic::new(5, 3, 3);
    let mut obv = Obv::new();
    let mut vwap = Vwap::new(6 * 3_600_000, 0, None);
    let run = |sma: &mut Sma,
               ema: &mut Ema,
               rsi: &mut Rsi,
               bb: &mut Bollinger,
               atr: &mut Atr,
               macd: &mut Macd,
               stoch: &mut Stochastic,
               obv: &mut Obv,
               vwap: &mut Vwap| {
        let mut trace = Vec::new();
        for b in &bars {
            let c = b.close;
            assert_eq!(sma.peek(c), sma.update(c));
            assert_eq!(ema.peek(c), ema.update(c));
            assert_eq!(rsi.peek(c), rsi.update(c));
            assert_eq!(bb.peek(c), bb.update(c));
            assert_eq!(atr.peek(b), atr.update(b));
            assert_eq!(macd.peek(c), macd.update(c));
            assert_eq!(stoch.peek(b), stoch.update(b));
            assert_eq!(obv.peek(b), obv.update(b));
            assert_eq!(vwap.peek(b), vwap.update(b));
            trace.push(format!(
                "{:?}{:?}{:?}{:?}{:?}{:?}{:?}{:?}{:?}",
                sma.value(),
                ema.value(),
                rsi.value(),
                bb.value(),
                atr.value(),
                macd.value(),
                stoch.value(),
                obv.value(),
                vwap.value()
            ));
        }
        trace
    };
    let first = run(
        &mut sma, &mut ema, &mut rsi, &mut bb, &mut atr, &mut macd, &mut stoch, &mut obv, &mut vwap,
    );
    assert!(
        sma.is_ready()
            && ema.is_ready()
            && rsi.is_ready()
            && bb.is_ready()
            && atr.is_ready()
            && macd.is_ready()
            && stoch.is_ready()
            && obv.is_ready()
            && vwap.is_ready()
    );
    sma.reset();
    ema.reset();
    rsi.reset();
    bb.reset();
    atr.reset();
    macd.reset();
    stoch.reset();
    obv.reset();
    vwap.reset();
    assert!(!sma.is_ready() && !macd.is_ready() && !stoch.is_ready() && !obv.is_ready());
    let second = run(
        &mut sma, &mut ema, &mut rsi, &mut bb, &mut atr, &mut macd, &mut stoch, &mut obv, &mut vwap,
    );
    assert_eq!(first, second);
}

#[test]
fn vwap_resets_at_the_session_anchor() {
    let day = 86_400_000;
    let midnight = 1_700_006_400_000;
    let mut vwap = Vwap::new(day, 0, None);
    let bar = |ts, price, volume| Bar::from_price(ts, price, volume);
    assert_eq!(vwap.update(&bar(midnight - 2_000, 10.0, 1.0)), Some(10.0));
    assert_eq!(vwap.update(&bar(midnight - 1_000, 20.0, 3.0)), Some(17.5));
    // A forming bar of the next session sees a fresh session; the state is untouched.
    assert_eq!(vwap.peek(&bar(midnight, 40.0, 1.0)), Some(40.0));
    assert_eq!(vwap.value(), Some(17.5));
    assert_eq!(vwap.update(&bar(midnight, 40.0, 1.0)), Some(40.0));
    // No volume yet in a session: undefined, not a stale value.
    assert_eq!(vwap.update(&bar(midnight + day, 50.0, 0.0)), None);
    assert!(!vwap.is_ready());
    // An anchor two hours after midnight.
    let mut anchored = Vwap::new(day, 2 * 3_600_000, None);
    anchored.update(&bar(midnight + 3_600_000, 10.0, 1.0));
    assert_eq!(
        anchored.update(&bar(midnight + 7_200_000, 30.0, 1.0)),
        Some(30.0)
    );
}

#[test]
fn vwap_resets_at_a_market_session_open_across_dst() {
    use barkeep::indicators::{DailyAnchor, Zone};
    let utc = |s: &str| {
        s.parse::<chrono::DateTime<chrono::Utc>>()
            .expect("instant")
            .timestamp_millis()
    };
    let bar = |ts, price, volume| Bar::from_price(ts, price, volume);
    // US equities: the trading day starts 09:30 New York (14:30 UTC in winter, 13:30 in summer).
    let nyse = DailyAnchor {
        zone: Zone::NewYork,
        start_min: 9 * 60 + 30,
    };
    let mut vwap = Vwap::new(86_400_000, 0, Some(nyse));
    assert_eq!(
        vwap.update(&bar(utc("2026-03-06T20:59:00Z"), 10.0, 1.0)),
        Some(10.0)
    );
    // Friday after UTC midnight is still Friday's session in New York: no reset.
    assert_eq!(
        vwap.update(&bar(utc("2026-03-06T21:00:00Z"), 20.0, 1.0)),
        Some(15.0)
    );
    // Monday 09:30 EST, then the DST change: Tuesday's 09:30 is 13:30 UTC.
    assert_eq!(
        vwap.update(&bar(utc("2026-03-09T13:30:00Z"), 30.0, 1.0)),
        Some(30.0)
    );
    assert_eq!(
        vwap.update(&bar(utc("2026-03-10T13:29:00Z"), 50.0, 1.0)),
        Some(40.0)
    );
    assert_eq!(
        vwap.peek(&bar(utc("2026-03-10T13:30:00Z"), 70.0, 1.0)),
        Some(70.0)
    );
    // FX: the day rolls at 17:00 New York.
    let fx = DailyAnchor {
        zone: Zone::NewYork,
        start_min: 17 * 60,
    };
    let mut vwap = Vwap::new(86_400_000, 0, Some(fx));
    vwap.update(&bar(utc("2026-11-30T21:59:00Z"), 1.0, 1.0));
    assert_eq!(
        vwap.update(&bar(utc("2026-11-30T22:00:00Z"), 3.0, 1.0)),
        Some(3.0)
    );
    assert_eq!(
        vwap.update(&bar(utc("2026-12-01T21:59:00Z"), 5.0, 1.0)),
        Some(4.0)
    );
}

/// What invalid input does. The validator refuses all of this upstream; the engine does not
/// check (it would cost every bar) but must never panic, and NaN must not masquerade as a value.
#[test]
fn invalid_input_is_documented_not_checked() {
    let params = IndicatorParams::default();
    let mut set = IndicatorSet::new(&params);
    for b in series(2, 50) {
        set.update(&b);
    }
    let good = set.clone();
    // A NaN close poisons the outputs that use it (NaN reads as "missing"), nothing panics.
    let nan = Bar {
        close: f64::NAN,
        ..Bar::from_price(START_TS + 51 * 3_600_000, 100.0, 1.0)
    };
    let f = set.peek(&nan);
    assert!(f.get(idx::SMA).is_none() && f.get(idx::EMA_FAST).is_none());
    set.update(&nan);
    // high < low and infinities: garbage out, but no panic and no out-of-bounds.
    let inverted = Bar {
        ts: START_TS + 52 * 3_600_000,
        open: 10.0,
        high: 5.0,
        low: 20.0,
        close: 10.0,
        volume: -3.0,
    };
    let mut other = good.clone();
    other.update(&inverted);
    other.update(&Bar::from_price(
        START_TS + 53 * 3_600_000,
        f64::INFINITY,
        1.0,
    ));
    // Recovering from bad data is a restore or a re-warm, which the pipeline does.
    let restored = IndicatorSet::restore(&good.checkpoint(), &params).expect("restore");
    assert_eq!(bits(&restored.last()), bits(&good.last()));
}
