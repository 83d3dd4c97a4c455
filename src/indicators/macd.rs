/*!
MACD, TA-Lib `MACD(fast, slow, signal)` — which is NOT `EMA(fast) − EMA(slow)` during warm-up.

TA-Lib seeds both price EMAs on the same bar, `slow − 1`: the slow one with the mean of the first
`slow` closes, the fast one with the mean of the last `fast` of those (bars `slow − fast ..
slow − 1`), each summed from 0.0 in order. Both recurse from bar `slow`. The signal EMA is seeded
with the mean of the first `signal` MACD values (bars `slow − 1 .. slow + signal − 2`), and all
three outputs start on that last bar: 33 with the defaults. Periods given in the wrong order are
swapped, as TA-Lib does; a signal period of 1 makes the signal the MACD line itself.

The EMA step is TA-Lib's `(x − ema) · k + ema` with the product and the sum rounded
separately. TA-Lib fuses them (as [`Ema`](super::Ema) and [`Atr`](super::Atr) do), but MACD
runs three EMAs per bar, and with no FMA guaranteed on the build target each fused step is an
out-of-line call that costs more than the whole unfused step. The product is small, so its
rounding rarely reaches the result: the MACD line is bit-identical to TA-Lib on the fixtures and
the signal within an ulp or two. Contractive, so no drift.
*/

use serde::{Deserialize, Serialize};

use super::ema::ema_factors;

/// The three MACD outputs of one bar.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MacdValue {
    pub macd: f64,
    pub signal: f64,
    pub hist: f64,
}

/// One unfused EMA step; `β = 0` (period 1) copies `x`.
#[inline]
fn ema_step(prev: f64, x: f64, k: f64, beta: f64) -> f64 {
    if beta == 0.0 {
        x
    } else {
        (x - prev) * k + prev
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Macd {
    fast: usize,
    slow: usize,
    signal: usize,
    /// `(k, β)` of each EMA.
    fast_kb: (f64, f64),
    slow_kb: (f64, f64),
    signal_kb: (f64, f64),
    /// Closes seen, capped at `lookback + 1` (ready when equal).
    seen: usize,
    /// Seed sums while warming up, then the EMAs themselves.
    fast_ema: f64,
    slow_ema: f64,
    signal_ema: f64,
}

/// The EMAs after one close.
#[derive(Clone, Copy)]
struct MacdStep {
    fast_ema: f64,
    slow_ema: f64,
    signal_ema: f64,
}

impl MacdStep {
    #[inline]
    fn value(&self) -> MacdValue {
        let macd = self.fast_ema - self.slow_ema;
        MacdValue {
            macd,
            signal: self.signal_ema,
            hist: macd - self.signal_ema,
        }
    }
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
            fast_kb: ema_factors(fast),
            slow_kb: ema_factors(slow),
            signal_kb: ema_factors(signal),
            seen: 0,
            fast_ema: 0.0,
            slow_ema: 0.0,
            signal_ema: 0.0,
        }
    }

    /// `(fast, slow, signal)` after any swap.
    pub fn periods(&self) -> (usize, usize, usize) {
        (self.fast, self.slow, self.signal)
    }

    /// Bar index of the first output: `slow − 1 + signal − 1`.
    #[inline]
    pub fn lookback(&self) -> usize {
        self.slow - 1 + self.signal - 1
    }

    #[inline]
    fn ready(&self) -> bool {
        self.seen > self.lookback()
    }

    /// The EMAs after `close`; the state is untouched.
    #[inline]
    fn step(&self, close: f64) -> MacdStep {
        if !self.ready() {
            return self.warmup_step(close);
        }
        let ((fk, fb), (sk, sb), (gk, gb)) = (self.fast_kb, self.slow_kb, self.signal_kb);
        let fast_ema = ema_step(self.fast_ema, close, fk, fb);
        let slow_ema = ema_step(self.slow_ema, close, sk, sb);
        // A signal period of 1 (β = 0) makes the signal exactly the MACD line.
        let signal_ema = ema_step(self.signal_ema, fast_ema - slow_ema, gk, gb);
        MacdStep {
            fast_ema,
            slow_ema,
            signal_ema,
        }
    }

    /// Bars up to the first output: the seeding TA-Lib does. Out of line, so that `step`
    /// stays small enough to inline into its callers.
    #[cold]
    #[inline(never)]
    fn warmup_step(&self, close: f64) -> MacdStep {
        let t = self.seen;
        let (slow, fast, signal) = (self.slow, self.fast, self.signal);
        let mut s = MacdStep {
            fast_ema: self.fast_ema,
            slow_ema: self.slow_ema,
            signal_ema: self.signal_ema,
        };
        if t + 1 < slow {
            // Seeding the price EMAs: only the last `fast` closes count for the fast one.
            s.slow_ema += close;
            if t >= slow - fast {
                s.fast_ema += close;
            }
            return s;
        }
        if t + 1 == slow {
            s.slow_ema = (s.slow_ema + close) / slow as f64;
            s.fast_ema = (s.fast_ema + close) / fast as f64;
            s.signal_ema = 0.0 + (s.fast_ema - s.slow_ema);
        } else {
            s.fast_ema = ema_step(s.fast_ema, close, self.fast_kb.0, self.fast_kb.1);
            s.slow_ema = ema_step(s.slow_ema, close, self.slow_kb.0, self.slow_kb.1);
            // Still summing the signal's seed.
            s.signal_ema += s.fast_ema - s.slow_ema;
        }
        if t == self.lookback() {
            s.signal_ema /= signal as f64;
        }
        s
    }

    #[inline]
    pub fn peek(&self, close: f64) -> Option<MacdValue> {
        let s = self.step(close);
        (self.seen >= self.lookback()).then(|| s.value())
    }

    #[inline]
    pub fn update(&mut self, close: f64) -> Option<MacdValue> {
        let s = self.step(close);
        self.fast_ema = s.fast_ema;
        self.slow_ema = s.slow_ema;
        self.signal_ema = s.signal_ema;
        if !self.ready() {
            self.seen += 1;
        }
        self.ready().then(|| s.value())
    }

    #[inline]
    pub fn value(&self) -> Option<MacdValue> {
        self.ready().then(|| {
            MacdStep {
                fast_ema: self.fast_ema,
                slow_ema: self.slow_ema,
                signal_ema: self.signal_ema,
            }
            .value()
        })
    }

    #[inline]
    pub fn is_ready(&self) -> bool {
        self.ready()
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
        (self.fast, self.slow, self.signal) == (f, s, signal) && self.seen <= self.lookback() + 1
    }
}
