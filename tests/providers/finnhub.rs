//! Finnhub REST.

use barkeep::sources::Source;
use barkeep::sources::finnhub::FinnhubSource;
use barkeep::sources::settings::ProviderSettings;

use crate::fixture::{HttpFixture, Reply};
use crate::{
    Expect, KEY, assert_sorted_unique, history_error_case, now_ms, quote_error_case, settings,
    symbols, tf, too_slow, utc,
};

fn source(s: &ProviderSettings) -> FinnhubSource {
    FinnhubSource::new(&symbols(&["AAPL", "EURUSD", "BTCUSD", "NAS100"]), s).expect("source")
}

const QUOTE: &str = r#"{"c":185.92,"d":-0.15,"dp":-0.0806,"h":186.4,"l":183.92,"o":184.35,"pc":186.07,"t":1705352400}"#;
const UNKNOWN: &str = r#"{"c":0,"d":null,"dp":null,"h":0,"l":0,"o":0,"pc":0,"t":0}"#;

#[tokio::test]
async fn quote_per_symbol_with_the_key_in_a_header() {
    let server = HttpFixture::always("/api/v1", Reply::ok(QUOTE)).await;
    let src = source(&settings(&[("FINNHUB_BASE_URL", &server.base)]));
    assert!(!src.supports(3), "no indices on Finnhub");
    let mut quotes = src.quotes(&[0, 1, 2], now_ms()).await.expect("quotes");
    quotes.sort_by_key(|q| q.symbol);
    assert_eq!(quotes.len(), 3);
    assert_eq!(
        (quotes[0].price, quotes[0].ts, quotes[0].volume),
        (185.92, 1_705_352_400_000, 0.0)
    );
    let mut asked: Vec<String> = server
        .requests()
        .iter()
        .filter_map(|r| r.q("symbol").map(str::to_string))
        .collect();
    asked.sort();
    assert_eq!(asked, ["AAPL", "BINANCE:BTCUSDT", "OANDA:EUR_USD"]);
    for r in server.requests() {
        assert_eq!(r.path, "/api/v1/quote");
        assert_eq!(
            r.headers.get("x-finnhub-token").map(String::as_str),
            Some(KEY)
        );
        assert!(r.q("token").is_none(), "the key stays out of the URL");
    }
}

#[tokio::test]
async fn one_failing_symbol_does_not_sink_the_others() {
    let server = HttpFixture::start("", |req| match req.q("symbol") {
        Some("AAPL") => Reply::ok(QUOTE),
        _ => Reply::ok(UNKNOWN),
    })
    .await;
    let src = source(&settings(&[("FINNHUB_BASE_URL", &server.base)]));
    let quotes = src.quotes(&[0, 1], now_ms()).await.expect("partial answer");
    assert_eq!(quotes.iter().map(|q| q.symbol).collect::<Vec<_>>(), [0]);
}

