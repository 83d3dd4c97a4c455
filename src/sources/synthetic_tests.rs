use super::*;
use crate::bars::BarBuilder;
use proptest::prelude::*;

const T0: i64 = 1_700_000_040_000; // a minute boundary

fn source(rate: f64) -> SyntheticSource {
    SyntheticSource::new(
        &SymbolTable::new(["NAS100", "XAUUSD", "EURUSD", "ZZZ"]),
        SyntheticConfig {
            seed: 7,
            bad_tick_rate: rate,
            follow_calendars: false,
        },
        &[],
    )
}

fn run(src: &SyntheticSource, n: i64) -> Vec<Quote> {
    let mut out = Vec::new();
    for i in 0..n {
        let q = futures::executor::block_on(src.quotes(&[0, 1, 2, 3], T0 + i * 1_000));
        out.extend(q.expect("synthetic never fails for configured symbols"));
    }
    out
}

fn history(src: &SyntheticSource, symbol: SymbolId, tf: &str, from: i64, to: i64) -> Vec<Bar> {
    let tf: Timeframe = tf.parse().expect("valid");
    futures::executor::block_on(src.history(symbol, tf, from, to)).expect("history")
}

#[test]
fn same_seed_same_market() {
    let a = run(&source(0.01), 500);
    let b = run(&source(0.01), 500);
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
}

#[test]
fn levels_are_realistic() {
    let q = run(&source(0.0), 3_600);
    let last = |s: SymbolId| {
        q.iter()
            .rev()
            .find(|q| q.symbol == s)
            .map(|q| q.price)
            .unwrap_or_default()
    };
    assert!((16_000.0..20_000.0).contains(&last(0)), "{}", last(0));
    assert!((1_800.0..2_200.0).contains(&last(1)), "{}", last(1));
    assert!((1.0..1.16).contains(&last(2)), "{}", last(2));
    assert!(
        q.iter()
            .all(|q| q.price.is_finite() && q.price > 0.0 && q.volume >= 0.0)
    );
    // A year later the level is still the symbol's, not wherever a random walk went.
    let later = history(
        &source(0.0),
        0,
        "1d",
        T0 + 365 * 86_400_000,
        T0 + 375 * 86_400_000,
    );
    assert!(
        later
            .iter()
            .all(|b| (15_000.0..21_000.0).contains(&b.close)),
        "{later:?}"
    );
}

#[test]
fn one_second_moves_have_the_profile_volatility() {
    let bars = history(&source(0.0), 0, "1s", T0, T0 + 20_000_000);
    let returns: Vec<f64> = bars
        .windows(2)
        .map(|w| (w[1].close / w[0].close).ln())
        .collect();
    let var = returns.iter().map(|r| r * r).sum::<f64>() / returns.len() as f64;
    let annual = (var * SECONDS_PER_YEAR).sqrt();
    assert!((0.18..0.22).contains(&annual), "{annual}");
}

#[test]
fn bad_ticks_come_at_the_configured_rate() {
    let q = run(&source(0.05), 2_000);
    let bad = q
        .iter()
        .filter(|q| !q.price.is_finite() || q.price <= 0.0 || q.volume < 0.0 || q.ts % 1_000 != 0)
        .count();
    // NaN, negative price, negative volume and the half-second shift are caught by this
    // filter: 4/8 of the bad ticks, 8 000 quotes × 5 % × 1/2 = 200.
    assert!((140..270).contains(&bad), "{bad}");
}

#[test]
fn history_joins_live_quotes_exactly() {
    let src = source(0.0);
    let tf: Timeframe = "1m".parse().expect("valid");
    let bars = history(&src, 0, "1m", T0 - 100 * 60_000, T0);
    assert_eq!(bars.len(), 100);
    assert!(bars.windows(2).all(|w| w[1].ts == w[0].ts + 60_000));
    assert!(bars.iter().all(|b| b.ts % 60_000 == 0 && b.high >= b.low));
    // Ten minutes of live quotes, one per second, build the same bars as history.
    let live = source(0.0);
    let mut builder = BarBuilder::new(tf);
    let mut built = Vec::new();
    for s in 0..600 {
        let q =
            futures::executor::block_on(live.quotes(&[0], T0 + s * 1_000 + 250)).expect("quote")[0];
        if let Some(closed) = builder
            .add(&Bar::from_price(q.ts, q.price, q.volume), 1.0)
            .closed
        {
            built.push(closed.bar);
        }
    }
    assert_eq!(built.len(), 9);
    assert_eq!(built, history(&src, 0, "1m", T0, T0 + 9 * 60_000));
    // And the first live quote continues the history: one second's move, not a jump.
    let first = history(&src, 0, "1s", T0, T0 + 1_000)[0].close;
    assert!((first / bars[99].close - 1.0).abs() < 0.001);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn history_is_a_function_of_time(a in 0_i64..5_000, ab in 1_i64..3_000, bc in 1_i64..3_000, symbol in 0_u32..4) {
        let (a, b, c) = (T0 + a * 1_000, T0 + (a + ab) * 1_000, T0 + (a + ab + bc) * 1_000);
        let src = source(0.0);
        // Asked in another order, by another instance: the same bars.
        let whole = history(&src, symbol, "1s", a, c);
        let other = source(0.0);
        let late = history(&other, symbol, "1s", b, c);
        let early = history(&other, symbol, "1s", a, b);
        prop_assert_eq!(whole, [early, late].concat());
        let minutes = history(&src, symbol, "1m", a, c);
        let split = [history(&other, symbol, "1m", a, b), history(&other, symbol, "1m", b, c)].concat();
        // Windows cut inside a minute drop that minute's partial bar on both sides.
        prop_assert!(minutes.iter().all(|m| split.iter().all(|s| s.ts != m.ts || s == m)));
    }
}

#[test]
fn a_closed_market_repeats_its_last_trade_and_has_no_bars() {
    let src = SyntheticSource::new(
        &SymbolTable::new(["EURUSD"]),
        SyntheticConfig {
            seed: 7,
            bad_tick_rate: 0.0,
            follow_calendars: true,
        },
        &[MarketCalendar::Fx],
    );
    // Friday 2026-12-04 17:00 New York = 22:00 UTC; Saturday noon is closed.
    let close = "2026-12-04T22:00:00Z"
        .parse::<chrono::DateTime<chrono::Utc>>()
        .expect("instant")
        .timestamp_millis();
    let saturday = close + 14 * 3_600_000;
    let a = futures::executor::block_on(src.quotes(&[0], saturday)).expect("quote")[0];
    let b = futures::executor::block_on(src.quotes(&[0], saturday + 60_000)).expect("quote")[0];
    assert_eq!((a.ts, a.price, b.volume), (close - 1_000, b.price, 0.0));
    assert_eq!(a.ts, b.ts);
    let tf: Timeframe = "1h".parse().expect("valid");
    let bars = futures::executor::block_on(src.history(
        0,
        tf,
        close - 3 * 3_600_000,
        close + 48 * 3_600_000,
    ))
    .expect("history");
    assert_eq!(bars.last().map(|b| b.ts), Some(close - 3_600_000));
    assert_eq!(bars.last().map(|b| b.close), Some(a.price));
}
