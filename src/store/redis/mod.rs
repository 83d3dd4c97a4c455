/*!
The Redis sink: the bot's knowledge base (the key layout is in `codec.rs` and the README).

It receives each batch from `store::writer` after SQLite has taken it, through its own bounded
queue, and writes it (`write.rs`) on `REDIS_POOL_SIZE` connections. When it falls behind it takes
every queued batch at once (up to [`MAX_COALESCE`]) and coalesces the live bars and features.

Nothing lost, nothing duplicated: this module never reads SQLite. Whenever the rings may differ
from what they should hold — before the first write, after Redis was unreachable or a write
failed, when the writer could not queue a batch or history was stored among the newest bars (a
[`Resync`](crate::store::reconcile::Resync) request) — it stops writing and has
`store::reconcile` make every ring equal to SQLite's newest bars first. While reconciled, a
closed bar at or before a ring's last bar is not pushed again.

Per tick it writes, per symbol, one message (all timeframes' closed bars with their features,
and the forming bars) to the symbol's pub/sub channel and, unless `REDIS_STREAM_MAXLEN` is 0, to its
stream; per timeframe the closed bars onto the ring (trimmed only once it is over its cap) and
the features value. Everything the sink keeps per symbol is one [`SymbolSlot`].

Rooms: this file holds the task (connect, reconnect pacing, the receive loop, `/health` state);
`conn.rs` the connection (one Redis or a cluster) and which master a pipeline goes to; `codec.rs`
the keys and MessagePack values; `write.rs` the pipelined writes.

In a cluster (`REDIS_CLUSTER_NODES`) every pipeline goes to one master, with the keys of the
slots it owns (a symbol's keys share a slot: their hash tag); messages are published with
`SPUBLISH`; earlier layouts' keys are looked for on every master. Any failure — a master gone, a
slot moved — is handled like a lost connection: the connections are opened again (reading the
topology again) and every ring is reconciled from history, since a write the old master
acknowledged may not have reached the replica that took over.
*/

pub mod codec;
pub(in crate::store) mod conn;
mod write;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use self::codec::Keys;
use self::conn::{Conn, Topology, key_slot};
use self::write::SymbolWork;
use crate::clock::Clock;
use crate::env::redact_url;
use crate::metrics::Metrics;
use crate::model::{
    BarRecord, FEATURE_COUNT, Features, RedisTarget, SymbolId, SymbolTable, TickBatch, Timeframe,
};
use crate::store::history::StoreError;
use crate::store::reconcile::{Reconciler, Ring};

/// Reconnect pacing: the first retry, the steady retry to a server on this machine, and the
/// longest wait for a remote one (or one refusing the password).
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_LOCAL: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Whether Redis refused the credentials (retrying fast would not help).
fn is_auth_error(e: &RedisError) -> bool {
    matches!(e, RedisError::Redis(r) if r.kind() == redis::ErrorKind::AuthenticationFailed
        || r.code().is_some_and(|c| c == "WRONGPASS" || c == "NOAUTH"))
}

/// Whether a Redis URL points at this machine (a unix socket or a loopback address).
fn is_local(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once("://") else {
        return false;
    };
    if scheme.starts_with("unix") || scheme == "redis+unix" {
        return true;
    }
    let host_port = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host_port = host_port.split('/').next().unwrap_or_default();
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        host_port.rsplit_once(':').map_or(host_port, |(h, _)| h)
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Batches taken at once when the sink is behind.
const MAX_COALESCE: usize = 64;

/// Why a Redis operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Connection state shown in `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RedisState {
    Connecting = 0,
    Up = 1,
    Down = 2,
}

/// Shared view of the sink for `/health` and metrics.
#[derive(Debug, Default)]
pub struct RedisStatus {
    state: AtomicU8,
    last_write_ms: AtomicI64,
    last_error: Mutex<Option<String>>,
    /// `standalone` or `cluster`, the URLs configured (passwords hidden), and the masters found.
    mode: Mutex<(&'static str, Vec<String>)>,
    masters: Mutex<Vec<String>>,
}

impl RedisStatus {
    pub fn state(&self) -> RedisState {
        match self.state.load(Ordering::Relaxed) {
            1 => RedisState::Up,
            2 => RedisState::Down,
            _ => RedisState::Connecting,
        }
    }

