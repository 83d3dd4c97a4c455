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
- [`RollingSum`] keeps a running total (`total += x − oldest`) and re-sums the stored window
  from scratch every [`RESUM_EVERY_WINDOWS`] windows. The error of the running total therefore
  never comes from more than `2 · RESUM_EVERY_WINDOWS · period` roundings, however long the
  series is (TA-Lib's own running sum is never re-summed).
- [`RollingMoments`] never forms `E[x²] − mean²` from raw prices. It keeps the sums of the
  deviations from a shift `K` taken from the window itself, so both terms stay at the scale of
  the variance. It recomputes the sums from the stored window (a fresh pass around the current
  mean) when the shift has gone stale (variance below 1e-6 of the mean squared
  deviation), when a value leaving the window dwarfs what stays (an outlier would otherwise
  leave cancellation garbage behind), and at least every [`RESEED_EVERY_WINDOWS`] windows.
  A window of identical values is detected exactly (a run counter) and reports a variance of
  exactly 0.

Why this file is one room (longer than the house limit of 600 lines): the four windows share
the peek/update discipline and the drift bounds above, and are checked against each other by
reading them side by side; split, each would restate the same contract.
*/

use serde::{Deserialize, Serialize};

/// [`RollingSum`] re-sums its window from scratch after this many windows' worth of updates.
pub const RESUM_EVERY_WINDOWS: usize = 16;

/// [`RollingMoments`] rebuilds its deviation sums around the window mean at least after this
/// many windows' worth of updates (TA-Lib's `TA_VAR` waits 32). Eight keeps the shift within a
/// few window-spreads of the mean on a random walk, so σ keeps ~12-13 significant digits, for
/// an amortised cost of about one flop per bar.
pub const RESEED_EVERY_WINDOWS: usize = 8;

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
    /// A boxed slice, not a `Vec`: its pointer is `noalias`, so the optimiser can keep the
    /// owners' scalar state in registers across writes to the buffer.
    buf: Box<[f64]>,
    /// Slot the next value is written to; also the oldest value's slot once full.
    next: usize,
    len: usize,
}

impl Ring {
    pub fn new(capacity: usize) -> Self {
        Self {
            buf: vec![0.0; capacity].into_boxed_slice(),
            next: 0,
            len: 0,
        }
    }

    #[inline]
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    pub fn is_full(&self) -> bool {
        self.len == self.buf.len()
    }

    /// The oldest stored value.
    #[inline]
    pub fn oldest(&self) -> Option<f64> {
        if self.len == 0 {
            return None;
        }
        let start = if self.is_full() { self.next } else { 0 };
        self.buf.get(start).copied()
    }

    /// The oldest value when the ring is full (the one the next push drops).
    #[inline]
    pub fn oldest_if_full(&self) -> Option<f64> {
        if self.is_full() {
            self.buf.get(self.next).copied()
        } else {
            None
        }
    }

    /// Appends `x`; returns the value it replaced when the ring was full. A zero-capacity ring
    /// stores nothing.
    #[inline]
    pub fn push(&mut self, x: f64) -> Option<f64> {
        let full = self.is_full();
        let slot = self.buf.get_mut(self.next)?;
        let old = std::mem::replace(slot, x);
        self.next += 1;
        if self.next == self.buf.len() {
            self.next = 0;
        }
        if full {
            Some(old)
        } else {
            self.len += 1;
            None
        }
    }

    /// The stored values, oldest first, as two slices (the ring may wrap).
    #[inline]
    pub fn as_slices(&self) -> (&[f64], &[f64]) {
        if self.is_full() {
            let (front, back) = self.buf.split_at(self.next);
            (back, front)
        } else {
            (self.buf.get(..self.len).unwrap_or(&[]), &[])
        }
    }

    /// The stored values, oldest first.
    #[inline]
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
        std::mem::size_of_val(&*self.buf)
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

/// Sum of the last `period` values, kept as a running total: the departing value's share is
/// swapped for the new one's (`total += x − oldest`), one addition on the loop-carried chain.
///
/// The buffer starts zero-filled, so warm-up takes the same path as the steady state
/// (`total + (x − 0.0)` is exactly `total + x`); only readiness depends on the count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollingSum {
    /// The last `period` values (zeros before they arrive); boxed for the reason given on
    /// [`Ring`].
    buf: Box<[f64]>,
    /// Slot of the oldest value, overwritten by the next one.
    next: usize,
    /// Values seen, capped at `period`.
    len: usize,
    /// Sum of the values in `buf`.
    total: f64,
    /// `1 / period`: the mean is `total · inv_period` (a multiply, not a divide, on the hot
    /// path; at most an ulp from TA-Lib's `total / period`).
    inv_period: f64,
    updates_since_resum: usize,
    resum_every: usize,
}

