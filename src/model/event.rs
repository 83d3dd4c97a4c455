/*!
What the pipeline tells the stores and everything downstream, and the pieces it is made of:
[`Event`] (closed and forming bars with their features, rejects, gaps, sessions, revisions)
inside a [`TickBatch`], with indicator [`Checkpoint`]s. Plain data only: what builds or reads
these lives with its room (`pipeline`, `bars`, `calendar`, `indicators`, `validate`, `store`).
*/

use super::{Bar, SymbolId, Timeframe};

/// Number of outputs per bar.
pub const FEATURE_COUNT: usize = 15;

/// The outputs of one bar, in the order of `IndicatorParams::feature_names`. `f64::NAN`
/// means "not ready yet" (callers serialise it as `null`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Features {
    pub values: [f64; FEATURE_COUNT],
}

/// Intervals `[from_ts, to_ts)` with no data between two bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub from_ts: i64,
    pub to_ts: i64,
}

/// Whether a market is open at an instant, and until when that holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub open: bool,
    /// When the state began: the session's open, or the previous close (`i64::MIN` when not
    /// known, as for an always-open market).
    pub since_ms: i64,
    /// When the state ends: the session's close, or the next open (`i64::MAX`: never).
    pub until_ms: i64,
}

/// Why an input was refused. The names are the `reason` stored in the rejects table and used as
/// the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    NonFinite,
    NonPositivePrice,
    NegativeVolume,
    OhlcInconsistent,
    FutureTimestamp,
    Stale,
    OutOfOrder,
    Spike,
    LowQuality,
    /// Accepted by the validator but too late for its bar, which had already closed.
    Late,
}

impl RejectReason {
    pub const ALL: [RejectReason; 10] = [
        Self::NonFinite,
        Self::NonPositivePrice,
        Self::NegativeVolume,
        Self::OhlcInconsistent,
        Self::FutureTimestamp,
        Self::Stale,
        Self::OutOfOrder,
        Self::Spike,
        Self::LowQuality,
        Self::Late,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NonFinite => "non_finite",
            Self::NonPositivePrice => "non_positive_price",
            Self::NegativeVolume => "negative_volume",
            Self::OhlcInconsistent => "ohlc_inconsistent",
            Self::FutureTimestamp => "future_timestamp",
            Self::Stale => "stale",
            Self::OutOfOrder => "out_of_order",
            Self::Spike => "spike",
            Self::LowQuality => "low_quality",
            Self::Late => "late",
        }
    }

    /// Position in [`Self::ALL`], for per-reason counters.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A bar leaving the pipeline, with where it came from and how much it is trusted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BarRecord {
    pub symbol: SymbolId,
    pub timeframe: Timeframe,
    pub bar: Bar,
    pub source: &'static str,
    pub quality: f64,
}

/// An input the validator (or the bar builder) refused, kept for inspection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RejectRecord {
    pub symbol: SymbolId,
    pub source: &'static str,
    pub reason: RejectReason,
    /// The input as received (a quote has four equal prices).
    pub input: Bar,
    pub received_at_ms: i64,
}

/// What the pipeline tells the sinks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Event {
    /// A bar closed; `features` are the committed indicator values after it.
    Closed {
        record: BarRecord,
        features: Features,
    },
    /// The forming bar as of this tick; `features` are peeked, nothing committed.
    Forming {
        record: BarRecord,
        features: Features,
    },
    Rejected(RejectRecord),
    Gap {
        symbol: SymbolId,
        timeframe: Timeframe,
        gap: Gap,
    },
    /// The symbol's market opened or closed (also reported once at start).
    Session {
        symbol: SymbolId,
        session: Session,
    },
    /// The symbol's data went quiet (`stale`: none for `STALE_AFTER` while its market is open)
    /// or came back; `last_data_ms` is the newest data's time. Emitted by the collector.
    Liveness {
        symbol: SymbolId,
        stale: bool,
        last_data_ms: i64,
    },
    /// A gap was filled after the fact: its bars were sent as `Closed` events just before, and
    /// the indicators are what an uninterrupted run would have; `bars == 0` means the provider
    /// confirmed the interval empty (no trades).
    Revision {
        symbol: SymbolId,
        timeframe: Timeframe,
        gap: Gap,
        bars: u32,
    },
}

/// Everything one collection tick produced, shared by all stores.
#[derive(Debug, Default)]
pub struct TickBatch {
    /// The collector's clock when the tick ran, Unix ms.
    pub now_ms: i64,
    pub events: Vec<Event>,
    pub checkpoints: Vec<Checkpoint>,
}

impl TickBatch {
    pub fn new(now_ms: i64, events: Vec<Event>) -> Self {
        Self {
            now_ms,
            events,
            checkpoints: Vec::new(),
        }
    }
}

/// One indicator checkpoint row.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub symbol: SymbolId,
    pub timeframe: Timeframe,
    pub last_ts: i64,
    pub state: Vec<u8>,
}
