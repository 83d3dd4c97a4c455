/*!
On-balance volume, TA-Lib `OBV`: the first value is the first bar's volume; after that the
volume is added when the close rises, subtracted when it falls, and the total is unchanged when
the close is equal. Ready from bar 0.

The total is a Neumaier-compensated sum ([`CompensatedSum`]), so fractional volumes do not make
it drift over millions of bars; TA-Lib uses a plain running sum, which agrees exactly for whole
volumes and to the last few bits otherwise.
*/

use serde::{Deserialize, Serialize};

use super::compensated::CompensatedSum;
use crate::model::Bar;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Obv {
    /// `None` before the first bar.
    prev_close: Option<f64>,
    total: CompensatedSum,
}

impl Default for Obv {
    fn default() -> Self {
        Self::new()
    }
}

impl Obv {
    pub fn new() -> Self {
        Self {
            prev_close: None,
            total: CompensatedSum::ZERO,
        }
    }

    pub fn lookback(&self) -> usize {
        0
    }

    #[inline]
    fn step(&self, bar: &Bar) -> CompensatedSum {
        match self.prev_close {
            None => CompensatedSum::ZERO.plus(bar.volume),
            Some(prev) if bar.close > prev => self.total.plus(bar.volume),
            Some(prev) if bar.close < prev => self.total.plus(-bar.volume),
            Some(_) => self.total,
        }
    }

    #[inline]
    pub fn peek(&self, bar: &Bar) -> Option<f64> {
        Some(self.step(bar).value())
    }

    #[inline]
    pub fn update(&mut self, bar: &Bar) -> Option<f64> {
        self.total = self.step(bar);
        self.prev_close = Some(bar.close);
        Some(self.total.value())
    }

    pub fn value(&self) -> Option<f64> {
        self.prev_close.map(|_| self.total.value())
    }

    pub fn is_ready(&self) -> bool {
        self.prev_close.is_some()
    }

    pub fn reset(&mut self) {
        *self = Self::new();
    }
}
