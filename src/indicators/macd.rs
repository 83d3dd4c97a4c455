/*!
MACD, TA-Lib `MACD(fast, slow, signal)` — which is NOT `EMA(fast) − EMA(slow)` during warm-up.

TA-Lib seeds both price EMAs on the same bar, `slow − 1`: the slow one with the mean of the first
`slow` closes, the fast one with the mean of the last `fast` of those (bars `slow − fast ..
slow − 1`), each summed from 0.0 in order. Both recurse from bar `slow`. The signal EMA is seeded
with the mean of the first `signal` MACD values (bars `slow − 1 .. slow + signal − 2`), and all
three outputs start on that last bar: 33 with the defaults. Periods given in the wrong order are
swapped, as TA-Lib does; a signal period of 1 makes the signal the MACD line itself.

Same EMA step as [`Ema`](super::Ema) (plain multiply-add; TA-Lib fuses it, a last-bit
difference at most); contractive, so no drift.
*/

use serde::{Deserialize, Serialize};

use super::ema::{ema_k, ema_step};

/// The three MACD outputs of one bar.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MacdValue {
    pub macd: f64,
    pub signal: f64,
    pub hist: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Macd {
    fast: usize,
    slow: usize,
    signal: usize,
    fast_k: f64,
    slow_k: f64,
    signal_k: f64,
    /// Closes seen, capped at `slow + signal − 1` (the first output bar + 1).
    seen: usize,
    /// Seed sums while warming up, then the EMAs themselves.
    fast_ema: f64,
    slow_ema: f64,
    signal_ema: f64,
    value: Option<MacdValue>,
}

#[derive(Clone, Copy)]
struct MacdStep {
    fast_ema: f64,
    slow_ema: f64,
    signal_ema: f64,
    out: Option<MacdValue>,
}

impl Macd {
    /// `fast`, `slow` ≥ 2 and `signal` ≥ 1 (zeros are treated as 1); swapped if `fast > slow`.
    pub fn new(fast: usize, slow: usize, signal: usize) -> Self {
        let (fast, slow) = if fast > slow {
            (slow, fast)
        } else {
            (fast, slow)
        };
        let (fast, slow, signal) = (fast.max(1), slow.max(1), signal.max(1));
        Self {
            fast,
            slow,
            signal,
            fast_k: ema_k(fast),
            slow_k: ema_k(slow),
            signal_k: ema_k(signal),
            seen: 0,
            fast_ema: 0.0,
            slow_ema: 0.0,
            signal_ema: 0.0,
            value: None,
        }
    }

    /// `(fast, slow, signal)` after any swap.
    pub fn periods(&self) -> (usize, usize, usize) {
        (self.fast, self.slow, self.signal)
    }

    /// Bar index of the first output: `slow − 1 + signal − 1`.
    pub fn lookback(&self) -> usize {
        self.slow - 1 + self.signal - 1
    }

    #[inline]
    fn step(&self, close: f64) -> MacdStep {
        let t = self.seen;
        let (slow, fast, signal) = (self.slow, self.fast, self.signal);
        let mut s = MacdStep {
            fast_ema: self.fast_ema,
            slow_ema: self.slow_ema,
            signal_ema: self.signal_ema,
            out: None,
        };
        if t + 1 < slow {
            // Seeding the price EMAs: only the last `fast` closes count for the fast one.
            s.slow_ema += close;
            if t >= slow - fast {
                s.fast_ema += close;
            }
            return s;
        }
        let macd = if t + 1 == slow {
            s.slow_ema = (s.slow_ema + close) / slow as f64;
            s.fast_ema = (s.fast_ema + close) / fast as f64;
            let macd = s.fast_ema - s.slow_ema;
            s.signal_ema = 0.0 + macd;
            macd
        } else {
            s.fast_ema = ema_step(s.fast_ema, close, self.fast_k);
            s.slow_ema = ema_step(s.slow_ema, close, self.slow_k);
            let macd = s.fast_ema - s.slow_ema;
            if t <= self.lookback() {
                // Still summing the signal's seed.
                s.signal_ema += macd;
            } else if signal == 1 {
                s.signal_ema = macd;
            } else {
                s.signal_ema = ema_step(s.signal_ema, macd, self.signal_k);
            }
            macd
        };
        if t >= self.lookback() {
            if t == self.lookback() {
                s.signal_ema /= signal as f64;
            }
            s.out = Some(MacdValue {
                macd,
                signal: s.signal_ema,
                hist: macd - s.signal_ema,
            });
        }
        s
    }

    #[inline]
    pub fn peek(&self, close: f64) -> Option<MacdValue> {
        self.step(close).out
    }

    #[inline]
    pub fn update(&mut self, close: f64) -> Option<MacdValue> {
        let s = self.step(close);
        self.fast_ema = s.fast_ema;
        self.slow_ema = s.slow_ema;
        self.signal_ema = s.signal_ema;
        if self.seen <= self.lookback() {
            self.seen += 1;
        }
        if s.out.is_some() {
            self.value = s.out;
        }
        s.out
    }

    pub fn value(&self) -> Option<MacdValue> {
        self.value
    }

    pub fn is_ready(&self) -> bool {
        self.value.is_some()
    }

    pub fn reset(&mut self) {
        *self = Self::new(self.fast, self.slow, self.signal);
    }

    pub(crate) fn is_consistent(&self, fast: usize, slow: usize, signal: usize) -> bool {
        let (f, s) = if fast > slow {
            (slow, fast)
        } else {
            (fast, slow)
        };
        (self.fast, self.slow, self.signal) == (f, s, signal)
            && self.seen <= self.lookback() + 1
            && (self.value.is_some() == (self.seen == self.lookback() + 1))
    }
}
