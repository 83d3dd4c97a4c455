/*!
Alpha Vantage: US equities, FX, metals and crypto; key as the `apikey` query parameter (the only
way it accepts one — errors and logs never show the URL). Every answer is HTTP 200, errors
included.

- Quotes, one request per symbol: equities via `GLOBAL_QUOTE` (`"05. price"`, volume
  `"06. volume"` cumulative for the session, dated only by `"07. latest trading day"`: stamped
  now during that New York day, at the 16:00 close otherwise); pairs (`EUR/USD`, `XAU/USD`,
  `BTC/USD`) via `CURRENCY_EXCHANGE_RATE` (`"5. Exchange Rate"` at `"6. Last Refreshed"` in
  `"7. Time Zone"`), without volume.
- History: `TIME_SERIES_INTRADAY` / `FX_INTRADAY` / `CRYPTO_INTRADAY` (1, 5, 15, 30 min; hour
  timeframes aggregated from 30 min) and `TIME_SERIES_DAILY` / `FX_DAILY` /
  `DIGITAL_CURRENCY_DAILY`; `compact` (100 rows) when that covers the range, else `full`. Rows
  are an object keyed by local time in the meta block's `Time Zone` (`US/Eastern` for
  equities, `UTC` for FX and crypto; any IANA zone is read with its own rules), in no particular order.
  Served timeframes (`serves_history`): whole minutes below a day, and 1d (1min is the
  shortest interval).
- Errors in the body: `Error Message` (unknown symbol / function, or a bad `apikey`),
  `Information` / `Note` (rate limit "… 25 requests per day …", "… 5 calls per minute …", or a
  premium-only endpoint), `{"Global Quote": {}}` for an unknown symbol.
- Free tier: 25 requests/day (and at most 5/minute).
*/

pub mod parse;

use std::sync::Arc;

use futures::future::BoxFuture;

use super::provider::{self, Auth, ProviderCore};
use super::registry::{Plan, Provider, ProviderEnv};
use super::settings::ProviderSettings;
use super::shape::{self, DayVolume};
use super::{Capabilities, RateLimit, Source, SourceError, http};
use crate::instrument::{Instrument, classify};
use crate::model::{Bar, Quote, SymbolId, SymbolTable, Timeframe};

const NAME: &str = "alphavantage";

pub const FREE_TIER: RateLimit = RateLimit {
    per_minute: Some(5),
    per_day: Some(25),
};

/// AlphaVantageSource's entry in the registry: its environment, budget, symbol spelling and builder.
pub const PROVIDER: Provider = Provider {
    name: NAME,
    env: Some(ProviderEnv {
        base_url: ("ALPHAVANTAGE_BASE_URL", "https://www.alphavantage.co"),
        ws_url: None,
        api_key: Some("ALPHAVANTAGE_API_KEY"),
        per_minute: "ALPHAVANTAGE_RATE_PER_MINUTE",
        per_day: "ALPHAVANTAGE_RATE_PER_DAY",
        switches: &[],
    }),
    free_tier: FREE_TIER,
    spell: Some(spell),
    build,
};

fn build(plan: &Plan<'_>, symbols: &SymbolTable) -> Result<Arc<dyn Source>, SourceError> {
    Ok(Arc::new(AlphaVantageSource::new(symbols, plan.providers)?))
}

/// `EUR/USD`, `BTC/USD`, `AAPL`; no indices.
fn spell(instrument: Instrument<'_>) -> Option<String> {
    match instrument {
        Instrument::Index(_) => None,
        Instrument::Fx { base, quote } | Instrument::Crypto { base, quote } => {
            Some(format!("{base}/{quote}"))
        }
        Instrument::Equity(ticker) => Some(ticker.to_string()),
    }
}

const DAY_MS: i64 = 86_400_000;
/// Rows in a `compact` answer.
const COMPACT_ROWS: i64 = 100;
/// Intervals on barkeep's grid, longest first.
const INTERVALS: &[(&str, i64)] = &[
    ("daily", DAY_MS),
    ("30min", 1_800_000),
    ("15min", 900_000),
    ("5min", 300_000),
    ("1min", 60_000),
];

pub struct AlphaVantageSource {
    core: ProviderCore,
    volume: DayVolume,
}

/// What Alpha Vantage calls a symbol: a ticker, or a pair split into its two currencies.
enum Asset<'a> {
    Equity(&'a str),
    Fx(&'a str, &'a str),
    Crypto(&'a str, &'a str),
}

