/*!
Writing a run of batches to Redis, per symbol: one message for everything the run changed (all
timeframes' closed bars with their features, the forming bar alone) to the symbol's channel and
stream; per timeframe the closed bars onto the ring (`LTRIM` only once the ring is over its cap:
the sink knows each ring's length) and the newest bar and features as one value (coalescing,
counted). A market that closed gets its last features once more, marked closed. A tick goes out
as pipelines of up to [`CHUNK_SYMBOLS`] symbols, each sent as soon as it is encoded, on the
connection its symbols always use, so a symbol's keys are written in order; in a cluster a chunk
is one pipeline per master and connection, each with the symbols whose slot that master owns. A
filled gap (`revision`) has its ring rewritten through `store::reconcile`, then is announced.
*/

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde::ser::{SerializeMap, SerializeSeq, Serializer};

use super::codec::{
    BarMsg, BarWithFeatures, FeaturesMsg, FrameMsg, LiveMsg, Message, Metadata, RevisionData,
    STREAM_FIELD, encode_into,
};
use super::conn::publish_command;
use super::{RedisError, RedisSink, RedisSinkConfig, SymbolSlot};
use crate::model::{BarRecord, Event, FEATURE_COUNT, Features, SymbolId, TickBatch};
use crate::store::reconcile::Ring;
use crate::store::snapshot::NamedFeatures;

/// Symbols per pipeline chunk of a tick's write (about 1 000 commands with two timeframes).
const CHUNK_SYMBOLS: usize = 128;

/// A bar, the features after it, and the tick (Unix ms) that produced them.
type Latest = (BarRecord, Features, i64);

/// What one write does to one (symbol, timeframe).
#[derive(Default)]
pub(super) struct FrameWork {
    /// Open time of the newest bar in the ring once this write succeeds.
    last_ts: Option<i64>,
    /// Closed bars not yet in the ring, oldest first.
    closed: Vec<Latest>,
    forming: Option<Latest>,
    /// The market closed (until this time) in this write.
    closed_until: Option<i64>,
}

/// What one write does to one symbol.
#[derive(Default)]
pub(super) struct SymbolWork {
    touched: bool,
    /// The newest tick of the run that had something for this symbol.
    tick_ms: i64,
    frames: Vec<FrameWork>,
}

impl SymbolWork {
    fn clear(&mut self) {
        self.touched = false;
        self.tick_ms = 0;
        for f in &mut self.frames {
            f.last_ts = None;
            f.closed.clear();
            f.forming = None;
            f.closed_until = None;
        }
    }

    /// Marks it part of this write (taking up the rings' state), once.
    fn touch(&mut self, symbol: usize, slot: &SymbolSlot, touched: &mut Vec<usize>) {
        if self.touched {
            return;
        }
        self.touched = true;
        self.frames
            .resize_with(slot.frames.len(), FrameWork::default);
        for (w, f) in self.frames.iter_mut().zip(&slot.frames) {
            w.last_ts = f.ring_last;
        }
        touched.push(symbol);
    }

    /// Something for the symbol's message: a closed bar or a forming one.
    fn has_message(&self) -> bool {
        self.frames
            .iter()
            .any(|f| !f.closed.is_empty() || f.forming.is_some())
    }

    /// The source of the newest bar of the message.
    fn vendor(&self) -> Option<&'static str> {
        self.frames
            .iter()
            .find_map(|f| f.forming.as_ref().or(f.closed.last()).map(|l| l.0.source))
    }
}

/// What encoding needs besides the work: the names, as configured.
struct Names<'a> {
    features: &'a [String; FEATURE_COUNT],
    timeframes: &'a [String],
    config: &'a RedisSinkConfig,
}

