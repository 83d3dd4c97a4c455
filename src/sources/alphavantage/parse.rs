/*!
Pure parsers for Alpha Vantage (`GLOBAL_QUOTE`, `CURRENCY_EXCHANGE_RATE`, the intraday and daily
time series) and its New York / UTC local times. No I/O: every function takes the answer
(status, body) and returns what it means, so each is tested without a server and fed random
bytes.
*/

use std::time::Duration;

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use serde_json::{Map, Value};

use crate::model::Bar;
use crate::sources::SourceError;
use crate::sources::http::{self, Fetched};
use crate::sources::shape::{self, SessionQuote};

const NAME: &str = "alphavantage";
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;

pub(crate) fn malformed(symbol: &str, reason: impl Into<String>) -> SourceError {
    SourceError::malformed(NAME, symbol, reason)
}

/// Decodes an answer (Alpha Vantage says everything with HTTP 200) into its JSON object, or the
/// error its `Error Message` / `Information` / `Note` text stands for.
fn decode(fetched: &Fetched, symbol: &str, now_ms: i64) -> Result<Map<String, Value>, SourceError> {
    if !fetched.is_success() {
        return Err(http::status_error(NAME, fetched, None));
    }
    let value: Value = serde_json::from_slice(&fetched.body)
        .map_err(|e| malformed(symbol, format!("not JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(malformed(symbol, "answer is not a JSON object"));
    };
    if let Some(text) = map.get("Error Message").and_then(Value::as_str) {
        return Err(
            message_error(text, now_ms).unwrap_or_else(|| SourceError::UnknownSymbol {
                source_name: NAME,
                symbol: symbol.to_string(),
            }),
        );
    }
    for key in ["Information", "Note"] {
        if let Some(text) = map.get(key).and_then(Value::as_str) {
            return Err(
                message_error(text, now_ms).unwrap_or_else(|| SourceError::Http {
                    source_name: NAME,
                    status: fetched.status,
                    reason: text.chars().take(200).collect(),
                }),
            );
        }
    }
    Ok(map)
}

/// Rate-limit and key texts. The daily quota is assumed to lift at UTC midnight, the per-minute
/// one a minute later.
fn message_error(text: &str, now_ms: i64) -> Option<SourceError> {
    let lower = text.to_ascii_lowercase();
    if lower.contains("rate limit")
        || lower.contains("call frequency")
        || lower.contains("requests per")
    {
        let wait_ms = if lower.contains("per day") && !lower.contains("per minute") {
            DAY_MS - now_ms.rem_euclid(DAY_MS)
        } else {
            60_000
        };
        return Some(SourceError::RateLimited {
            source_name: NAME,
            retry_after: Some(Duration::from_millis(
                u64::try_from(wait_ms).unwrap_or(60_000),
            )),
        });
    }
    if lower.contains("apikey") || lower.contains("api key") || lower.contains("premium") {
        return Some(SourceError::Unauthorized {
            source_name: NAME,
            reason: text.chars().take(200).collect(),
        });
    }
    None
}

/// A value in an Alpha Vantage object whose key ends with `suffix` (`"05. price"` by
/// `"price"`), so numbering differences between functions do not matter.
fn field<'a>(map: &'a Map<String, Value>, suffix: &str) -> Option<&'a Value> {
    map.iter()
        .find(|(k, _)| {
            let name = k.split_once(". ").map_or(k.as_str(), |(_, n)| n);
            name == suffix || name.starts_with(&format!("{suffix} ("))
        })
        .map(|(_, v)| v)
}

fn number(map: &Map<String, Value>, suffix: &str, symbol: &str) -> Result<f64, SourceError> {
    match field(map, suffix) {
        Some(Value::String(s)) => shape::number_str(s, suffix).map_err(|r| malformed(symbol, r)),
        Some(Value::Number(n)) => n
            .as_f64()
            .ok_or_else(|| malformed(symbol, format!("{suffix} is not finite"))),
        Some(other) => Err(malformed(
            symbol,
            format!("{suffix} is {other}, not a number"),
        )),
        None => Err(malformed(symbol, format!("no {suffix:?} field"))),
    }
}

fn text<'a>(
    map: &'a Map<String, Value>,
    suffix: &str,
    symbol: &str,
) -> Result<&'a str, SourceError> {
    field(map, suffix)
        .and_then(Value::as_str)
        .ok_or_else(|| malformed(symbol, format!("no {suffix:?} text")))
}

/// `GLOBAL_QUOTE` → the latest price. It is dated by trading day only, so it is stamped at
/// `now_ms` during that New York day, capped at the 16:00 close (a past day: its close).
/// `{"Global Quote": {}}` is an unknown symbol.
///
/// # Errors
/// The body's error texts, an unknown symbol, or missing/non-numeric fields.
pub fn global_quote(
    fetched: &Fetched,
    symbol: &str,
    now_ms: i64,
) -> Result<SessionQuote, SourceError> {
    let map = decode(fetched, symbol, now_ms)?;
    let quote = match map.get("Global Quote") {
        Some(Value::Object(q)) if !q.is_empty() => q,
        Some(Value::Object(_)) => {
            return Err(SourceError::UnknownSymbol {
                source_name: NAME,
                symbol: symbol.to_string(),
            });
        }
        _ => return Err(malformed(symbol, "no \"Global Quote\" object")),
    };
    let price = number(quote, "price", symbol)?;
    if price <= 0.0 {
        return Err(malformed(symbol, format!("price {price} is not a price")));
    }
    let day = text(quote, "latest trading day", symbol)?;
    let day = NaiveDate::parse_from_str(day.trim(), "%Y-%m-%d")
        .map_err(|_| malformed(symbol, format!("latest trading day {day:?} is not a date")))?;
    let close = new_york_to_utc_ms(
        day.and_time(NaiveTime::from_hms_opt(16, 0, 0).unwrap_or(NaiveTime::MIN)),
    );
    Ok(SessionQuote {
        price,
        ts: now_ms.min(close),
        day_volume: number(quote, "volume", symbol).ok().filter(|v| *v >= 0.0),
    })
}

