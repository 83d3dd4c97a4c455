/*!
Typed metrics: plain atomics written on the hot path, read by `/metrics/json` and `/metrics`.

Every metric is listed once, in [`Metrics::visit`]; the JSON and the Prometheus text renderers
are two visitors over that list, so the two endpoints cannot disagree. Latency histograms use
fixed power-of-two buckets (1 µs … ~67 s): recording is one atomic add, quantiles are read from
the buckets (accurate to the bucket, i.e. within a factor of two, and interpolated inside it),
and Prometheus gets real cumulative `_bucket` series. No exposition crate is used because the
ones available either lack quantiles for the JSON view or need a lock per observation.
*/

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::validate::RejectReason;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn set(&self, v: i64) {
        self.0.store(v, Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Relaxed)
    }
}

const BUCKETS: usize = 27;

/// Latency distribution over power-of-two microsecond buckets.
#[derive(Debug)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS],
    sum_us: AtomicU64,
    max_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Upper bound of bucket `i` in microseconds.
    fn bound_us(i: usize) -> u64 {
        1 << i
    }

    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        let i = (64 - (us - 1).leading_zeros() as usize).min(BUCKETS - 1);
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
        self.max_us.fetch_max(us, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// The `q` quantile in milliseconds (0 when empty), interpolated within its bucket.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let counts: Vec<u64> = self.counts.iter().map(|c| c.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let rank = (q * total as f64).ceil().max(1.0);
        let mut seen = 0.0;
        for (i, &c) in counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            if seen + c as f64 >= rank {
                let lo = if i == 0 {
                    0.0
                } else {
                    Self::bound_us(i - 1) as f64
                };
                let hi = (Self::bound_us(i) as f64)
                    .min(self.max_us.load(Relaxed) as f64)
                    .max(lo);
                return (lo + (hi - lo) * (rank - seen) / c as f64) / 1_000.0;
            }
            seen += c as f64;
        }
        self.max_us.load(Relaxed) as f64 / 1_000.0
    }
}

/// Counters of one source.
#[derive(Debug)]
pub struct SourceMetrics {
    pub name: &'static str,
    pub requests: Counter,
    pub errors: Counter,
    pub timeouts: Counter,
    pub quotes: Counter,
    pub rate_limited: Counter,
    pub budget_skips: Counter,
    pub breaker_opens: Counter,
    /// 0 closed, 1 open, 2 half-open.
    pub breaker_state: Gauge,
    /// Requests left in the per-minute bucket and today; −1 when unlimited.
    pub budget_minute: Gauge,
    pub budget_day: Gauge,
    /// The provider's clock minus ours (ms); [`SourceMetrics::UNMEASURED`] until an answer
    /// carried a `Date` header.
    pub clock_skew_ms: Gauge,
    pub latency: Histogram,
}

impl SourceMetrics {
    pub const UNMEASURED: i64 = i64::MIN;

    pub fn clock_skew(&self) -> Option<i64> {
        let v = self.clock_skew_ms.get();
        (v != Self::UNMEASURED).then_some(v)
    }
}

/// Everything barkeep counts.
#[derive(Debug)]
pub struct Metrics {
    pub ticks: Counter,
    pub missed_ticks: Counter,
    pub tick_deadline_hits: Counter,
    pub quotes_accepted: Counter,
    pub quotes_duplicate: Counter,
    /// Quotes while the symbol's market was closed (or from before its session).
    pub quotes_closed: Counter,
    /// Rejects of the same quote as the previous reject: in `rejects`, stored once.
    pub rejects_repeated: Counter,
    pub rejects: [Counter; RejectReason::ALL.len()],
    pub bars_closed: Counter,
    pub gaps: Counter,
    /// Gaps filled after the fact, the bars that filled them, and gaps confirmed empty.
    pub gaps_repaired: Counter,
    pub repaired_bars: Counter,
    pub gaps_empty: Counter,
    pub history_bars: Counter,
    pub stream_reconnects: Counter,
    pub sink_queue_full: Counter,
    pub redis_queue_full: Counter,
    pub redis_queue_depth: Gauge,
    pub redis_writes: Counter,
    pub redis_errors: Counter,
    pub redis_reconnects: Counter,
    pub redis_backfilled_bars: Counter,
    pub redis_recovered_bars: Counter,
    pub redis_coalesced: Counter,
    pub redis_write_latency: Histogram,
    pub sqlite_queue_depth: Gauge,
    pub sqlite_pending_rows: Gauge,
    /// Gaps waiting for their bars.
    pub gaps_pending: Gauge,
    pub sqlite_bars_written: Counter,
    pub sqlite_rejects_written: Counter,
    pub sqlite_flushes: Counter,
    pub sqlite_flush_errors: Counter,
    pub sqlite_last_flush_ms: Gauge,
    pub checkpoints_written: Counter,
    pub http_requests: Counter,
    pub http_client_errors: Counter,
    pub tick_duration: Histogram,
    pub sqlite_flush_duration: Histogram,
    pub http_latency: Histogram,
    pub sources: Vec<SourceMetrics>,
}

