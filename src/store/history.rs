/*!
History: the durable store of bars, rejects, gaps and indicator checkpoints, in SQLite
(`SQLITE_PATH`, the default) or PostgreSQL (`POSTGRES_URL`), behind one type, [`History`].

Everything above the stores holds a `History` and never names a backend: the writer (absorb,
flush), the reconciler (ring summaries, recent bars, recovery from a ring), the warm-up
(checkpoints, stored bars), gap repair and the bootstrap (stored span, bars not stored yet), the
HTTP API (`/bars`, `/health`). Both backends keep the ticks' rows in the same buffer
(`store::buffer`) until a flush, merge it into what they read, and report their faults the same
way (`store::fault`), so they have the same semantics; they differ only in how rows reach the
database: SQLite blocks (run here on the blocking pool), PostgreSQL is asynchronous.
*/

use std::sync::Arc;
use std::time::Duration;

use crate::model::{Bar, Gap, RejectRecord, SymbolId, SymbolTable, TickBatch, Timeframe};
use crate::store::InstrumentRow;
use crate::store::fault::{Fault, FaultLog};
use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;

/// What a Redis ring of the newest bars should look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingSummary {
    pub len: usize,
    pub first_ts: Option<i64>,
    pub last_ts: Option<i64>,
}

/// Why a history operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("SQLite at {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("cannot create the directory for {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("SQLite: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("PostgreSQL connection pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("PostgreSQL: {0}")]
    Setup(String),
    #[error("PostgreSQL did not answer within {0:?}")]
    Timeout(Duration),
    #[error("no such table: {0}")]
    NoTable(String),
    #[error("history task failed: {0}")]
    Join(String),
}

/// A bar as stored, with its provenance.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredBar {
    #[serde(flatten)]
    pub bar: Bar,
    pub source: String,
    pub quality: f64,
}

/// A rejected input's values as text (`raw`: NaN and infinities included, which the price
/// columns store as NULL).
pub(in crate::store) fn raw_text(i: &Bar) -> String {
    format!(
        "o={} h={} l={} c={} v={} ts={}",
        i.open, i.high, i.low, i.close, i.volume, i.ts
    )
}

/// What one flush wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushStats {
    pub bars: usize,
    pub rejects: usize,
    pub checkpoints: usize,
    pub took: Duration,
}

/// The tables both backends have (`count` takes one of them).
pub const TABLES: [&str; 4] = ["bars", "rejects", "gaps", "indicator_state"];

/// `e` and the errors that caused it (a TLS handshake's certificate error, say), each once.
fn with_causes(e: &StoreError) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = c.source();
    }
    text
}

/// The history store: SQLite or PostgreSQL. Cheap to clone (an `Arc`).
#[derive(Clone)]
pub enum History {
    Sqlite(Arc<SqliteStore>),
    Postgres(Arc<PgStore>),
}

/// Runs a blocking SQLite call on the blocking pool.
async fn blocking<T, F>(store: &Arc<SqliteStore>, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&SqliteStore) -> Result<T, StoreError> + Send + 'static,
{
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| StoreError::Join(e.to_string()))?
}

impl History {
    /// Opens the configured store: PostgreSQL when `postgres` (`POSTGRES_URL` and
    /// `POSTGRES_POOL_SIZE`) is given, else SQLite at `sqlite_path`. A
    /// PostgreSQL that cannot be reached is waited for (a warning, then at most one a minute,
    /// retrying with a backoff up to a minute); the caller may stop waiting by dropping the
    /// future.
    ///
    /// # Errors
    /// SQLite that cannot be opened; PostgreSQL that answers with an error other than being
    /// unreachable (a wrong password, a missing database, a schema that cannot be applied).
    pub async fn open(
        sqlite_path: &std::path::Path,
        postgres: Option<(&str, usize)>,
        symbols: SymbolTable,
    ) -> Result<Self, StoreError> {
        let Some((url, pool_size)) = postgres else {
            let path = sqlite_path.to_path_buf();
            let opened = tokio::task::spawn_blocking(move || SqliteStore::open(&path, symbols))
                .await
                .map_err(|e| StoreError::Join(e.to_string()))??;
            return Ok(Self::Sqlite(Arc::new(opened)));
        };
        let store = PgStore::new(url, pool_size, symbols)?;
        let mut log = FaultLog::new("connect", "PostgreSQL");
        let mut wait = Duration::from_millis(250);
        loop {
            match store.apply_schema().await {
                Ok(()) => {
                    log.recovered(0);
                    return Ok(Self::Postgres(Arc::new(store)));
                }
                Err(e) if crate::store::fault::reason(&e) == "unreachable" => {
                    log.failed(&e, 0);
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(crate::store::writer::RETRY_MAX);
                }
                // A refused login, database, certificate or schema: said with the URL it
                // concerns, its password hidden.
                Err(e) => {
                    return Err(StoreError::Setup(format!(
                        "POSTGRES_URL={}: {}",
                        crate::env::redact_url(url),
                        with_causes(&e)
                    )));
                }
            }
        }
    }

