/*!
Writing: the transactions that store what the pipeline produced.

[`SqliteStore::absorb`] takes a tick's rows into the buffer (`store::buffer`);
[`SqliteStore::flush`] writes the whole buffer in one transaction (blocking: the caller runs it
off the async runtime) and, when the transaction fails, puts the rows back in front of what
arrived meanwhile, so a failed flush loses nothing. Bars are upserted on `(symbol, timeframe, ts)`, so writing a bar twice is
harmless. [`SqliteStore::upsert_now`] and [`SqliteStore::insert_missing`] write at once, in their
own transaction, for bars that come from elsewhere than the tick (a Redis ring, the bootstrap).
Every write that touches the database notes how it ended (`store::fault`).
*/

use std::time::Duration;

use rusqlite::params;

use super::{FlushStats, SqliteStore, StoreError, StoredBar};
use crate::model::{Gap, RejectRecord, SymbolId, TickBatch, Timeframe};
use crate::store::buffer::{Buffer, begin_flush};

/// A gap, or a longer one where one starts at the same time.
const INSERT_GAP: &str =
    "INSERT INTO gaps (symbol, timeframe, from_ts, to_ts) VALUES (?1, ?2, ?3, ?4)
     ON CONFLICT (symbol, timeframe, from_ts) DO UPDATE SET to_ts = max(to_ts, excluded.to_ts)";

const UPSERT_BAR: &str =
    "INSERT INTO bars (symbol, timeframe, ts, open, high, low, close, volume, source, quality)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
     ON CONFLICT (symbol, timeframe, ts) DO UPDATE SET
       open = excluded.open, high = excluded.high, low = excluded.low, close = excluded.close,
       volume = excluded.volume, source = excluded.source, quality = excluded.quality";

const INSERT_MISSING_BAR: &str =
    "INSERT INTO bars (symbol, timeframe, ts, open, high, low, close, volume, source, quality)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
     ON CONFLICT (symbol, timeframe, ts) DO NOTHING";

impl SqliteStore {
    /// Takes what a tick produced into the buffer; returns the number of buffered rows.
    pub fn absorb(&self, batch: &TickBatch) -> usize {
        self.unflushed.lock().absorb(batch)
    }

    /// Writes everything buffered in one transaction. Blocking: call it off the runtime.
    /// On failure the rows go back to the buffer for the next attempt.
    ///
    /// # Errors
    /// The SQLite error that made the transaction fail.
    pub fn flush(&self) -> Result<FlushStats, StoreError> {
        let flushing = begin_flush(&self.unflushed);
        let result = self.write(flushing.rows());
        if flushing.rows().len() > 0 {
            self.fault.note(&result);
        }
        flushing.finish(result.is_ok());
        result
    }

    /// Rows not written yet: buffered for the next flush or in the flush in progress.
    pub fn pending_rows(&self) -> usize {
        self.unflushed.lock().pending_rows()
    }

    fn write(&self, b: &Buffer) -> Result<FlushStats, StoreError> {
        let stats = FlushStats {
            bars: b.bars.len(),
            rejects: b.rejects.len(),
            checkpoints: b.checkpoints.len(),
            took: Duration::ZERO,
        };
        if b.len() == 0 {
            return Ok(stats);
        }
        let mut conn = self.writer.lock();
        let tx = conn.transaction()?;
        {
            let mut upsert = tx.prepare_cached(UPSERT_BAR)?;
            let mut tf_names: Vec<(Timeframe, String)> = Vec::new();
            for r in &b.bars {
                let tf = match tf_names.iter().find(|(t, _)| *t == r.timeframe) {
                    Some((_, name)) => name.as_str(),
                    None => {
                        tf_names.push((r.timeframe, r.timeframe.to_string()));
                        tf_names.last().map_or("", |(_, n)| n.as_str())
                    }
                };
                let bar = &r.bar;
                upsert.execute(params![
                    &**self.symbols.name(r.symbol),
                    tf,
                    bar.ts,
                    bar.open,
                    bar.high,
                    bar.low,
                    bar.close,
                    bar.volume,
                    r.source,
                    r.quality
                ])?;
            }
            self.insert_rejects(&tx, &b.rejects)?;
            let mut gap = tx.prepare_cached(INSERT_GAP)?;
            for (symbol, tf, g) in &b.gaps {
                gap.execute(params![
                    &**self.symbols.name(*symbol),
                    tf.to_string(),
                    g.from_ts,
                    g.to_ts
                ])?;
            }
            let mut revised = tx.prepare_cached(
                "INSERT INTO gaps (symbol, timeframe, from_ts, to_ts, status) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (symbol, timeframe, from_ts) DO UPDATE SET status = excluded.status",
            )?;
            for (symbol, tf, g, bars) in &b.revisions {
                revised.execute(params![
                    &**self.symbols.name(*symbol),
                    tf.to_string(),
                    g.from_ts,
                    g.to_ts,
                    if *bars == 0 { "empty" } else { "repaired" }
                ])?;
            }
            let mut checkpoint = tx.prepare_cached(
                "INSERT INTO indicator_state (symbol, timeframe, last_ts, state, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (symbol, timeframe) DO UPDATE SET
                   last_ts = excluded.last_ts, state = excluded.state, updated_at = excluded.updated_at",
            )?;
            let now = chrono::Utc::now().timestamp_millis();
            for c in &b.checkpoints {
                checkpoint.execute(params![
                    &**self.symbols.name(c.symbol),
                    c.timeframe.to_string(),
                    c.last_ts,
                    c.state,
                    now
                ])?;
            }
        }
        tx.commit()?;
        Ok(stats)
    }

