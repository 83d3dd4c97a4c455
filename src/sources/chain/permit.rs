/*!
The permit one request needs, and what its outcome does to the source's breaker: the part of
the chain that makes a trial impossible to leak (see `mod.rs`).
*/

use tokio::time::Instant;

use super::SourceChain;
use crate::sources::{ErrorKind, SourceError};

/// How a request ended, for the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Served,
    Failed,
    /// No verdict on the source's health.
    Inconclusive,
}

/// The right to send one request to one source; see the module comment. Resolve it with
/// [`Permit::served`], [`Permit::failed`], [`Permit::inconclusive`] or [`Permit::judge`];
/// dropped unresolved, it is inconclusive.
pub struct Permit<'a> {
    pub(super) chain: &'a SourceChain,
    pub(super) index: usize,
    /// A history request (a 4xx then says "not this range", no verdict).
    pub(super) history: bool,
    pub(super) resolved: bool,
}

impl Permit<'_> {
    fn resolve(mut self, outcome: Outcome) -> bool {
        self.resolved = true;
        self.chain.settle(self.index, outcome)
    }

    /// The source answered.
    pub fn served(self) {
        self.resolve(Outcome::Served);
    }

    /// The source failed; true when this failure opened its breaker.
    pub fn failed(self) -> bool {
        self.resolve(Outcome::Failed)
    }

    /// No verdict on the source's health.
    pub fn inconclusive(self) {
        self.resolve(Outcome::Inconclusive);
    }

    /// Resolves by what the error says: not served → inconclusive; rate limited → the budget
    /// stays away as asked, inconclusive; a failure → failed (counted), except a history
    /// request refused with a 4xx, which is inconclusive.
    pub fn judge(self, error: &SourceError) {
        let chain = self.chain;
        let i = self.index;
        let stats = chain.stats(i);
        let outcome = match error.kind() {
            ErrorKind::NotServed => Outcome::Inconclusive,
            ErrorKind::RateLimited => {
                if let Some(stats) = stats {
                    stats.rate_limited.inc();
                }
                chain.links[i]
                    .budget
                    .lock()
                    .on_rate_limited(Instant::now(), error.retry_after());
                Outcome::Inconclusive
            }
            ErrorKind::Failure => {
                if let Some(stats) = stats
                    && !matches!(error, SourceError::Timeout { .. })
                {
                    stats.errors.inc();
                }
                match error {
                    SourceError::Http { status, .. }
                        if self.history
                            && (400..500).contains(status)
                            && ![401, 403, 429].contains(status) =>
                    {
                        Outcome::Inconclusive
                    }
                    _ => Outcome::Failed,
                }
            }
        };
        let source = chain.links[i].source.name();
        if self.resolve(outcome) {
            tracing::warn!(source, error = %error, "circuit breaker open");
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.resolved {
            self.chain.settle(self.index, Outcome::Inconclusive);
        }
    }
}

impl SourceChain {
    /// Applies a request's outcome to source `i`'s breaker; true when it opened.
    fn settle(&self, i: usize, outcome: Outcome) -> bool {
        let mut breaker = self.links[i].breaker.lock();
        let opened = match outcome {
            Outcome::Served => {
                breaker.on_success();
                false
            }
            Outcome::Failed => breaker.on_failure(Instant::now()),
            Outcome::Inconclusive => {
                breaker.on_success_pending();
                false
            }
        };
        if opened && let Some(stats) = self.stats(i) {
            stats.breaker_opens.inc();
        }
        opened
    }
}
