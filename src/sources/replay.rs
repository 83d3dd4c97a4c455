/*!
Bars from OHLCV CSV files, for `barkeep replay` and for tests and benches on real data.

The header is matched case-insensitively (`open`, `high`, `low`, `close`, `volume`; `o`, `h` …
also work); the first column is the time: a date (`2004-08-19`, `20040819`, UTC midnight), a
date-time (`2004-08-19 15:30:00`, `2004-08-19T15:30:00Z`, with or without an offset) or a Unix
time in seconds, milliseconds or microseconds (told apart by magnitude), between 1970 and 2099.

The file is read one row at a time, so memory stays bounded whatever its size. A row that
cannot be used — a time or number that is none of those, bytes that are not UTF-8 — is
reported and skipped, never the whole file; two rows with the same time are one bar given
twice: the later replaces the earlier, which is reported.
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
    #[error("line {line}: replaced by line {by}, which has the same time ({ts})")]
    Replaced { line: u64, by: u64, ts: i64 },
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

/// The rows of a CSV file, read one at a time (memory stays bounded whatever the file size); a
/// row that cannot be used is an `Err` in its place, so the caller can report it and go on.
/// Rows with the same time as the row before are one bar given twice: the later replaces the
/// earlier, and the replaced one is reported as [`ReplayError::Replaced`].
pub struct Rows<R: Read> {
    records: csv::ByteRecordsIntoIter<R>,
    columns: Columns,
    /// The last good row, held back until the next row shows it was not replaced.
    pending: Option<(u64, Bar)>,
    /// What the held row displaced, reported before anything else.
    replaced: Option<ReplayError>,
    done: bool,
}

/// Opens a CSV file's rows.
///
/// # Errors
/// When the header lacks a price column or cannot be read.
pub fn read_bars<R: Read>(input: R) -> Result<Rows<R>, ReplayError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(input);
    let header = csv::StringRecord::from_byte_record_lossy(reader.byte_headers()?.clone());
    let columns = Columns::find(&header)?;
    Ok(Rows {
        records: reader.into_byte_records(),
        columns,
        pending: None,
        replaced: None,
        done: false,
    })
}

impl<R: Read> Rows<R> {
    /// The next row as read: a bar, or why the row cannot be one.
    fn next_raw(&mut self) -> Option<(u64, Result<Bar, ReplayError>)> {
        let record = match self.records.next()? {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, csv::Position::line);
                // An I/O error ends the file; a malformed record is that row's problem.
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    self.done = true;
                }
                return Some((line, Err(ReplayError::Csv(e))));
            }
        };
        let line = record.position().map_or(0, csv::Position::line);
        let parsed = match csv::StringRecord::from_byte_record(record) {
            Ok(text) => parse_row(&text, &self.columns),
            Err(_) => Err("the row is not UTF-8 text".to_string()),
        };
        Some((
            line,
            parsed.map_err(|reason| ReplayError::Row { line, reason }),
        ))
    }
}

impl<R: Read> Iterator for Rows<R> {
    type Item = Result<Bar, ReplayError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(replaced) = self.replaced.take() {
            return Some(Err(replaced));
        }
        loop {
            let next = if self.done { None } else { self.next_raw() };
            match next {
                None => return self.pending.take().map(|(_, bar)| Ok(bar)),
                Some((_, Err(e))) => return Some(Err(e)),
                Some((line, Ok(bar))) => match self.pending.take() {
                    None => self.pending = Some((line, bar)),
                    Some((earlier, held)) if held.ts == bar.ts => {
                        self.pending = Some((line, bar));
                        return Some(Err(ReplayError::Replaced {
                            line: earlier,
                            by: line,
                            ts: bar.ts,
                        }));
                    }
                    Some((_, held)) => {
                        self.pending = Some((line, bar));
                        return Some(Ok(held));
                    }
                },
            }
        }
    }
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

/// Times a replay accepts: from 1970 to the end of 2099.
const LATEST_MS: i64 = 4_102_444_800_000;

/// Unix milliseconds from a date (`2004-08-19`, `2004/08/19`, `20040819`), a date-time (UTC
/// unless it carries an offset) or a Unix time in seconds, milliseconds or microseconds (told
/// apart by magnitude), between 1970 and 2099.
///
/// # Errors
/// A message quoting the value that is none of those, or is outside that range.
pub fn parse_time(raw: &str) -> Result<i64, String> {
    let raw = raw.trim();
    let ms = parse_any_time(raw)?;
    if !(0..LATEST_MS).contains(&ms) {
        return Err(format!("time `{raw}` is outside 1970–2099"));
    }
    Ok(ms)
}

fn parse_any_time(raw: &str) -> Result<i64, String> {
    // Eight digits are a compact date (20200101), not a Unix time in 1970.
    if raw.len() == 8
        && raw.bytes().all(|b| b.is_ascii_digit())
        && let Ok(d) = NaiveDate::parse_from_str(raw, "%Y%m%d")
    {
        return Ok(d
            .and_hms_opt(0, 0, 0)
            .map_or(0, |t| t.and_utc().timestamp_millis()));
    }
    if let Ok(n) = raw.parse::<f64>() {
        if !n.is_finite() || n < 0.0 {
            return Err(format!("time `{raw}` is not a valid Unix time"));
        }
        // Seconds until 5138, milliseconds until then in ms, microseconds beyond.
        let ms = if n < 1e11 {
            n * 1_000.0
        } else if n < 1e14 {
            n
        } else if n < 1e17 {
            n / 1_000.0
        } else {
            return Err(format!("time `{raw}` is too large for a Unix time"));
        };
        return Ok(ms.round() as i64);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.timestamp_millis());
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%z"] {
        if let Ok(t) = DateTime::parse_from_str(raw, format) {
            return Ok(t.timestamp_millis());
        }
    }
    for format in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
        "%Y/%m/%d %H:%M:%S",
        "%Y/%m/%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(raw, format) {
            return Ok(t.and_utc().timestamp_millis());
        }
    }
    for format in ["%Y-%m-%d", "%Y/%m/%d"] {
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
        let bars: Vec<_> = read_bars(csv.as_bytes()).expect("valid").collect();
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
        let bars: Vec<_> = read_bars(csv.as_bytes()).expect("header is fine").collect();
        assert!(
            matches!(&bars[0], Err(ReplayError::Row { line: 2, reason }) if reason.contains("close"))
        );
        assert!(matches!(&bars[1], Err(ReplayError::Row { line: 3, .. })));
        assert!(matches!(
            read_bars("time,open,high,low\n".as_bytes()),
            Err(ReplayError::MissingColumn("close"))
        ));
    }

    #[test]
    fn malformed_files_lose_only_their_bad_rows() {
        let mut csv = b"time,open,high,low,close\n".to_vec();
        csv.extend_from_slice(b"20200101,1,1,1,1\n"); // a compact date, not 1970
        csv.extend_from_slice(b"1e300,1,1,1,1\n"); // absurd
        csv.extend_from_slice(b"2020-01-02,2,2,2,2\n");
        csv.extend_from_slice(b"2020-01-02,3,3,3,3\n"); // same time: replaces the one before
        csv.extend_from_slice(b"2020-01-03,\xff\xfe,1,1,1\n"); // not UTF-8
        csv.extend_from_slice(b"1578182400000000,5,5,5,5\n"); // microseconds: 2020-01-05
        let rows: Vec<_> = read_bars(csv.as_slice()).expect("header").collect();
        let day = |d: i64| 1_577_836_800_000 + (d - 1) * 86_400_000;
        let good: Vec<(i64, f64)> = rows
            .iter()
            .filter_map(|r| r.as_ref().ok().map(|b| (b.ts, b.close)))
            .collect();
        assert_eq!(
            good,
            [(day(1), 1.0), (day(2), 3.0), (day(5), 5.0)],
            "{rows:?}"
        );
        let errors: Vec<String> = rows
            .iter()
            .filter_map(|r| r.as_ref().err().map(ToString::to_string))
            .collect();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(
            errors[0].contains("line 3") && errors[0].contains("1e300"),
            "{errors:?}"
        );
        assert!(parse_time("4102444800").is_err_and(|e| e.contains("1970–2099")));
        assert!(errors[1].contains("replaced by line 5"), "{errors:?}");
        assert!(
            errors[2].contains("line 6") && errors[2].contains("UTF-8"),
            "{errors:?}"
        );
        assert_eq!(
            parse_time("2020-01-01 12:00:00+01:00"),
            Ok(day(1) + 11 * 3_600_000)
        );
        assert!(parse_time("99999999999999999999").is_err());
    }
}
