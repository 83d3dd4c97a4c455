//! Every parser fed random bytes, random JSON built from the providers' own field names,
//! truncated and mutated real payloads: an error is fine, a panic is not.

use barkeep::model::Timeframe;
use barkeep::sources::http::{Fetched, closed_bars};
use barkeep::sources::{alphavantage, binance, finnhub, polygon, twelvedata, yahoo};
use bytes::Bytes;
use proptest::prelude::*;

fn fetched(status: u16, body: &[u8]) -> Fetched {
    Fetched {
        status,
        retry_after: None,
        skew_ms: None,
        body: Bytes::copy_from_slice(body),
    }
}

/// Runs every parser on one answer.
fn all_parsers(status: u16, body: &[u8]) {
    let f = fetched(status, body);
    let minute = Timeframe::from_ms(60_000).expect("1m");
    let hour = Timeframe::from_ms(3_600_000).expect("1h");
    let now = 1_705_329_000_000;
    let _ = yahoo::parse::quote(&f, "X");
    let _ = yahoo::parse::history(&f, "X", 60_000, minute, 0, i64::MAX, now);
    let _ = yahoo::parse::history(&f, "X", 1_800_000, hour, i64::MIN, i64::MAX, i64::MAX);
    let _ = yahoo::parse::history(
        &f,
        "X",
        86_400_000,
        Timeframe::from_ms(86_400_000).expect("1d"),
        0,
        i64::MAX,
        now,
    );
    let _ = binance::parse::tickers(&f, "X");
    let _ = binance::parse::klines(&f, "X");
    let _ = finnhub::parse::quote(&f, "X");
    let _ = finnhub::parse::candles(&f, "X", true);
    let _ = polygon::parse::last_trade(&f, "X");
    let _ = polygon::parse::aggs(&f, "X", true);
    let _ = twelvedata::parse::quotes(&f, &["A", "B/C"], "X", now);
    let _ = twelvedata::parse::time_series(&f, "X", now);
    let _ = alphavantage::parse::global_quote(&f, "X", now);
    let _ = alphavantage::parse::exchange_rate(&f, "X", now);
    let _ = alphavantage::parse::series(&f, "X", now);
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = binance::parse::frame(text);
        let _ = finnhub::parse::frame(text);
        let _ = polygon::parse::frame(text);
        let _ = twelvedata::parse::utc_ms(text);
    }
}

/// Real payloads of every kind, to truncate and mutate.
const SAMPLES: &[&str] = &[
    r#"{"chart":{"result":[{"meta":{"regularMarketPrice":103.63,"regularMarketTime":1683057604,"gmtoffset":-14400},"timestamp":[1683055800,1683055860,1683055920],"indicators":{"quote":[{"open":[103.6,103.66,null],"high":[103.72000122070312,103.68,null],"low":[103.5,103.6,null],"close":[103.66,103.61,null],"volume":[120000,98000,null]}]}}],"error":null}}"#,
    r#"[{"symbol":"BTCUSDT","lastPrice":"42000.10","closeTime":1705329000123}]"#,
    r#"[[1499040000000,"0.01634790","0.80000000","0.01575800","0.01577100","148976.11427815",1499644799999,"2434.19055334",308,"1756.87402397","28.46694368","0"]]"#,
    r#"{"e":"kline","E":1672515782136,"s":"BNBBTC","k":{"t":1672515780000,"T":1672515839999,"s":"BNBBTC","i":"1m","o":"0.0010","c":"0.0020","h":"0.0025","l":"0.0015","v":"1000","n":100,"x":false}}"#,
    r#"{"c":311.51,"d":-0.15,"dp":-0.0573,"h":313.31,"l":310.68,"o":311.07,"pc":311.89,"t":1582641000}"#,
    r#"{"c":[1,2],"h":[1,2],"l":[1,2],"o":[1,2],"s":"ok","t":[1705329000,1705329060],"v":[1,2]}"#,
    r#"{"data":[{"c":null,"p":7296.89,"s":"BINANCE:BTCUSDT","t":1575526691134,"v":0.011467}],"type":"trade"}"#,
    r#"{"results":{"p":166.25,"s":2,"T":"AAPL","t":1651179319310617300},"status":"OK"}"#,
    r#"{"ticker":"AAPL","results":[{"v":642646396.0,"vw":1.469,"o":1.5032,"c":1.4604,"h":1.5064,"l":1.4489,"t":1112331600000,"n":82132}],"status":"OK"}"#,
    r#"[{"ev":"AM","sym":"MSFT","v":10204,"o":114.11,"c":114.14,"h":114.19,"l":114.09,"s":1536036818784,"e":1536036818784}]"#,
    r#"{"AAPL":{"symbol":"AAPL","close":"284.14999","timestamp":1764795600,"volume":"30965652"},"EUR/USD":{"code":404,"message":"not found","status":"error"}}"#,
    r#"{"meta":{"symbol":"AAPL","exchange_timezone":"America/New_York"},"values":[{"datetime":"2023-05-01 15:59:00","open":"169.89500","high":"169.89999","low":"169.55000","close":"169.56000","volume":"867211"}],"status":"ok"}"#,
    r#"{"Global Quote":{"01. symbol":"MSFT","05. price":"112.1300","06. volume":"29062853","07. latest trading day":"2018-10-05"}}"#,
    r#"{"Realtime Currency Exchange Rate":{"5. Exchange Rate":"1.09","6. Last Refreshed":"2024-01-15 16:00:01","7. Time Zone":"UTC"}}"#,
    r#"{"Meta Data":{"6. Time Zone":"US/Eastern"},"Time Series (1min)":{"2024-01-15 16:00:00":{"1. open":"160.0000","2. high":"160.0500","3. low":"159.9500","4. close":"160.0200","5. volume":"1234"}}}"#,
];

