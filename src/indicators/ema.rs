/*!
Exponential moving average, TA-Lib `EMA(period)` with its default ("classic") seeding: the
first value, at bar `period − 1`, is the plain mean of the first `period` closes (summed from 0.0
in order); after that each close moves it by `k = 2 / (period + 1)` of the gap. A period of 1
copies the input, as TA-Lib does.

The step is TA-Lib's own, `fma(x − ema, k, ema)` (`f64::mul_add`, one rounding): outputs are
bit-identical to TA-Lib's. The fused form is also the faster one — the loop-carried chain is a
subtract and one FMA instead of subtract, multiply and add — even where the FMA is reached
through libm. The recursion is contractive: rounding errors decay instead of drifting.
*/

use serde::{Deserialize, Serialize};

/// One EMA step, TA-Lib's `fma(x − ema, k, ema)`. `β = 0` (period 1) copies `x`, as TA-Lib
/// does.
#[inline]
fn ema_step(prev: f64, x: f64, k: f64, beta: f64) -> f64 {
    if beta == 0.0 {
        x
    } else {
        (x - prev).mul_add(k, prev)
    }
}

/// TA-Lib's smoothing factor `k` for a period, and `β = 1 − k`.
pub(crate) fn ema_factors(period: usize) -> (f64, f64) {
    let k = 2.0 / ((period + 1) as f64);
    (k, 1.0 - k)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ema {
    period: usize,
    k: f64,
    beta: f64,
    /// Closes seen, capped at `period` (ready when equal).
    seen: usize,
    /// Sum of the first closes while seeding, then the EMA.
    acc: f64,
}

impl Ema {
    /// `period` ≥ 1 (0 is treated as 1).
    pub fn new(period: usize) -> Self {
        let period = period.max(1);
        let (k, beta) = ema_factors(period);
        Self {
            period,
            k,
            beta,
            seen: 0,
            acc: 0.0,
        }
    }

    #[inline]
    pub fn period(&self) -> usize {
        self.period
    }

    #[inline]
    pub fn lookback(&self) -> usize {
        self.period - 1
    }

    #[inline]
    pub fn peek(&self, close: f64) -> Option<f64> {
        if self.seen == self.period {
            Some(ema_step(self.acc, close, self.k, self.beta))
        } else if self.seen + 1 == self.period {
            Some((self.acc + close) / self.period as f64)
        } else {
            None
        }
    }

    #[inline]
    pub fn update(&mut self, close: f64) -> Option<f64> {
        if self.seen == self.period {
            self.acc = ema_step(self.acc, close, self.k, self.beta);
            return Some(self.acc);
        }
        self.acc += close;
        self.seen += 1;
        if self.seen == self.period {
            self.acc /= self.period as f64;
            return Some(self.acc);
        }
        None
    }

    #[inline]
    pub fn value(&self) -> Option<f64> {
        (self.seen == self.period).then_some(self.acc)
    }

    #[inline]
    pub fn is_ready(&self) -> bool {
        self.seen == self.period
    }

    pub fn reset(&mut self) {
        *self = Self::new(self.period);
    }

    pub(crate) fn is_consistent(&self, period: usize) -> bool {
        self.period == period && self.seen <= period
    }
}
