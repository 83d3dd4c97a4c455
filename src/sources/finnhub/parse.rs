/*!
Pure parsers for Finnhub REST (`/quote`, candles) and the trade WebSocket. No I/O: every
function takes the answer (status, body) and returns what it means, so each is tested without a
server and fed random bytes.
*/

use serde::Deserialize;

use crate::model::Bar;
use crate::sources::SourceError;
use crate::sources::http::{self, Fetched};
use crate::sources::shape::{self, Columns};

const NAME: &str = "finnhub";

pub(crate) fn malformed(symbol: &str, reason: impl Into<String>) -> SourceError {
    SourceError::malformed(NAME, symbol, reason)
}

#[derive(Deserialize)]
struct ApiError {
    error: String,
}

/// The error an answer stands for: Finnhub's `{"error":"…"}` texts first (they can come with
/// HTTP 200 too), then the status.
fn error(fetched: &Fetched) -> Option<SourceError> {
    if let Ok(e) = serde_json::from_slice::<ApiError>(&fetched.body) {
        let lower = e.error.to_ascii_lowercase();
        return Some(if fetched.status == 429 || lower.contains("limit") {
            SourceError::RateLimited {
                source_name: NAME,
                retry_after: fetched.retry_after,
            }
        } else if matches!(fetched.status, 401 | 403)
            || lower.contains("api key")
            || lower.contains("access")
        {
            SourceError::Unauthorized {
                source_name: NAME,
                reason: e.error.chars().take(200).collect(),
            }
        } else {
            SourceError::Http {
                source_name: NAME,
                status: fetched.status,
                reason: e.error.chars().take(200).collect(),
            }
        });
    }
    (!fetched.is_success()).then(|| http::status_error(NAME, fetched, None))
}

#[derive(Deserialize)]
struct RawQuote {
    c: Option<f64>,
    t: Option<i64>,
}

/// `/quote` → (price, Unix ms). An all-zero answer (`t: 0`) is Finnhub's way of saying it does
/// not know the symbol.
///
/// # Errors
/// Unknown symbol, Finnhub's error texts, a status error, or a payload without `c`/`t`.
pub fn quote(fetched: &Fetched, symbol: &str) -> Result<(f64, i64), SourceError> {
    if let Some(e) = error(fetched) {
        return Err(e);
    }
    let raw: RawQuote = serde_json::from_slice(&fetched.body)
        .map_err(|e| malformed(symbol, format!("quote: {e}")))?;
    match (raw.c, raw.t) {
        (Some(c), Some(t)) if c > 0.0 && t > 0 && c.is_finite() => Ok((
            c,
            shape::secs_to_ms(t, "t").map_err(|r| malformed(symbol, r))?,
        )),
        (None, _) | (_, None) => Err(malformed(symbol, "quote has no c or t")),
        (Some(c), _) if !c.is_finite() || c < 0.0 => {
            Err(malformed(symbol, format!("price {c} is not a price")))
        }
        _ => Err(SourceError::UnknownSymbol {
            source_name: NAME,
            symbol: symbol.to_string(),
        }),
    }
}

#[derive(Deserialize)]
struct Candles {
    s: String,
    t: Option<Vec<Option<i64>>>,
    o: Option<Vec<Option<f64>>>,
    h: Option<Vec<Option<f64>>>,
    l: Option<Vec<Option<f64>>>,
    c: Option<Vec<Option<f64>>>,
    v: Option<Vec<Option<f64>>>,
}

/// `/stock|forex|crypto/candle` → bars (unshaped). `{"s":"no_data"}` is an empty result. Daily
/// candles are moved to UTC midnight of their date.
///
/// # Errors
/// Finnhub's error texts (candles are 403 on free keys), a status error, columns of different
/// lengths, or an unknown `s`.
pub fn candles(fetched: &Fetched, symbol: &str, daily: bool) -> Result<Vec<Bar>, SourceError> {
    if let Some(e) = error(fetched) {
        return Err(e);
    }
    let raw: Candles = serde_json::from_slice(&fetched.body)
        .map_err(|e| malformed(symbol, format!("candles: {e}")))?;
    match raw.s.as_str() {
        "no_data" => return Ok(Vec::new()),
        "ok" => {}
        other => return Err(malformed(symbol, format!("candle status {other:?}"))),
    }
    let starts = raw.t.unwrap_or_default();
    let n = starts.len();
    let column = |c: Option<Vec<Option<f64>>>, name: &str| {
        shape::column(c.unwrap_or_default(), n, name).map_err(|r| malformed(symbol, r))
    };
    let columns = Columns {
        open: column(raw.o, "o")?,
        high: column(raw.h, "h")?,
        low: column(raw.l, "l")?,
        close: column(raw.c, "c")?,
        volume: raw.v.unwrap_or_default(),
        starts,
    };
    columns
        .rows("t", daily.then_some(0))
        .map_err(|r| malformed(symbol, r))
}

/// One trade from the WebSocket.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Trade {
    #[serde(rename = "s")]
    pub symbol: String,
    #[serde(rename = "p")]
    pub price: f64,
    /// Unix ms.
    #[serde(rename = "t")]
    pub ts: i64,
    #[serde(rename = "v", default)]
    pub volume: f64,
}

/// What one WebSocket text frame carried.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Trades(Vec<Trade>),
    Ping,
    Error(String),
    Other,
}

#[derive(Deserialize)]
struct RawFrame {
    #[serde(rename = "type")]
    kind: String,
    data: Option<Vec<Trade>>,
    msg: Option<String>,
}

/// Parses a trade-stream frame: `{"type":"trade","data":[…]}`, `{"type":"ping"}`,
/// `{"type":"error","msg":"…"}`.
///
/// # Errors
/// A frame that is not JSON or a trade without price, symbol or integer time.
pub fn frame(text: &str) -> Result<Frame, String> {
    let raw: RawFrame = serde_json::from_str(text).map_err(|e| format!("frame: {e}"))?;
    Ok(match raw.kind.as_str() {
        "trade" => Frame::Trades(raw.data.unwrap_or_default()),
        "ping" => Frame::Ping,
        "error" => Frame::Error(raw.msg.unwrap_or_default()),
        _ => Frame::Other,
    })
}
