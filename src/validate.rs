/*!
The validator: every quote or provider bar is checked before it may touch a bar or an indicator.

Hard rules reject outright, with a [`RejectReason`]: non-finite values, non-positive prices,
negative volume, broken OHLC relations, timestamps in the future (beyond `MAX_CLOCK_SKEW`),
stale data (older than `STALE_AFTER`), data older than what was already accepted, and spikes (a
move of more than `SPIKE_ATR_MULTIPLE` × the recent average true range of accepted data).

The spike limit grows with the square root of the time since the last accepted input, counted
in the validator's interval (the collection interval for quotes, the timeframe for bars): prices
wander like a random walk, so the open after a weekend closure of 49 one-hour bars is judged
against 7 × the hourly range, while the same move one second after the last tick is a spike.
The reference can be seeded from stored bars of another length ([`Validator::seed`]); their
range is converted to the validator's interval the same way.

Everything that passes gets a quality score in [0, 1]: 1 for fresh data with an ordinary move,
lowered by age and by the size of the move relative to the spike limit. Below `MIN_QUALITY` the
input is rejected as `low_quality`. An exact re-delivery of the last accepted input (same time,
same prices, no new volume) is not an error whatever its age: it is reported as
[`Verdict::Duplicate`] and counted, not stored twice — a closed market's provider keeps
answering its last trade, and that is neither stale nor new.

A genuine jump (a gap on news) would look like a spike forever if the reference never moved, so
after [`LEVEL_SHIFT_CONFIRMATIONS`] consecutive spikes that agree with each other the new level is
accepted, with a lowered quality.
*/

use crate::model::{Bar, RejectReason};

/// Validator thresholds (`MIN_QUALITY`, `SPIKE_ATR_MULTIPLE`, `MAX_CLOCK_SKEW`, `STALE_AFTER`;
/// read by `config`, which re-exports this type).
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationConfig {
    /// Bars scoring below this are rejected.
    pub min_quality: f64,
    /// A move larger than this many ATRs of recent ticks is a spike.
    pub spike_atr_multiple: f64,
    /// How far in the future a provider timestamp may be.
    pub max_clock_skew_ms: i64,
    /// Data older than this (relative to now) is stale.
    pub stale_after_ms: i64,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        Self {
            min_quality: 0.5,
            spike_atr_multiple: 12.0,
            max_clock_skew_ms: 5_000,
            stale_after_ms: 120_000,
        }
    }
}

/// Consecutive, mutually consistent spikes after which the new price level is believed.
pub const LEVEL_SHIFT_CONFIRMATIONS: u8 = 3;
/// Smoothing period of the validator's own average true range.
const ATR_PERIOD: f64 = 14.0;
/// The spike check starts after this many accepted inputs.
const ATR_WARMUP: u32 = 14;
/// The move reference never falls below this fraction of the price, so a market that sat
/// perfectly still does not turn its first tick into a "spike".
const MIN_RELATIVE_ATR: f64 = 1e-5;

/// The validator's decision on one input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    Accept {
        quality: f64,
    },
    /// Exactly the last accepted input again; nothing new.
    Duplicate,
    Reject(RejectReason),
}

/// Per-symbol validation state: the last accepted input and a running ATR of accepted data.
#[derive(Debug, Clone)]
pub struct Validator {
    config: ValidationConfig,
    /// The usual spacing of inputs; the ATR is a range per this interval.
    interval_ms: i64,
    last: Option<Bar>,
    atr: f64,
    accepted: u32,
    spike_streak: u8,
    last_spike: f64,
}

impl Validator {
    /// A validator for inputs arriving about every `interval_ms` (at least 1 ms).
    pub fn new(config: ValidationConfig, interval_ms: i64) -> Self {
        Self {
            config,
            interval_ms: interval_ms.max(1),
            last: None,
            atr: 0.0,
            accepted: 0,
            spike_streak: 0,
            last_spike: f64::NAN,
        }
    }

    pub fn config(&self) -> &ValidationConfig {
        &self.config
    }

    pub fn interval_ms(&self) -> i64 {
        self.interval_ms
    }

