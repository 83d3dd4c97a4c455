/*!
Twelve Data: equities, indices, FX (`EUR/USD`), metals (`XAU/USD`) and crypto (`BTC/USD`); key in
the `Authorization: apikey …` header.

- Quotes: one batched `/quote?symbol=A,B,…` call; one symbol answers a flat object, several an
  object keyed by symbol where each entry may be an error of its own (absent from the answer,
  so the collector falls back for it). Price `close` (a string), time `last_quote_at` (Unix s,
  else `timestamp`), `volume` the session's cumulative volume (differenced between calls).
  Every symbol costs one credit, so a request carries at most as many symbols as the minute's
  credits (8 on the free tier, `TWELVEDATA_RATE_PER_MINUTE` otherwise) and never more than 120
  (the batch size Twelve Data documents); symbols beyond that are left to the next source.
- History: `/time_series?interval=…&timezone=UTC&order=ASC&start_date&end_date&outputsize=5000`
  (paged by `start_date`); values are strings, datetimes `YYYY-MM-DD HH:MM:SS` (or a date for
  daily bars) — asked in UTC so no exchange-zone conversion is needed. Hour and longer intraday
  timeframes are aggregated from 30-minute bars (US equity hours start at :30). Served
  timeframes (`serves_history`): whole minutes below a day, and 1d (1min is the shortest
  interval).
- Errors: `{"code":…,"message":…,"status":"error"}` under HTTP 200 or the real status: 400/404
  unknown symbol, 401 bad key, 403 plan-gated, 429 out of credits ("for the current minute":
  retry at the next full minute). "No data is available …" is an empty result.
- Free tier: 8 credits/minute, 800/day.
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
use crate::instrument::Instrument;
use crate::model::{Bar, Quote, SymbolId, SymbolTable, Timeframe};

const NAME: &str = "twelvedata";

pub const FREE_TIER: RateLimit = RateLimit {
    per_minute: Some(8),
    per_day: Some(800),
};

/// TwelveDataSource's entry in the registry: its environment, budget, symbol spelling and builder.
pub const PROVIDER: Provider = Provider {
    name: NAME,
    env: Some(ProviderEnv {
        base_url: ("TWELVEDATA_BASE_URL", "https://api.twelvedata.com"),
        ws_url: None,
        api_key: Some("TWELVEDATA_API_KEY"),
        per_minute: "TWELVEDATA_RATE_PER_MINUTE",
        per_day: "TWELVEDATA_RATE_PER_DAY",
        switches: &[],
    }),
    free_tier: FREE_TIER,
    spell: Some(spell),
    build,
};

fn build(plan: &Plan<'_>, symbols: &SymbolTable) -> Result<Arc<dyn Source>, SourceError> {
    Ok(Arc::new(TwelveDataSource::new(symbols, plan.providers)?))
}

/// Twelve Data's index symbols, by index code.
const INDICES: &[(&str, &str)] = &[("NDX", "NDX"), ("SPX", "SPX"), ("DJI", "DJI")];

/// `NDX`, `EUR/USD`, `XAU/USD` (spot), `BTC/USD`, `AAPL`.
fn spell(instrument: Instrument<'_>) -> Option<String> {
    match instrument {
        Instrument::Index(_) => index_symbol(INDICES, instrument),
        Instrument::Fx { base, quote } | Instrument::Crypto { base, quote } => {
            Some(format!("{base}/{quote}"))
        }
        Instrument::Equity(ticker) => Some(ticker.to_string()),
    }
}

/// Most symbols one batched request may carry.
const BATCH_LIMIT: usize = 120;
const OUTPUT_SIZE: usize = 5_000;
const MAX_PAGES: usize = 20;
const DAY_MS: i64 = 86_400_000;
/// Intervals on barkeep's grid, longest first.
const INTERVALS: &[(&str, i64)] = &[
    ("1day", DAY_MS),
    ("30min", 1_800_000),
    ("15min", 900_000),
    ("5min", 300_000),
    ("1min", 60_000),
];

pub struct TwelveDataSource {
    core: ProviderCore,
    volume: DayVolume,
    /// Symbols per quote request: one credit each, so no more than a minute's credits.
    max_batch: usize,
}

impl TwelveDataSource {
    /// # Errors
    /// A missing key (`TWELVEDATA_API_KEY`), or an HTTP client or base URL that cannot be built.
    pub fn new(symbols: &SymbolTable, settings: &ProviderSettings) -> Result<Self, SourceError> {
        let core = ProviderCore::new(
            &PROVIDER,
            symbols,
            settings,
            Auth::Header {
                name: reqwest::header::AUTHORIZATION,
                prefix: "apikey ",
            },
        )?;
        let max_batch = core
            .rate()
            .per_minute
            .map_or(BATCH_LIMIT, |credits| credits as usize)
            .clamp(1, BATCH_LIMIT);
        Ok(Self {
            core,
            volume: DayVolume::default(),
            max_batch,
        })
    }

    async fn quotes_for(&self, symbols: &[SymbolId]) -> Result<Vec<Quote>, SourceError> {
        let book = self.core.book();
        let ids: Vec<SymbolId> = symbols
            .iter()
            .copied()
            .filter(|&id| book.supports(id))
            .take(self.max_batch)
            .collect();
        let label = symbols
            .iter()
            .map(|&id| book.generic(id))
            .collect::<Vec<_>>()
            .join(",");
        if ids.is_empty() {
            return Err(SourceError::UnsupportedSymbol {
                source_name: NAME,
                symbol: label,
            });
        }
        let requested: Vec<&str> = ids
            .iter()
            .filter_map(|&id| book.provider_symbol(id))
            .collect();
        let joined = requested.join(",");
        let fetched = self
            .core
            .get(&["quote"], &[("symbol", joined.as_str())])
            .await?;
        let answers = parse::quotes(&fetched, &requested, &label, http::wall_ms())?;
        provider::gather(answers.into_iter().map(|(symbol, answer)| {
            answer
                .map(|q| {
                    book.wanted_ids(&symbol, &ids)
                        .map(|id| self.volume.quote(id, q))
                        .collect()
                })
                .inspect_err(|e| tracing::debug!(source = NAME, symbol = %symbol, error = %e, "symbol failed in batch"))
        }))
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
        let generic = &self.core.book().generic(id);
        let now = http::wall_ms();
        let end = to_ms.min(now);
        let rows = provider::paged(
            timeframe.bucket(from_ms),
            end,
            MAX_PAGES,
            |start| async move {
                let (start_date, end_date) = (utc_text(start), utc_text(end));
                let fetched = self
                    .core
                    .get(
                        &["time_series"],
                        &[
                            ("symbol", symbol),
                            ("interval", interval),
                            ("timezone", "UTC"),
                            ("order", "ASC"),
                            ("start_date", &start_date),
                            ("end_date", &end_date),
                            ("outputsize", &OUTPUT_SIZE.to_string()),
                        ],
                    )
                    .await?;
                let page = parse::time_series(&fetched, generic, now)?;
                let next = provider::next_page(&page, page.len() >= OUTPUT_SIZE, start, step);
                Ok((page, next))
            },
        )
        .await?;
        shape::closed_bars(rows, step, timeframe, from_ms, to_ms, now)
            .map_err(|reason| parse::malformed(generic, reason))
    }
}

/// Unix ms → `YYYY-MM-DD HH:MM:SS` in UTC, as `start_date`/`end_date` take it.
fn utc_text(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

impl Source for TwelveDataSource {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            batched_quotes: true,
            max_batch: self.max_batch,
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

    /// Twelve Data charges one credit per symbol, batched or not.
    fn request_cost(&self, symbols: usize) -> u32 {
        u32::try_from(symbols).unwrap_or(u32::MAX)
    }

    fn supports(&self, symbol: SymbolId) -> bool {
        self.core.book().supports(symbol)
    }

    /// Whole minutes below a day (from 1min … 30min bars) and 1d.
    fn serves_history(&self, timeframe: Timeframe) -> bool {
        shape::step_for(INTERVALS, timeframe).is_some()
    }

    fn quotes<'a>(
        &'a self,
        symbols: &'a [SymbolId],
        _now_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<Quote>, SourceError>> {
        Box::pin(self.quotes_for(symbols))
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
