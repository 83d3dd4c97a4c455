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
    /// Closes seen, capped at `period + 1`.
    seen: usize,
    prev_close: f64,
    avg_gain: f64,
    avg_loss: f64,
    value: Option<f64>,
}

/// The state after one close, computed by `step`, committed by `update`.
#[derive(Clone, Copy)]
struct RsiStep {
    avg_gain: f64,
    avg_loss: f64,
    out: Option<f64>,
}

impl Rsi {
    /// `period` ≥ 2 for a meaningful RSI (0 is treated as 1).
    pub fn new(period: usize) -> Self {
        let period = period.max(1);
        Self {
            period,
            inv_period: 1.0 / period as f64,
            seen: 0,
            prev_close: 0.0,
            avg_gain: 0.0,
            avg_loss: 0.0,
            value: None,
        }
    }

    pub fn period(&self) -> usize {
        self.period
    }

    pub fn lookback(&self) -> usize {
        self.period
    }

    #[inline]
    fn step(&self, close: f64) -> RsiStep {
        if self.seen == 0 {
            return RsiStep {
                avg_gain: 0.0,
                avg_loss: 0.0,
                out: None,
            };
        }
        let change = close - self.prev_close;
        // Branch-free split: `gain − change` is exactly the loss (or exactly 0).
        let gain = if change > 0.0 { change } else { 0.0 };
        let loss = gain - change;
        let (avg_gain, avg_loss) = if self.seen < self.period {
            (self.avg_gain + gain, self.avg_loss + loss)
        } else if self.seen == self.period {
            (
                (self.avg_gain + gain) * self.inv_period,
                (self.avg_loss + loss) * self.inv_period,
            )
        } else {
            let n1 = (self.period - 1) as f64;
            (
                (self.avg_gain * n1 + gain) * self.inv_period,
                (self.avg_loss * n1 + loss) * self.inv_period,
            )
        };
        let out = (self.seen >= self.period).then(|| {
            let total = avg_gain + avg_loss;
            if total > 0.0 {
                100.0 * (avg_gain / total)
            } else {
                0.0
            }
        });
        RsiStep {
            avg_gain,
            avg_loss,
            out,
        }
    }

    #[inline]
    pub fn peek(&self, close: f64) -> Option<f64> {
        self.step(close).out
    }

    #[inline]
    pub fn update(&mut self, close: f64) -> Option<f64> {
        let s = self.step(close);
        self.avg_gain = s.avg_gain;
        self.avg_loss = s.avg_loss;
        self.prev_close = close;
        if self.seen <= self.period {
            self.seen += 1;
        }
        if s.out.is_some() {
            self.value = s.out;
        }
        s.out
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
            && self.seen <= period + 1
            && (self.value.is_some() == (self.seen == period + 1))
    }
}
