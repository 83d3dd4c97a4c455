/*!
Market-data sources behind one trait.

A source declares what it can do ([`Capabilities`], and which timeframes its history serves,
[`Source::serves_history`]) and answers for the symbols it is asked. The collector and the
bootstrap know sources only through [`Source`]; which one serves a symbol is decided by the
configured priority order (`SOURCES`) and by each source's health, never by name. What a source
declares it cannot serve is never asked of it, so it costs no request budget.

- `synthetic.rs` — a deterministic simulated market, the default (no network, no keys).
- `chain/` — the source chain: the only way anything asks a source (permits, breakers,
  budgets, deadlines, per-source metrics).
- `breaker.rs`, `ratelimit.rs` — per-source circuit breaker and request budget, generic.
- `yahoo/`, `alphavantage/`, `twelvedata/`, `polygon/`, `binance/`, `finnhub/` — the real
  providers, each `mod.rs` (its `PROVIDER` description: variables, defaults, free tier, symbol
  spelling, builder; requests, capabilities and the history timeframes it serves) + `parse.rs`
  (pure parsers).
- `provider.rs` — what every REST provider is made of (`ProviderCore`: client, base URL, key,
  symbol book, budget) and the request patterns they share (per-symbol fan-out, paged history).
- `http.rs` — the shared HTTP client, URL building and error mapping (keys never in errors).
- `shape.rs` — provider answers → barkeep values: numbers, chart columns, closed and aggregated
  bars, day volume → per-quote volume.
- `stream.rs` — the WebSocket reconnect loop behind every push stream (`Session` per provider).
- `registry.rs` — the providers as data: each folder declares a `PROVIDER` (name, environment
  and defaults, free tier, symbol spelling, builder); adding one is its folder plus one line.
- `symbols.rs` — generic ↔ provider symbols (each provider's spelling plus `SYMBOL_MAP`).
- `settings.rs` — the providers' environment, read from what the registry declares.
- `replay.rs` — bars from OHLCV CSV files (`barkeep replay`).
*/

pub mod alphavantage;
pub mod binance;
pub mod breaker;
pub mod chain;
pub mod finnhub;
pub mod http;
pub mod polygon;
pub mod provider;
pub mod ratelimit;
pub mod registry;
pub mod replay;
pub mod settings;
pub mod shape;
pub mod stream;
pub mod symbols;
pub mod synthetic;
pub mod twelvedata;
pub mod yahoo;

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::model::{Bar, Quote, SymbolId, SymbolTable, Timeframe};
pub use registry::Plan;

/// Source names `SOURCES` accepts: the registry's ([`registry::PROVIDERS`]).
pub const KNOWN: [&str; registry::PROVIDERS.len()] = registry::names();

/// What a source can be asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Latest quotes for many symbols in one request.
    pub batched_quotes: bool,
    /// Most symbols one quotes request may carry (1 when not batched).
    pub max_batch: usize,
    /// Historical bars for warm-up, bootstrap and backfill after a stream reconnect; of which
    /// timeframes, [`Source::serves_history`] says.
    pub history: bool,
    /// A push stream (WebSocket) via [`Source::stream`].
    pub stream: bool,
}

/// A source's request budget: a token bucket refilled per minute plus a daily quota
/// (`None` = no documented limit). Defaults follow each provider's free tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_minute: Option<u32>,
    pub per_day: Option<u32>,
}

impl RateLimit {
    pub const UNLIMITED: Self = Self {
        per_minute: None,
        per_day: None,
    };
}

/// Why a source could not answer. [`SourceError::kind`] decides what the collector does.
/// Messages never contain an API key.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceError {
    #[error("{source_name} does not support {symbol}")]
    UnsupportedSymbol {
        source_name: &'static str,
        symbol: String,
    },
    #[error("{source_name} cannot {what}")]
    Unsupported {
        source_name: &'static str,
        what: &'static str,
    },
    #[error("{source_name}: unknown symbol {symbol}")]
    UnknownSymbol {
        source_name: &'static str,
        symbol: String,
    },
    #[error("{source_name}: rate limited{}", retry_after.map(|d| format!(", retry after {d:?}")).unwrap_or_default())]
    RateLimited {
        source_name: &'static str,
        retry_after: Option<std::time::Duration>,
    },
    #[error("{source_name}: rejected the API key: {reason}")]
    Unauthorized {
        source_name: &'static str,
        reason: String,
    },
    #[error("{source_name}: HTTP {status}: {reason}")]
    Http {
        source_name: &'static str,
        status: u16,
        reason: String,
    },
    #[error("{source_name}: no answer in time")]
    Timeout { source_name: &'static str },
    #[error("{source_name}: malformed payload for {symbol}: {reason}")]
    Malformed {
        source_name: &'static str,
        symbol: String,
        reason: String,
    },
    #[error("{source_name}: {reason}")]
    Network {
        source_name: &'static str,
        reason: String,
    },
}

