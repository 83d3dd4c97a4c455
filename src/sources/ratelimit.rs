/*!
A request budget per source: a token bucket refilled continuously at `per_minute`, a daily
quota that resets at UTC midnight, and a block after the provider said "too many requests"
(for its `Retry-After`, or a minute when it gave none). Tokio time for the bucket and block,
the wall clock for the day.

Live quotes come first: a budget the collector spends keeps a reserve (half the bucket, and
half the daily quota) that batch work beside it — the background bootstrap, gap repair — may
not take ([`RateBudget::try_acquire_batch`], [`RateBudget::wait_for`]), so a long bootstrap
waits for spare tokens instead of taking the ones the next tick needs, and cannot spend a
small daily quota (Alpha Vantage's 25) before the day's quotes do.
*/

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::RateLimit;

/// One source's budget shared by everything that sends it requests (the collector and a
/// bootstrap running beside it), so together they stay within the provider's limits.
pub type SharedBudget = Arc<Mutex<RateBudget>>;

/// How long to stay away after a rate-limit answer without `Retry-After`.
const DEFAULT_BACKOFF: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct RateBudget {
    limit: RateLimit,
    tokens: f64,
    refilled_at: Instant,
    day: i64,
    used_today: u32,
    blocked_until: Option<Instant>,
    /// Tokens batch work leaves in the bucket for live quotes.
    batch_reserve: f64,
    /// Units of the daily quota batch work leaves for live quotes.
    day_reserve: u32,
}

impl RateBudget {
    pub fn new(limit: RateLimit, now: Instant) -> Self {
        Self {
            limit,
            tokens: limit.per_minute.map_or(0.0, f64::from),
            refilled_at: now,
            day: 0,
            used_today: 0,
            blocked_until: None,
            batch_reserve: 0.0,
            day_reserve: 0,
        }
    }

    /// A budget live collection spends: batch work leaves half the bucket, and half the daily
    /// quota, to it.
    pub fn for_live(limit: RateLimit, now: Instant) -> Self {
        Self {
            batch_reserve: limit.per_minute.map_or(0.0, |m| f64::from(m / 2)),
            day_reserve: limit.per_day.map_or(0, |d| d / 2),
            ..Self::new(limit, now)
        }
    }

    /// Whether batch work would reach into today's live reserve with `cost` more units.
    fn batch_day_spent(&self, wall_ms: i64, cost: u32) -> bool {
        let used = if wall_ms.div_euclid(86_400_000) == self.day {
            self.used_today
        } else {
            0
        };
        self.limit
            .per_day
            .is_some_and(|quota| used.saturating_add(cost) > quota.saturating_sub(self.day_reserve))
    }

    /// [`Self::try_acquire`] for batch work: only tokens above the live reserve.
    pub fn try_acquire_batch(&mut self, now: Instant, wall_ms: i64, cost: u32) -> bool {
        if self.batch_day_spent(wall_ms, cost) {
            return false;
        }
        if let Some(per_minute) = self.limit.per_minute {
            let capacity = f64::from(per_minute);
            let need = f64::from(cost).min(capacity);
            let elapsed = now.duration_since(self.refilled_at).as_secs_f64();
            let tokens = (self.tokens + elapsed * capacity / 60.0).min(capacity);
            if tokens < need + self.batch_reserve.min(capacity - need) {
                return false;
            }
        }
        self.try_acquire(now, wall_ms, cost)
    }

    /// Takes `cost` units of budget (capped at the bucket's size, so a request is never
    /// impossible) if there are that many.
    pub fn try_acquire(&mut self, now: Instant, wall_ms: i64, cost: u32) -> bool {
        if self.blocked_until.is_some_and(|until| now < until) {
            return false;
        }
        let day = wall_ms.div_euclid(86_400_000);
        if day != self.day {
            self.day = day;
            self.used_today = 0;
        }
        if self
            .limit
            .per_day
            .is_some_and(|quota| self.used_today >= quota)
        {
            return false;
        }
        if let Some(per_minute) = self.limit.per_minute {
            let capacity = f64::from(per_minute);
            let elapsed = now.duration_since(self.refilled_at).as_secs_f64();
            self.tokens = (self.tokens + elapsed * capacity / 60.0).min(capacity);
            self.refilled_at = now;
            let need = f64::from(cost).min(capacity);
            if self.tokens < need {
                return false;
            }
            self.tokens -= need;
        }
        self.used_today = self.used_today.saturating_add(cost);
        true
    }

