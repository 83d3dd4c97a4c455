/*!
A deterministic simulated market: the default source, needing no network and no keys.

Each symbol's price is a function of time alone: the seed, the symbol's name and the second
give the price, whatever was asked before. So history for any window, in any order, and the
live quotes agree — across restarts and whichever windows a bootstrap fills first — and a bar
built from live quotes equals the history bar of the same interval.

The price is a geometric Brownian motion at one-second resolution with a realistic level,
volatility and volume per symbol (an index near 18 000, gold near 2 000, EURUSD near 1.08 …).
It is built as a Brownian bridge: anchor points every [`ANCHOR_S`] seconds take independent
values around the symbol's level (so the market never wanders off), and each dyadic midpoint
between two known points is their mean plus a normal step of the right variance. Every random
number comes from a counter-based hash of (seed, symbol, position), so any second is reached
in [`LEVELS`] steps and a run of seconds in about one step each.

With `SYNTHETIC_BAD_TICK_RATE` > 0 some quotes are broken (NaN, negative prices, spikes, stale,
future and out-of-order timestamps, negative volume) so the validator is exercised in a normal
run; the underlying price is untouched. With `SYNTHETIC_SESSIONS=calendar` the market keeps each
symbol's calendar: no bars while closed, and quotes then repeat the session's last trade, as
real providers do.
*/

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use futures::future::BoxFuture;
use parking_lot::Mutex;

use super::registry::{Plan, Provider};
use super::{Capabilities, RateLimit, Source, SourceError};
use crate::calendar::{MarketCalendar, SessionCache};
use crate::env::{Env, EnvError};
use crate::model::{Bar, Quote, SymbolId, SymbolTable, Timeframe};

/// The simulated market's entry in the registry: no endpoint, no budget, symbols as they are.
pub const PROVIDER: Provider = Provider {
    name: "synthetic",
    env: None,
    free_tier: RateLimit::UNLIMITED,
    spell: None,
    build,
};

fn build(plan: &Plan<'_>, symbols: &SymbolTable) -> Result<Arc<dyn Source>, SourceError> {
    Ok(Arc::new(SyntheticSource::new(
        symbols,
        plan.synthetic.clone(),
        plan.calendars,
    )))
}

/// The simulated market's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticConfig {
    pub seed: u64,
    /// Probability that a quote is deliberately broken (NaN, negative, spike, stale …).
    pub bad_tick_rate: f64,
    /// `SYNTHETIC_SESSIONS=calendar`: the simulated market keeps each symbol's calendar and,
    /// while closed, answers the session's last trade as real providers do.
    pub follow_calendars: bool,
}

impl SyntheticConfig {
    /// `SYNTHETIC_SEED` (42), `SYNTHETIC_BAD_TICK_RATE` (0.001), `SYNTHETIC_SESSIONS`
    /// (`always` or `calendar`).
    ///
    /// # Errors
    /// The first invalid variable.
    pub fn from_env(env: &Env<'_>) -> Result<Self, EnvError> {
        Ok(Self {
            seed: env.int("SYNTHETIC_SEED", 42_u64, 0, u64::MAX)?,
            bad_tick_rate: env.float("SYNTHETIC_BAD_TICK_RATE", 0.001, 0.0, 1.0)?,
            follow_calendars: env.parse("SYNTHETIC_SESSIONS", "always", |s| {
                match s.to_ascii_lowercase().as_str() {
                    "always" => Ok(false),
                    "calendar" => Ok(true),
                    _ => Err(
                        "expected `always` (the simulated market never closes) or `calendar`"
                            .into(),
                    ),
                }
            })?,
        })
    }
}

const SECONDS_PER_YEAR: f64 = 365.0 * 86_400.0;
/// Dyadic levels between two anchors: anchors are 2^22 s (about 48.5 days) apart.
const LEVELS: u32 = 22;
const ANCHOR_S: i64 = 1 << LEVELS;

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

/// One symbol's simulated market: price and volume as functions of the second.
struct Market {
    key: u64,
    level: f64,
    /// Log-price standard deviation per √second.
    sigma: f64,
    volume_per_s: f64,
    calendar: Option<MarketCalendar>,
    /// The calendar's current session, for quotes (asked every tick).
    session: Mutex<Option<SessionCache>>,
    /// The second of the last quote answered, so a quote's volume covers the seconds since.
    last_quote_s: AtomicI64,
}

/// SplitMix64: a counter-based generator, so the n-th random number needs no state.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Streams of random numbers per purpose.
#[derive(Clone, Copy)]
enum Stream {
    Anchor = 1,
    Bridge = 2,
    Volume = 3,
    BadTick = 4,
}

