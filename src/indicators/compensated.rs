/*!
A Neumaier-compensated running sum, for the cumulative indicators (OBV, VWAP) whose sums never
shrink back: a plain `+=` would let the rounding error grow with the number of bars.

The compensation term collects the low-order bits each addition loses, so the reported value
stays within about 2 ulps of the exact sum plus `N · ε² · Σ|xᵢ|` — about 1e-24 of the summed
magnitudes after ten million bars: bounded in practice, however long the series.
*/

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CompensatedSum {
    sum: f64,
    compensation: f64,
}

impl CompensatedSum {
    pub const ZERO: Self = Self {
        sum: 0.0,
        compensation: 0.0,
    };

    #[inline]
    pub fn add(&mut self, x: f64) {
        let t = self.sum + x;
        // The smaller operand is the one whose low bits were dropped.
        let lost = if self.sum.abs() >= x.abs() {
            (self.sum - t) + x
        } else {
            (x - t) + self.sum
        };
        self.compensation += lost;
        self.sum = t;
    }

    /// This sum with `x` added, leaving `self` unchanged.
    #[inline]
    #[must_use]
    pub fn plus(mut self, x: f64) -> Self {
        self.add(x);
        self
    }

    #[inline]
    pub fn value(&self) -> f64 {
        self.sum + self.compensation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_bits_a_plain_sum_loses() {
        let mut s = CompensatedSum::ZERO;
        let mut plain = 0.0;
        s.add(1e16);
        plain += 1e16;
        for _ in 0..1000 {
            s.add(1.0);
            plain += 1.0;
        }
        assert_eq!(s.value(), 1e16 + 1000.0);
        assert_eq!(plain, 1e16);
    }
}
