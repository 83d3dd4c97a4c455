/*!
A deterministic simulated market: the default source, needing no network and no keys.

Each symbol follows a geometric random walk with a realistic level, volatility and volume (an
index near 18 000, gold near 2 000, EURUSD near 1.08 …), driven by a ChaCha8 generator seeded
from `SYNTHETIC_SEED` and the symbol's name, so the same seed and the same clock give the same
market. With `SYNTHETIC_BAD_TICK_RATE` > 0 it also emits broken quotes (NaN, negative prices,
spikes, stale, future and out-of-order timestamps, negative volume) so the validator is
exercised in a normal run; a broken quote never moves the underlying walk.
*/

use futures::future::BoxFuture;
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use super::{Capabilities, Source, SourceError};
use crate::config::SyntheticConfig;
use crate::model::{Bar, Quote, SymbolId, SymbolTable, Timeframe};

const SECONDS_PER_YEAR: f64 = 365.0 * 86_400.0;

/// The simulated market for all configured symbols.
pub struct SyntheticSource {
    markets: Vec<Mutex<Walk>>,
    bad_tick_rate: f64,
}

/// Price level, annualised volatility and mean volume per second of a well-known symbol.
fn profile(name: &str, hash: u64) -> (f64, f64, f64) {
    match name {
        "NAS100" | "NDX" | "US100" => (18_000.0, 0.20, 40.0),
        "SPX500" | "SPX" | "US500" => (5_200.0, 0.16, 60.0),
        "XAUUSD" | "GOLD" => (2_000.0, 0.15, 25.0),
        "EURUSD" => (1.08, 0.07, 1_000_000.0),
        "GBPUSD" => (1.27, 0.08, 800_000.0),
        "USDJPY" => (150.0, 0.09, 900_000.0),
        "BTCUSD" | "BTCUSDT" => (60_000.0, 0.60, 2.0),
        "ETHUSD" | "ETHUSDT" => (3_000.0, 0.70, 20.0),
        "AAPL" => (190.0, 0.28, 900.0),
        _ => {
            // Any other symbol: a stock-like level between 10 and 500.
            let level = 10.0 + (hash % 49_000) as f64 / 100.0;
            (level, 0.30, 500.0)
        }
    }
}

struct Walk {
    rng: ChaCha8Rng,
    price: f64,
    sigma_per_sqrt_s: f64,
    volume_per_s: f64,
    last_ts: Option<i64>,
}

impl Walk {
    fn new(name: &str, seed: u64) -> Self {
        // FNV-1a over the name: stable across runs and platforms, unlike `DefaultHasher`.
        let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let (price, vol, volume_per_s) = profile(name, hash);
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed ^ hash),
            price,
            sigma_per_sqrt_s: vol / SECONDS_PER_YEAR.sqrt(),
            volume_per_s,
            last_ts: None,
        }
    }

    /// Moves the price by a lognormal step for `dt_s` seconds.
    fn step(&mut self, dt_s: f64) -> f64 {
        let z: f64 = StandardNormal.sample(&mut self.rng);
        let s = self.sigma_per_sqrt_s * dt_s.sqrt();
        self.price *= (s * z - 0.5 * s * s).exp();
        self.price
    }

    fn volume(&mut self, dt_s: f64) -> f64 {
        let z: f64 = StandardNormal.sample(&mut self.rng);
        (self.volume_per_s * dt_s * (0.5 * z).exp())
            .round()
            .max(0.0)
    }

    fn quote(&mut self, symbol: SymbolId, now_ms: i64, bad_tick_rate: f64) -> Quote {
        let dt_s = self
            .last_ts
            .map_or(1.0, |t| ((now_ms - t) as f64 / 1_000.0).max(0.001));
        let price = self.step(dt_s);
        let volume = self.volume(dt_s);
        let good = Quote {
            symbol,
            ts: now_ms,
            price,
            volume,
        };
        let prev_ts = self.last_ts.unwrap_or(now_ms);
        self.last_ts = Some(now_ms);
        if bad_tick_rate > 0.0 && self.rng.random::<f64>() < bad_tick_rate {
            return self.corrupt(good, prev_ts);
        }
        good
    }

    /// One of the ways real feeds go wrong; the walk itself is left as it was.
    fn corrupt(&mut self, mut q: Quote, prev_ts: i64) -> Quote {
        match self.rng.random_range(0..7_u8) {
            0 => q.price = f64::NAN,
            1 => q.price = -q.price,
            2 => q.price *= if self.rng.random::<bool>() { 1.25 } else { 0.8 },
            3 => q.ts -= 3_600_000,          // stale: an hour old
            4 => q.ts += 3_600_000,          // from the future
            5 => q.ts = prev_ts - 1_500,     // older than the previous quote
            _ => q.volume = -q.volume - 1.0, // negative volume
        }
        q
    }
}

