/*!
Environment variables (and an optional `.env`, loaded by `main`) → a validated [`Config`].

Parsing happens once at start-up. Every error names the variable, the value it had and what is
allowed, so a typo in a systemd unit is a one-line fix instead of a debugging session. After
start-up nothing re-reads the environment.

Durations accept `500ms`, `2s`, `5m`, `1h`, or a bare number of seconds (`1`, `0.5`), because
the original design documented plain seconds.
*/

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::calendar::MarketCalendar;
use crate::indicators::IndicatorParams;
use crate::model::Timeframe;

/// A start-up configuration error: which variable, what it held, and why that is wrong.
#[derive(Debug, thiserror::Error)]
#[error("invalid {var}={value:?}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub value: String,
    pub reason: String,
}

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

/// Everything barkeep needs to run, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub symbols: Vec<String>,
    /// Each symbol's trading calendar, in `symbols` order (`MARKET_HOURS`, else the symbol's
    /// own; `always` for every symbol when the simulated market is the only source and
    /// `SYNTHETIC_SESSIONS=always`).
    pub calendars: Vec<MarketCalendar>,
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
    pub redis_url: Option<String>,
    pub redis_pool_size: usize,
    pub redis_key_prefix: String,
    pub sqlite_path: PathBuf,
    pub http_addr: SocketAddr,
    pub http_pool_size: usize,
    /// How long a client may take to send a request's line and headers, from its first byte
    /// (from the connection's opening for its first request).
    pub http_header_timeout_ms: u64,
    /// How long a keep-alive connection may wait for its next request.
    pub http_idle_timeout_ms: u64,
    /// Connections one source IP may hold at once (at the cap, a new one replaces that peer's
    /// oldest idle connection).
    pub http_max_connections_per_peer: usize,
    pub log_format: LogFormat,
    pub validation: ValidationConfig,
    pub synthetic: SyntheticConfig,
    pub indicators: IndicatorParams,
    pub providers: crate::sources::settings::ProviderSettings,
}

/// Validator thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationConfig {
    /// Bars scoring below this are rejected.
    pub min_quality: f64,
    /// A move larger than this many ATRs of recent ticks is a spike.
    pub spike_atr_multiple: f64,
    /// How far in the future a provider timestamp may be.
    pub max_clock_skew_ms: i64,
    /// Data older than this (relative to now) is stale.
    pub stale_after_ms: i64,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        Self {
            min_quality: 0.5,
            spike_atr_multiple: 12.0,
            max_clock_skew_ms: 5_000,
            stale_after_ms: 120_000,
        }
    }
}

/// The simulated market.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticConfig {
    pub seed: u64,
    /// Probability that a quote is deliberately broken (NaN, negative, spike, stale …).
    pub bad_tick_rate: f64,
    /// `SYNTHETIC_SESSIONS=calendar`: the simulated market keeps each symbol's calendar and,
    /// while closed, answers the session's last trade as real providers do.
    pub follow_calendars: bool,
}

