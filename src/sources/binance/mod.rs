/*!
Binance spot: crypto only, no key for market data.

- Quotes: one batched `/api/v3/ticker/24hr?symbols=[…]&type=MINI` call for all symbols (weight 2
  up to 20 symbols); the price is `lastPrice`, the time `closeTime` (Unix ms). Binance's volume
  figure is a rolling 24 h sum, not a session total, so REST quotes carry volume 0; real volume
  comes with the klines (history and stream). One unknown symbol fails a whole batch with
  `-1121 Invalid symbol.`: the source then asks per symbol once, remembers the invalid ones and
  leaves them out (the collector falls back for them).
- History: `/api/v3/klines` (max 1000 rows per call, paged), rows
  `[openTime, "o", "h", "l", "c", "v", closeTime, …]` with numbers as strings; the trailing
  still-open kline is dropped. Timeframes without a kline interval are aggregated from one that
  divides them. Served timeframes (`serves_history`): every whole second up to a day (1s
  klines divide them all) and whole days (from 1d klines).
- Stream: `{BINANCE_WS_URL}` (default `wss://stream.binance.com:9443/ws`), live `SUBSCRIBE` to
  `<symbol>@kline_1m` (and `UNSUBSCRIBE`, on the open connection, as instruments are added and
  deleted at run time); every update is a quote (price `c`, volume = growth of the kline's `v`),
  and a kline with `x: true` is a closed 1m bar. Binance drops connections after 24 h and pings
  every 20 s (answered automatically).
- Errors: `{"code":…,"msg":…}` with HTTP 4xx; 429 (over the weight budget) and 418 (IP ban)
  carry `Retry-After` in seconds.
- Budget: 6000 weight/minute per IP; by default 600 requests/minute (≤ 4 weight each).
*/

pub mod parse;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::provider::{self, Auth, ProviderCore};
use super::registry::{Plan, Provider, ProviderEnv};
use super::settings::ProviderSettings;
use super::shape;
use super::stream::{self, Session, Subscriptions};
use super::symbols::{SymbolBook, tether};
use super::{Capabilities, RateLimit, Source, SourceError, StreamEvent, StreamTask, http};
use crate::instrument::Instrument;
use crate::model::{Bar, Quote, SymbolId, SymbolTable, Timeframe};

const NAME: &str = "binance";

/// Weight budget 6000/minute per IP; these requests weigh 2–4.
pub const FREE_TIER: RateLimit = RateLimit {
    per_minute: Some(600),
    per_day: None,
};

/// BinanceSource's entry in the registry: its environment, budget, symbol spelling and builder.
pub const PROVIDER: Provider = Provider {
    name: NAME,
    env: Some(ProviderEnv {
        base_url: ("BINANCE_BASE_URL", "https://api.binance.com"),
        ws_url: Some(("BINANCE_WS_URL", "wss://stream.binance.com:9443/ws")),
        api_key: None,
        per_minute: "BINANCE_RATE_PER_MINUTE",
        per_day: "BINANCE_RATE_PER_DAY",
        switches: &[],
    }),
    free_tier: FREE_TIER,
    spell: Some(spell),
    build,
};

fn build(plan: &Plan<'_>, symbols: &SymbolTable) -> Result<Arc<dyn Source>, SourceError> {
    Ok(Arc::new(BinanceSource::new(symbols, plan.providers)?))
}

/// Crypto pairs only, USD as USDT: `BTCUSD` → `BTCUSDT`, `ETHBTC` → `ETHBTC`.
fn spell(instrument: Instrument<'_>) -> Option<String> {
    match instrument {
        Instrument::Crypto { base, quote } => Some(format!("{base}{}", tether(quote))),
        _ => None,
    }
}

/// Rows per klines request (the API's maximum).
const KLINE_LIMIT: usize = 1_000;
/// Pages one history call may fetch (90 days of 1m bars is 130).
const MAX_PAGES: usize = 400;

/// Kline intervals whose bars sit on barkeep's epoch-aligned grid (weeks and 3-day bars do
/// not), longest first.
const INTERVALS: &[(&str, i64)] = &[
    ("1d", 86_400_000),
    ("12h", 43_200_000),
    ("8h", 28_800_000),
    ("6h", 21_600_000),
    ("4h", 14_400_000),
    ("2h", 7_200_000),
    ("1h", 3_600_000),
    ("30m", 1_800_000),
    ("15m", 900_000),
    ("5m", 300_000),
    ("3m", 180_000),
    ("1m", 60_000),
    ("1s", 1_000),
];

