/*!
Writing to PostgreSQL: a flush is one transaction of at most five statements (bars, rejects,
gaps, gap revisions, checkpoints), each given its rows as whole columns — one array parameter per
column, unpacked by `UNNEST` — so the cost per row is the server's, not a round trip's.

An upsert may not touch one row twice in a statement, so the rows of a flush are first reduced
to one per key, as SQLite's statement-per-row upserts would leave them: the last bar of an open
time, the longest gap starting at a time, the last revision of a gap, the newest checkpoint.
*/

use std::collections::HashMap;

use deadpool_postgres::Transaction;

use super::{PgStore, within};
use crate::model::{Bar, Gap, RejectRecord, SymbolId, Timeframe};
use crate::store::buffer::{Buffer, begin_flush};
use crate::store::history::{FlushStats, StoreError, StoredBar, raw_text};

const UPSERT_BARS: &str =
    "INSERT INTO bars (symbol, timeframe, ts, open, high, low, close, volume, source, quality)
     SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::float8[], $5::float8[],
                          $6::float8[], $7::float8[], $8::float8[], $9::text[], $10::float8[])
     ON CONFLICT (symbol, timeframe, ts) DO UPDATE SET
       open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
       volume = EXCLUDED.volume, source = EXCLUDED.source, quality = EXCLUDED.quality";

const INSERT_MISSING_BARS: &str =
    "INSERT INTO bars (symbol, timeframe, ts, open, high, low, close, volume, source, quality)
     SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::float8[], $5::float8[],
                          $6::float8[], $7::float8[], $8::float8[], $9::text[], $10::float8[])
     ON CONFLICT (symbol, timeframe, ts) DO NOTHING";

const INSERT_REJECTS: &str = "INSERT INTO rejects (symbol, source, reason, ts, received_at, open, high, low, close, volume, raw)
     SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[],
                          $6::float8[], $7::float8[], $8::float8[], $9::float8[], $10::float8[],
                          $11::text[])";

/// A gap, or a longer one where one starts at the same time.
const INSERT_GAPS: &str = "INSERT INTO gaps (symbol, timeframe, from_ts, to_ts)
     SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[])
     ON CONFLICT (symbol, timeframe, from_ts) DO UPDATE SET to_ts = GREATEST(gaps.to_ts, EXCLUDED.to_ts)";

const REVISE_GAPS: &str = "INSERT INTO gaps (symbol, timeframe, from_ts, to_ts, status)
     SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::text[])
     ON CONFLICT (symbol, timeframe, from_ts) DO UPDATE SET status = EXCLUDED.status";

const UPSERT_CHECKPOINTS: &str =
    "INSERT INTO indicator_state (symbol, timeframe, last_ts, state, updated_at)
     SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bytea[], $5::bigint[])
     ON CONFLICT (symbol, timeframe) DO UPDATE SET
       last_ts = EXCLUDED.last_ts, state = EXCLUDED.state, updated_at = EXCLUDED.updated_at";

/// Timeframes by their text, made once per write rather than once per row.
struct TfNames(Vec<(Timeframe, String)>);

impl TfNames {
    fn of(timeframes: impl Iterator<Item = Timeframe>) -> Self {
        let mut names: Vec<(Timeframe, String)> = Vec::new();
        for tf in timeframes {
            if !names.iter().any(|(t, _)| *t == tf) {
                names.push((tf, tf.to_string()));
            }
        }
        Self(names)
    }

    fn get(&self, tf: Timeframe) -> &str {
        self.0
            .iter()
            .find(|(t, _)| *t == tf)
            .map_or("", |(_, n)| n.as_str())
    }
}

/// Bars as columns, one array parameter each.
#[derive(Default)]
struct BarColumns<'a> {
    symbol: Vec<&'a str>,
    timeframe: Vec<&'a str>,
    ts: Vec<i64>,
    open: Vec<f64>,
    high: Vec<f64>,
    low: Vec<f64>,
    close: Vec<f64>,
    volume: Vec<f64>,
    source: Vec<&'a str>,
    quality: Vec<f64>,
}

impl<'a> BarColumns<'a> {
    fn push(&mut self, symbol: &'a str, tf: &'a str, bar: &Bar, source: &'a str, quality: f64) {
        self.symbol.push(symbol);
        self.timeframe.push(tf);
        self.ts.push(bar.ts);
        self.open.push(bar.open);
        self.high.push(bar.high);
        self.low.push(bar.low);
        self.close.push(bar.close);
        self.volume.push(bar.volume);
        self.source.push(source);
        self.quality.push(quality);
    }