    /// Seeds the reference from already-trusted bars of `bar_ms` length (e.g. stored bars at
    /// start-up), so the first live input is judged against them. Their range is scaled to this
    /// validator's interval (by the square root of the ratio), so 1-minute history gives a
    /// per-second reference to a validator of 1-second quotes.
    pub fn seed(&mut self, history: &[Bar], bar_ms: i64) {
        if history.is_empty() {
            return;
        }
        for bar in history {
            if !self.last.is_some_and(|last| is_repeat(bar, &last)) {
                self.accept(bar);
            }
        }
        self.atr *= (self.interval_ms as f64 / bar_ms.max(1) as f64).sqrt();
    }

    /// Judges `input` (a quote is a bar whose four prices are equal). `now_ms` is `None` for
    /// historical data, which skips the checks against the wall clock.
    pub fn check(&mut self, input: &Bar, now_ms: Option<i64>) -> Verdict {
        match self.judge(input, now_ms) {
            Ok(quality) => {
                self.accept(input);
                Verdict::Accept { quality }
            }
            Err(None) => Verdict::Duplicate,
            Err(Some(reason)) => Verdict::Reject(reason),
        }
    }

    /// `Err(None)` is a duplicate.
    fn judge(&mut self, b: &Bar, now_ms: Option<i64>) -> Result<f64, Option<RejectReason>> {
        use RejectReason::*;
        let prices = [b.open, b.high, b.low, b.close];
        if !prices.iter().all(|p| p.is_finite()) || !b.volume.is_finite() {
            return Err(Some(NonFinite));
        }
        if prices.iter().any(|&p| p <= 0.0) {
            return Err(Some(NonPositivePrice));
        }
        if b.volume < 0.0 {
            return Err(Some(NegativeVolume));
        }
        if b.high < b.low || b.high < b.open.max(b.close) || b.low > b.open.min(b.close) {
            return Err(Some(OhlcInconsistent));
        }
        if let Some(last) = &self.last
            && is_repeat(b, last)
        {
            return Err(None);
        }
        let mut quality = 1.0;
        if let Some(now) = now_ms {
            if b.ts > now + self.config.max_clock_skew_ms {
                return Err(Some(FutureTimestamp));
            }
            let age = (now - b.ts).max(0);
            if age > self.config.stale_after_ms {
                return Err(Some(Stale));
            }
            quality -= 0.4 * age as f64 / self.config.stale_after_ms as f64;
        }
        if let Some(last) = &self.last {
            if b.ts < last.ts {
                return Err(Some(OutOfOrder));
            }
            if self.accepted >= ATR_WARMUP {
                let reference = self.atr.max(last.close * MIN_RELATIVE_ATR);
                let limit =
                    self.config.spike_atr_multiple * reference * self.elapsed_scale(b.ts - last.ts);
                let moved = (b.high - last.close).abs().max((b.low - last.close).abs());
                if moved > limit {
                    let consistent = (b.close - self.last_spike).abs() <= limit;
                    self.spike_streak = if consistent { self.spike_streak + 1 } else { 1 };
                    self.last_spike = b.close;
                    if self.spike_streak <= LEVEL_SHIFT_CONFIRMATIONS {
                        return Err(Some(Spike));
                    }
                    // A level shift confirmed by several sources of ticks: believe it, warily.
                    quality = quality.min(self.config.min_quality.max(0.6));
                } else {
                    quality -= 0.3 * (moved / limit).powi(2);
                }
            }
        }
        if quality < self.config.min_quality {
            return Err(Some(LowQuality));
        }
        Ok(quality.clamp(0.0, 1.0))
    }

    /// √(elapsed intervals), at least 1: how much further prices may have wandered since the
    /// last input than in one interval. The usual case, one interval or less, costs no root.
    #[inline]
    fn elapsed_scale(&self, elapsed_ms: i64) -> f64 {
        if elapsed_ms <= self.interval_ms {
            1.0
        } else {
            (elapsed_ms as f64 / self.interval_ms as f64).sqrt()
        }
    }

