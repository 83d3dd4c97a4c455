/*!
The chain's run-time controls and records: one worker per source and data type that can be
stopped (a stopped worker's requests are refused before a permit, like an open breaker's, so
it spends no budget and whoever asks — the tick, the warm-up, gap repair, the bootstrap — moves
on to the next source), its counts, and the newest request records per data type
([`TELEMETRY_CAPACITY`] of them, newest first), for `/streaming/config/{workers,telemetry}`.

Recording costs the request path one short lock and no allocation once the ring has gone round
once: each slot keeps its symbol list and error text and is overwritten in place.
*/

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use super::SourceChain;
use crate::model::SymbolId;
use crate::sources::{ErrorKind, SourceError};

/// Request records kept per data type.
pub const TELEMETRY_CAPACITY: usize = 1_000;

/// What a worker fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    /// Latest quotes, each tick.
    MarketData,
    /// Closed bars: the warm-up, gap repair, the bootstrap.
    History,
}

impl DataType {
    pub const ALL: [DataType; 2] = [DataType::MarketData, DataType::History];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::MarketData => "market_data",
            Self::History => "history",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How one request ended, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestOutcome {
    Served,
    Failed,
    Timeout,
    RateLimited,
    NotServed,
}

impl RequestOutcome {
    fn of(error: &SourceError) -> Self {
        match (error, error.kind()) {
            (SourceError::Timeout { .. }, _) => Self::Timeout,
            (_, ErrorKind::RateLimited) => Self::RateLimited,
            (_, ErrorKind::NotServed) => Self::NotServed,
            (_, ErrorKind::Failure) => Self::Failed,
        }
    }
}

/// Where a request stands among the tries for its symbols.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attempt {
    /// Tries of the same request to the same source before this one.
    pub retry: u32,
    /// An earlier source was asked (or refused) for these symbols in the same round.
    pub fallback: bool,
}

/// One source's worker for one data type.
#[derive(Default)]
pub(super) struct Worker {
    stopped: AtomicBool,
    /// Unix ms of its last request; 0: none yet.
    last_run_ms: AtomicI64,
    successes: AtomicU64,
    errors: AtomicU64,
    /// When and why its last request failed; the text is reused.
    last_error: Mutex<(i64, String)>,
}

/// A worker as `/streaming/config/workers` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerStatus {
    pub source: &'static str,
    pub data_type: DataType,
    pub running: bool,
    pub last_run_ms: Option<i64>,
    pub success_count: u64,
    pub error_count: u64,
    /// When and why its last request failed (unscrubbed: scrub before showing).
    pub last_error: Option<(i64, String)>,
    /// `closed`, `open` or `half_open`.
    pub breaker: &'static str,
}

/// One request, as the telemetry keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRecord {
    pub at_ms: i64,
    pub vendor: &'static str,
    pub symbols: Vec<SymbolId>,
    pub latency: Duration,
    pub outcome: RequestOutcome,
    /// Empty when it was served.
    pub error: String,
    pub retry_count: u32,
    /// Served by a source other than the first asked for these symbols.
    pub fallback: bool,
}

/// The newest [`TELEMETRY_CAPACITY`] records of one data type, overwritten in place.
#[derive(Default)]
struct Ring {
    slots: Vec<RequestRecord>,
    /// The slot the next record goes to once `slots` is full.
    next: usize,
}

impl Ring {
    fn slot(&mut self) -> &mut RequestRecord {
        if self.slots.len() < TELEMETRY_CAPACITY {
            self.slots.push(RequestRecord {
                at_ms: 0,
                vendor: "",
                symbols: Vec::new(),
                latency: Duration::ZERO,
                outcome: RequestOutcome::Served,
                error: String::new(),
                retry_count: 0,
                fallback: false,
            });
            let last = self.slots.len() - 1;
            return &mut self.slots[last];
        }
        let i = self.next;
        self.next = (self.next + 1) % TELEMETRY_CAPACITY;
        &mut self.slots[i]
    }

    fn newest(&self, limit: usize) -> Vec<RequestRecord> {
        let n = self.slots.len();
        // The newest is just before `next` once full, the last pushed before.
        let newest = if n < TELEMETRY_CAPACITY {
            n.wrapping_sub(1)
        } else {
            (self.next + n - 1) % n
        };
        (0..limit.min(n))
            .map(|k| self.slots[(newest + n - k) % n].clone())
            .collect()
    }
}

/// The request records of every data type.
#[derive(Default)]
pub(super) struct Telemetry {
    rings: [Mutex<Ring>; 2],
}

/// What a finished request was, for [`SourceChain::record`].
pub(super) struct Finished<'a> {
    pub data_type: DataType,
    pub symbols: &'a [SymbolId],
    pub latency: Duration,
    pub error: Option<&'a SourceError>,
    pub attempt: Attempt,
}

