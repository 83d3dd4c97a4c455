/*!
Fixed-capacity sliding windows shared by the indicators: a ring of the last values
([`Ring`]), a running window sum ([`RollingSum`]), running window moments for the standard
deviation ([`RollingMoments`]) and a monotonic deque for rolling extremes ([`MonotonicDeque`]).

Every type allocates its storage once, in `new`, and never again: `update` and `peek` are O(1)
(amortised O(1) for the deque and for the rare re-summations below) and allocation-free.

Each type follows the same pattern: `peek(x)` computes what the window would report if `x` were
the next value, from `&self`; `update(x)` computes exactly the same thing through the same code
and then commits it. So a forming bar can be evaluated any number of times without touching the
state, and closing it gives bit-identical results.

How drift is bounded:
- [`RollingSum`] keeps TA-Lib's add-then-subtract running sum (bit-identical to `TA_SMA` until
  the first re-summation) and re-sums the stored window from scratch every
  [`RESUM_EVERY_WINDOWS`] windows. The error of the running sum therefore never comes from more
  than `2 · RESUM_EVERY_WINDOWS · period` roundings, however long the series is.
- [`RollingMoments`] never forms `E[x²] − mean²` from raw prices. It keeps the sums of the
  deviations from a shift `K` taken from the window itself, so both terms stay at the scale of
  the variance. It recomputes the sums from the stored window (a fresh pass, with the newest
  value as the new shift) when the shift has gone stale (variance below 1e-6 of the mean squared
  deviation), when a value leaving the window dwarfs what stays (an outlier would otherwise
  leave cancellation garbage behind), and at least every [`RESEED_EVERY_WINDOWS`] windows.
  A window of identical values is detected exactly (a run counter) and reports a variance of
  exactly 0.
*/

use serde::{Deserialize, Serialize};

/// [`RollingSum`] re-sums its window from scratch after this many windows' worth of updates.
pub const RESUM_EVERY_WINDOWS: usize = 4;

/// [`RollingMoments`] rebuilds its deviation sums at least after this many windows' worth of
/// updates (TA-Lib's `TA_VAR` uses the same cap).
pub const RESEED_EVERY_WINDOWS: usize = 32;

/// The variance is "stale-shift" garbage when it falls below this fraction of the mean squared
/// deviation from the shift it was extracted from (bounds the cancellation error to ~2e-10).
const STALE_SHIFT_RATIO: f64 = 1e-6;

/// A departing deviation² this many times larger than what stays buries the survivors below
/// its rounding error.
const OUTLIER_RATIO: f64 = 1e6;

/// After a fresh pass, a variance below this fraction of the mean squared deviation is the
/// rounding noise of a window whose values all round to the same mean: report 0.
const FRESH_ZERO_RATIO: f64 = 1e-12;

/// The last `capacity` values, oldest first. Storage is allocated once in [`Ring::new`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ring {
    buf: Vec<f64>,
    /// Slot the next value is written to; also the oldest value's slot once full.
    next: usize,
    len: usize,
}

