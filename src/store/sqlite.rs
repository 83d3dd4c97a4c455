/*!
SQLite: the durable history (bars, rejects, gaps) and the indicator checkpoints.

The writer task buffers what the pipeline produces and writes it every `BATCH_WRITE_INTERVAL`
in one transaction on a blocking thread, never on the async runtime. A failed flush keeps its
rows for the next one; on shutdown the buffer is flushed before the task ends, so nothing the
pipeline produced is lost. Bars are upserted on `(symbol, timeframe, ts)`, so writing a bar
twice is harmless.

Readers (`/bars`, start-up warm-up) use their own connection; WAL lets them read while the
writer writes. Rows still waiting for the next flush are merged into what readers see, so the
newest closed bars are visible at once, not after the next flush.
*/

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, params};
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::bars::Gap;
use crate::metrics::Metrics;
use crate::model::{Bar, SymbolId, SymbolTable, Timeframe};
use crate::pipeline::{BarRecord, Event, RejectRecord};
use crate::store::TickBatch;

const SCHEMA: &str = include_str!("../../schema.sql");

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

/// What a Redis ring of the newest bars should look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingSummary {
    pub len: usize,
    pub first_ts: Option<i64>,
    pub last_ts: Option<i64>,
}

/// Why a SQLite operation failed.
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
    #[error("SQLite reader task failed: {0}")]
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

/// One indicator checkpoint row.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub symbol: SymbolId,
    pub timeframe: Timeframe,
    pub last_ts: i64,
    pub state: Vec<u8>,
}

#[derive(Default)]
struct Buffer {
    bars: Vec<BarRecord>,
    rejects: Vec<RejectRecord>,
    gaps: Vec<(SymbolId, Timeframe, Gap)>,
    /// Gaps filled after the fact, with the bars found (0: confirmed empty).
    revisions: Vec<(SymbolId, Timeframe, Gap, u32)>,
    checkpoints: Vec<Checkpoint>,
}

impl Buffer {
    fn len(&self) -> usize {
        self.bars.len()
            + self.rejects.len()
            + self.gaps.len()
            + self.revisions.len()
            + self.checkpoints.len()
    }
}

/// Brings a database made by an earlier version up to `schema.sql` (which only creates what
/// is missing): `gaps.status` came with gap repair.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let has_status: bool = conn.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info('gaps') WHERE name = 'status'",
        [],
        |r| r.get(0),
    )?;
    if !has_status {
        conn.execute_batch("ALTER TABLE gaps ADD COLUMN status TEXT NOT NULL DEFAULT 'open'")?;
    }
    Ok(())
}

/// Bars not yet committed: buffered for the next flush, or being flushed right now.
#[derive(Default)]
struct Unflushed {
    pending: Buffer,
    in_flight: Vec<BarRecord>,
}

