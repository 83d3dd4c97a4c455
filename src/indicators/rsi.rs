/*!
Relative strength index, TA-Lib `RSI(period)` (Wilder). Lookback `period`: the changes at bars
1..=period are summed (gains and losses apart), each sum scaled by `1/period`, and the first
value is at bar `period`. After that each average is multiplied by `period − 1`, the new gain
(or loss) added, and the result scaled by `1/period` — three separate roundings, as TA-Lib does.
RSI = 100 · gain / (gain + loss), and 0 when gain + loss is exactly 0 (a flat series).

This is bit-identical to the TA-Lib 0.8.1 bundled in `ta-lib==0.8.2`, which tests the total
exactly (not against a fixed epsilon) so instruments quoted at tiny prices keep a live RSI.
Wilder smoothing is contractive: rounding errors decay, they cannot accumulate.
*/

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rsi {
    period: usize,
    inv_period: f64,
    /// `period − 1`, the weight of the previous average.
    keep: f64,
    /// Closes seen, capped at `period + 1` (ready when equal).
    seen: usize,
    prev_close: f64,
    /// Sums of the gains and losses while seeding, then Wilder's averages.
    avg_gain: f64,
    avg_loss: f64,
}

/// RSI from the two averages: 100 · gain / (gain + loss), 0 when both are 0.
#[inline]
fn rsi_of(avg_gain: f64, avg_loss: f64) -> f64 {
    let total = avg_gain + avg_loss;
    if total > 0.0 {
        100.0 * (avg_gain / total)
    } else {
        0.0
    }
}

impl Rsi {
    /// `period` ≥ 2 for a meaningful RSI (0 is treated as 1).
    pub fn new(period: usize) -> Self {
        let period = period.max(1);
        Self {
            period,
            inv_period: 1.0 / period as f64,
            keep: (period - 1) as f64,
            seen: 0,
            prev_close: 0.0,
            avg_gain: 0.0,
            avg_loss: 0.0,
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

    /// The averages after `close`.
    #[inline]
    fn step(&self, close: f64) -> (f64, f64) {
        let change = close - self.prev_close;
        // Branch-free split: `gain − change` is exactly the loss (or exactly 0).
        let gain = if change > 0.0 { change } else { 0.0 };
        let loss = gain - change;
        if self.ready() {
            (
                (self.avg_gain * self.keep + gain) * self.inv_period,
                (self.avg_loss * self.keep + loss) * self.inv_period,
            )
        } else if self.seen == 0 {
            (0.0, 0.0)
        } else if self.seen < self.period {
            (self.avg_gain + gain, self.avg_loss + loss)
        } else {
            (
                (self.avg_gain + gain) * self.inv_period,
                (self.avg_loss + loss) * self.inv_period,
            )
        }
    }

    #[inline]
    pub fn peek(&self, close: f64) -> Option<f64> {
        let (g, l) = self.step(close);
        (self.seen >= self.period).then(|| rsi_of(g, l))
    }

    #[inline]
    pub fn update(&mut self, close: f64) -> Option<f64> {
        (self.avg_gain, self.avg_loss) = self.step(close);
        self.prev_close = close;
        if !self.ready() {
            self.seen += 1;
        }
        self.value()
    }

    #[inline]
    pub fn value(&self) -> Option<f64> {
        self.ready().then(|| rsi_of(self.avg_gain, self.avg_loss))
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
