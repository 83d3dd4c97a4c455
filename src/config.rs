/*!
Environment variables (and an optional `.env`, loaded by `main`) → a validated [`Config`].

Parsing happens once at start-up. Every error names the variable, the value it had and what is
allowed, so a typo in a systemd unit is a one-line fix instead of a debugging session. After
start-up nothing re-reads the environment.

Three steps, each in its own place:
- every variable is read and range-checked on its own, through the leaf `env` module (durations
  take `500ms`, `2s`, `5m`, `1h`, `1d` or a bare number of seconds; an empty variable is an
  unset one);
- the providers' variables are read from what the sources' registry declares
  ([`crate::sources::settings::ProviderSettings`]); this module knows no provider by name;
- the values are checked against each other (`config/checks.rs`): timeframes against the
  collection interval, staleness against the interval, indicator periods against each other,
  the HTTP pool against the open-files limit, `RUST_LOG` against its grammar.

Dependencies point one way: `config` uses `env` and `sources` (the registry and the settings
it produces); `sources` never uses `config` ([`crate::sources::Plan`] is what it gets).
*/

mod checks;
mod nats;
mod open_files;
mod redis_target;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::alerts::AlertSettings;
use crate::calendar::MarketCalendar;
use crate::env::Env;
use crate::indicators::IndicatorParams;
use crate::model::{RedisTarget, Timeframe};
use crate::shard::Shard;
use crate::sources::settings::{ApiKey, ProviderSettings};

pub use crate::env::{EnvError as ConfigError, parse_duration_ms, redact_url};
pub use crate::sources::synthetic::SyntheticConfig;
pub use crate::validate::ValidationConfig;
pub use checks::MAX_TIMEFRAME_MS;
pub use nats::{NATS_QUEUE_DEFAULT, NatsConfig};
pub use open_files::OpenFiles;

/// `BOOTSTRAP_ON_START`: what `run` does about history SQLite lacks (see `bootstrap.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootstrapOnStart {
    /// Fill it while collecting (the default): the bot gets live data at once.
    Background,
    /// Fill it before collecting starts.
    Before,
    Off,
}

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Messages the streaming channels keep for resuming clients, all channels together, when
/// `STREAM_REPLAY` does not say otherwise (two channels per symbol; at most 1 000 each).
pub const STREAM_REPLAY_TOTAL: usize = 100_000;

