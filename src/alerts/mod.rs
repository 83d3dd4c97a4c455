/*!
Alerts: rules over the metrics and the snapshot, evaluated every `COLLECTION_INTERVAL` on a task
of their own ([`rules::Evaluator`]), so the collector never waits for them. A rule's condition
holding for a subject (a symbol, a source, a queue, the collector) fires one alert; it stays
active, its value updated each evaluation, until the condition stops holding, when it resolves.
Each firing and each resolution is one log line, one event for the webhook ([`webhook`]) and a
change of `barkeep_alerts_active{rule}`; nothing is sent again while an alert stays active.

What it reads: counters and gauges of [`Metrics`] (Redis errors, queue depths, tick durations,
missed ticks, breaker states, stream liveness) and each symbol's freshness and session from the
[`Snapshot`] — a symbol whose market is closed is never stale. What it writes: the [`Board`]
`GET /alerts` reads (lock-free), the per-symbol freshness gauges, and the `alert*` metrics. It
imports nothing of the API or the collector.
*/

pub mod rules;
#[cfg(test)]
mod tests;
pub mod webhook;

use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::env::{Env, EnvError};
use crate::model::{AlertRule, Severity};

pub use rules::Evaluator;

/// The thresholds and the webhook (`ALERT_*` variables).
#[derive(Clone)]
pub struct AlertSettings {
    /// `ALERT_WEBHOOK_URL`: where firings and resolutions are POSTed; may hold a token.
    pub webhook_url: Option<String>,
    /// `ALERT_WINDOW`: what the rate rules (Redis errors, tick latency, missed ticks) look back.
    pub window_ms: u64,
    /// `ALERT_STREAM_DOWN_AFTER`: how long a push stream may deliver nothing.
    pub stream_down_after_ms: u64,
    /// `ALERT_REDIS_ERROR_RATE`: failed share of Redis writes over the window.
    pub redis_error_rate: f64,
    /// `ALERT_QUEUE_FULL`: share of a store queue's capacity.
    pub queue_full: f64,
    /// `ALERT_TICK_LATENCY`: the 95th percentile tick over the window.
    pub tick_latency_ms: u64,
    /// `ALERT_MISSED_TICKS`: ticks skipped within the window.
    pub missed_ticks: u64,
    /// `ALERT_STALE_AFTER` (default `STALE_AFTER`): data age while the market is open.
    pub stale_after_ms: i64,
    /// `ALERT_DISABLE`: rules not evaluated.
    pub disabled: Vec<AlertRule>,
    /// `ALERT_WEBHOOK_TIMEOUT`: one POST, connect to answer.
    pub webhook_timeout_ms: u64,
    /// `ALERT_WEBHOOK_PER_MINUTE`: POSTs at most (a burst of that many, then evenly).
    pub webhook_per_minute: u32,
    /// `ALERT_WEBHOOK_RETRIES`: attempts after the first for a POST that failed for a reason
    /// that may pass (a 5xx, a 429, a timeout, no connection).
    pub webhook_retries: u32,
}

/// The defaults, from the design: a stream down 30 s, 5 % Redis failures, 80 % of a queue, a
/// 1 s tick, stale after `STALE_AFTER` (2 min); no webhook.
impl Default for AlertSettings {
    fn default() -> Self {
        Self {
            webhook_url: None,
            window_ms: 60_000,
            stream_down_after_ms: 30_000,
            redis_error_rate: 0.05,
            queue_full: 0.8,
            tick_latency_ms: 1_000,
            missed_ticks: 3,
            stale_after_ms: 120_000,
            disabled: Vec::new(),
            webhook_timeout_ms: 10_000,
            webhook_per_minute: 20,
            webhook_retries: 5,
        }
    }
}

/// The webhook URL is a secret (Slack's and Discord's carry their token in the path).
impl std::fmt::Debug for AlertSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertSettings")
            .field(
                "webhook_url",
                &self.webhook_url.as_deref().map(webhook::shown),
            )
            .field("window_ms", &self.window_ms)
            .field("stream_down_after_ms", &self.stream_down_after_ms)
            .field("redis_error_rate", &self.redis_error_rate)
            .field("queue_full", &self.queue_full)
            .field("tick_latency_ms", &self.tick_latency_ms)
            .field("missed_ticks", &self.missed_ticks)
            .field("stale_after_ms", &self.stale_after_ms)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

