/*!
Writing a run of batches to Redis: per (symbol, timeframe) the closed bars in full, one event per
closed bar, and only the newest live bar and features (coalescing, counted); a market that
closed gets its last features once more, marked closed. A tick goes out as pipelines of up to
[`CHUNK_SYMBOLS`] symbols, each sent as soon as it is encoded, on the connection its symbols
always use, so a symbol's keys are written in order. A filled gap (`revision`) has its ring
rewritten through `store::reconcile`, then is published.
*/

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::codec::{BarMsg, EventMsg, FeaturesMsg, RevisionMsg, encode};
use super::{RedisError, RedisSink};
use crate::model::{BarRecord, Event, Features, SymbolId, TickBatch};
use crate::store::reconcile::Ring;
use crate::store::snapshot::NamedFeatures;

/// Symbols per pipeline chunk of a tick's write (about 1 000 commands with two timeframes).
const CHUNK_SYMBOLS: usize = 128;

/// What one write does to one (symbol, timeframe).
#[derive(Default)]
pub(super) struct SlotWork {
    touched: bool,
    /// Open time of the newest bar in the ring once this write succeeds.
    last_ts: Option<i64>,
    bars: Vec<Vec<u8>>,
    events: Vec<Vec<u8>>,
    closed: Option<(BarRecord, Features, i64)>,
    forming: Option<(BarRecord, Features, i64)>,
    /// The market closed (until this time) in this write.
    closed_until: Option<i64>,
}

impl SlotWork {
    pub(super) fn clear(&mut self) {
        self.touched = false;
        self.last_ts = None;
        self.bars.clear();
        self.events.clear();
        self.closed = None;
        self.forming = None;
        self.closed_until = None;
    }
}