impl Metrics {
    pub fn new(source_names: &[&'static str]) -> Self {
        Self {
            ticks: Counter::default(),
            missed_ticks: Counter::default(),
            tick_deadline_hits: Counter::default(),
            quotes_accepted: Counter::default(),
            quotes_duplicate: Counter::default(),
            quotes_closed: Counter::default(),
            rejects_repeated: Counter::default(),
            rejects: std::array::from_fn(|_| Counter::default()),
            bars_closed: Counter::default(),
            gaps: Counter::default(),
            gaps_repaired: Counter::default(),
            repaired_bars: Counter::default(),
            gaps_empty: Counter::default(),
            history_bars: Counter::default(),
            stream_reconnects: Counter::default(),
            sink_queue_full: Counter::default(),
            redis_queue_full: Counter::default(),
            redis_queue_depth: Gauge::default(),
            redis_writes: Counter::default(),
            redis_errors: Counter::default(),
            redis_reconnects: Counter::default(),
            redis_backfilled_bars: Counter::default(),
            redis_recovered_bars: Counter::default(),
            redis_coalesced: Counter::default(),
            redis_write_latency: Histogram::default(),
            sqlite_queue_depth: Gauge::default(),
            sqlite_pending_rows: Gauge::default(),
            gaps_pending: Gauge::default(),
            sqlite_bars_written: Counter::default(),
            sqlite_rejects_written: Counter::default(),
            sqlite_flushes: Counter::default(),
            sqlite_flush_errors: Counter::default(),
            sqlite_last_flush_ms: Gauge::default(),
            checkpoints_written: Counter::default(),
            http_requests: Counter::default(),
            http_client_errors: Counter::default(),
            tick_duration: Histogram::default(),
            sqlite_flush_duration: Histogram::default(),
            http_latency: Histogram::default(),
            sources: source_names
                .iter()
                .map(|&name| SourceMetrics {
                    name,
                    requests: Counter::default(),
                    errors: Counter::default(),
                    timeouts: Counter::default(),
                    quotes: Counter::default(),
                    rate_limited: Counter::default(),
                    budget_skips: Counter::default(),
                    breaker_opens: Counter::default(),
                    breaker_state: Gauge::default(),
                    budget_minute: Gauge::default(),
                    budget_day: Gauge::default(),
                    clock_skew_ms: Gauge(AtomicI64::new(SourceMetrics::UNMEASURED)),
                    latency: Histogram::default(),
                })
                .collect(),
        }
    }

    pub fn reject(&self, reason: RejectReason) {
        self.rejects[reason.index()].inc();
    }

    pub fn source(&self, name: &str) -> Option<&SourceMetrics> {
        self.sources.iter().find(|s| s.name == name)
    }

    pub fn rejects_total(&self) -> u64 {
        self.rejects.iter().map(Counter::get).sum()
    }

    /// Walks every metric once; the renderers below are visitors.
    fn visit(&self, v: &mut dyn Visitor) {
        v.counter("ticks_total", "Collection ticks run", &[], self.ticks.get());
        v.counter(
            "missed_ticks_total",
            "Ticks skipped because the previous one overran",
            &[],
            self.missed_ticks.get(),
        );
        v.counter(
            "tick_deadline_hits_total",
            "Ticks whose sources did not all answer before the deadline",
            &[],
            self.tick_deadline_hits.get(),
        );
        v.counter(
            "quotes_accepted_total",
            "Quotes that passed validation",
            &[],
            self.quotes_accepted.get(),
        );
        v.counter(
            "quotes_duplicate_total",
            "Exact re-deliveries of the last quote",
            &[],
            self.quotes_duplicate.get(),
        );
        v.counter(
            "quotes_closed_total",
            "Quotes while the market was closed: not judged, no bar",
            &[],
            self.quotes_closed.get(),
        );
        v.counter(
            "rejects_repeated_total",
            "Rejects of the same quote again (counted in rejects_total, stored once)",
            &[],
            self.rejects_repeated.get(),
        );
        for reason in RejectReason::ALL {
            v.counter(
                "rejects_total",
                "Inputs refused, by reason",
                &[("reason", reason.as_str())],
                self.rejects[reason.index()].get(),
            );
        }
        v.counter(
            "bars_closed_total",
            "Bars closed by the bar builder",
            &[],
            self.bars_closed.get(),
        );
        v.counter(
            "gaps_total",
            "Intervals without data between two bars",
            &[],
            self.gaps.get(),
        );
        v.counter(
            "gaps_repaired_total",
            "Gaps filled after the fact from history",
            &[],
            self.gaps_repaired.get(),
        );
        v.counter(
            "repaired_bars_total",
            "Bars that filled gaps after the fact",
            &[],
            self.repaired_bars.get(),
        );
        v.counter(
            "gaps_empty_total",
            "Gaps the provider confirmed empty (no trades)",
            &[],
            self.gaps_empty.get(),
        );
        v.counter(
            "history_bars_total",
            "Closed bars taken from sources' history",
            &[],
            self.history_bars.get(),
        );
        v.counter(
            "stream_reconnects_total",
            "Push-stream reconnects (each followed by a backfill over history)",
            &[],
            self.stream_reconnects.get(),
        );
        v.counter(
            "sink_queue_full_total",
            "Ticks whose events waited because the sink queue was full",
            &[],
            self.sink_queue_full.get(),
        );
        v.counter(
            "redis_queue_full_total",
            "Batches the Redis sink could not take (rings rebuilt from SQLite)",
            &[],
            self.redis_queue_full.get(),
        );
        v.gauge(
            "redis_queue_depth",
            "Batches waiting for the Redis sink",
            &[],
            self.redis_queue_depth.get(),
        );
        v.counter(
            "redis_writes_total",
            "Bar and feature updates written to Redis",
            &[],
            self.redis_writes.get(),
        );
        v.counter(
            "redis_errors_total",
            "Failed Redis connects or writes",
            &[],
            self.redis_errors.get(),
        );
        v.counter(
            "redis_reconnects_total",
            "Reconnections to Redis after a failure",
            &[],
            self.redis_reconnects.get(),
        );
        v.counter(
            "redis_backfilled_bars_total",
            "Bars rewritten into Redis rings from SQLite",
            &[],
            self.redis_backfilled_bars.get(),
        );
        v.counter(
            "redis_recovered_bars_total",
            "Bars copied from Redis rings into SQLite after a crash",
            &[],
            self.redis_recovered_bars.get(),
        );
        v.counter(
            "redis_coalesced_total",
            "Live/feature updates superseded before they were written",
            &[],
            self.redis_coalesced.get(),
        );
        v.gauge(
            "sqlite_queue_depth",
            "Event batches waiting for the SQLite writer",
            &[],
            self.sqlite_queue_depth.get(),
        );
        v.gauge(
            "sqlite_pending_rows",
            "Rows buffered for the next SQLite flush",
            &[],
            self.sqlite_pending_rows.get(),
        );
        v.gauge(
            "gaps_pending",
            "Gaps waiting to be fetched again from history",
            &[],
            self.gaps_pending.get(),
        );
        v.gauge(
            "sqlite_last_flush_ms",
            "Unix ms of the last successful SQLite flush (0 before the first)",
            &[],
            self.sqlite_last_flush_ms.get(),
        );
        v.counter(
            "sqlite_bars_written_total",
            "Bars upserted into SQLite",
            &[],
            self.sqlite_bars_written.get(),
        );
        v.counter(
            "sqlite_rejects_written_total",
            "Rejected inputs stored in SQLite",
            &[],
            self.sqlite_rejects_written.get(),
        );
        v.counter(
            "sqlite_flushes_total",
            "SQLite flush transactions",
            &[],
            self.sqlite_flushes.get(),
        );
        v.counter(
            "sqlite_flush_errors_total",
            "SQLite flushes that failed (rows kept for the next one)",
            &[],
            self.sqlite_flush_errors.get(),
        );
        v.counter(
            "checkpoints_written_total",
            "Indicator states checkpointed",
            &[],
            self.checkpoints_written.get(),
        );
        v.counter(
            "http_requests_total",
            "HTTP requests served",
            &[],
            self.http_requests.get(),
        );
        v.counter(
            "http_client_errors_total",
            "HTTP requests answered 4xx",
            &[],
            self.http_client_errors.get(),
        );
        for s in &self.sources {
            let l = [("source", s.name)];
            v.counter(
                "source_requests_total",
                "Requests to a source",
                &l,
                s.requests.get(),
            );
            v.counter(
                "source_errors_total",
                "Failed requests to a source",
                &l,
                s.errors.get(),
            );
            v.counter(
                "source_timeouts_total",
                "Requests to a source cut by the tick deadline",
                &l,
                s.timeouts.get(),
            );
            v.counter(
                "source_quotes_total",
                "Quotes received from a source",
                &l,
                s.quotes.get(),
            );
            v.counter(
                "source_rate_limited_total",
                "Rate-limit answers from a source",
                &l,
                s.rate_limited.get(),
            );
            v.counter(
                "source_budget_skips_total",
                "Requests not sent because the source's budget was spent",
                &l,
                s.budget_skips.get(),
            );
            v.counter(
                "source_breaker_opens_total",
                "Times a source's circuit breaker opened",
                &l,
                s.breaker_opens.get(),
            );
            v.gauge(
                "source_breaker_state",
                "Circuit breaker: 0 closed, 1 open, 2 half-open",
                &l,
                s.breaker_state.get(),
            );
            v.gauge(
                "source_budget_minute",
                "Requests left this minute (-1 unlimited)",
                &l,
                s.budget_minute.get(),
            );
            v.gauge(
                "source_budget_day",
                "Requests left today (-1 unlimited)",
                &l,
                s.budget_day.get(),
            );
            if let Some(skew) = s.clock_skew() {
                v.gauge(
                    "source_clock_skew_ms",
                    "The source's clock minus ours, from its Date headers (ms)",
                    &l,
                    skew,
                );
            }
            v.histogram(
                "source_latency_seconds",
                "Source request latency",
                &l,
                &s.latency,
            );
        }
        v.histogram(
            "tick_duration_seconds",
            "Wall time of one collection tick",
            &[],
            &self.tick_duration,
        );
        v.histogram(
            "sqlite_flush_duration_seconds",
            "Wall time of one SQLite flush",
            &[],
            &self.sqlite_flush_duration,
        );
        v.histogram(
            "redis_write_latency_seconds",
            "Wall time of one Redis pipeline write",
            &[],
            &self.redis_write_latency,
        );
        v.histogram(
            "http_latency_seconds",
            "HTTP request handling time",
            &[],
            &self.http_latency,
        );
    }

    /// `{"counters": {...}, "gauges": {...}, "histograms": {name: {count, p50_ms, p95_ms, p99_ms, max_ms}}}`;
    /// labelled series are keyed `name{label="value"}`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut j = JsonVisitor::default();
        self.visit(&mut j);
        serde_json::json!({ "counters": j.counters, "gauges": j.gauges, "histograms": j.histograms })
    }