    fn accept(&mut self, b: &Bar) {
        let range = match &self.last {
            Some(last) => {
                // A move across a closure counts as a move per interval, as the limit does.
                let across = (b.high - last.close).abs().max((b.low - last.close).abs())
                    / self.elapsed_scale(b.ts - last.ts);
                (b.high - b.low).max(across)
            }
            None => b.high - b.low,
        };
        self.atr = if self.accepted == 0 {
            range
        } else {
            (self.atr * (ATR_PERIOD - 1.0) + range) / ATR_PERIOD
        };
        self.accepted = self.accepted.saturating_add(1);
        self.spike_streak = 0;
        self.last_spike = f64::NAN;
        self.last = Some(*b);
    }
}

/// The same observation again: same time, same prices, and no volume beyond what it had (a
/// repeated quote carries no new volume; a provider bar re-sent unchanged carries the same).
fn is_repeat(b: &Bar, last: &Bar) -> bool {
    b.ts == last.ts
        && b.open == last.open
        && b.high == last.high
        && b.low == last.low
        && b.close == last.close
        && b.volume <= last.volume
}

#[cfg(test)]
mod tests {
    use super::*;
    use RejectReason::*;

    const NOW: i64 = 1_700_000_000_000;

    fn warmed() -> Validator {
        let mut v = Validator::new(ValidationConfig::default(), 1_000);
        let history: Vec<Bar> = (0..30)
            .map(|i| Bar::from_price(NOW - 30_000 + i * 1_000, 100.0 + (i % 3) as f64 * 0.01, 1.0))
            .collect();
        v.seed(&history, 1_000);
        v
    }

    fn q(ts: i64, price: f64) -> Bar {
        Bar::from_price(ts, price, 1.0)
    }

    #[test]
    fn every_hard_rule_has_its_reason() {
        let mut v = warmed();
        let cases = [
            (q(NOW, f64::NAN), NonFinite),
            (q(NOW, f64::INFINITY), NonFinite),
            (q(NOW, -100.0), NonPositivePrice),
            (q(NOW, 0.0), NonPositivePrice),
            (Bar::from_price(NOW, 100.0, -1.0), NegativeVolume),
            (
                Bar {
                    high: 99.0,
                    ..q(NOW, 100.0)
                },
                OhlcInconsistent,
            ),
            (q(NOW + 60_000, 100.0), FutureTimestamp),
            (q(NOW - 3_600_000, 100.0), Stale),
            (q(NOW - 5_000, 100.0), OutOfOrder),
            (q(NOW, 125.0), Spike),
        ];
        for (input, reason) in cases {
            assert_eq!(
                v.check(&input, Some(NOW)),
                Verdict::Reject(reason),
                "{input:?}"
            );
        }
        // None of the rejects moved the reference: an ordinary tick is still fine.
        assert!(matches!(
            v.check(&q(NOW, 100.01), Some(NOW)),
            Verdict::Accept { .. }
        ));
    }

    #[test]
    fn quality_falls_with_age_and_move() {
        let mut v = warmed();
        let Verdict::Accept { quality: fresh } = v.check(&q(NOW, 100.0), Some(NOW)) else {
            panic!("fresh tick rejected")
        };
        let Verdict::Accept { quality: old } = v.check(&q(NOW + 1, 100.0), Some(NOW + 60_001))
        else {
            panic!("old tick rejected")
        };
        assert!(fresh > 0.99 && old < fresh - 0.15, "{fresh} {old}");
        let mut low = Validator::new(
            ValidationConfig {
                min_quality: 0.9,
                ..ValidationConfig::default()
            },
            1_000,
        );
        assert_eq!(
            low.check(&q(NOW, 100.0), Some(NOW + 60_000)),
            Verdict::Reject(LowQuality)
        );
    }

    #[test]
    fn exact_redelivery_is_a_duplicate_not_an_error() {
        let mut v = warmed();
        assert!(matches!(
            v.check(&q(NOW, 100.0), Some(NOW)),
            Verdict::Accept { .. }
        ));
        assert_eq!(v.check(&q(NOW, 100.0), Some(NOW)), Verdict::Duplicate);
        assert!(matches!(
            v.check(&q(NOW, 100.02), Some(NOW)),
            Verdict::Accept { .. }
        ));
    }

