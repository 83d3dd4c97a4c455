/*!
Polygon.io (Massive since 2025): US equities, indices (`I:NDX`), FX (`C:EURUSD`) and crypto
(`X:BTCUSD`); key in the `Authorization: Bearer` header.

- Quotes: equities from `/v2/last/trade/{T}` (`results.p`, `results.t` in **nanoseconds**, read
  as an integer because it exceeds 2^53); indices, FX and crypto — and equities once last
  trades answered 403 (not in the plan, e.g. the free tier) — from the newest 1-minute
  aggregate of the last day (`sort=desc&limit=1`), stamped at its window start. Quotes carry no
  volume.
- History: `/v2/aggs/ticker/{T}/range/1/{second|minute|hour|day}/{from_ms}/{to_ms}` (`sort=asc`,
  `limit=50000`, paged); `t` is the window start in Unix ms, no `results` key = no data; day
  bars (midnight New York) move to UTC midnight of their date. Other timeframes are aggregated
  from the longest of these that divides them. Served timeframes (`serves_history`): whole
  seconds below a day, and 1d.
- Stream: `{POLYGON_WS_URL}` (default the stocks cluster): wait for `connected`, send
  `{"action":"auth"}`, on `auth_success` subscribe `AM.T,A.T` (later `subscribe` /
  `unsubscribe` as instruments are added and deleted); `AM` minute aggregates become 1m
  bars, `A` second aggregates become quotes. Frames are JSON arrays of events. Equities only
  (the FX/crypto clusters use other event names).
- Errors: 401 `{"status":"ERROR","error":"Unknown API Key"}`, 403 `NOT_AUTHORIZED`, 404
  `NOT_FOUND`, 429 `"You've exceeded the maximum requests per minute"` (seen under HTTP 200 too).
- Free tier: 5 calls/minute, end-of-day/15-minute delayed data, no WebSocket.
*/

pub mod parse;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::provider::{self, Auth, ProviderCore};
use super::registry::{Plan, Provider, ProviderEnv};
use super::settings::ProviderSettings;
use super::shape;
use super::stream::{self, Session, Subscriptions};
use super::symbols::{SymbolBook, index_symbol};
use super::{Capabilities, RateLimit, Source, SourceError, StreamEvent, StreamTask, http};
use crate::instrument::Instrument;
use crate::model::{Bar, Quote, SymbolId, SymbolTable, Timeframe};

const NAME: &str = "polygon";

pub const FREE_TIER: RateLimit = RateLimit {
    per_minute: Some(5),
    per_day: None,
};

/// PolygonSource's entry in the registry: its environment, budget, symbol spelling and builder.
pub const PROVIDER: Provider = Provider {
    name: NAME,
    env: Some(ProviderEnv {
        base_url: ("POLYGON_BASE_URL", "https://api.polygon.io"),
        ws_url: Some(("POLYGON_WS_URL", "wss://socket.polygon.io/stocks")),
        api_key: Some("POLYGON_API_KEY"),
        per_minute: "POLYGON_RATE_PER_MINUTE",
        per_day: "POLYGON_RATE_PER_DAY",
        switches: &[],
    }),
    free_tier: FREE_TIER,
    spell: Some(spell),
    build,
};

fn build(plan: &Plan<'_>, symbols: &SymbolTable) -> Result<Arc<dyn Source>, SourceError> {
    Ok(Arc::new(PolygonSource::new(symbols, plan.providers)?))
}

/// Polygon's index tickers, by index code.
const INDICES: &[(&str, &str)] = &[
    ("NDX", "I:NDX"),
    ("SPX", "I:SPX"),
    ("DJI", "I:DJI"),
    ("VIX", "I:VIX"),
];

/// `I:NDX`, `C:EURUSD`, `X:BTCUSD`, `AAPL`.
fn spell(instrument: Instrument<'_>) -> Option<String> {
    match instrument {
        Instrument::Index(_) => index_symbol(INDICES, instrument),
        Instrument::Fx { base, quote } => Some(format!("C:{base}{quote}")),
        Instrument::Crypto { base, quote } => Some(format!("X:{base}{quote}")),
        Instrument::Equity(ticker) => Some(ticker.to_string()),
    }
}

