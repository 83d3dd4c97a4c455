//! Alpha Vantage.

use std::time::Duration;

use barkeep::sources::Source;
use barkeep::sources::alphavantage::AlphaVantageSource;
use barkeep::sources::alphavantage::parse::{Zone, new_york_to_utc_ms};
use barkeep::sources::settings::ProviderSettings;

use crate::fixture::{HttpFixture, Reply};
use crate::{
    Expect, KEY, assert_sorted_unique, check, history_error_case, now_ms, quote_error_case,
    settings, symbols, tf, too_slow, utc,
};

fn source(s: &ProviderSettings) -> AlphaVantageSource {
    AlphaVantageSource::new(&symbols(&["MSFT", "EURUSD", "BTCUSD", "NAS100"]), s).expect("source")
}

fn global_quote(price: &str, volume: &str, day: &str) -> String {
    format!(
        r#"{{"Global Quote":{{"01. symbol":"MSFT","02. open":"112.6300","03. high":"113.1700","04. low":"110.6400","05. price":"{price}","06. volume":"{volume}","07. latest trading day":"{day}","08. previous close":"112.7900","09. change":"-0.6600","10. change percent":"-0.5852%"}}}}"#
    )
}

const RATE: &str = r#"{"Information":"Thank you for using Alpha Vantage! Our standard API rate limit is 25 requests per day. Please subscribe to any of the premium plans at https://www.alphavantage.co/premium/ to instantly remove all daily rate limits."}"#;
const OLD_RATE: &str = r#"{"Note":"Thank you for using Alpha Vantage! Our standard API call frequency is 5 calls per minute and 500 calls per day. Please visit https://www.alphavantage.co/premium/ if you would like to target a higher API call frequency."}"#;
const BAD_KEY: &str = r#"{"Error Message":"the parameter apikey is invalid or missing. Please claim your free API key on (https://www.alphavantage.co/support/#api-key). It should take less than 20 seconds."}"#;
const INVALID_CALL: &str = r#"{"Error Message":"Invalid API call. Please retry or visit the documentation (https://www.alphavantage.co/documentation/) for GLOBAL_QUOTE."}"#;

#[tokio::test]
async fn global_quote_for_equities_exchange_rate_for_pairs() {
    let server = HttpFixture::start("", |req| match req.q("function") {
        Some("GLOBAL_QUOTE") => Reply::ok(global_quote("112.1300", "29062853", "2018-10-05")),
        Some("CURRENCY_EXCHANGE_RATE") => Reply::ok(
            r#"{"Realtime Currency Exchange Rate":{"1. From_Currency Code":"EUR","2. From_Currency Name":"Euro","3. To_Currency Code":"USD","4. To_Currency Name":"United States Dollar","5. Exchange Rate":"1.09500000","6. Last Refreshed":"2024-01-15 16:00:01","7. Time Zone":"UTC","8. Bid Price":"1.09490000","9. Ask Price":"1.09510000"}}"#,
        ),
        _ => Reply::ok(INVALID_CALL),
    })
    .await;
    let src = source(&settings(&[("ALPHAVANTAGE_BASE_URL", &server.base)]));
    assert!(!src.supports(3), "no indices on Alpha Vantage");
    let mut quotes = src.quotes(&[0, 1], now_ms()).await.expect("quotes");
    quotes.sort_by_key(|q| q.symbol);
    // A past trading day is stamped at its 16:00 New York close (20:00 UTC in October).
    assert_eq!(
        (quotes[0].price, quotes[0].ts),
        (112.13, utc("2018-10-05 20:00"))
    );
    assert_eq!(
        (quotes[1].price, quotes[1].ts),
        (1.095, utc("2024-01-15 16:00") + 1_000)
    );
    for r in server.requests() {
        assert_eq!(r.path, "/query");
        assert_eq!(
            r.q("apikey"),
            Some(KEY),
            "Alpha Vantage takes the key only in the query"
        );
    }
    let fx = server
        .requests()
        .into_iter()
        .find(|r| r.q("function") == Some("CURRENCY_EXCHANGE_RATE"))
        .expect("fx");
    assert_eq!(
        (fx.q("from_currency"), fx.q("to_currency")),
        (Some("EUR"), Some("USD"))
    );
}