/// What to do about a [`SourceError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The symbol is not this source's: try the next source, no penalty to this one.
    NotServed,
    /// The source is out of budget: try the next source; honour `retry_after`.
    RateLimited,
    /// The source failed: try the next source and count a failure for its circuit breaker.
    Failure,
}

impl SourceError {
    /// A payload that does not have the shape the provider documents.
    pub fn malformed(source_name: &'static str, symbol: &str, reason: impl Into<String>) -> Self {
        Self::Malformed {
            source_name,
            symbol: symbol.to_string(),
            reason: reason.into(),
        }
    }

    /// How long the provider asked us to stay away, if it said.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::UnsupportedSymbol { .. }
            | Self::Unsupported { .. }
            | Self::UnknownSymbol { .. } => ErrorKind::NotServed,
            Self::RateLimited { .. } => ErrorKind::RateLimited,
            Self::Unauthorized { .. }
            | Self::Http { .. }
            | Self::Timeout { .. }
            | Self::Malformed { .. }
            | Self::Network { .. } => ErrorKind::Failure,
        }
    }
}

/// What a push stream delivers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StreamEvent {
    Quote(Quote),
    /// A provider bar (e.g. a 1-minute aggregate), upserted by open time.
    Bar {
        symbol: SymbolId,
        timeframe: Timeframe,
        bar: Bar,
    },
    /// The stream was down from `since_ms` until now (counted; the gap it leaves in the bars is
    /// repaired from history like any other gap, see `repair.rs`).
    Reconnected {
        since_ms: i64,
    },
}

/// One market-data provider.
pub trait Source: Send + Sync {
    fn name(&self) -> &'static str;

    fn capabilities(&self) -> Capabilities;

    /// What one quotes request for `symbols` symbols costs in the budget's units: 1 for most
    /// providers, one credit per symbol for those that charge so (Twelve Data).
    fn request_cost(&self, _symbols: usize) -> u32 {
        1
    }

    /// The free-tier budget by default; configurable per source.
    fn rate_limit(&self) -> RateLimit {
        RateLimit::UNLIMITED
    }

    /// The provider's clock minus ours in ms, once measured (from answers' `Date` headers).
    fn clock_skew_ms(&self) -> Option<i64> {
        None
    }

    /// Whether this source can serve a symbol (by its generic name), e.g. Binance only crypto.
    fn supports(&self, _symbol: SymbolId) -> bool {
        true
    }

    /// Latest quotes for `symbols`, stamped in provider time. `now_ms` is the collector's clock,
    /// which simulated sources use as their own.
    fn quotes<'a>(
        &'a self,
        symbols: &'a [SymbolId],
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<Quote>, SourceError>>;

    /// Whether [`Source::history`] serves bars of `timeframe`: one of the provider's documented
    /// intervals, or a longer bar the provider code aggregates from one of them. Asked before
    /// any request budget is spent; `history` refuses what this declines with
    /// [`SourceError::Unsupported`] before sending anything. The default, every timeframe when
    /// `capabilities().history`, suits a source that builds any bar length from its own data
    /// (`synthetic`).
    fn serves_history(&self, _timeframe: Timeframe) -> bool {
        self.capabilities().history
    }

    /// Starts the push stream (only when `capabilities().stream`). It subscribes the active
    /// symbols of the shared table that this source spells, and follows the table as symbols
    /// are added and deleted at run time (`stream.rs`).
    fn stream(
        self: Arc<Self>,
        _out: tokio::sync::mpsc::Sender<StreamEvent>,
        _shutdown: tokio_util::sync::CancellationToken,
    ) -> Option<StreamTask> {
        None
    }

    /// Closed bars with open time in `[from_ms, to_ms)`, oldest first.
    fn history(
        &self,
        _symbol: SymbolId,
        _timeframe: Timeframe,
        _from_ms: i64,
        _to_ms: i64,
    ) -> BoxFuture<'_, Result<Vec<Bar>, SourceError>> {
        let name = self.name();
        Box::pin(async move {
            Err(SourceError::Unsupported {
                source_name: name,
                what: "serve history",
            })
        })
    }
}

/// Push sources: runs until `shutdown`, sending what arrives to `out`, reconnecting on its own
/// (backoff with jitter, resubscribe, reconnect after silence) and reporting each reconnect.
pub type StreamTask = BoxFuture<'static, ()>;

/// Builds the configured sources in priority order, each through its registry entry
/// (`registry.rs`). A provider that cannot be built (no key, bad URL) is skipped with a warning.
pub fn build<'a>(plan: impl Into<Plan<'a>>, symbols: &SymbolTable) -> Vec<Arc<dyn Source>> {
    let plan = plan.into();
    plan.names
        .iter()
        .filter_map(|name| {
            let provider = registry::find(name)?;
            (provider.build)(&plan, symbols)
                .inspect_err(|e| tracing::warn!(error = %e, "source skipped"))
                .ok()
        })
        .collect()
}