    /// The Prometheus text exposition format (version 0.0.4), names prefixed `barkeep_`.
    pub fn to_prometheus(&self) -> String {
        let mut p = PromVisitor::default();
        self.visit(&mut p);
        p.out
    }
}

trait Visitor {
    fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: u64);
    fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: i64);
    fn histogram(&mut self, name: &str, help: &str, labels: &[(&str, &str)], h: &Histogram);
}

fn series(name: &str, labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return name.to_string();
    }
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

#[derive(Default)]
struct JsonVisitor {
    counters: serde_json::Map<String, serde_json::Value>,
    gauges: serde_json::Map<String, serde_json::Value>,
    histograms: serde_json::Map<String, serde_json::Value>,
}

impl Visitor for JsonVisitor {
    fn counter(&mut self, name: &str, _: &str, labels: &[(&str, &str)], value: u64) {
        self.counters.insert(series(name, labels), value.into());
    }
    fn gauge(&mut self, name: &str, _: &str, labels: &[(&str, &str)], value: i64) {
        self.gauges.insert(series(name, labels), value.into());
    }
    fn histogram(&mut self, name: &str, _: &str, labels: &[(&str, &str)], h: &Histogram) {
        let name = name.trim_end_matches("_seconds");
        self.histograms.insert(
            series(name, labels),
            serde_json::json!({
                "count": h.count(),
                "p50_ms": h.quantile_ms(0.50),
                "p95_ms": h.quantile_ms(0.95),
                "p99_ms": h.quantile_ms(0.99),
                "max_ms": h.max_us.load(Relaxed) as f64 / 1_000.0,
                "sum_ms": h.sum_us.load(Relaxed) as f64 / 1_000.0,
            }),
        );
    }
}