/// Everything barkeep needs to run, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// The symbols this instance collects: those of `SYMBOLS` its shard owns.
    pub symbols: Vec<String>,
    /// How many symbols `SYMBOLS` lists, across every shard.
    pub configured_symbols: usize,
    /// `SHARD`: which part of `SYMBOLS` this instance owns.
    pub shard: Shard,
    /// Each symbol's trading calendar, in `symbols` order (`MARKET_HOURS`, else the symbol's
    /// own; `always` for every symbol when the simulated market is the only source and
    /// `SYNTHETIC_SESSIONS=always`).
    pub calendars: Vec<MarketCalendar>,
    /// The calendar every symbol takes unless named (`MARKET_HOURS=*:…`, or `always` when the
    /// simulated market is the only source and never closes); `None`: each symbol's own.
    pub every_calendar: Option<MarketCalendar>,
    /// VWAP resets at each symbol's session open (neither `VWAP_SESSION` nor `VWAP_OFFSET`
    /// given); otherwise at the fixed sessions they set.
    pub vwap_by_calendar: bool,
    /// Source names in priority order.
    pub sources: Vec<String>,
    pub timeframes: Vec<Timeframe>,
    pub collection_interval_ms: u64,
    /// How long one tick may wait for its sources; defaults to 80 % of the interval.
    pub tick_deadline_ms: u64,
    /// Symbols fetched at once across all sources.
    pub max_concurrency: usize,
    pub max_bars_cache: usize,
    pub batch_write_interval_ms: u64,
    pub feature_cache_ttl_ms: u64,
    pub checkpoint_interval_ms: u64,
    /// Consecutive failures that open a source's circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker skips its source before a trial request.
    pub breaker_open_ms: u64,
    pub shutdown_timeout_ms: u64,
    /// Closed bars per (symbol, timeframe) to warm the indicators from at start.
    pub warmup_bars: usize,
    /// Days of history `barkeep bootstrap` downloads.
    pub history_days: u32,
    /// Whether and how `run` fills missing history at start.
    pub bootstrap_on_start: BootstrapOnStart,
    /// `REDIS_URL` or `REDIS_CLUSTER_NODES`; `None`: no Redis.
    pub redis: Option<RedisTarget>,
    pub redis_pool_size: usize,
    pub redis_key_prefix: String,
    /// `NATS_URL` and the stream's settings; `None`: no JetStream publishing.
    pub nats: Option<NatsConfig>,
    /// Entries kept per symbol's Redis stream (`REDIS_STREAM_MAXLEN`); 0: no stream.
    pub redis_stream_maxlen: usize,
    /// Whether each message is also published on the symbol's pub/sub channel (`REDIS_PUBSUB`).
    pub redis_pubsub: bool,
    pub sqlite_path: PathBuf,
    /// History in PostgreSQL instead of SQLite (`SQLITE_PATH` is then unused).
    pub postgres_url: Option<String>,
    pub postgres_pool_size: usize,
    pub http_addr: SocketAddr,
    /// Concurrent HTTP connections (by default 1024, or what the open-files limit leaves).
    pub http_pool_size: usize,
    /// How long a client may take to send a request's line and headers, from its first byte
    /// (from the connection's opening for its first request).
    pub http_header_timeout_ms: u64,
    /// How long a keep-alive connection may wait for its next request.
    pub http_idle_timeout_ms: u64,
    /// Connections one source IP may hold at once (at the cap, a new one replaces that peer's
    /// oldest idle connection).
    pub http_max_connections_per_peer: usize,
    /// Messages kept per streaming channel for clients that resume (`STREAM_REPLAY`).
    pub stream_replay: usize,
    /// Messages a streaming client may have waiting before it is dropped as a slow consumer
    /// (`STREAM_CLIENT_QUEUE`).
    pub stream_client_queue: usize,
    /// `API_TOKEN`: what changes at run time (`/streaming/config/…`) must carry as
    /// `Authorization: Bearer …`; `None`: changes only from loopback peers.
    pub api_token: Option<ApiKey>,
    pub log_format: LogFormat,
    /// `RUST_LOG`, checked to be a valid tracing filter (`info` when unset).
    pub log_filter: String,
    pub validation: ValidationConfig,
    pub synthetic: SyntheticConfig,
    pub indicators: IndicatorParams,
    pub providers: ProviderSettings,
    /// Alert thresholds and the webhook (`ALERT_*`).
    pub alerts: AlertSettings,
}

/// A symbol as `SYMBOLS` (and the instruments API) take it: 1-32 characters of letters, digits
/// and `. _ - ^ = /`, upper-cased.
///
/// # Errors
/// What a symbol must be, for any other text.
pub fn symbol(s: &str) -> Result<String, String> {
    if !s.is_empty()
        && s.len() <= 32
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-^=/".contains(c))
    {
        Ok(s.to_ascii_uppercase())
    } else {
        Err("a symbol is 1-32 characters of letters, digits and . _ - ^ = /".to_string())
    }
}