    /// The provider answered "rate limited": stay away for `retry_after` (or a minute).
    pub fn on_rate_limited(&mut self, now: Instant, retry_after: Option<Duration>) {
        self.blocked_until = Some(now + retry_after.unwrap_or(DEFAULT_BACKOFF));
        self.tokens = 0.0;
    }

    /// Requests left this minute (`None` = unlimited), for `/health`.
    pub fn remaining_this_minute(&self) -> Option<u32> {
        self.limit.per_minute.map(|_| self.tokens.floor() as u32)
    }

    pub fn remaining_today(&self) -> Option<u32> {
        self.limit
            .per_day
            .map(|q| q.saturating_sub(self.used_today))
    }

    /// How long until `cost` can be acquired by batch work ([`Self::try_acquire_batch`], above
    /// the live reserve): zero when it can now, `None` when today's quota is spent (it returns
    /// at the next UTC day). For batch work such as the bootstrap, which waits for its budget
    /// instead of skipping a tick.
    pub fn wait_for(&self, now: Instant, wall_ms: i64, cost: u32) -> Option<Duration> {
        if self.batch_day_spent(wall_ms, cost) {
            return None;
        }
        let blocked = self
            .blocked_until
            .map_or(Duration::ZERO, |until| until.saturating_duration_since(now));
        let refill = self.limit.per_minute.map_or(Duration::ZERO, |per_minute| {
            let capacity = f64::from(per_minute);
            let elapsed = now.duration_since(self.refilled_at).as_secs_f64();
            let tokens = (self.tokens + elapsed * capacity / 60.0).min(capacity);
            let need = f64::from(cost).min(capacity);
            let missing = need + self.batch_reserve.min(capacity - need) - tokens;
            Duration::from_secs_f64((missing.max(0.0) * 60.0 / capacity).max(0.0))
        });
        Some(blocked.max(refill))
    }

