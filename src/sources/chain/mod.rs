/*!
The source chain: the only way anything asks a source for quotes or history.

The tick's quotes, the warm-up's and the gap repair's history, and the bootstrap all go through
one [`SourceChain`], which holds every configured source in `SOURCES` order with its circuit
breaker and its request budget, and records what each request did in the source's metrics. So
whoever asks, the same rules hold:

- A source is asked only for what it declares it serves (the symbol, and for history the
  timeframe), so a request it could only refuse costs nothing.
- A request goes out only with a [`Permit`]: the breaker lets it through (a half-open breaker
  lets exactly one trial through) and the budget has a unit for it, taken right then. A request
  never sent is no failure and spends nothing.
- Each source has a worker per data type (quotes, history) that can be stopped at run time
  (`control.rs`): a stopped worker's requests are refused before the breaker and the budget
  are asked, so they spend nothing, and the asker moves on as after any refusal. Every request
  sent is counted in its worker and recorded in the data type's telemetry ring.
- A permit ends with an explicit outcome: served, failed, or inconclusive (not this source's
  symbol, rate-limited). It cannot be leaked: one dropped unresolved (its request was cancelled)
  is inconclusive, so a trial that never ended cannot keep a breaker half-open forever.
- Live work (the tick, the warm-up before it) may spend the whole budget; batch work (gap
  repair, the bootstrap beside collection) leaves the live reserve ([`Work`]).
- For history, an HTTP 4xx other than 401/403/429 says "not this range" (Yahoo refuses 1-minute
  bars older than 30 days with 422): no verdict on the source's health, so a bootstrap asking
  for the far past cannot open the breaker the live quotes depend on.
*/

use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use parking_lot::Mutex;
use tokio::time::Instant;

mod control;
mod permit;

pub use control::{
    Attempt, DataType, RequestOutcome, RequestRecord, TELEMETRY_CAPACITY, WorkerStatus,
};
pub use permit::{Outcome, Permit};

use crate::clock::Clock;
use crate::metrics::{Metrics, SourceMetrics};
use crate::model::{Bar, Quote, SymbolId, Timeframe};
use crate::sources::breaker::CircuitBreaker;
use crate::sources::ratelimit::RateBudget;
use crate::sources::{RateLimit, Source, SourceError};

/// Who is asking, which decides how much of a budget it may spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Live collection: the whole budget.
    Live,
    /// Background work beside collection (gap repair, bootstrap): what is above the live reserve.
    Batch,
}

/// Why a request was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The source does not serve this symbol or timeframe.
    NotServed,
    /// Its worker for this data type is stopped (`/streaming/config/workers`).
    Stopped,
    /// The breaker is open, or half-open with its trial out.
    BreakerOpen,
    /// The budget has no unit for it now (or the provider asked us to stay away).
    NoBudget,
    /// The tick's deadline passed before the request's turn came.
    PastDeadline,
}

/// What asking a source came to.
#[derive(Debug, Clone)]
pub enum Asked {
    /// Nothing was sent.
    Refused(Refusal),
    /// Sent, and the source did not deliver.
    Failed(SourceError),
}

impl Asked {
    /// Whether a request went out and got no answer before its deadline.
    pub fn timed_out(&self) -> bool {
        matches!(self, Self::Failed(SourceError::Timeout { .. }))
    }
}

/// No source answered a history request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unanswered {
    /// Whether a request went out (false: every source refused before sending, e.g. its
    /// breaker was open or its budget spent, which says nothing about the data).
    pub sent: bool,
}

/// One source with its breaker and budget.
struct Link {
    source: Arc<dyn Source>,
    breaker: Mutex<CircuitBreaker>,
    budget: Mutex<RateBudget>,
    /// Indexed by [`DataType`].
    workers: [control::Worker; 2],
}

/// Every configured source with its breaker and budget, shared by everything that asks them.
pub struct SourceChain {
    links: Vec<Link>,
    metrics: Arc<Metrics>,
    clock: Clock,
    telemetry: control::Telemetry,
}

/// Breaker settings for every source of a chain.
#[derive(Debug, Clone, Copy)]
pub struct BreakerSettings {
    pub failures: u32,
    pub open_for: Duration,
}