impl Config {
    /// Reads the process environment.
    ///
    /// # Errors
    /// The first variable that is present but invalid, or inconsistent with another.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()))
    }

    /// Reads variables through `get`, so tests need not touch the process environment. The
    /// open-files limit is this process's.
    ///
    /// # Errors
    /// The first variable that is present but invalid, or inconsistent with another.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::read(&Env::new(&get), OpenFiles::of_process())
    }

    /// Reads variables through `env`, checking the HTTP pool against `open_files`.
    fn read(env: &Env<'_>, open_files: OpenFiles) -> Result<Self, ConfigError> {
        let symbols = env.list("SYMBOLS", "NAS100,XAUUSD,EURUSD", symbol)?;
        let sources = env.list("SOURCES", "synthetic", |s| {
            let s = s.to_ascii_lowercase();
            if crate::sources::KNOWN.contains(&s.as_str()) {
                Ok(s)
            } else {
                Err(format!(
                    "unknown source `{s}`; known: {}",
                    crate::sources::KNOWN.join(", ")
                ))
            }
        })?;
        let synthetic = SyntheticConfig::from_env(env)?;
        let only_synthetic = sources.iter().all(|s| s == "synthetic");
        let (calendars, every_calendar) = checks::market_hours(
            &symbols,
            env.get("MARKET_HOURS").unwrap_or_default(),
            only_synthetic && !synthetic.follow_calendars,
        )?;
        let shard = env.parse("SHARD", "0/1", str::parse::<Shard>)?;
        let configured_symbols = symbols.len();
        // Every instance reads the same SYMBOLS and MARKET_HOURS; each keeps what it owns.
        let (symbols, calendars): (Vec<String>, Vec<MarketCalendar>) = symbols
            .into_iter()
            .zip(calendars)
            .filter(|(s, _)| shard.owns(s))
            .unzip();
        let symbol_count = symbols.len();
        if symbols.is_empty() {
            return Err(ConfigError::new(
                "SHARD",
                shard.to_string(),
                format!(
                    "this shard owns none of the {configured_symbols} symbols in SYMBOLS; \
                     fewer shards, or more symbols"
                ),
            ));
        }
        let timeframes = env.list("TIMEFRAMES", "1m", checks::timeframe)?;
        let collection_interval_ms =
            env.duration_ms("COLLECTION_INTERVAL", 1_000, 10, 3_600_000)?;
        let tick_deadline_ms = env.duration_ms(
            "TICK_DEADLINE",
            (collection_interval_ms * 4 / 5).max(1),
            1,
            3_600_000,
        )?;
        let validation = ValidationConfig {
            min_quality: env.float("MIN_QUALITY", 0.5, 0.0, 1.0)?,
            spike_atr_multiple: env.float("SPIKE_ATR_MULTIPLE", 12.0, 1.0, 1e6)?,
            max_clock_skew_ms: env.duration_ms("MAX_CLOCK_SKEW", 5_000, 0, 86_400_000)? as i64,
            stale_after_ms: env.duration_ms("STALE_AFTER", 120_000, 1_000, 86_400_000 * 30)? as i64,
        };
        let period = |var, default, min| env.int(var, default, min, 10_000);
        let indicators = IndicatorParams {
            sma: period("SMA_PERIOD", 20, 1)?,
            ema_fast: period("EMA_FAST_PERIOD", 12, 1)?,
            ema_slow: period("EMA_SLOW_PERIOD", 26, 1)?,
            rsi: period("RSI_PERIOD", 14, 2)?,
            bb_period: period("BB_PERIOD", 20, 2)?,
            bb_k: env.float("BB_K", 2.0, 0.0, 100.0)?,
            atr: period("ATR_PERIOD", 14, 1)?,
            macd_fast: period("MACD_FAST", 12, 2)?,
            macd_slow: period("MACD_SLOW", 26, 2)?,
            macd_signal: period("MACD_SIGNAL", 9, 1)?,
            stoch_k: period("STOCH_K", 14, 1)?,
            stoch_slow_k: period("STOCH_SLOW_K", 3, 1)?,
            stoch_d: period("STOCH_D", 3, 1)?,
            vwap_session_ms: env.duration_ms("VWAP_SESSION", 86_400_000, 1_000, 86_400_000 * 366)?
                as i64,
            vwap_offset_ms: env.duration_ms("VWAP_OFFSET", 0, 0, 86_400_000 * 366)? as i64,
            vwap_daily: None,
        };
        let vwap_by_calendar = !env.is_set("VWAP_SESSION") && !env.is_set("VWAP_OFFSET");
        let warmup_default = indicators.warmup_bars().max(100);
        let redis = redis_target::read(env)?;
        let postgres_url = env.get("POSTGRES_URL");
        if let Some(url) = &postgres_url {
            let scheme = url.split("://").next().unwrap_or_default();
            let shape = "expected postgres://[user[:password]@]host[:port]/database[?options]";
            let checked = if ["postgres", "postgresql"].contains(&scheme) {
                crate::store::postgres::tls::connection(url)
                    .map(drop)
                    .map_err(|why| format!("{shape}: {why}"))
            } else {
                Err(shape.to_string())
            };
            if let Err(why) = checked {
                return Err(ConfigError::new("POSTGRES_URL", redact_url(url), why));
            }
        }
        let postgres_pool_size = env.int("POSTGRES_POOL_SIZE", 4, 1, 1_024)?;
        let log_format = env.parse("LOG_FORMAT", "text", |s| match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err("expected `text` or `json`".into()),
        })?;
        let http_addr = env.parse("HTTP_ADDR", "127.0.0.1:8000", |s| {
            s.parse::<SocketAddr>()
                .map_err(|_| "expected IP:PORT, e.g. 127.0.0.1:8000".to_string())
        })?;
        let max_concurrency = env.int("MAX_CONCURRENCY", 64, 1, 100_000)?;
        let redis_pool_size = env.int("REDIS_POOL_SIZE", 4, 1, 1_024)?;
        let http_pool_size = env.int(
            "HTTP_POOL_SIZE",
            open_files.default_pool(
                max_concurrency,
                store_connections(
                    redis_connections(redis.as_ref(), redis_pool_size),
                    postgres_url.as_ref(),
                    postgres_pool_size,
                ),
            ),
            1,
            1_000_000,
        )?;
        let providers = ProviderSettings::from_env(env)?;
        providers.require_keys(&sources)?;
        let nats = nats::read(env)?;
        let alerts = AlertSettings::from_env(env, validation.stale_after_ms)?;

        let config = Self {
            symbols,
            configured_symbols,
            shard,
            calendars,
            every_calendar,
            vwap_by_calendar,
            sources,
            timeframes,
            collection_interval_ms,
            tick_deadline_ms,
            max_concurrency,
            max_bars_cache: env.int("MAX_BARS_CACHE", 5_000, 1, 10_000_000)?,
            batch_write_interval_ms: env.duration_ms(
                "BATCH_WRITE_INTERVAL",
                10_000,
                10,
                3_600_000,
            )?,
            feature_cache_ttl_ms: env.duration_ms("FEATURE_CACHE_TTL", 2_000, 1, 86_400_000)?,
            checkpoint_interval_ms: env.duration_ms(
                "CHECKPOINT_INTERVAL",
                300_000,
                100,
                86_400_000,
            )?,
            breaker_failures: env.int("BREAKER_FAILURES", 5, 1, 1_000)?,
            breaker_open_ms: env.duration_ms("BREAKER_OPEN", 60_000, 10, 86_400_000)?,
            shutdown_timeout_ms: env.duration_ms("SHUTDOWN_TIMEOUT", 10_000, 100, 600_000)?,
            warmup_bars: env.int("WARMUP_BARS", warmup_default, 0, 1_000_000)?,
            history_days: env.int("HISTORY_DAYS", 90, 1, 36_500)?,
            bootstrap_on_start: env.parse("BOOTSTRAP_ON_START", "background", |s| {
                match s.to_ascii_lowercase().as_str() {
                    "background" => Ok(BootstrapOnStart::Background),
                    other => match crate::env::parse_bool(other) {
                        Ok(true) => Ok(BootstrapOnStart::Before),
                        Ok(false) => Ok(BootstrapOnStart::Off),
                        Err(_) => Err("expected background, true or false".to_string()),
                    },
                }
            })?,
            redis,
            redis_pool_size,
            redis_key_prefix: env.parse("REDIS_KEY_PREFIX", "barkeep", |s| {
                if s.contains(char::is_whitespace) {
                    Err("must be non-empty without whitespace".to_string())
                } else {
                    Ok(s.to_string())
                }
            })?,
            nats,
            // The same budget as STREAM_REPLAY's: a bot resuming from Redis has the window a
            // streaming client has, and thousands of symbols do not cost gigabytes unasked.
            redis_stream_maxlen: env.int(
                "REDIS_STREAM_MAXLEN",
                (STREAM_REPLAY_TOTAL / symbol_count.max(1)).clamp(10, 1_000),
                0,
                1_000_000,
            )?,
            redis_pubsub: env.boolean("REDIS_PUBSUB", true)?,
            sqlite_path: env.parse("SQLITE_PATH", "./data/barkeep.db", |s| Ok(PathBuf::from(s)))?,
            postgres_url,
            postgres_pool_size,
            http_addr,
            http_pool_size,
            http_header_timeout_ms: env.duration_ms("HTTP_HEADER_TIMEOUT", 5_000, 100, 600_000)?,
            http_idle_timeout_ms: env.duration_ms("HTTP_IDLE_TIMEOUT", 30_000, 100, 3_600_000)?,
            http_max_connections_per_peer: env.int(
                "HTTP_MAX_CONNECTIONS_PER_PEER",
                64,
                1,
                1_000_000,
            )?,
            // By default every channel together keeps at most STREAM_REPLAY_TOTAL messages
            // (~75 MB), so thousands of symbols do not cost gigabytes unasked.
            stream_replay: env.int(
                "STREAM_REPLAY",
                (STREAM_REPLAY_TOTAL / (2 * symbol_count.max(1))).clamp(10, 1_000),
                1,
                1_000_000,
            )?,
            stream_client_queue: env.int("STREAM_CLIENT_QUEUE", 1_024, 1, 1_000_000)?,
            api_token: api_token(env)?,
            log_format,
            log_filter: env.parse("RUST_LOG", "info", checks::log_filter)?,
            validation,
            synthetic,
            indicators,
            providers,
            alerts,
        };
        checks::cross_check(&config, env, open_files)?;
        Ok(config)
    }

    /// The indicator parameters of a symbol on `calendar`: VWAP anchored at its session open
    /// unless fixed sessions were configured.
    /// The calendar of a symbol `MARKET_HOURS` does not name (one added at run time without
    /// a calendar of its own).
    pub fn default_calendar(&self, symbol: &str) -> MarketCalendar {
        self.every_calendar
            .unwrap_or_else(|| MarketCalendar::for_symbol(symbol))
    }

    pub fn indicators_for(&self, calendar: MarketCalendar) -> IndicatorParams {
        let mut params = self.indicators.clone();
        if self.vwap_by_calendar {
            params.vwap_daily = calendar.vwap_anchor();
        }
        params
    }

    /// File descriptors barkeep may hold at once: the HTTP pool plus what
    /// [`OpenFiles::reserve`] keeps for everything else.
    pub fn open_files_needed(&self) -> u64 {
        self.http_pool_size as u64
            + OpenFiles::reserve(
                self.max_concurrency,
                store_connections(
                    redis_connections(self.redis.as_ref(), self.redis_pool_size),
                    self.postgres_url.as_ref(),
                    self.postgres_pool_size,
                ),
            )
    }
}

