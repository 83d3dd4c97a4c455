/*!
Pure parsers for Binance spot REST and the kline WebSocket stream. No I/O: every function takes
the answer (status, body) and returns what it means, so each is tested without a server and fed
random bytes.
*/

use serde::Deserialize;

use crate::model::Bar;
use crate::sources::SourceError;
use crate::sources::http::{self, Fetched};
use crate::sources::shape::{self, Num};

const NAME: &str = "binance";

/// Binance's "Invalid symbol." error code.
pub const INVALID_SYMBOL: i64 = -1121;

pub(crate) fn malformed(symbol: &str, reason: impl Into<String>) -> SourceError {
    SourceError::malformed(NAME, symbol, reason)
}

#[derive(Deserialize)]
struct ApiError {
    code: i64,
    msg: Option<String>,
}

/// The error a non-success answer stands for: `{"code":-1121,"msg":"Invalid symbol."}` is an
/// unknown symbol, 429 (over the weight budget) and 418 (IP banned) are rate limits with the
/// `Retry-After` Binance sends, the rest by status.
pub fn error(fetched: &Fetched, symbol: &str) -> SourceError {
    match serde_json::from_slice::<ApiError>(&fetched.body) {
        Ok(e) if e.code == INVALID_SYMBOL && !matches!(fetched.status, 418 | 429) => {
            SourceError::UnknownSymbol {
                source_name: NAME,
                symbol: symbol.to_string(),
            }
        }
        Ok(e) if !matches!(fetched.status, 401 | 403 | 418 | 429) && fetched.status < 500 => {
            SourceError::Http {
                source_name: NAME,
                status: fetched.status,
                reason: format!("{} {}", e.code, e.msg.unwrap_or_default()),
            }
        }
        _ => http::status_error(NAME, fetched, None),
    }
}

/// The error code in a body, if it is Binance's error object.
pub fn error_code(body: &[u8]) -> Option<i64> {
    serde_json::from_slice::<ApiError>(body)
        .ok()
        .map(|e| e.code)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MiniTicker {
    symbol: String,
    last_price: Num,
    /// End of the rolling 24 h window: when these statistics were computed, Unix ms.
    close_time: i64,
}

/// One symbol's latest trade price from `/api/v3/ticker/24hr`.
#[derive(Debug, Clone, PartialEq)]
pub struct Ticker {
    pub symbol: String,
    pub price: f64,
    pub ts: i64,
}

/// `/api/v3/ticker/24hr?symbols=[…]&type=MINI` → one ticker per symbol Binance knows.
///
/// # Errors
/// An error answer (see [`error`]), or a ticker with a non-numeric price.
pub fn tickers(fetched: &Fetched, symbols: &str) -> Result<Vec<Ticker>, SourceError> {
    if !fetched.is_success() {
        return Err(error(fetched, symbols));
    }
    let raw: Vec<MiniTicker> = serde_json::from_slice(&fetched.body)
        .map_err(|e| malformed(symbols, format!("ticker list: {e}")))?;
    raw.into_iter()
        .map(|t| {
            let price = t
                .last_price
                .value("lastPrice")
                .map_err(|r| malformed(&t.symbol, r))?;
            Ok(Ticker {
                symbol: t.symbol,
                price,
                ts: t.close_time,
            })
        })
        .collect()
}

/// `/api/v3/klines` rows `[openTime, "o", "h", "l", "c", "v", closeTime, …]` → bars (unshaped).
///
/// # Errors
/// An error answer, a row that is not such an array, or non-numeric values.
pub fn klines(fetched: &Fetched, symbol: &str) -> Result<Vec<Bar>, SourceError> {
    if !fetched.is_success() {
        return Err(error(fetched, symbol));
    }
    let rows: Vec<Vec<serde_json::Value>> = serde_json::from_slice(&fetched.body)
        .map_err(|e| malformed(symbol, format!("kline list: {e}")))?;
    rows.iter()
        .map(|row| kline_row(row).map_err(|r| malformed(symbol, r)))
        .collect()
}

fn kline_row(row: &[serde_json::Value]) -> Result<Bar, String> {
    if row.len() < 6 {
        return Err(format!("kline row has {} fields, expected 12", row.len()));
    }
    let ts = row[0]
        .as_i64()
        .ok_or_else(|| format!("kline open time {} is not an integer", row[0]))?;
    let field = |i: usize, name: &str| -> Result<f64, String> {
        match &row[i] {
            serde_json::Value::String(s) => shape::number_str(s, name),
            serde_json::Value::Number(n) => {
                n.as_f64().ok_or_else(|| format!("{name} is not finite"))
            }
            other => Err(format!("{name} is {other}, not a number")),
        }
    };
    Ok(Bar {
        ts,
        open: field(1, "open")?,
        high: field(2, "high")?,
        low: field(3, "low")?,
        close: field(4, "close")?,
        volume: field(5, "volume")?,
    })
}

/// What one WebSocket text frame carried.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Kline(Kline),
    /// A reply to SUBSCRIBE (`{"result":null,"id":1}`) or anything else without data.
    Other,
    /// `{"error":{…},"id":…}` or `{"code":…,"msg":…}`.
    Error(String),
}

/// A kline update: the bar so far (or final when `closed`).
#[derive(Debug, Clone, PartialEq)]
pub struct Kline {
    pub symbol: String,
    /// Event time, Unix ms.
    pub event_ms: i64,
    pub bar: Bar,
    /// The bar's interval as Binance names it (`1m`).
    pub interval: String,
    pub closed: bool,
}

#[derive(Deserialize)]
struct Combined {
    data: serde_json::Value,
}

#[derive(Deserialize)]
struct KlineEvent {
    #[serde(rename = "e")]
    event: String,
    #[serde(rename = "E")]
    event_ms: i64,
    #[serde(rename = "k")]
    k: KlineBody,
}

#[derive(Deserialize)]
struct KlineBody {
    t: i64,
    s: String,
    i: String,
    o: Num,
    h: Num,
    l: Num,
    c: Num,
    v: Num,
    x: bool,
}

/// Parses a kline stream frame; raw (`/ws`) and combined (`/stream`, wrapped in
/// `{"stream":…,"data":…}`) forms both work.
///
/// # Errors
/// A frame that is not JSON, or a kline event with missing or non-numeric fields.
pub fn frame(text: &str) -> Result<Frame, String> {
    let mut value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    if value.get("stream").is_some()
        && let Ok(combined) = serde_json::from_value::<Combined>(value.clone())
    {
        value = combined.data;
    }
    if let Some(err) = value.get("error").filter(|e| !e.is_null()) {
        return Ok(Frame::Error(err.to_string()));
    }
    if let (Some(code), Some(msg)) = (value.get("code"), value.get("msg")) {
        return Ok(Frame::Error(format!("{code} {msg}")));
    }
    if value.get("e").and_then(serde_json::Value::as_str) != Some("kline") {
        return Ok(Frame::Other);
    }
    let event: KlineEvent = serde_json::from_value(value).map_err(|e| format!("kline: {e}"))?;
    debug_assert_eq!(event.event, "kline");
    let k = event.k;
    Ok(Frame::Kline(Kline {
        symbol: k.s,
        event_ms: event.event_ms,
        bar: Bar {
            ts: k.t,
            open: k.o.value("o")?,
            high: k.h.value("h")?,
            low: k.l.value("l")?,
            close: k.c.value("c")?,
            volume: k.v.value("v")?,
        },
        interval: k.i,
        closed: k.x,
    }))
}
