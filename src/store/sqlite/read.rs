/*!
Reading, on the reader connection (WAL lets it read while the writer writes): the newest bars
of a series, its stored span, what its Redis ring should hold, checkpoints, row counts. Bars
still waiting for the next flush (`store::buffer`) are merged into what [`SqliteStore::recent_bars`] and
[`SqliteStore::ring_summary`] answer, so the newest closed bars are visible at once, not after
the next flush.
*/

use rusqlite::{OptionalExtension, params};

use super::{RingSummary, SqliteStore, StoreError, StoredBar};
use crate::model::{Bar, SymbolId, Timeframe};
use crate::store::buffer::{merge_recent, ring_summary};

impl SqliteStore {
    /// The newest `limit` closed bars, oldest first, including bars not yet flushed.
    ///
    /// # Errors
    /// A failed query.
    pub fn recent_bars(
        &self,
        symbol: SymbolId,
        timeframe: Timeframe,
        limit: usize,
    ) -> Result<Vec<StoredBar>, StoreError> {
        let name = self.symbols.name(symbol).clone();
        let unflushed = self.unflushed.lock().bars_of(symbol, timeframe);
        let bars = {
            let conn = self.reader.lock();
            let mut stmt = conn.prepare_cached(
                "SELECT ts, open, high, low, close, volume, source, quality FROM bars
                 WHERE symbol = ?1 AND timeframe = ?2 ORDER BY ts DESC LIMIT ?3",
            )?;
            let rows = stmt.query_map(
                params![&*name, timeframe.to_string(), limit as i64],
                row_to_bar,
            )?;
            let mut bars = rows.collect::<Result<Vec<_>, _>>()?;
            bars.reverse();
            bars
        };
        Ok(merge_recent(bars, &unflushed, limit))
    }

    /// Oldest and newest open time of the flushed bars of a series (the bootstrap's starting
    /// points). Reads only the primary-key index.
    ///
    /// # Errors
    /// A failed query.
    pub fn stored_span(
        &self,
        symbol: SymbolId,
        timeframe: Timeframe,
    ) -> Result<Option<(i64, i64)>, StoreError> {
        let conn = self.reader.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT min(ts), max(ts) FROM bars WHERE symbol = ?1 AND timeframe = ?2",
        )?;
        let span: (Option<i64>, Option<i64>) = stmt.query_row(
            params![&**self.symbols.name(symbol), timeframe.to_string()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(span.0.zip(span.1))
    }

    /// Length, oldest and newest open time of the newest `n` closed bars (flushed or not):
    /// what a Redis ring of capacity `n` must hold. Reads only the primary-key index.
    ///
    /// # Errors
    /// A failed query.
    pub fn ring_summary(
        &self,
        symbol: SymbolId,
        timeframe: Timeframe,
        n: usize,
    ) -> Result<RingSummary, StoreError> {
        let unflushed = self.unflushed.lock().bars_of(symbol, timeframe);
        let ts: Vec<i64> = {
            let conn = self.reader.lock();
            let mut stmt = conn.prepare_cached(
                "SELECT ts FROM bars WHERE symbol = ?1 AND timeframe = ?2 ORDER BY ts DESC LIMIT ?3",
            )?;
            let rows = stmt.query_map(
                params![
                    &**self.symbols.name(symbol),
                    timeframe.to_string(),
                    n as i64
                ],
                |r| r.get(0),
            )?;
            rows.collect::<Result<_, _>>()?
        };
        Ok(ring_summary(ts, &unflushed, n))
    }

    /// Stored closed bars after `after_ts` (all when `None`), oldest first, at most `limit`
    /// (the newest ones when there are more).
    ///
    /// # Errors
    /// A failed query.
    pub fn bars_after(
        &self,
        symbol: SymbolId,
        timeframe: Timeframe,
        after_ts: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Bar>, StoreError> {
        let conn = self.reader.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT ts, open, high, low, close, volume, source, quality FROM bars
             WHERE symbol = ?1 AND timeframe = ?2 AND ts > ?3 ORDER BY ts DESC LIMIT ?4",
        )?;
        let rows = stmt.query_map(
            params![
                &**self.symbols.name(symbol),
                timeframe.to_string(),
                after_ts.unwrap_or(i64::MIN),
                limit as i64
            ],
            row_to_bar,
        )?;
        let mut bars: Vec<Bar> = rows.map(|r| r.map(|s| s.bar)).collect::<Result<_, _>>()?;
        bars.reverse();
        Ok(bars)
    }

    /// The checkpoint of one (symbol, timeframe), if any.
    ///
    /// # Errors
    /// A failed query.
    pub fn checkpoint(
        &self,
        symbol: SymbolId,
        timeframe: Timeframe,
    ) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
        let conn = self.reader.lock();
        Ok(conn
            .query_row(
                "SELECT last_ts, state FROM indicator_state WHERE symbol = ?1 AND timeframe = ?2",
                params![&**self.symbols.name(symbol), timeframe.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// Rows in a table (`bars`, `rejects`, `gaps`, `indicator_state`), for health and tests.
    ///
    /// # Errors
    /// A failed query, or a table name that is not one of those.
    pub fn count(&self, table: &str) -> Result<u64, StoreError> {
        if !crate::store::history::TABLES.contains(&table) {
            return Err(StoreError::NoTable(table.into()));
        }
        let conn = self.reader.lock();
        Ok(
            conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| {
                r.get::<_, i64>(0)
            })? as u64,
        )
    }
}

fn row_to_bar(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredBar> {
    Ok(StoredBar {
        bar: Bar {
            ts: r.get(0)?,
            open: r.get(1)?,
            high: r.get(2)?,
            low: r.get(3)?,
            close: r.get(4)?,
            volume: r.get(5)?,
        },
        source: r.get(6)?,
        quality: r.get(7)?,
    })
}
