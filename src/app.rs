/*!
Wiring: builds the store, sources, pipelines, sinks and HTTP server from a [`Config`], runs them
until the shutdown future completes, then stops them in order (collector → sinks flush → HTTP)
within `SHUTDOWN_TIMEOUT`. The start-up order (history store, Redis, bootstrap, warm-up, control
settings, tasks, HTTP) reads top to bottom in `run_with`. The `replay` command is `crate::replay`.
*/

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{self, ApiState};
use crate::clock::Clock;
use crate::collector::Collector;
use crate::config::{BootstrapOnStart, Config};
use crate::instruments::Instruments;
use crate::metrics::Metrics;
use crate::model::SymbolTable;
use crate::sources;
use crate::store::history::{History, StoreError};
use crate::store::reconcile::{Reconciler, Resync};
use crate::store::redis::{RedisError, RedisSink, RedisSinkConfig, RedisStatus};
use crate::store::snapshot::Snapshot;
use crate::store::writer::{RedisQueue, StoreChain};
use crate::stream::hub::{Hub, StreamSettings};
use crate::stream::jetstream::{NatsStatus, Publisher};
use crate::stream::message::Names;

/// Batches the stores' queue (and the Redis sink's behind it) may hold: beyond, the collector
/// keeps them in its overflow list, and the writer asks Redis to resync instead of queueing.
const SINK_QUEUE: usize = 1_024;

/// Why barkeep could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The history store could not be opened at start.
    #[error(transparent)]
    StoreOpen(StoreError),
    #[error("cannot listen on HTTP_ADDR={addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("shutdown did not finish within {0:?}; some buffered rows may be lost")]
    ShutdownTimeout(Duration),
    #[error("{0} rows could not be written to {1} before shutdown and are lost")]
    DataLost(usize, &'static str),
    #[error("REDIS_URL: {0}")]
    Redis(RedisError),
    #[error("ALERT_WEBHOOK_URL: cannot build the HTTP client: {0}")]
    Webhook(reqwest::Error),
    #[error("replay: {0}")]
    Replay(#[from] sources::replay::ReplayError),
    #[error("replay: {0}")]
    Io(#[from] std::io::Error),
}

/// Exit codes that tell a supervisor what happened (README, "Running it for real").
pub mod exit {
    /// Stopped cleanly, everything stored.
    pub const OK: u8 = 0;
    /// A failure at run time (restarting may help).
    pub const FAILURE: u8 = 1;
    /// The configuration is wrong: fix it, do not restart.
    pub const CONFIG: u8 = 2;
    /// The database cannot be opened or created (corrupt, unwritable, no directory; PostgreSQL
    /// refusing the login or the schema): restarting does not heal it.
    pub const STORAGE: u8 = 3;
    /// Stopped, but some produced rows could not be stored.
    pub const DATA_LOST: u8 = 4;
}

impl AppError {
    /// The process exit code for this error ([`exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Store(StoreError::Open { .. } | StoreError::Dir { .. }) => exit::STORAGE,
            Self::StoreOpen(_) => exit::STORAGE,
            Self::DataLost(..) | Self::ShutdownTimeout(_) => exit::DATA_LOST,
            Self::Redis(_) => exit::CONFIG,
            _ => exit::FAILURE,
        }
    }
}

/// Runs the sidecar until `shutdown` completes. Binds `config.http_addr`.
///
/// # Errors
/// Start-up failures (SQLite, HTTP bind) and a shutdown that overran its deadline.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), AppError> {
    let listener = TcpListener::bind(config.http_addr)
        .await
        .map_err(|source| AppError::Bind {
            addr: config.http_addr,
            source,
        })?;
    run_with(config, listener, Clock::System, shutdown).await
}

