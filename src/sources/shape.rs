/*!
Provider answers → barkeep values, the same way for every provider: lenient number reading
(providers send `"1.0800"` as often as `1.08`), Unix seconds → ms, parallel chart columns →
rows, the provider interval a timeframe is built from, [`closed_bars`] (sorted, deduplicated,
aligned, aggregated, only closed bars) and [`DayVolume`] (a provider's cumulative day volume →
volume since the previous quote). Pure functions and plain data: no I/O.
*/

use std::collections::HashMap;

use parking_lot::Mutex;

use crate::model::{Bar, Quote, SymbolId, Timeframe};

const DAY_MS: i64 = 86_400_000;

/// A price or volume that may arrive as a JSON number or as a numeric string.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(untagged)]
pub enum Num {
    Number(f64),
    Text(String),
}

impl Num {
    /// The finite value; `field` names it in the error.
    ///
    /// # Errors
    /// A non-numeric string, or NaN/infinity.
    pub fn value(&self, field: &str) -> Result<f64, String> {
        match self {
            Self::Number(n) => finite(*n, field),
            Self::Text(s) => number_str(s, field),
        }
    }
}

/// A finite number from a string field (`"112.1300"`).
///
/// # Errors
/// A non-numeric string, or NaN/infinity.
pub fn number_str(s: &str, field: &str) -> Result<f64, String> {
    let v = s
        .trim()
        .parse::<f64>()
        .map_err(|_| format!("{field} is not a number: {:?}", truncate(s)))?;
    finite(v, field)
}

fn finite(v: f64, field: &str) -> Result<f64, String> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("{field} is not finite"))
    }
}

