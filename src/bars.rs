/*!
The bar builder: accepted quotes → OHLCV bars of one timeframe.

A bar is *forming* from its first quote until its interval ends, then *closed* — either by the
first quote of a later interval or by the collector's clock ([`BarBuilder::close_due`]), so a
bar closes on time even when its market goes quiet. Intervals without data are reported as a
[`Gap`], never filled with invented flat bars. A quote for a bar that has already closed is
refused as late: the closed bar has been published and is not rewritten behind the bot's back.
*/

use crate::model::{Bar, Gap, Timeframe};

/// A bar together with the lowest quality of the data it was built from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoredBar {
    pub bar: Bar,
    pub quality: f64,
}

/// What one quote did to the builder.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Step {
    /// The previous bar, closed because this quote opened a later one.
    pub closed: Option<ScoredBar>,
    /// Intervals skipped between the previous bar and this one.
    pub gap: Option<Gap>,
    /// The quote belongs to a bar that has already closed; it was not used.
    pub late: bool,
}

/// Builds the bars of one (symbol, timeframe).
#[derive(Debug, Clone)]
pub struct BarBuilder {
    timeframe: Timeframe,
    forming: Option<ScoredBar>,
    /// Open time of the last bar that closed (or was loaded from history).
    last_closed_ts: Option<i64>,
}

impl BarBuilder {
    pub fn new(timeframe: Timeframe) -> Self {
        Self {
            timeframe,
            forming: None,
            last_closed_ts: None,
        }
    }

    /// Continues after history that ended with a bar opening at `ts`.
    pub fn resume_after(&mut self, ts: i64) {
        self.last_closed_ts = Some(self.last_closed_ts.map_or(ts, |t| t.max(ts)));
    }

    pub fn timeframe(&self) -> Timeframe {
        self.timeframe
    }

    pub fn forming(&self) -> Option<&ScoredBar> {
        self.forming.as_ref()
    }

    pub fn last_closed_ts(&self) -> Option<i64> {
        self.last_closed_ts
    }

    /// Adds one accepted quote (or a sub-bar: its high and low widen the bar, its volume adds).
    pub fn add(&mut self, input: &Bar, quality: f64) -> Step {
        let bucket = self.timeframe.bucket(input.ts);
        let mut step = Step::default();
        if let Some(forming) = &mut self.forming {
            if bucket == forming.bar.ts {
                let bar = &mut forming.bar;
                bar.high = bar.high.max(input.high);
                bar.low = bar.low.min(input.low);
                bar.close = input.close;
                bar.volume += input.volume;
                forming.quality = forming.quality.min(quality);
                return step;
            }
            if bucket < forming.bar.ts {
                step.late = true;
                return step;
            }
            step.closed = self.close();
        }
        if self.last_closed_ts.is_some_and(|t| bucket <= t) {
            step.late = true;
            return step;
        }
        if let Some(last) = self.last_closed_ts {
            let expected = last + self.timeframe.ms();
            if bucket > expected {
                step.gap = Some(Gap {
                    from_ts: expected,
                    to_ts: bucket,
                });
            }
        }
        self.forming = Some(ScoredBar {
            bar: Bar {
                ts: bucket,
                ..*input
            },
            quality,
        });
        step
    }

    /// Puts a provider's own bar of this timeframe in place (upsert by open time): the same
    /// bar again replaces the forming one — never adds to it — and a later bar closes it.
    pub fn upsert(&mut self, bar: &Bar, quality: f64) -> Step {
        let bucket = self.timeframe.bucket(bar.ts);
        let mut step = Step::default();
        if let Some(forming) = &mut self.forming {
            if bucket == forming.bar.ts {
                forming.bar = Bar { ts: bucket, ..*bar };
                forming.quality = quality;
                return step;
            }
            if bucket < forming.bar.ts {
                step.late = true;
                return step;
            }
        }
        let mut step = self.add(bar, quality);
        if let Some(forming) = &mut self.forming
            && forming.bar.ts == bucket
        {
            forming.bar = Bar { ts: bucket, ..*bar };
        }
        if step.late {
            step.closed = None;
        }
        step
    }