    #[test]
    fn a_confirmed_level_shift_is_accepted() {
        let mut v = warmed();
        for i in 1..=LEVEL_SHIFT_CONFIRMATIONS as i64 {
            assert_eq!(
                v.check(&q(NOW + i, 130.0), Some(NOW + i)),
                Verdict::Reject(Spike)
            );
        }
        assert!(matches!(
            v.check(&q(NOW + 10, 130.0), Some(NOW + 10)),
            Verdict::Accept { quality } if quality < 1.0
        ));
        // Inconsistent spikes (alternating wild prices) are never believed.
        let mut v = warmed();
        for i in 1..=10 {
            let price = if i % 2 == 0 { 130.0 } else { 70.0 };
            assert_eq!(
                v.check(&q(NOW + i, price), Some(NOW + i)),
                Verdict::Reject(Spike)
            );
        }
    }

    #[test]
    fn historical_data_skips_clock_checks() {
        let mut v = Validator::new(ValidationConfig::default(), 1_000);
        assert!(
            matches!(v.check(&q(0, 100.0), None), Verdict::Accept { quality } if quality == 1.0)
        );
    }

    #[test]
    fn a_repeat_of_the_last_input_is_a_duplicate_whatever_its_age() {
        let mut v = warmed();
        let last = q(NOW, 100.01);
        assert!(matches!(v.check(&last, Some(NOW)), Verdict::Accept { .. }));
        // A closed market's provider answers the same last trade all weekend.
        let repeat = Bar {
            volume: 0.0,
            ..last
        };
        assert_eq!(
            v.check(&repeat, Some(NOW + 3 * 86_400_000)),
            Verdict::Duplicate
        );
        // The same time with another price is not a repeat.
        assert_eq!(
            v.check(&q(NOW, 100.03), Some(NOW + 3 * 86_400_000)),
            Verdict::Reject(Stale)
        );
    }

    #[test]
    fn the_spike_limit_grows_with_the_time_since_the_last_input() {
        // Hourly bars moving ~0.1 %, then a weekend of 49 hours and an open 2 % away.
        const HOUR: i64 = 3_600_000;
        let mut v = Validator::new(ValidationConfig::default(), HOUR);
        let mut price = 1.1;
        for i in 0..40 {
            price *= if i % 2 == 0 { 1.001 } else { 0.9995 };
            let bar = Bar {
                ts: i * HOUR,
                open: price,
                high: price * 1.0005,
                low: price * 0.9995,
                close: price,
                volume: 1.0,
            };
            assert!(matches!(v.check(&bar, None), Verdict::Accept { .. }), "{i}");
        }
        let open = |ts| Bar::from_price(ts, price * 1.02, 1.0);
        let mut same_hour = v.clone();
        assert_eq!(
            same_hour.check(&open(40 * HOUR), None),
            Verdict::Reject(Spike)
        );
        assert!(matches!(
            v.check(&open(39 * HOUR + 49 * HOUR), None),
            Verdict::Accept { quality } if quality < 1.0
        ));
    }

    #[test]
    fn a_reference_seeded_from_longer_bars_is_scaled_to_the_interval() {
        // Stored 1-minute bars around 100; the first live quote a minute later at 116.
        let mut v = Validator::new(ValidationConfig::default(), 1_000);
        let minutes: Vec<Bar> = (0..30)
            .map(|i| Bar {
                ts: NOW - 30 * 60_000 + i * 60_000,
                open: 100.0,
                high: 100.1,
                low: 99.9,
                close: 100.0 + (i % 2) as f64 * 0.05,
                volume: 10.0,
            })
            .collect();
        v.seed(&minutes, 60_000);
        assert_eq!(
            v.check(&q(NOW + 30_000, 116.0), Some(NOW + 30_000)),
            Verdict::Reject(Spike)
        );
        assert!(matches!(
            v.check(&q(NOW + 31_000, 100.1), Some(NOW + 31_000)),
            Verdict::Accept { .. }
        ));
    }
}