pub struct BinanceSource {
    core: ProviderCore,
    /// Symbols Binance answered `Invalid symbol.` for; left out of batches from then on.
    invalid: Mutex<HashSet<SymbolId>>,
    minute: Timeframe,
}

impl BinanceSource {
    /// # Errors
    /// When the HTTP client cannot be built or the base URL does not parse.
    pub fn new(symbols: &SymbolTable, settings: &ProviderSettings) -> Result<Self, SourceError> {
        Ok(Self {
            core: ProviderCore::new(&PROVIDER, symbols, settings, Auth::Keyless)?,
            invalid: Mutex::new(HashSet::new()),
            minute: Timeframe::from_ms(60_000).map_err(|reason| parse::malformed("", reason))?,
        })
    }

    async fn tickers(&self, ids: &[SymbolId]) -> Result<Vec<Quote>, SourceError> {
        let book = self.core.book();
        let names: Vec<&str> = ids
            .iter()
            .filter_map(|&id| book.provider_symbol(id))
            .collect();
        let list =
            serde_json::to_string(&names).map_err(|e| parse::malformed("", e.to_string()))?;
        let label = ids
            .iter()
            .map(|&id| book.generic(id))
            .collect::<Vec<_>>()
            .join(",");
        let fetched = self
            .core
            .get(
                &["api", "v3", "ticker", "24hr"],
                &[("symbols", list.as_str()), ("type", "MINI")],
            )
            .await?;
        let tickers = parse::tickers(&fetched, &label)?;
        let mut quotes = Vec::with_capacity(tickers.len());
        for t in tickers {
            quotes.extend(book.wanted_ids(&t.symbol, ids).map(|id| Quote {
                symbol: id,
                ts: t.ts,
                price: t.price,
                volume: 0.0,
            }));
        }
        Ok(quotes)
    }

    /// One symbol's ticker; a symbol Binance does not list is remembered and left out from then
    /// on (an empty answer, so the collector falls back for it).
    async fn ticker_or_forget(&self, id: SymbolId) -> Result<Vec<Quote>, SourceError> {
        match self.tickers(&[id]).await {
            Err(SourceError::UnknownSymbol { .. }) => {
                self.forget(id);
                Ok(Vec::new())
            }
            other => other,
        }
    }

    fn forget(&self, id: SymbolId) {
        tracing::warn!(source = NAME, symbol = %self.core.book().generic(id), "Binance does not list this symbol; not asking again");
        self.invalid.lock().insert(id);
    }

    async fn quotes_for(&self, symbols: &[SymbolId]) -> Result<Vec<Quote>, SourceError> {
        let book = self.core.book();
        let ids: Vec<SymbolId> = {
            let invalid = self.invalid.lock();
            symbols
                .iter()
                .copied()
                .filter(|id| book.supports(*id) && !invalid.contains(id))
                .collect()
        };
        if ids.is_empty() {
            return Err(SourceError::UnsupportedSymbol {
                source_name: NAME,
                symbol: symbols
                    .iter()
                    .map(|&id| book.generic(id))
                    .collect::<Vec<_>>()
                    .join(","),
            });
        }
        match self.tickers(&ids).await {
            Err(e @ SourceError::UnknownSymbol { .. }) if ids.len() == 1 => {
                self.forget(ids[0]);
                Err(e)
            }
            // One bad symbol fails the batch: find it (once) and answer for the rest.
            Err(SourceError::UnknownSymbol { .. }) => {
                provider::fan_out(&ids, |id| self.ticker_or_forget(id)).await
            }
            other => other,
        }
    }