#[tokio::test]
async fn todays_quote_is_stamped_now_until_the_close() {
    let now = now_ms();
    let ny_day = chrono::DateTime::from_timestamp_millis(now - 5 * 3_600_000)
        .expect("now")
        .format("%Y-%m-%d")
        .to_string();
    let server = HttpFixture::always("", Reply::ok(global_quote("100", "1", &ny_day))).await;
    let src = source(&settings(&[("ALPHAVANTAGE_BASE_URL", &server.base)]));
    let q = src.quotes(&[0], now).await.expect("quote");
    assert!(
        q[0].ts <= now_ms() && q[0].ts >= now - 24 * 3_600_000,
        "{} vs {now}",
        q[0].ts
    );
}

#[tokio::test]
async fn quote_errors_all_come_with_http_200() {
    let cases = [
        (
            "unknown symbol: empty quote",
            Reply::ok(r#"{"Global Quote": {}}"#),
            Expect::Unknown,
        ),
        ("invalid call", Reply::ok(INVALID_CALL), Expect::Unknown),
        ("bad key", Reply::ok(BAD_KEY), Expect::Unauthorized),
        (
            "premium",
            Reply::ok(
                r#"{"Information":"Thank you for using Alpha Vantage! This is a premium endpoint. You may subscribe to any of the premium plans at https://www.alphavantage.co/premium/ to instantly unlock all premium endpoints"}"#,
            ),
            Expect::Unauthorized,
        ),
        ("daily limit", Reply::ok(RATE), Expect::RateLimitedSome),
        (
            "minute limit (older text)",
            Reply::ok(OLD_RATE),
            Expect::RateLimited(Some(Duration::from_secs(60))),
        ),
        (
            "server error",
            Reply::text(503, "Service Unavailable"),
            Expect::Http(503),
        ),
        (
            "malformed JSON",
            Reply::ok(r#"{"Global Quote":{"05. price":"#),
            Expect::Malformed,
        ),
        (
            "price as word",
            Reply::ok(global_quote("n/a", "1", "2024-01-15")),
            Expect::Malformed,
        ),
        (
            "bad date",
            Reply::ok(global_quote("1", "1", "15.01.2024")),
            Expect::Malformed,
        ),
        ("array", Reply::ok("[]"), Expect::Malformed),
        (
            "timeout",
            too_slow(&global_quote("1", "1", "2024-01-15")),
            Expect::Timeout,
        ),
    ];
    for (case, reply, expect) in cases {
        quote_error_case(source, "ALPHAVANTAGE_BASE_URL", "", reply, expect, case).await;
    }
}

#[tokio::test]
async fn the_daily_limit_waits_for_utc_midnight() {
    let server = HttpFixture::always("", Reply::ok(RATE)).await;
    let src = source(&settings(&[("ALPHAVANTAGE_BASE_URL", &server.base)]));
    let err = src.quotes(&[0], now_ms()).await.expect_err("limited");
    check(&err, Expect::RateLimitedSome, "daily limit");
    let wait = err.retry_after().expect("wait");
    assert!(wait <= Duration::from_secs(86_400), "{wait:?}");
}

#[test]
fn new_york_time_follows_daylight_saving() {
    let t = |s: &str| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").expect("time");
    assert_eq!(
        new_york_to_utc_ms(t("2024-01-15 09:30")),
        utc("2024-01-15 14:30"),
        "EST"
    );
    assert_eq!(
        new_york_to_utc_ms(t("2024-07-15 09:30")),
        utc("2024-07-15 13:30"),
        "EDT"
    );
    // 2024: daylight time from March 10 02:00 to November 3 02:00.
    assert_eq!(
        new_york_to_utc_ms(t("2024-03-10 01:59")),
        utc("2024-03-10 06:59")
    );
    assert_eq!(
        new_york_to_utc_ms(t("2024-03-10 03:00")),
        utc("2024-03-10 07:00")
    );
    assert_eq!(
        new_york_to_utc_ms(t("2024-11-03 01:30")),
        utc("2024-11-03 05:30"),
        "first 01:30 is EDT"
    );
    assert_eq!(
        new_york_to_utc_ms(t("2024-11-03 02:00")),
        utc("2024-11-03 07:00")
    );
    // Before 2007: first Sunday of April to last Sunday of October.
    assert_eq!(
        new_york_to_utc_ms(t("2006-04-02 03:00")),
        utc("2006-04-02 07:00")
    );
    assert_eq!(
        new_york_to_utc_ms(t("2006-03-15 12:00")),
        utc("2006-03-15 17:00")
    );
    let summer = t("2024-07-15 09:30");
    for name in ["US/Eastern", " America/New_York ", "EST5EDT"] {
        let zone = Zone::parse(name).expect("New York");
        assert_eq!(zone.to_utc_ms(summer), utc("2024-07-15 13:30"), "{name}");
    }
    // A spring-forward gap reads with the offset before it: 02:30 EST = 07:30 UTC.
    assert_eq!(
        new_york_to_utc_ms(t("2024-03-10 02:30")),
        utc("2024-03-10 07:30")
    );
    let paris = Zone::parse("Europe/Paris").expect("IANA zone");
    assert_eq!(
        paris.to_utc_ms(t("2024-07-15 09:30")),
        utc("2024-07-15 07:30")
    );
    let utc_zone = Zone::parse("UTC").expect("UTC");
    assert_eq!(
        utc_zone.to_utc_ms(t("2024-07-15 09:30")),
        utc("2024-07-15 09:30")
    );
    assert!(Zone::parse("Mars/Olympus").is_err());
}

fn intraday(zone: &str, rows: &[(&str, &str)]) -> String {
    let rows: Vec<String> = rows
        .iter()
        .map(|(t, c)| format!(r#""{t}":{{"1. open":"{c}","2. high":"{c}","3. low":"{c}","4. close":"{c}","5. volume":"1234"}}"#))
        .collect();
    format!(
        r#"{{"Meta Data":{{"1. Information":"Intraday (1min) open, high, low, close prices and volume","2. Symbol":"MSFT","3. Last Refreshed":"2024-07-15 09:33:00","4. Interval":"1min","5. Output Size":"Compact","6. Time Zone":"{zone}"}},"Time Series (1min)":{{{}}}}}"#,
        rows.join(",")
    )
}

#[tokio::test]
async fn intraday_rows_are_local_new_york_time() {
    let body = intraday(
        "US/Eastern",
        &[
            ("2024-07-15 09:32:00", "3"),
            ("2024-07-15 09:30:00", "1"),
            ("2024-07-15 09:31:00", "2"),
        ],
    );
    let server = HttpFixture::always("", Reply::ok(body)).await;
    let src = source(&settings(&[("ALPHAVANTAGE_BASE_URL", &server.base)]));
    let from = utc("2024-07-15 13:30");
    let bars = src
        .history(0, tf("1m"), from, from + 600_000)
        .await
        .expect("history");
    assert_sorted_unique(&bars);
    assert_eq!(
        bars.iter().map(|b| (b.ts, b.close)).collect::<Vec<_>>(),
        [(from, 1.0), (from + 60_000, 2.0), (from + 120_000, 3.0)]
    );
    let seen = &server.requests()[0];
    assert_eq!(
        (
            seen.q("function"),
            seen.q("symbol"),
            seen.q("interval"),
            seen.q("outputsize")
        ),
        (
            Some("TIME_SERIES_INTRADAY"),
            Some("MSFT"),
            Some("1min"),
            Some("full")
        )
    );
}

#[tokio::test]
async fn fx_series_are_utc_without_volume() {
    let body = r#"{"Meta Data":{"1. Information":"FX Intraday (5min) Time Series","2. From Symbol":"EUR","3. To Symbol":"USD","4. Last Refreshed":"2024-01-15 14:40:00","5. Interval":"5min","6. Output Size":"Compact","7. Time Zone":"UTC"},"Time Series FX (5min)":{"2024-01-15 14:35:00":{"1. open":"1.0950","2. high":"1.0955","3. low":"1.0948","4. close":"1.0952"},"2024-01-15 14:30:00":{"1. open":"1.0945","2. high":"1.0951","3. low":"1.0944","4. close":"1.0950"}}}"#;
    let server = HttpFixture::always("", Reply::ok(body)).await;
    let src = source(&settings(&[("ALPHAVANTAGE_BASE_URL", &server.base)]));
    let from = utc("2024-01-15 14:30");
    let bars = src
        .history(1, tf("5m"), from, from + 600_000)
        .await
        .expect("history");
    assert_eq!(
        bars.iter().map(|b| (b.ts, b.volume)).collect::<Vec<_>>(),
        [(from, 0.0), (from + 300_000, 0.0)]
    );
    let seen = &server.requests()[0];
    assert_eq!(
        (
            seen.q("function"),
            seen.q("from_symbol"),
            seen.q("to_symbol")
        ),
        (Some("FX_INTRADAY"), Some("EUR"), Some("USD"))
    );
}

#[tokio::test]
async fn history_errors() {
    let cases = [
        ("daily limit", Reply::ok(RATE), Expect::RateLimitedSome),
        ("bad key", Reply::ok(BAD_KEY), Expect::Unauthorized),
        (
            "unknown symbol",
            Reply::ok(INVALID_CALL.replace("GLOBAL_QUOTE", "TIME_SERIES_INTRADAY")),
            Expect::Unknown,
        ),
        (
            "unknown zone",
            Reply::ok(intraday("Mars/Olympus", &[("2024-01-15 09:30:00", "1")])),
            Expect::Malformed,
        ),
        (
            "no series",
            Reply::ok(r#"{"Meta Data":{"6. Time Zone":"UTC"}}"#),
            Expect::Malformed,
        ),
        (
            "bad value",
            Reply::ok(intraday("UTC", &[("2024-01-15 14:30:00", "x")])),
            Expect::Malformed,
        ),
        ("timeout", too_slow(&intraday("UTC", &[])), Expect::Timeout),
    ];
    for (case, reply, expect) in cases {
        history_error_case(source, "ALPHAVANTAGE_BASE_URL", "", reply, expect, case).await;
    }
    let server = HttpFixture::always("", Reply::ok(intraday("UTC", &[]))).await;
    let src = source(&settings(&[("ALPHAVANTAGE_BASE_URL", &server.base)]));
    let from = utc("2024-01-15 14:30");
    assert!(
        src.history(0, tf("1m"), from, from + 600_000)
            .await
            .expect("empty")
            .is_empty()
    );
}

#[tokio::test]
async fn rows_in_any_iana_zone_are_read_in_that_zone() {
    let body = intraday("Asia/Tokyo", &[("2024-01-15 09:30:00", "5")]);
    let server = HttpFixture::always("", Reply::ok(body)).await;
    let src = source(&settings(&[("ALPHAVANTAGE_BASE_URL", &server.base)]));
    let from = utc("2024-01-15 00:00");
    let bars = src
        .history(0, tf("1m"), from, from + 3_600_000)
        .await
        .expect("bars");
    // 09:30 in Tokyo (UTC+9, no daylight time) is 00:30 UTC.
    assert_eq!(bars.len(), 1, "{bars:?}");
    assert_eq!(bars[0].ts, utc("2024-01-15 00:30"));
}