impl Ring {
    pub fn new(capacity: usize) -> Self {
        Self {
            buf: vec![0.0; capacity],
            next: 0,
            len: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_full(&self) -> bool {
        self.len == self.buf.len()
    }

    /// The oldest stored value.
    pub fn oldest(&self) -> Option<f64> {
        if self.len == 0 {
            return None;
        }
        let start = if self.is_full() { self.next } else { 0 };
        self.buf.get(start).copied()
    }

    /// Appends `x`, dropping the oldest value when full. A zero-capacity ring stores nothing.
    #[inline]
    pub fn push(&mut self, x: f64) {
        if let Some(slot) = self.buf.get_mut(self.next) {
            *slot = x;
            self.next += 1;
            if self.next == self.buf.len() {
                self.next = 0;
            }
            if self.len < self.buf.len() {
                self.len += 1;
            }
        }
    }

    /// The stored values, oldest first, as two slices (the ring may wrap).
    pub fn as_slices(&self) -> (&[f64], &[f64]) {
        if self.is_full() {
            let (front, back) = self.buf.split_at(self.next);
            (back, front)
        } else {
            (self.buf.get(..self.len).unwrap_or(&[]), &[])
        }
    }

    /// The stored values, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = f64> + '_ {
        let (a, b) = self.as_slices();
        a.iter().chain(b).copied()
    }

    pub fn clear(&mut self) {
        self.next = 0;
        self.len = 0;
    }

    /// Bytes of the value buffer.
    pub fn heap_bytes(&self) -> usize {
        self.buf.capacity() * std::mem::size_of::<f64>()
    }

    /// Whether the indices are coherent with `capacity` (used after deserialising a checkpoint).
    pub fn is_consistent(&self, capacity: usize) -> bool {
        let cap = self.buf.len();
        cap == capacity
            && self.len <= cap
            && (self.next < cap || (cap == 0 && self.next == 0))
            && (self.len == cap || self.next == self.len)
    }
}

/// Sum of the last `period` values, as TA-Lib's SMA keeps it: the sum of the last `period − 1`
/// values is carried, the new value is added, the total is used, the oldest is subtracted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollingSum {
    /// The last `period − 1` values.
    ring: Ring,
    /// Sum of the values in `ring`.
    sum: f64,
    period_f64: f64,
    updates_since_resum: usize,
}

impl RollingSum {
    /// `period` must be at least 1.
    pub fn new(period: usize) -> Self {
        let period = period.max(1);
        Self {
            ring: Ring::new(period - 1),
            sum: 0.0,
            period_f64: period as f64,
            updates_since_resum: 0,
        }
    }

    pub fn period(&self) -> usize {
        self.ring.capacity() + 1
    }

    /// Whether the next value completes a window.
    pub fn is_warm(&self) -> bool {
        self.ring.is_full()
    }

    /// The mean of the window ending with `x`, or `None` during warm-up.
    #[inline]
    pub fn peek_mean(&self, x: f64) -> Option<f64> {
        self.is_warm().then(|| (self.sum + x) / self.period_f64)
    }

    /// Commits `x`; returns the mean of the window ending with it (same bits as `peek_mean`).
    #[inline]
    pub fn update_mean(&mut self, x: f64) -> Option<f64> {
        if !self.ring.is_full() {
            self.sum += x;
            self.ring.push(x);
            return None;
        }
        let total = self.sum + x;
        let mean = total / self.period_f64;
        // Period 1 keeps no history: the value itself is the oldest of its window.
        let oldest = self.ring.oldest().unwrap_or(x);
        self.sum = total - oldest;
        self.ring.push(x);
        self.updates_since_resum += 1;
        if self.updates_since_resum >= RESUM_EVERY_WINDOWS * self.period() {
            self.resum();
        }
        Some(mean)
    }

    /// Recomputes the carried sum from the stored values, oldest first.
    fn resum(&mut self) {
        self.sum = self.ring.iter().fold(0.0, |acc, v| acc + v);
        self.updates_since_resum = 0;
    }

    pub fn reset(&mut self) {
        self.ring.clear();
        self.sum = 0.0;
        self.updates_since_resum = 0;
    }

    pub fn heap_bytes(&self) -> usize {
        self.ring.heap_bytes()
    }

    pub fn is_consistent(&self, period: usize) -> bool {
        period >= 1
            && self.ring.is_consistent(period - 1)
            && self.period_f64 == period as f64
            && self.updates_since_resum < RESUM_EVERY_WINDOWS * period
    }
}

/// Mean and population variance of a window, as reported by [`RollingMoments`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Moments {
    pub mean: f64,
    /// Never negative, never NaN for finite inputs; exactly 0 for a window of equal values.
    pub variance: f64,
}

/// The state [`RollingMoments`] moves to after a value: computed by `step`, committed by
/// `update`.
#[derive(Debug, Clone, Copy)]
struct MomentsStep {
    moments: Moments,
    shift: f64,
    /// Deviation sums over the values that stay for the next window.
    s1: f64,
    s2: f64,
    run: usize,
    reseeded: bool,
}

