/*!
Pure parsers for Twelve Data `/quote` and `/time_series`. No I/O: every function takes the
answer (status, body) and returns what it means, so each is tested without a server and fed
random bytes.
*/

use std::time::Duration;

use chrono::NaiveDateTime;
use serde::Deserialize;

use crate::model::Bar;
use crate::sources::SourceError;
use crate::sources::http::{self, Fetched};
use crate::sources::shape::{self, Num, SessionQuote};

const NAME: &str = "twelvedata";

pub(crate) fn malformed(symbol: &str, reason: impl Into<String>) -> SourceError {
    SourceError::malformed(NAME, symbol, reason)
}

/// `{"code":…,"message":…,"status":"error"}`, under HTTP 200 or the real status.
#[derive(Deserialize)]
struct ApiError {
    code: Option<i64>,
    message: Option<String>,
}

/// What an error object means. `now_ms` dates the "credits for the current minute" limit: it
/// lifts at the next full minute.
fn classify(
    e: ApiError,
    http_status: u16,
    retry_after: Option<Duration>,
    symbol: &str,
    now_ms: i64,
) -> SourceError {
    let code = e
        .code
        .and_then(|c| u16::try_from(c).ok())
        .unwrap_or(http_status);
    let message = e.message.unwrap_or_default();
    let lower = message.to_ascii_lowercase();
    match code {
        429 => SourceError::RateLimited {
            source_name: NAME,
            retry_after: retry_after.or_else(|| {
                lower.contains("current minute").then(|| {
                    let ms = 60_000 - now_ms.rem_euclid(60_000);
                    Duration::from_millis(u64::try_from(ms).unwrap_or(60_000))
                })
            }),
        },
        401 | 403 => SourceError::Unauthorized {
            source_name: NAME,
            reason: message.chars().take(200).collect(),
        },
        400 | 404 if lower.contains("symbol") => SourceError::UnknownSymbol {
            source_name: NAME,
            symbol: symbol.to_string(),
        },
        status => SourceError::Http {
            source_name: NAME,
            status,
            reason: message.chars().take(200).collect(),
        },
    }
}

fn is_error(value: &serde_json::Value) -> bool {
    value.get("status").and_then(serde_json::Value::as_str) == Some("error")
}

/// Decodes an answer into JSON, or the error it stands for.
fn decode(fetched: &Fetched, symbol: &str, now_ms: i64) -> Result<serde_json::Value, SourceError> {
    let value: serde_json::Value = match serde_json::from_slice(&fetched.body) {
        Ok(v) => v,
        Err(_) if !fetched.is_success() => return Err(http::status_error(NAME, fetched, None)),
        Err(e) => return Err(malformed(symbol, format!("not JSON: {e}"))),
    };
    if is_error(&value) {
        let e: ApiError =
            serde_json::from_value(value).map_err(|e| malformed(symbol, e.to_string()))?;
        return Err(classify(
            e,
            fetched.status,
            fetched.retry_after,
            symbol,
            now_ms,
        ));
    }
    if !fetched.is_success() {
        return Err(http::status_error(NAME, fetched, None));
    }
    Ok(value)
}

#[derive(Deserialize)]
struct RawQuote {
    close: Num,
    /// Unix s of the latest minute candle behind the quote (newer API versions).
    last_quote_at: Option<i64>,
    /// Unix s of the quote's (daily) candle.
    timestamp: Option<i64>,
    volume: Option<Num>,
}

/// Each requested provider symbol with its own quote or error.
pub type QuoteAnswers = Vec<(String, Result<SessionQuote, SourceError>)>;

/// `/quote?symbol=A[,B…]` → per requested provider symbol, its quote or its own error.
/// One symbol answers a flat object; several answer an object keyed by symbol, where each
/// value may be an error object of its own.
///
/// # Errors
/// A whole-request error (bad key, out of credits …) or a payload of the wrong shape.
pub fn quotes(
    fetched: &Fetched,
    requested: &[&str],
    label: &str,
    now_ms: i64,
) -> Result<QuoteAnswers, SourceError> {
    let value = decode(fetched, label, now_ms)?;
    let serde_json::Value::Object(map) = value else {
        return Err(malformed(label, "quote answer is not an object"));
    };
    let flat = map.contains_key("close") || map.contains_key("symbol");
    let entries: Vec<(String, serde_json::Value)> = if flat {
        let symbol = requested
            .first()
            .map_or_else(String::new, |s| (*s).to_string());
        vec![(symbol, serde_json::Value::Object(map))]
    } else {
        map.into_iter().collect()
    };
    Ok(entries
        .into_iter()
        .map(|(symbol, v)| {
            let q = one_quote(v, &symbol, fetched.status, now_ms);
            (symbol, q)
        })
        .collect())
}

