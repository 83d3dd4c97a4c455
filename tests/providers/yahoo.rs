//! Yahoo chart API.

use barkeep::sources::Source;
use barkeep::sources::yahoo::YahooSource;

use crate::fixture::{HttpFixture, Reply};
use crate::{
    Expect, assert_sorted_unique, history_error_case, now_ms, quote_error_case, settings, symbols,
    tf, too_slow, utc,
};

fn source(s: &barkeep::sources::settings::ProviderSettings) -> YahooSource {
    YahooSource::new(&symbols(&["NAS100", "EURUSD"]), s).expect("source")
}

/// A chart answer with the given price and volume JSON values and extra result keys.
fn chart_with(price: &str, volume: &str, rows: &str) -> String {
    format!(
        r#"{{"chart":{{"result":[{{"meta":{{"currency":"USD","symbol":"^NDX","exchangeTimezoneName":"America/New_York","regularMarketPrice":{price},"regularMarketTime":1705350600,"regularMarketVolume":{volume},"gmtoffset":-18000,"dataGranularity":"1m","range":"1d"}}{rows}}}],"error":null}}}}"#
    )
}

fn chart_rows(rows: &str) -> String {
    chart_with("17803.5", "1200000", rows)
}

const NOT_FOUND: &str = r#"{"chart":{"result":null,"error":{"code":"Not Found","description":"No data found, symbol may be delisted"}}}"#;

#[tokio::test]
async fn quote_success_maps_symbol_and_differences_volume() {
    let volume = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1_000_000));
    let server = {
        let volume = std::sync::Arc::clone(&volume);
        HttpFixture::start("", move |_| {
            let v = volume.fetch_add(2_500, std::sync::atomic::Ordering::SeqCst);
            Reply::ok(chart_with("17803.5", &v.to_string(), ""))
        })
        .await
    };
    let src = source(&settings(&[("YAHOO_BASE_URL", &server.base)]));
    let first = src.quotes(&[0], now_ms()).await.expect("quote");
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].symbol, 0);
    assert_eq!(first[0].price, 17803.5);
    assert_eq!(first[0].ts, 1_705_350_600_000);
    assert_eq!(first[0].volume, 0.0, "first quote has no previous volume");
    let second = src.quotes(&[0], now_ms()).await.expect("quote");
    assert_eq!(second[0].volume, 2_500.0);
    let seen = server.requests();
    assert_eq!(seen[0].path, "/v8/finance/chart/%5ENDX");
    assert_eq!(seen[0].q("interval"), Some("1d"));
}