/// `CURRENCY_EXCHANGE_RATE` → the rate at `6. Last Refreshed` in `7. Time Zone`.
///
/// # Errors
/// The body's error texts, or missing/non-numeric fields, or an unsupported zone.
pub fn exchange_rate(
    fetched: &Fetched,
    symbol: &str,
    now_ms: i64,
) -> Result<SessionQuote, SourceError> {
    let map = decode(fetched, symbol, now_ms)?;
    let Some(Value::Object(rate)) = map.get("Realtime Currency Exchange Rate") else {
        return Err(malformed(
            symbol,
            "no \"Realtime Currency Exchange Rate\" object",
        ));
    };
    let price = number(rate, "Exchange Rate", symbol)?;
    if price <= 0.0 {
        return Err(malformed(symbol, format!("rate {price} is not a price")));
    }
    let zone = Zone::parse(text(rate, "Time Zone", symbol)?).map_err(|r| malformed(symbol, r))?;
    let refreshed = text(rate, "Last Refreshed", symbol)?;
    let ts = local_datetime(refreshed)
        .map(|t| zone.to_utc_ms(t))
        .map_err(|r| malformed(symbol, r))?;
    Ok(SessionQuote {
        price,
        ts,
        day_volume: None,
    })
}

/// Any `Time Series …` answer → bars (unshaped): rows keyed by local time in the meta block's
/// `Time Zone` (daily rows by date → UTC midnight). An empty series is an empty result.
///
/// # Errors
/// The body's error texts, no series object, an unsupported zone, unreadable times or values.
pub fn series(fetched: &Fetched, symbol: &str, now_ms: i64) -> Result<Vec<Bar>, SourceError> {
    let map = decode(fetched, symbol, now_ms)?;
    let zone = match map.get("Meta Data") {
        Some(Value::Object(meta)) => match field(meta, "Time Zone").and_then(Value::as_str) {
            Some(z) => Zone::parse(z).map_err(|r| malformed(symbol, r))?,
            None => Zone::UTC,
        },
        _ => return Err(malformed(symbol, "no \"Meta Data\" object")),
    };
    let rows = map
        .iter()
        .find(|(k, _)| k.starts_with("Time Series"))
        .and_then(|(_, v)| v.as_object())
        .ok_or_else(|| malformed(symbol, "no \"Time Series\" object"))?;
    let mut bars = Vec::with_capacity(rows.len());
    for (stamp, row) in rows {
        let Value::Object(row) = row else {
            return Err(malformed(symbol, format!("row {stamp:?} is not an object")));
        };
        let ts = if stamp.trim().len() == 10 {
            NaiveDate::parse_from_str(stamp.trim(), "%Y-%m-%d")
                .map(|d| d.and_time(NaiveTime::MIN).and_utc().timestamp_millis())
                .map_err(|_| malformed(symbol, format!("row date {stamp:?} is unreadable")))?
        } else {
            local_datetime(stamp)
                .map(|t| zone.to_utc_ms(t))
                .map_err(|r| malformed(symbol, r))?
        };
        bars.push(Bar {
            ts,
            open: number(row, "open", symbol)?,
            high: number(row, "high", symbol)?,
            low: number(row, "low", symbol)?,
            close: number(row, "close", symbol)?,
            volume: if field(row, "volume").is_some() {
                number(row, "volume", symbol)?
            } else {
                0.0
            },
        });
    }
    Ok(bars)
}

fn local_datetime(text: &str) -> Result<NaiveDateTime, String> {
    let text = text.trim();
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M"))
        .map_err(|_| {
            format!(
                "time {:?} is not YYYY-MM-DD HH:MM[:SS]",
                text.chars().take(40).collect::<String>()
            )
        })
}

/// The zone a `Time Zone` field names (`US/Eastern` for US equities, `UTC` for FX and crypto
/// in practice), from the IANA database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Zone(chrono_tz::Tz);

impl Zone {
    pub const UTC: Self = Self(chrono_tz::UTC);
    pub const NEW_YORK: Self = Self(chrono_tz::America::New_York);

    /// # Errors
    /// A name the IANA time-zone database does not know.
    pub fn parse(name: &str) -> Result<Self, String> {
        let name = name.trim();
        name.parse::<chrono_tz::Tz>()
            .map(Self)
            .map_err(|_| format!("unknown time zone {name:?}"))
    }

    /// Local time in this zone → Unix ms. In a repeated autumn hour the first reading is taken;
    /// a time skipped by a spring change is read with the offset in force just before it.
    pub fn to_utc_ms(self, local: NaiveDateTime) -> i64 {
        use chrono::TimeZone as _;
        let earliest = |t: NaiveDateTime| self.0.from_local_datetime(&t).earliest();
        match earliest(local) {
            Some(t) => t.timestamp_millis(),
            None => earliest(local - chrono::TimeDelta::hours(1))
                .map_or(local.and_utc().timestamp_millis(), |t| {
                    t.timestamp_millis() + HOUR_MS
                }),
        }
    }
}

/// New York local time → Unix ms (US equities' session times).
pub fn new_york_to_utc_ms(local: NaiveDateTime) -> i64 {
    Zone::NEW_YORK.to_utc_ms(local)
}
