//! Every provider source against a local server that answers in the provider's documented
//! format: success, unknown symbol, bad key, rate limits (in the body and as 429), server
//! errors, timeouts, malformed JSON, empty results, history shaping, WebSocket reconnects — and
//! parsers fed random bytes. Nothing here touches the internet.

#[path = "providers/fixture.rs"]
mod fixture;

#[path = "providers/alphavantage.rs"]
mod alphavantage;
#[path = "providers/binance.rs"]
mod binance;
#[path = "providers/finnhub.rs"]
mod finnhub;
#[path = "providers/fuzz.rs"]
mod fuzz;
#[path = "providers/polygon.rs"]
mod polygon;
#[path = "providers/stream_follow.rs"]
mod stream_follow;
#[path = "providers/streams.rs"]
mod streams;
#[path = "providers/twelvedata.rs"]
mod twelvedata;
#[path = "providers/yahoo.rs"]
mod yahoo;

use std::time::Duration;

use barkeep::model::{Bar, SymbolTable, Timeframe};
use barkeep::sources::settings::ProviderSettings;
use barkeep::sources::{ErrorKind, Source, SourceError};

use fixture::{HttpFixture, Reply};

/// The API key every keyed fixture expects.
pub const KEY: &str = "sekrit-key-42";

/// Provider settings for tests: fast client timeout, fast reconnects, the test key for every
/// provider, plus `vars`.
pub fn settings(vars: &[(&str, &str)]) -> ProviderSettings {
    let mut all: Vec<(String, String)> = [
        ("PROVIDER_HTTP_TIMEOUT", "300ms"),
        ("STREAM_SILENCE_TIMEOUT", "2s"),
        ("STREAM_RECONNECT_MIN", "10ms"),
        ("STREAM_RECONNECT_MAX", "50ms"),
        ("ALPHAVANTAGE_API_KEY", KEY),
        ("TWELVEDATA_API_KEY", KEY),
        ("POLYGON_API_KEY", KEY),
        ("FINNHUB_API_KEY", KEY),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in vars {
        all.retain(|(name, _)| name != k);
        all.push((k.to_string(), v.to_string()));
    }
    ProviderSettings::from_lookup(&move |name| {
        all.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    })
    .expect("valid test settings")
}

pub fn symbols(names: &[&str]) -> SymbolTable {
    SymbolTable::new(names.iter().copied())
}

pub fn tf(s: &str) -> Timeframe {
    s.parse().expect("timeframe")
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Unix ms of a UTC time written `2024-01-15 14:30`.
pub fn utc(text: &str) -> i64 {
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M")
        .expect("test time")
        .and_utc()
        .timestamp_millis()
}

/// What a failing request should turn into.
#[derive(Debug, Clone, Copy)]
pub enum Expect {
    Unknown,
    Unauthorized,
    RateLimited(Option<Duration>),
    /// `RateLimited` with some `retry_after`, whatever its value.
    RateLimitedSome,
    Http(u16),
    Timeout,
    Malformed,
}

/// Asserts the error's variant, that it classifies as expected, and that the key is nowhere in
/// its message.
#[track_caller]
pub fn check(err: &SourceError, expect: Expect, case: &str) {
    let text = err.to_string();
    assert!(!text.contains(KEY), "{case}: key leaked into {text}");
    let ok = match (expect, err) {
        (Expect::Unknown, SourceError::UnknownSymbol { .. }) => true,
        (Expect::Unauthorized, SourceError::Unauthorized { .. }) => true,
        (Expect::RateLimited(want), SourceError::RateLimited { retry_after, .. }) => {
            *retry_after == want
        }
        (Expect::RateLimitedSome, SourceError::RateLimited { retry_after, .. }) => {
            retry_after.is_some()
        }
        (Expect::Http(want), SourceError::Http { status, .. }) => *status == want,
        (Expect::Timeout, SourceError::Timeout { .. }) => true,
        (Expect::Malformed, SourceError::Malformed { .. }) => true,
        _ => false,
    };
    assert!(ok, "{case}: expected {expect:?}, got {err:?}");
    let kind = err.kind();
    match expect {
        Expect::Unknown => assert_eq!(kind, ErrorKind::NotServed, "{case}"),
        Expect::RateLimited(_) | Expect::RateLimitedSome => {
            assert_eq!(kind, ErrorKind::RateLimited, "{case}")
        }
        _ => assert_eq!(kind, ErrorKind::Failure, "{case}"),
    }
}

/// Runs `quotes` against a fixture that answers every request with `reply` and checks the error.
pub async fn quote_error_case<S: Source>(
    make: impl Fn(&ProviderSettings) -> S,
    base_var: &str,
    prefix: &str,
    reply: Reply,
    expect: Expect,
    case: &str,
) {
    let server = HttpFixture::always(prefix, reply).await;
    let source = make(&settings(&[(base_var, &server.base)]));
    let err = source.quotes(&[0], now_ms()).await.expect_err(case);
    check(&err, expect, case);
}

/// Runs `history` against a fixture that answers every request with `reply` and checks the
/// error.
pub async fn history_error_case<S: Source>(
    make: impl Fn(&ProviderSettings) -> S,
    base_var: &str,
    prefix: &str,
    reply: Reply,
    expect: Expect,
    case: &str,
) {
    let server = HttpFixture::always(prefix, reply).await;
    let source = make(&settings(&[(base_var, &server.base)]));
    let from = utc("2024-01-15 14:30");
    let err = source
        .history(0, tf("1m"), from, from + 10 * 60_000)
        .await
        .expect_err(case);
    check(&err, expect, case);
}

/// Asserts bars are strictly increasing by open time.
#[track_caller]
pub fn assert_sorted_unique(bars: &[Bar]) {
    assert!(
        bars.windows(2).all(|w| w[0].ts < w[1].ts),
        "not sorted/unique: {bars:?}"
    );
}

/// The timeout case every provider shares: the server answers after the client gave up.
pub fn too_slow(body: &str) -> Reply {
    Reply::ok(body).slow(Duration::from_secs(3))
}