impl AlertSettings {
    /// Reads the `ALERT_*` variables; `stale_after_ms` (`STALE_AFTER`) is the default of
    /// `ALERT_STALE_AFTER`.
    ///
    /// # Errors
    /// A variable that does not parse or is out of range, named with its value (a webhook URL
    /// is shown without its path and query).
    pub fn from_env(env: &Env<'_>, stale_after_ms: i64) -> Result<Self, EnvError> {
        const DAY_MS: u64 = 86_400_000;
        let webhook_url = env.optional("ALERT_WEBHOOK_URL", |s| {
            let url = reqwest::Url::parse(s).map_err(|e| format!("not a URL: {e}"))?;
            if !["http", "https"].contains(&url.scheme()) {
                return Err(format!(
                    "scheme must be http or https, got `{}`",
                    url.scheme()
                ));
            }
            if url.host_str().is_none_or(str::is_empty) {
                return Err("has no host".into());
            }
            Ok(s.to_string())
        });
        // The value in the error is the URL without what may be its token.
        let webhook_url =
            webhook_url.map_err(|e| EnvError::new(e.var, webhook::shown(&e.value), e.reason))?;
        let disabled = match env.get("ALERT_DISABLE") {
            None => Vec::new(),
            Some(_) => env.list("ALERT_DISABLE", "", |s| {
                AlertRule::ALL
                    .into_iter()
                    .find(|r| r.as_str().eq_ignore_ascii_case(s))
                    .ok_or_else(|| {
                        let names: Vec<&str> = AlertRule::ALL.iter().map(|r| r.as_str()).collect();
                        format!("unknown rule `{s}`; rules: {}", names.join(", "))
                    })
            })?,
        };
        let d = Self::default();
        Ok(Self {
            webhook_url,
            window_ms: env.duration_ms("ALERT_WINDOW", d.window_ms, 1_000, DAY_MS)?,
            stream_down_after_ms: env.duration_ms(
                "ALERT_STREAM_DOWN_AFTER",
                d.stream_down_after_ms,
                0,
                DAY_MS,
            )?,
            redis_error_rate: env.float("ALERT_REDIS_ERROR_RATE", d.redis_error_rate, 0.0, 1.0)?,
            queue_full: env.float("ALERT_QUEUE_FULL", d.queue_full, 0.0, 1.0)?,
            tick_latency_ms: env.duration_ms("ALERT_TICK_LATENCY", d.tick_latency_ms, 1, DAY_MS)?,
            missed_ticks: env.int("ALERT_MISSED_TICKS", d.missed_ticks, 0, 1_000_000)?,
            stale_after_ms: env.duration_ms(
                "ALERT_STALE_AFTER",
                u64::try_from(stale_after_ms).unwrap_or(120_000),
                1_000,
                DAY_MS * 30,
            )? as i64,
            disabled,
            webhook_timeout_ms: env.duration_ms(
                "ALERT_WEBHOOK_TIMEOUT",
                d.webhook_timeout_ms,
                100,
                600_000,
            )?,
            webhook_per_minute: env.int(
                "ALERT_WEBHOOK_PER_MINUTE",
                d.webhook_per_minute,
                1,
                10_000,
            )?,
            webhook_retries: env.int("ALERT_WEBHOOK_RETRIES", d.webhook_retries, 0, 100)?,
        })
    }

    /// Each rule's threshold and unit, for `/alerts`.
    pub fn rules(&self) -> Vec<RuleInfo> {
        AlertRule::ALL
            .into_iter()
            .map(|rule| {
                let (threshold, unit) = match rule {
                    AlertRule::StreamDown => {
                        (Some(self.stream_down_after_ms as f64 / 1e3), "seconds")
                    }
                    AlertRule::RedisErrors => (Some(self.redis_error_rate), "ratio"),
                    AlertRule::QueueFull => (Some(self.queue_full), "ratio"),
                    AlertRule::TickSlow => (Some(self.tick_latency_ms as f64 / 1e3), "seconds"),
                    AlertRule::TicksMissed => (Some(self.missed_ticks as f64), "ticks"),
                    AlertRule::SymbolStale => (Some(self.stale_after_ms as f64 / 1e3), "seconds"),
                    AlertRule::BreakerOpen => (None, "state"),
                };
                RuleInfo {
                    rule,
                    severity: rule.severity(),
                    threshold,
                    unit,
                    enabled: !self.disabled.contains(&rule),
                }
            })
            .collect()
    }
}

