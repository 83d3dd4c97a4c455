//! The HTTP API in process (`app::run_with` on a free port): contracts and every error class.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use barkeep::clock::Clock;
use barkeep::config::Config;
use common::{get_json, request, wait_for};

fn config(db: &std::path::Path) -> Config {
    let db = db.to_str().expect("utf-8 path").to_string();
    Config::from_lookup(move |name| match name {
        "SQLITE_PATH" => Some(db.clone()),
        // A symbol as providers spell it, with characters a URL carries percent-encoded.
        "SYMBOLS" => Some("NAS100,XAUUSD,EURUSD,BTC/USD,^NDX".into()),
        "COLLECTION_INTERVAL" => Some("100ms".into()),
        "SYNTHETIC_BAD_TICK_RATE" => Some("0".into()),
        _ => None,
    })
    .expect("valid config")
}

/// Runs the sidecar in this process and `check` against it from a blocking thread.
fn with_sidecar(check: impl FnOnce(SocketAddr) + Send + 'static) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let app = tokio::spawn(barkeep::app::run_with(
            config(&dir.path().join("b.db")),
            listener,
            Clock::System,
            async {
                let _ = stop_rx.await;
            },
        ));
        let checked = tokio::task::spawn_blocking(move || check(addr)).await;
        let _ = stop_tx.send(());
        app.await.expect("join").expect("clean shutdown");
        if let Err(panic) = checked {
            std::panic::resume_unwind(panic.into_panic());
        }
    });
}

fn assert_error(
    addr: SocketAddr,
    method: &str,
    path: &str,
    status: u16,
    kind: &str,
    mention: &str,
) {
    let (got, body) = request(addr, method, path);
    assert_eq!(got, status, "{method} {path}: {body}");
    let body: serde_json::Value = serde_json::from_str(&body)
        .unwrap_or_else(|_| panic!("{path}: JSON error body expected, got {body}"));
    assert_eq!(body["error"], kind, "{path}: {body}");
    let message = body["message"].as_str().expect("message");
    assert!(
        message.contains(mention),
        "{path}: `{message}` should mention `{mention}`"
    );
}

#[test]
fn bad_requests_get_json_errors() {
    with_sidecar(|addr| {
        wait_for(Duration::from_secs(10), || {
            (get_json(addr, "/health").0 == 200).then_some(())
        })
        .expect("healthy");
        assert_error(addr, "GET", "/signals/DOGE", 404, "not_found", "DOGE");
        assert_error(
            addr,
            "GET",
            "/features/DOGE",
            404,
            "not_found",
            "configured: NAS100, XAUUSD, EURUSD",
        );
        assert_error(addr, "GET", "/bars/DOGE", 404, "not_found", "DOGE");
        assert_error(addr, "GET", "/nope", 404, "not_found", "/nope");
        assert_error(addr, "GET", "/signals", 404, "not_found", "/signals");
        assert_error(
            addr,
            "GET",
            "/bars/EURUSD?limit=0",
            400,
            "bad_request",
            "limit",
        );
        assert_error(
            addr,
            "GET",
            "/bars/EURUSD?limit=abc",
            400,
            "bad_request",
            "abc",
        );
        assert_error(
            addr,
            "GET",
            "/bars/EURUSD?limit=5001",
            400,
            "bad_request",
            "5000",
        );
        assert_error(addr, "GET", "/bars/EURUSD?tf=7x", 400, "bad_request", "7x");
        assert_error(
            addr,
            "GET",
            "/bars/EURUSD?tf=5m",
            400,
            "bad_request",
            "not collected",
        );
        assert_error(
            addr,
            "GET",
            "/signals/EURUSD?timeframe=1m",
            400,
            "bad_request",
            "timeframe",
        );
        assert_error(
            addr,
            "GET",
            "/bars/EURUSD?limit=1&limit=2",
            400,
            "bad_request",
            "twice",
        );
        assert_error(addr, "POST", "/health", 405, "method_not_allowed", "POST");
        let (_, metrics) = get_json(addr, "/metrics/json");
        assert!(
            metrics["counters"]["http_client_errors_total"]
                .as_u64()
                .expect("counter")
                >= 13
        );
    });
}

#[test]
fn endpoints_follow_the_contract() {
    with_sidecar(|addr| {
        let health = wait_for(Duration::from_secs(10), || {
            let (status, body) = get_json(addr, "/health");
            (status == 200).then_some(body)
        })
        .expect("healthy");
        assert_eq!(health["redis"]["state"], "disabled");
        assert_eq!(health["sources"]["synthetic"]["state"], "closed");
        assert!(health["symbols"]["NAS100"]["age_ms"].as_i64().expect("age") < 5_000);

        let (status, bars) = get_json(addr, "/bars/eurusd?tf=1m&limit=5");
        assert_eq!(status, 200);
        assert_eq!(bars["count"], 5);
        let list = bars["bars"].as_array().expect("bars");
        for b in list {
            for field in ["ts", "open", "high", "low", "close", "volume", "quality"] {
                assert!(b[field].is_number(), "{field}: {b}");
            }
            assert_eq!(b["source"], "synthetic");
            assert!(b["high"].as_f64() >= b["low"].as_f64());
        }
        assert!(list.windows(2).all(|w| w[1]["ts"].as_i64().expect("ts")
            - w[0]["ts"].as_i64().expect("ts")
            == 60_000));

        let (status, features) = get_json(addr, "/features/EURUSD");
        assert_eq!(status, 200);
        assert_eq!(features["timeframe"], "1m");
        assert!(features["forming"].is_boolean());
        assert!(features["age_ms"].as_i64().expect("age") >= 0);
        assert_eq!(features["features"].as_object().expect("map").len(), 15);

        let (status, metrics) = get_json(addr, "/metrics/json");
        assert_eq!(status, 200);
        assert!(metrics["counters"]["ticks_total"].as_u64().expect("ticks") >= 1);
        assert!(metrics["histograms"]["tick_duration"]["p99_ms"].is_number());
        let (status, text) = request(addr, "GET", "/metrics");
        assert_eq!(status, 200);
        assert!(text.contains("# TYPE barkeep_http_latency_seconds histogram"));
    });
}

#[test]
fn percent_encoded_symbols_and_queries_are_decoded() {
    with_sidecar(|addr| {
        for (path, symbol) in [
            ("/signals/BTC%2FUSD", "BTC/USD"),
            ("/features/%5ENDX?tf=1%6D", "^NDX"),
            ("/bars/btc%2fusd?limit=5", "BTC/USD"),
        ] {
            let (code, body) = wait_for(Duration::from_secs(10), || {
                let (code, body) = get_json(addr, path);
                (code == 200).then_some((code, body))
            })
            .unwrap_or_else(|| panic!("{path} never answered 200"));
            assert_eq!(code, 200);
            assert_eq!(body["symbol"], symbol, "{path}: {body}");
        }
        // Bytes that are not UTF-8 once decoded are a bad request, not a crash.
        assert_error(addr, "GET", "/signals/%FF%FE", 400, "bad_request", "UTF-8");
    });
}