const DAY_MS: i64 = 86_400_000;
const PAGE_LIMIT: usize = 50_000;
const MAX_PAGES: usize = 100;
/// Aggregate spans on barkeep's grid, longest first.
const SPANS: &[(&str, i64)] = &[
    ("day", DAY_MS),
    ("hour", 3_600_000),
    ("minute", 60_000),
    ("second", 1_000),
];

pub struct PolygonSource {
    core: ProviderCore,
    minute: Timeframe,
    /// Set once `/v2/last/trade` answered 403 (not in the plan).
    last_trade_denied: AtomicBool,
}

impl PolygonSource {
    /// # Errors
    /// A missing key (`POLYGON_API_KEY`), or an HTTP client or base URL that cannot be built.
    pub fn new(symbols: &SymbolTable, settings: &ProviderSettings) -> Result<Self, SourceError> {
        Ok(Self {
            core: ProviderCore::new(
                &PROVIDER,
                symbols,
                settings,
                Auth::Header {
                    name: reqwest::header::AUTHORIZATION,
                    prefix: "Bearer ",
                },
            )?,
            minute: Timeframe::from_ms(60_000).map_err(|reason| parse::malformed("", reason))?,
            last_trade_denied: AtomicBool::new(false),
        })
    }

    /// The close of the newest minute aggregate of the last day, stamped at its start.
    async fn latest_minute(
        &self,
        symbol: &str,
        generic: &str,
        now_ms: i64,
    ) -> Result<(f64, i64), SourceError> {
        let (from, to) = ((now_ms - DAY_MS).to_string(), now_ms.to_string());
        let fetched = self
            .core
            .get(
                &[
                    "v2", "aggs", "ticker", symbol, "range", "1", "minute", &from, &to,
                ],
                &[("adjusted", "true"), ("sort", "desc"), ("limit", "1")],
            )
            .await?;
        let page = parse::aggs(&fetched, generic, false)?;
        let bar = page
            .bars
            .first()
            .ok_or_else(|| SourceError::UnknownSymbol {
                source_name: NAME,
                symbol: generic.to_string(),
            })?;
        Ok((bar.close, bar.ts))
    }

    async fn quote(&self, id: SymbolId, now_ms: i64) -> Result<Vec<Quote>, SourceError> {
        let symbol = self.core.symbol(id)?;
        let generic = self.core.book().generic(id);
        let (price, ts) = if symbol.contains(':') || self.last_trade_denied.load(Ordering::Relaxed)
        {
            self.latest_minute(symbol, &generic, now_ms).await?
        } else {
            let fetched = self.core.get(&["v2", "last", "trade", symbol], &[]).await?;
            if fetched.status == 403 {
                // Last trades need a paid plan; aggregates come with every key.
                tracing::info!(
                    source = NAME,
                    "last trade not in this plan; quoting from minute aggregates"
                );
                self.last_trade_denied.store(true, Ordering::Relaxed);
                self.latest_minute(symbol, &generic, now_ms).await?
            } else {
                parse::last_trade(&fetched, &generic)?
            }
        };
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
        let (span, step) = shape::step_for(SPANS, timeframe).ok_or(SourceError::Unsupported {
            source_name: NAME,
            what: "serve this timeframe (second multiples below a day, or 1d)",
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
                let (from, to) = (start.to_string(), (end - 1).to_string());
                let fetched = self
                    .core
                    .get(
                        &[
                            "v2", "aggs", "ticker", symbol, "range", "1", span, &from, &to,
                        ],
                        &[
                            ("adjusted", "true"),
                            ("sort", "asc"),
                            ("limit", &PAGE_LIMIT.to_string()),
                        ],
                    )
                    .await?;
                let page = parse::aggs(&fetched, generic, step == DAY_MS)?;
                let more = page.more || page.bars.len() >= PAGE_LIMIT;
                let next = provider::next_page(&page.bars, more, start, step);
                Ok((page.bars, next))
            },
        )
        .await?;
        shape::closed_bars(rows, step, timeframe, from_ms, to_ms, now)
            .map_err(|reason| parse::malformed(generic, reason))
    }
}

