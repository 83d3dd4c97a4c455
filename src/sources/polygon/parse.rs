/*!
Pure parsers for Polygon.io REST (aggregates, last trade) and its WebSocket. No I/O: every
function takes the answer (status, body) and returns what it means, so each is tested without a
server and fed random bytes.
*/

use serde::Deserialize;

use crate::model::Bar;
use crate::sources::SourceError;
use crate::sources::http::{self, Fetched};
use crate::sources::shape;

const NAME: &str = "polygon";
const HOUR_MS: i64 = 3_600_000;

pub(crate) fn malformed(symbol: &str, reason: impl Into<String>) -> SourceError {
    SourceError::malformed(NAME, symbol, reason)
}

#[derive(Deserialize)]
struct Envelope {
    status: Option<String>,
    error: Option<String>,
    message: Option<String>,
}

/// The error an answer stands for, if any. Polygon names it in `status` (`ERROR`,
/// `NOT_AUTHORIZED`, `NOT_FOUND`) with the text in `error` or `message`, sometimes under
/// HTTP 200 (the rate-limit text in particular).
fn error(fetched: &Fetched, symbol: &str) -> Option<SourceError> {
    let envelope = serde_json::from_slice::<Envelope>(&fetched.body).ok();
    let status = envelope
        .as_ref()
        .and_then(|e| e.status.as_deref())
        .unwrap_or_default();
    let text = envelope
        .as_ref()
        .and_then(|e| e.error.clone().or_else(|| e.message.clone()))
        .unwrap_or_default();
    let lower = text.to_ascii_lowercase();
    if fetched.status == 429 || lower.contains("exceeded the maximum requests") {
        return Some(SourceError::RateLimited {
            source_name: NAME,
            retry_after: fetched.retry_after,
        });
    }
    if matches!(fetched.status, 401 | 403)
        || status == "NOT_AUTHORIZED"
        || lower.contains("api key")
    {
        return Some(SourceError::Unauthorized {
            source_name: NAME,
            reason: text.chars().take(200).collect(),
        });
    }
    if fetched.status == 404 || status == "NOT_FOUND" {
        return Some(SourceError::UnknownSymbol {
            source_name: NAME,
            symbol: symbol.to_string(),
        });
    }
    if !fetched.is_success() {
        return Some(http::status_error(NAME, fetched, None));
    }
    (status == "ERROR").then(|| SourceError::Http {
        source_name: NAME,
        status: fetched.status,
        reason: text.chars().take(200).collect(),
    })
}

#[derive(Deserialize)]
struct Aggs {
    results: Option<Vec<Agg>>,
    next_url: Option<String>,
}

#[derive(Deserialize)]
struct Agg {
    o: f64,
    h: f64,
    l: f64,
    c: f64,
    #[serde(default)]
    v: f64,
    /// Window start, Unix ms.
    t: i64,
}

/// A page of aggregates.
#[derive(Debug, Clone, PartialEq)]
pub struct AggPage {
    pub bars: Vec<Bar>,
    /// Polygon's pointer to the next page, when there is one.
    pub more: bool,
}

/// `/v2/aggs/ticker/{T}/range/…` → bars (unshaped). No `results` key = no data. Day bars,
/// stamped at midnight New York time (04:00/05:00 UTC) for stocks, move to UTC midnight of
/// that date.
///
/// # Errors
/// Polygon's error statuses (also under HTTP 200), a status error, or a result without
/// `o/h/l/c/t`.
pub fn aggs(fetched: &Fetched, symbol: &str, daily: bool) -> Result<AggPage, SourceError> {
    if let Some(e) = error(fetched, symbol) {
        return Err(e);
    }
    let raw: Aggs = serde_json::from_slice(&fetched.body)
        .map_err(|e| malformed(symbol, format!("aggregates: {e}")))?;
    let bars = raw
        .results
        .unwrap_or_default()
        .into_iter()
        .map(|a| Bar {
            ts: if daily {
                shape::local_day_start(a.t, 12 * HOUR_MS)
            } else {
                a.t
            },
            open: a.o,
            high: a.h,
            low: a.l,
            close: a.c,
            volume: a.v,
        })
        .collect();
    Ok(AggPage {
        bars,
        more: raw.next_url.is_some(),
    })
}

#[derive(Deserialize)]
struct LastTrade {
    results: Option<Trade>,
}

#[derive(Deserialize)]
struct Trade {
    p: f64,
    /// SIP timestamp in nanoseconds: beyond 2^53, so read as an integer, never a float.
    t: i64,
}

/// `/v2/last/trade/{T}` → (price, Unix ms).
///
/// # Errors
/// Polygon's error statuses, a status error, or a trade without `p`/`t`.
pub fn last_trade(fetched: &Fetched, symbol: &str) -> Result<(f64, i64), SourceError> {
    if let Some(e) = error(fetched, symbol) {
        return Err(e);
    }
    let raw: LastTrade = serde_json::from_slice(&fetched.body)
        .map_err(|e| malformed(symbol, format!("last trade: {e}")))?;
    let trade = raw.results.ok_or_else(|| SourceError::UnknownSymbol {
        source_name: NAME,
        symbol: symbol.to_string(),
    })?;
    if !(trade.p.is_finite() && trade.p > 0.0) {
        return Err(malformed(
            symbol,
            format!("price {} is not a price", trade.p),
        ));
    }
    Ok((trade.p, trade.t.div_euclid(1_000_000)))
}

/// One WebSocket event.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Status {
        status: String,
        message: String,
    },
    /// `AM` (minute) or `A` (second) aggregate.
    Aggregate {
        minute: bool,
        symbol: String,
        bar: Bar,
        end_ms: i64,
    },
    Other,
}

#[derive(Deserialize)]
struct RawEvent {
    ev: String,
    status: Option<String>,
    message: Option<String>,
    sym: Option<String>,
    o: Option<f64>,
    h: Option<f64>,
    l: Option<f64>,
    c: Option<f64>,
    v: Option<f64>,
    s: Option<i64>,
    e: Option<i64>,
}

/// Parses a WebSocket frame: always a JSON array of events.
///
/// # Errors
/// A frame that is not an array of objects with `ev`, or an aggregate missing a field.
pub fn frame(text: &str) -> Result<Vec<Event>, String> {
    let raw: Vec<RawEvent> = serde_json::from_str(text).map_err(|e| format!("frame: {e}"))?;
    raw.into_iter()
        .map(|r| match r.ev.as_str() {
            "status" => Ok(Event::Status {
                status: r.status.unwrap_or_default(),
                message: r.message.unwrap_or_default(),
            }),
            "AM" | "A" => {
                let (Some(symbol), Some(o), Some(h), Some(l), Some(c), Some(s)) =
                    (r.sym, r.o, r.h, r.l, r.c, r.s)
                else {
                    return Err(format!("{} event lacks sym/o/h/l/c/s", r.ev));
                };
                Ok(Event::Aggregate {
                    minute: r.ev == "AM",
                    symbol,
                    bar: Bar {
                        ts: s,
                        open: o,
                        high: h,
                        low: l,
                        close: c,
                        volume: r.v.unwrap_or(0.0),
                    },
                    end_ms: r.e.unwrap_or(s),
                })
            }
            _ => Ok(Event::Other),
        })
        .collect()
}