    /// Upserts bars recovered from elsewhere (a Redis ring that was ahead after a crash) in
    /// one transaction, at once rather than at the next flush.
    ///
    /// # Errors
    /// A failed transaction; nothing is written then.
    pub fn upsert_now(
        &self,
        symbol: SymbolId,
        timeframe: Timeframe,
        bars: &[StoredBar],
    ) -> Result<usize, StoreError> {
        self.write_now(UPSERT_BAR, symbol, timeframe, bars, &[], &[])
    }

    /// Bars a Redis ring held and SQLite did not (a crash lost the unflushed buffer), with the
    /// holes between them recorded as open gaps, in one transaction; how many bars.
    ///
    /// # Errors
    /// A failed transaction; nothing is written then.
    pub fn recover(
        &self,
        symbol: SymbolId,
        timeframe: Timeframe,
        bars: &[StoredBar],
        gaps: &[Gap],
    ) -> Result<usize, StoreError> {
        self.write_now(UPSERT_BAR, symbol, timeframe, bars, &[], gaps)
    }

    /// Stores the bars whose open time is not stored yet (history downloaded while collecting
    /// must never overwrite what collection stored) and the bars rejected on the way, in one
    /// transaction; how many bars were new.
    ///
    /// # Errors
    /// A failed transaction; nothing is written then.
    pub fn insert_missing(
        &self,
        symbol: SymbolId,
        timeframe: Timeframe,
        bars: &[StoredBar],
        rejects: &[RejectRecord],
    ) -> Result<usize, StoreError> {
        self.write_now(INSERT_MISSING_BAR, symbol, timeframe, bars, rejects, &[])
    }

    fn write_now(
        &self,
        sql: &str,
        symbol: SymbolId,
        timeframe: Timeframe,
        bars: &[StoredBar],
        rejects: &[RejectRecord],
        gaps: &[Gap],
    ) -> Result<usize, StoreError> {
        let result = self.write_now_unnoted(sql, symbol, timeframe, bars, rejects, gaps);
        self.fault.note(&result);
        result
    }

    fn write_now_unnoted(
        &self,
        sql: &str,
        symbol: SymbolId,
        timeframe: Timeframe,
        bars: &[StoredBar],
        rejects: &[RejectRecord],
        gaps: &[Gap],
    ) -> Result<usize, StoreError> {
        let mut conn = self.writer.lock();
        let tx = conn.transaction()?;
        self.insert_rejects(&tx, rejects)?;
        let mut written = 0;
        {
            let mut insert = tx.prepare_cached(sql)?;
            let (name, tf) = (&**self.symbols.name(symbol), timeframe.to_string());
            for b in bars {
                let bar = &b.bar;
                written += insert.execute(params![
                    name, tf, bar.ts, bar.open, bar.high, bar.low, bar.close, bar.volume, b.source,
                    b.quality
                ])?;
            }
            let mut gap = tx.prepare_cached(INSERT_GAP)?;
            for g in gaps {
                gap.execute(params![name, tf, g.from_ts, g.to_ts])?;
            }
        }
        tx.commit()?;
        Ok(written)
    }

    fn insert_rejects(
        &self,
        tx: &rusqlite::Transaction<'_>,
        rejects: &[RejectRecord],
    ) -> Result<(), StoreError> {
        let mut reject = tx.prepare_cached(
            "INSERT INTO rejects (symbol, source, reason, ts, received_at, open, high, low, close, volume, raw)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?;
        for r in rejects {
            let i = &r.input;
            let finite = |v: f64| v.is_finite().then_some(v);
            let raw = crate::store::history::raw_text(i);
            reject.execute(params![
                &**self.symbols.name(r.symbol),
                r.source,
                r.reason.as_str(),
                i.ts,
                r.received_at_ms,
                finite(i.open),
                finite(i.high),
                finite(i.low),
                finite(i.close),
                finite(i.volume),
                raw
            ])?;
        }
        Ok(())
    }
}