impl Source for PolygonSource {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            batched_quotes: false,
            max_batch: 1,
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
        self.core.book().supports(symbol)
    }

    /// Whole seconds below a day (from second … hour aggregates) and 1d.
    fn serves_history(&self, timeframe: Timeframe) -> bool {
        shape::step_for(SPANS, timeframe).is_some()
    }

    fn quotes<'a>(
        &'a self,
        symbols: &'a [SymbolId],
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<Quote>, SourceError>> {
        Box::pin(provider::fan_out(symbols, move |id| self.quote(id, now_ms)))
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
        let key = self.core.key()?;
        let plan = self.core.stream_plan(ws_url);
        let auth = serde_json::json!({"action": "auth", "params": key.expose()}).to_string();
        let (book, minute) = (Arc::clone(self.core.book()), self.minute);
        Some(Box::pin(stream::run_stream(
            plan,
            move || AggregateSession {
                auth: auth.clone(),
                authenticated: false,
                // Equities only: the stocks cluster has no `C:`/`X:`/`I:` tickers.
                subscriptions: Subscriptions::new(Arc::clone(&book), |s| !s.contains(':')),
                book: Arc::clone(&book),
                minute,
            },
            out,
            shutdown,
        )))
    }
}

/// One aggregate-stream connection: connected → auth → subscribe → data. Changes of the
/// instruments are `subscribe` / `unsubscribe` actions once authenticated (before, the
/// subscribe that follows `auth_success` takes the set as it is then).
struct AggregateSession {
    auth: String,
    authenticated: bool,
    subscriptions: Subscriptions,
    book: Arc<SymbolBook>,
    minute: Timeframe,
}

/// `{"action": action, "params": "AM.T,A.T,…"}` for these tickers.
fn action<'a>(action: &str, tickers: impl Iterator<Item = &'a Arc<str>>) -> String {
    let params: Vec<String> = tickers.map(|t| format!("AM.{t},A.{t}")).collect();
    serde_json::json!({"action": action, "params": params.join(",")}).to_string()
}

impl Session for AggregateSession {
    fn follow(&mut self) -> Vec<String> {
        // The server speaks first ("connected"); nothing is sent before auth_success.
        let changed = self.subscriptions.follow();
        if !self.authenticated {
            return Vec::new();
        }
        let mut frames = Vec::new();
        if !changed.removed.is_empty() {
            frames.push(action("unsubscribe", changed.removed.iter()));
        }
        if !changed.added.is_empty() {
            frames.push(action("subscribe", changed.added.iter()));
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
        replies: &mut Vec<String>,
    ) -> Result<(), String> {
        let frame = match parse::frame(text) {
            Ok(frame) => frame,
            Err(e) => {
                tracing::warn!(source = NAME, error = %e, "unreadable stream frame skipped");
                return Ok(());
            }
        };
        for event in frame {
            match event {
                parse::Event::Status { status, message } => match status.as_str() {
                    "connected" => replies.push(self.auth.clone()),
                    "auth_success" => {
                        self.authenticated = true;
                        replies.push(action("subscribe", self.subscriptions.subscribed()));
                    }
                    "auth_failed" => return Err(format!("authentication refused: {message}")),
                    "max_connections" | "error" => {
                        tracing::warn!(source = NAME, status = %status, message = %message, "stream status");
                    }
                    _ => {}
                },
                parse::Event::Aggregate {
                    minute,
                    symbol,
                    bar,
                    end_ms,
                } => {
                    for id in self.book.wanted_ids(&symbol, self.subscriptions.ids()) {
                        events.push(if minute {
                            StreamEvent::Bar {
                                symbol: id,
                                timeframe: self.minute,
                                bar,
                            }
                        } else {
                            // The close of a second happened inside it: stamp within the window.
                            StreamEvent::Quote(Quote {
                                symbol: id,
                                ts: bar.ts.max(end_ms.saturating_sub(1)),
                                price: bar.close,
                                volume: bar.volume,
                            })
                        });
                    }
                }
                parse::Event::Other => {}
            }
        }
        Ok(())
    }
}
