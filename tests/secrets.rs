//! No key reaches a log line or an API answer (issue 15): provider fixtures on 127.0.0.1 that
//! echo the API key back in every place a provider could — Twelve Data's error message inside
//! an HTTP 200, a 401 body, Alpha Vantage's `Error Message` and `Information` — and a Redis URL
//! whose password belongs to nobody listening, and an `API_TOKEN` that changes carry; the real
//! binary at `RUST_LOG=debug`, its whole log and `/health` searched for the secrets.

mod common;

#[path = "providers/fixture.rs"]
#[allow(dead_code, reason = "the WebSocket script fixture is not used here")]
mod fixture;

use std::time::Duration;

use common::{Sidecar, get, get_json, wait_for};
use fixture::{HttpFixture, Reply};

const TWELVEDATA_KEY: &str = "td-secret-4f1c2a9e";
const ALPHAVANTAGE_KEY: &str = "AVSECRET7Q2X";
const REDIS_PASSWORD: &str = "hunter2-redis-pw";
const API_TOKEN: &str = "api-token-5e0b7c2d9f";

#[test]
fn provider_errors_that_quote_the_key_never_show_it() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (twelvedata, alphavantage) = rt.block_on(async {
        let calls = std::sync::atomic::AtomicU64::new(0);
        let twelvedata = HttpFixture::start("", move |_seen: &fixture::Seen| {
            // Alternate the two shapes Twelve Data answers a bad key with.
            if calls
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                .is_multiple_of(2)
            {
                Reply::ok(format!(
                    r#"{{"code":401,"message":"**apikey** parameter is incorrect or not specified: {TWELVEDATA_KEY}","status":"error"}}"#
                ))
            } else {
                Reply::json(
                    401,
                    format!(
                        r#"{{"code":401,"message":"Invalid API key {TWELVEDATA_KEY}; see https://twelvedata.com/account?apikey={TWELVEDATA_KEY}","status":"error"}}"#
                    ),
                )
            }
        })
        .await;
        let alphavantage = HttpFixture::start("", |seen: &fixture::Seen| {
            if seen.q("function") == Some("GLOBAL_QUOTE") {
                Reply::ok(format!(
                    r#"{{"Error Message":"the parameter apikey is invalid or missing: {ALPHAVANTAGE_KEY}"}}"#
                ))
            } else {
                Reply::ok(format!(
                    r#"{{"Information":"Thank you for using Alpha Vantage! Our standard API rate limit is 25 requests per day for key {ALPHAVANTAGE_KEY}."}}"#
                ))
            }
        })
        .await;
        (twelvedata, alphavantage)
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("s.db");
    // Nobody listens on this port: the Redis error names the URL the sink was given.
    let unused = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = unused.local_addr().expect("addr").port();
    drop(unused);
    let redis_url = format!("redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0");
    let sidecar = Sidecar::start(
        dir.path(),
        &[
            ("SQLITE_PATH", db.to_str().expect("utf-8")),
            ("SYMBOLS", "AAPL,EURUSD"),
            ("MARKET_HOURS", "*:always"),
            ("SOURCES", "twelvedata,alphavantage"),
            ("TWELVEDATA_API_KEY", TWELVEDATA_KEY),
            ("TWELVEDATA_BASE_URL", twelvedata.base.as_str()),
            ("ALPHAVANTAGE_API_KEY", ALPHAVANTAGE_KEY),
            ("ALPHAVANTAGE_BASE_URL", alphavantage.base.as_str()),
            ("REDIS_URL", redis_url.as_str()),
            ("API_TOKEN", API_TOKEN),
            ("BOOTSTRAP_ON_START", "false"),
            ("WARMUP_BARS", "0"),
            ("COLLECTION_INTERVAL", "200ms"),
            ("RUST_LOG", "debug"),
        ],
    );
    // Both providers were asked and failed, and Redis was tried.
    wait_for(Duration::from_secs(20), || {
        let (_, h) = get_json(sidecar.addr, "/health");
        let asked = |s: &str| h["sources"][s]["requests"].as_u64().is_some_and(|n| n >= 2);
        (asked("twelvedata") && asked("alphavantage") && h["redis"]["state"] == "down")
            .then_some(())
    })
    .expect("both providers answered with their key errors");
    // Changes with the token and with a wrong one, at RUST_LOG=debug.
    for token in [API_TOKEN, "api-token-5e0b7c2d9e"] {
        let auth = format!("Bearer {token}");
        let (status, body) = common::send(
            sidecar.addr,
            "POST",
            "/streaming/config/workers/stop-all",
            &[("Authorization", &auth)],
            None,
        );
        assert!(!body.contains(API_TOKEN), "{status} {body}");
    }
    assert_no_secret_shown(
        sidecar,
        &["/signals/AAPL", "/features/EURUSD"],
        &[TWELVEDATA_KEY, ALPHAVANTAGE_KEY, REDIS_PASSWORD, API_TOKEN],
    );
}

/// Reads the API's answers (`/health`, both metrics endpoints and `paths`), stops the sidecar,
/// and checks that none of `secrets` is in them or in the log, which did log the errors
/// (scrubbed).
fn assert_no_secret_shown(sidecar: Sidecar, paths: &[&str], secrets: &[&str]) {
    let mut answers = String::new();
    for path in ["/health", "/metrics", "/metrics/json"].iter().chain(paths) {
        answers.push_str(&get(sidecar.addr, path).1);
    }
    let (code, log) = sidecar.terminate();
    assert_eq!(code, 0);
    let log = log.join("\n");
    assert!(
        log.contains("***"),
        "the key errors were logged, scrubbed:\n{log}"
    );
    for secret in secrets {
        assert!(!log.contains(secret), "`{secret}` in the log:\n{log}");
        assert!(
            !answers.contains(secret),
            "`{secret}` in an API answer:\n{answers}"
        );
    }
}

const POLYGON_KEY: &str = "pgSECRETq8Zr2";
const FINNHUB_KEY: &str = "fhsecret9d3kw";

/// Polygon and Finnhub, each answering in turn every way a key could come back: in an error
/// body (401/403), inside a 200 envelope, and in a redirect's target, which the HTTP client then
/// fails to reach (its error names the URL).
#[test]
fn polygon_and_finnhub_echoing_the_key_never_show_it() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    // Nobody listens here: a redirect to it fails with the target URL in the error.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_port = dead.local_addr().expect("addr").port();
    drop(dead);
    let (polygon, finnhub) = rt.block_on(async {
        let calls = std::sync::atomic::AtomicU64::new(0);
        let polygon = HttpFixture::start("", move |seen: &fixture::Seen| {
            match calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % 3 {
                0 => Reply::json(
                    401,
                    format!(
                        r#"{{"status":"ERROR","request_id":"a1","error":"Unknown API Key {POLYGON_KEY}"}}"#
                    ),
                ),
                1 => Reply::ok(format!(
                    r#"{{"status":"NOT_AUTHORIZED","request_id":"a2","message":"You are not entitled to this data with key {POLYGON_KEY}. Please upgrade your plan at https://polygon.io/pricing?apiKey={POLYGON_KEY}"}}"#
                )),
                _ => Reply::text(302, "").header(
                    "location",
                    &format!("http://127.0.0.1:{dead_port}{}?apiKey={POLYGON_KEY}", seen.path),
                ),
            }
        })
        .await;
        let calls = std::sync::atomic::AtomicU64::new(0);
        let finnhub = HttpFixture::start("", move |seen: &fixture::Seen| {
            match calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % 3 {
                0 => Reply::json(
                    401,
                    format!(r#"{{"error":"Invalid API key: {FINNHUB_KEY}"}}"#),
                ),
                1 => Reply::json(
                    403,
                    format!(
                        r#"{{"error":"You don't have access to this resource (token={FINNHUB_KEY})."}}"#
                    ),
                ),
                _ => Reply::text(307, "").header(
                    "location",
                    &format!("http://127.0.0.1:{dead_port}{}?token={FINNHUB_KEY}", seen.path),
                ),
            }
        })
        .await;
        (polygon, finnhub)
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("s.db");
    let sidecar = Sidecar::start(
        dir.path(),
        &[
            ("SQLITE_PATH", db.to_str().expect("utf-8")),
            ("SYMBOLS", "AAPL,MSFT"),
            ("MARKET_HOURS", "*:always"),
            ("SOURCES", "polygon,finnhub"),
            ("POLYGON_API_KEY", POLYGON_KEY),
            ("POLYGON_BASE_URL", polygon.base.as_str()),
            ("FINNHUB_API_KEY", FINNHUB_KEY),
            ("FINNHUB_BASE_URL", finnhub.base.as_str()),
            ("BOOTSTRAP_ON_START", "false"),
            ("WARMUP_BARS", "0"),
            ("COLLECTION_INTERVAL", "200ms"),
            ("BREAKER_FAILURES", "1000"),
            ("RUST_LOG", "debug"),
        ],
    );
    // Each provider gave each of its three answers at least twice.
    wait_for(Duration::from_secs(20), || {
        (polygon.requests().len() >= 6 && finnhub.requests().len() >= 6).then_some(())
    })
    .expect("both providers answered with their key errors");
    assert_no_secret_shown(
        sidecar,
        &["/signals/AAPL", "/features/MSFT"],
        &[POLYGON_KEY, FINNHUB_KEY],
    );
}