    fn set(&self, state: RedisState, error: Option<String>) {
        self.state.store(state as u8, Ordering::Relaxed);
        if error.is_some() || state == RedisState::Up {
            *self.last_error.lock() = error;
        }
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }

    /// `standalone` or `cluster`, and the configured URLs (passwords hidden).
    pub fn mode(&self) -> (&'static str, Vec<String>) {
        self.mode.lock().clone()
    }

    /// The cluster's masters (`host:port`) as last read; empty on a single Redis.
    pub fn masters(&self) -> Vec<String> {
        self.masters.lock().clone()
    }

    /// Unix ms of the last successful write, 0 if none.
    pub fn last_write_ms(&self) -> i64 {
        self.last_write_ms.load(Ordering::Relaxed)
    }
}

/// Settings of the sink.
#[derive(Debug, Clone)]
pub struct RedisSinkConfig {
    pub target: RedisTarget,
    pub pool_size: usize,
    pub prefix: String,
    pub max_bars: usize,
    pub features_ttl_ms: u64,
    /// Entries kept per symbol's stream (`XADD … MAXLEN ~ N`); 0: no stream.
    pub stream_maxlen: usize,
    /// Whether messages are published on the pub/sub channels (`REDIS_PUBSUB`).
    pub pubsub: bool,
    /// This instance's shard: the keys of earlier layouts it removes are those of the symbols
    /// it owns.
    pub shard: crate::shard::Shard,
}

/// Everything the sink keeps about one symbol: its names and, per timeframe, its ring's state.
/// A symbol added at run time is one more of these.
pub(super) struct SymbolSlot {
    /// The Redis Cluster slot of all its keys (their hash tag is the symbol).
    pub(super) slot: u16,
    /// The pub/sub channel and the stream.
    pub(super) events: String,
    pub(super) stream: String,
    /// The `seq` of this symbol's last message (0 before the first).
    pub(super) seq: u64,
    pub(super) frames: Vec<FrameSlot>,
}

/// One (symbol, timeframe): its keys and what its ring holds.
pub(super) struct FrameSlot {
    pub(super) bars: String,
    pub(super) features: String,
    /// Open time of the ring's last bar and its length, valid while the sink is synced.
    pub(super) ring_last: Option<i64>,
    pub(super) ring_len: usize,
    /// The last features written, to write again when the market closes.
    pub(super) last_features: Option<(BarRecord, Features, i64)>,
}

impl SymbolSlot {
    fn new(keys: &Keys, name: &str, timeframes: &[Timeframe]) -> Self {
        let events = keys.events(name);
        Self {
            slot: key_slot(&events),
            events,
            stream: keys.stream(name),
            seq: 0,
            frames: timeframes
                .iter()
                .map(|&tf| FrameSlot {
                    bars: keys.bars(name, tf),
                    features: keys.features(name, tf),
                    ring_last: None,
                    ring_len: 0,
                    last_features: None,
                })
                .collect(),
        }
    }
}

/// The Redis writer task and its state.
pub struct RedisSink {
    config: RedisSinkConfig,
    conns: Vec<Conn>,
    /// Which master owns each slot (one owner of all on a single Redis).
    topology: Topology,
    symbols: SymbolTable,
    timeframes: Vec<Timeframe>,
    tf_names: Vec<String>,
    names: [String; FEATURE_COUNT],
    reconciler: Reconciler,
    status: Arc<RedisStatus>,
    metrics: Arc<Metrics>,
    clock: Clock,
    /// Redis runs on this machine (unix socket or loopback): reconnects need no backoff.
    local: bool,
    synced: bool,
    /// Per symbol, by id.
    slots: Vec<SymbolSlot>,
    /// Per-symbol work of the write in progress, kept between writes so they do not allocate.
    scratch: Vec<SymbolWork>,
    touched: Vec<usize>,
    /// Once per process: earlier layouts' keys removed, and each symbol's `seq` taken up from
    /// its stream.
    started: bool,
}

impl RedisSink {
    /// # Errors
    /// A URL the redis client cannot use (`REDIS_URL`; the cluster's nodes are checked when
    /// connecting).
    #[allow(clippy::too_many_arguments, reason = "wired once by app::run")]
    pub fn new(
        config: RedisSinkConfig,
        symbols: SymbolTable,
        timeframes: Vec<Timeframe>,
        names: [String; FEATURE_COUNT],
        reconciler: Reconciler,
        status: Arc<RedisStatus>,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Result<Self, RedisError> {
        let local = match &config.target {
            RedisTarget::Standalone(url) => {
                redis::Client::open(url.as_str())?;
                is_local(url)
            }
            RedisTarget::Cluster(nodes) => nodes.iter().all(|n| is_local(n)),
        };
        let shown = config.target.urls().iter().map(|u| redact_url(u)).collect();
        *status.mode.lock() = (config.target.mode(), shown);
        let mut sink = Self {
            conns: Vec::new(),
            topology: Topology::default(),
            tf_names: timeframes.iter().map(ToString::to_string).collect(),
            symbols,
            timeframes,
            names,
            reconciler,
            status,
            metrics,
            clock,
            synced: false,
            slots: Vec::new(),
            scratch: Vec::new(),
            touched: Vec::new(),
            started: false,
            local,
            config,
        };
        sink.grow();
        Ok(sink)
    }

    /// Gives every symbol of the table its slots (those added at run time arrive here with
    /// their first batch). Returns whether there were new ones: their rings are then
    /// reconciled with SQLite like the others before anything is written to them.
    fn grow(&mut self) -> bool {
        if self.slots.len() >= self.symbols.len() {
            return false;
        }
        let keys = Keys::new(&self.config.prefix);
        for id in self.slots.len()..self.symbols.len() {
            let name = self.symbols.name(id as SymbolId);
            self.slots
                .push(SymbolSlot::new(&keys, name, &self.timeframes));
        }
        true
    }

    /// Connects, reconciles and writes until the channel closes (`store::writer` has stopped)
    /// or, while Redis is unreachable, until `shutdown`.
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<Arc<TickBatch>>,
        shutdown: CancellationToken,
    ) {
        let mut backoff = RETRY_MIN;
        let mut batches: Vec<Arc<TickBatch>> = Vec::with_capacity(MAX_COALESCE);
        loop {
            if !self.synced {
                match self.connect_and_reconcile().await {
                    Ok(()) => backoff = RETRY_MIN,
                    Err(e) => {
                        // A refused connection to a server on this machine costs nothing to
                        // try again: retry at a steady pace, so writes resume within about a
                        // tick of Redis answering again. A remote server, or a wrong password,
                        // is asked less and less often.
                        let steady = self.local && !is_auth_error(&e);
                        backoff = if steady {
                            RETRY_LOCAL
                        } else {
                            (backoff * 2).min(RETRY_MAX)
                        };
                        self.fail(&e);
                        // Batches that arrive meanwhile are in SQLite; the next reconcile
                        // restores them. Drain so the queue does not fill.
                        let sleep = tokio::time::sleep(backoff);
                        tokio::pin!(sleep);
                        loop {
                            tokio::select! {
                                () = &mut sleep => break,
                                _ = shutdown.cancelled() => return,
                                batch = rx.recv() => if batch.is_none() { return },
                            }
                        }
                        continue;
                    }
                }
            }
            batches.clear();
            match rx.recv().await {
                Some(b) => batches.push(b),
                None => return,
            }
            while batches.len() < MAX_COALESCE {
                match rx.try_recv() {
                    Ok(b) => batches.push(b),
                    Err(_) => break,
                }
            }
            self.metrics
                .redis_queue_depth
                .set((rx.max_capacity() - rx.capacity()) as i64);
            // A symbol added at run time: its rings are reconciled before the first write
            // (the batches are in SQLite, which the reconcile reads).
            if self.reconciler.requested() || self.grow() {
                self.synced = false;
                continue;
            }
            if let Err(e) = self.write(&batches).await {
                self.fail(&e);
            }
        }
    }

