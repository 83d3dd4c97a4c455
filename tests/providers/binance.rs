//! Binance spot REST.

use std::time::Duration;

use barkeep::sources::Source;
use barkeep::sources::binance::BinanceSource;
use barkeep::sources::settings::ProviderSettings;

use crate::fixture::{HttpFixture, Reply};
use crate::{
    Expect, assert_sorted_unique, history_error_case, now_ms, quote_error_case, settings, symbols,
    tf, too_slow, utc,
};

fn source(s: &ProviderSettings) -> BinanceSource {
    BinanceSource::new(&symbols(&["BTCUSD", "ETHUSDT", "EURUSD", "AAPL"]), s).expect("source")
}

fn ticker(symbol: &str, price: &str, close_time: i64) -> String {
    format!(
        r#"{{"symbol":"{symbol}","openPrice":"1.0","highPrice":"1.0","lowPrice":"1.0","lastPrice":"{price}","volume":"123.4","quoteVolume":"999.0","openTime":{},"closeTime":{close_time},"firstId":1,"lastId":2,"count":2}}"#,
        close_time - 86_400_000
    )
}

const INVALID: &str = r#"{"code":-1121,"msg":"Invalid symbol."}"#;

#[tokio::test]
async fn one_batched_request_for_all_crypto_symbols() {
    let server = HttpFixture::always(
        "",
        Reply::ok(format!(
            "[{},{}]",
            ticker("BTCUSDT", "42000.12000000", 1_705_329_000_123),
            ticker("ETHUSDT", "2500.5", 1_705_329_000_456)
        )),
    )
    .await;
    let src = source(&settings(&[("BINANCE_BASE_URL", &server.base)]));
    assert!(src.supports(0) && src.supports(1));
    assert!(
        !src.supports(2) && !src.supports(3),
        "Binance serves crypto only"
    );
    let mut quotes = src.quotes(&[0, 1], now_ms()).await.expect("quotes");
    quotes.sort_by_key(|q| q.symbol);
    assert_eq!(quotes.len(), 2);
    assert_eq!(
        (quotes[0].symbol, quotes[0].price, quotes[0].ts),
        (0, 42_000.12, 1_705_329_000_123)
    );
    assert_eq!((quotes[1].symbol, quotes[1].price), (1, 2_500.5));
    let seen = server.requests();
    assert_eq!(seen.len(), 1, "one request for the batch");
    assert_eq!(seen[0].path, "/api/v3/ticker/24hr");
    assert_eq!(seen[0].q("symbols"), Some(r#"["BTCUSDT","ETHUSDT"]"#));
    assert_eq!(seen[0].q("type"), Some("MINI"));
}

#[tokio::test]
async fn a_symbol_missing_from_the_answer_is_simply_absent() {
    let server = HttpFixture::always(
        "",
        Reply::ok(format!("[{}]", ticker("BTCUSDT", "42000", 1))),
    )
    .await;
    let src = source(&settings(&[("BINANCE_BASE_URL", &server.base)]));
    let quotes = src.quotes(&[0, 1], now_ms()).await.expect("quotes");
    assert_eq!(quotes.iter().map(|q| q.symbol).collect::<Vec<_>>(), [0]);
}

#[tokio::test]
async fn an_invalid_symbol_is_found_once_and_left_out() {
    let server = HttpFixture::start("", |req| {
        let symbols = req.q("symbols").unwrap_or_default().to_string();
        if symbols.contains("ETHUSDT") {
            Reply::json(400, INVALID)
        } else {
            Reply::ok(format!(
                "[{}]",
                ticker("BTCUSDT", "42000", 1_705_329_000_000)
            ))
        }
    })
    .await;
    let src = source(&settings(&[("BINANCE_BASE_URL", &server.base)]));
    let quotes = src.quotes(&[0, 1], now_ms()).await.expect("quotes");
    assert_eq!(quotes.iter().map(|q| q.symbol).collect::<Vec<_>>(), [0]);
    let asked = server.requests().len();
    assert_eq!(asked, 3, "the batch, then each symbol once");
    let quotes = src.quotes(&[0, 1], now_ms()).await.expect("quotes");
    assert_eq!(quotes.len(), 1);
    assert_eq!(
        server.requests().len(),
        asked + 1,
        "the invalid symbol is not asked again"
    );
    assert_eq!(
        server.requests()[asked].q("symbols"),
        Some(r#"["BTCUSDT"]"#)
    );
}

#[tokio::test]
async fn quote_errors() {
    let cases = [
        ("unknown symbol", Reply::json(400, INVALID), Expect::Unknown),
        ("empty result", Reply::ok("[]"), Expect::Malformed),
        (
            "weight exceeded",
            Reply::json(429, r#"{"code":-1003,"msg":"Too many requests; current limit is 6000 request weight per 1 MINUTE."}"#)
                .header("Retry-After", "7"),
            Expect::RateLimited(Some(Duration::from_secs(7))),
        ),
        (
            "IP banned",
            Reply::json(418, r#"{"code":-1003,"msg":"Way too many requests; IP banned until 1705330000000."}"#)
                .header("Retry-After", "120"),
            Expect::RateLimited(Some(Duration::from_secs(120))),
        ),
        ("server error", Reply::text(502, "Bad Gateway"), Expect::Http(502)),
        ("unknown error code", Reply::json(400, r#"{"code":-1100,"msg":"Illegal characters found in parameter"}"#), Expect::Http(400)),
        ("malformed JSON", Reply::ok(r#"[{"symbol":"BTCUSDT","lastPrice":"#), Expect::Malformed),
        ("price not a number", Reply::ok(format!("[{}]", ticker("BTCUSDT", "n/a", 1))), Expect::Malformed),
        ("timeout", too_slow("[]"), Expect::Timeout),
    ];
    for (case, reply, expect) in cases {
        if case == "empty result" {
            // An empty list is not an error: nothing was answered, so nothing is returned.
            let server = HttpFixture::always("", reply).await;
            let src = source(&settings(&[("BINANCE_BASE_URL", &server.base)]));
            assert!(
                src.quotes(&[0], now_ms()).await.expect(case).is_empty(),
                "{case}"
            );
            continue;
        }
        quote_error_case(source, "BINANCE_BASE_URL", "", reply, expect, case).await;
    }
    // Non-crypto symbols are not served: no request at all.
    let src = source(&settings(&[]));
    let err = src.quotes(&[2, 3], now_ms()).await.expect_err("not crypto");
    assert_eq!(err.kind(), barkeep::sources::ErrorKind::NotServed);
}

fn kline(open_ms: i64, close: &str) -> String {
    format!(
        r#"[{open_ms},"1.00000000","{close}","0.50000000","{close}","10.50000000",{},"12.0",3,"1.0","1.0","0"]"#,
        open_ms + 59_999
    )
}

#[tokio::test]
async fn klines_are_parsed_sorted_and_the_open_kline_dropped() {
    // Not in a minute's last seconds: the open kline must still be open when it is parsed.
    let into_minute = now_ms().rem_euclid(60_000);
    if into_minute > 55_000 {
        tokio::time::sleep(std::time::Duration::from_millis(
            (60_100 - into_minute) as u64,
        ))
        .await;
    }
    let now = now_ms();
    let minute = now - now.rem_euclid(60_000);
    let rows = [
        kline(minute - 120_000, "2.0"),
        kline(minute - 180_000, "1.5"),
        kline(minute - 60_000, "2.5"),
        kline(minute, "3.0"), // still open
    ];
    let server = HttpFixture::always("", Reply::ok(format!("[{}]", rows.join(",")))).await;
    let src = source(&settings(&[("BINANCE_BASE_URL", &server.base)]));
    let bars = src
        .history(0, tf("1m"), minute - 180_000, now + 60_000)
        .await
        .expect("history");
    assert_sorted_unique(&bars);
    assert_eq!(
        bars.iter().map(|b| b.close).collect::<Vec<_>>(),
        [1.5, 2.0, 2.5]
    );
    assert_eq!(bars[0].volume, 10.5);
    let seen = server.requests();
    assert_eq!(seen[0].path, "/api/v3/klines");
    assert_eq!(
        (seen[0].q("symbol"), seen[0].q("interval")),
        (Some("BTCUSDT"), Some("1m"))
    );
    assert_eq!(
        seen[0].q("startTime"),
        Some((minute - 180_000).to_string().as_str())
    );
}

#[tokio::test]
async fn klines_page_until_the_range_is_covered() {
    let start = utc("2024-01-15 00:00");
    let server = HttpFixture::start("", move |req| {
        let from: i64 = req.q("startTime").and_then(|s| s.parse().ok()).unwrap_or(0);
        let end: i64 = req.q("endTime").and_then(|s| s.parse().ok()).unwrap_or(0);
        let limit: i64 = req.q("limit").and_then(|s| s.parse().ok()).unwrap_or(500);
        let rows: Vec<String> = (0..limit)
            .map(|i| from + i * 60_000)
            .take_while(|t| *t <= end)
            .map(|t| kline(t, "2.0"))
            .collect();
        Reply::ok(format!("[{}]", rows.join(",")))
    })
    .await;
    let src = source(&settings(&[("BINANCE_BASE_URL", &server.base)]));
    let to = start + 2_500 * 60_000;
    let bars = src.history(0, tf("1m"), start, to).await.expect("history");
    assert_eq!(bars.len(), 2_500);
    assert_sorted_unique(&bars);
    assert_eq!(server.requests().len(), 3);
    // 5-minute bars come from 5m klines, 10-minute bars from 5m klines aggregated.
    let bars = src
        .history(0, tf("10m"), start, start + 3_600_000)
        .await
        .expect("history");
    assert_eq!(bars.len(), 6);
    assert_eq!(bars[0].volume, 21.0);
    assert_eq!(
        server
            .requests()
            .last()
            .and_then(|r| r.q("interval").map(str::to_string))
            .as_deref(),
        Some("5m")
    );
}

#[tokio::test]
async fn history_errors() {
    let cases = [
        ("unknown symbol", Reply::json(400, INVALID), Expect::Unknown),
        (
            "short row",
            Reply::ok("[[1705329000000,\"1\"]]"),
            Expect::Malformed,
        ),
        (
            "text time",
            Reply::ok(r#"[["x","1","1","1","1","1",1,"1",1,"1","1","0"]]"#),
            Expect::Malformed,
        ),
        (
            "rate limited",
            Reply::json(429, r#"{"code":-1003,"msg":"Too many requests"}"#)
                .header("Retry-After", "3"),
            Expect::RateLimited(Some(Duration::from_secs(3))),
        ),
        ("timeout", too_slow("[]"), Expect::Timeout),
    ];
    for (case, reply, expect) in cases {
        history_error_case(source, "BINANCE_BASE_URL", "", reply, expect, case).await;
    }
    let server = HttpFixture::always("", Reply::ok("[]")).await;
    let src = source(&settings(&[("BINANCE_BASE_URL", &server.base)]));
    let from = utc("2024-01-15 14:30");
    let bars = src
        .history(0, tf("1m"), from, from + 600_000)
        .await
        .expect("empty");
    assert!(bars.is_empty());
    let odd = barkeep::model::Timeframe::from_ms(1_500).expect("timeframe");
    let err = src
        .history(0, odd, from, from + 600_000)
        .await
        .expect_err("no such interval");
    assert!(
        matches!(err, barkeep::sources::SourceError::Unsupported { .. }),
        "{err:?}"
    );
}

/// Minute klines for whatever `startTime`..`endTime` is asked, alternating 100.0 / 100.1, except
/// the row at `bad`, a well-formed bar at 150 (a spike), and the one an hour before it, whose
/// high is below its low. Nothing before `floor` (how far back the exchange keeps them).
fn klines_for(seen: &crate::fixture::Seen, bad: i64, floor: i64) -> Reply {
    let arg = |name: &str| seen.q(name).and_then(|v| v.parse::<i64>().ok());
    let (Some(start), Some(end)) = (arg("startTime"), arg("endTime")) else {
        return Reply::json(
            400,
            r#"{"code":-1102,"msg":"Mandatory parameter was not sent."}"#,
        );
    };
    let limit = arg("limit").unwrap_or(500);
    let rows: Vec<String> = (0..limit)
        .map(|i| start + i * 60_000)
        .take_while(|&ts| ts <= end)
        .filter(|&ts| ts >= floor)
        .map(|ts| {
            if ts == bad - 3_600_000 {
                return format!(
                    r#"[{ts},"100.0","99.0","101.0","100.0","1.5",{},"150.0",3,"1.0","100.0","0"]"#,
                    ts + 59_999
                );
            }
            let price = match ts {
                _ if ts == bad => "150.0",
                _ if ts.div_euclid(60_000) % 2 == 0 => "100.0",
                _ => "100.1",
            };
            format!(
                r#"[{ts},"{price}","{price}","{price}","{price}","1.5",{},"150.0",3,"1.0","100.0","0"]"#,
                ts + 59_999
            )
        })
        .collect();
    Reply::ok(format!("[{}]", rows.join(",")))
}

#[tokio::test]
async fn bootstrap_stores_history_keeps_rejected_rows_and_respects_the_daily_quota() {
    let minute = now_ms() - now_ms().rem_euclid(60_000);
    let bad = minute - 30 * 60_000;
    let server = HttpFixture::start("", move |seen| klines_for(seen, bad, i64::MIN)).await;
    let run = |db: std::path::PathBuf, per_day: &'static str| {
        let base = server.base.clone();
        async move {
            let config = barkeep::config::Config::from_lookup(|name| {
                Some(match name {
                    "SQLITE_PATH" => db.to_str()?.to_string(),
                    "SYMBOLS" => "BTCUSD".into(),
                    "SOURCES" => "binance".into(),
                    "TIMEFRAMES" => "1m".into(),
                    "HISTORY_DAYS" => "1".into(),
                    "BINANCE_BASE_URL" => base.clone(),
                    "BINANCE_RATE_PER_MINUTE" => "none".into(),
                    "BINANCE_RATE_PER_DAY" => per_day.into(),
                    _ => return None,
                })
            })
            .expect("config");
            let symbols = barkeep::model::SymbolTable::new(&config.symbols);
            let sources =
                barkeep::bootstrap::own_chain(&config, barkeep::sources::build(&config, &symbols));
            let store = barkeep::store::history::History::Sqlite(std::sync::Arc::new(
                barkeep::store::sqlite::SqliteStore::open(&db, symbols.clone()).expect("db"),
            ));
            let stats = barkeep::bootstrap::bootstrap(
                &config,
                &symbols,
                &sources,
                &store,
                minute + 1_000,
                false,
                || {},
            )
            .await
            .expect("bootstrap");
            (stats, store)
        }
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (stats, store) = run(dir.path().join("a.db"), "none").await;
    assert_eq!(stats.failed_windows, 0);
    assert_eq!(stats.rejected, 2, "{stats:?}");
    assert_eq!(
        stats.stored,
        1_440 - 2,
        "a day of minutes but the two bad ones"
    );
    assert_eq!(store.count("bars").await.expect("count"), 1_438);
    let conn = rusqlite::Connection::open(dir.path().join("a.db")).expect("open");
    let mut reasons: Vec<String> = conn
        .prepare("SELECT reason FROM rejects")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .map(|r| r.expect("row"))
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        ["ohlc_inconsistent", "spike"],
        "kept for inspection"
    );

    // One request a day: the first window is fetched, the second is not asked at all.
    let asked = server.requests().len();
    let (stats, store) = run(dir.path().join("b.db"), "1").await;
    assert_eq!(
        server.requests().len() - asked,
        1,
        "one request within the quota"
    );
    // The newest 1 000 minutes came (the two bad ones among them rejected), the rest is for
    // tomorrow.
    assert_eq!((stats.stored, stats.failed_windows), (998, 1), "{stats:?}");
    assert_eq!(store.count("bars").await.expect("count"), 998);
}

#[tokio::test]
async fn the_past_is_not_asked_for_beyond_what_the_exchange_keeps() {
    let minute = now_ms() - now_ms().rem_euclid(60_000);
    let floor = minute - 86_400_000;
    let server = HttpFixture::start("", move |seen| klines_for(seen, 0, floor)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("b.db");
    let base = server.base.clone();
    let config = barkeep::config::Config::from_lookup(|name| {
        Some(match name {
            "SQLITE_PATH" => db.to_str()?.to_string(),
            "SYMBOLS" => "BTCUSD".into(),
            "SOURCES" => "binance".into(),
            "TIMEFRAMES" => "1m".into(),
            "HISTORY_DAYS" => "30".into(),
            "BINANCE_BASE_URL" => base.clone(),
            "BINANCE_RATE_PER_MINUTE" => "none".into(),
            _ => return None,
        })
    })
    .expect("config");
    let symbols = barkeep::model::SymbolTable::new(&config.symbols);
    let sources =
        barkeep::bootstrap::own_chain(&config, barkeep::sources::build(&config, &symbols));
    let store = barkeep::store::history::History::Sqlite(std::sync::Arc::new(
        barkeep::store::sqlite::SqliteStore::open(&db, symbols.clone()).expect("db"),
    ));
    let stats = barkeep::bootstrap::bootstrap(
        &config,
        &symbols,
        &sources,
        &store,
        minute + 1_000,
        false,
        || {},
    )
    .await
    .expect("bootstrap");
    assert_eq!(stats.stored, 1_440, "the day the exchange keeps: {stats:?}");
    // 30 days are 44 windows of 1 000 minutes; after a week of empty answers the rest is
    // skipped: 2 with data, 11 empty (7 days), 31 never asked.
    let asked = server.requests().len();
    assert_eq!(asked, 13, "{stats:?}");
    assert_eq!(stats.skipped_windows, 44 - 13, "{stats:?}");
    assert_eq!(stats.failed_windows, 0, "empty is not a failure");
}
