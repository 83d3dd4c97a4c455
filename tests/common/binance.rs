//! A Binance stand-in for tests that take a provider down and back, or add symbols at run time:
//! klines of ended seconds and the 24 h ticker in Binance's documented format, the ticker
//! answering its documented 503 while `down` (klines keep working, so gaps can be repaired from
//! history).
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::sync::atomic::{AtomicBool, Ordering};

use super::fixture::{Reply, Seen};

pub fn wall_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The fixture market: a price per second, the same in tickers and klines.
pub fn price(ms: i64) -> f64 {
    let s = ms.div_euclid(1_000);
    42_000.0 + (s % 7) as f64 * 0.5 + (s % 11) as f64 * 0.25
}

/// Binance for BTCUSDT; the ticker fails while `down`.
pub fn binance_with_outage(seen: &Seen, down: &AtomicBool) -> Reply {
    match seen.path.as_str() {
        "/api/v3/klines" if seen.q("symbol") != Some("BTCUSDT") => {
            Reply::json(400, r#"{"code":-1120,"msg":"Invalid interval."}"#)
        }
        "/api/v3/ticker/24hr" if down.load(Ordering::SeqCst) => Reply::json(
            503,
            r#"{"code":-1001,"msg":"Internal error; unable to process your request. Please try again."}"#,
        ),
        _ => binance_for_any_symbol(seen, price),
    }
}

/// Binance for every symbol asked, priced by `price`: `/api/v3/klines` at `1s` (closed seconds
/// only) and `/api/v3/ticker/24hr?symbols=[…]`.
pub fn binance_for_any_symbol(seen: &Seen, price: fn(i64) -> f64) -> Reply {
    match seen.path.as_str() {
        "/api/v3/klines" => {
            if seen.q("interval") != Some("1s") {
                return Reply::json(400, r#"{"code":-1120,"msg":"Invalid interval."}"#);
            }
            let num = |name: &str| seen.q(name).and_then(|v| v.parse::<i64>().ok());
            let (Some(start), Some(end)) = (num("startTime"), num("endTime")) else {
                return Reply::json(
                    400,
                    r#"{"code":-1102,"msg":"Mandatory parameter 'startTime' was not sent, was empty/null, or malformed."}"#,
                );
            };
            let limit = num("limit").unwrap_or(500).clamp(1, 1_000) as usize;
            let now = wall_ms();
            let mut rows = Vec::new();
            let mut ts = start.div_euclid(1_000) * 1_000;
            // Only seconds that have ended are closed klines.
            while ts <= end && ts + 1_000 <= now && rows.len() < limit {
                let p = price(ts);
                rows.push(format!(
                    r#"[{ts},"{p:.2}","{p:.2}","{p:.2}","{p:.2}","2.00000000",{},"84000.00",42,"1.00000000","42000.00","0"]"#,
                    ts + 999
                ));
                ts += 1_000;
            }
            Reply::ok(format!("[{}]", rows.join(",")))
        }
        "/api/v3/ticker/24hr" => {
            let asked: Vec<String> = seen
                .q("symbols")
                .and_then(|list| serde_json::from_str(list).ok())
                .unwrap_or_default();
            let second = wall_ms().div_euclid(1_000) * 1_000;
            let tickers: Vec<String> = asked
                .iter()
                .map(|symbol| {
                    format!(
                        r#"{{"symbol":"{symbol}","openPrice":"41000.00","highPrice":"43000.00","lowPrice":"40000.00","lastPrice":"{:.2}","volume":"{}","quoteVolume":"1.0","openTime":{},"closeTime":{second},"firstId":1,"lastId":2,"count":2}}"#,
                        price(second),
                        second / 1_000,
                        second - 86_400_000
                    )
                })
                .collect();
            Reply::ok(format!("[{}]", tickers.join(",")))
        }
        _ => Reply::json(404, r#"{"code":-1000,"msg":"Not found."}"#),
    }
}