/// Mean and population variance over the last `period` values, from sums of deviations from a
/// shift taken from the window (see the module docs for how precision and drift are kept).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollingMoments {
    /// The last `period − 1` values.
    ring: Ring,
    shift: f64,
    /// Σ(v − shift) and Σ(v − shift)² over the values in `ring`.
    s1: f64,
    s2: f64,
    /// Length of the current run of bit-equal values (capped at `period`).
    run: usize,
    last: f64,
    period_f64: f64,
    updates_since_reseed: usize,
}

impl RollingMoments {
    /// `period` must be at least 2.
    pub fn new(period: usize) -> Self {
        let period = period.max(2);
        Self {
            ring: Ring::new(period - 1),
            shift: 0.0,
            s1: 0.0,
            s2: 0.0,
            run: 0,
            last: f64::NAN,
            period_f64: period as f64,
            updates_since_reseed: 0,
        }
    }

    pub fn period(&self) -> usize {
        self.ring.capacity() + 1
    }

    /// The moments of the window ending with `x`, or `None` during warm-up.
    #[inline]
    pub fn peek(&self, x: f64) -> Option<Moments> {
        self.step(x).map(|s| s.moments)
    }

    /// Commits `x`; returns the moments of the window ending with it (same bits as `peek`).
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<Moments> {
        let Some(step) = self.step(x) else {
            // Warm-up: accumulate deviations from the first value, as TA-Lib anchors its shift.
            if self.ring.is_empty() {
                self.shift = x;
            }
            let d = x - self.shift;
            self.s1 += d;
            self.s2 += d * d;
            self.run = if x == self.last { self.run + 1 } else { 1 };
            self.last = x;
            self.ring.push(x);
            return None;
        };
        self.shift = step.shift;
        self.s1 = step.s1;
        self.s2 = step.s2;
        self.run = step.run;
        self.last = x;
        self.ring.push(x);
        self.updates_since_reseed = if step.reseeded {
            0
        } else {
            self.updates_since_reseed + 1
        };
        Some(step.moments)
    }

    fn step(&self, x: f64) -> Option<MomentsStep> {
        if !self.ring.is_full() {
            return None;
        }
        let period = self.period();
        let run = if x == self.last {
            (self.run + 1).min(period)
        } else {
            1
        };
        if run >= period {
            // Every value in the window is bit-equal to `x`: exact answer, exact fresh state.
            return Some(MomentsStep {
                moments: Moments {
                    mean: x,
                    variance: 0.0,
                },
                shift: x,
                s1: 0.0,
                s2: 0.0,
                run,
                reseeded: true,
            });
        }
        let n = self.period_f64;
        let d = x - self.shift;
        let t1 = self.s1 + d;
        let t2 = self.s2 + d * d;
        let m1 = t1 / n;
        let mean_sq_dev = t2 / n;
        let variance = mean_sq_dev - m1 * m1;
        let oldest = self.ring.oldest().unwrap_or(x);
        let d_old = oldest - self.shift;
        let d_old_sq = d_old * d_old;
        let s1 = t1 - d_old;
        let s2 = t2 - d_old_sq;
        let stale = variance < STALE_SHIFT_RATIO * mean_sq_dev
            || d_old_sq > OUTLIER_RATIO * s2
            || self.updates_since_reseed + 1 >= RESEED_EVERY_WINDOWS * period;
        if stale {
            return Some(self.fresh_step(x, oldest, run));
        }
        Some(MomentsStep {
            moments: Moments {
                mean: self.shift + m1,
                variance,
            },
            shift: self.shift,
            s1,
            s2,
            run,
            reseeded: false,
        })
    }