#[tokio::test]
async fn quote_errors() {
    let cases = [
        (
            "unknown symbol: all zeros",
            Reply::ok(UNKNOWN),
            Expect::Unknown,
        ),
        (
            "bad key",
            Reply::json(401, r#"{"error":"Invalid API key."}"#),
            Expect::Unauthorized,
        ),
        (
            "rate limit",
            Reply::json(
                429,
                r#"{"error":"API limit reached. Please try again later. Remaining Limit: 0"}"#,
            ),
            Expect::RateLimited(None),
        ),
        (
            "rate limit with Retry-After",
            Reply::json(
                429,
                r#"{"error":"API limit reached. Please try again later. Remaining Limit: 0"}"#,
            )
            .header("retry-after", "12"),
            Expect::RateLimited(Some(std::time::Duration::from_secs(12))),
        ),
        (
            "rate limit in a 200",
            Reply::ok(r#"{"error":"API limit reached. Please try again later."}"#),
            Expect::RateLimited(None),
        ),
        (
            "server error",
            Reply::text(500, "internal error"),
            Expect::Http(500),
        ),
        (
            "malformed JSON",
            Reply::ok(r#"{"c":185.9"#),
            Expect::Malformed,
        ),
        (
            "price as text",
            Reply::ok(r#"{"c":"185.9","t":1705352400}"#),
            Expect::Malformed,
        ),
        ("empty object", Reply::ok("{}"), Expect::Malformed),
        ("timeout", too_slow(QUOTE), Expect::Timeout),
    ];
    for (case, reply, expect) in cases {
        quote_error_case(source, "FINNHUB_BASE_URL", "", reply, expect, case).await;
    }
}

#[tokio::test]
async fn candles_only_when_declared_and_shaped_like_the_rest() {
    let t0 = utc("2024-01-15 14:30") / 1_000;
    let body = format!(
        r#"{{"c":[2.2,1.2,null,3.2],"h":[2.5,1.5,null,3.5],"l":[1.5,0.5,null,2.5],"o":[2,1,null,3],"s":"ok","t":[{},{},{},{}],"v":[20,10,null,30]}}"#,
        t0 + 60,
        t0,
        t0 + 90,
        t0 + 120
    );
    let server = HttpFixture::always("", Reply::ok(body)).await;
    let plain = source(&settings(&[("FINNHUB_BASE_URL", &server.base)]));
    assert!(
        !plain.capabilities().history,
        "free keys get 403 on candles"
    );
    let src = source(&settings(&[
        ("FINNHUB_BASE_URL", &server.base),
        ("FINNHUB_CANDLES", "true"),
    ]));
    assert!(src.capabilities().history);
    let from = t0 * 1_000;
    let bars = src
        .history(0, tf("1m"), from, from + 600_000)
        .await
        .expect("candles");
    assert_sorted_unique(&bars);
    assert_eq!(
        bars.iter().map(|b| b.close).collect::<Vec<_>>(),
        [1.2, 2.2, 3.2]
    );
    let seen = server.requests();
    assert_eq!(seen[0].path, "/stock/candle");
    assert_eq!(
        (seen[0].q("resolution"), seen[0].q("from")),
        (Some("1"), Some(t0.to_string().as_str()))
    );
    // FX and crypto candles live under their own paths.
    src.history(1, tf("1m"), from, from + 600_000)
        .await
        .expect("fx candles");
    src.history(2, tf("1m"), from, from + 600_000)
        .await
        .expect("crypto candles");
    let paths: Vec<String> = server.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths[1..],
        ["/forex/candle".to_string(), "/crypto/candle".to_string()]
    );
}

#[tokio::test]
async fn candle_errors_and_no_data() {
    let server = HttpFixture::always("", Reply::ok(r#"{"s":"no_data"}"#)).await;
    let src = source(&settings(&[
        ("FINNHUB_BASE_URL", &server.base),
        ("FINNHUB_CANDLES", "1"),
    ]));
    let from = utc("2024-01-15 14:30");
    assert!(
        src.history(0, tf("1m"), from, from + 600_000)
            .await
            .expect("no data")
            .is_empty()
    );
    let cases = [
        (
            "free key",
            Reply::json(
                403,
                r#"{"error":"You don't have access to this resource."}"#,
            ),
            Expect::Unauthorized,
        ),
        (
            "columns differ",
            Reply::ok(r#"{"c":[1],"h":[1,2],"l":[1],"o":[1],"s":"ok","t":[1705329000],"v":[1]}"#),
            Expect::Malformed,
        ),
        (
            "odd status",
            Reply::ok(r#"{"s":"weird"}"#),
            Expect::Malformed,
        ),
    ];
    for (case, reply, expect) in cases {
        history_error_case(
            |s: &ProviderSettings| {
                FinnhubSource::new(&symbols(&["AAPL"]), &with_candles(s)).expect("source")
            },
            "FINNHUB_BASE_URL",
            "",
            reply,
            expect,
            case,
        )
        .await;
    }
}

fn with_candles(s: &ProviderSettings) -> ProviderSettings {
    let mut s = s.clone();
    s.set_switch("FINNHUB_CANDLES", true);
    s
}