impl Config {
    /// Reads the process environment.
    ///
    /// # Errors
    /// The first variable that is present but invalid.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()))
    }

    /// Reads variables through `get`, so tests need not touch the process environment.
    ///
    /// # Errors
    /// The first variable that is present but invalid.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env { get: &get };

        let symbols = env.list("SYMBOLS", "NAS100,XAUUSD,EURUSD", |s| {
            if s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-^=/".contains(c))
                && s.len() <= 32
            {
                Ok(s.to_ascii_uppercase())
            } else {
                Err("a symbol is 1-32 characters of letters, digits and . _ - ^ = /".to_string())
            }
        })?;
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
        let follow_calendars = env.parse("SYNTHETIC_SESSIONS", "always", |s| {
            match s.to_ascii_lowercase().as_str() {
                "always" => Ok(false),
                "calendar" => Ok(true),
                _ => Err(
                    "expected `always` (the simulated market never closes) or `calendar`".into(),
                ),
            }
        })?;
        let only_synthetic = sources.iter().all(|s| s == "synthetic");
        let calendars = market_hours(
            &symbols,
            env.get("MARKET_HOURS").unwrap_or_default(),
            only_synthetic && !follow_calendars,
        )?;
        let timeframes = env.list("TIMEFRAMES", "1m", |s| s.parse::<Timeframe>())?;
        let collection_interval_ms =
            env.duration_ms("COLLECTION_INTERVAL", 1_000, 10, 3_600_000)?;
        let tick_deadline_ms = env.duration_ms(
            "TICK_DEADLINE",
            (collection_interval_ms * 4 / 5).max(1),
            1,
            collection_interval_ms,
        )?;
        let validation = ValidationConfig {
            min_quality: env.float("MIN_QUALITY", 0.5, 0.0, 1.0)?,
            spike_atr_multiple: env.float("SPIKE_ATR_MULTIPLE", 12.0, 1.0, 1e6)?,
            max_clock_skew_ms: env.duration_ms("MAX_CLOCK_SKEW", 5_000, 0, 86_400_000)? as i64,
            stale_after_ms: env.duration_ms("STALE_AFTER", 120_000, 1_000, 86_400_000 * 30)? as i64,
        };
        let indicators = IndicatorParams {
            sma: env.int("SMA_PERIOD", 20, 1, 10_000)?,
            ema_fast: env.int("EMA_FAST_PERIOD", 12, 1, 10_000)?,
            ema_slow: env.int("EMA_SLOW_PERIOD", 26, 1, 10_000)?,
            rsi: env.int("RSI_PERIOD", 14, 2, 10_000)?,
            bb_period: env.int("BB_PERIOD", 20, 2, 10_000)?,
            bb_k: env.float("BB_K", 2.0, 0.0, 100.0)?,
            atr: env.int("ATR_PERIOD", 14, 1, 10_000)?,
            macd_fast: env.int("MACD_FAST", 12, 2, 10_000)?,
            macd_slow: env.int("MACD_SLOW", 26, 2, 10_000)?,
            macd_signal: env.int("MACD_SIGNAL", 9, 1, 10_000)?,
            stoch_k: env.int("STOCH_K", 14, 1, 10_000)?,
            stoch_slow_k: env.int("STOCH_SLOW_K", 3, 1, 10_000)?,
            stoch_d: env.int("STOCH_D", 3, 1, 10_000)?,
            vwap_session_ms: env.duration_ms("VWAP_SESSION", 86_400_000, 1_000, 86_400_000 * 366)?
                as i64,
            vwap_offset_ms: env.duration_ms("VWAP_OFFSET", 0, 0, 86_400_000 * 366)? as i64,
            vwap_daily: None,
        };
        let vwap_by_calendar =
            env.get("VWAP_SESSION").is_none() && env.get("VWAP_OFFSET").is_none();
        if indicators.macd_fast >= indicators.macd_slow {
            return Err(ConfigError {
                var: "MACD_FAST",
                value: indicators.macd_fast.to_string(),
                reason: format!("must be below MACD_SLOW ({})", indicators.macd_slow),
            });
        }
        if let Err(reason) = indicators.validate() {
            return Err(ConfigError {
                var: "SMA_PERIOD",
                value: String::new(),
                reason: format!("indicator periods are inconsistent: {reason}"),
            });
        }
        let warmup_default = indicators.warmup_bars().max(100);
        let redis_url = env.get("REDIS_URL").filter(|s| !s.trim().is_empty());
        if let Some(url) = &redis_url {
            let scheme = url.split("://").next().unwrap_or_default();
            let usable = url.contains("://")
                && ["redis", "rediss", "unix", "redis+unix"].contains(&scheme)
                && redis::Client::open(url.as_str()).is_ok();
            if !usable {
                return Err(ConfigError {
                    var: "REDIS_URL",
                    // Never echo a password back into logs.
                    value: redact_url(url),
                    reason: "expected redis://[user:password@]host:port[/db], rediss://… or unix:///path".into(),
                });
            }
        }
        let log_format = match env.get("LOG_FORMAT").as_deref().map(str::trim) {
            None | Some("") | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError {
                    var: "LOG_FORMAT",
                    value: other.into(),
                    reason: "expected `text` or `json`".into(),
                });
            }
        };
        let http_addr = env.parse("HTTP_ADDR", "127.0.0.1:8000", |s| {
            s.parse::<SocketAddr>()
                .map_err(|_| "expected IP:PORT, e.g. 127.0.0.1:8000".to_string())
        })?;

        Ok(Self {
            symbols,
            calendars,
            vwap_by_calendar,
            sources,
            timeframes,
            collection_interval_ms,
            tick_deadline_ms,
            max_concurrency: env.int("MAX_CONCURRENCY", 64, 1, 100_000)?,
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
                    "1" | "true" | "yes" | "on" => Ok(BootstrapOnStart::Before),
                    "0" | "false" | "no" | "off" | "" => Ok(BootstrapOnStart::Off),
                    _ => Err("expected background, true or false".to_string()),
                }
            })?,
            redis_url,
            redis_pool_size: env.int("REDIS_POOL_SIZE", 4, 1, 1_024)?,
            redis_key_prefix: env.parse("REDIS_KEY_PREFIX", "barkeep", |s| {
                if !s.is_empty() && !s.contains(char::is_whitespace) {
                    Ok(s.to_string())
                } else {
                    Err("must be non-empty without whitespace".to_string())
                }
            })?,
            sqlite_path: env.parse("SQLITE_PATH", "./data/barkeep.db", |s| {
                if s.trim().is_empty() {
                    Err("must be a file path".to_string())
                } else {
                    Ok(PathBuf::from(s))
                }
            })?,
            http_addr,
            http_pool_size: env.int("HTTP_POOL_SIZE", 1_024, 1, 1_000_000)?,
            http_header_timeout_ms: env.duration_ms("HTTP_HEADER_TIMEOUT", 5_000, 100, 600_000)?,
            http_idle_timeout_ms: env.duration_ms("HTTP_IDLE_TIMEOUT", 30_000, 100, 3_600_000)?,
            http_max_connections_per_peer: env.int(
                "HTTP_MAX_CONNECTIONS_PER_PEER",
                64,
                1,
                1_000_000,
            )?,
            log_format,
            validation,
            synthetic: SyntheticConfig {
                seed: env.int("SYNTHETIC_SEED", 42_u64, 0, u64::MAX)?,
                bad_tick_rate: env.float("SYNTHETIC_BAD_TICK_RATE", 0.001, 0.0, 1.0)?,
                follow_calendars,
            },
            indicators,
            providers: crate::sources::settings::ProviderSettings::from_lookup(&get)?,
        })
    }
}