/// The SQLite database: one writer connection, one reader connection.
pub struct SqliteStore {
    symbols: SymbolTable,
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
    unflushed: Mutex<Unflushed>,
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let open_err = |source| StoreError::Open {
        path: path.display().to_string(),
        source,
    };
    let conn = Connection::open(path).map_err(open_err)?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(open_err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(open_err)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(open_err)?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the database and applies `schema.sql`.
    ///
    /// # Errors
    /// When the directory cannot be created or the file is not a usable SQLite database.
    pub fn open(path: &Path, symbols: SymbolTable) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
                path: path.display().to_string(),
                source,
            })?;
        }
        let writer = open_connection(path)?;
        writer
            .execute_batch(SCHEMA)
            .map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })?;
        migrate(&writer).map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        let reader = open_connection(path)?;
        Ok(Self {
            symbols,
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
            unflushed: Mutex::new(Unflushed::default()),
        })
    }

    /// Takes what a tick produced into the buffer; returns the number of buffered rows.
    pub fn absorb(&self, batch: &TickBatch) -> usize {
        let mut u = self.unflushed.lock();
        for event in &batch.events {
            match event {
                Event::Closed { record, .. } => u.pending.bars.push(*record),
                Event::Rejected(r) => u.pending.rejects.push(*r),
                Event::Gap {
                    symbol,
                    timeframe,
                    gap,
                } => u.pending.gaps.push((*symbol, *timeframe, *gap)),
                Event::Revision {
                    symbol,
                    timeframe,
                    gap,
                    bars,
                } => u.pending.revisions.push((*symbol, *timeframe, *gap, *bars)),
                Event::Forming { .. } | Event::Session { .. } => {}
            }
        }
        u.pending
            .checkpoints
            .extend(batch.checkpoints.iter().cloned());
        u.pending.len()
    }

    /// Writes everything buffered in one transaction. Blocking: call it off the runtime.
    /// On failure the rows go back to the buffer for the next attempt.
    ///
    /// # Errors
    /// The SQLite error that made the transaction fail.
    pub fn flush(&self) -> Result<FlushStats, StoreError> {
        let buffer = {
            let mut u = self.unflushed.lock();
            let buffer = std::mem::take(&mut u.pending);
            u.in_flight = buffer.bars.clone();
            buffer
        };
        let result = self.write(&buffer);
        let mut u = self.unflushed.lock();
        u.in_flight.clear();
        if result.is_err() {
            // Put the rows back in front of anything that arrived meanwhile.
            let newer = std::mem::replace(&mut u.pending, buffer);
            u.pending.bars.extend(newer.bars);
            u.pending.rejects.extend(newer.rejects);
            u.pending.gaps.extend(newer.gaps);
            u.pending.revisions.extend(newer.revisions);
            u.pending.checkpoints.extend(newer.checkpoints);
        }
        result
    }

    pub fn pending_rows(&self) -> usize {
        self.unflushed.lock().pending.len()
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
            let mut gap = tx.prepare_cached(
                "INSERT INTO gaps (symbol, timeframe, from_ts, to_ts) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (symbol, timeframe, from_ts) DO UPDATE SET to_ts = max(to_ts, excluded.to_ts)",
            )?;
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
        let mut bars = {
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
        let unflushed: Vec<StoredBar> = {
            let u = self.unflushed.lock();
            u.in_flight
                .iter()
                .chain(&u.pending.bars)
                .filter(|r| r.symbol == symbol && r.timeframe == timeframe)
                .map(|r| StoredBar {
                    bar: r.bar,
                    source: r.source.to_string(),
                    quality: r.quality,
                })
                .collect()
        };
        for b in unflushed {
            match bars.binary_search_by_key(&b.bar.ts, |s| s.bar.ts) {
                Ok(i) => bars[i] = b,
                Err(i) => bars.insert(i, b),
            }
        }
        let excess = bars.len().saturating_sub(limit);
        bars.drain(..excess);
        Ok(bars)
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
        let mut ts: Vec<i64> = {
            let conn = self.reader.lock();
            let mut stmt = conn.prepare_cached("SELECT ts FROM bars WHERE symbol = ?1 AND timeframe = ?2 ORDER BY ts DESC LIMIT ?3")?;
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
        {
            let u = self.unflushed.lock();
            ts.extend(
                u.in_flight
                    .iter()
                    .chain(&u.pending.bars)
                    .filter(|r| r.symbol == symbol && r.timeframe == timeframe)
                    .map(|r| r.bar.ts),
            );
        }
        ts.sort_unstable();
        ts.dedup();
        let kept = &ts[ts.len().saturating_sub(n)..];
        Ok(RingSummary {
            len: kept.len(),
            first_ts: kept.first().copied(),
            last_ts: kept.last().copied(),
        })
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
        self.write_now(UPSERT_BAR, symbol, timeframe, bars, &[])
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
        self.write_now(INSERT_MISSING_BAR, symbol, timeframe, bars, rejects)
    }

    fn write_now(
        &self,
        sql: &str,
        symbol: SymbolId,
        timeframe: Timeframe,
        bars: &[StoredBar],
        rejects: &[RejectRecord],
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
            let raw = format!(
                "o={} h={} l={} c={} v={} ts={}",
                i.open, i.high, i.low, i.close, i.volume, i.ts
            );
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
        if !["bars", "rejects", "gaps", "indicator_state"].contains(&table) {
            return Err(StoreError::Sql(rusqlite::Error::InvalidParameterName(
                table.into(),
            )));
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

/// What one flush wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushStats {
    pub bars: usize,
    pub rejects: usize,
    pub checkpoints: usize,
    pub took: Duration,
}

/// Where the writer passes each batch on once it holds it: the Redis sink. Because a batch
/// reaches the next sink only after SQLite has it, a sink that missed batches can always rebuild
/// from SQLite (`resync`) without a gap.
pub struct Downstream {
    pub tx: mpsc::Sender<Arc<TickBatch>>,
    /// Set when a batch could not be queued (the sink is behind): the sink rebuilds from SQLite.
    pub resync: Arc<AtomicBool>,
}

/// The SQLite writer task: buffers batches, passes them downstream, flushes every `interval`
/// on the blocking pool while it goes on receiving, and flushes once more when the channel
/// closes (the collector has stopped).
pub async fn run_writer(
    store: Arc<SqliteStore>,
    mut rx: mpsc::Receiver<Arc<TickBatch>>,
    interval: Duration,
    metrics: Arc<Metrics>,
    downstream: Option<Downstream>,
    clock: crate::clock::Clock,
) {
    let mut timer = tokio::time::interval(interval);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    timer.tick().await;
    let mut flushing: Option<JoinHandle<Result<FlushStats, StoreError>>> = None;
    loop {
        tokio::select! {
            batch = rx.recv() => match batch {
                Some(batch) => {
                    let rows = store.absorb(&batch);
                    metrics.sqlite_pending_rows.set(rows as i64);
                    metrics.sqlite_queue_depth.set((rx.max_capacity() - rx.capacity()) as i64);
                    if let Some(d) = &downstream {
                        match d.tx.try_send(batch) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(_)) => {
                                metrics.redis_queue_full.inc();
                                d.resync.store(true, Ordering::Release);
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => {}
                        }
                    }
                }
                None => break,
            },
            _ = timer.tick(), if flushing.is_none() => {
                let store = Arc::clone(&store);
                flushing = Some(tokio::task::spawn_blocking(move || timed_flush(&store)));
            }
            result = wait_flush(&mut flushing), if flushing.is_some() => {
                flushing = None;
                record_flush(result, &metrics, clock);
            }
        }
    }
    if let Some(handle) = flushing.take() {
        record_flush(
            handle
                .await
                .map_err(|e| StoreError::Join(e.to_string()))
                .and_then(|r| r),
            &metrics,
            clock,
        );
    }
    // Final flush: retry a few times, a locked database or a full disk can be transient.
    for attempt in 0..5 {
        let s = Arc::clone(&store);
        let result = tokio::task::spawn_blocking(move || timed_flush(&s)).await;
        record_flush(
            result
                .map_err(|e| StoreError::Join(e.to_string()))
                .and_then(|r| r),
            &metrics,
            clock,
        );
        if store.pending_rows() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
    }
    let left = store.pending_rows();
    if left > 0 {
        tracing::error!(
            rows = left,
            "SQLite: rows could not be written before shutdown"
        );
    }
}

/// Waits for the flush in progress (never completes when there is none).
async fn wait_flush(
    flushing: &mut Option<JoinHandle<Result<FlushStats, StoreError>>>,
) -> Result<FlushStats, StoreError> {
    let Some(handle) = flushing.as_mut() else {
        return std::future::pending().await;
    };
    handle.await.map_err(|e| StoreError::Join(e.to_string()))?
}

fn timed_flush(store: &SqliteStore) -> Result<FlushStats, StoreError> {
    let started = Instant::now();
    let mut stats = store.flush()?;
    stats.took = started.elapsed();
    Ok(stats)
}

fn record_flush(
    result: Result<FlushStats, StoreError>,
    metrics: &Metrics,
    clock: crate::clock::Clock,
) {
    match result {
        Ok(stats) => {
            metrics.sqlite_flush_duration.record(stats.took);
            metrics.sqlite_flushes.inc();
            metrics.sqlite_bars_written.add(stats.bars as u64);
            metrics.sqlite_rejects_written.add(stats.rejects as u64);
            metrics.checkpoints_written.add(stats.checkpoints as u64);
            metrics.sqlite_pending_rows.set(0);
            metrics.sqlite_last_flush_ms.set(clock.now_ms());
        }
        Err(e) => {
            metrics.sqlite_flush_errors.inc();
            tracing::warn!(error = %e, "SQLite flush failed; rows kept for the next flush");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indicators::Features;
    use crate::validate::RejectReason;

    fn record(ts: i64, close: f64) -> BarRecord {
        BarRecord {
            symbol: 0,
            timeframe: "1m".parse().expect("valid"),
            bar: Bar::from_price(ts, close, 1.0),
            source: "synthetic",
            quality: 1.0,
        }
    }

    fn closed(ts: i64, close: f64) -> Event {
        Event::Closed {
            record: record(ts, close),
            features: Features {
                values: [f64::NAN; crate::indicators::FEATURE_COUNT],
            },
        }
    }

    #[test]
    fn upserts_merge_unflushed_and_keep_rejects() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("sub/b.db"), SymbolTable::new(["EURUSD"]))
            .expect("open");
        let tf: Timeframe = "1m".parse().expect("valid");
        let reject = Event::Rejected(RejectRecord {
            symbol: 0,
            source: "synthetic",
            reason: RejectReason::NonFinite,
            input: Bar::from_price(5, f64::NAN, 1.0),
            received_at_ms: 6,
        });
        store.absorb(&TickBatch::new(
            0,
            vec![closed(60_000, 1.0), closed(120_000, 2.0), reject],
        ));
        assert_eq!(store.flush().expect("flush").bars, 2);
        // A re-delivered bar with new values replaces the old one; unflushed rows are visible.
        store.absorb(&TickBatch::new(
            0,
            vec![closed(120_000, 2.5), closed(180_000, 3.0)],
        ));
        let recent = store.recent_bars(0, tf, 2).expect("read");
        assert_eq!(
            recent
                .iter()
                .map(|b| (b.bar.ts, b.bar.close))
                .collect::<Vec<_>>(),
            [(120_000, 2.5), (180_000, 3.0)]
        );
        store.flush().expect("flush");
        assert_eq!(store.count("bars").expect("count"), 3);
        assert_eq!(store.count("rejects").expect("count"), 1);
        assert_eq!(
            store
                .bars_after(0, tf, Some(60_000), 10)
                .expect("read")
                .len(),
            2
        );
        let conn = store.reader.lock();
        let (reason, close, raw): (String, Option<f64>, String) = conn
            .query_row("SELECT reason, close, raw FROM rejects", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .expect("row");
        assert_eq!((reason.as_str(), close), ("non_finite", None));
        assert!(raw.contains("c=NaN"), "{raw}");
    }
}
