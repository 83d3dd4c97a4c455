/*!
Typed metrics: plain atomics written on the hot path, read by `/metrics/json` and `/metrics`.

Every metric is declared once, in the `metrics!` table below: its field, its exported name,
its help text and its kind (the field's type: [`Counter`], [`Gauge`], [`Histogram`], or
[`ByReason`] for a family labelled `reason`; everything in [`SourceMetrics`] is a family
labelled `source`). The struct fields, the constructor, the descriptor list
[`Metrics::FAMILIES`] and the walk both renderers share are generated from that table, so a
metric cannot be declared and left out of an endpoint, and the two endpoints cannot disagree.

Names follow the Prometheus conventions: base units (`_seconds`; times of day are
`_timestamp_seconds`), `_total` on counters and only on counters. A gauge declared `in ms` is
stored in milliseconds (what the code and `/health` use) and exported in seconds; `/metrics/json`
keeps its millisecond value under the name given with `as`. Latency histograms use fixed
power-of-two buckets (1 µs … ~67 s): recording is three relaxed atomic operations, no lock, no
allocation; quantiles are read from the buckets (accurate to the bucket, i.e. within a factor
of two, and interpolated inside it) for the JSON view, and Prometheus gets real cumulative
`_bucket` series with `_sum` and `_count` in seconds. No exposition crate is used because the
ones available either lack quantiles for the JSON view or need a lock per observation.
*/

use std::fmt::Write as _;
use std::ops::{Deref, Index};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::model::RejectReason;

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
    /// A gauge holding this has no sample: it is left out of both renderings.
    pub const UNSET: i64 = i64::MIN;

    pub const fn new(v: i64) -> Self {
        Self(AtomicI64::new(v))
    }
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
        let counts: [u64; BUCKETS] = std::array::from_fn(|i| self.counts[i].load(Relaxed));
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

/// Number of reject reasons, the length of a [`ByReason`].
pub const REASONS: usize = RejectReason::ALL.len();

/// One `M` per reject reason, indexed by [`RejectReason::index`] (or by the reason itself);
/// exported as one family labelled `reason`, with a series for every reason.
#[derive(Debug)]
pub struct ByReason<M>([M; REASONS]);

impl<M: Default> Default for ByReason<M> {
    fn default() -> Self {
        Self(std::array::from_fn(|_| M::default()))
    }
}

impl<M> Deref for ByReason<M> {
    type Target = [M; REASONS];
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<M> Index<RejectReason> for ByReason<M> {
    type Output = M;
    fn index(&self, reason: RejectReason) -> &M {
        &self.0[reason.index()]
    }
}

/// What a family is exported as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    /// The Prometheus `# TYPE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// The unit a gauge's integer is stored in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Exported as stored (a count, a state).
    One,
    /// Stored in milliseconds; Prometheus gets seconds, `/metrics/json` the milliseconds.
    Millis,
}

/// One declared metric family: everything both renderings need to know about it.
#[derive(Debug)]
pub struct Family {
    /// The Prometheus name, without the `barkeep_` prefix.
    pub name: &'static str,
    /// The `/metrics/json` name when it is not the default (see [`Family::json_name`]).
    pub json: Option<&'static str>,
    pub help: &'static str,
    pub kind: Kind,
    /// The label the family's series differ by (`reason`, `source`), if any.
    pub label: Option<&'static str>,
    pub unit: Unit,
}

impl Family {
    /// The key in `/metrics/json`: the declared `as` name, else the Prometheus name (for
    /// histograms without `_seconds`, since JSON reports them in milliseconds).
    pub fn json_name(&self) -> &'static str {
        match (self.json, self.kind) {
            (Some(name), _) => name,
            (None, Kind::Histogram) => self.name.strip_suffix("_seconds").unwrap_or(self.name),
            (None, _) => self.name,
        }
    }
}

/// One series' current value.
pub enum Sample<'a> {
    Counter(u64),
    Gauge(i64),
    Histogram(&'a Histogram),
}

/// A type that is one series.
pub trait Metric {
    const KIND: Kind;
    /// The current value; `None` for a gauge holding [`Gauge::UNSET`].
    fn sample(&self) -> Option<Sample<'_>>;
}

impl Metric for Counter {
    const KIND: Kind = Kind::Counter;
    fn sample(&self) -> Option<Sample<'_>> {
        Some(Sample::Counter(self.get()))
    }
}