impl Market {
    fn new(name: &str, seed: u64, calendar: Option<MarketCalendar>) -> Self {
        // FNV-1a over the name: stable across runs and platforms, unlike `DefaultHasher`.
        let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let (level, vol, volume_per_s) = profile(name, hash);
        Self {
            key: mix(seed ^ hash),
            level,
            sigma: vol / SECONDS_PER_YEAR.sqrt(),
            volume_per_s,
            calendar,
            session: Mutex::new(calendar.map(SessionCache::new)),
            last_quote_s: AtomicI64::new(i64::MIN),
        }
    }

    fn uniform(&self, stream: Stream, n: i64) -> f64 {
        let h = mix(self.key ^ mix((n as u64).wrapping_mul(8).wrapping_add(stream as u64)));
        ((h >> 11) as f64 + 0.5) / (1_u64 << 53) as f64
    }

    /// A standard normal number (Box–Muller over two uniforms).
    fn normal(&self, stream: Stream, n: i64) -> f64 {
        let u1 = self.uniform(stream, n.wrapping_mul(2));
        let u2 = self.uniform(stream, n.wrapping_mul(2).wrapping_add(1));
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Log-price offset at an anchor second (a multiple of [`ANCHOR_S`]).
    fn anchor(&self, at_s: i64) -> f64 {
        // Anchors vary about the level by half of the walk's spread over one anchor period.
        0.5 * self.sigma * (ANCHOR_S as f64).sqrt() * self.normal(Stream::Anchor, at_s)
    }

    /// Calls `visit(second, log-price offset)` for every second in `[from_s, to_s)`, in order.
    fn walk(&self, from_s: i64, to_s: i64, visit: &mut impl FnMut(i64, f64)) {
        let mut a = from_s.div_euclid(ANCHOR_S) * ANCHOR_S;
        while a < to_s {
            let b = a + ANCHOR_S;
            self.bridge(a, self.anchor(a), b, self.anchor(b), from_s, to_s, visit);
            a = b;
        }
    }

    /// The bridge between known points `a` and `b`, visiting the seconds of `[lo, hi)` in it.
    #[allow(
        clippy::too_many_arguments,
        reason = "one recursive step of the bridge"
    )]
    fn bridge(
        &self,
        a: i64,
        xa: f64,
        b: i64,
        xb: f64,
        lo: i64,
        hi: i64,
        visit: &mut impl FnMut(i64, f64),
    ) {
        if b - a == 1 {
            if lo <= a && a < hi {
                visit(a, xa);
            }
            return;
        }
        let m = a + (b - a) / 2;
        let sd = self.sigma * ((b - a) as f64 / 4.0).sqrt();
        let xm = 0.5 * (xa + xb) + sd * self.normal(Stream::Bridge, m);
        if lo < m {
            self.bridge(a, xa, m, xm, lo, hi, visit);
        }
        if hi > m {
            self.bridge(m, xm, b, xb, lo, hi, visit);
        }
    }

    fn price(&self, x: f64) -> f64 {
        self.level * x.exp()
    }

    /// Volume traded in one second.
    fn volume(&self, second: i64) -> f64 {
        let z = self.normal(Stream::Volume, second);
        (self.volume_per_s * (0.5 * z - 0.125).exp()).round()
    }

    fn price_at(&self, second: i64) -> f64 {
        let mut x = 0.0;
        self.walk(second, second + 1, &mut |_, v| x = v);
        self.price(x)
    }

    /// The quote of second `now_s`: its price, and the volume since the last quote.
    fn quote(&self, symbol: SymbolId, now_s: i64, bad_tick_rate: f64) -> Quote {
        // Only a market that keeps a calendar takes the lock.
        let session = self
            .calendar
            .and_then(|_| self.session.lock().as_mut().map(|s| s.at(now_s * 1_000)));
        if let Some(session) = session
            && !session.open
        {
            // Closed: the session's last trade, again and again, with no new volume.
            let last_s = (session.since_ms.div_euclid(1_000) - 1).min(now_s);
            return Quote {
                symbol,
                ts: last_s * 1_000,
                price: self.price_at(last_s),
                volume: 0.0,
            };
        }
        let previous = self.last_quote_s.swap(now_s, Ordering::Relaxed);
        let first = if previous == i64::MIN || previous >= now_s {
            now_s
        } else {
            (previous + 1).max(now_s - 3_600)
        };
        let volume = (first..=now_s).map(|s| self.volume(s)).sum();
        let good = Quote {
            symbol,
            ts: now_s * 1_000,
            price: self.price_at(now_s),
            volume,
        };
        if bad_tick_rate > 0.0 && self.uniform(Stream::BadTick, now_s) < bad_tick_rate {
            return self.corrupt(good, now_s);
        }
        good
    }

    /// One of the ways real feeds go wrong; the price itself is left as it was.
    fn corrupt(&self, mut q: Quote, now_s: i64) -> Quote {
        let pick = self.uniform(Stream::BadTick, now_s.wrapping_add(1 << 40));
        match (pick * 8.0) as u8 {
            0 => q.price = f64::NAN,
            1 => q.price = -q.price,
            2 => q.price *= 1.25,
            3 => q.price *= 0.8,
            4 => q.ts -= 3_600_000,          // stale: an hour old
            5 => q.ts += 3_600_000,          // from the future
            6 => q.ts -= 2_500,              // older than the previous quote
            _ => q.volume = -q.volume - 1.0, // negative volume
        }
        q
    }

    /// Closed bars of `timeframe` opening in `[from_ms, to_ms)` whose whole interval has
    /// passed by `to_ms`; only seconds in session count when the market keeps a calendar.
    fn history(&self, timeframe: Timeframe, from_ms: i64, to_ms: i64) -> Vec<Bar> {
        let tf = timeframe.ms();
        let mut start = timeframe.bucket(from_ms);
        if start < from_ms {
            start += tf;
        }
        let end = timeframe.bucket(to_ms);
        if end <= start {
            return Vec::new();
        }
        let mut bars: Vec<Bar> = Vec::with_capacity(((end - start) / tf) as usize);
        let mut sessions = self.calendar.map(SessionCache::new);
        let (from_s, to_s) = (start.div_euclid(1_000), end.div_euclid(1_000));
        self.walk(from_s, to_s, &mut |second, x| {
            let ms = second * 1_000;
            if let Some(sessions) = &mut sessions
                && !sessions.at(ms).open
            {
                return;
            }
            let price = self.price(x);
            let volume = self.volume(second);
            let ts = timeframe.bucket(ms);
            match bars.last_mut() {
                Some(bar) if bar.ts == ts => {
                    bar.high = bar.high.max(price);
                    bar.low = bar.low.min(price);
                    bar.close = price;
                    bar.volume += volume;
                }
                _ => bars.push(Bar {
                    ts,
                    open: price,
                    high: price,
                    low: price,
                    close: price,
                    volume,
                }),
            }
        });
        bars
    }
}

