/*!
Market-data sources behind one trait.

A source declares what it can do ([`Capabilities`]) and answers for the symbols it is asked.
The collector knows sources only through [`Source`]; which one serves a symbol is decided by the
configured priority order (`SOURCES`) and by each source's health, never by name.

- `synthetic.rs` — a deterministic simulated market, the default (no network, no keys).
- `replay.rs` — bars from OHLCV CSV files (`barkeep replay`).
*/

pub mod replay;
pub mod synthetic;

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::config::Config;
use crate::model::{Bar, Quote, SymbolId, SymbolTable, Timeframe};

/// Source names `SOURCES` accepts.
pub const KNOWN: &[&str] = &["synthetic"];

/// What a source can be asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Latest quotes for many symbols in one request.
    pub batched_quotes: bool,
    /// Historical bars for warm-up and bootstrap.
    pub history: bool,
}

/// Why a source could not answer.
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
    #[error("{source_name}: {reason}")]
    Failed {
        source_name: &'static str,
        reason: String,
    },
}

impl SourceError {
    /// Whether another source should be tried for the same request.
    pub fn should_fall_back(&self) -> bool {
        true
    }
}

/// One market-data provider.
pub trait Source: Send + Sync {
    fn name(&self) -> &'static str;

    fn capabilities(&self) -> Capabilities;

    /// Latest quotes for `symbols`, stamped in provider time. `now_ms` is the collector's clock,
    /// which simulated sources use as their own.
    fn quotes<'a>(
        &'a self,
        symbols: &'a [SymbolId],
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<Quote>, SourceError>>;

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

/// Builds the configured sources in priority order.
pub fn build(config: &Config, symbols: &SymbolTable) -> Vec<Arc<dyn Source>> {
    config
        .sources
        .iter()
        .filter_map(|name| -> Option<Arc<dyn Source>> {
            match name.as_str() {
                "synthetic" => Some(Arc::new(synthetic::SyntheticSource::new(
                    symbols,
                    config.synthetic.clone(),
                ))),
                _ => None,
            }
        })
        .collect()
}
