/*!
Reading from PostgreSQL: the newest bars of a series, its stored span, what its Redis ring should
hold, checkpoints, row counts. The bars still waiting for the next flush are copied before the
query and merged into the answer (`store::buffer`), as the SQLite backend does. Every query uses
the primary key `(symbol, timeframe, ts)`.
*/

use super::{PgStore, within};
use crate::model::{Bar, SymbolId, Timeframe};
use crate::store::InstrumentRow;
use crate::store::buffer::{merge_recent, ring_summary};
use crate::store::history::{RingSummary, StoreError, StoredBar};

const NEWEST_BARS: &str = "SELECT ts, open, high, low, close, volume, source, quality FROM bars
     WHERE symbol = $1 AND timeframe = $2 ORDER BY ts DESC LIMIT $3";

const BARS_AFTER: &str = "SELECT ts, open, high, low, close, volume, source, quality FROM bars
     WHERE symbol = $1 AND timeframe = $2 AND ts > $3 ORDER BY ts DESC LIMIT $4";

/// `limit` as a SQL `LIMIT` (PostgreSQL's is a signed 64-bit integer).
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn row_to_bar(r: &tokio_postgres::Row) -> Result<StoredBar, tokio_postgres::Error> {
    Ok(StoredBar {
        bar: Bar {
            ts: r.try_get(0)?,
            open: r.try_get(1)?,
            high: r.try_get(2)?,
            low: r.try_get(3)?,
            close: r.try_get(4)?,
            volume: r.try_get(5)?,
        },
        source: r.try_get(6)?,
        quality: r.try_get(7)?,
    })
}

impl PgStore {
    async fn query_bars(
        &self,
        sql: &str,
        symbol: SymbolId,
        timeframe: Timeframe,
        after: Option<i64>,
        limit: usize,
    ) -> Result<Vec<StoredBar>, StoreError> {
        within(async {
            let client = self.pool.get().await?;
            let stmt = client.prepare_cached(sql).await?;
            let (name, tf) = (&**self.symbols.name(symbol), timeframe.to_string());
            let limit = sql_limit(limit);
            let rows = match after {
                None => client.query(&stmt, &[&name, &tf, &limit]).await?,
                Some(after) => client.query(&stmt, &[&name, &tf, &after, &limit]).await?,
            };
            let mut bars = rows.iter().map(row_to_bar).collect::<Result<Vec<_>, _>>()?;
            bars.reverse();
            Ok(bars)
        })
        .await
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
        let unflushed = self.unflushed.lock().bars_of(symbol, timeframe);
        let stored = self
            .query_bars(NEWEST_BARS, symbol, timeframe, None, limit)
            .await?;
        Ok(merge_recent(stored, &unflushed, limit))
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
        let after = Some(after_ts.unwrap_or(i64::MIN));
        let bars = self
            .query_bars(BARS_AFTER, symbol, timeframe, after, limit)
            .await?;
        Ok(bars.into_iter().map(|b| b.bar).collect())
    }

    /// Length, oldest and newest open time of the newest `n` closed bars (flushed or not).
    ///
    /// # Errors
    /// A failed query.
    pub async fn ring_summary(
        &self,
        symbol: SymbolId,
        timeframe: Timeframe,
        n: usize,
    ) -> Result<RingSummary, StoreError> {
        let unflushed = self.unflushed.lock().bars_of(symbol, timeframe);
        let ts = within(async {
            let client = self.pool.get().await?;
            let stmt = client
                .prepare_cached(
                    "SELECT ts FROM bars WHERE symbol = $1 AND timeframe = $2 ORDER BY ts DESC LIMIT $3",
                )
                .await?;
            let (name, tf) = (&**self.symbols.name(symbol), timeframe.to_string());
            let rows = client.query(&stmt, &[&name, &tf, &sql_limit(n)]).await?;
            Ok(rows
                .iter()
                .map(|r| r.try_get::<_, i64>(0))
                .collect::<Result<Vec<_>, _>>()?)
        })
        .await?;
        Ok(ring_summary(ts, &unflushed, n))
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
        within(async {
            let client = self.pool.get().await?;
            let stmt = client
                .prepare_cached(
                    "SELECT min(ts), max(ts) FROM bars WHERE symbol = $1 AND timeframe = $2",
                )
                .await?;
            let (name, tf) = (&**self.symbols.name(symbol), timeframe.to_string());
            let row = client.query_one(&stmt, &[&name, &tf]).await?;
            let (first, last): (Option<i64>, Option<i64>) = (row.try_get(0)?, row.try_get(1)?);
            Ok(first.zip(last))
        })
        .await
    }