/// [`run`] on an already bound listener and a given clock, for tests.
///
/// # Errors
/// As [`run`].
pub async fn run_with(
    config: Config,
    listener: TcpListener,
    clock: Clock,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AppError> {
    // Polled once at once, so a SIGTERM or SIGINT during start-up is handled (the signal
    // handlers are installed when it is first polled), and every start-up phase below ends on
    // it: nothing live has been produced yet, so there is nothing to lose.
    let mut shutdown = std::pin::pin!(shutdown);
    if futures::poll!(&mut shutdown).is_ready() {
        return Ok(());
    }
    // SYMBOLS is the base; the instruments changed over the API are applied on top.
    let base_symbols = config.symbols.clone();
    let symbols = SymbolTable::default();
    let store = tokio::select! {
        opened = open_history(&config, &symbols) => opened.map_err(open_failed)?,
        () = &mut shutdown => return stopped_during("opening the history store"),
    };
    let (config, planned) = crate::instruments::load(config, &symbols, &store).await?;
    let sources = sources::build(&config, &symbols);
    let source_names: Vec<&'static str> = sources.iter().map(|s| s.name()).collect();
    let metrics = Arc::new(Metrics::new(&source_names));
    metrics.symbols.set(symbols.len() as i64);
    metrics.shard_index.set(i64::from(config.shard.index));
    metrics.shards.set(i64::from(config.shard.count));
    let snapshot = Arc::new(Snapshot::new(
        symbols.clone(),
        config.timeframes.clone(),
        &config.indicators,
    ));
    let token = CancellationToken::new();
    let tracker = TaskTracker::new();

    let redis_status = Arc::new(RedisStatus::default());
    let (redis_queue, redis) = match &config.redis {
        None => (None, None),
        Some(target) => {
            let (tx, rx) = mpsc::channel(SINK_QUEUE);
            let resync = Arc::new(Resync::default());
            let reconciler = Reconciler::new(
                store.clone(),
                Arc::clone(&resync),
                Arc::clone(&metrics),
                config.calendars.clone(),
            );
            let mut sink = RedisSink::new(
                RedisSinkConfig {
                    target: target.clone(),
                    pool_size: config.redis_pool_size,
                    prefix: config.redis_key_prefix.clone(),
                    max_bars: config.max_bars_cache,
                    features_ttl_ms: (config.feature_cache_ttl_ms * 2)
                        .max(config.collection_interval_ms * 3),
                    stream_maxlen: config.redis_stream_maxlen,
                    pubsub: config.redis_pubsub,
                    shard: config.shard,
                },
                symbols.clone(),
                config.timeframes.clone(),
                config.indicators.feature_names(),
                reconciler,
                Arc::clone(&redis_status),
                Arc::clone(&metrics),
                clock,
            )
            .map_err(AppError::Redis)?;
            tokio::select! {
                () = sink.start(Duration::from_secs(3)) => {}
                () = &mut shutdown => return stopped_during("connecting to Redis"),
            }
            (Some(RedisQueue { tx, resync }), Some((sink, rx)))
        }
    };
    // The collector hands every batch to two queues: the store chain's (SQLite, then Redis)
    // and the streaming hub's, which builds the clients' messages on its own task.
    let (stores_tx, stores_rx) = mpsc::channel(SINK_QUEUE);
    let (stream_tx, stream_rx) = mpsc::channel(SINK_QUEUE);
    let hub = Hub::new(
        Names::of(&snapshot),
        StreamSettings {
            replay: config.stream_replay,
            client_queue: config.stream_client_queue,
            stale_after_ms: config.validation.stale_after_ms,
        },
        Arc::clone(&metrics),
    );
    // NATS JetStream, when configured: a tap on the hub, published by its own task.
    let nats_status = config.nats.as_ref().map(|n| NatsStatus::new(&n.stream));
    let nats = config
        .nats
        .clone()
        .zip(nats_status.clone())
        .map(|(nats, status)| {
            let drain = Duration::from_millis(config.shutdown_timeout_ms / 2);
            Publisher::new(nats, &hub, status, Arc::clone(&metrics), drain)
        });
    let mut collector = Collector::new(
        &config,
        symbols.clone(),
        sources,
        Arc::clone(&snapshot),
        Arc::clone(&metrics),
        vec![stores_tx, stream_tx],
        clock,
    );
    // History requests go through the collector's source chain: its breakers, and budgets
    // that serve quotes first.
    let chain = collector.chain();
    // Run-time changes of an earlier run apply before anything is asked (the warm-up too).
    let controls = Arc::new(api::control::Controls::new(
        Arc::clone(&chain),
        collector.cadence(),
        crate::collector::cadence::Cadence::of_config(&config),
        config
            .timeframes
            .iter()
            .map(|t| t.ms() as u64)
            .min()
            .unwrap_or(u64::MAX),
        config.shard,
    ));
    api::control::restore(&controls, &store, clock.now_ms()).await?;
    let instruments = Arc::new(Instruments::new(
        symbols.clone(),
        Arc::clone(&snapshot),
        store.clone(),
        collector.commands(),
        Arc::new(config.clone()),
        base_symbols,
        &planned,
        clock,
    ));
    let resync = redis_queue.as_ref().map(|q| Arc::clone(&q.resync));
    // Bars among a series' newest belong in its Redis ring: reconcile the rings.
    let reconcile = move || {
        if let Some(resync) = &resync {
            resync.request();
        }
    };
    if config.bootstrap_on_start == BootstrapOnStart::Before {
        let now = clock.now_ms();
        // Each window is committed as it arrives: stopping here loses nothing.
        let stats = tokio::select! {
            done = crate::bootstrap::bootstrap(
                &config,
                &symbols,
                &chain,
                &store,
                now,
                false,
                &reconcile,
            ) => done?,
            () = &mut shutdown => return stopped_during("the bootstrap"),
        };
        crate::bootstrap::log_stats(stats, symbols.active_len());
    }
    let warm_started = Instant::now();
    tracing::info!(
        symbols = symbols.len(),
        timeframes = config.timeframes.len(),
        "warming up the indicators"
    );
    // The warm-up's history reaches the sinks only when it completes: stopping before that
    // stores nothing half-done, and the next start warms up again.
    tokio::select! {
        done = collector.warm_up(&store) => done?,
        () = &mut shutdown => return stopped_during("the warm-up"),
    }
    tracing::info!(
        symbols = symbols.len(),
        timeframes = config.timeframes.len(),
        history_bars = metrics.history_bars.get(),
        took_ms = warm_started.elapsed().as_millis() as u64,
        "indicators warmed up"
    );

    // In the background: what the start's bootstrap did not do, then every instrument added
    // at run time as soon as it is added.
    if config.bootstrap_on_start != BootstrapOnStart::Off {
        tracker.spawn(crate::bootstrap::follow(
            config.clone(),
            symbols.clone(),
            chain,
            store.clone(),
            clock,
            config.bootstrap_on_start == BootstrapOnStart::Before,
            reconcile,
            token.clone(),
        ));
    }
    // The chain stops when the collector drops its sender, after a final flush; its end
    // closes the Redis sink's queue.
    let stores = StoreChain::new(
        store.clone(),
        redis_queue,
        Duration::from_millis(config.batch_write_interval_ms),
        Arc::clone(&metrics),
        clock,
    );
    tracker.spawn(stores.run(stores_rx));
    if let Some((sink, rx)) = redis {
        tracker.spawn(sink.run(rx, token.clone()));
    }
    tracker.spawn(Arc::clone(&hub).run(stream_rx));
    if let Some(nats) = nats {
        tracker.spawn(nats.run(token.clone()));
    }
    tracker.spawn(collector.run(token.clone()));
    metrics.sqlite_queue_capacity.set(SINK_QUEUE as i64);
    if config.redis.is_some() {
        metrics.redis_queue_capacity.set(SINK_QUEUE as i64);
    }
    let addr = listener.local_addr().map_err(|source| AppError::Bind {
        addr: config.http_addr,
        source,
    })?;
    let alerts = crate::alerts::spawn(
        &config.alerts,
        crate::alerts::Wiring {
            metrics: Arc::clone(&metrics),
            snapshot: Arc::clone(&snapshot),
            clock,
            interval: Duration::from_millis(config.collection_interval_ms),
            redis: config.redis.is_some(),
            instance: match config.shard.count {
                1 => addr.to_string(),
                _ => format!("{addr} shard {}", config.shard),
            },
        },
        &tracker,
        &token,
    )
    .map_err(AppError::Webhook)?;
    let state = Arc::new(ApiState {
        snapshot,
        metrics: Arc::clone(&metrics),
        store: store.clone(),
        clock,
        started: Instant::now(),
        stale_after_ms: config.validation.stale_after_ms,
        max_bars_cache: config.max_bars_cache,
        batch_write_interval_ms: config.batch_write_interval_ms,
        redis: config.redis.is_some().then_some(redis_status),
        nats: nats_status,
        stream: hub,
        access: api::access::AccessRule::new(config.api_token.clone()),
        alerts,
        control: controls,
        instruments: Some(instruments),
    });
    match clock {
        // A test's paused clock belongs to the test's runtime: serve there.
        Clock::Tokio { .. } => {
            tracker.spawn(api::serve(
                listener,
                state,
                api::HttpSettings::from_config(&config),
                token.clone(),
            ));
        }
        Clock::System => {
            let http = api::HttpSettings::from_config(&config);
            let served = serve_on_own_runtime(listener, state, http, &token).map_err(|source| {
                AppError::Bind {
                    addr: config.http_addr,
                    source,
                }
            })?;
            tracker.spawn(served);
        }
    }
    tracker.close();
    tracing::info!(%addr, sources = ?config.sources, symbols = ?config.symbols, "barkeep running; HTTP API listening");

    shutdown.await;
    tracing::info!("shutting down: stopping the collector and flushing");
    token.cancel();
    let deadline = Duration::from_millis(config.shutdown_timeout_ms);
    if tokio::time::timeout(deadline, tracker.wait())
        .await
        .is_err()
    {
        return Err(AppError::ShutdownTimeout(deadline));
    }
    let lost = store.pending_rows();
    if lost > 0 {
        return Err(AppError::DataLost(lost, store.name()));
    }
    tracing::info!(
        bars_closed = metrics.bars_closed.get(),
        bars_written = metrics.sqlite_bars_written.get(),
        rejects = metrics.rejects_total(),
        rejects_repeated = metrics.rejects_repeated.get(),
        rejects_written = metrics.sqlite_rejects_written.get(),
        "stopped cleanly"
    );
    Ok(())
}

/// The configured history store: PostgreSQL with `POSTGRES_URL`, else SQLite.
async fn open_history(config: &Config, symbols: &SymbolTable) -> Result<History, StoreError> {
    let postgres = config
        .postgres_url
        .as_deref()
        .map(|url| (url, config.postgres_pool_size));
    History::open(&config.sqlite_path, postgres, symbols.clone()).await
}

/// A history store that cannot be opened: SQLite's file errors keep their own variant (and exit
/// code); PostgreSQL refusing the login, the database or the schema cannot heal by restarting.
fn open_failed(e: StoreError) -> AppError {
    match e {
        StoreError::Postgres(_) | StoreError::Setup(_) => AppError::StoreOpen(e),
        e => AppError::Store(e),
    }
}

/// A stop asked for during start-up, before anything live was produced: logged, clean.
fn stopped_during(phase: &str) -> Result<(), AppError> {
    tracing::info!(phase, "stopped during start-up; nothing was collected yet");
    Ok(())
}

/// Threads of the HTTP API's own runtime.
const API_WORKERS: usize = 2;

/// Runs the HTTP API on its own runtime and threads: a request never queues behind a collection
/// tick or a Redis write holding a worker of the main runtime for tens of milliseconds at 10 000
/// symbols; the OS shares the cores between them instead (BENCHMARKS.md has the p99 before and
/// after). The returned future ends when the API has stopped.
fn serve_on_own_runtime(
    listener: TcpListener,
    state: Arc<ApiState>,
    settings: api::HttpSettings,
    token: &CancellationToken,
) -> std::io::Result<impl Future<Output = ()> + use<>> {
    let listener = listener.into_std()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(API_WORKERS)
        .thread_name("barkeep-http")
        .enable_all()
        .build()?;
    let (done, stopped) = tokio::sync::oneshot::channel::<()>();
    let token = token.clone();
    std::thread::Builder::new()
        .name("barkeep-http".into())
        .spawn(move || {
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => api::serve(listener, state, settings, token).await,
                    Err(e) => tracing::error!(error = %e, "the HTTP API could not start"),
                }
            });
            drop(done);
        })?;
    Ok(async move {
        let _ = stopped.await;
    })
}

/// `barkeep bootstrap`: history for every symbol and timeframe into SQLite or PostgreSQL.
///
/// # Errors
/// History store failures.
pub async fn bootstrap(
    config: Config,
    show_progress: bool,
) -> Result<crate::bootstrap::BootstrapStats, AppError> {
    let symbols = SymbolTable::default();
    let store = open_history(&config, &symbols).await.map_err(open_failed)?;
    let (config, _) = crate::instruments::load(config, &symbols, &store).await?;
    let chain = crate::bootstrap::own_chain(&config, sources::build(&config, &symbols));
    let now = crate::clock::system_now_ms();
    Ok(
        crate::bootstrap::bootstrap(&config, &symbols, &chain, &store, now, show_progress, || {})
            .await?,
    )
}
