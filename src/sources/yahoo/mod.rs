/*!
Yahoo Finance chart API (`/v8/finance/chart/{symbol}`): no key, every asset class (equities,
indices `^NDX`, FX `EURUSD=X`, futures `GC=F`, crypto `BTC-USD`).

- Quotes: one chart call per symbol (`interval=1d&range=1d`); the price is
  `meta.regularMarketPrice` at `meta.regularMarketTime` (Unix s); volume is the difference of
  `meta.regularMarketVolume` (the session's cumulative volume) between calls.
- History: `period1`/`period2` windows (1m data: 7 days per request and only the last ~30 days;
  2m–30m: 60 days; 1d: any). Timestamps are bar starts in Unix s UTC; the arrays are parallel
  and may hold `null`s (skipped), come unsorted, or end with a live row (dropped). Timeframes
  above 30m and below 1d are aggregated from 30m (or finer) bars, because Yahoo's 60m bars for
  US equities start at :30 and would not sit on barkeep's UTC-aligned grid. Daily bars are
  moved to UTC midnight of their exchange-local date (`meta.gmtoffset`). Served timeframes
  (`serves_history`): whole minutes below a day, and 1d — Yahoo has no second bars, so 1s (or
  any timeframe not a whole minute) is declined before any request or budget is spent.
- Errors: unknown symbol = HTTP 404 with `chart.error.code = "Not Found"`; rate limit = HTTP 429,
  often with a plain-text body; outages answer HTML.
- No documented limit: a conservative 60 requests/minute by default.
*/

pub mod parse;

use std::sync::Arc;

use futures::future::BoxFuture;

use super::provider::{self, Auth, ProviderCore};
use super::registry::{Plan, Provider, ProviderEnv};
use super::settings::ProviderSettings;
use super::shape::{self, DayVolume};
use super::symbols::index_symbol;
use super::{Capabilities, RateLimit, Source, SourceError, http};
use crate::instrument::{Instrument, METALS};
use crate::model::{Bar, Quote, SymbolId, SymbolTable, Timeframe};

const NAME: &str = "yahoo";

/// No documented limit; one request a second on average keeps well clear of the 429s users
/// report at higher rates.
pub const FREE_TIER: RateLimit = RateLimit {
    per_minute: Some(60),
    per_day: None,
};

/// YahooSource's entry in the registry: its environment, budget, symbol spelling and builder.
pub const PROVIDER: Provider = Provider {
    name: NAME,
    env: Some(ProviderEnv {
        base_url: ("YAHOO_BASE_URL", "https://query1.finance.yahoo.com"),
        ws_url: None,
        api_key: None,
        per_minute: "YAHOO_RATE_PER_MINUTE",
        per_day: "YAHOO_RATE_PER_DAY",
        switches: &[],
    }),
    free_tier: FREE_TIER,
    spell: Some(spell),
    build,
};

fn build(plan: &Plan<'_>, symbols: &SymbolTable) -> Result<Arc<dyn Source>, SourceError> {
    Ok(Arc::new(YahooSource::new(symbols, plan.providers)?))
}

/// Yahoo's index symbols, by index code.
const INDICES: &[(&str, &str)] = &[
    ("NDX", "^NDX"),
    ("SPX", "^GSPC"),
    ("DJI", "^DJI"),
    ("VIX", "^VIX"),
    ("DAX", "^GDAXI"),
    ("FTSE", "^FTSE"),
    ("N225", "^N225"),
];

/// `^NDX`, `EURUSD=X`, `BTC-USD`, `AAPL`; spot metals as their front-month futures (`GC=F`:
/// Yahoo has no spot metals), other metal pairs not at all.
fn spell(instrument: Instrument<'_>) -> Option<String> {
    match instrument {
        Instrument::Index(_) => index_symbol(INDICES, instrument),
        Instrument::Fx { base, quote } => match (base, quote) {
            ("XAU", "USD") => Some("GC=F".into()),
            ("XAG", "USD") => Some("SI=F".into()),
            ("XPT", "USD") => Some("PL=F".into()),
            ("XPD", "USD") => Some("PA=F".into()),
            _ if METALS.contains(&base) => None,
            _ => Some(format!("{base}{quote}=X")),
        },
        Instrument::Crypto { base, quote } => Some(format!("{base}-{quote}")),
        Instrument::Equity(ticker) => Some(ticker.to_string()),
    }
}

const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;

pub struct YahooSource {
    core: ProviderCore,
    volume: DayVolume,
}