#[derive(Default)]
struct PromVisitor {
    out: String,
    last_family: String,
}

impl PromVisitor {
    fn header(&mut self, name: &str, help: &str, kind: &str) {
        if self.last_family != name {
            let _ = writeln!(
                self.out,
                "# HELP barkeep_{name} {help}\n# TYPE barkeep_{name} {kind}"
            );
            self.last_family = name.to_string();
        }
    }
}

impl Visitor for PromVisitor {
    fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: u64) {
        self.header(name, help, "counter");
        let _ = writeln!(self.out, "barkeep_{} {value}", series(name, labels));
    }
    fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: i64) {
        self.header(name, help, "gauge");
        let _ = writeln!(self.out, "barkeep_{} {value}", series(name, labels));
    }
    fn histogram(&mut self, name: &str, help: &str, labels: &[(&str, &str)], h: &Histogram) {
        self.header(name, help, "histogram");
        let mut cumulative = 0;
        for (i, c) in h.counts.iter().enumerate() {
            cumulative += c.load(Relaxed);
            let le = format!("{}", Histogram::bound_us(i) as f64 / 1e6);
            let mut l = labels.to_vec();
            l.push(("le", &le));
            let _ = writeln!(
                self.out,
                "barkeep_{} {cumulative}",
                series(&format!("{name}_bucket"), &l)
            );
        }
        let mut l = labels.to_vec();
        l.push(("le", "+Inf"));
        let _ = writeln!(
            self.out,
            "barkeep_{} {cumulative}",
            series(&format!("{name}_bucket"), &l)
        );
        let sum = h.sum_us.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(
            self.out,
            "barkeep_{} {sum}",
            series(&format!("{name}_sum"), labels)
        );
        let _ = writeln!(
            self.out,
            "barkeep_{} {cumulative}",
            series(&format!("{name}_count"), labels)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_follow_the_data() {
        let h = Histogram::default();
        for us in 1..=1_000 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.quantile_ms(0.5);
        let p99 = h.quantile_ms(0.99);
        assert!((0.25..=1.0).contains(&p50), "{p50}");
        assert!((0.5..=1.0).contains(&p99) && p99 >= p50, "{p99}");
        assert_eq!(h.count(), 1_000);
    }

    #[test]
    fn both_renderings_carry_the_same_numbers() {
        let m = Metrics::new(&["synthetic"]);
        m.ticks.add(3);
        m.reject(RejectReason::Spike);
        m.tick_duration.record(Duration::from_millis(2));
        let json = m.to_json();
        assert_eq!(json["counters"]["ticks_total"], 3);
        assert_eq!(json["counters"]["rejects_total{reason=\"spike\"}"], 1);
        assert_eq!(json["histograms"]["tick_duration"]["count"], 1);
        let text = m.to_prometheus();
        assert!(text.contains("barkeep_ticks_total 3\n"));
        assert!(text.contains("barkeep_rejects_total{reason=\"spike\"} 1\n"));
        assert!(text.contains("# TYPE barkeep_tick_duration_seconds histogram"));
        assert!(text.contains("barkeep_tick_duration_seconds_count 1\n"));
        assert_eq!(
            text.matches("# TYPE barkeep_rejects_total counter").count(),
            1
        );
    }
}

#[cfg(test)]
mod export_tests {
    use super::*;

    /// Every counter, gauge and histogram field (found through `Debug`, so a field added later
    /// is checked too) appears in the Prometheus text under its own name.
    #[test]
    fn every_field_is_exported() {
        let m = Metrics::new(&["yahoo"]);
        m.sources[0].clock_skew_ms.set(12);
        let debug = format!("{m:?}");
        let text = m.to_prometheus();
        let mut fields = Vec::new();
        for marker in [": Counter(", ": Gauge(", ": Histogram {"] {
            for (at, _) in debug.match_indices(marker) {
                let start = debug[..at]
                    .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .map_or(0, |i| i + 1);
                fields.push(debug[start..at].to_string());
            }
        }
        assert!(fields.len() > 40, "fields found: {fields:?}");
        let missing: Vec<&String> = fields
            .iter()
            .filter(|f| {
                !["", "_total", "_seconds"].iter().any(|suffix| {
                    [
                        format!("barkeep_{f}{suffix}"),
                        format!("barkeep_source_{f}{suffix}"),
                    ]
                    .iter()
                    .any(|name| {
                        text.lines().any(|l| {
                            l.strip_prefix(name.as_str())
                                .is_some_and(|rest| rest.starts_with([' ', '{', '_']))
                        })
                    })
                })
            })
            .collect();
        assert!(missing.is_empty(), "not exported: {missing:?}\n{text}");
    }
}
