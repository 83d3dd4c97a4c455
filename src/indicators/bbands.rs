/*!
Bollinger bands, TA-Lib `BBANDS(period, k, k, SMA)`: middle = mean of the last `period` closes,
upper/lower = middle ± k · σ with σ the population standard deviation. Lookback `period − 1`.

σ comes from [`RollingMoments`]: deviation sums from a shift taken inside the window (never
`E[x²] − mean²` on raw prices), rebuilt from the stored window when the shift goes stale or an
outlier leaves, and at least every 4 windows. This is the same family of algorithm TA-Lib 0.8.1
adopted for VAR/STDDEV/BBANDS, so both stay precise on long runs of 1-second bars at 0.01 %
volatility. A window of equal closes gives σ = 0 exactly (bands on the middle), never NaN.

Like the TA-Lib 0.8.1 in `ta-lib==0.8.2` (and unlike older TA-Lib, which zeroed any variance
below a fixed 1e-14), a small but real σ is kept: an instrument quoted at 1e-4 with 0.01 % moves
has a variance near 1e-16 and still gets bands.
*/

use serde::{Deserialize, Serialize};

use super::window::RollingMoments;

/// The three bands of one bar.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bands {
    pub upper: f64,
    pub middle: f64,
    pub lower: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bollinger {
    k: f64,
    moments: RollingMoments,
}

impl Bollinger {
    /// `period` ≥ 2 (smaller is treated as 2); `k` finite and ≥ 0.
    pub fn new(period: usize, k: f64) -> Self {
        Self {
            k,
            moments: RollingMoments::new(period),
        }
    }

    #[inline]
    pub fn period(&self) -> usize {
        self.moments.period()
    }

    pub fn k(&self) -> f64 {
        self.k
    }

    #[inline]
    pub fn lookback(&self) -> usize {
        self.period() - 1
    }

    #[inline(always)]
    fn bands(&self, mean: f64, variance: f64) -> Bands {
        let sigma = if variance > 0.0 { variance.sqrt() } else { 0.0 };
        let width = sigma * self.k;
        Bands {
            upper: mean + width,
            middle: mean,
            lower: mean - width,
        }
    }

    #[inline]
    pub fn peek(&self, close: f64) -> Option<Bands> {
        self.moments
            .peek(close)
            .map(|m| self.bands(m.mean, m.variance))
    }

    #[inline(always)]
    pub fn update(&mut self, close: f64) -> Option<Bands> {
        let moments = self.moments.update(close)?;
        Some(self.bands(moments.mean, moments.variance))
    }

    #[inline]
    pub fn value(&self) -> Option<Bands> {
        let m = self.moments.value()?;
        Some(self.bands(m.mean, m.variance))
    }

    #[inline]
    pub fn is_ready(&self) -> bool {
        self.moments.value().is_some()
    }

    pub fn reset(&mut self) {
        self.moments.reset();
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.moments.heap_bytes()
    }

    pub(crate) fn is_consistent(&self, period: usize, k: f64) -> bool {
        self.k.to_bits() == k.to_bits() && self.moments.is_consistent(period)
    }
}