/// The simulated market for every symbol of the table, those added at run time included (their
/// market is made the first time they are asked for, and never closes).
pub struct SyntheticSource {
    symbols: SymbolTable,
    /// Indexed by symbol id; never moves. `grow` is held while markets are added.
    markets: boxcar::Vec<Market>,
    grow: Mutex<()>,
    seed: u64,
    bad_tick_rate: f64,
}

impl SyntheticSource {
    /// `calendars` (one per symbol) are kept only with `follow_calendars`.
    pub fn new(
        symbols: &SymbolTable,
        config: SyntheticConfig,
        calendars: &[MarketCalendar],
    ) -> Self {
        let follow = |id: SymbolId| {
            calendars
                .get(id as usize)
                .copied()
                .filter(|_| config.follow_calendars)
        };
        Self {
            symbols: symbols.clone(),
            markets: (symbols.iter())
                .map(|(id, name)| Market::new(name, config.seed, follow(id)))
                .collect(),
            grow: Mutex::new(()),
            seed: config.seed,
            bad_tick_rate: config.bad_tick_rate,
        }
    }

    fn market(&self, symbol: SymbolId) -> Result<&Market, SourceError> {
        let i = symbol as usize;
        if i >= self.markets.count() && i < self.symbols.len() {
            let _adding = self.grow.lock();
            while self.markets.count() <= i {
                let name = self.symbols.name(self.markets.count() as SymbolId);
                self.markets.push(Market::new(name, self.seed, None));
            }
        }
        self.markets
            .get(i)
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

    /// The trade of the current second (stamped with it) for each symbol.
    fn quotes<'a>(
        &'a self,
        symbols: &'a [SymbolId],
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<Quote>, SourceError>> {
        let now_s = now_ms.div_euclid(1_000);
        let result = symbols
            .iter()
            .map(|&s| Ok(self.market(s)?.quote(s, now_s, self.bad_tick_rate)))
            .collect();
        Box::pin(async move { result })
    }

    /// Bars of the same function of time the quotes come from, so history and live data join
    /// without a jump.
    fn history(
        &self,
        symbol: SymbolId,
        timeframe: Timeframe,
        from_ms: i64,
        to_ms: i64,
    ) -> BoxFuture<'_, Result<Vec<Bar>, SourceError>> {
        let result = self
            .market(symbol)
            .map(|m| m.history(timeframe, from_ms, to_ms));
        Box::pin(async move { result })
    }
}

#[cfg(test)]
#[path = "synthetic_tests.rs"]
mod tests;