    /// Recomputes the sums from the stored window with `x` (the newest value) as the shift.
    /// The sums carried forward are taken over the values that stay, never by subtracting the
    /// departing one, so an outlier leaving the window leaves no residue behind.
    #[cold]
    fn fresh_step(&self, x: f64, oldest: f64, run: usize) -> MomentsStep {
        let n = self.period_f64;
        let mut s1 = 0.0;
        let mut s2 = 0.0;
        // Skip the oldest value: it leaves after this window.
        for v in self.ring.iter().skip(1) {
            let d = v - x;
            s1 += d;
            s2 += d * d;
        }
        let d_old = oldest - x;
        let t1 = s1 + d_old;
        let t2 = s2 + d_old * d_old;
        let m1 = t1 / n;
        let mean_sq_dev = t2 / n;
        let mut variance = mean_sq_dev - m1 * m1;
        if variance < FRESH_ZERO_RATIO * mean_sq_dev {
            variance = 0.0;
        }
        MomentsStep {
            moments: Moments {
                mean: x + m1,
                variance,
            },
            shift: x,
            s1,
            s2,
            run,
            reseeded: true,
        }
    }

    pub fn reset(&mut self) {
        *self = Self::new(self.period());
    }

    pub fn heap_bytes(&self) -> usize {
        self.ring.heap_bytes()
    }

    pub fn is_consistent(&self, period: usize) -> bool {
        period >= 2
            && self.ring.is_consistent(period - 1)
            && self.period_f64 == period as f64
            && self.run <= period
            && self.updates_since_reseed < RESEED_EVERY_WINDOWS * period
    }
}

/// Rolling maximum (`MAX = true`) or minimum (`MAX = false`) of the last `period` values in
/// amortised O(1): a deque of the values that can still become the extreme, each with its
/// sequence number, stored in a fixed ring of `period` slots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonotonicDeque<const MAX: bool> {
    values: Vec<f64>,
    seqs: Vec<u64>,
    head: usize,
    len: usize,
    /// Sequence number of the next value.
    pushed: u64,
}

impl<const MAX: bool> MonotonicDeque<MAX> {
    /// `period` must be at least 1.
    pub fn new(period: usize) -> Self {
        let period = period.max(1);
        Self {
            values: vec![0.0; period],
            seqs: vec![0; period],
            head: 0,
            len: 0,
            pushed: 0,
        }
    }

    pub fn period(&self) -> usize {
        self.values.len()
    }

    /// Whether `candidate` is at least as extreme as `other`.
    #[inline]
    fn dominates(candidate: f64, other: f64) -> bool {
        if MAX {
            candidate >= other
        } else {
            candidate <= other
        }
    }

    #[inline]
    fn slot(&self, offset: usize) -> usize {
        let i = self.head + offset;
        if i >= self.values.len() {
            i - self.values.len()
        } else {
            i
        }
    }

    /// The extreme of the window ending with `x` (the last `period − 1` values and `x`).
    #[inline]
    pub fn peek(&self, x: f64) -> f64 {
        let window_start = (self.pushed + 1).saturating_sub(self.period() as u64);
        // The first entry still inside the window is the extreme of the kept values; only
        // the front can have expired, as exactly one value leaves per step.
        let kept = (0..self.len.min(2))
            .map(|k| self.slot(k))
            .find(|&i| self.seqs.get(i).is_some_and(|&s| s >= window_start))
            .and_then(|i| self.values.get(i).copied());
        match kept {
            Some(v) if !Self::dominates(x, v) => v,
            _ => x,
        }
    }

    /// Commits `x`; returns the extreme of the window ending with it (same value as `peek`).
    #[inline]
    pub fn update(&mut self, x: f64) -> f64 {
        let seq = self.pushed;
        let period = self.period();
        // Drop the front if it leaves the window with this value.
        if self.len > 0
            && self
                .seqs
                .get(self.head)
                .is_some_and(|&s| s + period as u64 <= seq)
        {
            self.head = self.slot(1);
            self.len -= 1;
        }
        // Drop the entries `x` outlives and dominates.
        while self.len > 0 {
            let back = self.slot(self.len - 1);
            match self.values.get(back) {
                Some(&v) if Self::dominates(x, v) => self.len -= 1,
                _ => break,
            }
        }
        let back = self.slot(self.len);
        if let (Some(v), Some(s)) = (self.values.get_mut(back), self.seqs.get_mut(back)) {
            *v = x;
            *s = seq;
            self.len += 1;
        }
        self.pushed += 1;
        self.values.get(self.head).copied().unwrap_or(x)
    }

