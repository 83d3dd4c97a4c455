/*!
The metric types: [`Counter`], [`Gauge`], [`Histogram`] (plain atomics, written on the hot path
with relaxed operations and no lock), [`ByLabel`] for a family labelled by a closed set
([`ByReason`], [`ByRule`]), [`BySymbol`] for one labelled by symbol, and the
descriptors ([`Family`], [`Kind`], [`Unit`]) and traits ([`Metric`], [`Series`]) the table in
`mod.rs` and the renderings in `render.rs` are built on.
*/

use std::marker::PhantomData;
use std::ops::{Deref, Index};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::model::{AlertRule, RejectReason};

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
        self.buckets().quantile_ms(q, self.max_us.load(Relaxed))
    }

    /// The bucket counts now: the difference of two is the distribution in between
    /// ([`Buckets::since`]).
    pub fn buckets(&self) -> Buckets {
        Buckets(std::array::from_fn(|i| self.counts[i].load(Relaxed)))
    }
}

/// A [`Histogram`]'s bucket counts at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buckets([u64; BUCKETS]);

impl Default for Buckets {
    fn default() -> Self {
        Self([0; BUCKETS])
    }
}

impl Buckets {
    /// What was recorded after `earlier` (a snapshot of the same histogram).
    pub fn since(&self, earlier: &Buckets) -> Buckets {
        Buckets(std::array::from_fn(|i| {
            self.0[i].saturating_sub(earlier.0[i])
        }))
    }

    pub fn count(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The `q` quantile in milliseconds (0 when empty), interpolated within its bucket and
    /// capped at `max_us` (pass `u64::MAX` when the largest value is not known).
    pub fn quantile_ms(&self, q: f64, max_us: u64) -> f64 {
        let total = self.count();
        if total == 0 {
            return 0.0;
        }
        let rank = (q * total as f64).ceil().max(1.0);
        let mut seen = 0.0;
        for (i, &c) in self.0.iter().enumerate() {
            if c == 0 {
                continue;
            }
            if seen + c as f64 >= rank {
                let lo = if i == 0 {
                    0.0
                } else {
                    Histogram::bound_us(i - 1) as f64
                };
                let hi = (Histogram::bound_us(i) as f64).min(max_us as f64).max(lo);
                return (lo + (hi - lo) * (rank - seen) / c as f64) / 1_000.0;
            }
            seen += c as f64;
        }
        max_us as f64 / 1_000.0
    }
}

/// Number of reject reasons, the length of a [`ByReason`].
pub const REASONS: usize = RejectReason::ALL.len();

/// A closed set of values a family is labelled by: reject reasons, alert rules.
pub trait LabelSet: Copy + 'static {
    /// The label's name.
    const LABEL: &'static str;
    /// Every value, in exposition order; [`LabelSet::index`] is the position in it.
    const ALL: &'static [Self];
    fn index(self) -> usize;
    fn as_str(self) -> &'static str;
}

impl LabelSet for RejectReason {
    const LABEL: &'static str = "reason";
    const ALL: &'static [Self] = &RejectReason::ALL;
    fn index(self) -> usize {
        RejectReason::index(self)
    }
    fn as_str(self) -> &'static str {
        RejectReason::as_str(self)
    }
}

impl LabelSet for AlertRule {
    const LABEL: &'static str = "rule";
    const ALL: &'static [Self] = &AlertRule::ALL;
    fn index(self) -> usize {
        AlertRule::index(self)
    }
    fn as_str(self) -> &'static str {
        AlertRule::as_str(self)
    }
}

/// One `M` per value of `K`, indexed by the value (or its [`LabelSet::index`]); exported as one
/// family labelled [`LabelSet::LABEL`], with a series for every value.
#[derive(Debug)]
pub struct ByLabel<K, M> {
    series: Box<[M]>,
    keys: PhantomData<fn() -> K>,
}

/// One `M` per reject reason: a family labelled `reason`.
pub type ByReason<M> = ByLabel<RejectReason, M>;

/// One `M` per alert rule: a family labelled `rule`.
pub type ByRule<M> = ByLabel<AlertRule, M>;

impl<K: LabelSet, M: Default> Default for ByLabel<K, M> {
    fn default() -> Self {
        Self {
            series: K::ALL.iter().map(|_| M::default()).collect(),
            keys: PhantomData,
        }
    }
}

impl<K, M> Deref for ByLabel<K, M> {
    type Target = [M];
    fn deref(&self) -> &Self::Target {
        &self.series
    }
}

impl<K: LabelSet, M> Index<K> for ByLabel<K, M> {
    type Output = M;
    fn index(&self, key: K) -> &M {
        &self.series[key.index()]
    }
}

/// Series with their label values.
type Named<M> = Box<[(Arc<str>, M)]>;

/// One `M` per configured symbol, named once at start ([`BySymbol::name`]): a family labelled
/// `symbol`, without series until it is named.
#[derive(Debug, Default)]
pub struct BySymbol<M> {
    series: OnceLock<Named<M>>,
}

impl<M: Default> BySymbol<M> {
    /// Gives the family one series per name, in [`crate::model::SymbolId`] order; only the
    /// first call counts.
    pub fn name(&self, names: impl IntoIterator<Item = Arc<str>>) {
        let _ = self
            .series
            .set(names.into_iter().map(|n| (n, M::default())).collect());
    }
}

impl<M> BySymbol<M> {
    /// The series of symbol `id`, once named.
    pub fn get(&self, id: usize) -> Option<&M> {
        self.series.get().and_then(|s| s.get(id)).map(|(_, m)| m)
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

impl<K: LabelSet, M: Metric> Series for ByLabel<K, M> {
    const KIND: Kind = M::KIND;
    const LABEL: Option<&'static str> = Some(K::LABEL);
    fn each(&self, f: &mut dyn FnMut(&str, Sample<'_>)) {
        for (&key, m) in K::ALL.iter().zip(self.series.iter()) {
            if let Some(s) = m.sample() {
                f(key.as_str(), s);
            }
        }
    }
}

impl<M: Metric> Series for BySymbol<M> {
    const KIND: Kind = M::KIND;
    const LABEL: Option<&'static str> = Some("symbol");
    fn each(&self, f: &mut dyn FnMut(&str, Sample<'_>)) {
        for (name, m) in self.series.get().into_iter().flat_map(|s| s.iter()) {
            if let Some(s) = m.sample() {
                f(name, s);
            }
        }
    }
}
