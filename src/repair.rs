/*!
Gap repair while running: an interval with no data while the market was open (a provider
outage with no fallback, a dropped stream) is fetched again from the history sources, off the
tick, and handed back to the collector, whose pipeline stores the bars and brings the
indicators to what an uninterrupted run would have ([`crate::pipeline::SymbolPipeline::repair`]).

The worker takes one [`RepairJob`] at a time from a bounded queue and asks the source chain
(`sources/chain/`) for the interval: the sources that serve the symbol and timeframe's
history, in `SOURCES` order, each within a permit, above the budget reserve kept for live
quotes. An empty answer is the provider confirming the interval had no trades. When no source
answers, the collector tries again later, [`MAX_TRIES`] attempts in all, and then leaves the
gap recorded as it was; a round in which no source could be asked at all (breakers open,
budgets spent) is no attempt, and the gap waits for its sources instead.

Gaps found at start-up (downtime, a crash) are repaired by the warm-up instead, before live
bars, which needs no rewind of the indicators.
*/

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::model::{Bar, Gap, SymbolId, Timeframe};
use crate::sources::chain::{SourceChain, Work};

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
    /// Sources were asked and none could answer.
    Failed(RepairJob),
    /// No source could be asked now (breakers open, budgets spent): no attempt is counted.
    NotSent(RepairJob),
}

/// Runs until `shutdown` or until the job queue closes: each job asked of the history sources
/// through the chain (batch work, above the live reserve), its outcome sent back.
pub async fn run_worker(
    chain: Arc<SourceChain>,
    mut jobs: mpsc::Receiver<RepairJob>,
    outcomes: mpsc::Sender<RepairOutcome>,
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
        let asked = chain.first_history(
            job.symbol,
            job.timeframe,
            job.gap.from_ts,
            job.gap.to_ts,
            Work::Batch,
            REQUEST_TIMEOUT,
        );
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return,
            answer = asked => match answer {
                Ok((source, bars)) => RepairOutcome::Fetched { job, source, bars },
                Err(unanswered) if unanswered.sent => RepairOutcome::Failed(job),
                Err(_) => RepairOutcome::NotSent(job),
            },
        };
        if outcomes.send(outcome).await.is_err() {
            return;
        }
    }
}
