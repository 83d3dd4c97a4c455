/*!
The Redis sink: the bot's knowledge base.

Keys (prefix `REDIS_KEY_PREFIX`, values MessagePack maps with named fields):
- `{prefix}:bars:{SYMBOL}:{TF}` — the newest `MAX_BARS_CACHE` closed bars, oldest first
  (`RPUSH` + `LTRIM`); a bar is `{ts, open, high, low, close, volume, source, quality}`.
- `{prefix}:live:{SYMBOL}:{TF}` — the forming bar, overwritten each tick.
- `{prefix}:features:{SYMBOL}:{TF}` — `{ts, age_ms, forming, tick_ms, close, source, quality,
  session, next_open_ms, <indicator names>}`, with a TTL so a dead sidecar's features expire
  instead of lying. When the symbol's market closes, the last features are written once more
  with `session: "closed"` and `next_open_ms`, to live until the next open.
- `PUBLISH {prefix}:events:{SYMBOL}` — `{type: "bar" | "features", symbol, timeframe, ts,
  tick_ms, forming, bar, features}` per closed bar and per forming-bar update, and `{type:
  "revision", symbol, timeframe, from_ts, to_ts, bars}` when a gap was filled after the fact
  (its ring is then rewritten from SQLite, so it holds the repaired bars in order).

Each batch is written as pipelines of up to 128 symbols, each sent as soon as it is encoded, on
`REDIS_POOL_SIZE` connections (a symbol always uses the same one, so its keys are written in
order). When the sink falls behind it takes every queued batch at once and writes closed bars in
full but only the newest live bar and features per key (coalescing, counted).

Nothing lost, nothing duplicated: batches reach this sink only after the SQLite writer holds
them, so SQLite (flushed or buffered) is always a superset of what the rings should hold. After
any failure — Redis down at start, a dropped connection, a write error, batches skipped because
this queue was full — every ring is reconciled with SQLite before writing resumes: a ring that
matches (length, first and last bar) is kept, one that is behind, partial or broken is rewritten
atomically from SQLite, and one that is *ahead* of SQLite (bars Redis got but SQLite lost in a
crash) first gives those bars to SQLite. While reconciled, a closed bar at or before a ring's
last bar is not pushed again.
*/

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::ser::{SerializeMap, Serializer};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::indicators::{FEATURE_COUNT, Features};
use crate::metrics::Metrics;
use crate::model::{Bar, SymbolId, SymbolTable, Timeframe};
use crate::pipeline::{BarRecord, Event};
use crate::store::TickBatch;
use crate::store::snapshot::NamedFeatures;
use crate::store::sqlite::{SqliteStore, StoreError, StoredBar};

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

/// Symbols per pipeline chunk of a tick's write (about 1 000 commands with two timeframes).
const CHUNK_SYMBOLS: usize = 128;

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

    /// Unix ms of the last successful write, 0 if none.
    pub fn last_write_ms(&self) -> i64 {
        self.last_write_ms.load(Ordering::Relaxed)
    }
}

/// Key names for one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }
    pub fn bars(&self, symbol: &str, tf: Timeframe) -> String {
        format!("{}:bars:{symbol}:{tf}", self.prefix)
    }
    pub fn live(&self, symbol: &str, tf: Timeframe) -> String {
        format!("{}:live:{symbol}:{tf}", self.prefix)
    }
    pub fn features(&self, symbol: &str, tf: Timeframe) -> String {
        format!("{}:features:{symbol}:{tf}", self.prefix)
    }
    pub fn events(&self, symbol: &str) -> String {
        format!("{}:events:{symbol}", self.prefix)
    }
}

/// A bar as written to Redis.
#[derive(serde::Serialize)]
struct BarMsg<'a> {
    ts: i64,
    open: f64,
    high: f64,
    low: f64,
    close: f64,
    volume: f64,
    source: &'a str,
    quality: f64,
}

impl<'a> BarMsg<'a> {
    fn new(bar: &Bar, source: &'a str, quality: f64) -> Self {
        Self {
            ts: bar.ts,
            open: bar.open,
            high: bar.high,
            low: bar.low,
            close: bar.close,
            volume: bar.volume,
            source,
            quality,
        }
    }
}

/// The features key's value: a flat map, so a reader needs no schema.
struct FeaturesMsg<'a> {
    record: &'a BarRecord,
    fields: NamedFeatures<'a>,
    forming: bool,
    tick_ms: i64,
    age_ms: i64,
    /// `Some(next open)` once the market has closed.
    closed_until: Option<i64>,
}