    /// The checkpoint of one (symbol, timeframe), if any.
    ///
    /// # Errors
    /// A failed query.
    pub async fn checkpoint(
        &self,
        symbol: SymbolId,
        timeframe: Timeframe,
    ) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
        within(async {
            let client = self.pool.get().await?;
            let stmt = client
                .prepare_cached(
                    "SELECT last_ts, state FROM indicator_state WHERE symbol = $1 AND timeframe = $2",
                )
                .await?;
            let (name, tf) = (&**self.symbols.name(symbol), timeframe.to_string());
            let Some(row) = client.query_opt(&stmt, &[&name, &tf]).await? else {
                return Ok(None);
            };
            Ok(Some((row.try_get(0)?, row.try_get(1)?)))
        })
        .await
    }

    /// The run-time setting `name` stored for `shard`, if any.
    ///
    /// # Errors
    /// A failed query.
    pub async fn setting(&self, shard: &str, name: &str) -> Result<Option<String>, StoreError> {
        within(async {
            let client = self.pool.get().await?;
            let row = client
                .query_opt(
                    "SELECT value FROM runtime_settings WHERE shard = $1 AND name = $2",
                    &[&shard, &name],
                )
                .await?;
            Ok(row.map(|r| r.try_get(0)).transpose()?)
        })
        .await
    }

    /// Stores run-time setting `name` of `shard` (`None` removes it), at once.
    ///
    /// # Errors
    /// A failed write.
    pub async fn put_setting(
        &self,
        shard: &str,
        name: &str,
        value: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        within(async {
            let client = self.pool.get().await?;
            match value {
                Some(value) => client.execute(
                    "INSERT INTO runtime_settings (shard, name, value, updated_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (shard, name) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at",
                    &[&shard, &name, &value, &now_ms],
                ).await?,
                None => client
                    .execute(
                        "DELETE FROM runtime_settings WHERE shard = $1 AND name = $2",
                        &[&shard, &name],
                    )
                    .await?,
            };
            Ok(())
        })
        .await
    }

    /// The instruments the HTTP API added or removed, in the order they were first added.
    ///
    /// # Errors
    /// A failed query.
    pub async fn instruments(&self) -> Result<Vec<InstrumentRow>, StoreError> {
        within(async {
            let client = self.pool.get().await?;
            let rows = client
                .query(
                    "SELECT symbol, calendar, active, added_at, updated_at FROM instruments
                     ORDER BY added_at, symbol",
                    &[],
                )
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(InstrumentRow {
                        symbol: r.try_get(0)?,
                        calendar: r.try_get(1)?,
                        active: r.try_get(2)?,
                        added_ms: r.try_get(3)?,
                        updated_ms: r.try_get(4)?,
                    })
                })
                .collect()
        })
        .await
    }

    /// Stores an instrument's row at once (a row already there keeps its `added_ms`).
    ///
    /// # Errors
    /// A failed write.
    pub async fn save_instrument(&self, row: &InstrumentRow) -> Result<(), StoreError> {
        within(async {
            let client = self.pool.get().await?;
            client
                .execute(
                    "INSERT INTO instruments (symbol, calendar, active, added_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (symbol) DO UPDATE SET calendar = EXCLUDED.calendar,
                         active = EXCLUDED.active, updated_at = EXCLUDED.updated_at",
                    &[
                        &row.symbol,
                        &row.calendar,
                        &row.active,
                        &row.added_ms,
                        &row.updated_ms,
                    ],
                )
                .await?;
            Ok(())
        })
        .await
    }

    /// Forgets an instrument's row, at once.
    ///
    /// # Errors
    /// A failed write.
    pub async fn forget_instrument(&self, symbol: &str) -> Result<(), StoreError> {
        within(async {
            let client = self.pool.get().await?;
            client
                .execute("DELETE FROM instruments WHERE symbol = $1", &[&symbol])
                .await?;
            Ok(())
        })
        .await
    }

    /// Rows in a table (one of `store::history::TABLES`, checked by the caller).
    ///
    /// # Errors
    /// A failed query.
    pub async fn count(&self, table: &'static str) -> Result<u64, StoreError> {
        within(async {
            let client = self.pool.get().await?;
            let row = client
                .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                .await?;
            Ok(row.try_get::<_, i64>(0)?.max(0) as u64)
        })
        .await
    }
}