impl RollingSum {
    /// `period` must be at least 1.
    pub fn new(period: usize) -> Self {
        let period = period.max(1);
        Self {
            buf: vec![0.0; period].into_boxed_slice(),
            next: 0,
            len: 0,
            total: 0.0,
            inv_period: 1.0 / period as f64,
            updates_since_resum: 0,
            resum_every: RESUM_EVERY_WINDOWS * period,
        }
    }

    #[inline]
    pub fn period(&self) -> usize {
        self.buf.len()
    }

    /// Whether the window ending with the next value is complete.
    #[inline(always)]
    fn completes(&self) -> bool {
        self.len + 1 >= self.buf.len()
    }

    /// The total of the window ending with `x` and whether it was re-summed from scratch.
    #[inline(always)]
    fn total_with(&self, x: f64) -> (f64, bool) {
        let oldest = self.buf.get(self.next).copied().unwrap_or(0.0);
        if self.updates_since_resum + 1 >= self.resum_every {
            return (self.resummed_with(x), true);
        }
        (self.total + (x - oldest), false)
    }

    /// The window ending with `x`, summed from scratch, oldest first. Out of line, so that the
    /// per-bar path stays small enough to inline into its callers.
    #[cold]
    #[inline(never)]
    fn resummed_with(&self, x: f64) -> f64 {
        let (front, back) = self.buf.split_at(self.next.min(self.buf.len()));
        // Oldest first: from the slot after `next` to the end, then the start; `x` replaces
        // the value at `next`.
        back.iter().skip(1).chain(front).fold(0.0, |acc, v| acc + v) + x
    }

    /// The mean of the window ending with `x`, or `None` during warm-up.
    #[inline(always)]
    pub fn peek_mean(&self, x: f64) -> Option<f64> {
        self.completes()
            .then(|| self.total_with(x).0 * self.inv_period)
    }

    /// Commits `x`; returns the mean of the window ending with it (same bits as `peek_mean`).
    #[inline(always)]
    pub fn update_mean(&mut self, x: f64) -> Option<f64> {
        let (total, resummed) = self.total_with(x);
        let ready = self.completes();
        // The buffer first, the scalars after: stores through the buffer pointer come before
        // the scalar writes, so the optimiser can keep the scalars in registers in a loop.
        if let Some(slot) = self.buf.get_mut(self.next) {
            *slot = x;
        }
        self.next += 1;
        if self.next >= self.buf.len() {
            self.next = 0;
        }
        self.total = total;
        if ready {
            self.len = self.buf.len();
            self.updates_since_resum = if resummed {
                0
            } else {
                self.updates_since_resum + 1
            };
            Some(total * self.inv_period)
        } else {
            self.len += 1;
            None
        }
    }

    /// The mean of the current window (what the last `update_mean` returned).
    #[inline]
    pub fn mean(&self) -> Option<f64> {
        (self.len == self.buf.len()).then_some(self.total * self.inv_period)
    }

    pub fn reset(&mut self) {
        *self = Self::new(self.period());
    }

    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.buf)
    }

    pub fn is_consistent(&self, period: usize) -> bool {
        period >= 1
            && self.buf.len() == period
            && self.next < period
            && self.len <= period
            && (self.len == period || self.next == self.len)
            && self.inv_period == 1.0 / period as f64
            && self.resum_every == RESUM_EVERY_WINDOWS * period
            && self.updates_since_resum < self.resum_every
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
    /// Deviation sums over the window ending with the new value.
    s1: f64,
    s2: f64,
    run: usize,
    reseeded: bool,
}

/// Mean and population variance over the last `period` values, from sums of deviations from a
/// shift taken from the window (see the module docs for how precision and drift are kept).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollingMoments {
    /// The last `period` values.
    ring: Ring,
    shift: f64,
    /// Σ(v − shift) and Σ(v − shift)² over the values in `ring`.
    s1: f64,
    s2: f64,
    /// Length of the current run of bit-equal values (capped at `period`).
    run: usize,
    last: f64,
    inv_period: f64,
    updates_since_reseed: usize,
    reseed_every: usize,
}

impl RollingMoments {
    /// `period` must be at least 2.
    pub fn new(period: usize) -> Self {
        let period = period.max(2);
        Self {
            ring: Ring::new(period),
            shift: 0.0,
            s1: 0.0,
            s2: 0.0,
            run: 0,
            last: f64::NAN,
            inv_period: 1.0 / period as f64,
            updates_since_reseed: 0,
            reseed_every: RESEED_EVERY_WINDOWS * period,
        }
    }

