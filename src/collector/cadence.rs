/*!
The collection cadence, changeable at run time (`/streaming/config/cadences/market_data`): the
tick interval, whether collection runs at all, retries of a failed request, and whether a
symbol a source could not answer falls through to the next source.

The collector reads the [`CadenceCell`] once per tick (one lock-free load); a new interval
takes effect from the next tick (the ticker is rebuilt then, the tick deadline keeping its
share of the interval), the rest from the next request. The values are checked here, each
refusal naming its field and its bounds, like the configuration's.
*/

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use arc_swap::ArcSwap;

use crate::config::Config;

/// The shortest interval, as `COLLECTION_INTERVAL` takes.
pub const MIN_INTERVAL_MS: u64 = 10;
/// The longest interval, as `COLLECTION_INTERVAL` takes.
pub const MAX_INTERVAL_MS: u64 = 3_600_000;
/// Most retries of one request within a tick.
pub const MAX_RETRY_ATTEMPTS: u32 = 10;
/// Longest wait before the first retry (later ones double it, within the tick's deadline).
pub const MAX_RETRY_BACKOFF_MS: u64 = 60_000;

/// How market data is collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cadence {
    /// The tick interval (`COLLECTION_INTERVAL` at start).
    pub interval_ms: u64,
    /// False: no source is asked and no bar is built until it is true again.
    pub enabled: bool,
    /// Retries of a failed request to the same source within the tick (0: fall back at once).
    pub retry_attempts: u32,
    /// Wait before the first retry; each further retry waits twice the previous one. A retry
    /// that would start after the tick's deadline is not made.
    pub retry_backoff_ms: u64,
    /// Whether symbols a source did not answer are asked of the next source in the same tick.
    pub vendor_fallback: bool,
}

/// A change to a [`Cadence`]: the fields given replace the current values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CadenceChange {
    pub interval_ms: Option<u64>,
    pub enabled: Option<bool>,
    pub retry_attempts: Option<u32>,
    pub retry_backoff_ms: Option<u64>,
    pub vendor_fallback: Option<bool>,
}

/// A value out of bounds: the field and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct CadenceError {
    pub field: &'static str,
    pub reason: String,
}

impl Cadence {
    /// The cadence the configuration starts with: its interval, enabled, no retries (a failed
    /// source falls back at once, as before run-time cadences existed), fallback on.
    pub fn of_config(config: &Config) -> Self {
        Self {
            interval_ms: config.collection_interval_ms,
            enabled: true,
            retry_attempts: 0,
            retry_backoff_ms: 100,
            vendor_fallback: true,
        }
    }

    /// This cadence with `change` applied, checked; `shortest_timeframe_ms` bounds the interval
    /// (a longer one would leave its bars without a quote).
    ///
    /// # Errors
    /// The first field out of bounds.
    pub fn with(
        self,
        change: &CadenceChange,
        shortest_timeframe_ms: u64,
    ) -> Result<Self, CadenceError> {
        let next = Self {
            interval_ms: change.interval_ms.unwrap_or(self.interval_ms),
            enabled: change.enabled.unwrap_or(self.enabled),
            retry_attempts: change.retry_attempts.unwrap_or(self.retry_attempts),
            retry_backoff_ms: change.retry_backoff_ms.unwrap_or(self.retry_backoff_ms),
            vendor_fallback: change.vendor_fallback.unwrap_or(self.vendor_fallback),
        };
        next.check(shortest_timeframe_ms)?;
        Ok(next)
    }

    /// # Errors
    /// The first field out of bounds.
    pub fn check(&self, shortest_timeframe_ms: u64) -> Result<(), CadenceError> {
        let refuse = |field, reason: String| Err(CadenceError { field, reason });
        let max_interval = MAX_INTERVAL_MS.min(shortest_timeframe_ms);
        if self.interval_ms < MIN_INTERVAL_MS {
            return refuse(
                "interval_ms",
                format!(
                    "{} is below the minimum of {MIN_INTERVAL_MS} ms",
                    self.interval_ms
                ),
            );
        }
        if self.interval_ms > max_interval {
            let why = if max_interval < MAX_INTERVAL_MS {
                " (the shortest of TIMEFRAMES: its bars would get no quote)"
            } else {
                ""
            };
            return refuse(
                "interval_ms",
                format!(
                    "{} is above the maximum of {max_interval} ms{why}",
                    self.interval_ms
                ),
            );
        }
        if self.retry_attempts > MAX_RETRY_ATTEMPTS {
            return refuse(
                "retry_attempts",
                format!(
                    "{} is above the maximum of {MAX_RETRY_ATTEMPTS}",
                    self.retry_attempts
                ),
            );
        }
        if self.retry_backoff_ms > MAX_RETRY_BACKOFF_MS {
            return refuse(
                "retry_backoff_ms",
                format!(
                    "{} is above the maximum of {MAX_RETRY_BACKOFF_MS} ms",
                    self.retry_backoff_ms
                ),
            );
        }
        Ok(())
    }
}

/// The cadence in force, shared by the collector (reads it each tick) and the API (replaces
/// it), with when the next tick is due.
pub struct CadenceCell {
    current: ArcSwap<Cadence>,
    /// Unix ms of the next tick (0 before the first; while paused, the next tick that would
    /// collect if collection were enabled).
    next_tick_ms: AtomicI64,
}

impl CadenceCell {
    pub fn new(cadence: Cadence) -> Arc<Self> {
        Arc::new(Self {
            current: ArcSwap::from_pointee(cadence),
            next_tick_ms: AtomicI64::new(0),
        })
    }

    pub fn get(&self) -> Cadence {
        **self.current.load()
    }

    pub fn set(&self, cadence: Cadence) {
        self.current.store(Arc::new(cadence));
    }

    pub fn next_tick_ms(&self) -> Option<i64> {
        let t = self.next_tick_ms.load(Ordering::Acquire);
        (t > 0).then_some(t)
    }

    pub(super) fn set_next_tick_ms(&self, at_ms: i64) {
        self.next_tick_ms.store(at_ms, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start() -> Cadence {
        Cadence {
            interval_ms: 1_000,
            enabled: true,
            retry_attempts: 0,
            retry_backoff_ms: 100,
            vendor_fallback: true,
        }
    }

    #[test]
    fn a_change_keeps_what_it_does_not_name_and_refusals_name_the_field() {
        let changed = start()
            .with(
                &CadenceChange {
                    interval_ms: Some(250),
                    retry_attempts: Some(2),
                    ..CadenceChange::default()
                },
                1_000,
            )
            .expect("in bounds");
        assert_eq!(changed.interval_ms, 250);
        assert_eq!(changed.retry_attempts, 2);
        assert_eq!(changed.retry_backoff_ms, 100);
        assert!(changed.enabled && changed.vendor_fallback);
        let field = |change: CadenceChange| start().with(&change, 60_000).expect_err("out").field;
        let interval = |ms| CadenceChange {
            interval_ms: Some(ms),
            ..CadenceChange::default()
        };
        assert_eq!(field(interval(5)), "interval_ms");
        assert_eq!(field(interval(60_001)), "interval_ms");
        let e = start()
            .with(&interval(2_000), 1_000)
            .expect_err("longer than 1s bars");
        assert!(e.reason.contains("TIMEFRAMES"), "{e}");
        assert_eq!(
            field(CadenceChange {
                retry_attempts: Some(11),
                ..CadenceChange::default()
            }),
            "retry_attempts"
        );
        assert_eq!(
            field(CadenceChange {
                retry_backoff_ms: Some(60_001),
                ..CadenceChange::default()
            }),
            "retry_backoff_ms"
        );
    }
}
