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
    started: bool,
    prev_close: f64,
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
            started: false,
            prev_close: 0.0,
            total: CompensatedSum::ZERO,
        }
    }

    #[inline]
    pub fn lookback(&self) -> usize {
        0
    }

    #[inline]
    fn step(&self, bar: &Bar) -> CompensatedSum {
        if !self.started {
            return CompensatedSum::ZERO.plus(bar.volume);
        }
        // Selected, not branched on: up and down bars alternate unpredictably. Adding 0.0
        // leaves a compensated sum exactly as it was.
        let signed = if bar.close > self.prev_close {
            bar.volume
        } else if bar.close < self.prev_close {
            -bar.volume
        } else {
            0.0
        };
        self.total.plus(signed)
    }

    #[inline]
    pub fn peek(&self, bar: &Bar) -> Option<f64> {
        Some(self.step(bar).value())
    }

    #[inline]
    pub fn update(&mut self, bar: &Bar) -> Option<f64> {
        self.total = self.step(bar);
        self.prev_close = bar.close;
        self.started = true;
        Some(self.total.value())
    }

    #[inline]
    pub fn value(&self) -> Option<f64> {
        self.started.then(|| self.total.value())
    }

    #[inline]
    pub fn is_ready(&self) -> bool {
        self.started
    }

    pub fn reset(&mut self) {
        *self = Self::new();
    }
}