#[test]
fn truncated_payloads_never_panic() {
    for sample in SAMPLES {
        for end in 0..=sample.len() {
            for status in [200, 404, 429] {
                all_parsers(status, &sample.as_bytes()[..end]);
            }
        }
    }
}

/// Field names the providers use, so random JSON often has the right shape with wrong content.
const KEYS: &[&str] = &[
    "chart",
    "result",
    "error",
    "meta",
    "timestamp",
    "indicators",
    "quote",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "regularMarketPrice",
    "regularMarketTime",
    "gmtoffset",
    "symbol",
    "lastPrice",
    "closeTime",
    "c",
    "t",
    "o",
    "h",
    "l",
    "v",
    "s",
    "p",
    "e",
    "E",
    "k",
    "x",
    "i",
    "ev",
    "sym",
    "results",
    "status",
    "code",
    "msg",
    "message",
    "data",
    "type",
    "values",
    "datetime",
    "last_quote_at",
    "Global Quote",
    "05. price",
    "07. latest trading day",
    "Meta Data",
    "6. Time Zone",
    "Time Series (1min)",
    "1. open",
    "2. high",
    "3. low",
    "4. close",
    "5. volume",
    "Realtime Currency Exchange Rate",
    "5. Exchange Rate",
    "6. Last Refreshed",
    "7. Time Zone",
    "next_url",
    "stream",
];

fn json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        (-1e20..1e20f64).prop_map(serde_json::Value::from),
        prop_oneof![
            Just("2024-01-15 14:30:00".to_string()),
            Just("2024-01-15".to_string()),
            Just("US/Eastern".to_string()),
            Just("UTC".to_string()),
            Just("ok".to_string()),
            Just("error".to_string()),
            Just("-1.5".to_string()),
            Just("1e309".to_string()),
            "[a-z0-9 .:-]{0,12}",
        ]
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|fields| {
                serde_json::Value::Object(
                    fields
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                )
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512), status in prop::sample::select(vec![200u16, 400, 401, 403, 404, 418, 429, 500, 503])) {
        all_parsers(status, &body);
    }

    #[test]
    fn random_json_never_panics(value in json(), status in prop::sample::select(vec![200u16, 404, 429])) {
        all_parsers(status, value.to_string().as_bytes());
    }

    #[test]
    fn mutated_payloads_never_panic(sample in prop::sample::select(SAMPLES), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut body = sample.as_bytes().to_vec();
        let i = at.index(body.len());
        body[i] = byte;
        all_parsers(200, &body);
    }

    #[test]
    fn bar_shaping_never_panics(
        rows in prop::collection::vec((any::<i64>(), -10.0..1e6f64, 0.0..1e6f64), 0..50),
        step in prop::sample::select(vec![1_000i64, 60_000, 1_800_000, 86_400_000]),
        tf_ms in prop::sample::select(vec![1_000i64, 60_000, 3_600_000, 86_400_000]),
        from in any::<i64>(),
        to in any::<i64>(),
        now in any::<i64>(),
    ) {
        let bars = rows.into_iter().map(|(ts, p, v)| barkeep::model::Bar { ts, open: p, high: p, low: p, close: p, volume: v }).collect();
        if let Ok(out) = closed_bars(bars, step, Timeframe::from_ms(tf_ms).expect("tf"), from, to, now) {
            prop_assert!(out.windows(2).all(|w| w[0].ts < w[1].ts));
        }
    }
}