impl RedisSink {
    /// Writes a run of batches: per symbol one message (pub/sub, and the stream unless it is
    /// off), per ring its new closed bars (one variadic `RPUSH`, an `LTRIM` only when over the
    /// cap), per timeframe only the newest bar and features. Public for the benches.
    ///
    /// # Errors
    /// The Redis error of a pipeline that failed (the sink then reconciles before writing on).
    pub async fn write(&mut self, batches: &[Arc<TickBatch>]) -> Result<(), RedisError> {
        let started = Instant::now();
        let now = self.clock.now_ms();
        let mut work = std::mem::take(&mut self.scratch);
        work.resize_with(self.slots.len(), SymbolWork::default);
        let mut touched = std::mem::take(&mut self.touched);
        let mut revisions = Vec::new();
        for batch in batches {
            for event in &batch.events {
                let (record, features, forming) = match event {
                    Event::Closed { record, features } => (record, features, false),
                    Event::Forming { record, features } => (record, features, true),
                    Event::Session { symbol, session } => {
                        let s = *symbol as usize;
                        let (Some(w), Some(slot)) = (work.get_mut(s), self.slots.get(s)) else {
                            continue;
                        };
                        w.touch(s, slot, &mut touched);
                        for f in &mut w.frames {
                            f.closed_until = (!session.open).then_some(session.until_ms);
                        }
                        continue;
                    }
                    Event::Revision {
                        symbol,
                        timeframe,
                        gap,
                        bars,
                    } => {
                        if let Some(frame) = self.frame_of(*timeframe) {
                            revisions.push((*symbol, frame, *gap, *bars));
                        }
                        continue;
                    }
                    Event::Rejected(_) | Event::Gap { .. } | Event::Liveness { .. } => continue,
                };
                let s = record.symbol as usize;
                let (Some(frame), Some(w), Some(slot)) = (
                    self.frame_of(record.timeframe),
                    work.get_mut(s),
                    self.slots.get(s),
                ) else {
                    continue;
                };
                w.touch(s, slot, &mut touched);
                w.tick_ms = w.tick_ms.max(batch.now_ms);
                let f = &mut w.frames[frame];
                if forming {
                    if f.forming
                        .replace((*record, *features, batch.now_ms))
                        .is_some()
                    {
                        self.metrics.redis_coalesced.inc();
                    }
                    continue;
                }
                if f.last_ts.is_some_and(|t| record.bar.ts <= t) {
                    continue; // already in the ring
                }
                f.last_ts = Some(record.bar.ts);
                // A forming update from an earlier batch is older than this closed bar.
                if f.forming
                    .as_ref()
                    .is_some_and(|(r, _, _)| r.bar.ts <= record.bar.ts)
                {
                    f.forming = None;
                }
                f.closed.push((*record, *features, batch.now_ms));
            }
        }
        touched.sort_unstable();
        // The tick goes out in chunks, each sent as soon as it is encoded: Redis works on one
        // chunk while the next is encoded, and the first symbols are visible after the first
        // chunk instead of after the whole tick. A symbol's keys are all in one chunk, so the
        // chunks need no order among themselves; the next write starts after all have answered.
        let names = Names {
            features: &self.names,
            timeframes: &self.tf_names,
            config: &self.config,
        };
        let mut updates = 0u64;
        let mut sends = Vec::new();
        let mut buf = Vec::with_capacity(4_096);
        for chunk in touched.chunk_by(|a, b| a / CHUNK_SYMBOLS == b / CHUNK_SYMBOLS) {
            // One pipeline per (master, connection), with a slot of that master to route it by.
            let owners = self.topology.owners();
            let mut pipes: Vec<(u16, redis::Pipeline)> = (0..self.conns.len() * owners)
                .map(|_| (0, redis::pipe()))
                .collect();
            for &s in chunk {
                let slot = self.slots[s].slot;
                let (route, pipe) =
                    &mut pipes[self.conn_for(s as SymbolId) * owners + self.topology.owner(slot)];
                *route = slot;
                let name = self.symbols.name(s as SymbolId);
                updates += queue_symbol(
                    &names,
                    name,
                    &mut self.slots[s],
                    &work[s],
                    pipe,
                    &mut buf,
                    now,
                );
            }
            for (i, (route, pipe)) in pipes.into_iter().enumerate() {
                if pipe.is_empty() {
                    continue;
                }
                let mut conn = self.conns[i / owners].clone();
                // No retry here: a pipeline that failed half-way may have been applied in part,
                // and sending it again would push bars twice. A failure marks the sink out of
                // sync, and the reconcile that follows (on the manager's new connection) rewrites
                // what is wrong from SQLite.
                sends.push(tokio::spawn(async move {
                    conn.send(route, pipe).await.map(drop)
                }));
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
        let max_bars = self.config.max_bars;
        for &s in &touched {
            let w = &mut work[s];
            for (f, slot) in w.frames.iter().zip(&mut self.slots[s].frames) {
                if ok && !f.closed.is_empty() {
                    slot.ring_last = f.last_ts;
                    slot.ring_len = (slot.ring_len + f.closed.len()).min(max_bars);
                }
            }
            w.clear();
        }
        touched.clear();
        self.scratch = work;
        self.touched = touched;
        for result in results {
            result?;
        }
        for (symbol, frame, gap, bars) in revisions {
            self.revise(symbol, frame, gap, bars).await?;
        }
        self.metrics.redis_writes.add(updates);
        self.status
            .last_write_ms
            .store(self.clock.now_ms(), Ordering::Relaxed);
        self.metrics.redis_write_latency.record(started.elapsed());
        Ok(())
    }

    /// After a gap was filled: the ring rewritten from SQLite (the repaired bars are older than
    /// its last one, so they were not pushed), then the revision announced.
    async fn revise(
        &mut self,
        symbol: SymbolId,
        frame: usize,
        gap: crate::model::Gap,
        bars: u32,
    ) -> Result<(), RedisError> {
        let mut conn = self.conns[self.conn_for(symbol)].clone();
        let Some(slot) = self.slots.get_mut(symbol as usize) else {
            return Ok(());
        };
        let ring = Ring {
            symbol,
            slot: slot.slot,
            timeframe: self.timeframes[frame],
            key: &slot.frames[frame].bars,
        };
        let (last, len) = self
            .reconciler
            .rewrite_ring(&mut conn, &ring, self.config.max_bars)
            .await?;
        slot.frames[frame].ring_last = last;
        slot.frames[frame].ring_len = len;
        if !announces(&self.config) {
            return Ok(());
        }
        slot.seq += 1;
        let msg = Message {
            channel: &slot.events,
            data_type: "revision",
            update_type: "snapshot",
            timestamp: self.clock.now_ms(),
            symbol: self.symbols.name(symbol),
            data: RevisionData {
                timeframe: &self.tf_names[frame],
                from_ts: gap.from_ts,
                to_ts: gap.to_ts,
                bars,
            },
            vendor: None,
            metadata: Metadata { vendor: None },
            seq: slot.seq,
        };
        let mut buf = Vec::with_capacity(256);
        encode_into(&mut buf, &msg);
        let mut pipe = redis::pipe();
        announce(&mut pipe, slot, &buf, &self.config);
        let _: () = pipe.query_async(&mut conn).await?;
        Ok(())
    }
}

/// Whether messages go anywhere: the pub/sub channel or the stream.
fn announces(config: &RedisSinkConfig) -> bool {
    config.pubsub || config.stream_maxlen > 0
}

/// `PUBLISH` a message on the symbol's channel (`SPUBLISH` in a cluster) and `XADD` it to its
/// stream, each unless it is off.
fn announce(pipe: &mut redis::Pipeline, slot: &SymbolSlot, msg: &[u8], config: &RedisSinkConfig) {
    if config.pubsub {
        pipe.cmd(publish_command(&config.target))
            .arg(&slot.events)
            .arg(msg)
            .ignore();
    }
    if config.stream_maxlen > 0 {
        pipe.cmd("XADD")
            .arg(&slot.stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(config.stream_maxlen)
            .arg("*")
            .arg(STREAM_FIELD)
            .arg(msg)
            .ignore();
    }
}

/// Queues one symbol's writes (closed bars, features, the message) on `pipe`; how many bar and
/// feature updates that is. `buf` is scratch space for the encodings.
fn queue_symbol(
    names: &Names<'_>,
    name: &str,
    slot: &mut SymbolSlot,
    w: &SymbolWork,
    pipe: &mut redis::Pipeline,
    buf: &mut Vec<u8>,
    now: i64,
) -> u64 {
    let max_bars = names.config.max_bars;
    let ttl_ms = names.config.features_ttl_ms;
    let mut updates = 0;
    for (f, keys) in w.frames.iter().zip(&mut slot.frames) {
        if !f.closed.is_empty() {
            pipe.cmd("RPUSH").arg(&keys.bars);
            for (record, _, _) in &f.closed {
                buf.clear();
                encode_into(
                    buf,
                    &BarMsg::new(&record.bar, record.source, record.quality),
                );
                pipe.arg(&buf[..]);
            }
            pipe.ignore();
            if keys.ring_len + f.closed.len() > max_bars {
                pipe.cmd("LTRIM")
                    .arg(&keys.bars)
                    .arg(-(max_bars as i64))
                    .arg(-1)
                    .ignore();
            }
            updates += f.closed.len() as u64;
        }
        let latest = match (&f.forming, f.closed.last()) {
            (Some(l), _) => Some((l, true)),
            (None, Some(l)) => Some((l, false)),
            (None, None) => None,
        };
        if let Some((l, _)) = latest {
            keys.last_features = Some(*l);
        }
        let (value, ttl) = match (latest, f.closed_until, &keys.last_features) {
            (Some(((record, features, tick_ms), forming)), None, _) => (
                FeaturesMsg {
                    record,
                    fields: NamedFeatures {
                        names: names.features,
                        features,
                    },
                    forming,
                    tick_ms: *tick_ms,
                    age_ms: now - tick_ms,
                    closed_until: None,
                },
                ttl_ms,
            ),
            // Closed: the last features stay readable until the next open, marked closed.
            (_, Some(until), Some((record, features, tick_ms))) => (
                FeaturesMsg {
                    record,
                    fields: NamedFeatures {
                        names: names.features,
                        features,
                    },
                    forming: false,
                    tick_ms: *tick_ms,
                    age_ms: now - tick_ms,
                    closed_until: Some(until),
                },
                (until - now).max(0) as u64 + ttl_ms,
            ),
            _ => continue,
        };
        buf.clear();
        encode_into(buf, &value);
        pipe.cmd("SET")
            .arg(&keys.features)
            .arg(&buf[..])
            .arg("PX")
            .arg(ttl)
            .ignore();
        updates += 1;
    }
    if w.has_message() && announces(names.config) {
        slot.seq += 1;
        let vendor = w.vendor();
        let msg = Message {
            channel: &slot.events,
            data_type: "tick",
            update_type: "snapshot",
            timestamp: w.tick_ms,
            symbol: name,
            data: TickData {
                names,
                frames: &w.frames,
            },
            vendor,
            metadata: Metadata { vendor },
            seq: slot.seq,
        };
        buf.clear();
        encode_into(buf, &msg);
        announce(pipe, slot, buf, names.config);
    }
    updates
}

/// A tick message's `data`: per timeframe that changed, `{closed: [{bar, features}…], live: {bar}}`.
struct TickData<'a> {
    names: &'a Names<'a>,
    frames: &'a [FrameWork],
}

impl serde::Serialize for TickData<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let changed = |f: &&FrameWork| !f.closed.is_empty() || f.forming.is_some();
        let mut map = s.serialize_map(Some(self.frames.iter().filter(changed).count()))?;
        for (f, tf) in self.frames.iter().zip(self.names.timeframes) {
            if !changed(&f) {
                continue;
            }
            let frame = FrameMsg {
                closed: ClosedBars {
                    bars: &f.closed,
                    names: self.names.features,
                },
                live: f.forming.as_ref().map(|(record, _, _)| LiveMsg {
                    bar: BarMsg::new(&record.bar, record.source, record.quality),
                }),
            };
            map.serialize_entry(tf.as_str(), &frame)?;
        }
        map.end()
    }
}

/// The closed bars of a timeframe, each with its features.
struct ClosedBars<'a> {
    bars: &'a [Latest],
    names: &'a [String; FEATURE_COUNT],
}

impl serde::Serialize for ClosedBars<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.bars.len()))?;
        for l in self.bars {
            seq.serialize_element(&with_features(l, self.names))?;
        }
        seq.end()
    }
}

fn with_features<'a>(
    (record, features, _): &'a Latest,
    names: &'a [String; FEATURE_COUNT],
) -> BarWithFeatures<'a> {
    BarWithFeatures {
        bar: BarMsg::new(&record.bar, record.source, record.quality),
        features: NamedFeatures { names, features },
    }
}