    /// Runs `sql` (one of the bar inserts) with these columns; the rows it changed.
    async fn write(&self, tx: &Transaction<'_>, sql: &str) -> Result<u64, StoreError> {
        if self.ts.is_empty() {
            return Ok(0);
        }
        let stmt = tx.prepare_cached(sql).await?;
        Ok(tx
            .execute(
                &stmt,
                &[
                    &self.symbol,
                    &self.timeframe,
                    &self.ts,
                    &self.open,
                    &self.high,
                    &self.low,
                    &self.close,
                    &self.volume,
                    &self.source,
                    &self.quality,
                ],
            )
            .await?)
    }
}

/// Indices of `items`, one per key, the last of each (in their original order).
fn last_per_key<T, K: std::hash::Hash + Eq>(items: &[T], key: impl Fn(&T) -> K) -> Vec<usize> {
    let mut at: HashMap<K, usize> = HashMap::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        at.insert(key(item), i);
    }
    let mut kept: Vec<usize> = at.into_values().collect();
    kept.sort_unstable();
    kept
}

impl PgStore {
    /// Writes everything buffered in one transaction; on failure (or after [`super::OP_TIMEOUT`])
    /// the rows go back to the buffer for the next attempt.
    ///
    /// # Errors
    /// The PostgreSQL error that made the transaction fail.
    pub async fn flush(&self) -> Result<FlushStats, StoreError> {
        let flushing = begin_flush(&self.unflushed);
        let rows = flushing.rows();
        let stats = FlushStats {
            bars: rows.bars.len(),
            rejects: rows.rejects.len(),
            checkpoints: rows.checkpoints.len(),
            took: std::time::Duration::ZERO,
        };
        if rows.len() == 0 {
            flushing.finish(true);
            return Ok(stats);
        }
        let result = within(self.write(rows)).await;
        self.fault.note(&result);
        flushing.finish(result.is_ok());
        result.map(|()| stats)
    }

