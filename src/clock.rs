/*!
Wall-clock time as the pipeline sees it, injectable for tests.

Production uses the system clock. Tests use [`Clock::tokio`], which anchors the wall clock once
and then advances with tokio's clock, so `tokio::time::pause()` and `advance()` move both the
collector's timers and the timestamps it stamps, and a minute of market takes no real time.
*/

use std::time::{SystemTime, UNIX_EPOCH};

/// A source of "now" in Unix milliseconds.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    System,
    Tokio {
        anchor_ms: i64,
        anchor: tokio::time::Instant,
    },
}

impl Clock {
    /// Follows tokio's (possibly paused) clock from `anchor_ms` on.
    pub fn tokio(anchor_ms: i64) -> Self {
        Self::Tokio {
            anchor_ms,
            anchor: tokio::time::Instant::now(),
        }
    }

    pub fn now_ms(&self) -> i64 {
        match self {
            Self::System => system_now_ms(),
            Self::Tokio { anchor_ms, anchor } => anchor_ms + anchor.elapsed().as_millis() as i64,
        }
    }
}

/// The system's wall clock in Unix milliseconds (0 if the clock is before 1970).
pub fn system_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