impl YahooSource {
    /// # Errors
    /// When the HTTP client cannot be built or the base URL does not parse.
    pub fn new(symbols: &SymbolTable, settings: &ProviderSettings) -> Result<Self, SourceError> {
        Ok(Self {
            core: ProviderCore::new(&PROVIDER, symbols, settings, Auth::Keyless)?,
            volume: DayVolume::default(),
        })
    }

    async fn chart(
        &self,
        symbol: &str,
        query: &[(&str, &str)],
    ) -> Result<http::Fetched, SourceError> {
        self.core
            .get(&["v8", "finance", "chart", symbol], query)
            .await
    }

    async fn quote(&self, id: SymbolId) -> Result<Vec<Quote>, SourceError> {
        let symbol = self.core.symbol(id)?;
        let fetched = self
            .chart(symbol, &[("interval", "1d"), ("range", "1d")])
            .await?;
        let q = parse::quote(&fetched, &self.core.book().generic(id))?;
        Ok(vec![self.volume.quote(id, q)])
    }

    async fn bars(
        &self,
        id: SymbolId,
        timeframe: Timeframe,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Bar>, SourceError> {
        let (interval, step_ms, window_ms) =
            interval_for(timeframe).ok_or(SourceError::Unsupported {
                source_name: NAME,
                what: "serve this timeframe (1m…1d multiples of a minute, or 1d)",
            })?;
        let symbol = self.core.symbol(id)?;
        let generic = &self.core.book().generic(id);
        let now = http::wall_ms();
        let end = to_ms.min(now);
        // Whole buckets, so aggregated bars are complete; as many windows as the range needs.
        let rows = provider::paged(
            timeframe.bucket(from_ms),
            end,
            usize::MAX,
            |start| async move {
                let window_end = start.saturating_add(window_ms).min(end);
                let fetched = self
                    .chart(
                        symbol,
                        &[
                            ("interval", interval),
                            ("period1", &(start / 1_000).to_string()),
                            (
                                "period2",
                                &(window_end.saturating_add(999) / 1_000).to_string(),
                            ),
                            ("includePrePost", "false"),
                        ],
                    )
                    .await?;
                Ok((parse::rows(&fetched, generic, step_ms)?, Some(window_end)))
            },
        )
        .await?;
        // Shaped once over all windows, so a bucket split between two windows is whole.
        shape::closed_bars(rows, step_ms, timeframe, from_ms, to_ms, now)
            .map_err(|reason| parse::malformed(generic, reason))
    }
}

/// Yahoo interval, its length, and the span one request may cover, for a timeframe.
fn interval_for(timeframe: Timeframe) -> Option<(&'static str, i64, i64)> {
    let tf = timeframe.ms();
    if tf == DAY_MS {
        return Some(("1d", DAY_MS, 3_650 * DAY_MS));
    }
    if tf >= DAY_MS || tf % MINUTE_MS != 0 {
        return None;
    }
    let (interval, step) = [("30m", 30), ("15m", 15), ("5m", 5), ("2m", 2), ("1m", 1)]
        .into_iter()
        .map(|(name, minutes)| (name, minutes * MINUTE_MS))
        .find(|(_, step)| tf % step == 0)?;
    let window = if step == MINUTE_MS {
        7 * DAY_MS
    } else {
        59 * DAY_MS
    };
    Some((interval, step, window))
}

impl Source for YahooSource {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            batched_quotes: false,
            max_batch: 1,
            history: true,
            stream: false,
        }
    }

    fn rate_limit(&self) -> RateLimit {
        self.core.rate()
    }

    fn clock_skew_ms(&self) -> Option<i64> {
        self.core.clock_skew_ms()
    }

    fn supports(&self, symbol: SymbolId) -> bool {
        self.core.book().supports(symbol)
    }

    /// Whole minutes below a day (from 1m … 30m bars) and 1d: what [`interval_for`] finds.
    fn serves_history(&self, timeframe: Timeframe) -> bool {
        interval_for(timeframe).is_some()
    }

    fn quotes<'a>(
        &'a self,
        symbols: &'a [SymbolId],
        _now_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<Quote>, SourceError>> {
        Box::pin(provider::fan_out(symbols, move |id| self.quote(id)))
    }

    fn history(
        &self,
        symbol: SymbolId,
        timeframe: Timeframe,
        from_ms: i64,
        to_ms: i64,
    ) -> BoxFuture<'_, Result<Vec<Bar>, SourceError>> {
        Box::pin(self.bars(symbol, timeframe, from_ms, to_ms))
    }
}
