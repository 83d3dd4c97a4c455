//! The run-time control API (`/streaming/config/…`, issue 12) against the real sidecar: who may
//! change things (`API_TOKEN`, loopback), bounded and validated bodies; and, against Yahoo and
//! Twelve Data fixtures on 127.0.0.1 that count what they are asked, workers stopped and
//! started, the cadence followed tick by tick, paused, kept across a restart, and the telemetry
//! of a fallback.

mod common;
#[path = "providers/fixture.rs"]
#[allow(dead_code, reason = "the WebSocket script fixture is not used here")]
mod fixture;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{config_of, get_json, in_process, in_process_on, send, wait_for};
use fixture::{HttpFixture, Reply};

const TOKEN: &str = "control-test-token-8d1f3a";

fn vars(dir: &std::path::Path, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut vars: Vec<(&'static str, String)> = vec![
        (
            "SQLITE_PATH",
            dir.join("c.db").to_str().expect("utf-8").to_string(),
        ),
        ("SYMBOLS", "EURUSD".into()),
        ("TIMEFRAMES", "1s".into()),
        ("MARKET_HOURS", "*:always".into()),
        ("BOOTSTRAP_ON_START", "false".into()),
        ("WARMUP_BARS", "0".into()),
    ];
    vars.extend(extra.iter().map(|(k, v)| (*k, (*v).to_string())));
    vars
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// A change that passes the access rule, on a path that exists.
const CHANGE: (&str, &str) = ("POST", "/streaming/config/workers/stop-all");

#[test]
fn with_api_token_set_a_change_needs_the_bearer_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_of(&vars(dir.path(), &[("API_TOKEN", TOKEN)]));
    in_process(config, barkeep::clock::Clock::System, |addr| {
        let (method, path) = CHANGE;
        let (status, body) = send(addr, method, path, &[], None);
        assert_eq!(status, 401, "{body}");
        assert_eq!(json(&body)["error"], "unauthorized", "{body}");
        let wrong = format!("Bearer {TOKEN}0");
        let (status, body) = send(addr, method, path, &[("Authorization", &wrong)], None);
        assert_eq!(status, 401, "{body}");
        assert!(
            !body.contains(TOKEN),
            "the answer never shows the token: {body}"
        );
        let right = format!("Bearer {TOKEN}");
        let (status, body) = send(addr, method, path, &[("Authorization", &right)], None);
        assert!(status != 401 && status != 403, "{status} {body}");
        // Reads need no token.
        let (status, body) = send(addr, "GET", "/streaming/config/workers", &[], None);
        assert!(status != 401 && status != 403, "{status} {body}");
    });
}

#[test]
fn an_oversized_body_is_a_413_before_it_is_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_of(&vars(dir.path(), &[]));
    in_process(config, barkeep::clock::Clock::System, |addr| {
        let big = "x".repeat(barkeep::api::access::MAX_BODY_BYTES + 1);
        let (status, body) = send(
            addr,
            "PUT",
            "/streaming/config/cadences/market_data",
            &[("Content-Type", "application/json")],
            Some(&big),
        );
        assert_eq!(status, 413, "{body}");
        assert_eq!(json(&body)["error"], "payload_too_large", "{body}");
    });
}