    fn fail(&mut self, e: &RedisError) {
        self.synced = false;
        self.metrics.redis_errors.inc();
        let first = self.status.state() != RedisState::Down;
        self.status.set(RedisState::Down, Some(e.to_string()));
        if first {
            tracing::warn!(error = %e, "Redis unavailable; bars keep going to SQLite and will be backfilled");
        } else {
            tracing::debug!(error = %e, "Redis still unavailable");
        }
    }

    fn frame_of(&self, tf: Timeframe) -> Option<usize> {
        self.timeframes.iter().position(|&t| t == tf)
    }

    fn conn_for(&self, symbol: SymbolId) -> usize {
        symbol as usize % self.conns.len().max(1)
    }

    /// Connects and reconciles before the pipeline starts, so bars that only Redis kept (after
    /// a crash) reach SQLite before the indicators warm up from it. If Redis cannot be reached
    /// within `timeout`, start-up goes on and [`Self::run`] keeps trying.
    pub async fn start(&mut self, timeout: Duration) {
        match tokio::time::timeout(timeout, self.connect_and_reconcile()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.fail(&e),
            Err(_) => self.fail(&RedisError::Redis(redis::RedisError::from((
                redis::ErrorKind::Io,
                "no answer",
                format!("within {timeout:?}"),
            )))),
        }
    }

