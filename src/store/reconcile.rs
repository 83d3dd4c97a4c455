/*!
Resync: where the two stores meet, and the only place.

History (SQLite or PostgreSQL, flushed or still buffered) always holds every closed bar a Redis
ring should hold, because `store::writer` hands a batch to Redis only after history has taken
it. So whenever the
Redis sink may have missed something — at start, after Redis was down or a write failed, after
batches were not queued because its queue was full ([`Resync::request`]), after history was
stored among a series' newest bars — every ring is reconciled with history before writing
resumes:
- a ring that matches (length, first and last bar) is kept;
- one that is behind, partial or broken is rewritten atomically (`MULTI`/`DEL`/`RPUSH`/`EXEC`)
  from history's newest bars (`redis_backfilled_bars_total`);
- one that is *ahead* of history (bars Redis got but history lost in a crash) first gives those
  bars to history (`redis_recovered_bars_total`), then is compared again.

Each run is counted (`redis_resyncs_total`). History is read through [`History`] (SQLite on the
blocking pool), never blocking the async runtime. Gap repair also rewrites a ring from here ([`Reconciler::rewrite_ring`]): its bars
are older than the ring's last one, so they were never pushed.
*/

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::calendar::MarketCalendar;
use crate::metrics::Metrics;
use crate::model::{Gap, SymbolId, Timeframe};
use crate::store::history::{History, RingSummary, StoredBar};
use crate::store::redis::RedisError;
use crate::store::redis::codec::{BarMsg, decode_ts, encode};
use crate::store::redis::conn::{Conn, Topology};

/// A request to the Redis sink to reconcile every ring before its next write.
#[derive(Debug, Default)]
pub struct Resync(AtomicBool);

impl Resync {
    /// Asks for a resync (the sink missed batches, or history got bars the rings should hold).
    pub fn request(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether a resync was asked for since the last call.
    pub(in crate::store) fn take(&self) -> bool {
        self.0.swap(false, Ordering::AcqRel)
    }
}

/// One Redis ring and the series it mirrors.
pub(in crate::store) struct Ring<'a> {
    pub(in crate::store) symbol: SymbolId,
    /// The Redis Cluster slot of its key.
    pub(in crate::store) slot: u16,
    pub(in crate::store) timeframe: Timeframe,
    pub(in crate::store) key: &'a str,
}

/// What a reconcile found.
pub(in crate::store) struct Reconciled {
    /// Open time of the last bar of each ring and its length, in the order asked.
    pub(in crate::store) rings: Vec<(Option<i64>, usize)>,
    pub(in crate::store) kept: usize,
    pub(in crate::store) rewritten: usize,
}

/// Rebuilds Redis rings from history (and history from rings that are ahead).
pub struct Reconciler {
    store: History,
    resync: Arc<Resync>,
    metrics: Arc<Metrics>,
    /// Each symbol's calendar (by id): a hole while its market was closed is no gap.
    calendars: Vec<MarketCalendar>,
}

impl Reconciler {
    pub fn new(
        store: History,
        resync: Arc<Resync>,
        metrics: Arc<Metrics>,
        calendars: Vec<MarketCalendar>,
    ) -> Self {
        Self {
            store,
            resync,
            metrics,
            calendars,
        }
    }

    /// Whether a resync was asked for since the last call.
    pub(in crate::store) fn requested(&self) -> bool {
        self.resync.take()
    }