    pub fn reset(&mut self) {
        self.head = 0;
        self.len = 0;
        self.pushed = 0;
    }

    pub fn heap_bytes(&self) -> usize {
        self.values.capacity() * std::mem::size_of::<f64>()
            + self.seqs.capacity() * std::mem::size_of::<u64>()
    }

    pub fn is_consistent(&self, period: usize) -> bool {
        let ok_shape = self.values.len() == period
            && self.seqs.len() == period
            && period >= 1
            && self.head < period
            && self.len <= period;
        if !ok_shape {
            return false;
        }
        // Sequence numbers strictly increase, inside the window, values strictly monotonic.
        let mut prev: Option<(u64, f64)> = None;
        for k in 0..self.len {
            let i = self.slot(k);
            let (Some(&s), Some(&v)) = (self.seqs.get(i), self.values.get(i)) else {
                return false;
            };
            if s >= self.pushed || s + (period as u64) < self.pushed {
                return false;
            }
            if let Some((ps, pv)) = prev
                && (s <= ps || Self::dominates(v, pv))
            {
                return false;
            }
            prev = Some((s, v));
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_last_values_oldest_first() {
        let mut r = Ring::new(3);
        assert_eq!(r.oldest(), None);
        for x in [1.0, 2.0] {
            r.push(x);
        }
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![1.0, 2.0]);
        for x in [3.0, 4.0, 5.0] {
            r.push(x);
        }
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![3.0, 4.0, 5.0]);
        assert_eq!(r.oldest(), Some(3.0));
        assert!(r.is_consistent(3));
        let mut empty = Ring::new(0);
        empty.push(1.0);
        assert!(empty.is_full() && empty.oldest().is_none());
    }

    #[test]
    fn rolling_sum_matches_a_fresh_mean() {
        let mut s = RollingSum::new(3);
        let xs = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0];
        let outs: Vec<_> = xs.iter().map(|&x| s.update_mean(x)).collect();
        assert_eq!(outs[..2], [None, None]);
        assert_eq!(outs[2], Some(7.0 / 3.0));
        assert_eq!(outs[5], Some(56.0 / 3.0));
        let mut one = RollingSum::new(1);
        assert_eq!(one.update_mean(5.0), Some(5.0));
        assert_eq!(one.update_mean(7.0), Some(7.0));
    }

    #[test]
    fn deque_tracks_extremes() {
        let mut hi = MonotonicDeque::<true>::new(3);
        let mut lo = MonotonicDeque::<false>::new(3);
        let xs = [5.0, 3.0, 4.0, 1.0, 2.0, 2.0, 9.0, 0.5];
        for (i, &x) in xs.iter().enumerate() {
            let w = &xs[i.saturating_sub(2)..=i];
            let want_hi = w.iter().copied().fold(f64::MIN, f64::max);
            let want_lo = w.iter().copied().fold(f64::MAX, f64::min);
            assert_eq!(hi.peek(x), want_hi);
            assert_eq!(lo.peek(x), want_lo);
            assert_eq!(hi.update(x), want_hi);
            assert_eq!(lo.update(x), want_lo);
            assert!(hi.is_consistent(3) && lo.is_consistent(3));
        }
    }

    #[test]
    fn moments_of_a_flat_window_are_exactly_zero() {
        let mut m = RollingMoments::new(4);
        for x in [1.0, 7.0, 3.0, 0.1, 0.1, 0.1, 0.1, 0.1] {
            m.update(x);
        }
        let got = m.update(0.1);
        assert_eq!(
            got,
            Some(Moments {
                mean: 0.1,
                variance: 0.0
            })
        );
    }
}