impl Config {
    /// The indicator parameters of a symbol on `calendar`: VWAP anchored at its session open
    /// unless fixed sessions were configured.
    pub fn indicators_for(&self, calendar: MarketCalendar) -> IndicatorParams {
        let mut params = self.indicators.clone();
        if self.vwap_by_calendar {
            params.vwap_daily = calendar.vwap_anchor();
        }
        params
    }
}

/// `MARKET_HOURS=SYMBOL:CALENDAR,…` (`*:CALENDAR` for every symbol) over each symbol's own
/// calendar, or over `always` when `all_open` (the simulated market alone, never closing).
fn market_hours(
    symbols: &[String],
    raw: String,
    all_open: bool,
) -> Result<Vec<MarketCalendar>, ConfigError> {
    let mut calendars: Vec<MarketCalendar> = symbols
        .iter()
        .map(|s| {
            if all_open {
                MarketCalendar::Always
            } else {
                MarketCalendar::for_symbol(s)
            }
        })
        .collect();
    let error = |reason: String| ConfigError {
        var: "MARKET_HOURS",
        value: raw.clone(),
        reason,
    };
    for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (symbol, name) = item
            .rsplit_once(':')
            .ok_or_else(|| error(format!("`{item}` is not SYMBOL:CALENDAR")))?;
        let calendar = MarketCalendar::parse(name).map_err(error)?;
        let symbol = symbol.trim().to_ascii_uppercase();
        if symbol == "*" {
            calendars.fill(calendar);
            continue;
        }
        let i = symbols
            .iter()
            .position(|s| *s == symbol)
            .ok_or_else(|| error(format!("`{symbol}` is not one of SYMBOLS")))?;
        calendars[i] = calendar;
    }
    Ok(calendars)
}