    async fn connect_and_reconcile(&mut self) -> Result<(), RedisError> {
        let cluster = matches!(self.config.target, RedisTarget::Cluster(_));
        let failed = self.status.state() == RedisState::Down;
        if !self.conns.is_empty() && failed {
            // After a failure; a resync asked for while Redis was up is no reconnect.
            self.metrics.redis_reconnects.inc();
        }
        // A single Redis's managers reconnect by themselves. A cluster's connections are opened
        // again after any failure, so the slots' owners are read afresh (a replica promoted,
        // a slot moved) before the rings are compared.
        if self.conns.is_empty() || (cluster && failed) {
            let (conns, topology) =
                Conn::open(&self.config.target, self.config.pool_size, self.local).await?;
            if cluster && topology.masters() != self.topology.masters() {
                tracing::info!(masters = ?topology.masters(), "Redis Cluster topology read");
            }
            *self.status.masters.lock() = topology.masters();
            self.conns = conns;
            self.topology = topology;
        }
        // A PING proves the connection (and the password) before the reconcile.
        let _: String = redis::cmd("PING").query_async(&mut self.conns[0]).await?;
        if !self.started {
            self.remove_old_keys().await?;
            self.take_up_seqs().await?;
            self.started = true;
        }
        let started = Instant::now();
        let (kept, rewritten) = self.reconcile().await?;
        self.synced = true;
        self.status.set(RedisState::Up, None);
        tracing::info!(
            kept,
            rewritten,
            took_ms = started.elapsed().as_millis() as u64,
            "Redis rings reconciled with SQLite"
        );
        Ok(())
    }

