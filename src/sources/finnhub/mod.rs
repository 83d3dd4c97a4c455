/*!
Finnhub: US equities, FX (`OANDA:EUR_USD`) and crypto (`BINANCE:BTCUSDT`); key in the
`X-Finnhub-Token` header (REST) or `?token=` (WebSocket).

- Quotes: `/quote?symbol=` per symbol → `{"c":price,"t":unix_s,…}`; no volume (quotes carry 0).
  An unknown symbol is HTTP 200 with all zeros and `t: 0`.
- History: `/stock|forex|crypto/candle` (`{"s":"ok","t":[…],"o":[…],…}`, `{"s":"no_data"}`), only
  declared when `FINNHUB_CANDLES=true`, because free keys get 403 on candles (without it,
  `history` refuses before sending anything). Hour and longer intraday timeframes are
  aggregated from 30-minute candles (US equity hours start at :30). Served timeframes
  (`serves_history`, with candles on): whole minutes below a day, and 1d (resolution 1 is one
  minute, the shortest).
- Stream: `{FINNHUB_WS_URL}?token=KEY`, `{"type":"subscribe","symbol":…}` per symbol (and
  `{"type":"unsubscribe",…}`, on the open connection, as instruments are deleted); trades
  arrive as `{"type":"trade","data":[{"s","p","t" (ms),"v"}]}` and are coalesced per symbol and
  frame into one quote (last price, summed volume); `{"type":"ping"}` keeps the connection alive.
- Errors: 401 `{"error":"Invalid API key."}`, 429 `{"error":"API limit reached. …"}`, 403 on
  plan-gated endpoints.
- Free tier: 60 calls/minute (and 30/s across all endpoints).
*/

pub mod parse;

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::provider::{self, Auth, ProviderCore};
use super::registry::Switch;
use super::registry::{Plan, Provider, ProviderEnv};
use super::settings::ProviderSettings;
use super::shape;
use super::stream::{self, Session, Subscriptions};
use super::symbols::{SymbolBook, tether};
use super::{Capabilities, RateLimit, Source, SourceError, StreamEvent, StreamTask, http};
use crate::instrument::Instrument;
use crate::model::{Bar, Quote, SymbolId, SymbolTable, Timeframe};

const NAME: &str = "finnhub";

pub const FREE_TIER: RateLimit = RateLimit {
    per_minute: Some(60),
    per_day: None,
};

/// FinnhubSource's entry in the registry: its environment, budget, symbol spelling and builder.
pub const PROVIDER: Provider = Provider {
    name: NAME,
    env: Some(ProviderEnv {
        base_url: ("FINNHUB_BASE_URL", "https://finnhub.io/api/v1"),
        ws_url: Some(("FINNHUB_WS_URL", "wss://ws.finnhub.io")),
        api_key: Some("FINNHUB_API_KEY"),
        per_minute: "FINNHUB_RATE_PER_MINUTE",
        per_day: "FINNHUB_RATE_PER_DAY",
        switches: &[CANDLES],
    }),
    free_tier: FREE_TIER,
    spell: Some(spell),
    build,
};

fn build(plan: &Plan<'_>, symbols: &SymbolTable) -> Result<Arc<dyn Source>, SourceError> {
    Ok(Arc::new(FinnhubSource::new(symbols, plan.providers)?))
}

/// `FINNHUB_CANDLES`: candles are 403 on free keys; on, history is declared.
pub const CANDLES: Switch = Switch {
    var: "FINNHUB_CANDLES",
    default: false,
};

/// `OANDA:EUR_USD`, `BINANCE:BTCUSDT`, `AAPL`; no indices.
fn spell(instrument: Instrument<'_>) -> Option<String> {
    match instrument {
        Instrument::Index(_) => None,
        Instrument::Fx { base, quote } => Some(format!("OANDA:{base}_{quote}")),
        Instrument::Crypto { base, quote } => Some(format!("BINANCE:{base}{}", tether(quote))),
        Instrument::Equity(ticker) => Some(ticker.to_string()),
    }
}

const DAY_MS: i64 = 86_400_000;
/// Candle resolutions on barkeep's grid, longest first.
const RESOLUTIONS: &[(&str, i64)] = &[
    ("D", DAY_MS),
    ("30", 1_800_000),
    ("15", 900_000),
    ("5", 300_000),
    ("1", 60_000),
];
/// Exchange prefixes of Finnhub's FX symbols (everything else with a prefix is crypto).
const FX_BROKERS: &[&str] = &[
    "OANDA",
    "FXCM",
    "FOREX.COM",
    "IC MARKETS",
    "FXPRO",
    "PEPPERSTONE",
    "OCTAFX",
    "SAXO",
    "FHFX",
];

pub struct FinnhubSource {
    core: ProviderCore,
    candles: bool,
}

impl FinnhubSource {
    /// # Errors
    /// A missing key (`FINNHUB_API_KEY`), or an HTTP client or base URL that cannot be built.
    pub fn new(symbols: &SymbolTable, settings: &ProviderSettings) -> Result<Self, SourceError> {
        Ok(Self {
            core: ProviderCore::new(
                &PROVIDER,
                symbols,
                settings,
                Auth::Header {
                    name: reqwest::header::HeaderName::from_static("x-finnhub-token"),
                    prefix: "",
                },
            )?,
            candles: settings.endpoint(NAME).is_some_and(|e| e.switch(CANDLES)),
        })
    }