fn asset(symbol: &str) -> Asset<'_> {
    match classify(symbol) {
        Instrument::Crypto { base, quote } => Asset::Crypto(base, quote),
        Instrument::Fx { base, quote } => Asset::Fx(base, quote),
        _ => match symbol.split_once('/') {
            Some((base, quote)) => Asset::Fx(base, quote),
            None => Asset::Equity(symbol),
        },
    }
}

impl AlphaVantageSource {
    /// # Errors
    /// A missing key (`ALPHAVANTAGE_API_KEY`), or an HTTP client or base URL that cannot be built.
    pub fn new(symbols: &SymbolTable, settings: &ProviderSettings) -> Result<Self, SourceError> {
        Ok(Self {
            core: ProviderCore::new(&PROVIDER, symbols, settings, Auth::Query("apikey"))?,
            volume: DayVolume::default(),
        })
    }

    async fn query(&self, params: &[(&str, &str)]) -> Result<http::Fetched, SourceError> {
        self.core.get(&["query"], params).await
    }

    async fn quote(&self, id: SymbolId) -> Result<Vec<Quote>, SourceError> {
        let symbol = self.core.symbol(id)?;
        let generic = self.core.book().generic(id);
        let now = http::wall_ms();
        let q = match asset(symbol) {
            Asset::Equity(ticker) => {
                let fetched = self
                    .query(&[("function", "GLOBAL_QUOTE"), ("symbol", ticker)])
                    .await?;
                parse::global_quote(&fetched, &generic, now)?
            }
            Asset::Fx(from, to) | Asset::Crypto(from, to) => {
                let fetched = self
                    .query(&[
                        ("function", "CURRENCY_EXCHANGE_RATE"),
                        ("from_currency", from),
                        ("to_currency", to),
                    ])
                    .await?;
                parse::exchange_rate(&fetched, &generic, now)?
            }
        };
        Ok(vec![self.volume.quote(id, q)])
    }

    async fn bars(
        &self,
        id: SymbolId,
        timeframe: Timeframe,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Bar>, SourceError> {
        let (interval, step) =
            shape::step_for(INTERVALS, timeframe).ok_or(SourceError::Unsupported {
                source_name: NAME,
                what: "serve this timeframe (minute multiples below a day, or 1d)",
            })?;
        let symbol = self.core.symbol(id)?;
        let generic = self.core.book().generic(id);
        let now = http::wall_ms();
        let rows_needed = (now - timeframe.bucket(from_ms)) / step + 1;
        let size = if rows_needed <= COMPACT_ROWS {
            "compact"
        } else {
            "full"
        };
        let daily = step == DAY_MS;
        let fetched = match (asset(symbol), daily) {
            (Asset::Equity(t), false) => {
                self.query(&[
                    ("function", "TIME_SERIES_INTRADAY"),
                    ("symbol", t),
                    ("interval", interval),
                    ("outputsize", size),
                ])
                .await?
            }
            (Asset::Equity(t), true) => {
                self.query(&[
                    ("function", "TIME_SERIES_DAILY"),
                    ("symbol", t),
                    ("outputsize", size),
                ])
                .await?
            }
            (Asset::Fx(from, to), false) => {
                self.query(&[
                    ("function", "FX_INTRADAY"),
                    ("from_symbol", from),
                    ("to_symbol", to),
                    ("interval", interval),
                    ("outputsize", size),
                ])
                .await?
            }
            (Asset::Fx(from, to), true) => {
                self.query(&[
                    ("function", "FX_DAILY"),
                    ("from_symbol", from),
                    ("to_symbol", to),
                    ("outputsize", size),
                ])
                .await?
            }
            (Asset::Crypto(coin, market), false) => {
                self.query(&[
                    ("function", "CRYPTO_INTRADAY"),
                    ("symbol", coin),
                    ("market", market),
                    ("interval", interval),
                    ("outputsize", size),
                ])
                .await?
            }
            (Asset::Crypto(coin, market), true) => {
                self.query(&[
                    ("function", "DIGITAL_CURRENCY_DAILY"),
                    ("symbol", coin),
                    ("market", market),
                ])
                .await?
            }
        };
        let rows = parse::series(&fetched, &generic, now)?;
        shape::closed_bars(rows, step, timeframe, from_ms, to_ms, now)
            .map_err(|reason| parse::malformed(&generic, reason))
    }
}

impl Source for AlphaVantageSource {
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

    /// Whole minutes below a day (from 1 … 30 min bars) and 1d.
    fn serves_history(&self, timeframe: Timeframe) -> bool {
        shape::step_for(INTERVALS, timeframe).is_some()
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