    #[inline]
    pub fn period(&self) -> usize {
        self.ring.capacity()
    }

    /// The moments of the window ending with `x`, or `None` during warm-up.
    #[inline]
    pub fn peek(&self, x: f64) -> Option<Moments> {
        self.step(x).map(|s| s.moments)
    }

    /// Commits `x`; returns the moments of the window ending with it (same bits as `peek`).
    #[inline(always)]
    pub fn update(&mut self, x: f64) -> Option<Moments> {
        let Some(step) = self.step(x) else {
            // Warm-up: accumulate deviations from the first value, as TA-Lib anchors its shift.
            if self.ring.is_empty() {
                self.shift = x;
            }
            self.ring.push(x);
            let d = x - self.shift;
            self.s1 += d;
            self.s2 += d * d;
            self.run = if x == self.last { self.run + 1 } else { 1 };
            self.last = x;
            return None;
        };
        // Buffer first, scalars after (see `RollingSum::update_mean`).
        self.ring.push(x);
        self.shift = step.shift;
        self.s1 = step.s1;
        self.s2 = step.s2;
        self.run = step.run;
        self.last = x;
        self.updates_since_reseed = if step.reseeded {
            0
        } else {
            self.updates_since_reseed + 1
        };
        Some(step.moments)
    }

    /// Mean and variance from deviation sums over a full window. The zero floor only ever
    /// applies after a fresh pass (the incremental path reseeds long before it could), so the
    /// committed state always reproduces the reported moments.
    #[inline(always)]
    fn moments_of(&self, shift: f64, s1: f64, s2: f64) -> Moments {
        let m1 = s1 * self.inv_period;
        let mean_sq_dev = s2 * self.inv_period;
        let variance = mean_sq_dev - m1 * m1;
        Moments {
            mean: shift + m1,
            variance: if variance < FRESH_ZERO_RATIO * mean_sq_dev {
                0.0
            } else {
                variance
            },
        }
    }

    /// The moments of the current window (what the last `update` returned).
    #[inline]
    pub fn value(&self) -> Option<Moments> {
        self.ring
            .is_full()
            .then(|| self.moments_of(self.shift, self.s1, self.s2))
    }

    #[inline(always)]
    fn step(&self, x: f64) -> Option<MomentsStep> {
        let period = self.period();
        let oldest = self.ring.oldest_if_full();
        if oldest.is_none() && self.ring.len() + 1 < period {
            return None;
        }
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
        let d = x - self.shift;
        let (s1, s2, d_old_sq) = match oldest {
            Some(old) => {
                let d_old = old - self.shift;
                let d_old_sq = d_old * d_old;
                (
                    self.s1 + (d - d_old),
                    self.s2 + (d * d - d_old_sq),
                    d_old_sq,
                )
            }
            None => (self.s1 + d, self.s2 + d * d, 0.0),
        };
        let m1 = s1 * self.inv_period;
        let mean_sq_dev = s2 * self.inv_period;
        let variance = mean_sq_dev - m1 * m1;
        let mean = self.shift + m1;
        let stale = variance < STALE_SHIFT_RATIO * mean_sq_dev
            || d_old_sq > OUTLIER_RATIO * s2
            || self.updates_since_reseed + 1 >= self.reseed_every;
        if stale {
            return Some(self.fresh_step(x, oldest.is_some(), run, mean));
        }
        // Not stale means variance ≥ 1e-6 · mean_sq_dev, so `moments_of`'s zero floor would
        // not apply: these are the moments `value()` recomputes from the committed sums.
        Some(MomentsStep {
            moments: Moments { mean, variance },
            shift: self.shift,
            s1,
            s2,
            run,
            reseeded: false,
        })
    }