/// Typed readers over a variable look-up, each producing a [`ConfigError`] that names the variable.
struct Env<'a> {
    get: &'a dyn Fn(&str) -> Option<String>,
}

impl Env<'_> {
    fn get(&self, var: &str) -> Option<String> {
        (self.get)(var)
    }

    fn parse<T>(
        &self,
        var: &'static str,
        default: &str,
        f: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        let value = self.get(var).unwrap_or_else(|| default.to_string());
        f(value.trim()).map_err(|reason| ConfigError { var, value, reason })
    }

    fn list<T>(
        &self,
        var: &'static str,
        default: &str,
        f: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Vec<T>, ConfigError> {
        self.parse(var, default, |s| {
            let items: Vec<&str> = s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            if items.is_empty() {
                return Err("must list at least one comma-separated item".into());
            }
            let mut out = Vec::with_capacity(items.len());
            for item in &items {
                out.push(f(item)?);
            }
            let mut seen = items.clone();
            seen.sort_unstable();
            if let Some(w) = seen.windows(2).find(|w| w[0].eq_ignore_ascii_case(w[1])) {
                return Err(format!("`{}` is listed twice", w[0]));
            }
            Ok(out)
        })
    }

    fn int<T>(&self, var: &'static str, default: T, min: T, max: T) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        self.parse(var, &default.to_string(), |s| {
            let v: T = s
                .parse()
                .map_err(|_| format!("expected a whole number from {min} to {max}"))?;
            if v < min || v > max {
                return Err(format!("must be from {min} to {max}"));
            }
            Ok(v)
        })
    }

    fn float(
        &self,
        var: &'static str,
        default: f64,
        min: f64,
        max: f64,
    ) -> Result<f64, ConfigError> {
        self.parse(var, &default.to_string(), |s| {
            let v: f64 = s
                .parse()
                .map_err(|_| format!("expected a number from {min} to {max}"))?;
            if !v.is_finite() || v < min || v > max {
                return Err(format!("must be a finite number from {min} to {max}"));
            }
            Ok(v)
        })
    }

    fn duration_ms(
        &self,
        var: &'static str,
        default_ms: u64,
        min_ms: u64,
        max_ms: u64,
    ) -> Result<u64, ConfigError> {
        self.parse(var, &format!("{default_ms}ms"), |s| {
            let ms = parse_duration_ms(s)?;
            if ms < min_ms || ms > max_ms {
                return Err(format!("must be from {min_ms}ms to {max_ms}ms"));
            }
            Ok(ms)
        })
    }
}

