/*!
Bars from OHLCV CSV files, for `barkeep replay` and for tests and benches on real data.

The header is matched case-insensitively (`open`, `high`, `low`, `close`, `volume`; `o`, `h` …
also work); the first column is the time: a date (`2004-08-19`, UTC midnight), a date-time
(`2004-08-19 15:30:00`, `2004-08-19T15:30:00Z`, RFC 3339 with an offset) or a Unix time in
seconds or milliseconds.
*/

use std::io::Read;

use chrono::{DateTime, NaiveDate, NaiveDateTime};

use crate::model::Bar;

/// Why a CSV file or one of its rows could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("CSV header has no `{0}` column (header is case-insensitive)")]
    MissingColumn(&'static str),
    #[error("line {line}: {reason}")]
    Row { line: u64, reason: String },
    #[error("CSV: {0}")]
    Csv(#[from] csv::Error),
}

struct Columns {
    open: usize,
    high: usize,
    low: usize,
    close: usize,
    volume: Option<usize>,
}

impl Columns {
    fn find(header: &csv::StringRecord) -> Result<Self, ReplayError> {
        let find = |names: &[&str]| {
            header
                .iter()
                .position(|h| names.iter().any(|n| h.trim().eq_ignore_ascii_case(n)))
        };
        Ok(Self {
            open: find(&["open", "o"]).ok_or(ReplayError::MissingColumn("open"))?,
            high: find(&["high", "h"]).ok_or(ReplayError::MissingColumn("high"))?,
            low: find(&["low", "l"]).ok_or(ReplayError::MissingColumn("low"))?,
            close: find(&["close", "c"]).ok_or(ReplayError::MissingColumn("close"))?,
            volume: find(&["volume", "vol", "v"]),
        })
    }
}

/// Reads every row; a row that cannot be parsed is an `Err` in its place, so the caller can
/// report it and go on.
///
/// # Errors
/// When the header lacks a price column or the CSV itself is unreadable.
pub fn read_bars(input: impl Read) -> Result<Vec<Result<Bar, ReplayError>>, ReplayError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(input);
    let columns = Columns::find(reader.headers()?)?;
    let mut out = Vec::new();
    for record in reader.records() {
        let record = record?;
        let line = record.position().map_or(0, |p| p.line());
        out.push(parse_row(&record, &columns).map_err(|reason| ReplayError::Row { line, reason }));
    }
    Ok(out)
}

fn parse_row(record: &csv::StringRecord, c: &Columns) -> Result<Bar, String> {
    let field = |i: usize, name: &str| -> Result<f64, String> {
        let raw = record.get(i).unwrap_or_default();
        if raw.is_empty() {
            // Empty cells become NaN so the validator can reject the bar with its reason.
            return Ok(f64::NAN);
        }
        raw.parse::<f64>()
            .map_err(|_| format!("{name} `{raw}` is not a number"))
    };
    Ok(Bar {
        ts: parse_time(record.get(0).unwrap_or_default())?,
        open: field(c.open, "open")?,
        high: field(c.high, "high")?,
        low: field(c.low, "low")?,
        close: field(c.close, "close")?,
        volume: match c.volume {
            Some(i) => field(i, "volume")?,
            None => 0.0,
        },
    })
}

/// Unix milliseconds from a date, a date-time (UTC unless it carries an offset) or a Unix time.
///
/// # Errors
/// A message quoting the value that is none of those.
pub fn parse_time(raw: &str) -> Result<i64, String> {
    let raw = raw.trim();
    if let Ok(n) = raw.parse::<f64>() {
        // Unix time: seconds unless it is too large to be seconds (after year 5138).
        if !n.is_finite() || n < 0.0 {
            return Err(format!("time `{raw}` is not a valid Unix time"));
        }
        return Ok(if n >= 1e11 {
            n as i64
        } else {
            (n * 1_000.0).round() as i64
        });
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.timestamp_millis());
    }
    for format in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(raw, format) {
            return Ok(t.and_utc().timestamp_millis());
        }
    }
    for format in ["%Y-%m-%d", "%Y/%m/%d", "%Y%m%d"] {
        if let Ok(d) = NaiveDate::parse_from_str(raw, format) {
            return Ok(d
                .and_hms_opt(0, 0, 0)
                .map_or(0, |t| t.and_utc().timestamp_millis()));
        }
    }
    Err(format!(
        "time `{raw}` is not a date, a date-time or a Unix time"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_backtesting_layout() {
        let csv = ",Open,High,Low,Close,Volume\n2004-08-19,100,104.06,95.96,100.34,22351900\n";
        let bars = read_bars(csv.as_bytes()).expect("valid");
        let bar = bars[0].as_ref().expect("row");
        assert_eq!(bar.ts, 1_092_873_600_000);
        assert_eq!(
            (bar.open, bar.high, bar.low, bar.close, bar.volume),
            (100.0, 104.06, 95.96, 100.34, 22_351_900.0)
        );
    }

    #[test]
    fn times_in_every_accepted_form() {
        assert_eq!(parse_time("1092873600"), Ok(1_092_873_600_000));
        assert_eq!(parse_time("1092873600000"), Ok(1_092_873_600_000));
        assert_eq!(parse_time("2004-08-19 00:00:00"), Ok(1_092_873_600_000));
        assert_eq!(
            parse_time("2004-08-19T02:00:00+02:00"),
            Ok(1_092_873_600_000)
        );
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn bad_rows_and_headers_are_reported() {
        let csv = "time,OPEN,high,low,close\n2020-01-01,1,2,0.5,x\nnot-a-date,1,1,1,1\n";
        let bars = read_bars(csv.as_bytes()).expect("header is fine");
        assert!(
            matches!(&bars[0], Err(ReplayError::Row { line: 2, reason }) if reason.contains("close"))
        );
        assert!(matches!(&bars[1], Err(ReplayError::Row { line: 3, .. })));
        assert!(matches!(
            read_bars("time,open,high,low\n".as_bytes()),
            Err(ReplayError::MissingColumn("close"))
        ));
    }
}