    /// `SQLite` or `PostgreSQL`, for log lines.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "SQLite",
            Self::Postgres(_) => "PostgreSQL",
        }
    }

    /// `sqlite` or `postgres`: the key of the store's part of `/health`.
    pub fn key(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }

    /// Takes what a tick produced into the write buffer; returns the number of buffered rows.
    pub fn absorb(&self, batch: &TickBatch) -> usize {
        match self {
            Self::Sqlite(s) => s.absorb(batch),
            Self::Postgres(p) => p.absorb(batch),
        }
    }

    /// Rows not written yet: buffered for the next flush or in the flush in progress.
    pub fn pending_rows(&self) -> usize {
        match self {
            Self::Sqlite(s) => s.pending_rows(),
            Self::Postgres(p) => p.pending_rows(),
        }
    }

    /// The fault that made the last write fail, until a write succeeds again.
    pub fn fault(&self) -> Option<Fault> {
        match self {
            Self::Sqlite(s) => s.fault(),
            Self::Postgres(p) => p.fault(),
        }
    }

    /// Writes everything buffered in one transaction; on failure the rows stay buffered for
    /// the next attempt.
    ///
    /// # Errors
    /// The error that made the transaction fail.
    pub async fn flush(&self) -> Result<FlushStats, StoreError> {
        let started = std::time::Instant::now();
        let mut stats = match self {
            Self::Sqlite(s) => blocking(s, SqliteStore::flush).await?,
            Self::Postgres(p) => p.flush().await?,
        };
        stats.took = started.elapsed();
        Ok(stats)
    }

    /// The newest `limit` closed bars, oldest first, including bars not yet flushed.
    ///
    /// # Errors
    /// A failed query.
    pub async fn recent_bars(
        &self,
        symbol: SymbolId,
        timeframe: Timeframe,
        limit: usize,
    ) -> Result<Vec<StoredBar>, StoreError> {
        match self {
            Self::Sqlite(s) => blocking(s, move |s| s.recent_bars(symbol, timeframe, limit)).await,
            Self::Postgres(p) => p.recent_bars(symbol, timeframe, limit).await,
        }
    }

    /// Length, oldest and newest open time of the newest `n` closed bars (flushed or not):
    /// what a Redis ring of capacity `n` must hold.
    ///
    /// # Errors
    /// A failed query.
    pub async fn ring_summary(
        &self,
        symbol: SymbolId,
        timeframe: Timeframe,
        n: usize,
    ) -> Result<RingSummary, StoreError> {
        match self {
            Self::Sqlite(s) => blocking(s, move |s| s.ring_summary(symbol, timeframe, n)).await,
            Self::Postgres(p) => p.ring_summary(symbol, timeframe, n).await,
        }
    }

    /// Oldest and newest open time of the flushed bars of a series.
    ///
    /// # Errors
    /// A failed query.
    pub async fn stored_span(
        &self,
        symbol: SymbolId,
        timeframe: Timeframe,
    ) -> Result<Option<(i64, i64)>, StoreError> {
        match self {
            Self::Sqlite(s) => blocking(s, move |s| s.stored_span(symbol, timeframe)).await,
            Self::Postgres(p) => p.stored_span(symbol, timeframe).await,
        }
    }

    /// Stored closed bars after `after_ts` (all when `None`), oldest first, at most `limit`
    /// (the newest ones when there are more).
    ///
    /// # Errors
    /// A failed query.
    pub async fn bars_after(
        &self,
        symbol: SymbolId,
        timeframe: Timeframe,
        after_ts: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Bar>, StoreError> {
        match self {
            Self::Sqlite(s) => {
                blocking(s, move |s| s.bars_after(symbol, timeframe, after_ts, limit)).await
            }
            Self::Postgres(p) => p.bars_after(symbol, timeframe, after_ts, limit).await,
        }
    }

    /// The checkpoint of one (symbol, timeframe), if any: the open time of its last bar and
    /// the state.
    ///
    /// # Errors
    /// A failed query.
    pub async fn checkpoint(
        &self,
        symbol: SymbolId,
        timeframe: Timeframe,
    ) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
        match self {
            Self::Sqlite(s) => blocking(s, move |s| s.checkpoint(symbol, timeframe)).await,
            Self::Postgres(p) => p.checkpoint(symbol, timeframe).await,
        }
    }

    /// Bars a Redis ring held and history did not (a crash lost the unflushed buffer), with
    /// the holes between them recorded as open gaps, in one transaction; how many bars.
    ///
    /// # Errors
    /// A failed transaction; nothing is written then.
    pub async fn recover(
        &self,
        symbol: SymbolId,
        timeframe: Timeframe,
        bars: Vec<StoredBar>,
        gaps: Vec<Gap>,
    ) -> Result<usize, StoreError> {
        match self {
            Self::Sqlite(s) => {
                blocking(s, move |s| s.recover(symbol, timeframe, &bars, &gaps)).await
            }
            Self::Postgres(p) => p.recover(symbol, timeframe, &bars, &gaps).await,
        }
    }

    /// Stores the bars whose open time is not stored yet (downloaded history never overwrites
    /// what collection stored) and the bars rejected on the way, in one transaction; how many
    /// bars were new.
    ///
    /// # Errors
    /// A failed transaction; nothing is written then.
    pub async fn insert_missing(
        &self,
        symbol: SymbolId,
        timeframe: Timeframe,
        bars: Vec<StoredBar>,
        rejects: Vec<RejectRecord>,
    ) -> Result<usize, StoreError> {
        match self {
            Self::Sqlite(s) => {
                blocking(s, move |s| {
                    s.insert_missing(symbol, timeframe, &bars, &rejects)
                })
                .await
            }
            Self::Postgres(p) => p.insert_missing(symbol, timeframe, &bars, &rejects).await,
        }
    }

    /// The run-time setting `name` (the control API's) stored for `shard` (`Shard::key`), if
    /// any.
    ///
    /// # Errors
    /// A failed query.
    pub async fn setting(
        &self,
        shard: &str,
        name: &'static str,
    ) -> Result<Option<String>, StoreError> {
        match self {
            Self::Sqlite(s) => {
                let shard = shard.to_string();
                blocking(s, move |s| s.setting(&shard, name)).await
            }
            Self::Postgres(p) => p.setting(shard, name).await,
        }
    }

    /// Stores run-time setting `name` of `shard` (`None` removes it), at once.
    ///
    /// # Errors
    /// A failed write.
    pub async fn put_setting(
        &self,
        shard: &str,
        name: &'static str,
        value: Option<String>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => {
                let shard = shard.to_string();
                blocking(s, move |s| {
                    s.put_setting(&shard, name, value.as_deref(), now_ms)
                })
                .await
            }
            Self::Postgres(p) => p.put_setting(shard, name, value.as_deref(), now_ms).await,
        }
    }

    /// The instruments the HTTP API added or removed, in the order they were first added.
    ///
    /// # Errors
    /// A failed query.
    pub async fn instruments(&self) -> Result<Vec<InstrumentRow>, StoreError> {
        match self {
            Self::Sqlite(s) => blocking(s, SqliteStore::instruments).await,
            Self::Postgres(p) => p.instruments().await,
        }
    }

    /// Stores an instrument's row at once (a row already there keeps its `added_ms`).
    ///
    /// # Errors
    /// A failed write.
    pub async fn save_instrument(&self, row: InstrumentRow) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => blocking(s, move |s| s.save_instrument(&row)).await,
            Self::Postgres(p) => p.save_instrument(&row).await,
        }
    }

    /// Forgets an instrument's row, at once.
    ///
    /// # Errors
    /// A failed write.
    pub async fn forget_instrument(&self, symbol: String) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => blocking(s, move |s| s.forget_instrument(&symbol)).await,
            Self::Postgres(p) => p.forget_instrument(&symbol).await,
        }
    }

    /// Rows in one of [`TABLES`], for health and tests.
    ///
    /// # Errors
    /// A failed query, or a table name that is not one of those.
    pub async fn count(&self, table: &'static str) -> Result<u64, StoreError> {
        if !TABLES.contains(&table) {
            return Err(StoreError::NoTable(table.into()));
        }
        match self {
            Self::Sqlite(s) => blocking(s, move |s| s.count(table)).await,
            Self::Postgres(p) => p.count(table).await,
        }
    }
}
