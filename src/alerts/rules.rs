/*!
The evaluator: every `COLLECTION_INTERVAL`, each rule's conditions from the metrics and the
snapshot, compared with the alerts active so far — new ones fire, gone ones resolve, the rest
get their new value. Rate rules look back over `ALERT_WINDOW` through a short history of counter
samples taken here, so nothing on the collector's side keeps windows for them.
*/

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::webhook::{Notice, NoticeKind};
use super::{AlertRecord, AlertSettings, Board, BoardView, RESOLVED_KEPT};
use crate::clock::Clock;
use crate::metrics::{Buckets, Gauge, Metrics};
use crate::model::AlertRule;
use crate::store::snapshot::Snapshot;

/// Which store queue a `queue_full` alert is about.
const QUEUES: [&str; 2] = ["redis", "sqlite"];

/// An alert's identity: its rule and the index of its subject (a symbol id, a source's or a
/// queue's position; 0 for the collector and Redis).
type Key = (AlertRule, u32);

/// The counters the rate rules difference over the window.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    redis_errors: u64,
    redis_writes: u64,
    missed_ticks: u64,
    ticks: Buckets,
}

impl Sample {
    fn of(m: &Metrics) -> Self {
        Self {
            redis_errors: m.redis_errors.get(),
            // Successful pipeline writes: the latency is recorded for each.
            redis_writes: m.redis_write_latency.count(),
            missed_ticks: m.missed_ticks.get(),
            ticks: m.tick_duration.buckets(),
        }
    }
}

/// A condition that holds now.
struct Holding {
    since_ms: i64,
    value: f64,
    threshold: Option<f64>,
    unit: &'static str,
    message: String,
}

/// Evaluates the rules; owns every alert's state.
pub struct Evaluator {
    settings: AlertSettings,
    metrics: Arc<Metrics>,
    snapshot: Arc<Snapshot>,
    board: Arc<Board>,
    clock: Clock,
    /// Whether Redis is configured (else its rule is not evaluated).
    redis: bool,
    /// When evaluation started: a symbol without any data is aged from here.
    started_ms: i64,
    /// Counter samples covering the window, oldest first.
    history: VecDeque<(Instant, Sample)>,
    /// Sources whose stream was seen not delivering, since when (Unix ms).
    stream_down_since: BTreeMap<u32, i64>,
    active: BTreeMap<Key, AlertRecord>,
    resolved: VecDeque<AlertRecord>,
    /// The webhook's queue, when one is configured.
    notices: Option<mpsc::Sender<Notice>>,
}

impl Evaluator {
    pub fn new(
        settings: AlertSettings,
        metrics: Arc<Metrics>,
        snapshot: Arc<Snapshot>,
        board: Arc<Board>,
        clock: Clock,
        redis: bool,
        notices: Option<mpsc::Sender<Notice>>,
    ) -> Self {
        metrics
            .symbol_last_data_ms
            .name(snapshot.symbols.iter().map(|(_, n)| Arc::clone(n)));
        metrics
            .symbol_market_open
            .name(snapshot.symbols.iter().map(|(_, n)| Arc::clone(n)));
        Self {
            started_ms: clock.now_ms(),
            settings,
            metrics,
            snapshot,
            board,
            clock,
            redis,
            history: VecDeque::new(),
            stream_down_since: BTreeMap::new(),
            active: BTreeMap::new(),
            resolved: VecDeque::new(),
            notices,
        }
    }

