/*!
Average true range, TA-Lib `ATR(period)` (Wilder). The true range starts at bar 1 (bar 0 has no
previous close): TR = max(high − low, |prev close − high|, |prev close − low|). The first value,
at bar `period`, is the mean of TR over bars 1..=period (summed from 0.0 in order); after that
`atr = fma(β, atr, α · TR)` with β = (period − 1)/period and α = 1 − β (so α + β is exactly 1),
exactly as TA-Lib 0.8.1 computes it: outputs are bit-identical. The single fused step is also
the short loop-carried chain that makes this the fastest form. Contractive: no drift.
*/

use serde::{Deserialize, Serialize};

use crate::model::Bar;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Atr {
    period: usize,
    alpha: f64,
    beta: f64,
    /// Bars seen, capped at `period + 1` (ready when equal).
    seen: usize,
    prev_close: f64,
    /// Sum of the true ranges while seeding, then the ATR itself.
    acc: f64,
}

/// TA-Lib's true range, comparing in its order.
#[inline]
pub(crate) fn true_range(high: f64, low: f64, prev_close: f64) -> f64 {
    let mut greatest = high - low;
    let to_high = (prev_close - high).abs();
    if to_high > greatest {
        greatest = to_high;
    }
    let to_low = (prev_close - low).abs();
    if to_low > greatest {
        greatest = to_low;
    }
    greatest
}

impl Atr {
    /// `period` ≥ 1 (0 is treated as 1).
    pub fn new(period: usize) -> Self {
        let period = period.max(1);
        let beta = (period - 1) as f64 / period as f64;
        Self {
            period,
            alpha: 1.0 - beta,
            beta,
            seen: 0,
            prev_close: 0.0,
            acc: 0.0,
        }
    }

    #[inline]
    pub fn period(&self) -> usize {
        self.period
    }

    #[inline]
    pub fn lookback(&self) -> usize {
        self.period
    }

    #[inline]
    fn ready(&self) -> bool {
        self.seen > self.period
    }

    /// The accumulator after `bar`.
    #[inline]
    fn step(&self, bar: &Bar) -> f64 {
        let tr = true_range(bar.high, bar.low, self.prev_close);
        if self.ready() {
            self.beta.mul_add(self.acc, self.alpha * tr)
        } else if self.seen == 0 {
            0.0
        } else if self.seen < self.period {
            self.acc + tr
        } else {
            (self.acc + tr) / self.period as f64
        }
    }

    #[inline]
    pub fn peek(&self, bar: &Bar) -> Option<f64> {
        let acc = self.step(bar);
        (self.seen >= self.period).then_some(acc)
    }

    #[inline]
    pub fn update(&mut self, bar: &Bar) -> Option<f64> {
        self.acc = self.step(bar);
        self.prev_close = bar.close;
        if !self.ready() {
            self.seen += 1;
        }
        self.value()
    }

    #[inline]
    pub fn value(&self) -> Option<f64> {
        self.ready().then_some(self.acc)
    }

    #[inline]
    pub fn is_ready(&self) -> bool {
        self.ready()
    }

    pub fn reset(&mut self) {
        *self = Self::new(self.period);
    }

    pub(crate) fn is_consistent(&self, period: usize) -> bool {
        self.period == period && self.seen <= period + 1
    }
}