/// One rule as configured.
#[derive(Debug, Clone, Serialize)]
pub struct RuleInfo {
    pub rule: AlertRule,
    pub severity: Severity,
    /// `null` for `breaker_open`, which has none (open or half-open fires).
    pub threshold: Option<f64>,
    pub unit: &'static str,
    pub enabled: bool,
}

/// One alert, active or resolved: what `/alerts` lists and the webhook sends.
#[derive(Debug, Clone, Serialize)]
pub struct AlertRecord {
    pub rule: AlertRule,
    /// What it is about: a symbol, a source, a queue (`redis`, `sqlite`) or `collector`.
    #[serde(serialize_with = "as_str")]
    pub subject: Arc<str>,
    pub severity: Severity,
    /// When the condition began (Unix ms): for a stale symbol, its last data plus the
    /// threshold.
    pub since_ms: i64,
    /// When it stopped holding; `null` while active.
    pub resolved_ms: Option<i64>,
    /// The measured value, in `unit` (the last one measured, for a resolved alert).
    pub value: f64,
    pub threshold: Option<f64>,
    pub unit: &'static str,
    pub message: String,
}

fn as_str<S: serde::Serializer>(s: &Arc<str>, out: S) -> Result<S::Ok, S::Error> {
    out.serialize_str(s)
}

/// Resolved alerts `/alerts` keeps, newest first.
pub const RESOLVED_KEPT: usize = 50;

/// What `/alerts` answers, replaced whole after each evaluation.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BoardView {
    /// When the rules were last evaluated (Unix ms); `null` before the first evaluation.
    pub evaluated_ms: Option<i64>,
    /// Critical first, then the oldest first.
    pub active: Vec<AlertRecord>,
    /// The last [`RESOLVED_KEPT`], newest first.
    pub resolved: Vec<AlertRecord>,
}

/// The alerts as last evaluated, read by the API without a lock.
#[derive(Debug)]
pub struct Board {
    view: ArcSwap<BoardView>,
    /// The configured rules, fixed at start.
    pub rules: Vec<RuleInfo>,
    /// Whether `ALERT_WEBHOOK_URL` is set.
    pub webhook: bool,
}

impl Board {
    pub fn new(settings: &AlertSettings) -> Self {
        Self {
            view: ArcSwap::from_pointee(BoardView::default()),
            rules: settings.rules(),
            webhook: settings.webhook_url.is_some(),
        }
    }

    pub fn view(&self) -> Arc<BoardView> {
        self.view.load_full()
    }

    pub(crate) fn publish(&self, view: BoardView) {
        self.view.store(Arc::new(view));
    }
}

/// What the alert tasks read, from the wiring in `app`.
pub struct Wiring {
    pub metrics: Arc<crate::metrics::Metrics>,
    pub snapshot: Arc<crate::store::snapshot::Snapshot>,
    pub clock: crate::clock::Clock,
    /// How often the rules are evaluated: `COLLECTION_INTERVAL`.
    pub interval: std::time::Duration,
    /// Whether Redis is configured.
    pub redis: bool,
    /// Which barkeep this is, in the webhook's messages (its address and shard).
    pub instance: String,
}

/// Starts the evaluator, and the webhook's task when `ALERT_WEBHOOK_URL` is set, on `tracker`;
/// both stop on `shutdown`.
///
/// # Errors
/// The webhook's HTTP client cannot be built.
pub fn spawn(
    settings: &AlertSettings,
    wiring: Wiring,
    tracker: &tokio_util::task::TaskTracker,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<Arc<Board>, reqwest::Error> {
    let board = Arc::new(Board::new(settings));
    let webhook = webhook::Webhook::new(settings, wiring.instance, Arc::clone(&wiring.metrics))?;
    let notices = webhook.map(|w| {
        let (tx, rx) = tokio::sync::mpsc::channel(webhook::QUEUE);
        tracker.spawn(w.run(rx, shutdown.clone()));
        tx
    });
    let evaluator = Evaluator::new(
        settings.clone(),
        wiring.metrics,
        wiring.snapshot,
        Arc::clone(&board),
        wiring.clock,
        wiring.redis,
        notices,
    );
    tracker.spawn(evaluator.run(wiring.interval, shutdown.clone()));
    Ok(board)
}