impl RedisSink {
    /// Writes a run of batches: closed bars in full (skipping any already in the ring, one
    /// variadic `RPUSH` and one `LTRIM` per ring), one event per closed bar, and per key only
    /// the newest live bar and features. Public for the benches.
    ///
    /// # Errors
    /// The Redis error of a pipeline that failed (the sink then reconciles before writing on).
    pub async fn write(&mut self, batches: &[Arc<TickBatch>]) -> Result<(), RedisError> {
        let started = Instant::now();
        let now = self.clock.now_ms();
        let frames = self.timeframes.len();
        let mut work = std::mem::take(&mut self.scratch);
        work.resize_with(self.ring_last.len(), SlotWork::default);
        let mut touched = std::mem::take(&mut self.touched);
        let mut revisions = Vec::new();
        for batch in batches {
            for event in &batch.events {
                let (record, features, forming) = match event {
                    Event::Closed { record, features } => (record, features, false),
                    Event::Forming { record, features } => (record, features, true),
                    Event::Session { symbol, session } => {
                        let first = *symbol as usize * frames;
                        for slot in first..(first + frames).min(work.len()) {
                            let w = &mut work[slot];
                            if !w.touched {
                                w.touched = true;
                                w.last_ts = self.ring_last[slot];
                                touched.push(slot);
                            }
                            w.closed_until = (!session.open).then_some(session.until_ms);
                        }
                        continue;
                    }
                    Event::Revision {
                        symbol,
                        timeframe,
                        gap,
                        bars,
                    } => {
                        if let Some(slot) = self.slot(*symbol, *timeframe) {
                            revisions.push((slot, *gap, *bars));
                        }
                        continue;
                    }
                    Event::Rejected(_) | Event::Gap { .. } | Event::Liveness { .. } => continue,
                };
                let Some(slot) = self.slot(record.symbol, record.timeframe) else {
                    continue;
                };
                let w = &mut work[slot];
                if !w.touched {
                    w.touched = true;
                    w.last_ts = self.ring_last[slot];
                    touched.push(slot);
                }
                if forming {
                    if w.forming
                        .replace((*record, *features, batch.now_ms))
                        .is_some()
                    {
                        self.metrics.redis_coalesced.inc();
                    }
                    continue;
                }
                if w.last_ts.is_some_and(|t| record.bar.ts <= t) {
                    continue; // already in the ring
                }
                w.last_ts = Some(record.bar.ts);
                w.bars.push(encode(&BarMsg::new(
                    &record.bar,
                    record.source,
                    record.quality,
                )));
                let name = self.symbols.name(record.symbol);
                w.events.push(encode(&EventMsg {
                    kind: "bar",
                    symbol: name,
                    timeframe: &self.tf_names[slot % frames],
                    ts: record.bar.ts,
                    tick_ms: batch.now_ms,
                    forming: false,
                    bar: BarMsg::new(&record.bar, record.source, record.quality),
                    features: NamedFeatures {
                        names: &self.names,
                        features,
                    },
                }));
                // A forming update from an earlier batch is older than this closed bar.
                if w.forming
                    .as_ref()
                    .is_some_and(|(f, _, _)| f.bar.ts <= record.bar.ts)
                {
                    w.forming = None;
                }
                w.closed = Some((*record, *features, batch.now_ms));
            }
        }
        touched.sort_unstable();
        // The tick goes out in chunks, each sent as soon as it is encoded: Redis works on one
        // chunk while the next is encoded, and the first symbols are visible after the first
        // chunk instead of after the whole tick. A symbol's keys are all in one chunk, so the
        // chunks need no order among themselves; the next write starts after all have answered.
        let mut updates = 0u64;
        let mut sends = Vec::new();
        let chunk_of = |slot: &usize| slot / frames / CHUNK_SYMBOLS;
        for chunk in touched.chunk_by(|a, b| chunk_of(a) == chunk_of(b)) {
            let mut pipes: Vec<redis::Pipeline> =
                (0..self.conns.len()).map(|_| redis::pipe()).collect();
            for &slot in chunk {
                let symbol = (slot / frames) as SymbolId;
                let w = &work[slot];
                if let Some(latest) = w.forming.or(w.closed) {
                    self.last_features[slot] = Some(latest);
                }
                let pipe = &mut pipes[self.conn_for(symbol)];
                updates += self.queue_slot(slot, w, pipe, now);
            }
            for (pipe, mut conn) in pipes.into_iter().zip(self.conns.clone()) {
                if pipe.cmd_iter().next().is_none() {
                    continue;
                }
                // No retry here: a pipeline that failed half-way may have been applied in part,
                // and sending it again would push bars twice. A failure marks the sink out of
                // sync, and the reconcile that follows (on the manager's new connection) rewrites
                // what is wrong from SQLite.
                sends.push(tokio::spawn(
                    async move { pipe.exec_async(&mut conn).await },
                ));
            }
            // Let the chunk reach the socket before encoding the next one.
            tokio::task::yield_now().await;
        }
        let results: Vec<Result<(), redis::RedisError>> = futures::future::join_all(sends)
            .await
            .into_iter()
            .map(|joined| {
                joined.unwrap_or_else(|e| {
                    Err(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "write task failed",
                        e.to_string(),
                    )))
                })
            })
            .collect();
        let ok = results.iter().all(Result::is_ok);
        for &slot in &touched {
            let w = &mut work[slot];
            if ok && w.last_ts.is_some() {
                self.ring_last[slot] = w.last_ts;
            }
            w.clear();
        }
        touched.clear();
        self.scratch = work;
        self.touched = touched;
        for result in results {
            result?;
        }
        for (slot, gap, bars) in revisions {
            self.revise(slot, gap, bars).await?;
        }
        self.metrics.redis_writes.add(updates);
        self.status
            .last_write_ms
            .store(self.clock.now_ms(), Ordering::Relaxed);
        self.metrics.redis_write_latency.record(started.elapsed());
        Ok(())
    }

    /// After a gap was filled: the ring rewritten from SQLite (the repaired bars are older than
    /// its last one, so they were not pushed), then the revision published.
    async fn revise(
        &mut self,
        slot: usize,
        gap: crate::model::Gap,
        bars: u32,
    ) -> Result<(), RedisError> {
        let frames = self.timeframes.len();
        let (symbol, tf) = ((slot / frames) as SymbolId, self.timeframes[slot % frames]);
        let mut conn = self.conns[self.conn_for(symbol)].clone();
        let ring = Ring {
            symbol,
            timeframe: tf,
            key: &self.slot_keys[slot].bars,
        };
        let last = self
            .reconciler
            .rewrite_ring(&mut conn, &ring, self.config.max_bars)
            .await?;
        self.ring_last[slot] = last;
        let msg = RevisionMsg {
            kind: "revision",
            symbol: self.symbols.name(symbol),
            timeframe: &self.tf_names[slot % frames],
            from_ts: gap.from_ts,
            to_ts: gap.to_ts,
            bars,
        };
        let _: () = redis::cmd("PUBLISH")
            .arg(&self.slot_keys[slot].events)
            .arg(encode(&msg))
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Queues one slot's writes (closed bars, features, live bar, events) on `pipe`; how many
    /// updates that is.
    fn queue_slot(&self, slot: usize, w: &SlotWork, pipe: &mut redis::Pipeline, now: i64) -> u64 {
        let frames = self.timeframes.len();
        let name = self.symbols.name((slot / frames) as SymbolId);
        let keys = &self.slot_keys[slot];
        let mut updates = 0;
        if !w.bars.is_empty() {
            pipe.cmd("RPUSH").arg(&keys.bars).arg(&w.bars).ignore();
            pipe.cmd("LTRIM")
                .arg(&keys.bars)
                .arg(-(self.config.max_bars as i64))
                .arg(-1)
                .ignore();
            for event in &w.events {
                pipe.cmd("PUBLISH").arg(&keys.events).arg(event).ignore();
            }
            updates += w.bars.len() as u64;
        }
        let latest = match (&w.forming, &w.closed) {
            (Some(f), _) => Some((f, true)),
            (None, Some(c)) => Some((c, false)),
            (None, None) => None,
        };
        if let Some(((record, features, tick_ms), forming)) = latest
            && w.closed_until.is_none()
        {
            let msg = FeaturesMsg {
                record,
                fields: NamedFeatures {
                    names: &self.names,
                    features,
                },
                forming,
                tick_ms: *tick_ms,
                age_ms: now - tick_ms,
                closed_until: None,
            };
            pipe.cmd("SET")
                .arg(&keys.features)
                .arg(encode(&msg))
                .arg("PX")
                .arg(self.config.features_ttl_ms)
                .ignore();
        }
        // Closed: the last features stay readable until the next open, marked closed.
        if let (Some(until), Some((record, features, tick_ms))) =
            (w.closed_until, &self.last_features[slot])
        {
            let msg = FeaturesMsg {
                record,
                fields: NamedFeatures {
                    names: &self.names,
                    features,
                },
                forming: false,
                tick_ms: *tick_ms,
                age_ms: now - tick_ms,
                closed_until: Some(until),
            };
            let ttl = (until - now).max(0) as u64 + self.config.features_ttl_ms;
            pipe.cmd("SET")
                .arg(&keys.features)
                .arg(encode(&msg))
                .arg("PX")
                .arg(ttl)
                .ignore();
            updates += 1;
        }
        if let Some((record, features, tick_ms)) = &w.forming {
            let bar = BarMsg::new(&record.bar, record.source, record.quality);
            pipe.cmd("SET").arg(&keys.live).arg(encode(&bar)).ignore();
            let event = EventMsg {
                kind: "features",
                symbol: name,
                timeframe: &self.tf_names[slot % frames],
                ts: record.bar.ts,
                tick_ms: *tick_ms,
                forming: true,
                bar,
                features: NamedFeatures {
                    names: &self.names,
                    features,
                },
            };
            pipe.cmd("PUBLISH")
                .arg(&keys.events)
                .arg(encode(&event))
                .ignore();
            updates += 1;
        }
        updates
    }
}
