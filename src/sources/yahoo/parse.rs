/*!
Pure parsers for the Yahoo chart API: bytes in, quotes/bars/errors out. No I/O: every function
takes the answer (status, body) and returns what it means, so each is tested without a server
and fed random bytes.
*/

use serde::Deserialize;

use crate::model::{Bar, Timeframe};
use crate::sources::SourceError;
use crate::sources::http::{self, Fetched};
use crate::sources::shape::{self, SessionQuote};

const NAME: &str = "yahoo";

#[derive(Deserialize)]
struct Envelope {
    chart: Option<Chart>,
    /// Some errors (an expired crumb, an outage) come as `{"finance":{"error":{…}}}`.
    finance: Option<Chart>,
}

#[derive(Deserialize)]
struct Chart {
    result: Option<Vec<ChartResult>>,
    error: Option<YahooError>,
}

#[derive(Deserialize)]
struct YahooError {
    code: Option<String>,
    description: Option<String>,
}

#[derive(Deserialize)]
struct ChartResult {
    meta: Option<Meta>,
    /// Bar starts, Unix seconds. Absent on a day without trades.
    timestamp: Option<Vec<Option<i64>>>,
    indicators: Option<Indicators>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    regular_market_price: Option<f64>,
    regular_market_time: Option<i64>,
    regular_market_volume: Option<f64>,
    /// Seconds east of UTC of the exchange, e.g. -14400 for New York in summer.
    gmtoffset: Option<i64>,
}

#[derive(Deserialize)]
struct Indicators {
    quote: Option<Vec<Columns>>,
}

#[derive(Deserialize, Default)]
struct Columns {
    open: Option<Vec<Option<f64>>>,
    high: Option<Vec<Option<f64>>>,
    low: Option<Vec<Option<f64>>>,
    close: Option<Vec<Option<f64>>>,
    volume: Option<Vec<Option<f64>>>,
}

pub(crate) fn malformed(symbol: &str, reason: impl Into<String>) -> SourceError {
    SourceError::malformed(NAME, symbol, reason)
}

/// Decodes a chart answer of any status into its first result, or the error it stands for.
fn chart_result(fetched: &Fetched, symbol: &str) -> Result<Option<ChartResult>, SourceError> {
    let envelope = serde_json::from_slice::<Envelope>(&fetched.body);
    let chart = match envelope {
        Ok(e) => e.chart.or(e.finance),
        // Not Yahoo's JSON: a plain-text 429 or an HTML outage page (by status), or garbage.
        Err(_) if !fetched.is_success() => return Err(http::status_error(NAME, fetched, None)),
        Err(e) => return Err(malformed(symbol, format!("chart: {e}"))),
    };
    let Some(chart) = chart else {
        return Err(if fetched.is_success() {
            malformed(symbol, "no chart object")
        } else {
            http::status_error(NAME, fetched, None)
        });
    };
    if let Some(err) = chart.error {
        let code = err.code.unwrap_or_default();
        let description = err.description.unwrap_or_default();
        return Err(match (fetched.status, code.as_str()) {
            (404, _) | (_, "Not Found") => SourceError::UnknownSymbol {
                source_name: NAME,
                symbol: symbol.to_string(),
            },
            (401 | 403 | 418 | 429, _) => http::status_error(NAME, fetched, None),
            (_, "Unauthorized") => SourceError::Unauthorized {
                source_name: NAME,
                reason: description,
            },
            (status, _) => SourceError::Http {
                source_name: NAME,
                status,
                reason: format!("{code}: {description}"),
            },
        });
    }
    if !fetched.is_success() {
        return Err(http::status_error(NAME, fetched, None));
    }
    Ok(chart.result.and_then(|r| r.into_iter().next()))
}

/// `meta.regularMarketPrice` at `meta.regularMarketTime`.
///
/// # Errors
/// Yahoo's error object (unknown symbol …), a status error, or a payload without a usable price.
pub fn quote(fetched: &Fetched, symbol: &str) -> Result<SessionQuote, SourceError> {
    let meta = chart_result(fetched, symbol)?
        .and_then(|r| r.meta)
        .ok_or_else(|| SourceError::UnknownSymbol {
            source_name: NAME,
            symbol: symbol.to_string(),
        })?;
    let price = meta
        .regular_market_price
        .ok_or_else(|| malformed(symbol, "meta has no regularMarketPrice"))?;
    let time = meta
        .regular_market_time
        .ok_or_else(|| malformed(symbol, "meta has no regularMarketTime"))?;
    if !(price.is_finite() && price > 0.0) {
        return Err(malformed(
            symbol,
            format!("regularMarketPrice {price} is not a price"),
        ));
    }
    Ok(SessionQuote {
        price,
        ts: shape::secs_to_ms(time, "regularMarketTime").map_err(|r| malformed(symbol, r))?,
        day_volume: meta
            .regular_market_volume
            .filter(|v| v.is_finite() && *v >= 0.0),
    })
}

/// Bars of `step_ms` (a Yahoo interval) from a chart answer, shaped by [`shape::closed_bars`].
/// Daily rows (stamped at the exchange's open) are moved to UTC midnight of their local date,
/// using the payload's `gmtoffset`. Rows with a `null` price are skipped; a `null` volume is 0.
///
/// # Errors
/// Yahoo's error object, a status error, columns of different lengths, or an impossible bar.
pub fn history(
    fetched: &Fetched,
    symbol: &str,
    step_ms: i64,
    timeframe: Timeframe,
    from_ms: i64,
    to_ms: i64,
    now_ms: i64,
) -> Result<Vec<Bar>, SourceError> {
    let rows = rows(fetched, symbol, step_ms)?;
    shape::closed_bars(rows, step_ms, timeframe, from_ms, to_ms, now_ms)
        .map_err(|r| malformed(symbol, r))
}

/// The raw rows of a chart answer (unsorted, unfiltered), for callers that merge several
/// answers before shaping them.
///
/// # Errors
/// As [`history`].
pub fn rows(fetched: &Fetched, symbol: &str, step_ms: i64) -> Result<Vec<Bar>, SourceError> {
    let Some(result) = chart_result(fetched, symbol)? else {
        return Ok(Vec::new());
    };
    let Some(stamps) = result.timestamp else {
        return Ok(Vec::new()); // a day without trades
    };
    let offset_ms = result
        .meta
        .and_then(|m| m.gmtoffset)
        .unwrap_or(0)
        .saturating_mul(1_000);
    let columns = result
        .indicators
        .and_then(|i| i.quote)
        .and_then(|q| q.into_iter().next())
        .unwrap_or_default();
    let n = stamps.len();
    let column = |c: Option<Vec<Option<f64>>>, name: &str| {
        shape::column(c.unwrap_or_else(|| vec![None; n]), n, name).map_err(|r| malformed(symbol, r))
    };
    let chart = shape::Columns {
        open: column(columns.open, "open")?,
        high: column(columns.high, "high")?,
        low: column(columns.low, "low")?,
        close: column(columns.close, "close")?,
        volume: column(columns.volume, "volume")?,
        starts: stamps,
    };
    chart
        .rows("timestamp", (step_ms >= 86_400_000).then_some(offset_ms))
        .map_err(|r| malformed(symbol, r))
}