    /// Closes the forming bar if its interval has ended by `now_ms`.
    pub fn close_due(&mut self, now_ms: i64) -> Option<ScoredBar> {
        match &self.forming {
            Some(f) if f.bar.ts + self.timeframe.ms() <= now_ms => self.close(),
            _ => None,
        }
    }

    fn close(&mut self) -> Option<ScoredBar> {
        let closed = self.forming.take()?;
        self.last_closed_ts = Some(closed.bar.ts);
        Some(closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_040_000; // a minute boundary

    fn tick(ts: i64, price: f64) -> Bar {
        Bar::from_price(ts, price, 2.0)
    }

    #[test]
    fn ticks_make_ohlcv_and_close_on_the_next_interval() {
        let mut b = BarBuilder::new("1m".parse().expect("valid"));
        for (i, p) in [10.0, 12.0, 9.0, 11.0].into_iter().enumerate() {
            assert_eq!(
                b.add(&tick(T0 + i as i64 * 1_000, p), 1.0 - i as f64 * 0.1),
                Step::default()
            );
        }
        let step = b.add(&tick(T0 + 60_000, 11.5), 1.0);
        let closed = step.closed.expect("closed");
        assert_eq!(
            closed.bar,
            Bar {
                ts: T0,
                open: 10.0,
                high: 12.0,
                low: 9.0,
                close: 11.0,
                volume: 8.0
            }
        );
        assert!((closed.quality - 0.7).abs() < 1e-12);
        assert_eq!(step.gap, None);
        assert_eq!(b.forming().expect("forming").bar.open, 11.5);
    }

    #[test]
    fn the_clock_closes_quiet_bars_and_gaps_are_recorded_not_filled() {
        let mut b = BarBuilder::new("1m".parse().expect("valid"));
        b.add(&tick(T0 + 5_000, 10.0), 1.0);
        assert_eq!(b.close_due(T0 + 59_999), None);
        assert_eq!(b.close_due(T0 + 60_000).expect("due").bar.ts, T0);
        assert_eq!(
            b.close_due(T0 + 120_000),
            None,
            "nothing forming, nothing invented"
        );
        let step = b.add(&tick(T0 + 180_500, 10.0), 1.0);
        assert_eq!(step.closed, None);
        assert_eq!(
            step.gap,
            Some(Gap {
                from_ts: T0 + 60_000,
                to_ts: T0 + 180_000
            })
        );
    }

    #[test]
    fn provider_bars_replace_rather_than_accumulate() {
        let mut b = BarBuilder::new("1m".parse().expect("valid"));
        let bar = Bar {
            ts: T0,
            open: 10.0,
            high: 11.0,
            low: 9.5,
            close: 10.5,
            volume: 100.0,
        };
        b.add(&tick(T0 + 1_000, 10.0), 1.0);
        assert_eq!(b.upsert(&bar, 0.9), Step::default());
        assert_eq!(
            b.upsert(
                &Bar {
                    close: 10.7,
                    volume: 120.0,
                    high: 11.0,
                    ..bar
                },
                0.9
            ),
            Step::default()
        );
        assert_eq!(
            b.forming().expect("forming").bar.volume,
            120.0,
            "re-delivered, not added"
        );
        let step = b.upsert(
            &Bar {
                ts: T0 + 60_000,
                ..bar
            },
            1.0,
        );
        assert_eq!(
            step.closed.map(|c| (c.bar.close, c.bar.volume)),
            Some((10.7, 120.0))
        );
        assert!(b.upsert(&bar, 1.0).late);
    }

    #[test]
    fn quotes_for_closed_bars_are_late() {
        let mut b = BarBuilder::new("1m".parse().expect("valid"));
        b.add(&tick(T0, 10.0), 1.0);
        b.close_due(T0 + 60_000);
        assert!(b.add(&tick(T0 + 59_000, 10.0), 1.0).late);
        b.add(&tick(T0 + 61_000, 10.0), 1.0);
        assert!(b.add(&tick(T0 + 59_500, 10.0), 1.0).late);
        let mut resumed = BarBuilder::new("1m".parse().expect("valid"));
        resumed.resume_after(T0);
        assert!(resumed.add(&tick(T0 + 1, 10.0), 1.0).late);
        assert_eq!(resumed.add(&tick(T0 + 60_001, 10.0), 1.0), Step::default());
    }
}
