/*!
Gap repair while running: an interval with no data while the market was open (a provider
outage with no fallback, a dropped stream) is fetched again from the history sources, off the
tick, and handed back to the collector, whose pipeline stores the bars and brings the
indicators to what an uninterrupted run would have ([`crate::pipeline::SymbolPipeline::repair`]).

The worker takes one [`RepairJob`] at a time from a bounded queue and asks the sources that
serve the symbol and timeframe's history, in `SOURCES` order, each within the budget the
collector spends for it, above the reserve kept for live quotes. A request is sent only when a
token was taken; a source that cannot serve the pair is not asked. An empty answer is the
provider confirming the interval had no trades. When no source answers, the collector tries
again later, [`MAX_TRIES`] times in all, and then leaves the gap recorded as it was.

Gaps found at start-up (downtime, a crash) are repaired by the warm-up instead, before live
bars, which needs no rewind of the indicators.
*/

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::bars::Gap;
use crate::model::{Bar, SymbolId, Timeframe};
use crate::sources::ratelimit::SharedBudget;
use crate::sources::{ErrorKind, Source};

/// Attempts per gap before it is left recorded.
pub const MAX_TRIES: u8 = 3;
/// The wait before a gap whose sources all failed is asked again.
pub const RETRY_AFTER: Duration = Duration::from_secs(10);
/// Jobs the worker may have queued.
pub const QUEUE: usize = 4_096;
/// How long one history request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// A gap to fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepairJob {
    pub symbol: SymbolId,
    pub timeframe: Timeframe,
    pub gap: Gap,
    /// Attempts so far.
    pub tries: u8,
}

/// What became of a job.
#[derive(Debug, Clone, PartialEq)]
pub enum RepairOutcome {
    /// A source answered (possibly with no bars: the interval had no trades).
    Fetched {
        job: RepairJob,
        source: &'static str,
        bars: Vec<Bar>,
    },
    /// No source could answer now.
    Failed(RepairJob),
}

/// Runs until `shutdown` or until the job queue closes: each job asked of the history sources,
/// its outcome sent back. `now_ms` is the collector's clock, for daily quotas.
pub async fn run_worker(
    sources: Vec<(Arc<dyn Source>, SharedBudget)>,
    mut jobs: mpsc::Receiver<RepairJob>,
    outcomes: mpsc::Sender<RepairOutcome>,
    now_ms: impl Fn() -> i64 + Send + 'static,
    shutdown: CancellationToken,
) {
    loop {
        let job = tokio::select! {
            () = shutdown.cancelled() => return,
            job = jobs.recv() => match job {
                Some(job) => job,
                None => return,
            },
        };
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return,
            outcome = fetch(&sources, job, now_ms()) => outcome,
        };
        if outcomes.send(outcome).await.is_err() {
            return;
        }
    }
}

async fn fetch(
    sources: &[(Arc<dyn Source>, SharedBudget)],
    job: RepairJob,
    now_ms: i64,
) -> RepairOutcome {
    let serving = sources.iter().filter(|(s, _)| {
        s.capabilities().history && s.supports(job.symbol) && s.serves_history(job.timeframe)
    });
    for (source, budget) in serving {
        if !budget
            .lock()
            .try_acquire_batch(tokio::time::Instant::now(), now_ms, 1)
        {
            continue;
        }
        let asked = source.history(job.symbol, job.timeframe, job.gap.from_ts, job.gap.to_ts);
        match tokio::time::timeout(REQUEST_TIMEOUT, asked).await {
            Ok(Ok(bars)) => {
                return RepairOutcome::Fetched {
                    job,
                    source: source.name(),
                    bars,
                };
            }
            Ok(Err(e)) => {
                if e.kind() == ErrorKind::RateLimited {
                    budget
                        .lock()
                        .on_rate_limited(tokio::time::Instant::now(), e.retry_after());
                }
                tracing::debug!(source = source.name(), error = %e, "gap repair: history failed; trying the next source");
            }
            Err(_) => {
                tracing::debug!(
                    source = source.name(),
                    "gap repair: history timed out; trying the next source"
                );
            }
        }
    }
    RepairOutcome::Failed(job)
}
