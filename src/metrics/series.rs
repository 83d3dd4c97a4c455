/*!
The metric types: [`Counter`], [`Gauge`], [`Histogram`] (plain atomics, written on the hot path
with relaxed operations and no lock), [`ByReason`] for a family labelled `reason`, and the
descriptors ([`Family`], [`Kind`], [`Unit`]) and traits ([`Metric`], [`Series`]) the table in
`mod.rs` and the renderings in `render.rs` are built on.
*/

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
    pub(super) counts: [AtomicU64; BUCKETS],
    pub(super) sum_us: AtomicU64,
    pub(super) max_us: AtomicU64,
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
    pub(super) fn bound_us(i: usize) -> u64 {
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