    async fn write(&self, b: &Buffer) -> Result<(), StoreError> {
        let tfs = TfNames::of(
            b.bars
                .iter()
                .map(|r| r.timeframe)
                .chain(b.gaps.iter().map(|g| g.1))
                .chain(b.revisions.iter().map(|g| g.1))
                .chain(b.checkpoints.iter().map(|c| c.timeframe)),
        );
        let name = |s: SymbolId| &**self.symbols.name(s);
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;

        let mut bars = BarColumns::default();
        for i in last_per_key(&b.bars, |r| (r.symbol, r.timeframe, r.bar.ts)) {
            let r = &b.bars[i];
            bars.push(
                name(r.symbol),
                tfs.get(r.timeframe),
                &r.bar,
                r.source,
                r.quality,
            );
        }
        bars.write(&tx, UPSERT_BARS).await?;
        self.insert_rejects(&tx, &b.rejects).await?;

        // Of gaps starting at one time, the longest.
        let mut longest: HashMap<(SymbolId, Timeframe, i64), i64> = HashMap::new();
        for (s, tf, g) in &b.gaps {
            let to = longest.entry((*s, *tf, g.from_ts)).or_insert(g.to_ts);
            *to = (*to).max(g.to_ts);
        }
        if !longest.is_empty() {
            let (mut sym, mut tf, mut from, mut to) = (vec![], vec![], vec![], vec![]);
            for ((s, t, f), end) in &longest {
                sym.push(name(*s));
                tf.push(tfs.get(*t));
                from.push(*f);
                to.push(*end);
            }
            let stmt = tx.prepare_cached(INSERT_GAPS).await?;
            tx.execute(&stmt, &[&sym, &tf, &from, &to]).await?;
        }

        let revised = last_per_key(&b.revisions, |(s, tf, g, _)| (*s, *tf, g.from_ts));
        if !revised.is_empty() {
            let (mut sym, mut tf, mut from, mut to, mut status) =
                (vec![], vec![], vec![], vec![], vec![]);
            for i in revised {
                let (s, t, g, bars) = &b.revisions[i];
                sym.push(name(*s));
                tf.push(tfs.get(*t));
                from.push(g.from_ts);
                to.push(g.to_ts);
                status.push(if *bars == 0 { "empty" } else { "repaired" });
            }
            let stmt = tx.prepare_cached(REVISE_GAPS).await?;
            tx.execute(&stmt, &[&sym, &tf, &from, &to, &status]).await?;
        }

        let newest = last_per_key(&b.checkpoints, |c| (c.symbol, c.timeframe));
        if !newest.is_empty() {
            let now = chrono::Utc::now().timestamp_millis();
            let (mut sym, mut tf, mut last, mut state, mut at) =
                (vec![], vec![], vec![], Vec::<&[u8]>::new(), vec![]);
            for i in newest {
                let c = &b.checkpoints[i];
                sym.push(name(c.symbol));
                tf.push(tfs.get(c.timeframe));
                last.push(c.last_ts);
                state.push(&c.state);
                at.push(now);
            }
            let stmt = tx.prepare_cached(UPSERT_CHECKPOINTS).await?;
            tx.execute(&stmt, &[&sym, &tf, &last, &state, &at]).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Bars a Redis ring held and PostgreSQL did not, with the holes between them as open gaps,
    /// in one transaction; how many bars.
    ///
    /// # Errors
    /// A failed transaction; nothing is written then.
    pub async fn recover(
        &self,
        symbol: SymbolId,
        timeframe: Timeframe,
        bars: &[StoredBar],
        gaps: &[Gap],
    ) -> Result<usize, StoreError> {
        self.write_now(UPSERT_BARS, symbol, timeframe, bars, &[], gaps)
            .await
    }

    /// Stores the bars whose open time is not stored yet and the bars rejected on the way, in
    /// one transaction; how many bars were new.
    ///
    /// # Errors
    /// A failed transaction; nothing is written then.
    pub async fn insert_missing(
        &self,
        symbol: SymbolId,
        timeframe: Timeframe,
        bars: &[StoredBar],
        rejects: &[RejectRecord],
    ) -> Result<usize, StoreError> {
        self.write_now(INSERT_MISSING_BARS, symbol, timeframe, bars, rejects, &[])
            .await
    }

    async fn write_now(
        &self,
        sql: &str,
        symbol: SymbolId,
        timeframe: Timeframe,
        bars: &[StoredBar],
        rejects: &[RejectRecord],
        gaps: &[Gap],
    ) -> Result<usize, StoreError> {
        let result = within(async {
            let (name, tf) = (&**self.symbols.name(symbol), timeframe.to_string());
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            self.insert_rejects(&tx, rejects).await?;
            let mut columns = BarColumns::default();
            for i in last_per_key(bars, |b| b.bar.ts) {
                let b = &bars[i];
                columns.push(name, &tf, &b.bar, &b.source, b.quality);
            }
            let written = columns.write(&tx, sql).await?;
            if !gaps.is_empty() {
                let sym = vec![name; gaps.len()];
                let tfs = vec![tf.as_str(); gaps.len()];
                let from: Vec<i64> = gaps.iter().map(|g| g.from_ts).collect();
                let to: Vec<i64> = gaps.iter().map(|g| g.to_ts).collect();
                let stmt = tx.prepare_cached(INSERT_GAPS).await?;
                tx.execute(&stmt, &[&sym, &tfs, &from, &to]).await?;
            }
            tx.commit().await?;
            Ok(written as usize)
        })
        .await;
        self.fault.note(&result);
        result
    }

    async fn insert_rejects(
        &self,
        tx: &Transaction<'_>,
        rejects: &[RejectRecord],
    ) -> Result<(), StoreError> {
        if rejects.is_empty() {
            return Ok(());
        }
        let finite = |v: f64| v.is_finite().then_some(v);
        let n = rejects.len();
        let (mut sym, mut source, mut reason, mut ts, mut at) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let mut prices: [Vec<Option<f64>>; 5] = Default::default();
        let mut raw = Vec::with_capacity(n);
        for r in rejects {
            let i = &r.input;
            sym.push(&**self.symbols.name(r.symbol));
            source.push(r.source);
            reason.push(r.reason.as_str());
            ts.push(i.ts);
            at.push(r.received_at_ms);
            for (column, v) in prices
                .iter_mut()
                .zip([i.open, i.high, i.low, i.close, i.volume])
            {
                column.push(finite(v));
            }
            raw.push(raw_text(i));
        }
        let stmt = tx.prepare_cached(INSERT_REJECTS).await?;
        let [open, high, low, close, volume] = &prices;
        tx.execute(
            &stmt,
            &[
                &sym, &source, &reason, &ts, &at, open, high, low, close, volume, &raw,
            ],
        )
        .await?;
        Ok(())
    }
}