impl serde::Serialize for FeaturesMsg<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(9 + FEATURE_COUNT))?;
        map.serialize_entry("ts", &self.record.bar.ts)?;
        map.serialize_entry("age_ms", &self.age_ms)?;
        map.serialize_entry("forming", &self.forming)?;
        map.serialize_entry("tick_ms", &self.tick_ms)?;
        map.serialize_entry("close", &self.record.bar.close)?;
        map.serialize_entry("source", self.record.source)?;
        map.serialize_entry("quality", &self.record.quality)?;
        let session = if self.closed_until.is_some() {
            "closed"
        } else {
            "open"
        };
        map.serialize_entry("session", session)?;
        map.serialize_entry("next_open_ms", &self.closed_until)?;
        for (name, v) in self.fields.names.iter().zip(self.fields.features.values) {
            map.serialize_entry(name, &v.is_finite().then_some(v))?;
        }
        map.end()
    }
}

/// The pub/sub message.
#[derive(serde::Serialize)]
struct EventMsg<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    symbol: &'a str,
    timeframe: &'a str,
    ts: i64,
    tick_ms: i64,
    forming: bool,
    bar: BarMsg<'a>,
    features: NamedFeatures<'a>,
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Sized for a features map up front: growing the Vec showed up in profiles (realloc).
    let mut buf = Vec::with_capacity(512);
    // Serialising plain maps of numbers and strings into a Vec cannot fail.
    let _ = rmp_serde::encode::write_named(&mut buf, value);
    buf
}

/// The keys of one (symbol, timeframe), built once: formatting them per write was a visible
/// share of the allocations at 10 000 symbols.
struct SlotKeys {
    bars: String,
    live: String,
    features: String,
    events: String,
}

/// Settings of the sink.
#[derive(Debug, Clone)]
pub struct RedisSinkConfig {
    pub url: String,
    pub pool_size: usize,
    pub prefix: String,
    pub max_bars: usize,
    pub features_ttl_ms: u64,
}

/// The Redis writer task and its state.
pub struct RedisSink {
    config: RedisSinkConfig,
    keys: Keys,
    client: redis::Client,
    conns: Vec<ConnectionManager>,
    symbols: SymbolTable,
    timeframes: Vec<Timeframe>,
    tf_names: Vec<String>,
    names: [String; FEATURE_COUNT],
    store: Arc<SqliteStore>,
    status: Arc<RedisStatus>,
    metrics: Arc<Metrics>,
    resync: Arc<AtomicBool>,
    clock: Clock,
    /// Redis runs on this machine (unix socket or loopback): reconnects need no backoff.
    local: bool,
    /// Open time of the last bar in each ring (`symbol * timeframes + frame`), valid while
    /// `synced`.
    ring_last: Vec<Option<i64>>,
    synced: bool,
    /// Per-slot work of the write in progress, kept between writes so they do not allocate.
    scratch: Vec<SlotWork>,
    touched: Vec<usize>,
    /// Key names per slot.
    slot_keys: Vec<SlotKeys>,
    /// The last features written per slot, to write again when the market closes.
    last_features: Vec<Option<(BarRecord, Features, i64)>>,
}

