/*!
The configuration's values checked against each other, after each was read on its own. Every
refusal names the variable to change and quotes its value (the default, when it was not set).

| check | variable named |
|---|---|
| no timeframe twice (`1m,60s`), none longer than [`MAX_TIMEFRAME_MS`] (7 days) | `TIMEFRAMES` |
| the interval not longer than the shortest timeframe (its bars would get no quote) | `COLLECTION_INTERVAL` |
| the tick deadline not longer than the interval | `TICK_DEADLINE` |
| data not stale between two ticks | `STALE_AFTER` |
| fast periods below slow ones | `EMA_FAST_PERIOD`, `MACD_FAST` |
| the VWAP session offset shorter than the session | `VWAP_OFFSET` |
| the HTTP pool and the rest within the hard open-files limit (`RLIMIT_NOFILE`) | `HTTP_POOL_SIZE` |
| each symbol's calendar given once, `*` first | `MARKET_HOURS` |
| a valid tracing filter | `RUST_LOG` |
*/

use super::{Config, ConfigError, OpenFiles};
use crate::calendar::MarketCalendar;
use crate::env::Env;
use crate::model::Timeframe;

/// The longest timeframe `TIMEFRAMES` accepts: a week. Bars sit on a grid of fixed lengths
/// from the Unix epoch; months are not fixed lengths, and one bar of a longer frame would need
/// more history than the providers' free tiers give for a warm-up.
pub const MAX_TIMEFRAME_MS: i64 = 7 * 86_400_000;

/// One item of `TIMEFRAMES`.
pub(super) fn timeframe(s: &str) -> Result<Timeframe, String> {
    let tf: Timeframe = s.parse()?;
    if tf.ms() > MAX_TIMEFRAME_MS {
        return Err(format!(
            "`{s}` is longer than the longest timeframe, {}",
            human(MAX_TIMEFRAME_MS as u64)
        ));
    }
    Ok(tf)
}

/// `RUST_LOG`: the filter `main` installs, refused here rather than silently replaced. Each
/// comma-separated directive is trimmed first: tracing-subscriber slices a directive at the
/// offsets of its trimmed text, so ` barkeep=debug` filtered target ` barkee` and a space
/// before a multi-byte character panicked (found by the `config` fuzz target).
pub(super) fn log_filter(s: &str) -> Result<String, String> {
    let s = s.split(',').map(str::trim).collect::<Vec<_>>().join(",");
    tracing_subscriber::EnvFilter::builder()
        .parse(&s)
        .map(|_| s.clone())
        .map_err(|e| format!("not a log filter ({e}); expected e.g. `info`, `warn,barkeep=debug`"))
}

/// Checks the values of `c` against each other; `env` says which were set.
pub(super) fn cross_check(
    c: &Config,
    env: &Env<'_>,
    open_files: OpenFiles,
) -> Result<(), ConfigError> {
    // The value as written, or the default when the variable was not set.
    let shown = |var: &'static str, default: String| env.get(var).unwrap_or(default);
    let refuse = |var: &'static str, default: String, reason: String| {
        Err(ConfigError::new(var, shown(var, default), reason))
    };
    let interval = c.collection_interval_ms;
    if let Some(shortest) = c.timeframes.iter().min_by_key(|t| t.ms())
        && interval > shortest.ms() as u64
    {
        return refuse(
            "COLLECTION_INTERVAL",
            human(interval),
            format!(
                "must not be longer than the shortest of TIMEFRAMES ({shortest}): its bars would \
                 get no quote and show as gaps"
            ),
        );
    }
    if c.tick_deadline_ms > interval {
        return refuse(
            "TICK_DEADLINE",
            human(c.tick_deadline_ms),
            format!(
                "must not be longer than COLLECTION_INTERVAL ({})",
                human(interval)
            ),
        );
    }
    let stale_after = c.validation.stale_after_ms as u64;
    if stale_after < interval {
        return refuse(
            "STALE_AFTER",
            human(stale_after),
            format!(
                "must not be shorter than COLLECTION_INTERVAL ({}): data would go stale between \
                 two ticks",
                human(interval)
            ),
        );
    }
    let p = &c.indicators;
    for (fast_var, fast, slow_var, slow) in [
        ("EMA_FAST_PERIOD", p.ema_fast, "EMA_SLOW_PERIOD", p.ema_slow),
        ("MACD_FAST", p.macd_fast, "MACD_SLOW", p.macd_slow),
    ] {
        if fast >= slow {
            return refuse(
                fast_var,
                fast.to_string(),
                format!("must be below {slow_var} ({slow})"),
            );
        }
    }
    if p.vwap_offset_ms >= p.vwap_session_ms {
        return refuse(
            "VWAP_OFFSET",
            human(p.vwap_offset_ms as u64),
            format!(
                "must be shorter than VWAP_SESSION ({}): each session starts this long after \
                 UTC midnight",
                human(p.vwap_session_ms as u64)
            ),
        );
    }
    if let Err(reason) = p.validate() {
        return refuse(
            "SMA_PERIOD",
            p.sma.to_string(),
            format!("indicator periods are inconsistent: {reason}"),
        );
    }
    let needed = c.open_files_needed();
    if let Some(hard) = open_files.hard
        && needed > hard
    {
        let reserve = needed - c.http_pool_size as u64;
        return refuse(
            "HTTP_POOL_SIZE",
            c.http_pool_size.to_string(),
            format!(
                "with {reserve} more descriptors for sources, Redis, SQLite and logs it needs \
                 {needed} open files, above this process's hard limit (RLIMIT_NOFILE) of \
                 {hard}; lower HTTP_POOL_SIZE to at most {} or raise the limit (ulimit -n, \
                 systemd LimitNOFILE=)",
                hard.saturating_sub(reserve)
            ),
        );
    }
    Ok(())
}

/// `MARKET_HOURS=SYMBOL:CALENDAR,…` (`*:CALENDAR` first, for every symbol) over each symbol's
/// own calendar, or over `always` when `all_open` (the simulated market alone, never closing).
pub(super) fn market_hours(
    symbols: &[String],
    raw: String,
    all_open: bool,
) -> Result<(Vec<MarketCalendar>, Option<MarketCalendar>), ConfigError> {
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
    let error = |reason: String| ConfigError::new("MARKET_HOURS", raw.clone(), reason);
    let mut given: Vec<String> = Vec::new();
    let mut every = all_open.then_some(MarketCalendar::Always);
    for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (symbol, name) = item
            .rsplit_once(':')
            .ok_or_else(|| error(format!("`{item}` is not SYMBOL:CALENDAR")))?;
        let calendar = MarketCalendar::parse(name).map_err(error)?;
        let symbol = symbol.trim().to_ascii_uppercase();
        if given.contains(&symbol) {
            return Err(error(format!("`{symbol}` is given twice")));
        }
        if symbol == "*" {
            if !given.is_empty() {
                return Err(error(
                    "`*` must come first: it would replace the calendars given before it".into(),
                ));
            }
            calendars.fill(calendar);
            every = Some(calendar);
        } else {
            let i = symbols
                .iter()
                .position(|s| *s == symbol)
                .ok_or_else(|| error(format!("`{symbol}` is not one of SYMBOLS")))?;
            calendars[i] = calendar;
        }
        given.push(symbol);
    }
    Ok((calendars, every))
}

/// `86400000` → `1d`, `90000` → `90s`, `250` → `250ms`: the largest unit that divides it.
pub(super) fn human(ms: u64) -> String {
    for (unit, len) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms >= len && ms.is_multiple_of(len) {
            return format!("{}{unit}", ms / len);
        }
    }
    format!("{ms}ms")
}