    /// Removes the keys of earlier layouts (before hash tags, `barkeep:bars:EURUSD:1m`; and
    /// the live bar, now in the features value) of the symbols this shard owns, found by
    /// `SCAN` under the prefix: nothing else is touched (not another prefix, not another
    /// shard's symbols, not a key of another shape).
    /// In a cluster every master is scanned (each holds only its slots' keys) and the keys
    /// found are unlinked one slot at a time (the keys of one `UNLINK` must share a slot).
    async fn remove_old_keys(&mut self) -> Result<(), RedisError> {
        let keys = Keys::new(&self.config.prefix);
        let conn = &mut self.conns[0];
        let mut removed = 0usize;
        for master in 0..self.topology.owners() {
            let on = self.topology.slot_of(master);
            for kind in codec::OLD_KINDS {
                let pattern = keys.scan_pattern(kind);
                let mut cursor = 0u64;
                loop {
                    let mut scan = redis::cmd("SCAN");
                    scan.arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1_000);
                    let (next, found): (u64, Vec<String>) =
                        redis::from_redis_value(conn.send_cmd(on, &scan).await?)
                            .map_err(redis::RedisError::from)?;
                    let mut doomed: Vec<(u16, &String)> = found
                        .iter()
                        .filter(|key| {
                            keys.old_symbol(kind, key)
                                .is_some_and(|symbol| self.config.shard.owns(symbol))
                        })
                        .map(|key| (key_slot(key), key))
                        .collect();
                    doomed.sort_unstable();
                    for same_slot in doomed.chunk_by(|a, b| a.0 == b.0) {
                        let mut unlink = redis::cmd("UNLINK");
                        for (_, key) in same_slot {
                            unlink.arg(key);
                        }
                        let n: usize =
                            redis::from_redis_value(conn.send_cmd(same_slot[0].0, &unlink).await?)
                                .map_err(redis::RedisError::from)?;
                        removed += n;
                    }
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
        }
        if removed > 0 {
            tracing::info!(
                removed,
                "Redis: removed the keys of the previous layout (now barkeep:bars:{{SYMBOL}}:TF)"
            );
        }
        Ok(())
    }

    /// Each symbol's `seq` goes on from the last message its stream holds, so a reader sees
    /// one sequence across restarts.
    async fn take_up_seqs(&mut self) -> Result<(), RedisError> {
        if self.config.stream_maxlen == 0 || self.slots.is_empty() {
            return Ok(());
        }
        let answers = self.conns[0]
            .per_owner(
                &self.topology,
                &self.slots,
                |s| s.slot,
                1,
                |pipe, s| {
                    pipe.cmd("XREVRANGE")
                        .arg(&s.stream)
                        .arg("+")
                        .arg("-")
                        .arg("COUNT")
                        .arg(1);
                },
            )
            .await?;
        for (slot, reply) in self.slots.iter_mut().zip(&answers) {
            slot.seq = slot.seq.max(codec::last_entry_seq(reply).unwrap_or(0));
        }
        Ok(())
    }

    /// Has `store::reconcile` make every ring equal to the newest `MAX_BARS_CACHE` closed bars
    /// SQLite knows; returns how many rings were kept and how many rewritten.
    async fn reconcile(&mut self) -> Result<(usize, usize), RedisError> {
        let rings: Vec<Ring<'_>> = self
            .slots
            .iter()
            .enumerate()
            .flat_map(|(symbol, slot)| {
                slot.frames
                    .iter()
                    .zip(&self.timeframes)
                    .map(move |(frame, &timeframe)| Ring {
                        symbol: symbol as SymbolId,
                        slot: slot.slot,
                        timeframe,
                        key: &frame.bars,
                    })
            })
            .collect();
        let mut conn = self.conns[0].clone();
        let done = self
            .reconciler
            .reconcile(&mut conn, &self.topology, &rings, self.config.max_bars)
            .await?;
        drop(rings);
        let frames = self.slots.iter_mut().flat_map(|s| s.frames.iter_mut());
        for (frame, (last, len)) in frames.zip(done.rings) {
            frame.ring_last = last;
            frame.ring_len = len;
        }
        Ok((done.kept, done.rewritten))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_servers_are_told_from_remote_ones() {
        for url in [
            "redis://127.0.0.1:6379/0",
            "redis://:pw@localhost:6380",
            "redis://user:p@ss@127.0.0.2",
            "redis://[::1]:6379",
            "unix:///run/redis.sock",
            "redis+unix:///tmp/r.sock?db=1",
        ] {
            assert!(is_local(url), "{url}");
        }
        for url in [
            "redis://10.0.0.5:6379",
            "rediss://cache.example.com:6380",
            "redis://[2001:db8::1]:6379",
            "redis//:pw@host",
        ] {
            assert!(!is_local(url), "{url}");
        }
    }
}
