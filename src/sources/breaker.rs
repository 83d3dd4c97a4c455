/*!
A circuit breaker per source: after `failures` consecutive failures the source is *open*
(skipped) for `open_for`; then *half-open*: one trial request is let through, and its outcome
closes the breaker again or re-opens it for another `open_for`.

Time is tokio's, so tests with `tokio::time::pause()` run a 60-second open period in no time.
*/

use std::time::Duration;

use tokio::time::Instant;

/// The three states, as shown in `/health` and the `source_breaker_state` gauge (0, 1, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    failures_to_open: u32,
    open_for: Duration,
    consecutive_failures: u32,
    opened_at: Option<Instant>,
    trial_in_flight: bool,
}

impl CircuitBreaker {
    pub fn new(failures_to_open: u32, open_for: Duration) -> Self {
        Self {
            failures_to_open: failures_to_open.max(1),
            open_for,
            consecutive_failures: 0,
            opened_at: None,
            trial_in_flight: false,
        }
    }

    pub fn state(&self, now: Instant) -> BreakerState {
        match self.opened_at {
            None => BreakerState::Closed,
            Some(at) if now.duration_since(at) >= self.open_for => BreakerState::HalfOpen,
            Some(_) => BreakerState::Open,
        }
    }

    /// Whether a request may go out now. In half-open state only one trial is allowed until
    /// its outcome is reported.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.state(now) {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen if self.trial_in_flight => false,
            BreakerState::HalfOpen => {
                self.trial_in_flight = true;
                true
            }
        }
    }

    /// Whether the breaker is probing (the next allowed request is the trial).
    pub fn is_trial(&self, now: Instant) -> bool {
        self.state(now) == BreakerState::HalfOpen
    }

    pub fn on_success(&mut self) {
        self.consecutive_failures = 0;
        self.opened_at = None;
        self.trial_in_flight = false;
    }

    /// The trial request could not be judged (e.g. it was rate-limited): allow another trial
    /// later without changing the state.
    pub fn on_success_pending(&mut self) {
        self.trial_in_flight = false;
    }

    /// Records a failure; returns true when this failure opened the breaker.
    pub fn on_failure(&mut self, now: Instant) -> bool {
        let was_probing = self.trial_in_flight;
        self.trial_in_flight = false;
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        if was_probing
            || (self.opened_at.is_none() && self.consecutive_failures >= self.failures_to_open)
        {
            self.opened_at = Some(now);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_and_probes_once() {
        let mut b = CircuitBreaker::new(5, Duration::from_secs(60));
        let t = Instant::now();
        for i in 0..4 {
            assert!(b.allow(t));
            assert!(!b.on_failure(t), "failure {i} must not open yet");
        }
        b.on_success();
        for _ in 0..4 {
            b.on_failure(t);
        }
        assert_eq!(
            b.state(t),
            BreakerState::Closed,
            "a success resets the count"
        );
        assert!(b.on_failure(t));
        assert_eq!(b.state(t), BreakerState::Open);
        assert!(!b.allow(t + Duration::from_secs(59)));
        let later = t + Duration::from_secs(60);
        assert_eq!(b.state(later), BreakerState::HalfOpen);
        assert!(b.allow(later), "one trial");
        assert!(!b.allow(later), "only one trial at a time");
        assert!(b.on_failure(later), "a failed trial re-opens");
        assert!(!b.allow(later + Duration::from_secs(1)));
        let again = later + Duration::from_secs(60);
        assert!(b.allow(again));
        b.on_success();
        assert_eq!(b.state(again), BreakerState::Closed);
        assert!(b.allow(again) && b.allow(again));
    }
}
