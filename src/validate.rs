/*!
The validator: every quote or provider bar is checked before it may touch a bar or an indicator.

Hard rules reject outright, with a [`RejectReason`]: non-finite values, non-positive prices,
negative volume, broken OHLC relations, timestamps in the future (beyond `MAX_CLOCK_SKEW`),
stale data (older than `STALE_AFTER`), data older than what was already accepted, and spikes (a
move of more than `SPIKE_ATR_MULTIPLE` × the recent average true range of accepted data).

Everything that passes gets a quality score in [0, 1]: 1 for fresh data with an ordinary move,
lowered by age and by the size of the move relative to the spike limit. Below `MIN_QUALITY` the
input is rejected as `low_quality`. An exact re-delivery of the last accepted input is not an
error: it is reported as [`Verdict::Duplicate`] and counted, not stored twice.

A genuine jump (a gap on news) would look like a spike forever if the reference never moved, so
after [`LEVEL_SHIFT_CONFIRMATIONS`] consecutive spikes that agree with each other the new level is
accepted, with a lowered quality.
*/

use serde::Serialize;

use crate::config::ValidationConfig;
use crate::model::Bar;

/// Consecutive, mutually consistent spikes after which the new price level is believed.
pub const LEVEL_SHIFT_CONFIRMATIONS: u8 = 3;
/// Smoothing period of the validator's own average true range.
const ATR_PERIOD: f64 = 14.0;
/// The spike check starts after this many accepted inputs.
const ATR_WARMUP: u32 = 14;
/// The move reference never falls below this fraction of the price, so a market that sat
/// perfectly still does not turn its first tick into a "spike".
const MIN_RELATIVE_ATR: f64 = 1e-5;

/// Why an input was refused. The names are the `reason` stored in the rejects table and used as
/// the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    NonFinite,
    NonPositivePrice,
    NegativeVolume,
    OhlcInconsistent,
    FutureTimestamp,
    Stale,
    OutOfOrder,
    Spike,
    LowQuality,
    /// Accepted by the validator but too late for its bar, which had already closed.
    Late,
}

impl RejectReason {
    pub const ALL: [RejectReason; 10] = [
        Self::NonFinite,
        Self::NonPositivePrice,
        Self::NegativeVolume,
        Self::OhlcInconsistent,
        Self::FutureTimestamp,
        Self::Stale,
        Self::OutOfOrder,
        Self::Spike,
        Self::LowQuality,
        Self::Late,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NonFinite => "non_finite",
            Self::NonPositivePrice => "non_positive_price",
            Self::NegativeVolume => "negative_volume",
            Self::OhlcInconsistent => "ohlc_inconsistent",
            Self::FutureTimestamp => "future_timestamp",
            Self::Stale => "stale",
            Self::OutOfOrder => "out_of_order",
            Self::Spike => "spike",
            Self::LowQuality => "low_quality",
            Self::Late => "late",
        }
    }

    /// Position in [`Self::ALL`], for per-reason counters.
    pub fn index(self) -> usize {
        self as usize
    }
}

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
    last: Option<Bar>,
    atr: f64,
    accepted: u32,
    spike_streak: u8,
    last_spike: f64,
}

impl Validator {
    pub fn new(config: ValidationConfig) -> Self {
        Self {
            config,
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

    /// Seeds the reference from already-trusted history (e.g. bars loaded at start-up), so the
    /// first live tick is judged against it.
    pub fn seed(&mut self, history: &[Bar]) {
        for bar in history {
            self.accept(bar);
        }
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
            if b == last {
                return Err(None);
            }
            if self.accepted >= ATR_WARMUP {
                let reference = self.atr.max(last.close * MIN_RELATIVE_ATR);
                let limit = self.config.spike_atr_multiple * reference;
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

    fn accept(&mut self, b: &Bar) {
        let range = match &self.last {
            Some(last) => (b.high - b.low)
                .max((b.high - last.close).abs())
                .max((b.low - last.close).abs()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use RejectReason::*;

    const NOW: i64 = 1_700_000_000_000;

    fn warmed() -> Validator {
        let mut v = Validator::new(ValidationConfig::default());
        let history: Vec<Bar> = (0..30)
            .map(|i| Bar::from_price(NOW - 30_000 + i * 1_000, 100.0 + (i % 3) as f64 * 0.01, 1.0))
            .collect();
        v.seed(&history);
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
        let mut low = Validator::new(ValidationConfig {
            min_quality: 0.9,
            ..ValidationConfig::default()
        });
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
        let mut v = Validator::new(ValidationConfig::default());
        assert!(
            matches!(v.check(&q(0, 100.0), None), Verdict::Accept { quality } if quality == 1.0)
        );
    }
}