/// `scheme://user:password@host` → `scheme://user:***@host`, so errors and `/health` never
/// show a secret.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            let hidden = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                "***".to_string()
            };
            format!("{}{hidden}{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// `250ms`, `1s`, `1.5s`, `2m`, `1h`, `1d`, or a bare number of seconds.
pub(crate) fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| {
        "expected a duration such as 500ms, 1s, 5m, 1h or a number of seconds".to_string()
    })?;
    let factor = match unit.trim() {
        "" | "s" => 1_000.0,
        "ms" => 1.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        other => {
            return Err(format!(
                "unknown duration unit `{other}` (use ms, s, m, h or d)"
            ));
        }
    };
    let ms = n * factor;
    if !ms.is_finite() || !(0.0..=1e15).contains(&ms) || ms.fract() != 0.0 {
        return Err("duration must be a whole number of milliseconds".into());
    }
    Ok(ms as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(move |name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn defaults_match_the_design() {
        let c = cfg(&[]).expect("defaults are valid");
        assert_eq!(c.symbols, ["NAS100", "XAUUSD", "EURUSD"]);
        assert_eq!(c.sources, ["synthetic"]);
        assert_eq!(c.timeframes, ["1m".parse::<Timeframe>().expect("valid")]);
        assert_eq!(c.collection_interval_ms, 1_000);
        assert_eq!(c.max_bars_cache, 5_000);
        assert_eq!(c.batch_write_interval_ms, 10_000);
        assert_eq!(c.feature_cache_ttl_ms, 2_000);
        assert_eq!(c.redis_url, None);
        assert_eq!(c.redis_key_prefix, "barkeep");
        assert_eq!(c.sqlite_path, PathBuf::from("./data/barkeep.db"));
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:8000");
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.http_header_timeout_ms, 5_000);
        assert_eq!(c.http_idle_timeout_ms, 30_000);
        assert_eq!(c.http_max_connections_per_peer, 64);
    }

    #[test]
    fn http_hardening_settings_are_validated() {
        let c = cfg(&[
            ("HTTP_HEADER_TIMEOUT", "750ms"),
            ("HTTP_IDLE_TIMEOUT", "2m"),
            ("HTTP_MAX_CONNECTIONS_PER_PEER", "8"),
        ])
        .expect("valid");
        assert_eq!(
            (
                c.http_header_timeout_ms,
                c.http_idle_timeout_ms,
                c.http_max_connections_per_peer
            ),
            (750, 120_000, 8)
        );
        for (var, value, hint) in [
            ("HTTP_HEADER_TIMEOUT", "0", "from 100ms"),
            ("HTTP_HEADER_TIMEOUT", "soon", "duration"),
            ("HTTP_HEADER_TIMEOUT", "11m", "600000ms"),
            ("HTTP_IDLE_TIMEOUT", "50ms", "from 100ms"),
            ("HTTP_IDLE_TIMEOUT", "2h", "3600000ms"),
            ("HTTP_MAX_CONNECTIONS_PER_PEER", "0", "from 1"),
            ("HTTP_MAX_CONNECTIONS_PER_PEER", "many", "whole number"),
        ] {
            let err = cfg(&[(var, value)]).expect_err(var);
            assert_eq!((err.var, err.value.as_str()), (var, value), "{err}");
            assert!(err.to_string().contains(hint), "{err}");
        }
    }

    #[test]
    fn redis_passwords_are_redacted() {
        assert_eq!(
            redact_url("redis://bot:s3cret@h:6379/0"),
            "redis://bot:***@h:6379/0"
        );
        assert_eq!(redact_url("rediss://:s3cret@h"), "rediss://:***@h");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
        let err = cfg(&[("REDIS_URL", "http://u:pw@h")]).expect_err("bad scheme");
        assert!(!err.to_string().contains("pw"), "{err}");
    }

    #[test]
    fn durations_accept_units_and_bare_seconds() {
        assert_eq!(parse_duration_ms("1"), Ok(1_000));
        assert_eq!(parse_duration_ms("0.5"), Ok(500));
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("2m"), Ok(120_000));
        assert!(parse_duration_ms("1 fortnight").is_err());
        assert!(parse_duration_ms("-1s").is_err());
    }

    #[test]
    fn errors_name_the_variable_and_value() {
        let cases = [
            ("COLLECTION_INTERVAL", "soon"),
            ("COLLECTION_INTERVAL", "0"),
            ("SYMBOLS", ""),
            ("SYMBOLS", "AAPL,aapl"),
            ("SYMBOLS", "A B"),
            ("SOURCES", "bloomberg"),
            ("TIMEFRAMES", "1x"),
            ("MAX_BARS_CACHE", "-5"),
            ("HTTP_ADDR", "localhost"),
            ("LOG_FORMAT", "yaml"),
            ("REDIS_URL", "localhost:6379"),
            ("MIN_QUALITY", "2"),
            ("SYNTHETIC_BAD_TICK_RATE", "NaN"),
            ("MACD_FAST", "40"),
            ("REDIS_URL", "redis://host:70000"),
        ];
        for (var, value) in cases {
            let err = cfg(&[(var, value)]).expect_err(var);
            assert_eq!(err.var, var, "{err}");
            assert_eq!(err.value, value, "{err}");
            let text = err.to_string();
            assert!(text.contains(var) && text.contains(value), "{text}");
        }
    }
}
