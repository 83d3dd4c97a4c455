/*! The alert rules barkeep evaluates, named once here so metrics can label by them. */

/// One alert rule (see `alerts`); its name is the `rule` label and the `rule` field of
/// `/alerts` and of the webhook's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertRule {
    /// A source's push stream has delivered nothing for longer than `ALERT_STREAM_DOWN_AFTER`.
    StreamDown,
    /// Redis writes failing above `ALERT_REDIS_ERROR_RATE` over `ALERT_WINDOW`.
    RedisErrors,
    /// A store queue above `ALERT_QUEUE_FULL` of its capacity.
    QueueFull,
    /// The 95th percentile tick over `ALERT_WINDOW` slower than `ALERT_TICK_LATENCY`.
    TickSlow,
    /// More than `ALERT_MISSED_TICKS` ticks skipped within `ALERT_WINDOW`.
    TicksMissed,
    /// A symbol whose market is open has had no data for longer than `ALERT_STALE_AFTER`.
    SymbolStale,
    /// A source's circuit breaker is open (or half-open, waiting for its trial).
    BreakerOpen,
}

impl AlertRule {
    pub const ALL: [AlertRule; 7] = [
        Self::StreamDown,
        Self::RedisErrors,
        Self::QueueFull,
        Self::TickSlow,
        Self::TicksMissed,
        Self::SymbolStale,
        Self::BreakerOpen,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::StreamDown => "stream_down",
            Self::RedisErrors => "redis_errors",
            Self::QueueFull => "queue_full",
            Self::TickSlow => "tick_slow",
            Self::TicksMissed => "ticks_missed",
            Self::SymbolStale => "symbol_stale",
            Self::BreakerOpen => "breaker_open",
        }
    }

    /// Position in [`Self::ALL`], for per-rule metrics.
    pub fn index(self) -> usize {
        self as usize
    }

    /// How urgent a firing of this rule is: `critical` when the bot is being fed stale or no
    /// data, `warning` when barkeep is degraded but still serving.
    pub fn severity(self) -> Severity {
        match self {
            Self::SymbolStale | Self::RedisErrors => Severity::Critical,
            _ => Severity::Warning,
        }
    }
}

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}