impl SyntheticSource {
    pub fn new(symbols: &SymbolTable, config: SyntheticConfig) -> Self {
        Self {
            markets: symbols
                .iter()
                .map(|(_, name)| Mutex::new(Walk::new(name, config.seed)))
                .collect(),
            bad_tick_rate: config.bad_tick_rate,
        }
    }

    fn walk(&self, symbol: SymbolId) -> Result<&Mutex<Walk>, SourceError> {
        self.markets
            .get(symbol as usize)
            .ok_or_else(|| SourceError::UnsupportedSymbol {
                source_name: "synthetic",
                symbol: symbol.to_string(),
            })
    }
}

impl Source for SyntheticSource {
    fn name(&self) -> &'static str {
        "synthetic"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            batched_quotes: true,
            max_batch: 1_000,
            history: true,
            stream: false,
        }
    }

    fn quotes<'a>(
        &'a self,
        symbols: &'a [SymbolId],
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<Quote>, SourceError>> {
        let result = symbols
            .iter()
            .map(|&s| Ok(self.walk(s)?.lock().quote(s, now_ms, self.bad_tick_rate)))
            .collect();
        Box::pin(async move { result })
    }

    /// Simulated bars for `[from_ms, to_ms)`, walked forward from the current state; the live
    /// quotes then continue from the last close, so history and live data join without a jump.
    fn history(
        &self,
        symbol: SymbolId,
        timeframe: Timeframe,
        from_ms: i64,
        to_ms: i64,
    ) -> BoxFuture<'_, Result<Vec<Bar>, SourceError>> {
        let result = self.walk(symbol).map(|walk| {
            let mut walk = walk.lock();
            let tf = timeframe.ms();
            let substeps = (tf / 1_000).clamp(1, 30);
            let dt_s = tf as f64 / 1_000.0 / substeps as f64;
            let mut bars = Vec::with_capacity(((to_ms - from_ms) / tf).max(0) as usize);
            let mut ts = timeframe.bucket(from_ms);
            if ts < from_ms {
                ts += tf;
            }
            while ts + tf <= to_ms {
                let open = walk.price;
                let (mut high, mut low, mut volume) = (open, open, 0.0);
                for _ in 0..substeps {
                    let p = walk.step(dt_s);
                    high = high.max(p);
                    low = low.min(p);
                    volume += walk.volume(dt_s);
                }
                bars.push(Bar {
                    ts,
                    open,
                    high,
                    low,
                    close: walk.price,
                    volume,
                });
                ts += tf;
            }
            walk.last_ts = Some(to_ms);
            bars
        });
        Box::pin(async move { result })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(rate: f64) -> SyntheticSource {
        SyntheticSource::new(
            &SymbolTable::new(["NAS100", "XAUUSD", "EURUSD", "ZZZ"]),
            SyntheticConfig {
                seed: 7,
                bad_tick_rate: rate,
            },
        )
    }

    fn run(src: &SyntheticSource, n: i64) -> Vec<Quote> {
        let mut out = Vec::new();
        for i in 0..n {
            let q = futures::executor::block_on(
                src.quotes(&[0, 1, 2, 3], 1_700_000_000_000 + i * 1_000),
            );
            out.extend(q.expect("synthetic never fails for configured symbols"));
        }
        out
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
    }

    #[test]
    fn bad_ticks_come_at_the_configured_rate() {
        let q = run(&source(0.05), 2_000);
        let bad = q
            .iter()
            .filter(|q| {
                !q.price.is_finite() || q.price <= 0.0 || q.volume < 0.0 || q.ts % 1_000 != 0
            })
            .count();
        // Spikes and whole-second timestamp shifts are not caught by this filter, so it counts
        // about 4/7 of the bad ticks: 8 000 quotes × 5 % × 4/7 ≈ 229.
        assert!((150..320).contains(&bad), "{bad}");
    }

    #[test]
    fn history_is_aligned_and_joins_live_quotes() {
        let src = source(0.0);
        let tf: Timeframe = "1m".parse().expect("valid");
        let to = 1_700_000_040_000;
        let bars = futures::executor::block_on(src.history(0, tf, to - 100 * 60_000, to))
            .expect("history");
        assert_eq!(bars.len(), 100);
        assert!(
            bars.windows(2)
                .all(|w| w[1].ts == w[0].ts + 60_000 && w[1].open == w[0].close)
        );
        assert!(
            bars.iter()
                .all(|b| b.ts % 60_000 == 0 && b.high >= b.low && b.ts + 60_000 <= to)
        );
        let q = futures::executor::block_on(src.quotes(&[0], to + 1_000)).expect("quote");
        let last = bars.last().expect("bars").close;
        assert!((q[0].price / last - 1.0).abs() < 0.01);
    }
}
