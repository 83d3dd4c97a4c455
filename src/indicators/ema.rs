/*!
Exponential moving average, TA-Lib `EMA(period)` with its default ("classic") seeding: the
first value, at bar `period − 1`, is the plain mean of the first `period` closes (summed from 0.0
in order); after that `ema = (x − ema) · k + ema` with `k = 2 / (period + 1)`. A period of 1
copies the input, as TA-Lib does.

TA-Lib's wheel evaluates the recursion with a fused multiply-add; barkeep uses a plain multiply
and add (a hardware FMA is not guaranteed on the build target and a libm call would cost more
than the whole step), so the two can differ in the last bit (~1e-16 relative), far inside the
1e-9 tolerance. The recursion is contractive, so rounding errors decay instead of drifting.
*/

use serde::{Deserialize, Serialize};

/// One EMA step, shared with MACD so both round identically.
#[inline]
pub(crate) fn ema_step(prev: f64, x: f64, k: f64) -> f64 {
    (x - prev) * k + prev
}

/// TA-Lib's smoothing factor for a period.
pub(crate) fn ema_k(period: usize) -> f64 {
    2.0 / ((period + 1) as f64)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ema {
    period: usize,
    k: f64,
    /// Closes seen, capped at `period`.
    seen: usize,
    /// Sum of the first closes while seeding.
    seed_sum: f64,
    value: Option<f64>,
}

impl Ema {
    /// `period` ≥ 1 (0 is treated as 1).
    pub fn new(period: usize) -> Self {
        let period = period.max(1);
        Self {
            period,
            k: ema_k(period),
            seen: 0,
            seed_sum: 0.0,
            value: None,
        }
    }

    pub fn period(&self) -> usize {
        self.period
    }

    pub fn lookback(&self) -> usize {
        self.period - 1
    }

    #[inline]
    pub fn peek(&self, close: f64) -> Option<f64> {
        match self.value {
            Some(_) if self.period == 1 => Some(close),
            Some(prev) => Some(ema_step(prev, close, self.k)),
            None if self.seen + 1 == self.period => {
                Some((self.seed_sum + close) / self.period as f64)
            }
            None => None,
        }
    }

    #[inline]
    pub fn update(&mut self, close: f64) -> Option<f64> {
        let out = self.peek(close);
        if self.seen < self.period {
            self.seed_sum += close;
            self.seen += 1;
        }
        if out.is_some() {
            self.value = out;
        }
        out
    }

    pub fn value(&self) -> Option<f64> {
        self.value
    }

    pub fn is_ready(&self) -> bool {
        self.value.is_some()
    }

    pub fn reset(&mut self) {
        *self = Self::new(self.period);
    }

    pub(crate) fn is_consistent(&self, period: usize) -> bool {
        self.period == period
            && self.seen <= period
            && (self.value.is_some() == (self.seen == period))
    }
}
