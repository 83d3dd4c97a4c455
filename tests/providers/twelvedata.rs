//! Twelve Data REST.

use std::time::Duration;

use barkeep::sources::Source;
use barkeep::sources::settings::ProviderSettings;
use barkeep::sources::twelvedata::TwelveDataSource;

use crate::fixture::{HttpFixture, Reply};
use crate::{
    Expect, KEY, assert_sorted_unique, history_error_case, now_ms, quote_error_case, settings,
    symbols, tf, too_slow, utc,
};

fn source(s: &ProviderSettings) -> TwelveDataSource {
    TwelveDataSource::new(&symbols(&["AAPL", "EURUSD", "XAUUSD"]), s).expect("source")
}

fn quote(symbol: &str, close: &str, volume: &str) -> String {
    format!(
        r#"{{"symbol":"{symbol}","name":"x","exchange":"NASDAQ","mic_code":"XNGS","currency":"USD","datetime":"2024-01-15","timestamp":1705294800,"last_quote_at":1705350540,"open":"182.16","high":"186.40","low":"181.98","close":"{close}","volume":"{volume}","previous_close":"185.59","change":"0.33","percent_change":"0.18","average_volume":"59000000","is_market_open":false}}"#
    )
}

fn error(code: u16, message: &str) -> String {
    format!(r#"{{"code":{code},"message":"{message}","status":"error"}}"#)
}

#[tokio::test]
async fn one_symbol_answers_flat() {
    let server = HttpFixture::always("", Reply::ok(quote("AAPL", "185.92", "40444300"))).await;
    let src = source(&settings(&[("TWELVEDATA_BASE_URL", &server.base)]));
    let quotes = src.quotes(&[0], now_ms()).await.expect("quote");
    assert_eq!(
        (quotes[0].symbol, quotes[0].price, quotes[0].ts),
        (0, 185.92, 1_705_350_540_000)
    );
    let seen = server.requests();
    assert_eq!(seen[0].path, "/quote");
    assert_eq!(seen[0].q("symbol"), Some("AAPL"));
    assert_eq!(
        seen[0].headers.get("authorization").map(String::as_str),
        Some(format!("apikey {KEY}").as_str())
    );
    assert!(seen[0].q("apikey").is_none());
}

#[tokio::test]
async fn a_batch_is_keyed_by_symbol_and_per_symbol_errors_are_absent() {
    let volume = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(40_000_000));
    let server = {
        let volume = std::sync::Arc::clone(&volume);
        HttpFixture::start("", move |_| {
            let v = volume.fetch_add(1_000, std::sync::atomic::Ordering::SeqCst);
            Reply::ok(format!(
                r#"{{"AAPL":{},"EUR/USD":{},"XAU/USD":{}}}"#,
                quote("AAPL", "185.92", &v.to_string()),
                quote("EUR/USD", "1.0950", "0").replace(r#","volume":"0""#, ""),
                error(404, "**symbol** not found: XAU/USD. Please specify it correctly according to API Documentation.")
            ))
        })
        .await
    };
    let src = source(&settings(&[("TWELVEDATA_BASE_URL", &server.base)]));
    let mut quotes = src.quotes(&[0, 1, 2], now_ms()).await.expect("quotes");
    quotes.sort_by_key(|q| q.symbol);
    assert_eq!(
        quotes.iter().map(|q| q.symbol).collect::<Vec<_>>(),
        [0, 1],
        "XAU/USD errored on its own"
    );
    assert_eq!(quotes[1].price, 1.095);
    assert_eq!(
        server.requests()[0].q("symbol"),
        Some("AAPL,EUR/USD,XAU/USD")
    );
    let again = src.quotes(&[0, 1, 2], now_ms()).await.expect("quotes");
    let aapl = again.iter().find(|q| q.symbol == 0).expect("AAPL");
    assert_eq!(aapl.volume, 1_000.0, "cumulative day volume is differenced");
}

#[tokio::test]
async fn quote_errors() {
    let cases = [
        ("unknown symbol (200)", Reply::ok(error(404, "**symbol** not found: ZZZ. Please specify it correctly according to API Documentation.")), Expect::Unknown),
        ("unknown symbol (400)", Reply::json(400, error(400, "**symbol** parameter is missing or invalid.")), Expect::Unknown),
        ("bad key (200)", Reply::ok(error(401, "**apikey** parameter is incorrect or not specified.")), Expect::Unauthorized),
        ("bad key (401)", Reply::json(401, error(401, "**apikey** parameter is incorrect or not specified.")), Expect::Unauthorized),
        ("plan", Reply::ok(error(403, "This symbol is available starting with Grow.")), Expect::Unauthorized),
        (
            "credits, 429 with Retry-After",
            Reply::json(429, error(429, "You have run out of API credits for the current minute. 9 API credits were used, with the current limit being 8.")).header("Retry-After", "42"),
            Expect::RateLimited(Some(Duration::from_secs(42))),
        ),
        (
            "credits, in a 200",
            Reply::ok(error(429, "You have run out of API credits for the current minute. 9 API credits were used, with the current limit being 8. Wait for the next minute or consider switching to a higher tier plan.")),
            Expect::RateLimitedSome,
        ),
        ("daily credits", Reply::ok(error(429, "You have run out of API credits for the day.")), Expect::RateLimited(None)),
        ("server error", Reply::json(500, error(500, "Internal error")), Expect::Http(500)),
        ("gateway", Reply::text(502, "<html>bad gateway</html>"), Expect::Http(502)),
        ("malformed JSON", Reply::ok(r#"{"symbol":"AAPL","close":"#), Expect::Malformed),
        ("close not numeric", Reply::ok(quote("AAPL", "N/A", "1")), Expect::Malformed),
        ("timeout", too_slow(&quote("AAPL", "1", "1")), Expect::Timeout),
    ];
    for (case, reply, expect) in cases {
        quote_error_case(source, "TWELVEDATA_BASE_URL", "", reply, expect, case).await;
    }
}

#[tokio::test]
async fn the_minute_credit_limit_lifts_at_the_next_minute() {
    let server = HttpFixture::always(
        "",
        Reply::ok(error(
            429,
            "You have run out of API credits for the current minute.",
        )),
    )
    .await;
    let src = source(&settings(&[("TWELVEDATA_BASE_URL", &server.base)]));
    let err = src.quotes(&[0], now_ms()).await.expect_err("limited");
    let wait = err.retry_after().expect("retry_after");
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_secs(60),
        "{wait:?}"
    );
}

fn row(datetime: &str, close: &str) -> String {
    format!(
        r#"{{"datetime":"{datetime}","open":"{close}","high":"{close}","low":"{close}","close":"{close}","volume":"100"}}"#
    )
}

fn series(rows: &[String]) -> String {
    format!(
        r#"{{"meta":{{"symbol":"AAPL","interval":"1min","currency":"USD","exchange_timezone":"America/New_York","exchange":"NASDAQ","mic_code":"XNGS","type":"Common Stock"}},"values":[{}],"status":"ok"}}"#,
        rows.join(",")
    )
}

#[tokio::test]
async fn time_series_in_utc_sorted_with_the_live_row_dropped() {
    let now = now_ms();
    let minute = now - now.rem_euclid(60_000);
    let text = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .expect("time")
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    };
    // Newest first, as Twelve Data sends by default, with the forming minute on top.
    let rows = [
        row(&text(minute), "4.0"),
        row(&text(minute - 60_000), "3.0"),
        row(&text(minute - 120_000), "2.0"),
        row(&text(minute - 180_000), "1.0"),
    ];
    let server = HttpFixture::always("", Reply::ok(series(&rows))).await;
    let src = source(&settings(&[("TWELVEDATA_BASE_URL", &server.base)]));
    let bars = src
        .history(0, tf("1m"), minute - 180_000, now + 60_000)
        .await
        .expect("history");
    assert_sorted_unique(&bars);
    assert_eq!(
        bars.iter().map(|b| b.close).collect::<Vec<_>>(),
        [1.0, 2.0, 3.0]
    );
    assert_eq!(bars[0].ts, minute - 180_000);
    let seen = server.requests();
    assert_eq!(seen[0].path, "/time_series");
    assert_eq!(
        (
            seen[0].q("timezone"),
            seen[0].q("interval"),
            seen[0].q("order")
        ),
        (Some("UTC"), Some("1min"), Some("ASC"))
    );
    assert_eq!(
        seen[0].q("start_date"),
        Some(text(minute - 180_000).as_str())
    );
}

#[tokio::test]
async fn daily_values_are_dates() {
    let rows = [row("2024-01-16", "2"), row("2024-01-15", "1")];
    let server = HttpFixture::always("", Reply::ok(series(&rows))).await;
    let src = source(&settings(&[("TWELVEDATA_BASE_URL", &server.base)]));
    let bars = src
        .history(
            0,
            tf("1d"),
            utc("2024-01-15 00:00"),
            utc("2024-01-17 00:00"),
        )
        .await
        .expect("history");
    assert_eq!(
        bars.iter().map(|b| b.ts).collect::<Vec<_>>(),
        [utc("2024-01-15 00:00"), utc("2024-01-16 00:00")]
    );
    assert_eq!(server.requests()[0].q("interval"), Some("1day"));
}

#[tokio::test]
async fn history_empty_and_errors() {
    let server = HttpFixture::always(
        "",
        Reply::ok(error(
            400,
            "No data is available on the specified dates. Try setting different start/end dates.",
        )),
    )
    .await;
    let src = source(&settings(&[("TWELVEDATA_BASE_URL", &server.base)]));
    let from = utc("2024-01-15 14:30");
    assert!(
        src.history(0, tf("1m"), from, from + 600_000)
            .await
            .expect("no data")
            .is_empty()
    );
    let cases = [
        (
            "unknown symbol",
            Reply::json(404, error(404, "**symbol** not found: ZZZ.")),
            Expect::Unknown,
        ),
        (
            "bad datetime",
            Reply::ok(series(&[row("15/01/2024 14:30", "1")])),
            Expect::Malformed,
        ),
        (
            "value as word",
            Reply::ok(series(&[row("2024-01-15 14:30:00", "abc")])),
            Expect::Malformed,
        ),
        (
            "credits",
            Reply::ok(error(
                429,
                "You have run out of API credits for the current minute.",
            )),
            Expect::RateLimitedSome,
        ),
        ("timeout", too_slow(&series(&[])), Expect::Timeout),
    ];
    for (case, reply, expect) in cases {
        history_error_case(source, "TWELVEDATA_BASE_URL", "", reply, expect, case).await;
    }
}

#[tokio::test]
async fn a_request_carries_no_more_symbols_than_a_minute_of_credits() {
    let names: Vec<String> = (0..10).map(|i| format!("T{i}")).collect();
    let table = symbols(&names.iter().map(String::as_str).collect::<Vec<_>>());
    let server = HttpFixture::always("", Reply::ok(quote("T0", "1", "1"))).await;
    let free = TwelveDataSource::new(&table, &settings(&[("TWELVEDATA_BASE_URL", &server.base)]))
        .expect("source");
    assert_eq!(
        free.capabilities().max_batch,
        8,
        "8 credits a minute on the free tier"
    );
    let ids: Vec<u32> = (0..10).collect();
    let _ = free.quotes(&ids, now_ms()).await;
    let asked = server.requests()[0]
        .q("symbol")
        .map(|s| s.split(',').count());
    assert_eq!(asked, Some(8));
    let paid = TwelveDataSource::new(
        &table,
        &settings(&[
            ("TWELVEDATA_BASE_URL", &server.base),
            ("TWELVEDATA_RATE_PER_MINUTE", "610"),
        ]),
    )
    .expect("source");
    assert_eq!(paid.capabilities().max_batch, 120);
    let _ = paid.quotes(&ids, now_ms()).await;
    assert_eq!(
        server.requests()[1]
            .q("symbol")
            .map(|s| s.split(',').count()),
        Some(10)
    );
}

#[tokio::test]
async fn clock_skew_is_measured_from_the_date_header() {
    let body = quote("AAPL", "185.92", "40444300");
    let ahead = chrono::Duration::seconds(90);
    let server = HttpFixture::start("", move |_| {
        let date = (chrono::Utc::now() + ahead)
            .to_rfc2822()
            .replace("+0000", "GMT");
        Reply::ok(body.clone()).header("date", &date)
    })
    .await;
    let src = source(&settings(&[("TWELVEDATA_BASE_URL", &server.base)]));
    assert_eq!(
        src.clock_skew_ms(),
        None,
        "nothing measured before an answer"
    );
    for _ in 0..3 {
        src.quotes(&[0], now_ms()).await.expect("quote");
    }
    let skew = src.clock_skew_ms().expect("measured");
    // An HTTP date carries whole seconds: 90 s ahead reads as 89.5–90.5 s, plus the round trip.
    assert!((89_000..=91_000).contains(&skew), "skew {skew} ms");

    let honest = HttpFixture::always("", Reply::ok(quote("AAPL", "185.92", "1"))).await;
    let src = source(&settings(&[("TWELVEDATA_BASE_URL", &honest.base)]));
    src.quotes(&[0], now_ms()).await.expect("quote");
    let skew = src.clock_skew_ms().expect("hyper sends a Date header");
    assert!(skew.abs() <= 1_000, "skew {skew} ms against our own clock");
}