/// An address of this machine other than loopback (the one its default route leaves from).
fn outside_address() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // No packet is sent: connecting a UDP socket only picks the route and its source address.
    socket.connect("203.0.113.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[test]
fn without_api_token_a_change_from_another_address_is_forbidden() {
    let Some(outside) = outside_address() else {
        // The decision itself is covered by api::access's unit tests.
        eprintln!("skipped: this machine has no address besides loopback");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_of(&vars(dir.path(), &[]));
    in_process_on(
        "0.0.0.0:0",
        config,
        barkeep::clock::Clock::System,
        move |addr| {
            let (method, path) = CHANGE;
            let from_outside = SocketAddr::new(outside, addr.port());
            let (status, body) = send(from_outside, method, path, &[], None);
            assert_eq!(status, 403, "{body}");
            assert_eq!(json(&body)["error"], "forbidden", "{body}");
            let token = format!("Bearer {TOKEN}");
            let (status, _) = send(
                from_outside,
                method,
                path,
                &[("Authorization", &token)],
                None,
            );
            assert_eq!(status, 403, "a token nobody configured opens nothing");
            let (status, body) = send(from_outside, "GET", "/streaming/config/workers", &[], None);
            assert!(status != 403, "reads are open: {status} {body}");
            let loopback = SocketAddr::from(([127, 0, 0, 1], addr.port()));
            let (status, body) = send(loopback, method, path, &[], None);
            assert!(status != 401 && status != 403, "{status} {body}");
        },
    );
}

fn wall_s() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Yahoo's chart API for AAPL: the quote (`interval=1d&range=1d`) at the current second, or the
/// HTML 500 of an outage while `failing`; a history window (`period1`) has no bars.
fn yahoo(seen: &fixture::Seen, failing: &AtomicBool) -> Reply {
    if seen.q("period1").is_some() {
        return Reply::ok(
            r#"{"chart":{"result":[{"meta":{"symbol":"AAPL"},"timestamp":[],"indicators":{"quote":[{}]}}],"error":null}}"#,
        );
    }
    if failing.load(Ordering::SeqCst) {
        return Reply::text(500, "<html><body>Internal Server Error</body></html>");
    }
    let sec = wall_s();
    Reply::ok(format!(
        r#"{{"chart":{{"result":[{{"meta":{{"symbol":"AAPL","regularMarketPrice":{},"regularMarketTime":{sec},"regularMarketVolume":{}}}}}],"error":null}}}}"#,
        100.0 + (sec % 3) as f64 * 0.01,
        1_000 + sec % 1_000
    ))
}

/// Twelve Data's `/quote` for AAPL: a flat object, `close` as a string at `last_quote_at`.
fn twelvedata(seen: &fixture::Seen) -> Reply {
    if seen.path != "/quote" {
        return Reply::ok(r#"{"code":404,"message":"not found","status":"error"}"#);
    }
    let sec = wall_s();
    Reply::ok(format!(
        r#"{{"symbol":"AAPL","close":"{:.4}","volume":"{}","last_quote_at":{sec},"is_market_open":true}}"#,
        100.005 + (sec % 3) as f64 * 0.01,
        2_000 + sec % 1_000
    ))
}

/// Both fixtures, on a runtime of their own; `failing` makes Yahoo answer 500.
struct Providers {
    _rt: tokio::runtime::Runtime,
    yahoo: HttpFixture,
    twelvedata: HttpFixture,
    failing: Arc<AtomicBool>,
}

impl Providers {
    fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let failing = Arc::new(AtomicBool::new(false));
        let down = Arc::clone(&failing);
        let (yahoo, twelvedata) = rt.block_on(async {
            (
                HttpFixture::start("", move |seen: &fixture::Seen| yahoo(seen, &down)).await,
                HttpFixture::start("", twelvedata).await,
            )
        });
        Self {
            _rt: rt,
            yahoo,
            twelvedata,
            failing,
        }
    }

    /// Quote requests Yahoo got.
    fn yahoo_quotes(&self) -> usize {
        self.yahoo
            .requests()
            .iter()
            .filter(|s| s.q("period1").is_none())
            .count()
    }

    fn twelvedata_quotes(&self) -> usize {
        self.twelvedata
            .requests()
            .iter()
            .filter(|s| s.path == "/quote")
            .count()
    }

    fn config(&self, dir: &std::path::Path, interval: &str) -> barkeep::config::Config {
        let mut vars = vars(dir, &[]);
        vars.retain(|(k, _)| *k != "SYMBOLS");
        vars.extend([
            ("SYMBOLS", "AAPL".to_string()),
            ("SOURCES", "yahoo,twelvedata".into()),
            ("COLLECTION_INTERVAL", interval.into()),
            ("YAHOO_BASE_URL", self.yahoo.base.clone()),
            ("YAHOO_RATE_PER_MINUTE", "none".into()),
            ("TWELVEDATA_BASE_URL", self.twelvedata.base.clone()),
            ("TWELVEDATA_API_KEY", "td-control-key".into()),
            ("TWELVEDATA_RATE_PER_MINUTE", "none".into()),
            ("TWELVEDATA_RATE_PER_DAY", "none".into()),
            ("BREAKER_FAILURES", "1000".into()),
        ]);
        config_of(&vars)
    }
}

const WAIT: Duration = Duration::from_secs(20);

fn post(addr: SocketAddr, path: &str) -> serde_json::Value {
    let (status, body) = send(addr, "POST", path, &[], None);
    assert_eq!(status, 200, "POST {path}: {body}");
    json(&body)
}

fn put(addr: SocketAddr, path: &str, body: &str) -> (u16, serde_json::Value) {
    let (status, answer) = send(
        addr,
        "PUT",
        path,
        &[("Content-Type", "application/json")],
        Some(body),
    );
    (status, json(&answer))
}

fn worker(addr: SocketAddr, id: &str) -> serde_json::Value {
    let (status, w) = get_json(addr, &format!("/streaming/config/workers/{id}"));
    assert_eq!(status, 200, "{w}");
    w
}

/// Waits until `f` holds, failing with `what`.
fn until(what: &str, mut f: impl FnMut() -> bool) {
    wait_for(WAIT, || f().then_some(())).unwrap_or_else(|| panic!("timed out: {what}"));
}

#[test]
fn a_stopped_worker_gets_no_request_while_the_fallback_serves_and_is_asked_again_once_started() {
    let providers = Providers::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = providers.config(dir.path(), "200ms");
    in_process(config, barkeep::clock::Clock::System, move |addr| {
        until("Yahoo serves", || providers.yahoo_quotes() >= 3);
        assert_eq!(providers.twelvedata_quotes(), 0, "the primary answers");
        let w = post(addr, "/streaming/config/workers/market_data:yahoo/stop");
        assert_eq!(w["status"], "stopped", "{w}");
        assert_eq!(w["changed"], true, "{w}");
        // A tick that had passed the switch before it flipped may still ask once: counted
        // from the first tick that went to the fallback.
        until("the fallback is asked", || {
            providers.twelvedata_quotes() >= 1
        });
        let stopped_at = providers.yahoo_quotes();
        until("the fallback serves ticks", || {
            providers.twelvedata_quotes() >= 6
        });
        assert_eq!(
            providers.yahoo_quotes(),
            stopped_at,
            "no request to a stopped worker's source"
        );
        let (_, health) = get_json(addr, "/health");
        assert_eq!(
            health["symbols"]["AAPL"]["source"], "twelvedata",
            "{health}"
        );
        let w = worker(addr, "market_data:yahoo");
        assert_eq!(w["status"], "stopped", "{w}");
        let history = worker(addr, "history:yahoo");
        assert_eq!(
            history["status"], "running",
            "the other data type is its own worker"
        );

        let w = post(addr, "/streaming/config/workers/market_data:yahoo/start");
        assert_eq!(w["status"], "running", "{w}");
        until("Yahoo is asked again", || {
            providers.yahoo_quotes() >= stopped_at + 2
        });
        let w = worker(addr, "market_data:yahoo");
        assert!(w["success_count"].as_u64() >= Some(4), "{w}");
        assert_eq!(w["current_vendor"], "yahoo", "{w}");
        assert!(
            w["last_run_ms"].as_i64().is_some() && w["next_run_ms"].as_i64().is_some(),
            "{w}"
        );

        // stop-all: no source left, nothing asked.
        let all = post(addr, "/streaming/config/workers/stop-all");
        assert_eq!(all["count"], 4, "{all}");
        until("the last tick ended", || {
            let (_, w) = get_json(addr, "/streaming/config/workers");
            w["workers"]
                .as_array()
                .is_some_and(|ws| ws.iter().all(|w| w["status"] == "stopped"))
        });
        let all = post(addr, "/streaming/config/workers/start-all");
        assert_eq!(all["changed"], 4, "{all}");
    });
}

#[test]
fn telemetry_shows_the_fallback_that_served_after_the_first_source_failed() {
    let providers = Providers::start();
    providers.failing.store(true, Ordering::SeqCst);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = providers.config(dir.path(), "200ms");
    in_process(config, barkeep::clock::Clock::System, move |addr| {
        until("the fallback serves", || providers.twelvedata_quotes() >= 3);
        let (status, t) = get_json(addr, "/streaming/config/telemetry/market_data?limit=10");
        assert_eq!(status, 200, "{t}");
        let records = t["records"].as_array().expect("records");
        assert!(records.len() <= 10 && records.len() >= 4, "{t}");
        let times: Vec<i64> = records
            .iter()
            .map(|r| r["at_ms"].as_i64().expect("at"))
            .collect();
        assert!(
            times.windows(2).all(|w| w[0] >= w[1]),
            "newest first: {times:?}"
        );
        // Each tick: Yahoo fails, then Twelve Data serves as the fallback.
        let served = records
            .iter()
            .position(|r| r["vendor"] == "twelvedata")
            .expect("a twelvedata record");
        let fell_back = &records[served];
        assert_eq!(fell_back["outcome"], "served", "{fell_back}");
        assert_eq!(fell_back["fallback"], true, "{fell_back}");
        assert_eq!(
            fell_back["symbols"],
            serde_json::json!(["AAPL"]),
            "{fell_back}"
        );
        let failed = records[served..]
            .iter()
            .find(|r| r["vendor"] == "yahoo")
            .expect("the failure before it");
        assert_eq!(failed["outcome"], "failed", "{failed}");
        assert_eq!(failed["fallback"], false, "{failed}");
        assert!(
            failed["error"].as_str().is_some_and(|e| e.contains("500")),
            "{failed}"
        );
        assert!(failed["latency_ms"].as_f64().is_some(), "{failed}");
        let w = worker(addr, "market_data:yahoo");
        assert!(w["error_count"].as_u64() >= Some(3), "{w}");
        assert!(w["last_error"]["message"].as_str().is_some(), "{w}");

        // Two retries to Yahoo before falling back, recorded as such.
        let (status, c) = put(
            addr,
            "/streaming/config/cadences/market_data",
            r#"{"retry_attempts": 2, "retry_backoff_ms": 10}"#,
        );
        assert_eq!(status, 200, "{c}");
        until("a second retry is recorded", || {
            let (_, t) = get_json(addr, "/streaming/config/telemetry/market_data?limit=20");
            t["records"].as_array().is_some_and(|rs| {
                rs.iter()
                    .any(|r| r["vendor"] == "yahoo" && r["retry_count"] == 2)
            })
        });
        let (status, e) = get_json(addr, "/streaming/config/telemetry/market_data?limit=1001");
        assert_eq!(status, 400, "{e}");
        assert_eq!(e["field"], "limit", "{e}");
    });
}

/// The mean time between the newest `n` Yahoo requests (one per tick), by the sidecar's own
/// clock.
fn tick_spacing_ms(addr: SocketAddr, n: usize) -> Option<f64> {
    let (_, t) = get_json(
        addr,
        &format!("/streaming/config/telemetry/market_data?limit={n}"),
    );
    let times: Vec<i64> = t["records"]
        .as_array()?
        .iter()
        .filter(|r| r["vendor"] == "yahoo")
        .filter_map(|r| r["at_ms"].as_i64())
        .collect();
    (times.len() == n).then(|| (times[0] - times[n - 1]) as f64 / (n - 1) as f64)
}

#[test]
fn the_ticks_follow_a_new_cadence_pause_and_resume_and_the_change_survives_a_restart() {
    let providers = Arc::new(Providers::start());
    let dir = tempfile::tempdir().expect("tempdir");
    let p = Arc::clone(&providers);
    in_process(
        providers.config(dir.path(), "100ms"),
        barkeep::clock::Clock::System,
        move |addr| {
            until("ten ticks", || p.yahoo_quotes() >= 10);
            let before = tick_spacing_ms(addr, 8).expect("eight ticks");
            let (status, c) = put(
                addr,
                "/streaming/config/cadences/market_data",
                r#"{"interval_ms": 400}"#,
            );
            assert_eq!(status, 200, "{c}");
            assert_eq!(c["interval_ms"], 400, "{c}");
            assert_eq!(c["configured"]["interval_ms"], 100, "{c}");
            let changed_at = p.yahoo_quotes();
            until("eight ticks at the new cadence", || {
                p.yahoo_quotes() >= changed_at + 9
            });
            let after = tick_spacing_ms(addr, 8).expect("eight ticks");
            // Ticks are never closer than their interval (late ones are skipped, not bunched).
            assert!(before < 300.0, "100 ms ticks: {before} ms apart");
            assert!(after >= 350.0, "400 ms ticks: {after} ms apart");
            assert!(after > 2.0 * before, "{before} → {after}");

            // Paused: nothing asked, /health says so.
            let (status, c) = put(
                addr,
                "/streaming/config/cadences/market_data",
                r#"{"enabled": false}"#,
            );
            assert_eq!((status, c["enabled"].as_bool()), (200, Some(false)), "{c}");
            let (code, health) = get_json(addr, "/health");
            assert_eq!(
                (code, health["status"].as_str()),
                (200, Some("paused")),
                "{health}"
            );
            assert_eq!(health["collection"]["enabled"], false, "{health}");
            assert_eq!(worker(addr, "market_data:yahoo")["status"], "paused");
            let paused_at = p.yahoo_quotes() + p.twelvedata_quotes();
            // Five intervals without a request; one tick may have been under way.
            let asked = wait_for(Duration::from_secs(2), || {
                (p.yahoo_quotes() + p.twelvedata_quotes() > paused_at + 1).then_some(())
            });
            assert!(asked.is_none(), "a paused collector asks nobody");
            put(
                addr,
                "/streaming/config/cadences/market_data",
                r#"{"enabled": true}"#,
            );
            until("collection resumes", || p.yahoo_quotes() > paused_at + 2);
            post(addr, "/streaming/config/workers/history:twelvedata/stop");
        },
    );
    // The same environment: the run-time changes are back.
    let p = Arc::clone(&providers);
    in_process(
        providers.config(dir.path(), "100ms"),
        barkeep::clock::Clock::System,
        move |addr| {
            let (_, c) = get_json(addr, "/streaming/config/cadences/market_data");
            assert_eq!(
                (c["interval_ms"].as_u64(), c["enabled"].as_bool()),
                (Some(400), Some(true)),
                "{c}"
            );
            assert_eq!(worker(addr, "history:twelvedata")["status"], "stopped");
            assert_eq!(worker(addr, "market_data:twelvedata")["status"], "running");
            let start = p.yahoo_quotes();
            until("collecting", || p.yahoo_quotes() > start + 1);
            // DELETE returns to the environment's cadence, and forgets the change.
            let (status, body) = send(
                addr,
                "DELETE",
                "/streaming/config/cadences/market_data",
                &[],
                None,
            );
            assert_eq!(status, 200, "{body}");
            assert_eq!(json(&body)["interval_ms"], 100, "{body}");
            put(
                addr,
                "/streaming/config/cadences/market_data",
                r#"{"retry_attempts": 1}"#,
            );
        },
    );
    // An edited COLLECTION_INTERVAL wins over a change made under the old one.
    in_process(
        providers.config(dir.path(), "250ms"),
        barkeep::clock::Clock::System,
        |addr| {
            let (_, c) = get_json(addr, "/streaming/config/cadences/market_data");
            assert_eq!(
                (c["interval_ms"].as_u64(), c["retry_attempts"].as_u64()),
                (Some(250), Some(0)),
                "{c}"
            );
        },
    );
}

#[test]
fn a_bad_change_is_a_400_naming_the_field_and_unknown_names_are_404s() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_of(&vars(dir.path(), &[]));
    in_process(config, barkeep::clock::Clock::System, |addr| {
        let path = "/streaming/config/cadences/market_data";
        for (body, field) in [
            (r#"{"interval_ms": 5}"#, "interval_ms"),
            (r#"{"interval_ms": 2000}"#, "interval_ms"),
            (r#"{"interval_ms": "fast"}"#, "interval_ms"),
            (r#"{"retry_attempts": -1}"#, "retry_attempts"),
            (r#"{"retry_backoff_ms": 600000}"#, "retry_backoff_ms"),
            (r#"{"enabled": "yes"}"#, "enabled"),
            (r#"{"interval_ms": 100, "intervl_ms": 5}"#, "intervl_ms"),
            ("[1, 2]", "."),
            ("", "."),
        ] {
            let (status, e) = put(addr, path, body);
            assert_eq!(status, 400, "{body}: {e}");
            assert_eq!(e["field"], field, "{body}: {e}");
            assert_eq!(e["error"], "bad_request", "{body}: {e}");
        }
        let (_, e) = put(addr, path, r#"{"intervl_ms": 5}"#);
        assert!(
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("intervl_ms")),
            "{e}"
        );
        let (_, e) = put(addr, path, r#"{"interval_ms": 2000}"#);
        assert!(
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("TIMEFRAMES")),
            "1 s bars: {e}"
        );
        let (_, c) = get_json(addr, path);
        assert_eq!(c["interval_ms"], 1_000, "nothing refused was applied: {c}");
        for (method, path, status) in [
            ("GET", "/streaming/config/workers/market_data:nobody", 404),
            ("POST", "/streaming/config/workers/bars:synthetic/stop", 404),
            ("GET", "/streaming/config/cadences/games", 404),
            ("GET", "/streaming/config/telemetry/games", 404),
            ("POST", "/streaming/config/workers", 405),
            ("GET", "/streaming/config/workers/stop-all", 405),
        ] {
            let (got, body) = send(addr, method, path, &[], None);
            assert_eq!(got, status, "{method} {path}: {body}");
        }
    });
}