/// What one write does to one (symbol, timeframe).
#[derive(Default)]
struct SlotWork {
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
    fn clear(&mut self) {
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
    /// # Errors
    /// A URL the redis client cannot use.
    #[allow(clippy::too_many_arguments, reason = "wired once by app::run")]
    pub fn new(
        config: RedisSinkConfig,
        symbols: SymbolTable,
        timeframes: Vec<Timeframe>,
        names: [String; FEATURE_COUNT],
        store: Arc<SqliteStore>,
        status: Arc<RedisStatus>,
        metrics: Arc<Metrics>,
        resync: Arc<AtomicBool>,
        clock: Clock,
    ) -> Result<Self, RedisError> {
        // Small pipelined writes must not wait for Nagle's algorithm: with it a 1 000-symbol tick
        // took 26 ms instead of 10 (measured with examples/loadtest.rs).
        let info = redis::IntoConnectionInfo::into_connection_info(config.url.as_str())?
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        let client = redis::Client::open(info)?;
        let keys = Keys::new(&config.prefix);
        let slot_keys = symbols
            .iter()
            .flat_map(|(_, name)| {
                let keys = &keys;
                timeframes.iter().map(move |&tf| SlotKeys {
                    bars: keys.bars(name, tf),
                    live: keys.live(name, tf),
                    features: keys.features(name, tf),
                    events: keys.events(name),
                })
            })
            .collect();
        let slots = symbols.len() * timeframes.len();
        Ok(Self {
            keys,
            client,
            conns: Vec::new(),
            tf_names: timeframes.iter().map(ToString::to_string).collect(),
            symbols,
            timeframes,
            names,
            store,
            status,
            metrics,
            resync,
            clock,
            ring_last: vec![None; slots],
            synced: false,
            scratch: Vec::new(),
            touched: Vec::new(),
            slot_keys,
            last_features: vec![None; slots],
            local: is_local(&config.url),
            config,
        })
    }

    /// Connects, reconciles and writes until the channel closes (the SQLite writer has
    /// stopped) or, while Redis is unreachable, until `shutdown`.
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
            if self.resync.swap(false, Ordering::AcqRel) {
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

    fn slot(&self, symbol: SymbolId, tf: Timeframe) -> Option<usize> {
        let frame = self.timeframes.iter().position(|&t| t == tf)?;
        Some(symbol as usize * self.timeframes.len() + frame)
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
        if self.conns.is_empty() {
            // The manager's own retries after a dropped connection: short on this machine, so a
            // restarted local Redis is written to again within about a tick.
            let (retries, max_delay) = if self.local {
                (1, RETRY_LOCAL)
            } else {
                (2, Duration::from_secs(2))
            };
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(Some(Duration::from_secs(5)))
                .set_number_of_retries(retries)
                .set_max_delay(max_delay);
            let mut conns = Vec::with_capacity(self.config.pool_size);
            for _ in 0..self.config.pool_size {
                conns.push(
                    ConnectionManager::new_with_config(self.client.clone(), config.clone()).await?,
                );
            }
            self.conns = conns;
        } else {
            self.metrics.redis_reconnects.inc();
        }
        // A PING proves the connection (and the password) before the reconcile.
        let _: String = redis::cmd("PING").query_async(&mut self.conns[0]).await?;
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

    /// Makes every ring equal to the newest `max_bars` closed bars SQLite knows; returns how
    /// many rings were kept and how many rewritten.
    async fn reconcile(&mut self) -> Result<(usize, usize), RedisError> {
        let n = self.config.max_bars;
        let mut pairs = Vec::with_capacity(self.ring_last.len());
        for (symbol, name) in self.symbols.iter() {
            for &tf in &self.timeframes {
                pairs.push((symbol, tf, self.keys.bars(name, tf)));
            }
        }
        // What Redis has: length, first and last bar of every ring, in one round trip.
        let mut pipe = redis::pipe();
        for (_, _, key) in &pairs {
            pipe.cmd("LLEN")
                .arg(key)
                .cmd("LINDEX")
                .arg(key)
                .arg(0)
                .cmd("LINDEX")
                .arg(key)
                .arg(-1);
        }
        let mut conn = self.conns[0].clone();
        let answers: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
        let (mut kept, mut rewritten) = (0, 0);
        for (i, (symbol, tf, key)) in pairs.iter().enumerate() {
            let len = match &answers[3 * i] {
                redis::Value::Int(n) => *n as usize,
                _ => 0,
            };
            let first = decode_ts(&answers[3 * i + 1], key);
            let last = decode_ts(&answers[3 * i + 2], key);
            let mut want = self.summary(*symbol, *tf, n).await?;
            if let (Some(ring_last), true) = (last, last > want.last_ts) {
                // The ring is ahead of SQLite: keep what only Redis saw.
                let recovered = self
                    .recover_from_ring(&mut conn, *symbol, *tf, key, want.last_ts)
                    .await?;
                self.metrics.redis_recovered_bars.add(recovered as u64);
                tracing::warn!(key = %key, recovered, ring_last, "Redis ring was ahead of SQLite; bars copied into SQLite");
                want = self.summary(*symbol, *tf, n).await?;
            }
            let slot = self.slot(*symbol, *tf).unwrap_or_default();
            if len == want.len && first == want.first_ts && last == want.last_ts {
                kept += 1;
            } else {
                self.rewrite_ring(&mut conn, *symbol, *tf, key).await?;
                rewritten += 1;
            }
            self.ring_last[slot] = want.last_ts;
        }
        Ok((kept, rewritten))
    }

    /// After a gap was filled: the ring rewritten from SQLite (the repaired bars are older than
    /// its last one, so they were not pushed), then the revision published.
    async fn revise(
        &mut self,
        slot: usize,
        gap: crate::bars::Gap,
        bars: u32,
    ) -> Result<(), RedisError> {
        let frames = self.timeframes.len();
        let (symbol, tf) = ((slot / frames) as SymbolId, self.timeframes[slot % frames]);
        let name = self.symbols.name(symbol).clone();
        let key = self.keys.bars(&name, tf);
        let mut conn = self.conns[self.conn_for(symbol)].clone();
        self.rewrite_ring(&mut conn, symbol, tf, &key).await?;
        #[derive(serde::Serialize)]
        struct RevisionMsg<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            symbol: &'a str,
            timeframe: &'a str,
            from_ts: i64,
            to_ts: i64,
            bars: u32,
        }
        let msg = RevisionMsg {
            kind: "revision",
            symbol: &name,
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

    /// Replaces a ring with SQLite's newest `MAX_BARS_CACHE` bars, atomically.
    async fn rewrite_ring(
        &mut self,
        conn: &mut ConnectionManager,
        symbol: SymbolId,
        tf: Timeframe,
        key: &str,
    ) -> Result<(), RedisError> {
        let bars = self.recent(symbol, tf, self.config.max_bars).await?;
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("DEL").arg(key).ignore();
        for chunk in bars.chunks(1_000) {
            let values: Vec<Vec<u8>> = chunk
                .iter()
                .map(|b| encode(&BarMsg::new(&b.bar, &b.source, b.quality)))
                .collect();
            pipe.cmd("RPUSH").arg(key).arg(values).ignore();
        }
        let _: () = pipe.query_async(conn).await?;
        self.metrics.redis_backfilled_bars.add(bars.len() as u64);
        if let Some(slot) = self.slot(symbol, tf) {
            self.ring_last[slot] = bars.last().map(|b| b.bar.ts);
        }
        Ok(())
    }

    async fn summary(
        &self,
        symbol: SymbolId,
        tf: Timeframe,
        n: usize,
    ) -> Result<crate::store::sqlite::RingSummary, RedisError> {
        let store = Arc::clone(&self.store);
        Ok(
            tokio::task::spawn_blocking(move || store.ring_summary(symbol, tf, n))
                .await
                .map_err(|e| StoreError::Join(e.to_string()))??,
        )
    }

    async fn recent(
        &self,
        symbol: SymbolId,
        tf: Timeframe,
        n: usize,
    ) -> Result<Vec<StoredBar>, RedisError> {
        let store = Arc::clone(&self.store);
        Ok(
            tokio::task::spawn_blocking(move || store.recent_bars(symbol, tf, n))
                .await
                .map_err(|e| StoreError::Join(e.to_string()))??,
        )
    }

    /// Copies the ring's bars newer than `after` into SQLite; returns how many.
    async fn recover_from_ring(
        &self,
        conn: &mut ConnectionManager,
        symbol: SymbolId,
        tf: Timeframe,
        key: &str,
        after: Option<i64>,
    ) -> Result<usize, RedisError> {
        let raw: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(key)
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
                    tracing::warn!(key, error = %e, "skipping an undecodable bar in a Redis ring")
                }
            }
        }
        let store = Arc::clone(&self.store);
        Ok(
            tokio::task::spawn_blocking(move || store.upsert_now(symbol, tf, &bars))
                .await
                .map_err(|e| StoreError::Join(e.to_string()))??,
        )
    }

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
                    Event::Rejected(_) | Event::Gap { .. } => continue,
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
}

impl RedisSink {
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

/// The `ts` of a MessagePack bar returned by `LINDEX`: `None` for an empty ring, and
/// `i64::MIN` for something that is not a bar (so the ring is rewritten, never trusted).
fn decode_ts(value: &redis::Value, key: &str) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct Ts {
        ts: i64,
    }
    match value {
        redis::Value::Nil => None,
        redis::Value::BulkString(bytes) => match rmp_serde::from_slice::<Ts>(bytes) {
            Ok(t) => Some(t.ts),
            Err(e) => {
                tracing::warn!(key, error = %e, "Redis ring holds something that is not a bar; rewriting it");
                Some(i64::MIN)
            }
        },
        other => {
            tracing::warn!(key, reply = ?other, "unexpected Redis reply; rewriting the ring");
            Some(i64::MIN)
        }
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