#[tokio::test]
async fn quote_errors() {
    let cases = [
        (
            "unknown symbol (404)",
            Reply::json(404, NOT_FOUND),
            Expect::Unknown,
        ),
        (
            "unknown symbol (200)",
            Reply::ok(NOT_FOUND),
            Expect::Unknown,
        ),
        (
            "empty result",
            Reply::ok(r#"{"chart":{"result":[],"error":null}}"#),
            Expect::Unknown,
        ),
        (
            "rate limit, plain text",
            Reply::text(429, "Too Many Requests").header("retry-after", "30"),
            Expect::RateLimited(Some(std::time::Duration::from_secs(30))),
        ),
        (
            "rate limit, no Retry-After",
            Reply::text(429, "Too Many Requests"),
            Expect::RateLimited(None),
        ),
        (
            "crumb refused",
            Reply::json(
                401,
                r#"{"finance":{"result":null,"error":{"code":"Unauthorized","description":"Invalid Crumb"}}}"#,
            ),
            Expect::Unauthorized,
        ),
        (
            "outage page",
            Reply::text(503, "<html><body>Will be right back</body></html>"),
            Expect::Http(503),
        ),
        (
            "server error",
            Reply::json(
                500,
                r#"{"chart":{"result":null,"error":{"code":"Internal Server Error","description":"x"}}}"#,
            ),
            Expect::Http(500),
        ),
        (
            "malformed JSON",
            Reply::ok(r#"{"chart":{"result":[{"meta":"#),
            Expect::Malformed,
        ),
        (
            "price as text",
            Reply::ok(chart_with(r#""abc""#, "1", "")),
            Expect::Malformed,
        ),
        (
            "no price",
            Reply::ok(r#"{"chart":{"result":[{"meta":{"symbol":"^NDX"}}],"error":null}}"#),
            Expect::Malformed,
        ),
        ("timeout", too_slow(&chart_rows("")), Expect::Timeout),
    ];
    for (case, reply, expect) in cases {
        quote_error_case(source, "YAHOO_BASE_URL", "", reply, expect, case).await;
    }
}

#[tokio::test]
async fn unsupported_symbol_is_not_a_failure() {
    // Yahoo serves every class; the map can still switch a symbol off.
    let s = settings(&[("SYMBOL_MAP", "yahoo:EURUSD=-")]);
    let src = source(&s);
    assert!(src.supports(0) && !src.supports(1));
    let err = src.quotes(&[1], now_ms()).await.expect_err("not served");
    assert_eq!(err.kind(), barkeep::sources::ErrorKind::NotServed);
}

#[tokio::test]
async fn history_sorts_skips_nulls_and_drops_off_grid_rows() {
    let t0 = utc("2024-01-15 14:30") / 1_000;
    // Unsorted, a null row, a duplicate minute (the later one wins), an off-grid live row.
    let rows = format!(
        r#","timestamp":[{t2},{t0},{t1},{t3},{t1},{live}],"indicators":{{"quote":[{{"open":[3.0,1.0,2.0,null,2.1,9.0],"high":[3.5,1.5,2.5,null,2.6,9.0],"low":[2.5,0.5,1.5,null,1.6,9.0],"close":[3.2,1.2,2.2,null,2.3,9.0],"volume":[30,10,null,null,21,5]}}]}}"#,
        t1 = t0 + 60,
        t2 = t0 + 120,
        t3 = t0 + 180,
        live = t0 + 150,
    );
    let server = HttpFixture::always("", Reply::ok(chart_rows(&rows))).await;
    let src = source(&settings(&[("YAHOO_BASE_URL", &server.base)]));
    let from = t0 * 1_000;
    let bars = src
        .history(0, tf("1m"), from, from + 10 * 60_000)
        .await
        .expect("history");
    assert_sorted_unique(&bars);
    let summary: Vec<(i64, f64, f64)> = bars
        .iter()
        .map(|b| ((b.ts - from) / 60_000, b.close, b.volume))
        .collect();
    assert_eq!(summary, [(0, 1.2, 10.0), (1, 2.3, 21.0), (2, 3.2, 30.0)]);
    let seen = server.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].q("interval"), Some("1m"));
    assert_eq!(seen[0].q("period1"), Some(t0.to_string().as_str()));
}

#[tokio::test]
async fn history_drops_the_forming_bar() {
    let now = now_ms();
    let minute = now - now.rem_euclid(60_000);
    let (a, b) = ((minute - 120_000) / 1_000, (minute - 60_000) / 1_000);
    let live = minute / 1_000;
    let rows = format!(
        r#","timestamp":[{a},{b},{live}],"indicators":{{"quote":[{{"open":[1,2,3],"high":[1,2,3],"low":[1,2,3],"close":[1,2,3],"volume":[1,2,3]}}]}}"#
    );
    let server = HttpFixture::always("", Reply::ok(chart_rows(&rows))).await;
    let src = source(&settings(&[("YAHOO_BASE_URL", &server.base)]));
    let bars = src
        .history(0, tf("1m"), minute - 300_000, now + 60_000)
        .await
        .expect("history");
    assert_eq!(bars.iter().map(|b| b.close).collect::<Vec<_>>(), [1.0, 2.0]);
}

#[tokio::test]
async fn daily_bars_move_to_utc_midnight_of_the_exchange_date() {
    // Daily rows are stamped at the New York open (14:30 UTC in winter).
    let d1 = utc("2024-01-16 14:30") / 1_000;
    let d0 = utc("2024-01-15 14:30") / 1_000;
    let rows = format!(
        r#","timestamp":[{d1},{d0}],"indicators":{{"quote":[{{"open":[2,1],"high":[2,1],"low":[2,1],"close":[2,1],"volume":[0,0]}}]}},"adjclose":[{{"adjclose":[2,1]}}]"#
    );
    let server = HttpFixture::always("", Reply::ok(chart_rows(&rows))).await;
    let src = source(&settings(&[("YAHOO_BASE_URL", &server.base)]));
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
    assert_eq!(server.requests()[0].q("interval"), Some("1d"));
}

#[tokio::test]
async fn hour_bars_are_built_from_half_hours() {
    // US equities' 60m bars start at :30; barkeep's hours start at :00.
    let t = |s: &str| utc(s) / 1_000;
    let rows = format!(
        r#","timestamp":[{},{},{}],"indicators":{{"quote":[{{"open":[10,11,12],"high":[10.5,11.5,12.5],"low":[9.5,10.5,11.5],"close":[10.2,11.2,12.2],"volume":[1,2,3]}}]}}"#,
        t("2024-01-15 14:30"),
        t("2024-01-15 15:00"),
        t("2024-01-15 15:30"),
    );
    let server = HttpFixture::always("", Reply::ok(chart_rows(&rows))).await;
    let src = source(&settings(&[("YAHOO_BASE_URL", &server.base)]));
    let bars = src
        .history(
            0,
            tf("1h"),
            utc("2024-01-15 14:00"),
            utc("2024-01-15 16:00"),
        )
        .await
        .expect("history");
    assert_eq!(server.requests()[0].q("interval"), Some("30m"));
    assert_eq!(bars.len(), 2);
    assert_eq!(
        (bars[0].ts, bars[0].open, bars[0].close, bars[0].volume),
        (utc("2024-01-15 14:00"), 10.0, 10.2, 1.0)
    );
    assert_eq!(
        (
            bars[1].open,
            bars[1].high,
            bars[1].low,
            bars[1].close,
            bars[1].volume
        ),
        (11.0, 12.5, 10.5, 12.2, 5.0)
    );
}

#[tokio::test]
async fn history_empty_and_errors() {
    let server = HttpFixture::always("", Reply::ok(chart_rows(""))).await; // no timestamp key
    let src = source(&settings(&[("YAHOO_BASE_URL", &server.base)]));
    let from = utc("2024-01-15 14:30");
    assert!(
        src.history(0, tf("1m"), from, from + 600_000)
            .await
            .expect("empty")
            .is_empty()
    );

    let cases = [
        (
            "columns of different lengths",
            Reply::ok(chart_rows(
                r#","timestamp":[1705329000,1705329060],"indicators":{"quote":[{"open":[1],"high":[1],"low":[1],"close":[1],"volume":[1]}]}"#,
            )),
            Expect::Malformed,
        ),
        (
            "range too wide",
            Reply::json(
                422,
                r#"{"chart":{"result":null,"error":{"code":"Unprocessable Entity","description":"1m data not available for startTime=1 and endTime=2. Only 7 days worth of 1m granularity data are allowed to be fetched per request."}}}"#,
            ),
            Expect::Http(422),
        ),
        (
            "unknown symbol",
            Reply::json(404, NOT_FOUND),
            Expect::Unknown,
        ),
    ];
    for (case, reply, expect) in cases {
        history_error_case(source, "YAHOO_BASE_URL", "", reply, expect, case).await;
    }
}

#[tokio::test]
async fn an_impossible_row_is_left_for_the_validator_and_the_others_are_kept() {
    // 14:30 is fine, 14:31 has its high below its low.
    let body = chart_rows(
        r#","timestamp":[1705329000,1705329060],"indicators":{"quote":[{"open":[1,1],"high":[1,0.5],"low":[1,2],"close":[1,1],"volume":[1,1]}]}"#,
    );
    let server = HttpFixture::always("", Reply::ok(body)).await;
    let src = source(&settings(&[("YAHOO_BASE_URL", &server.base)]));
    let from = utc("2024-01-15 14:30");
    let bars = src
        .history(0, tf("1m"), from, from + 10 * 60_000)
        .await
        .expect("the answer is kept");
    assert_eq!(bars.len(), 2, "{bars:?}");
    assert_eq!(
        (bars[1].high, bars[1].low),
        (0.5, 2.0),
        "passed on as it came"
    );
    // Hour bars are built from half hours: there the row would hide inside a bar that looks
    // right, so the answer is refused.
    let halves = chart_rows(
        r#","timestamp":[1705329000,1705330800],"indicators":{"quote":[{"open":[1,1],"high":[1,0.5],"low":[1,2],"close":[1,1],"volume":[1,1]}]}"#,
    );
    let server = HttpFixture::always("", Reply::ok(halves)).await;
    let src = source(&settings(&[("YAHOO_BASE_URL", &server.base)]));
    let hour = utc("2024-01-15 14:00");
    let err = src
        .history(0, tf("1h"), hour, hour + 3 * 3_600_000)
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), barkeep::sources::ErrorKind::Failure, "{err}");
}