impl Metric for Gauge {
    const KIND: Kind = Kind::Gauge;
    fn sample(&self) -> Option<Sample<'_>> {
        let v = self.get();
        (v != Self::UNSET).then_some(Sample::Gauge(v))
    }
}

impl Metric for Histogram {
    const KIND: Kind = Kind::Histogram;
    fn sample(&self) -> Option<Sample<'_>> {
        Some(Sample::Histogram(self))
    }
}

/// A field type of [`Metrics`]: one series, or one per value of [`Series::LABEL`].
pub trait Series {
    const KIND: Kind;
    const LABEL: Option<&'static str>;
    /// Calls `f` with each series' label value (`""` when unlabelled) and sample.
    fn each(&self, f: &mut dyn FnMut(&str, Sample<'_>));
}

macro_rules! unlabelled {
    ($($ty:ty),*) => {$(
        impl Series for $ty {
            const KIND: Kind = <$ty as Metric>::KIND;
            const LABEL: Option<&'static str> = None;
            fn each(&self, f: &mut dyn FnMut(&str, Sample<'_>)) {
                if let Some(s) = self.sample() {
                    f("", s);
                }
            }
        }
    )*};
}
unlabelled!(Counter, Gauge, Histogram);

impl<M: Metric> Series for ByReason<M> {
    const KIND: Kind = M::KIND;
    const LABEL: Option<&'static str> = Some("reason");
    fn each(&self, f: &mut dyn FnMut(&str, Sample<'_>)) {
        for reason in RejectReason::ALL {
            if let Some(s) = self[reason].sample() {
                f(reason.as_str(), s);
            }
        }
    }
}

/// The table: `field: Type [= initial value] => "prometheus_name" [in ms] [as "json_name"],
/// "help";`. The first struct's fields are families of their own (`Series` types); the second
/// struct is one source's, each of its fields a family labelled `source` (`Metric` types).
macro_rules! metrics {
    (
        $(#[$meta:meta])*
        pub struct Metrics {
            $(
                $(#[$doc:meta])*
                $field:ident: $ty:ty $(= $init:expr)? =>
                    $name:literal $(in $unit:ident)? $(as $json:literal)?, $help:literal;
            )*
        }
        $(#[$smeta:meta])*
        pub struct SourceMetrics {
            $(
                $(#[$sdoc:meta])*
                $sfield:ident: $sty:ty $(= $sinit:expr)? =>
                    $sname:literal $(in $sunit:ident)? $(as $sjson:literal)?, $shelp:literal;
            )*
        }
    ) => {
        $(#[$meta])*
        pub struct Metrics {
            $(
                $(#[$doc])*
                #[doc = concat!("\n\nExported as `barkeep_", $name, "`: ", $help, ".")]
                pub $field: $ty,
            )*
            /// One [`SourceMetrics`] per configured source, in `SOURCES` order.
            pub sources: Vec<SourceMetrics>,
        }

        $(#[$smeta])*
        pub struct SourceMetrics {
            pub name: &'static str,
            $(
                $(#[$sdoc])*
                #[doc = concat!("\n\nExported as `barkeep_", $sname, "{source=…}`: ", $shelp, ".")]
                pub $sfield: $sty,
            )*
        }

        /// The descriptor of every family, one constant per field.
        #[allow(non_upper_case_globals)]
        mod family {
            use super::*;
            pub mod top {
                use super::*;
                $(
                    pub const $field: Family = Family {
                        name: $name,
                        json: metrics!(@json $($json)?),
                        help: $help,
                        kind: <$ty as Series>::KIND,
                        label: <$ty as Series>::LABEL,
                        unit: metrics!(@unit $($unit)?),
                    };
                )*
            }
            pub mod source {
                use super::*;
                $(
                    pub const $sfield: Family = Family {
                        name: $sname,
                        json: metrics!(@json $($sjson)?),
                        help: $shelp,
                        kind: <$sty as Metric>::KIND,
                        label: Some("source"),
                        unit: metrics!(@unit $($sunit)?),
                    };
                )*
            }
        }

        impl Metrics {
            /// Every exported family, in exposition order.
            pub const FAMILIES: &'static [Family] =
                &[$(family::top::$field,)* $(family::source::$sfield,)*];

            pub fn new(source_names: &[&'static str]) -> Self {
                Self {
                    $($field: metrics!(@init $($init)?),)*
                    sources: source_names
                        .iter()
                        .map(|&name| SourceMetrics {
                            name,
                            $($sfield: metrics!(@init $($sinit)?),)*
                        })
                        .collect(),
                }
            }

            /// Walks every family in [`Self::FAMILIES`] order, each with all its series.
            fn visit(&self, v: &mut impl Visitor) {
                $(
                    let f = &family::top::$field;
                    v.family(f);
                    self.$field.each(&mut |label, s| v.sample(f, label, s));
                )*
                $(
                    let f = &family::source::$sfield;
                    v.family(f);
                    for s in &self.sources {
                        if let Some(sample) = Metric::sample(&s.$sfield) {
                            v.sample(f, s.name, sample);
                        }
                    }
                )*
            }
        }
    };
    (@json) => { None };
    (@json $json:literal) => { Some($json) };
    (@unit) => { Unit::One };
    (@unit ms) => { Unit::Millis };
    (@init) => { Default::default() };
    (@init $init:expr) => { $init };
}

metrics! {
    /// Everything barkeep counts.
    #[derive(Debug)]
    pub struct Metrics {
        ticks: Counter => "ticks_total", "Collection ticks run";
        missed_ticks: Counter =>
            "missed_ticks_total", "Ticks skipped because the previous one overran";
        tick_deadline_hits: Counter =>
            "tick_deadline_hits_total", "Ticks whose sources did not all answer before the deadline";
        tick_duration: Histogram =>
            "tick_duration_seconds", "Wall time of one collection tick";
        quotes_accepted: Counter => "quotes_accepted_total", "Quotes that passed validation";
        quotes_duplicate: Counter =>
            "quotes_duplicate_total", "Exact re-deliveries of the last quote";
        /// Quotes while the symbol's market was closed (or from before its session).
        quotes_closed: Counter =>
            "quotes_closed_total", "Quotes while the market was closed: not judged, no bar";
        /// Indexed by [`RejectReason::index`]; see [`Metrics::reject`].
        rejects: ByReason<Counter> => "rejects_total", "Inputs refused, by reason";
        /// Rejects of the same quote as the previous reject: in `rejects`, stored once.
        rejects_repeated: Counter =>
            "rejects_repeated_total",
            "Rejects of the same quote again (counted in rejects_total, stored once)";
        bars_closed: Counter => "bars_closed_total", "Bars closed by the bar builder";
        gaps: Counter => "gaps_total", "Intervals without data between two bars";
        /// Gaps filled after the fact, the bars that filled them, and gaps confirmed empty.
        gaps_repaired: Counter => "gaps_repaired_total", "Gaps filled after the fact from history";
        repaired_bars: Counter => "repaired_bars_total", "Bars that filled gaps after the fact";
        gaps_empty: Counter =>
            "gaps_empty_total", "Gaps the provider confirmed empty (no trades)";
        /// Gaps waiting for their bars.
        gaps_pending: Gauge => "gaps_pending", "Gaps waiting to be fetched again from history";
        history_bars: Counter => "history_bars_total", "Closed bars taken from sources' history";
        stream_reconnects: Counter =>
            "stream_reconnects_total",
            "Push-stream reconnects (each followed by a backfill over history)";
        sink_queue_full: Counter =>
            "sink_queue_full_total", "Ticks whose events waited because the sink queue was full";
        redis_queue_full: Counter =>
            "redis_queue_full_total",
            "Batches the Redis sink could not take (rings rebuilt from SQLite)";
        redis_queue_depth: Gauge => "redis_queue_depth", "Batches waiting for the Redis sink";
        redis_writes: Counter =>
            "redis_writes_total", "Bar and feature updates written to Redis";
        redis_errors: Counter => "redis_errors_total", "Failed Redis connects or writes";
        redis_reconnects: Counter =>
            "redis_reconnects_total", "Reconnections to Redis after a failure";
        redis_backfilled_bars: Counter =>
            "redis_backfilled_bars_total", "Bars rewritten into Redis rings from SQLite";
        redis_recovered_bars: Counter =>
            "redis_recovered_bars_total", "Bars copied from Redis rings into SQLite after a crash";
        redis_resyncs: Counter =>
            "redis_resyncs_total", "Times every Redis ring was reconciled with SQLite";
        redis_coalesced: Counter =>
            "redis_coalesced_total", "Live/feature updates superseded before they were written";
        redis_write_latency: Histogram =>
            "redis_write_latency_seconds", "Wall time of one Redis pipeline write";
        sqlite_queue_depth: Gauge =>
            "sqlite_queue_depth", "Event batches waiting for the SQLite writer";
        sqlite_pending_rows: Gauge =>
            "sqlite_pending_rows", "Rows buffered for the next SQLite flush";
        sqlite_bars_written: Counter => "sqlite_bars_written_total", "Bars upserted into SQLite";
        sqlite_rejects_written: Counter =>
            "sqlite_rejects_written_total", "Rejected inputs stored in SQLite";
        sqlite_flushes: Counter => "sqlite_flushes_total", "SQLite flush transactions";
        sqlite_flush_errors: Counter =>
            "sqlite_flush_errors_total", "SQLite flushes that failed (rows kept for the next one)";
        sqlite_flush_duration: Histogram =>
            "sqlite_flush_duration_seconds", "Wall time of one SQLite flush";
        /// Unix milliseconds of the last successful flush, 0 before the first (`/health` reads it).
        sqlite_last_flush_ms: Gauge =>
            "sqlite_last_flush_timestamp_seconds" in ms as "sqlite_last_flush_ms",
            "Unix time of the last successful SQLite flush (0 before the first)";
        checkpoints_written: Counter =>
            "checkpoints_written_total", "Indicator states checkpointed";
        http_requests: Counter => "http_requests_total", "HTTP requests served";
        http_client_errors: Counter => "http_client_errors_total", "HTTP requests answered 4xx";
        http_latency: Histogram => "http_latency_seconds", "HTTP request handling time";
    }

    /// Counters of one source.
    #[derive(Debug)]
    pub struct SourceMetrics {
        requests: Counter => "source_requests_total", "Requests to a source";
        errors: Counter => "source_errors_total", "Failed requests to a source";
        timeouts: Counter =>
            "source_timeouts_total", "Requests to a source cut by the tick deadline";
        quotes: Counter => "source_quotes_total", "Quotes received from a source";
        rate_limited: Counter => "source_rate_limited_total", "Rate-limit answers from a source";
        budget_skips: Counter =>
            "source_budget_skips_total", "Requests not sent because the source's budget was spent";
        breaker_opens: Counter =>
            "source_breaker_opens_total", "Times a source's circuit breaker opened";
        /// 0 closed, 1 open, 2 half-open.
        breaker_state: Gauge =>
            "source_breaker_state", "Circuit breaker: 0 closed, 1 open, 2 half-open";
        /// Requests left in the per-minute bucket and today; −1 when unlimited.
        budget_minute: Gauge =>
            "source_budget_minute", "Requests left this minute (-1 unlimited)";
        budget_day: Gauge => "source_budget_day", "Requests left today (-1 unlimited)";
        /// The provider's clock minus ours (ms); [`SourceMetrics::UNMEASURED`] (no sample) until
        /// an answer carried a `Date` header.
        clock_skew_ms: Gauge = Gauge::new(SourceMetrics::UNMEASURED) =>
            "source_clock_skew_seconds" in ms as "source_clock_skew_ms",
            "The source's clock minus ours, from its Date headers";
        latency: Histogram => "source_latency_seconds", "Source request latency";
    }
}

impl SourceMetrics {
    pub const UNMEASURED: i64 = Gauge::UNSET;

    pub fn clock_skew(&self) -> Option<i64> {
        let v = self.clock_skew_ms.get();
        (v != Self::UNMEASURED).then_some(v)
    }
}

impl Metrics {
    pub fn reject(&self, reason: RejectReason) {
        self.rejects[reason].inc();
    }

    pub fn source(&self, name: &str) -> Option<&SourceMetrics> {
        self.sources.iter().find(|s| s.name == name)
    }

    pub fn rejects_total(&self) -> u64 {
        self.rejects.iter().map(Counter::get).sum()
    }

    /// `{"counters": {...}, "gauges": {...}, "histograms": {name: {count, p50_ms, p95_ms, p99_ms, max_ms, sum_ms}}}`;
    /// labelled series are keyed `name{label="value"}`, names are [`Family::json_name`].
    pub fn to_json(&self) -> serde_json::Value {
        let mut j = JsonVisitor::default();
        self.visit(&mut j);
        serde_json::json!({ "counters": j.counters, "gauges": j.gauges, "histograms": j.histograms })
    }

    /// The Prometheus text exposition format (version 0.0.4), names prefixed `barkeep_`: every
    /// family with its `# HELP` and `# TYPE` (also when it has no series yet), then its series.
    pub fn to_prometheus(&self) -> String {
        let mut p = PromVisitor {
            out: String::with_capacity(16 * 1024 + self.sources.len() * 4 * 1024),
        };
        self.visit(&mut p);
        p.out
    }
}

trait Visitor {
    /// A family starts; its series follow.
    fn family(&mut self, f: &Family);
    /// One series of `f`; `label` is the value of `f.label` (`""` when it has none).
    fn sample(&mut self, f: &Family, label: &str, s: Sample<'_>);
}

#[derive(Default)]
struct JsonVisitor {
    counters: serde_json::Map<String, serde_json::Value>,
    gauges: serde_json::Map<String, serde_json::Value>,
    histograms: serde_json::Map<String, serde_json::Value>,
}

impl Visitor for JsonVisitor {
    fn family(&mut self, _: &Family) {}

    fn sample(&mut self, f: &Family, label: &str, s: Sample<'_>) {
        let key = match f.label {
            Some(k) => format!("{}{{{k}=\"{label}\"}}", f.json_name()),
            None => f.json_name().to_string(),
        };
        match s {
            Sample::Counter(n) => {
                self.counters.insert(key, n.into());
            }
            // JSON keeps the stored integer (milliseconds for `in ms` gauges).
            Sample::Gauge(v) => {
                self.gauges.insert(key, v.into());
            }
            Sample::Histogram(h) => {
                self.histograms.insert(
                    key,
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
    }
}

struct PromVisitor {
    out: String,
}

impl PromVisitor {
    /// `barkeep_{name}{suffix}{label="value",le="…"}` (braces only when there are labels).
    fn series(&mut self, f: &Family, suffix: &str, label: &str, le: Option<Le>) {
        let out = &mut self.out;
        out.push_str("barkeep_");
        out.push_str(f.name);
        out.push_str(suffix);
        let mut sep = '{';
        if let Some(key) = f.label {
            let _ = write!(out, "{sep}{key}=\"{label}\"");
            sep = ',';
        }
        match le {
            None => {}
            Some(Le::Micros(us)) => {
                let _ = write!(out, "{sep}le=\"");
                write_decimal(out, false, us, 6);
                out.push('"');
                sep = ',';
            }
            Some(Le::Inf) => {
                let _ = write!(out, "{sep}le=\"+Inf\"");
                sep = ',';
            }
        }
        if sep == ',' {
            out.push('}');
        }
        out.push(' ');
    }
}

/// A histogram bucket's upper bound.
#[derive(Clone, Copy)]
enum Le {
    Micros(u64),
    Inf,
}

/// `v / 10^decimals` in plain decimal notation, trailing zeros trimmed (`1.5`, `0.000001`, `3`).
fn write_decimal(out: &mut String, negative: bool, v: u64, decimals: u32) {
    let scale = 10u64.pow(decimals);
    let (int, mut frac, mut width) = (v / scale, v % scale, decimals as usize);
    if negative && v != 0 {
        out.push('-');
    }
    let _ = write!(out, "{int}");
    if frac != 0 {
        while frac % 10 == 0 {
            frac /= 10;
            width -= 1;
        }
        let _ = write!(out, ".{frac:0width$}");
    }
}

impl Visitor for PromVisitor {
    fn family(&mut self, f: &Family) {
        let _ = writeln!(
            self.out,
            "# HELP barkeep_{name} {help}\n# TYPE barkeep_{name} {kind}",
            name = f.name,
            help = f.help,
            kind = f.kind.as_str()
        );
    }

    fn sample(&mut self, f: &Family, label: &str, s: Sample<'_>) {
        match s {
            Sample::Counter(n) => {
                self.series(f, "", label, None);
                let _ = writeln!(self.out, "{n}");
            }
            Sample::Gauge(v) => {
                self.series(f, "", label, None);
                match f.unit {
                    Unit::One => {
                        let _ = writeln!(self.out, "{v}");
                    }
                    Unit::Millis => {
                        write_decimal(&mut self.out, v < 0, v.unsigned_abs(), 3);
                        self.out.push('\n');
                    }
                }
            }
            Sample::Histogram(h) => {
                let mut cumulative = 0;
                for (i, c) in h.counts.iter().enumerate() {
                    cumulative += c.load(Relaxed);
                    let le = Le::Micros(Histogram::bound_us(i));
                    self.series(f, "_bucket", label, Some(le));
                    let _ = writeln!(self.out, "{cumulative}");
                }
                self.series(f, "_bucket", label, Some(Le::Inf));
                let _ = writeln!(self.out, "{cumulative}");
                self.series(f, "_sum", label, None);
                write_decimal(&mut self.out, false, h.sum_us.load(Relaxed), 6);
                self.out.push('\n');
                self.series(f, "_count", label, None);
                let _ = writeln!(self.out, "{cumulative}");
            }
        }
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
        assert!(text.contains("barkeep_tick_duration_seconds_bucket{le=\"0.002048\"} 1\n"));
        assert!(text.contains("barkeep_tick_duration_seconds_bucket{le=\"+Inf\"} 1\n"));
        assert!(text.contains("barkeep_tick_duration_seconds_sum 0.002\n"));
        assert!(text.contains("barkeep_tick_duration_seconds_count 1\n"));
        assert_eq!(
            text.matches("# TYPE barkeep_rejects_total counter").count(),
            1
        );
    }

    #[test]
    fn millisecond_gauges_are_seconds_in_prometheus_and_milliseconds_in_json() {
        let m = Metrics::new(&["yahoo"]);
        m.sqlite_last_flush_ms.set(1_733_090_000_120);
        let text = m.to_prometheus();
        assert!(
            !text.contains("barkeep_source_clock_skew_seconds{"),
            "unmeasured: no series"
        );
        assert!(
            !m.to_json()["gauges"]
                .as_object()
                .expect("map")
                .contains_key("source_clock_skew_ms{source=\"yahoo\"}")
        );
        m.sources[0].clock_skew_ms.set(-1_250);
        let text = m.to_prometheus();
        assert!(
            text.contains("barkeep_sqlite_last_flush_timestamp_seconds 1733090000.12\n"),
            "{text}"
        );
        assert!(
            text.contains("barkeep_source_clock_skew_seconds{source=\"yahoo\"} -1.25\n"),
            "{text}"
        );
        let json = m.to_json();
        assert_eq!(
            json["gauges"]["sqlite_last_flush_ms"],
            1_733_090_000_120_i64
        );
        assert_eq!(
            json["gauges"]["source_clock_skew_ms{source=\"yahoo\"}"],
            -1_250
        );
        m.sources[0].clock_skew_ms.set(0);
        assert!(
            m.to_prometheus()
                .contains("barkeep_source_clock_skew_seconds{source=\"yahoo\"} 0\n")
        );
    }

    #[test]
    fn decimals_are_plain_and_trimmed() {
        let fmt = |negative, v, d| {
            let mut s = String::new();
            write_decimal(&mut s, negative, v, d);
            s
        };
        assert_eq!(fmt(false, 1, 6), "0.000001");
        assert_eq!(fmt(false, 1 << 26, 6), "67.108864");
        assert_eq!(fmt(false, 2_000, 6), "0.002");
        assert_eq!(fmt(false, 5_000, 3), "5");
        assert_eq!(fmt(true, 420, 3), "-0.42");
        assert_eq!(fmt(true, 0, 3), "0");
        assert_eq!(fmt(false, 0, 6), "0");
    }

    /// Several sources: each family is one block (`# HELP`/`# TYPE` once, then every source's
    /// series), as the text format requires.
    #[test]
    fn labelled_families_are_one_block_each() {
        let m = Metrics::new(&["yahoo", "twelvedata", "binance"]);
        m.sources[0].clock_skew_ms.set(-3);
        m.sources[2].clock_skew_ms.set(4);
        let text = m.to_prometheus();
        let lines: Vec<&str> = text.lines().collect();
        for f in Metrics::FAMILIES {
            let name = format!("barkeep_{}", f.name);
            let of_family = |l: &str| {
                l.strip_prefix(&name)
                    .is_some_and(|rest| rest.starts_with([' ', '{', '_']))
            };
            let type_line = format!("# TYPE {name} {}", f.kind.as_str());
            let at: Vec<usize> = (0..lines.len())
                .filter(|&i| lines[i] == type_line)
                .collect();
            assert_eq!(at.len(), 1, "{type_line}");
            let block = lines[at[0] + 1..]
                .iter()
                .take_while(|l| of_family(l))
                .count();
            let everywhere = lines.iter().filter(|l| of_family(l)).count();
            assert!(block > 0, "{name}: no series");
            assert_eq!(block, everywhere, "{name}: series outside its block");
        }
        let n = |s: &str| text.matches(s).count();
        assert_eq!(n("barkeep_source_requests_total{source="), 3);
        assert_eq!(n("barkeep_source_clock_skew_seconds{source="), 2);
        assert_eq!(n("barkeep_source_latency_seconds_count{source="), 3);
        assert_eq!(n("barkeep_rejects_total{reason="), REASONS);
    }

    /// The declared table follows the Prometheus naming rules, and every family reaches both
    /// renderings under its declared names (a check on the table, not on `Debug` text).
    #[test]
    fn declared_names_follow_the_conventions() {
        let mut seen = std::collections::HashSet::new();
        let mut json_seen = std::collections::HashSet::new();
        for f in Metrics::FAMILIES {
            let n = f.name;
            assert!(seen.insert(n), "{n} declared twice");
            assert!(
                json_seen.insert(f.json_name()),
                "{} twice in JSON",
                f.json_name()
            );
            assert!(
                n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                    && !n.starts_with('_')
                    && !n.ends_with('_')
                    && !n.contains("__"),
                "{n}: snake_case"
            );
            assert!(
                !f.help.is_empty() && !f.help.contains(['\\', '\n']),
                "{n}: help"
            );
            let tokens: Vec<&str> = n.split('_').collect();
            for abbreviated in [
                "ms", "us", "ns", "s", "sec", "secs", "min", "mins", "h", "d",
            ] {
                assert!(!tokens.contains(&abbreviated), "{n}: abbreviated unit");
            }
            for scaled in [
                "milliseconds",
                "microseconds",
                "nanoseconds",
                "minutes",
                "hours",
            ] {
                assert!(!tokens.contains(&scaled), "{n}: not a base unit");
            }
            assert_eq!(
                f.kind == Kind::Counter,
                n.ends_with("_total"),
                "{n}: _total"
            );
            for reserved in ["_bucket", "_count", "_sum"] {
                assert!(!n.ends_with(reserved), "{n}: reserved suffix");
            }
            match f.kind {
                Kind::Histogram => {
                    assert!(n.ends_with("_seconds"), "{n}: histograms are latencies")
                }
                _ if f.unit == Unit::Millis => assert!(n.ends_with("_seconds"), "{n}: in seconds"),
                _ => {}
            }
        }

        let m = Metrics::new(&["yahoo"]);
        m.sources[0].clock_skew_ms.set(3);
        let text = m.to_prometheus();
        let json = m.to_json();
        let types: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE barkeep_"))
            .collect();
        let declared: Vec<String> = Metrics::FAMILIES
            .iter()
            .map(|f| format!("{} {}", f.name, f.kind.as_str()))
            .collect();
        assert_eq!(types, declared);
        for f in Metrics::FAMILIES {
            let section = match f.kind {
                Kind::Counter => "counters",
                Kind::Gauge => "gauges",
                Kind::Histogram => "histograms",
            };
            let key = match f.label {
                Some("source") => format!("{}{{source=\"yahoo\"}}", f.json_name()),
                Some("reason") => format!("{}{{reason=\"spike\"}}", f.json_name()),
                _ => f.json_name().to_string(),
            };
            assert!(
                !json[section][&key].is_null(),
                "{key} missing from /metrics/json"
            );
        }
        let exported: usize = ["counters", "gauges", "histograms"]
            .iter()
            .map(|s| json[s].as_object().expect("map").len())
            .sum();
        let expected: usize = Metrics::FAMILIES
            .iter()
            .map(|f| {
                if f.label == Some("reason") {
                    REASONS
                } else {
                    1
                }
            })
            .sum();
        assert_eq!(
            exported, expected,
            "/metrics/json has series no family declares"
        );
    }
}