    async fn bars(
        &self,
        id: SymbolId,
        timeframe: Timeframe,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Bar>, SourceError> {
        let (interval, step) = interval_for(timeframe).ok_or(SourceError::Unsupported {
            source_name: NAME,
            what: "serve a timeframe that no kline interval divides",
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
                let fetched = self
                    .core
                    .get(
                        &["api", "v3", "klines"],
                        &[
                            ("symbol", symbol),
                            ("interval", interval),
                            ("startTime", &start.to_string()),
                            ("endTime", &(end - 1).to_string()),
                            ("limit", &KLINE_LIMIT.to_string()),
                        ],
                    )
                    .await?;
                let page = parse::klines(&fetched, generic)?;
                let next = provider::next_page(&page, page.len() >= KLINE_LIMIT, start, step);
                Ok((page, next))
            },
        )
        .await?;
        shape::closed_bars(rows, step, timeframe, from_ms, to_ms, now)
            .map_err(|reason| parse::malformed(generic, reason))
    }
}

/// The kline interval a timeframe's bars are built from: the longest that divides it (only
/// daily klines for timeframes longer than a day).
fn interval_for(timeframe: Timeframe) -> Option<(&'static str, i64)> {
    let tf = timeframe.ms();
    INTERVALS
        .iter()
        .copied()
        .find(|(_, step)| tf % step == 0 && (tf <= 86_400_000 || *step == 86_400_000))
}

impl Source for BinanceSource {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            batched_quotes: true,
            max_batch: 100,
            history: true,
            stream: self.core.ws_url().is_some(),
        }
    }

    fn rate_limit(&self) -> RateLimit {
        self.core.rate()
    }

    fn clock_skew_ms(&self) -> Option<i64> {
        self.core.clock_skew_ms()
    }

    fn supports(&self, symbol: SymbolId) -> bool {
        self.core.book().supports(symbol) && !self.invalid.lock().contains(&symbol)
    }

    /// Whole seconds up to a day and whole days: what [`interval_for`] finds.
    fn serves_history(&self, timeframe: Timeframe) -> bool {
        interval_for(timeframe).is_some()
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

    fn stream(
        self: Arc<Self>,
        out: mpsc::Sender<StreamEvent>,
        shutdown: CancellationToken,
    ) -> Option<StreamTask> {
        let ws_url = self.core.ws_url()?.to_string();
        let plan = self.core.stream_plan(ws_url);
        let (book, minute) = (Arc::clone(self.core.book()), self.minute);
        Some(Box::pin(stream::run_stream(
            plan,
            move || KlineSession {
                subscriptions: Subscriptions::new(Arc::clone(&book), |_| true),
                book: Arc::clone(&book),
                next_id: 0,
                minute,
                volume: HashMap::new(),
            },
            out,
            shutdown,
        )))
    }
}

/// One kline-stream connection. Subscriptions change on the open connection with Binance's
/// live `SUBSCRIBE` / `UNSUBSCRIBE` requests (`{"method", "params": [streams], "id"}`, answered
/// `{"result": null, "id"}`); every request of a connection has an id of its own.
struct KlineSession {
    subscriptions: Subscriptions,
    book: Arc<SymbolBook>,
    /// The id of the last request sent on this connection.
    next_id: u64,
    minute: Timeframe,
    /// Per symbol: the open time and cumulative volume of the kline last seen.
    volume: HashMap<SymbolId, (i64, f64)>,
}

impl KlineSession {
    fn request(&mut self, method: &str, symbols: &[Arc<str>]) -> String {
        self.next_id += 1;
        let streams: Vec<String> = symbols
            .iter()
            .map(|s| format!("{}@kline_1m", s.to_ascii_lowercase()))
            .collect();
        serde_json::json!({"method": method, "params": streams, "id": self.next_id}).to_string()
    }
}

impl Session for KlineSession {
    fn follow(&mut self) -> Vec<String> {
        let changed = self.subscriptions.follow();
        let mut frames = Vec::new();
        if !changed.removed.is_empty() {
            frames.push(self.request("UNSUBSCRIBE", &changed.removed));
            let ids = self.subscriptions.ids();
            self.volume.retain(|id, _| ids.contains(id));
        }
        if !changed.added.is_empty() {
            frames.push(self.request("SUBSCRIBE", &changed.added));
        }
        frames
    }

    fn is_idle(&self) -> bool {
        self.subscriptions.is_empty()
    }

    fn on_text(
        &mut self,
        text: &str,
        events: &mut Vec<StreamEvent>,
        _replies: &mut Vec<String>,
    ) -> Result<(), String> {
        let kline = match parse::frame(text) {
            Ok(parse::Frame::Kline(k)) => k,
            Ok(parse::Frame::Other) => return Ok(()),
            Ok(parse::Frame::Error(e)) => {
                tracing::warn!(source = NAME, error = %e, "stream error message");
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(source = NAME, error = %e, "unreadable stream frame skipped");
                return Ok(());
            }
        };
        for id in self
            .book
            .wanted_ids(&kline.symbol, self.subscriptions.ids())
        {
            let volume = match self.volume.insert(id, (kline.bar.ts, kline.bar.volume)) {
                Some((t, v)) if t == kline.bar.ts => (kline.bar.volume - v).max(0.0),
                Some(_) => kline.bar.volume,
                None => 0.0,
            };
            events.push(StreamEvent::Quote(Quote {
                symbol: id,
                ts: kline.event_ms,
                price: kline.bar.close,
                volume,
            }));
            if kline.closed && kline.interval == "1m" {
                events.push(StreamEvent::Bar {
                    symbol: id,
                    timeframe: self.minute,
                    bar: kline.bar,
                });
            }
        }
        Ok(())
    }
}
