/*!
Simple moving average, TA-Lib `SMA(period)`: the mean of the last `period` closes. First value
at bar `period − 1` (lookback `period − 1`).

A running total (`total += close − oldest`), re-summed from the stored window every
[`RESUM_EVERY_WINDOWS`](super::window::RESUM_EVERY_WINDOWS) windows so it cannot drift (see
[`RollingSum`]); the mean is `total · (1/period)`, within an ulp of TA-Lib's `total / period`.
*/

use serde::{Deserialize, Serialize};

use super::window::RollingSum;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sma {
    window: RollingSum,
}

impl Sma {
    /// `period` ≥ 1 (checked by [`IndicatorParams::validate`](super::IndicatorParams::validate);
    /// 0 is treated as 1).
    pub fn new(period: usize) -> Self {
        Self {
            window: RollingSum::new(period),
        }
    }

    #[inline]
    pub fn period(&self) -> usize {
        self.window.period()
    }

    /// Bars before the first value.
    #[inline]
    pub fn lookback(&self) -> usize {
        self.period() - 1
    }

    /// Commits a closed bar's close; returns the SMA after it.
    #[inline]
    pub fn update(&mut self, close: f64) -> Option<f64> {
        self.window.update_mean(close)
    }

    /// The SMA if `close` closed the next bar; the state is untouched.
    #[inline]
    pub fn peek(&self, close: f64) -> Option<f64> {
        self.window.peek_mean(close)
    }

    #[inline]
    pub fn value(&self) -> Option<f64> {
        self.window.mean()
    }

    #[inline]
    pub fn is_ready(&self) -> bool {
        self.window.mean().is_some()
    }

    pub fn reset(&mut self) {
        self.window.reset();
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.window.heap_bytes()
    }

    pub(crate) fn is_consistent(&self, period: usize) -> bool {
        self.window.is_consistent(period)
    }
}
