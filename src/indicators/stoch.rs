/*!
Slow stochastic, TA-Lib `STOCH(fast_k, slow_k, SMA, slow_d, SMA)`.

raw %K = 100 · ((close − LL) / (HH − LL)) over the last `fast_k` bars (0 when HH − LL is within
1e-14 of |HH| + |LL|, i.e. a flat window — TA-Lib 0.8.1's scale-aware test); %K = SMA(slow_k)
of raw %K; %D = SMA(slow_d) of %K. Both outputs start together at bar
`fast_k − 1 + slow_k − 1 + slow_d − 1` (17 with the defaults), as TA-Lib reports them.

HH and LL come from monotonic deques over fixed rings (amortised O(1), never a rescan); the two
SMAs are [`RollingSum`]s, running totals re-summed from their window periodically against
drift. Where TA-Lib's never-re-summed running sum leaves a residue (e.g. 3e-14 instead of 0 on a
flat stretch), barkeep's value is the exact one.
*/

use serde::{Deserialize, Serialize};

use super::window::{MonotonicDeque, RollingSum};
use crate::model::Bar;

/// Relative width under which a high-low range counts as flat (TA-Lib's `TA_EPSILON`).
const FLAT_RANGE: f64 = 1e-14;

/// The two outputs of one bar.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StochValue {
    /// Slow %K.
    pub k: f64,
    /// Slow %D.
    pub d: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stochastic {
    fast_k: usize,
    highs: MonotonicDeque<true>,
    lows: MonotonicDeque<false>,
    k_avg: RollingSum,
    d_avg: RollingSum,
}

/// TA-Lib's raw %K.
#[inline(always)]
fn raw_k(close: f64, highest: f64, lowest: f64) -> f64 {
    let range = highest - lowest;
    if range.abs() <= FLAT_RANGE * (highest.abs() + lowest.abs()) {
        0.0
    } else {
        100.0 * ((close - lowest) / range)
    }
}

impl Stochastic {
    /// All periods ≥ 1 (0 is treated as 1).
    pub fn new(fast_k: usize, slow_k: usize, slow_d: usize) -> Self {
        let fast_k = fast_k.max(1);
        Self {
            fast_k,
            highs: MonotonicDeque::new(fast_k),
            lows: MonotonicDeque::new(fast_k),
            k_avg: RollingSum::new(slow_k),
            d_avg: RollingSum::new(slow_d),
        }
    }

    /// `(fast_k, slow_k, slow_d)`.
    pub fn periods(&self) -> (usize, usize, usize) {
        (self.fast_k, self.k_avg.period(), self.d_avg.period())
    }

    #[inline]
    pub fn lookback(&self) -> usize {
        self.fast_k - 1 + self.k_avg.period() - 1 + self.d_avg.period() - 1
    }

    #[inline(always)]
    pub fn peek(&self, bar: &Bar) -> Option<StochValue> {
        let highest = self.highs.peek(bar.high);
        let lowest = self.lows.peek(bar.low);
        if self.highs.pushed() + 1 < self.fast_k as u64 {
            return None;
        }
        let k = self.k_avg.peek_mean(raw_k(bar.close, highest, lowest))?;
        let d = self.d_avg.peek_mean(k)?;
        Some(StochValue { k, d })
    }

    #[inline(always)]
    pub fn update(&mut self, bar: &Bar) -> Option<StochValue> {
        let highest = self.highs.update(bar.high);
        let lowest = self.lows.update(bar.low);
        if self.highs.pushed() < self.fast_k as u64 {
            return None;
        }
        let k = self.k_avg.update_mean(raw_k(bar.close, highest, lowest))?;
        let d = self.d_avg.update_mean(k)?;
        Some(StochValue { k, d })
    }

    #[inline]
    pub fn value(&self) -> Option<StochValue> {
        let d = self.d_avg.mean()?;
        let k = self.k_avg.mean()?;
        Some(StochValue { k, d })
    }

    #[inline]
    pub fn is_ready(&self) -> bool {
        self.d_avg.mean().is_some()
    }

    pub fn reset(&mut self) {
        self.highs.reset();
        self.lows.reset();
        self.k_avg.reset();
        self.d_avg.reset();
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.highs.heap_bytes()
            + self.lows.heap_bytes()
            + self.k_avg.heap_bytes()
            + self.d_avg.heap_bytes()
    }

    pub(crate) fn is_consistent(&self, fast_k: usize, slow_k: usize, slow_d: usize) -> bool {
        self.fast_k == fast_k
            && self.highs.is_consistent(fast_k)
            && self.lows.is_consistent(fast_k)
            && self.k_avg.is_consistent(slow_k)
            && self.d_avg.is_consistent(slow_d)
    }
}