impl SourceChain {
    /// The chain over `sources` (in priority order), each with a breaker and the budget `limit`
    /// gives it (its configured or free-tier limit). `live` keeps each budget's live reserve from
    /// batch work, for a chain the collector spends; a bootstrap running alone has none.
    /// `metrics.sources` must list the sources in the same order.
    pub fn new(
        sources: Vec<Arc<dyn Source>>,
        limit: impl Fn(&dyn Source) -> RateLimit,
        breaker: BreakerSettings,
        live: bool,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Self {
        let now = Instant::now();
        let links = sources
            .into_iter()
            .map(|source| {
                let limit = limit(source.as_ref());
                let budget = if live {
                    RateBudget::for_live(limit, now)
                } else {
                    RateBudget::new(limit, now)
                };
                Link {
                    source,
                    breaker: Mutex::new(CircuitBreaker::new(breaker.failures, breaker.open_for)),
                    budget: Mutex::new(budget),
                    workers: Default::default(),
                }
            })
            .collect();
        Self {
            links,
            metrics,
            clock,
            telemetry: control::Telemetry::default(),
        }
    }

    /// The chain of the configured sources, with the configured breakers and budgets
    /// (`&Config` converts into the [`Plan`](super::Plan)).
    pub fn configured<'a>(
        config: impl Into<super::Plan<'a>>,
        sources: Vec<Arc<dyn Source>>,
        live: bool,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Self {
        let plan = config.into();
        let providers = plan.providers;
        Self::new(
            sources,
            |s| providers.rate_limit(s.name()).unwrap_or(s.rate_limit()),
            BreakerSettings {
                failures: plan.breaker_failures,
                open_for: Duration::from_millis(plan.breaker_open_ms),
            },
            live,
            metrics,
            clock,
        )
    }

    pub fn len(&self) -> usize {
        self.links.len()
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// Source `i` (in `SOURCES` order).
    pub fn source(&self, i: usize) -> &Arc<dyn Source> {
        &self.links[i].source
    }

    pub fn sources(&self) -> impl Iterator<Item = &Arc<dyn Source>> {
        self.links.iter().map(|l| &l.source)
    }

    /// Whether source `i` serves the history of `symbol` in bars of `timeframe`.
    pub fn serves_history(&self, i: usize, symbol: SymbolId, timeframe: Timeframe) -> bool {
        let s = &self.links[i].source;
        s.capabilities().history && s.supports(symbol) && s.serves_history(timeframe)
    }

    fn stats(&self, i: usize) -> Option<&SourceMetrics> {
        self.metrics.sources.get(i)
    }

    /// A permit for one request of `cost` budget units to source `i`'s worker for `data_type`,
    /// taken now: the worker runs, the breaker lets it through and the budget has the units
    /// (they are spent).
    ///
    /// # Errors
    /// Why the request may not go out ([`Refusal::Stopped`], [`Refusal::BreakerOpen`] or
    /// [`Refusal::NoBudget`]).
    pub fn permit(
        &self,
        i: usize,
        data_type: DataType,
        work: Work,
        cost: u32,
    ) -> Result<Permit<'_>, Refusal> {
        if !self.is_running(i, data_type) {
            return Err(Refusal::Stopped);
        }
        let link = &self.links[i];
        let t = Instant::now();
        let mut breaker = link.breaker.lock();
        let trial = breaker.is_trial(t);
        if !breaker.allow(t) {
            return Err(Refusal::BreakerOpen);
        }
        let wall = self.clock.now_ms();
        let mut budget = link.budget.lock();
        let taken = match work {
            Work::Live => budget.try_acquire(t, wall, cost),
            Work::Batch => budget.try_acquire_batch(t, wall, cost),
        };
        if !taken {
            if trial {
                breaker.on_success_pending();
            }
            // Batch work waits for its budget and asks again; a live request is skipped.
            if work == Work::Live
                && let Some(stats) = self.stats(i)
            {
                stats.budget_skips.inc();
            }
            return Err(Refusal::NoBudget);
        }
        if let Some(stats) = self.stats(i) {
            stats.requests.inc();
        }
        Ok(Permit {
            chain: self,
            index: i,
            history: false,
            resolved: false,
        })
    }

    /// How long batch work must wait for `cost` units of source `i`'s budget: zero when it can
    /// go now, `None` when today's quota is spent.
    pub fn budget_wait(&self, i: usize, cost: u32) -> Option<Duration> {
        self.links[i]
            .budget
            .lock()
            .wait_for(Instant::now(), self.clock.now_ms(), cost)
    }

    /// Units left in source `i`'s per-minute bucket (`None`: no per-minute limit).
    pub fn remaining_this_minute(&self, i: usize) -> Option<u32> {
        self.links[i].budget.lock().remaining_this_minute()
    }

    /// Latest quotes for `symbols` from source `i`, for live collection: sent only with a
    /// permit and before `deadline`, which also bounds the wait for the answer; recorded as
    /// `attempt`.
    ///
    /// # Errors
    /// Not sent ([`Asked::Refused`]), or sent and failed or timed out ([`Asked::Failed`]).
    pub async fn quotes(
        &self,
        i: usize,
        symbols: &[SymbolId],
        now_ms: i64,
        deadline: Instant,
        attempt: Attempt,
    ) -> Result<Vec<Quote>, Asked> {
        let source = &self.links[i].source;
        if Instant::now() >= deadline {
            return Err(Asked::Refused(Refusal::PastDeadline));
        }
        let permit = self
            .permit(
                i,
                DataType::MarketData,
                Work::Live,
                source.request_cost(symbols.len()),
            )
            .map_err(Asked::Refused)?;
        let started = StdInstant::now();
        let answer = tokio::time::timeout_at(deadline, source.quotes(symbols, now_ms)).await;
        let latency = started.elapsed();
        let stats = self.stats(i);
        let answer = match answer {
            Ok(Ok(quotes)) => {
                if let Some(stats) = stats {
                    stats.latency.record(latency);
                    stats.quotes.add(quotes.len() as u64);
                }
                permit.served();
                Ok(quotes)
            }
            Ok(Err(e)) => {
                if let Some(stats) = stats {
                    stats.latency.record(latency);
                }
                permit.judge(&e);
                Err(e)
            }
            Err(_) => {
                if let Some(stats) = stats {
                    stats.timeouts.inc();
                }
                let e = SourceError::Timeout {
                    source_name: source.name(),
                };
                permit.judge(&e);
                Err(e)
            }
        };
        self.record(
            i,
            &control::Finished {
                data_type: DataType::MarketData,
                symbols,
                latency,
                error: answer.as_ref().err(),
                attempt,
            },
        );
        answer.map_err(Asked::Failed)
    }

    /// Closed bars of `timeframe` opening in `[from_ms, to_ms)` from source `i`, within a permit
    /// for `work`, waiting at most `timeout` for the answer; recorded as `attempt`.
    ///
    /// # Errors
    /// Not sent ([`Asked::Refused`]), or sent and failed or timed out ([`Asked::Failed`]).
    #[allow(clippy::too_many_arguments, reason = "one request's parameters")]
    pub async fn history(
        &self,
        i: usize,
        symbol: SymbolId,
        timeframe: Timeframe,
        from_ms: i64,
        to_ms: i64,
        work: Work,
        timeout: Duration,
        attempt: Attempt,
    ) -> Result<Vec<Bar>, Asked> {
        if !self.serves_history(i, symbol, timeframe) {
            return Err(Asked::Refused(Refusal::NotServed));
        }
        let source = &self.links[i].source;
        let mut permit = self
            .permit(i, DataType::History, work, 1)
            .map_err(Asked::Refused)?;
        permit.history = true;
        let started = StdInstant::now();
        let asked = source.history(symbol, timeframe, from_ms, to_ms);
        let answer = match tokio::time::timeout(timeout, asked).await {
            Ok(Ok(bars)) => {
                permit.served();
                Ok(bars)
            }
            Ok(Err(e)) => {
                permit.judge(&e);
                Err(e)
            }
            Err(_) => {
                if let Some(stats) = self.stats(i) {
                    stats.timeouts.inc();
                }
                let e = SourceError::Timeout {
                    source_name: source.name(),
                };
                permit.judge(&e);
                Err(e)
            }
        };
        self.record(
            i,
            &control::Finished {
                data_type: DataType::History,
                symbols: &[symbol],
                latency: started.elapsed(),
                error: answer.as_ref().err(),
                attempt,
            },
        );
        answer.map_err(Asked::Failed)
    }

    /// The first source, in `SOURCES` order, that answers the history of `symbol` in
    /// `[from_ms, to_ms)`: each source that serves it is asked within a permit, the next one
    /// when it is refused or fails.
    ///
    /// # Errors
    /// No source answered; [`Unanswered::sent`] says whether any request went out.
    pub async fn first_history(
        &self,
        symbol: SymbolId,
        timeframe: Timeframe,
        from_ms: i64,
        to_ms: i64,
        work: Work,
        timeout: Duration,
    ) -> Result<(&'static str, Vec<Bar>), Unanswered> {
        let mut sent = false;
        for i in 0..self.links.len() {
            if !self.serves_history(i, symbol, timeframe) {
                continue;
            }
            let name = self.links[i].source.name();
            let attempt = Attempt {
                retry: 0,
                fallback: sent,
            };
            match self
                .history(i, symbol, timeframe, from_ms, to_ms, work, timeout, attempt)
                .await
            {
                Ok(bars) => return Ok((name, bars)),
                Err(Asked::Refused(why)) => {
                    tracing::debug!(
                        source = name,
                        ?why,
                        "history not asked; trying the next source"
                    );
                }
                Err(Asked::Failed(e)) => {
                    sent = true;
                    tracing::info!(source = name, timeframe = %timeframe, from_ms, to_ms, error = %e, "history unavailable; trying the next source");
                }
            }
        }
        Err(Unanswered { sent })
    }

    /// Breaker states, budgets and clock skews into the metrics, for `/health` and `/metrics`.
    pub fn publish_states(&self) {
        let t = Instant::now();
        for (link, stats) in self.links.iter().zip(&self.metrics.sources) {
            stats.breaker_state.set(link.breaker.lock().state(t) as i64);
            let budget = link.budget.lock();
            stats
                .budget_minute
                .set(budget.remaining_this_minute().map_or(-1, i64::from));
            stats
                .budget_day
                .set(budget.remaining_today().map_or(-1, i64::from));
            drop(budget);
            if let Some(skew) = link.source.clock_skew_ms() {
                stats.clock_skew_ms.set(skew);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::future::BoxFuture;

    use super::*;

    struct Down;

    impl Source for Down {
        fn name(&self) -> &'static str {
            "down"
        }
        fn capabilities(&self) -> super::super::Capabilities {
            super::super::Capabilities {
                history: true,
                ..Default::default()
            }
        }
        fn quotes<'a>(
            &'a self,
            _symbols: &'a [SymbolId],
            _now_ms: i64,
        ) -> BoxFuture<'a, Result<Vec<Quote>, SourceError>> {
            Box::pin(futures::future::pending())
        }
    }

    fn chain(failures: u32) -> SourceChain {
        SourceChain::new(
            vec![Arc::new(Down)],
            |_| RateLimit::UNLIMITED,
            BreakerSettings {
                failures,
                open_for: Duration::from_secs(60),
            },
            true,
            Arc::new(Metrics::new(&["down"])),
            Clock::tokio(0),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_trial_is_inconclusive_and_the_next_period_tries_again() {
        let chain = chain(1);
        let permit = chain
            .permit(0, DataType::MarketData, Work::Live, 1)
            .expect("closed");
        assert!(permit.failed(), "one failure opens it");
        assert_eq!(
            chain.permit(0, DataType::MarketData, Work::Live, 1).err(),
            Some(Refusal::BreakerOpen)
        );
        tokio::time::advance(Duration::from_secs(60)).await;
        let trial = chain
            .permit(0, DataType::MarketData, Work::Live, 1)
            .expect("half-open: the trial");
        assert_eq!(
            chain.permit(0, DataType::MarketData, Work::Live, 1).err(),
            Some(Refusal::BreakerOpen),
            "one trial at a time"
        );
        drop(trial);
        let again = chain
            .permit(0, DataType::MarketData, Work::Live, 1)
            .expect("a dropped trial is no verdict");
        again.served();
        assert_eq!(
            chain.links[0].breaker.lock().state(Instant::now()) as i64,
            0
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_quote_request_past_its_deadline_is_a_timeout_and_one_not_sent_is_nothing() {
        let chain = chain(5);
        let deadline = Instant::now() + Duration::from_millis(900);
        let answer = chain.quotes(0, &[0], 0, deadline, Attempt::default()).await;
        assert!(answer.as_ref().is_err_and(Asked::timed_out), "{answer:?}");
        let late = chain.quotes(0, &[0], 0, deadline, Attempt::default()).await;
        assert!(
            matches!(late, Err(Asked::Refused(Refusal::PastDeadline))),
            "{late:?}"
        );
        let stats = &chain.metrics.sources[0];
        assert_eq!(stats.requests.get(), 1);
        assert_eq!(stats.timeouts.get(), 1);
        assert_eq!(
            stats.errors.get(),
            0,
            "a timeout is counted as one, not as an error"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_history_range_refused_with_a_4xx_does_not_open_the_breaker() {
        let chain = chain(1);
        let permit = {
            let mut p = chain
                .permit(0, DataType::History, Work::Batch, 1)
                .expect("closed");
            p.history = true;
            p
        };
        permit.judge(&SourceError::Http {
            source_name: "down",
            status: 422,
            reason: "range".into(),
        });
        assert_eq!(
            chain.links[0].breaker.lock().state(Instant::now()) as i64,
            0
        );
        let permit = chain
            .permit(0, DataType::MarketData, Work::Live, 1)
            .expect("still closed");
        permit.judge(&SourceError::Http {
            source_name: "down",
            status: 422,
            reason: "bad request".into(),
        });
        assert_eq!(
            chain.links[0].breaker.lock().state(Instant::now()) as i64,
            1,
            "a quote request refused counts"
        );
    }
}