    /// Recomputes the sums over the window ending with `x` from the stored values, around a new
    /// shift: the running estimate of the window mean, so the deviations are centred and the
    /// shift stays good for as long as possible. Nothing is subtracted, so a departing outlier
    /// leaves no residue. Out of line, so that `step` stays small enough to inline.
    #[cold]
    #[inline(never)]
    fn fresh_step(&self, x: f64, evicts: bool, run: usize, mean_estimate: f64) -> MomentsStep {
        // A finite estimate is always within the window's range to far better than its spread;
        // fall back on the newest value if the sums were not finite.
        let shift = if mean_estimate.is_finite() {
            mean_estimate
        } else {
            x
        };
        let mut s1 = 0.0;
        let mut s2 = 0.0;
        for v in self
            .ring
            .iter()
            .skip(usize::from(evicts))
            .chain(std::iter::once(x))
        {
            let d = v - shift;
            s1 += d;
            s2 += d * d;
        }
        MomentsStep {
            moments: self.moments_of(shift, s1, s2),
            shift,
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
            && self.ring.is_consistent(period)
            && self.inv_period == 1.0 / period as f64
            && self.run <= period
            && self.reseed_every == RESEED_EVERY_WINDOWS * period
            && self.updates_since_reseed < self.reseed_every
    }
}

/// Rolling maximum (`MAX = true`) or minimum (`MAX = false`) of the last `period` values in
/// amortised O(1): a deque of the values that can still become the extreme, each with its
/// sequence number, in a fixed ring of slots (a power of two ≥ `period`, so indices wrap with a
/// mask). Values in the deque are strictly monotonic from front to back; the front is the
/// extreme.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonotonicDeque<const MAX: bool> {
    /// `(value, sequence number)`; boxed for the same reason as [`Ring`]'s buffer.
    slots: Box<[(f64, u64)]>,
    period: u64,
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
            slots: vec![(0.0, 0); period.next_power_of_two()].into_boxed_slice(),
            period: period as u64,
            head: 0,
            len: 0,
            pushed: 0,
        }
    }

    #[inline]
    pub fn period(&self) -> usize {
        self.period as usize
    }

    /// Values pushed so far.
    #[inline]
    pub fn pushed(&self) -> u64 {
        self.pushed
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

    /// The slot `offset` places behind the front.
    #[inline]
    fn slot(&self, offset: usize) -> usize {
        (self.head + offset) & (self.slots.len() - 1)
    }

    #[inline]
    fn value_at(&self, offset: usize) -> Option<(f64, u64)> {
        self.slots.get(self.slot(offset)).copied()
    }

    /// The extreme of the window ending with `x` (the last `period − 1` values and `x`).
    #[inline(always)]
    pub fn peek(&self, x: f64) -> f64 {
        let window_start = (self.pushed + 1).saturating_sub(self.period);
        // The first entry still inside the window is the extreme of the kept values; only
        // the front can be leaving, as exactly one value leaves per step.
        let kept = match self.value_at(0) {
            Some((v, s)) if self.len > 0 && s >= window_start => Some(v),
            _ if self.len > 1 => self.value_at(1).map(|(v, _)| v),
            _ => None,
        };
        match kept {
            Some(v) if !Self::dominates(x, v) => v,
            _ => x,
        }
    }

    /// Commits `x`; returns the extreme of the window ending with it (same value as `peek`).
    #[inline(always)]
    pub fn update(&mut self, x: f64) -> f64 {
        let seq = self.pushed;
        // Drop the front if it leaves the window with this value.
        if self.len > 0
            && let Some((_, s)) = self.value_at(0)
            && s + self.period <= seq
        {
            self.head = self.slot(1);
            self.len -= 1;
        }
        // Drop the entries `x` outlives and dominates.
        while self.len > 0 {
            match self.value_at(self.len - 1) {
                Some((v, _)) if Self::dominates(x, v) => self.len -= 1,
                _ => break,
            }
        }
        let back = self.slot(self.len);
        if let Some(slot) = self.slots.get_mut(back) {
            *slot = (x, seq);
            self.len += 1;
        }
        self.pushed += 1;
        self.value_at(0).map_or(x, |(v, _)| v)
    }

    pub fn reset(&mut self) {
        self.head = 0;
        self.len = 0;
        self.pushed = 0;
    }

    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.slots)
    }

    pub fn is_consistent(&self, period: usize) -> bool {
        let cap = self.slots.len();
        let ok_shape = period >= 1
            && self.period == period as u64
            && cap == period.next_power_of_two()
            && self.head < cap
            && self.len <= period;
        if !ok_shape {
            return false;
        }
        // Sequence numbers strictly increase inside the last window, values strictly monotonic.
        let mut prev: Option<(f64, u64)> = None;
        for k in 0..self.len {
            let Some((v, s)) = self.value_at(k) else {
                return false;
            };
            if s >= self.pushed || s + self.period < self.pushed {
                return false;
            }
            if let Some((pv, ps)) = prev
                && (s <= ps || Self::dominates(v, pv))
            {
                return false;
            }
            prev = Some((v, s));
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
        assert_eq!(outs[2], Some(7.0 * (1.0 / 3.0)));
        assert_eq!(outs[5], Some(56.0 * (1.0 / 3.0)));
        assert_eq!(s.mean(), outs[5]);
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