    async fn quote(&self, id: SymbolId) -> Result<Vec<Quote>, SourceError> {
        let symbol = self.core.symbol(id)?;
        let fetched = self.core.get(&["quote"], &[("symbol", symbol)]).await?;
        let (price, ts) = parse::quote(&fetched, &self.core.book().generic(id))?;
        Ok(vec![Quote {
            symbol: id,
            ts,
            price,
            volume: 0.0,
        }])
    }

    async fn bars(
        &self,
        id: SymbolId,
        timeframe: Timeframe,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Bar>, SourceError> {
        if !self.candles {
            return Err(SourceError::Unsupported {
                source_name: NAME,
                what: "serve candles unless FINNHUB_CANDLES=true",
            });
        }
        let (resolution, step) =
            shape::step_for(RESOLUTIONS, timeframe).ok_or(SourceError::Unsupported {
                source_name: NAME,
                what: "serve this timeframe (minute multiples below a day, or 1d)",
            })?;
        let symbol = self.core.symbol(id)?;
        let kind = match symbol.split_once(':') {
            None => "stock",
            Some((exchange, _)) if FX_BROKERS.contains(&exchange) => "forex",
            Some(_) => "crypto",
        };
        let now = http::wall_ms();
        let from_s = timeframe.bucket(from_ms).div_euclid(1_000);
        let to_s = to_ms.min(now).div_euclid(1_000);
        let fetched = self
            .core
            .get(
                &[kind, "candle"],
                &[
                    ("symbol", symbol),
                    ("resolution", resolution),
                    ("from", &from_s.to_string()),
                    ("to", &to_s.to_string()),
                ],
            )
            .await?;
        let generic = self.core.book().generic(id);
        let rows = parse::candles(&fetched, &generic, step == DAY_MS)?;
        shape::closed_bars(rows, step, timeframe, from_ms, to_ms, now)
            .map_err(|reason| parse::malformed(&generic, reason))
    }
}

impl Source for FinnhubSource {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            batched_quotes: false,
            max_batch: 1,
            history: self.candles,
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
        self.core.book().supports(symbol)
    }

    /// With candles on: whole minutes below a day (from 1 … 30 minute candles) and 1d.
    fn serves_history(&self, timeframe: Timeframe) -> bool {
        self.candles && shape::step_for(RESOLUTIONS, timeframe).is_some()
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

    fn stream(
        self: Arc<Self>,
        out: mpsc::Sender<StreamEvent>,
        shutdown: CancellationToken,
    ) -> Option<StreamTask> {
        let ws_url = self.core.ws_url()?;
        let key = self.core.key()?;
        let mut url = reqwest::Url::parse(ws_url).ok()?;
        url.query_pairs_mut().append_pair("token", key.expose());
        let plan = self.core.stream_plan(url.to_string());
        let book = Arc::clone(self.core.book());
        Some(Box::pin(stream::run_stream(
            plan,
            move || TradeSession {
                subscriptions: Subscriptions::new(Arc::clone(&book), |_| true),
                book: Arc::clone(&book),
            },
            out,
            shutdown,
        )))
    }
}

/// One trade-stream connection: one `{"type": "subscribe" | "unsubscribe", "symbol"}` frame per
/// symbol, at the start and whenever the instruments change.
struct TradeSession {
    subscriptions: Subscriptions,
    book: Arc<SymbolBook>,
}

impl Session for TradeSession {
    fn follow(&mut self) -> Vec<String> {
        let changed = self.subscriptions.follow();
        let frame = |kind: &str, symbol: &Arc<str>| {
            serde_json::json!({"type": kind, "symbol": &**symbol}).to_string()
        };
        let removed = changed.removed.iter().map(|s| frame("unsubscribe", s));
        let added = changed.added.iter().map(|s| frame("subscribe", s));
        removed.chain(added).collect()
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
        let trades = match parse::frame(text) {
            Ok(parse::Frame::Trades(trades)) => trades,
            Ok(parse::Frame::Ping | parse::Frame::Other) => return Ok(()),
            Ok(parse::Frame::Error(msg)) => {
                tracing::warn!(source = NAME, error = %msg, "stream error message");
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(source = NAME, error = %e, "unreadable stream frame skipped");
                return Ok(());
            }
        };
        // One quote per symbol per frame: the latest trade's price, the frame's total volume.
        let start = events.len();
        for trade in trades {
            if !(trade.price.is_finite() && trade.price > 0.0) {
                continue;
            }
            let volume = if trade.volume.is_finite() {
                trade.volume.max(0.0)
            } else {
                0.0
            };
            for id in self
                .book
                .wanted_ids(&trade.symbol, self.subscriptions.ids())
            {
                let existing = events[start..].iter_mut().find_map(|e| match e {
                    StreamEvent::Quote(q) if q.symbol == id => Some(q),
                    _ => None,
                });
                match existing {
                    Some(q) => {
                        q.volume += volume;
                        if trade.ts >= q.ts {
                            q.ts = trade.ts;
                            q.price = trade.price;
                        }
                    }
                    None => events.push(StreamEvent::Quote(Quote {
                        symbol: id,
                        ts: trade.ts,
                        price: trade.price,
                        volume,
                    })),
                }
            }
        }
        Ok(())
    }
}