/// The shortest `API_TOKEN` accepted: a bearer token guessable in a few tries protects nothing.
pub const MIN_API_TOKEN_LEN: usize = 16;

/// `API_TOKEN`: at least [`MIN_API_TOKEN_LEN`] visible ASCII characters (it travels in a
/// header). A refusal never quotes the value: it is a secret.
fn api_token(env: &Env<'_>) -> Result<Option<ApiKey>, ConfigError> {
    let Some(token) = env.get("API_TOKEN") else {
        return Ok(None);
    };
    let refuse = |reason: String| Err(ConfigError::new("API_TOKEN", "(hidden)", reason));
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return refuse("must be visible ASCII characters without spaces".into());
    }
    if token.len() < MIN_API_TOKEN_LEN {
        return refuse(format!(
            "is {} characters long; at least {MIN_API_TOKEN_LEN} are needed (e.g. `openssl rand -hex 32`)",
            token.len()
        ));
    }
    Ok(Some(ApiKey::new(&token)))
}

impl<'a> From<&'a Config> for crate::sources::Plan<'a> {
    fn from(config: &'a Config) -> Self {
        Self {
            names: &config.sources,
            providers: &config.providers,
            synthetic: &config.synthetic,
            calendars: &config.calendars,
            breaker_failures: config.breaker_failures,
            breaker_open_ms: config.breaker_open_ms,
        }
    }
}

/// Redis connections: the pool, once per node given in a cluster (each cluster connection holds
/// one to every master, and may learn of replicas).
fn redis_connections(target: Option<&RedisTarget>, pool: usize) -> usize {
    pool * target.map_or(1, |t| t.urls().len())
}

/// Connections the stores hold besides the HTTP pool: Redis's, and PostgreSQL's when it is used.
fn store_connections(redis: usize, postgres_url: Option<&String>, postgres: usize) -> usize {
    redis + postgres_url.map_or(0, |_| postgres)
}