    /// Evaluates every `interval` until `shutdown`.
    pub async fn run(mut self, interval: Duration, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => self.evaluate(),
            }
        }
    }

    /// One evaluation: conditions now → fired, updated and resolved alerts, the board and the
    /// metrics.
    pub fn evaluate(&mut self) {
        let now_ms = self.clock.now_ms();
        let holding = self.conditions(now_ms, Instant::now());
        let mut fired = Vec::new();
        let mut still = BTreeMap::new();
        for (key, h) in holding {
            if self.settings.disabled.contains(&key.0) {
                continue;
            }
            let record = match self.active.remove(&key) {
                Some(mut r) => {
                    r.value = h.value;
                    r.message = h.message;
                    r
                }
                None => {
                    let r = AlertRecord {
                        rule: key.0,
                        subject: self.subject(key),
                        severity: key.0.severity(),
                        since_ms: h.since_ms,
                        resolved_ms: None,
                        value: h.value,
                        threshold: h.threshold,
                        unit: h.unit,
                        message: h.message,
                    };
                    fired.push(r.clone());
                    r
                }
            };
            still.insert(key, record);
        }
        let gone = std::mem::replace(&mut self.active, still);
        for record in fired {
            self.metrics.alerts_fired[record.rule].inc();
            tracing::warn!(
                rule = record.rule.as_str(),
                subject = &*record.subject,
                severity = record.severity.as_str(),
                value = record.value,
                threshold = record.threshold,
                "alert fired: {}",
                record.message
            );
            self.notify(NoticeKind::Fired, record);
        }
        for (_, mut record) in gone {
            record.resolved_ms = Some(now_ms);
            tracing::info!(
                rule = record.rule.as_str(),
                subject = &*record.subject,
                severity = record.severity.as_str(),
                active_ms = now_ms - record.since_ms,
                "alert resolved: {}",
                record.message
            );
            self.resolved.push_front(record.clone());
            self.resolved.truncate(RESOLVED_KEPT);
            self.notify(NoticeKind::Resolved, record);
        }
        for rule in AlertRule::ALL {
            let n = self.active.keys().filter(|(r, _)| *r == rule).count();
            self.metrics.alerts_active[rule].set(n as i64);
        }
        let mut active: Vec<AlertRecord> = self.active.values().cloned().collect();
        active.sort_by_key(|r| (std::cmp::Reverse(r.severity as u8), r.since_ms));
        self.board.publish(BoardView {
            evaluated_ms: Some(now_ms),
            active,
            resolved: self.resolved.iter().cloned().collect(),
        });
    }

    /// Hands an event to the webhook's queue; a full queue drops it (counted), never waits.
    fn notify(&self, kind: NoticeKind, record: AlertRecord) {
        if let Some(tx) = &self.notices
            && tx.try_send(Notice { kind, record }).is_err()
        {
            self.metrics.alert_notifications_dropped.inc();
        }
    }

    fn subject(&self, (rule, index): Key) -> Arc<str> {
        match rule {
            AlertRule::SymbolStale => Arc::clone(self.snapshot.symbols.name(index)),
            AlertRule::StreamDown | AlertRule::BreakerOpen => self
                .metrics
                .sources
                .get(index as usize)
                .map_or_else(|| Arc::from("?"), |s| Arc::from(s.name)),
            AlertRule::QueueFull => Arc::from(QUEUES.get(index as usize).copied().unwrap_or("?")),
            AlertRule::RedisErrors => Arc::from("redis"),
            AlertRule::TickSlow | AlertRule::TicksMissed => Arc::from("collector"),
        }
    }

    /// Every condition that holds now, by alert.
    fn conditions(&mut self, now_ms: i64, now: Instant) -> BTreeMap<Key, Holding> {
        let mut out = BTreeMap::new();
        self.sources(now_ms, &mut out);
        self.symbols(now_ms, &mut out);
        self.stores(&mut out);
        self.rates(now, &mut out);
        out
    }

    /// `stream_down` and `breaker_open`, per source.
    fn sources(&mut self, now_ms: i64, out: &mut BTreeMap<Key, Holding>) {
        let after_ms = self.settings.stream_down_after_ms as i64;
        for (i, s) in self.metrics.sources.iter().enumerate() {
            let i = i as u32;
            match s.stream_up.get() {
                0 => {
                    let since = *self.stream_down_since.entry(i).or_insert(now_ms);
                    let down_ms = now_ms - since;
                    if down_ms > after_ms {
                        out.insert(
                            (AlertRule::StreamDown, i),
                            Holding {
                                since_ms: since,
                                value: down_ms as f64 / 1e3,
                                threshold: Some(after_ms as f64 / 1e3),
                                unit: "seconds",
                                message: format!(
                                    "{}: push stream delivering nothing for {} (threshold {}); its symbols are polled meanwhile",
                                    s.name,
                                    human(down_ms),
                                    human(after_ms)
                                ),
                            },
                        );
                    }
                }
                _ => {
                    self.stream_down_since.remove(&i);
                }
            }
            let state = s.breaker_state.get();
            if state == 1 || state == 2 {
                let what = if state == 1 {
                    "open"
                } else {
                    "half-open (trial pending)"
                };
                out.insert(
                    (AlertRule::BreakerOpen, i),
                    Holding {
                        since_ms: now_ms,
                        value: state as f64,
                        threshold: None,
                        unit: "state",
                        message: format!(
                            "{}: circuit breaker {what} after repeated failures ({} errors, {} timeouts so far); requests go to the next source",
                            s.name,
                            s.errors.get(),
                            s.timeouts.get()
                        ),
                    },
                );
            }
        }
    }

    /// `symbol_stale` per symbol whose market is open, and the per-symbol gauges.
    fn symbols(&self, now_ms: i64, out: &mut BTreeMap<Key, Holding>) {
        let stale_ms = self.settings.stale_after_ms;
        let m = &self.metrics;
        for (id, name) in self.snapshot.symbols.active() {
            let seen = self.snapshot.freshness(id);
            // Before the first tick the session is not known yet: counted as open, as /health does.
            let open = seen.session.is_none_or(|s| s.open);
            let i = id as usize;
            if let Some(g) = m.symbol_last_data_ms.get(i) {
                g.set(seen.last_data_ms.unwrap_or(Gauge::UNSET));
            }
            if let Some(g) = m.symbol_market_open.get(i) {
                g.set(i64::from(open));
            }
            let last = seen.last_data_ms.unwrap_or(self.started_ms);
            let age_ms = (now_ms - last).max(0);
            if !open || age_ms <= stale_ms {
                continue;
            }
            let what = match seen.last_data_ms {
                Some(_) => format!("no new data for {}", human(age_ms)),
                None => format!("no data at all in the {} since start", human(age_ms)),
            };
            out.insert(
                (AlertRule::SymbolStale, id),
                Holding {
                    since_ms: last + stale_ms,
                    value: age_ms as f64 / 1e3,
                    threshold: Some(stale_ms as f64 / 1e3),
                    unit: "seconds",
                    message: format!(
                        "{name}: {what} while its market is open (threshold {}; last source {})",
                        human(stale_ms),
                        seen.source.unwrap_or("none")
                    ),
                },
            );
        }
    }

    /// `queue_full` for the Redis sink's and the SQLite writer's queues.
    fn stores(&self, out: &mut BTreeMap<Key, Holding>) {
        let m = &self.metrics;
        let queues = [
            (m.redis_queue_depth.get(), m.redis_queue_capacity.get()),
            (m.sqlite_queue_depth.get(), m.sqlite_queue_capacity.get()),
        ];
        for (i, (depth, capacity)) in queues.into_iter().enumerate() {
            if capacity <= 0 || depth == Gauge::UNSET {
                continue;
            }
            let share = depth as f64 / capacity as f64;
            if share > self.settings.queue_full {
                out.insert(
                    (AlertRule::QueueFull, i as u32),
                    Holding {
                        since_ms: self.clock.now_ms(),
                        value: share,
                        threshold: Some(self.settings.queue_full),
                        unit: "ratio",
                        message: format!(
                            "{} queue {depth} of {capacity} batches ({:.0} %, threshold {:.0} %): the store is not keeping up",
                            QUEUES[i],
                            share * 100.0,
                            self.settings.queue_full * 100.0
                        ),
                    },
                );
            }
        }
    }

    /// `redis_errors`, `tick_slow` and `ticks_missed` over the window.
    fn rates(&mut self, now: Instant, out: &mut BTreeMap<Key, Holding>) {
        let window = Duration::from_millis(self.settings.window_ms);
        let sample = Sample::of(&self.metrics);
        self.history.push_back((now, sample));
        // Keep the newest sample at or before the window's start as the baseline.
        while self
            .history
            .get(1)
            .is_some_and(|(at, _)| now.duration_since(*at) >= window)
        {
            self.history.pop_front();
        }
        let Some(&(_, base)) = self.history.front() else {
            return;
        };
        let since_ms = self.clock.now_ms();
        let over = human(self.settings.window_ms as i64);
        let errors = sample.redis_errors.saturating_sub(base.redis_errors);
        let writes = sample.redis_writes.saturating_sub(base.redis_writes);
        if self.redis && errors > 0 {
            let rate = errors as f64 / (errors + writes) as f64;
            if rate > self.settings.redis_error_rate {
                out.insert(
                    (AlertRule::RedisErrors, 0),
                    Holding {
                        since_ms,
                        value: rate,
                        threshold: Some(self.settings.redis_error_rate),
                        unit: "ratio",
                        message: format!(
                            "Redis: {errors} failed and {writes} successful writes over the last {over} ({:.1} % failing, threshold {:.1} %); bars keep going to SQLite",
                            rate * 100.0,
                            self.settings.redis_error_rate * 100.0
                        ),
                    },
                );
            }
        }
        let ticks = sample.ticks.since(&base.ticks);
        if ticks.count() > 0 {
            let p95_ms = ticks.quantile_ms(0.95, u64::MAX);
            let limit_ms = self.settings.tick_latency_ms as f64;
            if p95_ms > limit_ms {
                out.insert(
                    (AlertRule::TickSlow, 0),
                    Holding {
                        since_ms,
                        value: p95_ms / 1e3,
                        threshold: Some(limit_ms / 1e3),
                        unit: "seconds",
                        message: format!(
                            "collector: 95 % of the {} ticks of the last {over} took up to {:.0} ms (threshold {:.0} ms)",
                            ticks.count(),
                            p95_ms,
                            limit_ms
                        ),
                    },
                );
            }
        }
        let missed = sample.missed_ticks.saturating_sub(base.missed_ticks);
        if missed > self.settings.missed_ticks {
            out.insert(
                (AlertRule::TicksMissed, 0),
                Holding {
                    since_ms,
                    value: missed as f64,
                    threshold: Some(self.settings.missed_ticks as f64),
                    unit: "ticks",
                    message: format!(
                        "collector: {missed} ticks skipped over the last {over} because ticks overran the interval (threshold {})",
                        self.settings.missed_ticks
                    ),
                },
            );
        }
    }
}

/// A duration for people: `850 ms`, `42 s`, `3 min 5 s`, `2 h 10 min`.
pub fn human(ms: i64) -> String {
    let ms = ms.max(0);
    let s = ms / 1_000;
    match s {
        _ if ms < 1_000 => format!("{ms} ms"),
        0..60 => format!("{s} s"),
        60..3_600 if s % 60 == 0 => format!("{} min", s / 60),
        60..3_600 => format!("{} min {} s", s / 60, s % 60),
        _ if s % 3_600 / 60 == 0 => format!("{} h", s / 3_600),
        _ => format!("{} h {} min", s / 3_600, s % 3_600 / 60),
    }
}
