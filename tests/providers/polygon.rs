//! Polygon.io REST.

use std::time::Duration;

use barkeep::sources::Source;
use barkeep::sources::polygon::PolygonSource;
use barkeep::sources::settings::ProviderSettings;

use crate::fixture::{HttpFixture, Reply};
use crate::{
    Expect, KEY, assert_sorted_unique, history_error_case, now_ms, quote_error_case, settings,
    symbols, tf, too_slow, utc,
};

fn source(s: &ProviderSettings) -> PolygonSource {
    PolygonSource::new(&symbols(&["AAPL", "BTCUSD", "EURUSD", "NAS100"]), s).expect("source")
}

/// A nanosecond time just below a millisecond boundary: through an f64 it would round up into
/// the next millisecond.
const NANOS: i64 = 1_651_179_319_310_999_999;

fn last_trade(t: i64) -> String {
    format!(
        r#"{{"request_id":"f05562305bd26ced64b98ed68b3c5d96","results":{{"T":"AAPL","c":[37],"f":1651179319310588400,"i":"1607","p":166.25,"q":1058,"r":202,"s":2,"t":{t},"x":10,"y":1651179319310121500,"z":3}},"status":"OK"}}"#
    )
}

fn aggs(rows: &[(i64, f64)], status: &str) -> String {
    let results: Vec<String> = rows
        .iter()
        .map(|(t, c)| {
            format!(r#"{{"v":1000.0,"vw":{c},"o":{c},"c":{c},"h":{c},"l":{c},"t":{t},"n":12}}"#)
        })
        .collect();
    format!(
        r#"{{"ticker":"AAPL","queryCount":{n},"resultsCount":{n},"adjusted":true,"results":[{}],"status":"{status}","request_id":"6a7e466379af0a71039d60cc78e72282","count":{n}}}"#,
        results.join(","),
        n = rows.len()
    )
}

#[tokio::test]
async fn last_trade_nanoseconds_are_read_exactly() {
    let server = HttpFixture::always("", Reply::ok(last_trade(NANOS))).await;
    let src = source(&settings(&[("POLYGON_BASE_URL", &server.base)]));
    let quotes = src.quotes(&[0], now_ms()).await.expect("quote");
    assert_eq!(quotes[0].price, 166.25);
    assert_eq!(
        quotes[0].ts, 1_651_179_319_310,
        "ns → ms without a detour through f64"
    );
    assert_ne!(
        (NANOS as f64 / 1e6) as i64,
        1_651_179_319_310,
        "the test value does catch f64 rounding"
    );
    let seen = server.requests();
    assert_eq!(seen[0].path, "/v2/last/trade/AAPL");
    assert_eq!(
        seen[0].headers.get("authorization").map(String::as_str),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert!(seen[0].q("apiKey").is_none());
}

#[tokio::test]
async fn crypto_and_fx_quote_from_the_newest_minute_aggregate() {
    let t = utc("2024-01-15 14:31");
    let server = HttpFixture::always("", Reply::ok(aggs(&[(t, 42_000.5)], "OK"))).await;
    let src = source(&settings(&[("POLYGON_BASE_URL", &server.base)]));
    let now = now_ms();
    let quotes = src.quotes(&[1], now).await.expect("quote");
    assert_eq!((quotes[0].price, quotes[0].ts), (42_000.5, t));
    let seen = server.requests();
    assert!(
        seen[0]
            .path
            .starts_with("/v2/aggs/ticker/X:BTCUSD/range/1/minute/"),
        "{}",
        seen[0].path
    );
    assert_eq!(
        (seen[0].q("sort"), seen[0].q("limit")),
        (Some("desc"), Some("1"))
    );
    let empty = HttpFixture::always("", Reply::ok(r#"{"ticker":"C:EURUSD","queryCount":0,"resultsCount":0,"adjusted":true,"status":"OK","request_id":"x"}"#)).await;
    let src = source(&settings(&[("POLYGON_BASE_URL", &empty.base)]));
    let err = src.quotes(&[2], now).await.expect_err("no aggregate");
    crate::check(&err, Expect::Unknown, "no aggregate in a day");
}

#[tokio::test]
async fn quote_errors() {
    let cases = [
        ("unknown ticker", Reply::json(404, r#"{"status":"NOT_FOUND","request_id":"x","message":"Data not found."}"#), Expect::Unknown),
        ("bad key", Reply::json(401, r#"{"status":"ERROR","request_id":"x","error":"Unknown API Key"}"#), Expect::Unauthorized),
        (
            "not entitled",
            Reply::json(403, r#"{"status":"NOT_AUTHORIZED","request_id":"x","message":"You are not entitled to this data. Please upgrade your plan at https://polygon.io/pricing"}"#),
            Expect::Unauthorized,
        ),
        (
            "rate limit (429)",
            Reply::json(429, r#"{"status":"ERROR","request_id":"x","error":"You've exceeded the maximum requests per minute, please wait or upgrade your subscription to continue. https://polygon.io/pricing"}"#)
                .header("Retry-After", "60"),
            Expect::RateLimited(Some(Duration::from_secs(60))),
        ),
        (
            "rate limit (200)",
            Reply::ok(r#"{"status":"ERROR","request_id":"x","error":"You've exceeded the maximum requests per minute, please wait or upgrade your subscription to continue."}"#),
            Expect::RateLimited(None),
        ),
        ("server error", Reply::text(504, "Gateway Timeout"), Expect::Http(504)),
        ("malformed JSON", Reply::ok(r#"{"results":{"p":166.25,"t":"#), Expect::Malformed),
        ("time as float", Reply::ok(r#"{"results":{"p":166.25,"t":1.6511793193106173e18},"status":"OK"}"#), Expect::Malformed),
        ("empty result", Reply::ok(r#"{"status":"OK","request_id":"x"}"#), Expect::Unknown),
        ("timeout", too_slow(&last_trade(NANOS)), Expect::Timeout),
    ];
    for (case, reply, expect) in cases {
        quote_error_case(source, "POLYGON_BASE_URL", "", reply, expect, case).await;
    }
}

#[tokio::test]
async fn aggregates_are_sorted_deduplicated_and_closed_only() {
    let now = now_ms();
    let minute = now - now.rem_euclid(60_000);
    let rows = [
        (minute - 60_000, 3.0),
        (minute - 180_000, 1.0),
        (minute - 120_000, 2.0),
        (minute - 120_000, 2.5),
        (minute, 4.0),
    ];
    let server = HttpFixture::always("", Reply::ok(aggs(&rows, "DELAYED"))).await;
    let src = source(&settings(&[("POLYGON_BASE_URL", &server.base)]));
    let bars = src
        .history(0, tf("1m"), minute - 180_000, now + 60_000)
        .await
        .expect("history");
    assert_sorted_unique(&bars);
    assert_eq!(
        bars.iter().map(|b| b.close).collect::<Vec<_>>(),
        [1.0, 2.5, 3.0]
    );
    let seen = server.requests();
    let prefix = format!("/v2/aggs/ticker/AAPL/range/1/minute/{}/", minute - 180_000);
    assert!(seen[0].path.starts_with(&prefix), "{}", seen[0].path);
    assert_eq!(
        (seen[0].q("sort"), seen[0].q("adjusted")),
        (Some("asc"), Some("true"))
    );
}

#[tokio::test]
async fn day_aggregates_move_from_new_york_midnight_to_utc_midnight() {
    // Polygon stamps stock day bars at midnight New York time.
    let rows = [
        (utc("2024-01-16 05:00"), 2.0),
        (utc("2024-07-15 04:00"), 3.0),
    ];
    let server = HttpFixture::always("", Reply::ok(aggs(&rows, "OK"))).await;
    let src = source(&settings(&[("POLYGON_BASE_URL", &server.base)]));
    let bars = src
        .history(
            0,
            tf("1d"),
            utc("2024-01-01 00:00"),
            utc("2024-08-01 00:00"),
        )
        .await
        .expect("history");
    assert_eq!(
        bars.iter().map(|b| b.ts).collect::<Vec<_>>(),
        [utc("2024-01-16 00:00"), utc("2024-07-15 00:00")]
    );
    assert!(server.requests()[0].path.contains("/range/1/day/"));
}

#[tokio::test]
async fn history_empty_and_errors() {
    let server = HttpFixture::always("", Reply::ok(r#"{"ticker":"AAPL","queryCount":0,"resultsCount":0,"adjusted":true,"status":"OK","request_id":"x","count":0}"#)).await;
    let src = source(&settings(&[("POLYGON_BASE_URL", &server.base)]));
    let from = utc("2024-01-15 14:30");
    assert!(
        src.history(0, tf("1m"), from, from + 600_000)
            .await
            .expect("empty")
            .is_empty()
    );
    let cases = [
        (
            "bad key",
            Reply::json(
                401,
                r#"{"status":"ERROR","request_id":"x","error":"Unknown API Key"}"#,
            ),
            Expect::Unauthorized,
        ),
        (
            "missing close",
            Reply::ok(r#"{"results":[{"o":1,"h":1,"l":1,"t":1705329000000}],"status":"OK"}"#),
            Expect::Malformed,
        ),
        (
            "rate limited in a 200",
            Reply::ok(
                r#"{"status":"ERROR","error":"You've exceeded the maximum requests per minute"}"#,
            ),
            Expect::RateLimited(None),
        ),
    ];
    for (case, reply, expect) in cases {
        history_error_case(source, "POLYGON_BASE_URL", "", reply, expect, case).await;
    }
}

#[tokio::test]
async fn without_last_trades_in_the_plan_equities_quote_from_aggregates() {
    let t = utc("2024-01-15 14:31");
    let server = HttpFixture::start("", move |req| {
        if req.path.starts_with("/v2/last/trade/") {
            Reply::json(403, r#"{"status":"NOT_AUTHORIZED","request_id":"x","message":"You are not entitled to this data. Please upgrade your plan at https://polygon.io/pricing"}"#)
        } else {
            Reply::ok(aggs(&[(t, 185.5)], "DELAYED"))
        }
    })
    .await;
    let src = source(&settings(&[("POLYGON_BASE_URL", &server.base)]));
    for _ in 0..2 {
        let q = src.quotes(&[0], now_ms()).await.expect("quote");
        assert_eq!((q[0].price, q[0].ts), (185.5, t));
    }
    let paths: Vec<String> = server.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths
            .iter()
            .filter(|p| p.starts_with("/v2/last/trade/"))
            .count(),
        1,
        "asked once: {paths:?}"
    );
    assert_eq!(paths.len(), 3);
}