/// Seconds → milliseconds, refusing what would overflow.
///
/// # Errors
/// A timestamp too large to be a time.
pub fn secs_to_ms(secs: i64, field: &str) -> Result<i64, String> {
    secs.checked_mul(1_000)
        .ok_or_else(|| format!("{field} {secs} is out of range"))
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

/// UTC midnight of the calendar day that contains `ts_ms + offset_ms` (a local date).
pub fn local_day_start(ts_ms: i64, offset_ms: i64) -> i64 {
    ts_ms.saturating_add(offset_ms).div_euclid(DAY_MS) * DAY_MS
}

/// One column of a chart answer, checked to hold a value (or `null`) for each of `n` timestamps.
///
/// # Errors
/// A column of another length, named by `name`.
pub fn column(values: Vec<Option<f64>>, n: usize, name: &str) -> Result<Vec<Option<f64>>, String> {
    if values.len() == n {
        Ok(values)
    } else {
        Err(format!(
            "{name} has {} values for {n} timestamps",
            values.len()
        ))
    }
}

/// A chart answer's parallel arrays: bar starts in Unix seconds and, per start, the prices and
/// the volume (`None` where the provider sent `null`).
#[derive(Debug, Clone)]
pub struct Columns {
    pub starts: Vec<Option<i64>>,
    pub open: Vec<Option<f64>>,
    pub high: Vec<Option<f64>>,
    pub low: Vec<Option<f64>>,
    pub close: Vec<Option<f64>>,
    pub volume: Vec<Option<f64>>,
}

impl Columns {
    /// The rows, in the order given: a start without all four prices is skipped, a missing
    /// volume is 0. With `day_offset_ms`, starts move to UTC midnight of their local date at that
    /// offset (daily rows).
    ///
    /// # Errors
    /// A start too large to be a time, named by `starts_field`.
    pub fn rows(&self, starts_field: &str, day_offset_ms: Option<i64>) -> Result<Vec<Bar>, String> {
        let value = |column: &[Option<f64>], i: usize| column.get(i).copied().flatten();
        let mut bars = Vec::with_capacity(self.starts.len());
        for (i, start) in self.starts.iter().enumerate() {
            let (Some(start), Some(open), Some(high), Some(low), Some(close)) = (
                *start,
                value(&self.open, i),
                value(&self.high, i),
                value(&self.low, i),
                value(&self.close, i),
            ) else {
                continue;
            };
            let mut ts = secs_to_ms(start, starts_field)?;
            if let Some(offset_ms) = day_offset_ms {
                ts = local_day_start(ts, offset_ms);
            }
            bars.push(Bar {
                ts,
                open,
                high,
                low,
                close,
                volume: value(&self.volume, i).unwrap_or(0.0),
            });
        }
        Ok(bars)
    }
}

/// The provider interval a timeframe's bars are built from: of `intervals` (name and length,
/// longest first), the longest that divides `timeframe` when it is shorter than a day, the one
/// of the same length from a day up. `None`: the provider's history does not serve `timeframe`,
/// which the providers that use this declare in their `serves_history`.
pub fn step_for(
    intervals: &[(&'static str, i64)],
    timeframe: Timeframe,
) -> Option<(&'static str, i64)> {
    let tf = timeframe.ms();
    intervals
        .iter()
        .copied()
        .find(|&(_, step)| tf % step == 0 && (tf < DAY_MS || tf == step))
}

/// Provider rows → the bars a `history` call returns.
///
/// `rows` are bars of `step_ms` (the provider interval that was asked for), in any order,
/// possibly duplicated (the later row wins: it is the newer revision) and possibly with a
/// trailing live row. Intraday rows must sit on the `step_ms` grid since the epoch (a row
/// off the grid is the provider's live or odd-session row and is dropped); daily rows must
/// already be at UTC midnight. When `timeframe` is a multiple of `step_ms` the rows are
/// aggregated into `timeframe` bars. Returned: bars with open time in `[from_ms, to_ms)` that
/// ended by `now_ms`, oldest first.
///
/// An impossible row (a non-positive price, negative volume, or high/low that contradict
/// open/close beyond float noise) is returned as it came when no aggregation is needed: every
/// caller runs history through the validator, which rejects it with its reason and stores it,
/// while the rest of the answer is kept.
///
/// # Errors
/// An impossible row that would have to be aggregated: it would hide inside a bar that looks
/// right, so the whole answer is refused rather than one bar silently wrong.
pub fn closed_bars(
    mut rows: Vec<Bar>,
    step_ms: i64,
    timeframe: Timeframe,
    from_ms: i64,
    to_ms: i64,
    now_ms: i64,
) -> Result<Vec<Bar>, String> {
    let aggregated = timeframe.ms() != step_ms;
    for bar in &mut rows {
        if let Err(reason) = check_bar(bar) {
            if aggregated {
                return Err(reason);
            }
            tracing::debug!(%reason, "impossible row left for the validator to reject");
        }
    }
    rows.sort_by_key(|b| b.ts);
    let mut unique: Vec<Bar> = Vec::with_capacity(rows.len());
    for bar in rows {
        if step_ms < DAY_MS && bar.ts.rem_euclid(step_ms) != 0 {
            tracing::debug!(ts = bar.ts, step_ms, "row off the interval grid dropped");
            continue;
        }
        match unique.last_mut() {
            Some(last) if last.ts == bar.ts => *last = bar,
            _ => unique.push(bar),
        }
    }
    let tf = timeframe.ms();
    let mut bars: Vec<Bar> = Vec::with_capacity(unique.len());
    if tf == step_ms {
        bars = unique;
    } else {
        for row in unique {
            let bucket = timeframe.bucket(row.ts);
            match bars.last_mut() {
                Some(b) if b.ts == bucket => {
                    b.high = b.high.max(row.high);
                    b.low = b.low.min(row.low);
                    b.close = row.close;
                    b.volume += row.volume;
                }
                _ => bars.push(Bar { ts: bucket, ..row }),
            }
        }
    }
    bars.retain(|b| b.ts >= from_ms && b.ts < to_ms && b.ts.saturating_add(tf) <= now_ms);
    Ok(bars)
}

/// Rejects impossible bars; snaps float32 noise (`103.72000122070312` vs `103.72`) so that
/// `low ≤ open, close ≤ high` holds exactly.
fn check_bar(bar: &mut Bar) -> Result<(), String> {
    let prices = [bar.open, bar.high, bar.low, bar.close];
    if prices.iter().any(|p| !p.is_finite() || *p <= 0.0) {
        return Err(format!("bar at {} has a non-positive price", bar.ts));
    }
    if !bar.volume.is_finite() || bar.volume < 0.0 {
        return Err(format!("bar at {} has a negative volume", bar.ts));
    }
    let top = bar.open.max(bar.close);
    let bottom = bar.open.min(bar.close);
    let tolerance = top * 1e-6;
    if bar.high + tolerance < top.max(bar.low) || bar.low - tolerance > bottom {
        return Err(format!(
            "bar at {} has high {} / low {} outside open {} / close {}",
            bar.ts, bar.high, bar.low, bar.open, bar.close
        ));
    }
    bar.high = bar.high.max(top);
    bar.low = bar.low.min(bottom);
    Ok(())
}

/// A provider's latest price for one symbol, with the session's cumulative volume when it gives
/// one (turned into a [`Quote`] by [`DayVolume::quote`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SessionQuote {
    pub price: f64,
    /// Unix ms.
    pub ts: i64,
    pub day_volume: Option<f64>,
}

/// Turns a provider's cumulative day volume into volume since the previous quote.
///
/// The first observation of a symbol reports 0 (nothing is known about what came before); a
/// drop (a new session, or another venue's figure) restarts the count and reports 0.
#[derive(Debug, Default)]
pub struct DayVolume {
    last: Mutex<HashMap<SymbolId, f64>>,
}

impl DayVolume {
    pub fn delta(&self, symbol: SymbolId, cumulative: f64) -> f64 {
        if !cumulative.is_finite() || cumulative < 0.0 {
            return 0.0;
        }
        let mut last = self.last.lock();
        let previous = last.insert(symbol, cumulative);
        previous.map_or(0.0, |p| (cumulative - p).max(0.0))
    }

    /// A provider quote for `symbol`, its volume the growth of the day volume since the last one.
    pub fn quote(&self, symbol: SymbolId, q: SessionQuote) -> Quote {
        Quote {
            symbol,
            ts: q.ts,
            price: q.price,
            volume: q.day_volume.map_or(0.0, |v| self.delta(symbol, v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tf(s: &str) -> Timeframe {
        s.parse().expect("valid timeframe")
    }

    fn bar(ts: i64, close: f64) -> Bar {
        Bar::from_price(ts, close, 1.0)
    }

    #[test]
    fn bars_are_sorted_deduplicated_and_only_closed() {
        let rows = vec![
            bar(120_000, 3.0),
            bar(0, 1.0),
            bar(60_000, 2.0),
            bar(60_000, 2.5),  // a later revision of the same minute wins
            bar(150_000, 9.0), // off the grid: a live row
            bar(180_000, 4.0), // still forming at now = 200 000
        ];
        let out = closed_bars(rows, 60_000, tf("1m"), 0, i64::MAX, 200_000).expect("valid");
        let closes: Vec<f64> = out.iter().map(|b| b.close).collect();
        assert_eq!(closes, [1.0, 2.5, 3.0]);
    }

    #[test]
    fn finer_rows_aggregate_into_the_timeframe() {
        let rows = (0..4)
            .map(|i| Bar {
                ts: 1_800_000 * i,
                open: 10.0 + i as f64,
                high: 20.0 + i as f64,
                low: 5.0 - i as f64,
                close: 11.0 + i as f64,
                volume: 1.0,
            })
            .collect();
        let out = closed_bars(rows, 1_800_000, tf("1h"), 0, i64::MAX, i64::MAX).expect("valid");
        assert_eq!(out.len(), 2);
        assert_eq!(
            (out[0].open, out[0].high, out[0].low, out[0].close),
            (10.0, 21.0, 4.0, 12.0)
        );
        assert_eq!(out[1].volume, 2.0);
    }

    #[test]
    fn impossible_bars_go_to_the_validator_unless_they_would_be_aggregated() {
        let mut b = bar(0, 1.0);
        b.high = 0.5;
        let negative = bar(60_000, -1.0);
        let out = closed_bars(vec![b, negative], 60_000, tf("1m"), 0, i64::MAX, i64::MAX);
        assert_eq!(out.expect("kept"), [b, negative], "as they came");
        assert!(closed_bars(vec![b], 60_000, tf("5m"), 0, i64::MAX, i64::MAX).is_err());
    }

    #[test]
    fn day_volume_reports_differences() {
        let v = DayVolume::default();
        assert_eq!(v.delta(0, 100.0), 0.0);
        assert_eq!(v.delta(0, 150.0), 50.0);
        assert_eq!(v.delta(0, 10.0), 0.0);
        assert_eq!(v.delta(0, 15.0), 5.0);
        assert_eq!(v.delta(1, 15.0), 0.0);
    }

    #[test]
    fn columns_skip_gaps_and_move_days() {
        let columns = Columns {
            starts: vec![Some(86_400), None, Some(172_800)],
            open: vec![Some(1.0), Some(1.0), Some(2.0)],
            high: vec![Some(1.0), Some(1.0), None],
            low: vec![Some(1.0), Some(1.0), Some(2.0)],
            close: vec![Some(1.0), Some(1.0), Some(2.0)],
            volume: vec![None],
        };
        let rows = columns.rows("t", Some(-3_600_000)).expect("valid");
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].ts, rows[0].volume), (0, 0.0));
        assert!(column(vec![None], 2, "o").is_err());
    }

    #[test]
    fn steps_divide_intraday_and_match_days() {
        let intervals = [("day", DAY_MS), ("30m", 1_800_000), ("1m", 60_000)];
        assert_eq!(step_for(&intervals, tf("1h")), Some(("30m", 1_800_000)));
        assert_eq!(step_for(&intervals, tf("1d")), Some(("day", DAY_MS)));
        assert_eq!(step_for(&intervals, tf("5m")), Some(("1m", 60_000)));
    }
}