fn one_quote(
    value: serde_json::Value,
    symbol: &str,
    status: u16,
    now_ms: i64,
) -> Result<SessionQuote, SourceError> {
    if is_error(&value) {
        let e: ApiError =
            serde_json::from_value(value).map_err(|e| malformed(symbol, e.to_string()))?;
        return Err(classify(e, status, None, symbol, now_ms));
    }
    let raw: RawQuote =
        serde_json::from_value(value).map_err(|e| malformed(symbol, format!("quote: {e}")))?;
    let price = raw.close.value("close").map_err(|r| malformed(symbol, r))?;
    if price <= 0.0 {
        return Err(malformed(symbol, format!("close {price} is not a price")));
    }
    let secs = raw
        .last_quote_at
        .or(raw.timestamp)
        .ok_or_else(|| malformed(symbol, "quote has neither last_quote_at nor timestamp"))?;
    let day_volume = match raw.volume {
        Some(v) => Some(v.value("volume").map_err(|r| malformed(symbol, r))?),
        None => None,
    };
    Ok(SessionQuote {
        price,
        ts: shape::secs_to_ms(secs, "timestamp").map_err(|r| malformed(symbol, r))?,
        day_volume: day_volume.filter(|v| *v >= 0.0),
    })
}

#[derive(Deserialize)]
struct Series {
    values: Option<Vec<Row>>,
}

#[derive(Deserialize)]
struct Row {
    datetime: String,
    open: Num,
    high: Num,
    low: Num,
    close: Num,
    volume: Option<Num>,
}

/// `/time_series` (requested with `timezone=UTC`) → bars (unshaped). Datetimes are
/// `YYYY-MM-DD HH:MM:SS` for intraday and `YYYY-MM-DD` for daily values, read in UTC because
/// that is what was asked for; "No data is available" is an empty result.
///
/// # Errors
/// Error objects, a wrong shape, an unreadable datetime or a non-numeric value.
pub fn time_series(fetched: &Fetched, symbol: &str, now_ms: i64) -> Result<Vec<Bar>, SourceError> {
    let value = match decode(fetched, symbol, now_ms) {
        Err(SourceError::Http { reason, .. })
            if reason.to_ascii_lowercase().contains("no data is available") =>
        {
            return Ok(Vec::new());
        }
        other => other?,
    };
    let series: Series = serde_json::from_value(value)
        .map_err(|e| malformed(symbol, format!("time_series: {e}")))?;
    series
        .values
        .unwrap_or_default()
        .into_iter()
        .map(|row| {
            let bar = (|| -> Result<Bar, String> {
                Ok(Bar {
                    ts: utc_ms(&row.datetime)?,
                    open: row.open.value("open")?,
                    high: row.high.value("high")?,
                    low: row.low.value("low")?,
                    close: row.close.value("close")?,
                    volume: row.volume.as_ref().map_or(Ok(0.0), |v| v.value("volume"))?,
                })
            })();
            bar.map_err(|r| malformed(symbol, r))
        })
        .collect()
}

/// `2023-05-01 15:59:00` or `2023-05-01`, in UTC → Unix ms.
///
/// # Errors
/// Anything else.
pub fn utc_ms(datetime: &str) -> Result<i64, String> {
    let datetime = datetime.trim();
    let parsed = NaiveDateTime::parse_from_str(datetime, "%Y-%m-%d %H:%M:%S").or_else(|_| {
        chrono::NaiveDate::parse_from_str(datetime, "%Y-%m-%d")
            .map(|d| d.and_time(chrono::NaiveTime::MIN))
    });
    parsed.map(|t| t.and_utc().timestamp_millis()).map_err(|_| {
        format!(
            "datetime {:?} is not YYYY-MM-DD[ HH:MM:SS]",
            datetime.chars().take(40).collect::<String>()
        )
    })
}