    pub fn blocked(&self, now: Instant) -> bool {
        self.blocked_until.is_some_and(|until| now < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    #[tokio::test(start_paused = true)]
    async fn bucket_daily_quota_and_retry_after() {
        let t = Instant::now();
        let mut b = RateBudget::new(
            RateLimit {
                per_minute: Some(5),
                per_day: Some(7),
            },
            t,
        );
        assert_eq!(
            (0..10).filter(|_| b.try_acquire(t, DAY, 1)).count(),
            5,
            "a full bucket"
        );
        assert!(
            !b.try_acquire(t + Duration::from_secs(11), DAY, 1),
            "refill is 1 per 12 s"
        );
        assert!(b.try_acquire(t + Duration::from_secs(12), DAY, 1));
        assert!(b.try_acquire(t + Duration::from_secs(60), DAY, 1));
        assert!(
            !b.try_acquire(t + Duration::from_secs(120), DAY, 1),
            "7 per day used"
        );
        assert!(
            b.try_acquire(t + Duration::from_secs(120), 2 * DAY, 1),
            "a new UTC day"
        );
        b.on_rate_limited(t + Duration::from_secs(120), Some(Duration::from_secs(30)));
        assert!(!b.try_acquire(t + Duration::from_secs(149), 2 * DAY, 1));
        assert!(b.try_acquire(t + Duration::from_secs(150), 2 * DAY, 1));
        let mut credits = RateBudget::new(
            RateLimit {
                per_minute: Some(8),
                per_day: Some(800),
            },
            t,
        );
        assert!(
            credits.try_acquire(t, DAY, 5),
            "one batched request for 5 symbols"
        );
        assert!(!credits.try_acquire(t, DAY, 5), "only 3 credits left");
        assert!(credits.try_acquire(t, DAY, 3));
        assert!(
            credits.try_acquire(t + Duration::from_secs(60), DAY, 50),
            "capped at the bucket size"
        );
        let mut free = RateBudget::new(RateLimit::UNLIMITED, t);
        assert!((0..1_000).all(|_| free.try_acquire(t, DAY, 1)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_for_budget_is_the_refill_or_the_block_and_none_when_today_is_spent() {
        let t = Instant::now();
        let secs = Duration::from_secs;
        let mut b = RateBudget::new(
            RateLimit {
                per_minute: Some(5),
                per_day: Some(7),
            },
            t,
        );
        assert_eq!(b.wait_for(t, DAY, 1), Some(Duration::ZERO));
        assert_eq!((0..5).filter(|_| b.try_acquire(t, DAY, 1)).count(), 5);
        assert_eq!(b.wait_for(t, DAY, 1), Some(secs(12)), "one token per 12 s");
        assert_eq!(b.wait_for(t + secs(3), DAY, 1), Some(secs(9)));
        assert!(b.try_acquire(t + b.wait_for(t, DAY, 1).expect("wait"), DAY, 1));
        b.on_rate_limited(t + secs(12), Some(secs(40)));
        assert_eq!(b.wait_for(t + secs(12), DAY, 1), Some(secs(40)));
        assert!(b.try_acquire(t + secs(52), DAY, 1), "7 used");
        assert_eq!(b.wait_for(t + secs(600), DAY, 1), None, "today is spent");
        assert_eq!(
            b.wait_for(t + secs(600), 2 * DAY, 1),
            Some(Duration::ZERO),
            "a new UTC day"
        );
        let free = RateBudget::new(RateLimit::UNLIMITED, t);
        assert_eq!(free.wait_for(t, DAY, 100), Some(Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn batch_work_leaves_half_the_bucket_to_live_quotes() {
        let t = Instant::now();
        let limit = RateLimit {
            per_minute: Some(60),
            per_day: None,
        };
        let mut live = RateBudget::for_live(limit, t);
        let batch_taken = (0..100).filter(|_| live.try_acquire_batch(t, 0, 1)).count();
        assert_eq!(batch_taken, 30, "the bootstrap stops at the reserve");
        assert_eq!(live.wait_for(t, 0, 1), Some(Duration::from_secs(1)));
        let live_taken = (0..100).filter(|_| live.try_acquire(t, 0, 1)).count();
        assert_eq!(live_taken, 30, "quotes may use the reserve");
        // Alone (no live collection), batch work may use the whole bucket.
        let mut alone = RateBudget::new(limit, t);
        assert_eq!(
            (0..100)
                .filter(|_| alone.try_acquire_batch(t, 0, 1))
                .count(),
            60
        );
    }

    #[tokio::test(start_paused = true)]
    async fn batch_work_leaves_half_the_daily_quota_to_live_quotes() {
        let t = Instant::now();
        // Alpha Vantage's free tier: 25 a day.
        let limit = RateLimit {
            per_minute: None,
            per_day: Some(25),
        };
        let mut live = RateBudget::for_live(limit, t);
        let batch_taken = (0..100)
            .filter(|_| live.try_acquire_batch(t, DAY, 1))
            .count();
        assert_eq!(
            batch_taken, 13,
            "a bootstrap stops where the live half begins"
        );
        assert_eq!(
            live.wait_for(t, DAY, 1),
            None,
            "batch work waits for tomorrow"
        );
        let live_taken = (0..100).filter(|_| live.try_acquire(t, DAY, 1)).count();
        assert_eq!(live_taken, 12, "quotes keep the rest of the day");
        assert_eq!(
            live.wait_for(t, 2 * DAY, 1),
            Some(Duration::ZERO),
            "a new day, a new quota"
        );
        assert!(live.try_acquire_batch(t, 2 * DAY, 1));
    }
}
