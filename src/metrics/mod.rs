/*!
Typed metrics: plain atomics written on the hot path, read by `/metrics/json` and `/metrics`.

Every metric is declared once, in the `metrics!` table below: its field, its exported name,
its help text and its kind (the field's type: [`Counter`], [`Gauge`], [`Histogram`], or
[`ByReason`] and [`ByRule`] for a family labelled `reason` or `rule`, [`BySymbol`] for one
labelled `symbol`; everything in [`SourceMetrics`] is a family labelled `source`). The struct fields, the constructor, the descriptor list
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

mod render;
mod series;

pub use series::{
    Buckets, ByLabel, ByReason, ByRule, BySymbol, Counter, Family, Gauge, Histogram, Kind,
    LabelSet, Metric, REASONS, Sample, Series, Unit,
};

use crate::model::RejectReason;
use render::{JsonVisitor, PromVisitor, Visitor};

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
        /// What this instance collects; set once at start.
        symbols: Gauge => "symbols", "Symbols this instance collects (its shard's part of SYMBOLS)";
        shard_index: Gauge => "shard_index", "This instance's shard, i of SHARD=i/N";
        shards: Gauge => "shards", "Shards SYMBOLS is split into, N of SHARD=i/N";
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
        redis_queue_capacity: Gauge =>
            "redis_queue_capacity", "Batches the Redis sink's queue holds at most";
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
        sqlite_queue_capacity: Gauge =>
            "sqlite_queue_capacity", "Event batches the SQLite writer's queue holds at most";
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
        stream_messages: Counter =>
            "stream_messages_total", "Messages built for streaming clients (SSE, WebSocket)";
        stream_subscribers: Gauge =>
            "stream_subscribers", "Streaming clients connected (SSE and WebSocket)";
        stream_slow_consumers: Counter =>
            "stream_slow_consumers_total",
            "Streaming clients dropped because their queue was full (slow_consumer)";
        nats_connected: Gauge =>
            "nats_connected", "1 while connected to NATS with the JetStream stream ready, else 0";
        nats_queue_depth: Gauge =>
            "nats_queue_depth", "Messages waiting for the NATS JetStream publisher";
        nats_in_flight: Gauge =>
            "nats_in_flight", "Messages published to JetStream whose ack is awaited";
        nats_published: Counter =>
            "nats_published_total", "Messages published to JetStream (first attempts)";
        nats_acked: Counter =>
            "nats_acked_total", "Publishes JetStream acknowledged (stored, or duplicates)";
        nats_retried: Counter =>
            "nats_retried_total", "Publishes sent again after a failed or missing ack";
        nats_duplicates: Counter =>
            "nats_duplicates_total",
            "Publishes JetStream recognised by message id as stored already (not stored again)";
        nats_failed: Counter =>
            "nats_failed_total", "Messages given up after repeated JetStream errors";
        nats_dropped: Counter =>
            "nats_dropped_total", "Messages not queued for NATS because its queue was full";
        nats_ack_latency: Histogram =>
            "nats_ack_latency_seconds", "Time from a JetStream publish to its ack";
        /// Set by the alert evaluator every tick (`alerts`), named at start.
        symbol_last_data_ms: BySymbol<Gauge> =>
            "symbol_last_data_timestamp_seconds" in ms as "symbol_last_data_ms",
            "Provider time of the symbol's newest accepted data (no series before the first)";
        symbol_market_open: BySymbol<Gauge> =>
            "symbol_market_open", "1 while the symbol's market is open, 0 while it is closed";
        alerts_active: ByRule<Gauge> => "alerts_active", "Alerts firing now, by rule";
        alerts_fired: ByRule<Counter> => "alerts_fired_total", "Alerts that fired, by rule";
        alert_notifications: Counter =>
            "alert_notifications_total", "Webhook POSTs delivered (answered 2xx)";
        alert_notifications_failed: Counter =>
            "alert_notifications_failed_total",
            "Webhook POSTs given up (refused, or failing after every retry)";
        alert_notification_retries: Counter =>
            "alert_notification_retries_total", "Webhook POSTs sent again after a failure";
        alert_notifications_dropped: Counter =>
            "alert_notifications_dropped_total",
            "Alert events not sent because the webhook queue was full";
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
        /// Set by the collector each tick for sources with a push stream; no series otherwise.
        stream_up: Gauge = Gauge::new(Gauge::UNSET) =>
            "source_stream_up",
            "Push stream delivering (a message within 3 intervals, at least 3 s): 1 yes, 0 no";
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