impl SourceChain {
    fn worker(&self, i: usize, data_type: DataType) -> &Worker {
        &self.links[i].workers[data_type.index()]
    }

    /// Whether source `i`'s worker for `data_type` runs (is not stopped).
    pub fn is_running(&self, i: usize, data_type: DataType) -> bool {
        !self.worker(i, data_type).stopped.load(Ordering::Acquire)
    }

    /// Starts (`true`) or stops source `i`'s worker for `data_type`; whether that changed it.
    pub fn set_running(&self, i: usize, data_type: DataType, running: bool) -> bool {
        let was_stopped = self
            .worker(i, data_type)
            .stopped
            .swap(!running, Ordering::AcqRel);
        was_stopped == running
    }

    /// The index of the source named `name`.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.links.iter().position(|l| l.source.name() == name)
    }

    /// Source `i`'s worker for `data_type`.
    pub fn worker_status(&self, i: usize, data_type: DataType) -> WorkerStatus {
        let w = self.worker(i, data_type);
        let last_run = w.last_run_ms.load(Ordering::Acquire);
        let last_error = {
            let e = w.last_error.lock();
            (!e.1.is_empty()).then(|| e.clone())
        };
        let breaker = self.links[i]
            .breaker
            .lock()
            .state(tokio::time::Instant::now());
        WorkerStatus {
            source: self.links[i].source.name(),
            data_type,
            running: self.is_running(i, data_type),
            last_run_ms: (last_run > 0).then_some(last_run),
            success_count: w.successes.load(Ordering::Acquire),
            error_count: w.errors.load(Ordering::Acquire),
            last_error,
            breaker: match breaker as i64 {
                1 => "open",
                2 => "half_open",
                _ => "closed",
            },
        }
    }

    /// The newest `limit` request records of `data_type` (at most [`TELEMETRY_CAPACITY`]),
    /// newest first.
    pub fn telemetry(&self, data_type: DataType, limit: usize) -> Vec<RequestRecord> {
        self.telemetry.rings[data_type.index()].lock().newest(limit)
    }

    /// Counts a request to source `i` in its worker and records it in the telemetry.
    pub(super) fn record(&self, i: usize, done: &Finished<'_>) {
        let at_ms = self.clock.now_ms();
        let w = self.worker(i, done.data_type);
        w.last_run_ms.store(at_ms, Ordering::Release);
        let outcome = done
            .error
            .map_or(RequestOutcome::Served, RequestOutcome::of);
        match (outcome, done.error) {
            (RequestOutcome::Served, _) => {
                w.successes.fetch_add(1, Ordering::AcqRel);
            }
            // Not this source's symbol: no verdict on the worker.
            (RequestOutcome::NotServed, _) | (_, None) => {}
            (_, Some(e)) => {
                w.errors.fetch_add(1, Ordering::AcqRel);
                let mut last = w.last_error.lock();
                last.0 = at_ms;
                last.1.clear();
                let _ = write!(last.1, "{e}");
            }
        }
        let mut ring = self.telemetry.rings[done.data_type.index()].lock();
        let slot = ring.slot();
        slot.at_ms = at_ms;
        slot.vendor = self.links[i].source.name();
        slot.symbols.clear();
        slot.symbols.extend_from_slice(done.symbols);
        slot.latency = done.latency;
        slot.outcome = outcome;
        slot.error.clear();
        if let Some(e) = done.error {
            let _ = write!(slot.error, "{e}");
        }
        slot.retry_count = done.attempt.retry;
        slot.fallback = done.attempt.fallback;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_records_newest_first() {
        let mut ring = Ring::default();
        assert!(ring.newest(10).is_empty());
        for at in 0..(TELEMETRY_CAPACITY as i64 + 250) {
            ring.slot().at_ms = at;
        }
        let newest = ring.newest(usize::MAX);
        assert_eq!(newest.len(), TELEMETRY_CAPACITY);
        let last = TELEMETRY_CAPACITY as i64 + 249;
        assert_eq!(newest[0].at_ms, last);
        assert_eq!(newest[TELEMETRY_CAPACITY - 1].at_ms, 250);
        assert!(newest.windows(2).all(|w| w[0].at_ms == w[1].at_ms + 1));
        assert_eq!(
            ring.newest(3).iter().map(|r| r.at_ms).collect::<Vec<_>>(),
            [last, last - 1, last - 2]
        );
        let mut few = Ring::default();
        for at in 0..3 {
            few.slot().at_ms = at;
        }
        let got: Vec<i64> = few.newest(10).iter().map(|r| r.at_ms).collect();
        assert_eq!(got, [2, 1, 0]);
    }
}