    /// Makes every ring equal to the newest `n` closed bars history knows.
    pub(in crate::store) async fn reconcile(
        &self,
        conn: &mut Conn,
        topology: &Topology,
        rings: &[Ring<'_>],
        n: usize,
    ) -> Result<Reconciled, RedisError> {
        // What Redis has: length, first and last bar of every ring, in one round trip per
        // master (a cluster's pipeline must stay on one node).
        let answers = conn
            .per_owner(
                topology,
                rings,
                |ring| ring.slot,
                3,
                |pipe, ring| {
                    pipe.cmd("LLEN")
                        .arg(ring.key)
                        .cmd("LINDEX")
                        .arg(ring.key)
                        .arg(0)
                        .cmd("LINDEX")
                        .arg(ring.key)
                        .arg(-1);
                },
            )
            .await?;
        let mut done = Reconciled {
            rings: Vec::with_capacity(rings.len()),
            kept: 0,
            rewritten: 0,
        };
        for (i, ring) in rings.iter().enumerate() {
            let len = match &answers[3 * i] {
                redis::Value::Int(n) => *n as usize,
                _ => 0,
            };
            let first = decode_ts(&answers[3 * i + 1], ring.key);
            let last = decode_ts(&answers[3 * i + 2], ring.key);
            let mut want = self.summary(ring, n).await?;
            if let (Some(ring_last), true) = (last, last > want.last_ts) {
                // The ring is ahead of history: keep what only Redis saw.
                let recovered = self.recover_from_ring(conn, ring, want.last_ts).await?;
                self.metrics.redis_recovered_bars.add(recovered as u64);
                tracing::warn!(key = %ring.key, recovered, ring_last, "Redis ring was ahead of history; bars copied into history");
                want = self.summary(ring, n).await?;
            }
            if len == want.len && first == want.first_ts && last == want.last_ts {
                done.kept += 1;
            } else {
                self.rewrite_ring(conn, ring, n).await?;
                done.rewritten += 1;
            }
            done.rings.push((want.last_ts, want.len));
        }
        self.metrics.redis_resyncs.inc();
        Ok(done)
    }

    /// Replaces a ring with history's newest `n` bars, atomically; the open time of its last
    /// and its length.
    pub(in crate::store) async fn rewrite_ring(
        &self,
        conn: &mut Conn,
        ring: &Ring<'_>,
        n: usize,
    ) -> Result<(Option<i64>, usize), RedisError> {
        let bars = self
            .store
            .recent_bars(ring.symbol, ring.timeframe, n)
            .await?;
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("DEL").arg(ring.key).ignore();
        for chunk in bars.chunks(1_000) {
            let values: Vec<Vec<u8>> = chunk
                .iter()
                .map(|b| encode(&BarMsg::new(&b.bar, &b.source, b.quality)))
                .collect();
            pipe.cmd("RPUSH").arg(ring.key).arg(values).ignore();
        }
        let _: () = pipe.query_async(conn).await?;
        self.metrics.redis_backfilled_bars.add(bars.len() as u64);
        Ok((bars.last().map(|b| b.bar.ts), bars.len()))
    }

    async fn summary(&self, ring: &Ring<'_>, n: usize) -> Result<RingSummary, RedisError> {
        Ok(self
            .store
            .ring_summary(ring.symbol, ring.timeframe, n)
            .await?)
    }

    /// Copies the ring's bars newer than `after` into history, with the holes between them (and
    /// before the first) recorded as gaps in the same transaction: the gap rows a crash lost
    /// with the unflushed buffer would otherwise be missing inside the stored series. Returns
    /// how many bars.
    async fn recover_from_ring(
        &self,
        conn: &mut Conn,
        ring: &Ring<'_>,
        after: Option<i64>,
    ) -> Result<usize, RedisError> {
        let raw: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(ring.key)
            .arg(0)
            .arg(-1)
            .query_async(conn)
            .await?;
        let mut bars = Vec::new();
        for item in raw {
            match rmp_serde::from_slice::<StoredBar>(&item) {
                Ok(bar) if after.is_none_or(|t| bar.bar.ts > t) => bars.push(bar),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(key = ring.key, error = %e, "skipping an undecodable bar in a Redis ring")
                }
            }
        }
        bars.sort_by_key(|b| b.bar.ts);
        let (symbol, tf) = (ring.symbol, ring.timeframe);
        let calendar = self
            .calendars
            .get(symbol as usize)
            .copied()
            .unwrap_or(MarketCalendar::Always);
        let mut gaps = Vec::new();
        let mut previous = after;
        for b in &bars {
            if let Some(p) = previous
                && b.bar.ts > p + tf.ms()
                && calendar.open_within(p + tf.ms(), b.bar.ts)
            {
                gaps.push(Gap {
                    from_ts: p + tf.ms(),
                    to_ts: b.bar.ts,
                });
            }
            previous = Some(b.bar.ts);
        }
        self.metrics.gaps.add(gaps.len() as u64);
        Ok(self.store.recover(symbol, tf, bars, gaps).await?)
    }
}
