/*!
The collector's side of gap repair: gaps found in the events go to the repair worker
(`crate::repair`), its answers come back at the start of a tick and are replayed through the
pipeline; gaps no source can serve are tried again, then left recorded.
*/

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Collector, RepairLink};
use crate::model::Event;
use crate::repair::{self, RepairOutcome};

impl Collector {
    /// Starts the gap-repair worker on the history sources, within the collector's budgets.
    pub(super) fn start_repairs(
        &mut self,
        shutdown: &CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let (jobs, job_rx) = mpsc::channel(repair::QUEUE);
        let (outcome_tx, outcomes) = mpsc::channel(repair::QUEUE);
        self.repair = Some(RepairLink {
            jobs,
            outcomes,
            retries: Vec::new(),
            in_flight: 0,
        });
        tokio::spawn(repair::run_worker(
            self.chain(),
            job_rx,
            outcome_tx,
            shutdown.child_token(),
        ))
    }

    /// Takes what the repair worker fetched: each gap's bars go through their pipeline (stored,
    /// indicators rewound and replayed); gaps no source could serve are asked again later, then
    /// left recorded.
    pub(super) fn take_repairs(&mut self, now: i64, events: &mut Vec<Event>) {
        let Some(link) = &mut self.repair else {
            return;
        };
        while let Ok(outcome) = link.outcomes.try_recv() {
            link.in_flight = link.in_flight.saturating_sub(1);
            match outcome {
                RepairOutcome::Fetched { job, source, bars } => {
                    let sym = job.symbol as usize;
                    // A symbol deleted since: its gap is no longer filled.
                    let Some(p) = self.pipelines.get_mut(sym).filter(|_| self.live[sym]) else {
                        continue;
                    };
                    if !p.repair(job.timeframe, job.gap, &bars, source, now, events) {
                        continue;
                    }
                    // The newest closed bar's features after the replay.
                    let frame = self.timeframes.iter().position(|&t| t == job.timeframe);
                    if let Some(frame) = frame {
                        let engine = p.engine(frame);
                        let view = &mut self.views[sym].frames[frame];
                        if let Some((record, features)) = &mut view.last_closed
                            && engine.last_ts() == Some(record.bar.ts)
                        {
                            *features = engine.last();
                        }
                    }
                }
                // No source could be asked (breakers open, budgets spent): no attempt.
                RepairOutcome::NotSent(job) => {
                    let at = tokio::time::Instant::now() + repair::RETRY_AFTER;
                    link.retries.push((at, job));
                }
                RepairOutcome::Failed(mut job) => {
                    job.tries += 1;
                    if job.tries < repair::MAX_TRIES {
                        let at = tokio::time::Instant::now() + repair::RETRY_AFTER;
                        link.retries.push((at, job));
                    } else if let Some(p) = self.pipelines.get_mut(job.symbol as usize) {
                        tracing::info!(symbol = %self.symbols.name(job.symbol), timeframe = %job.timeframe, from_ms = job.gap.from_ts, to_ms = job.gap.to_ts, "no source could fill the gap; it stays recorded");
                        p.abandon_repair(job.timeframe, job.gap);
                    }
                }
            }
        }
        let t = tokio::time::Instant::now();
        let (due, waiting): (Vec<_>, Vec<_>) = link.retries.drain(..).partition(|(at, _)| *at <= t);
        link.retries = waiting;
        self.new_gaps.extend(due.into_iter().map(|(_, job)| job));
        self.send_repairs();
        if let Some(link) = &self.repair {
            let pending = link.in_flight + link.retries.len();
            self.metrics.gaps_pending.set(pending as i64);
        }
    }

    /// Hands the gaps found (or due again) to the repair worker; without one, or with its queue
    /// full, they stay recorded only.
    pub(super) fn send_repairs(&mut self) {
        for job in self.new_gaps.drain(..) {
            let sent = self.repair.as_mut().is_some_and(|link| {
                let sent = link.jobs.try_send(job).is_ok();
                link.in_flight += usize::from(sent);
                sent
            });
            if !sent && let Some(p) = self.pipelines.get_mut(job.symbol as usize) {
                p.abandon_repair(job.timeframe, job.gap);
            }
        }
    }
}
