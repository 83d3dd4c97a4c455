//! End to end over local provider fixtures (issue 5, "What it must show"):
//!
//! - fallback: Yahoo then Twelve Data, both real HTTP fixture servers in the providers'
//!   documented formats; Yahoo starts answering 500 → its breaker opens, Twelve Data serves the
//!   1s bars with no gap; Yahoo recovers → the half-open trial succeeds and Yahoo serves again.
//!   `/health`, `/metrics/json`, `/bars` and the stored bars show each step.
//! - push stream: a Binance kline WebSocket drops mid-stream and refuses connections for a
//!   while; barkeep reconnects, resubscribes and backfills the outage over REST klines, and the
//!   stored 1s bars have no gap and no duplicate.
//!
//! Both run on the real wall clock. The paused tokio clock (as in `tests/fallback.rs`) does not
//! mix with real sockets: while a request is on the wire the runtime looks idle, so a paused
//! clock jumps straight to the next timer and fires the HTTP client's timeout and the tick
//! deadline spuriously; and the providers' timestamps come from the wall clock, which a paused
//! clock would leave behind. Instead the breaker's open period is configured short
//! (`BREAKER_OPEN=2s`; the same code path as the 60 s default), and the two tests together take
//! about 10 s. Nothing leaves 127.0.0.1.

mod common;

#[path = "providers/fixture.rs"]
#[allow(dead_code, reason = "the WebSocket script fixture is not used here")]
mod fixture;

#[path = "e2e/binance_stream.rs"]
mod binance_stream;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use barkeep::clock::Clock;
use barkeep::config::Config;
use parking_lot::Mutex;

use binance_stream::BinanceStream;
use common::{Sidecar, get_json, log_field, wait_for};
use fixture::{HttpFixture, Reply};

const KEY: &str = "e2e-twelvedata-key";
/// `BREAKER_OPEN` in these tests.
const OPEN_FOR: Duration = Duration::from_secs(2);
/// How long any one step may take before the test gives up.
const STEP: Duration = Duration::from_secs(10);

fn wall_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A bar as stored in SQLite.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    ts: i64,
    close: f64,
    volume: f64,
    source: String,
}

/// Every 1s bar of `symbol` in SQLite, oldest first.
fn stored(db: &Path, symbol: &str) -> Vec<Row> {
    let conn = rusqlite::Connection::open(db).expect("open db");
    let mut stmt = conn
        .prepare(
            "SELECT ts, close, volume, source FROM bars
             WHERE symbol = ?1 AND timeframe = '1s' ORDER BY ts",
        )
        .expect("prepare");
    stmt.query_map([symbol], |r| {
        Ok(Row {
            ts: r.get(0)?,
            close: r.get(1)?,
            volume: r.get(2)?,
            source: r.get(3)?,
        })
    })
    .expect("query")
    .map(|r| r.expect("row"))
    .collect()
}

fn gap_rows(db: &Path, symbol: &str) -> Vec<(i64, i64)> {
    let conn = rusqlite::Connection::open(db).expect("open db");
    let mut stmt = conn
        .prepare("SELECT from_ts, to_ts FROM gaps WHERE symbol = ?1 ORDER BY from_ts")
        .expect("prepare");
    stmt.query_map([symbol], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .map(|r| r.expect("row"))
        .collect()
}

/// One bar per second from the first to the last: no gap, no duplicate.
#[track_caller]
fn assert_contiguous(rows: &[Row]) {
    assert!(!rows.is_empty(), "no bars stored");
    let broken: Vec<(i64, i64)> = rows
        .windows(2)
        .filter(|w| w[1].ts - w[0].ts != 1_000)
        .map(|w| (w[0].ts, w[1].ts))
        .collect();
    assert!(
        broken.is_empty(),
        "1s bars not contiguous at {broken:?}; all: {rows:?}"
    );
}

/// The sources of consecutive bars with repeats collapsed: `[yahoo, twelvedata, yahoo]`.
fn runs(rows: &[Row]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in rows {
        if out.last() != Some(&r.source) {
            out.push(r.source.clone());
        }
    }
    out
}

/// `(ts, source)` of the 1s bars `/bars` serves (stored and not yet flushed), oldest first.
fn served_bars(addr: SocketAddr, symbol: &str) -> Vec<(i64, String)> {
    let (status, body) = get_json(addr, &format!("/bars/{symbol}?tf=1s&limit=1000"));
    assert_eq!(status, 200, "{body}");
    body["bars"]
        .as_array()
        .expect("bars array")
        .iter()
        .map(|b| {
            (
                b["ts"].as_i64().expect("ts"),
                b["source"].as_str().expect("source").to_string(),
            )
        })
        .collect()
}

fn health(addr: SocketAddr) -> serde_json::Value {
    get_json(addr, "/health").1
}

fn breaker_state(addr: SocketAddr, source: &str) -> String {
    health(addr)["sources"][source]["state"]
        .as_str()
        .unwrap_or_else(|| panic!("/health has no sources.{source}.state"))
        .to_string()
}

fn metrics(addr: SocketAddr) -> serde_json::Value {
    let (status, body) = get_json(addr, "/metrics/json");
    assert_eq!(status, 200, "{body}");
    body
}

/// A counter from `/metrics/json` (`None` when the series is not exported).
fn counter(metrics: &serde_json::Value, series: &str) -> Option<u64> {
    metrics["counters"][series].as_u64()
}

// ---------------------------------------------------------------------------------------------
// Fallback, breaker and recovery
// ---------------------------------------------------------------------------------------------

/// What the Yahoo fixture answered, and when.
#[derive(Debug, Clone, Copy)]
struct Answered {
    at: Instant,
    status: u16,
}

/// The same gently moving market from both providers, a little apart so that a Twelve Data
/// quote is never an exact re-delivery of a Yahoo one.
fn market_price(sec: i64, offset: f64) -> f64 {
    100.0 + (sec % 3) as f64 * 0.001 + offset
}

/// Yahoo's chart API for AAPL: `meta.regularMarketPrice` at `meta.regularMarketTime` (Unix s),
/// with the session's cumulative volume; while `failing`, the HTML 500 page of an outage.
fn yahoo_fixture_handler(
    failing: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Answered>>>,
) -> impl Fn(&fixture::Seen) -> Reply + Send + Sync + 'static {
    let volume = AtomicU64::new(40_000_000);
    move |seen| {
        let reply = if seen.path != "/v8/finance/chart/AAPL" {
            Reply::json(
                404,
                r#"{"chart":{"result":null,"error":{"code":"Not Found","description":"No data found, symbol may be delisted"}}}"#,
            )
        } else if failing.load(Ordering::SeqCst) {
            Reply {
                status: 500,
                body: "<!DOCTYPE html><html><head><title>Yahoo</title></head><body>Internal Server Error</body></html>".into(),
                headers: vec![("content-type".into(), "text/html; charset=utf-8".into())],
                delay: Duration::ZERO,
                hold: None,
            }
        } else {
            let sec = wall_ms().div_euclid(1_000);
            let v = volume.fetch_add(100, Ordering::SeqCst);
            Reply::ok(format!(
                r#"{{"chart":{{"result":[{{"meta":{{"currency":"USD","symbol":"AAPL","exchangeName":"NMS","instrumentType":"EQUITY","regularMarketPrice":{},"regularMarketTime":{sec},"regularMarketVolume":{v},"gmtoffset":-18000,"timezone":"EST","exchangeTimezoneName":"America/New_York","dataGranularity":"1d","range":"1d"}},"timestamp":[{sec}],"indicators":{{"quote":[{{"open":[100.0],"high":[100.01],"low":[99.99],"close":[100.0],"volume":[{v}]}}]}}}}],"error":null}}}}"#,
                market_price(sec, 0.0)
            ))
        };
        log.lock().push(Answered {
            at: Instant::now(),
            status: reply.status,
        });
        reply
    }
}

/// Twelve Data `/quote?symbol=AAPL` (key in `Authorization: apikey …`): one symbol answers a
/// flat object, price `close` as a string at `last_quote_at` (Unix s).
fn twelvedata_fixture_handler(
    calls: Arc<AtomicU64>,
) -> impl Fn(&fixture::Seen) -> Reply + Send + Sync + 'static {
    let volume = AtomicU64::new(50_000_000);
    move |seen| {
        calls.fetch_add(1, Ordering::SeqCst);
        if seen.headers.get("authorization").map(String::as_str)
            != Some(format!("apikey {KEY}").as_str())
        {
            return Reply::ok(
                r#"{"code":401,"message":"**apikey** parameter is incorrect or not specified.","status":"error"}"#,
            );
        }
        if seen.path != "/quote" || seen.q("symbol") != Some("AAPL") {
            return Reply::ok(
                r#"{"code":404,"message":"**symbol** not found. Please specify it correctly according to API Documentation.","status":"error"}"#,
            );
        }
        let sec = wall_ms().div_euclid(1_000);
        let day = sec - sec.rem_euclid(86_400);
        let v = volume.fetch_add(100, Ordering::SeqCst);
        Reply::ok(format!(
            r#"{{"symbol":"AAPL","name":"Apple Inc","exchange":"NASDAQ","mic_code":"XNGS","currency":"USD","datetime":"2024-01-15","timestamp":{day},"last_quote_at":{sec},"open":"100.00","high":"100.01","low":"99.99","close":"{:.4}","volume":"{v}","previous_close":"99.90","change":"0.10","percent_change":"0.10","average_volume":"59000000","is_market_open":true}}"#,
            market_price(sec, 0.0005)
        ))
    }
}

fn fallback_config(db: &Path, yahoo: &str, twelvedata: &str) -> Config {
    let vars: Vec<(&str, String)> = vec![
        ("SQLITE_PATH", db.to_str().expect("utf-8 path").to_string()),
        ("SYMBOLS", "AAPL".into()),
        ("SOURCES", "yahoo,twelvedata".into()),
        // The fixture providers trade around the clock, whatever NYSE's hours.
        ("MARKET_HOURS", "AAPL:always".into()),
        ("TIMEFRAMES", "1s".into()),
        ("COLLECTION_INTERVAL", "250ms".into()),
        ("TICK_DEADLINE", "250ms".into()),
        ("BREAKER_FAILURES", "5".into()),
        ("BREAKER_OPEN", format!("{}ms", OPEN_FOR.as_millis())),
        ("WARMUP_BARS", "0".into()),
        ("BOOTSTRAP_ON_START", "false".into()),
        ("BATCH_WRITE_INTERVAL", "100ms".into()),
        ("PROVIDER_HTTP_TIMEOUT", "2s".into()),
        ("YAHOO_BASE_URL", yahoo.into()),
        ("YAHOO_RATE_PER_MINUTE", "none".into()),
        ("TWELVEDATA_BASE_URL", twelvedata.into()),
        ("TWELVEDATA_API_KEY", KEY.into()),
        ("TWELVEDATA_RATE_PER_MINUTE", "none".into()),
        ("TWELVEDATA_RATE_PER_DAY", "none".into()),
    ];
    Config::from_lookup(move |name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    })
    .expect("valid config")
}

#[test]
fn failing_provider_falls_back_without_a_gap_and_serves_again_after_its_breaker_closes() {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("e2e.db");
    let yahoo_failing = Arc::new(AtomicBool::new(false));
    let yahoo_log = Arc::new(Mutex::new(Vec::new()));
    let twelvedata_calls = Arc::new(AtomicU64::new(0));

    rt.block_on(async {
        let yahoo = HttpFixture::start(
            "",
            yahoo_fixture_handler(Arc::clone(&yahoo_failing), Arc::clone(&yahoo_log)),
        )
        .await;
        let twelvedata = HttpFixture::start(
            "",
            twelvedata_fixture_handler(Arc::clone(&twelvedata_calls)),
        )
        .await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let app = tokio::spawn(barkeep::app::run_with(
            fallback_config(&db, &yahoo.base, &twelvedata.base),
            listener,
            Clock::System,
            async {
                let _ = stop_rx.await;
            },
        ));
        let scenario = {
            let (failing, calls) = (Arc::clone(&yahoo_failing), Arc::clone(&twelvedata_calls));
            tokio::task::spawn_blocking(move || fallback_scenario(addr, &failing, &calls))
        };
        let checked = scenario.await;
        let _ = stop_tx.send(());
        tokio::time::timeout(Duration::from_secs(15), app)
            .await
            .expect("shutdown in time")
            .expect("join")
            .expect("clean shutdown");
        if let Err(panic) = checked {
            std::panic::resume_unwind(panic.into_panic());
        }
    });

    // Stored after shutdown: one bar a second throughout, Yahoo → Twelve Data → Yahoo.
    let rows = stored(&db, "AAPL");
    assert_contiguous(&rows);
    assert_eq!(
        runs(&rows),
        ["yahoo", "twelvedata", "yahoo"],
        "which source served each bar: {rows:?}"
    );
    assert_eq!(gap_rows(&db, "AAPL"), [], "no gap recorded");

    // The breaker kept Yahoo alone for the whole open period: after the 5th consecutive
    // failure, and after every failed trial, nothing reached Yahoo for BREAKER_OPEN.
    let log = yahoo_log.lock().clone();
    let first_failure = log
        .iter()
        .position(|a| a.status == 500)
        .expect("Yahoo failed");
    let streak = log[first_failure..]
        .iter()
        .take_while(|a| a.status == 500)
        .count();
    assert!(streak >= 5, "5 failures before the breaker opens: {log:?}");
    assert!(
        log[first_failure..first_failure + 5]
            .windows(2)
            .all(|w| w[1].at - w[0].at < OPEN_FOR),
        "the first 5 failures came tick after tick: {log:?}"
    );
    let opened = first_failure + 4;
    for (i, pair) in log.windows(2).enumerate().skip(opened) {
        if pair[0].status == 500 {
            assert!(
                pair[1].at - pair[0].at >= OPEN_FOR,
                "request {} reached Yahoo {:?} after failure {i}, within the open period",
                i + 1,
                pair[1].at - pair[0].at
            );
        }
    }
    assert_eq!(
        log.last().map(|a| a.status),
        Some(200),
        "Yahoo serves at the end"
    );
}

/// The live part of the fallback test, against the running sidecar.
fn fallback_scenario(addr: SocketAddr, yahoo_failing: &AtomicBool, twelvedata_calls: &AtomicU64) {
    // 1. Yahoo healthy: it serves every bar and Twelve Data is never asked.
    let healthy = wait_for(STEP, || {
        let bars = served_bars(addr, "AAPL");
        (bars.len() >= 3).then_some(bars)
    })
    .expect("three 1s bars while Yahoo is healthy");
    assert!(healthy.iter().all(|(_, s)| s == "yahoo"), "{healthy:?}");
    assert_eq!(twelvedata_calls.load(Ordering::SeqCst), 0, "priority order");
    let h = health(addr);
    assert_eq!(h["sources"]["yahoo"]["state"], "closed", "{h}");
    assert_eq!(h["sources"]["twelvedata"]["state"], "closed", "{h}");
    assert_eq!(h["symbols"]["AAPL"]["source"], "yahoo", "{h}");
    let skew = h["sources"]["yahoo"]["clock_skew_ms"].as_i64();
    assert!(
        skew.is_some_and(|s| s.abs() <= 1_000),
        "fixture Date headers: {h}"
    );
    assert!(
        h["sources"]["twelvedata"]["clock_skew_ms"].is_null(),
        "never asked: {h}"
    );
    let m = metrics(addr);
    assert_eq!(
        counter(&m, r#"source_breaker_opens_total{source="yahoo"}"#),
        Some(0),
        "{m}"
    );
    assert!(
        m["gauges"][r#"source_clock_skew_ms{source="yahoo"}"#].is_i64(),
        "{m}"
    );

    // 2. Yahoo answers 500: five failures open its breaker; Twelve Data takes over at once.
    yahoo_failing.store(true, Ordering::SeqCst);
    wait_for(STEP, || {
        (breaker_state(addr, "yahoo") == "open").then_some(())
    })
    .expect("/health shows Yahoo's breaker open");
    let h = health(addr);
    assert_eq!(h["status"], "degraded", "an open breaker degrades: {h}");
    assert_eq!(h["symbols"]["AAPL"]["source"], "twelvedata", "{h}");
    assert!(h["sources"]["yahoo"]["errors"].as_u64() >= Some(5), "{h}");
    assert_eq!(h["sources"]["twelvedata"]["state"], "closed", "{h}");
    let m = metrics(addr);
    assert!(
        counter(&m, r#"source_breaker_opens_total{source="yahoo"}"#) >= Some(1),
        "{m}"
    );
    assert_eq!(
        counter(&m, r#"source_breaker_opens_total{source="twelvedata"}"#),
        Some(0),
        "{m}"
    );
    assert_eq!(
        m["gauges"][r#"source_breaker_state{source="yahoo"}"#], 1,
        "{m}"
    );
    wait_for(STEP, || {
        served_bars(addr, "AAPL")
            .iter()
            .any(|(_, s)| s == "twelvedata")
            .then_some(())
    })
    .expect("Twelve Data serves bars while Yahoo is out");

    // 3. Yahoo recovers: after the open period the half-open trial succeeds, the breaker
    //    closes and Yahoo serves again; Twelve Data is not asked any more.
    yahoo_failing.store(false, Ordering::SeqCst);
    wait_for(STEP, || {
        (breaker_state(addr, "yahoo") == "closed").then_some(())
    })
    .expect("/health shows Yahoo's breaker closed again");
    let calls_at_recovery = twelvedata_calls.load(Ordering::SeqCst);
    let recovered = wait_for(STEP, || {
        let bars = served_bars(addr, "AAPL");
        let last_backup = bars.iter().rposition(|(_, s)| s == "twelvedata")?;
        (bars[last_backup + 1..]
            .iter()
            .filter(|(_, s)| s == "yahoo")
            .count()
            >= 2)
            .then_some(bars)
    })
    .expect("Yahoo serves the bars after the backup's");
    assert_eq!(
        twelvedata_calls.load(Ordering::SeqCst),
        calls_at_recovery,
        "nothing falls back once Yahoo is healthy again"
    );
    let h = health(addr);
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["sources"]["yahoo"]["state"], "closed", "{h}");
    assert_eq!(h["symbols"]["AAPL"]["source"], "yahoo", "{h}");
    let m = metrics(addr);
    assert_eq!(
        m["gauges"][r#"source_breaker_state{source="yahoo"}"#], 0,
        "{m}"
    );
    assert_eq!(counter(&m, "gaps_total"), Some(0), "{m}");
    assert!(
        recovered.windows(2).all(|w| w[1].0 - w[0].0 == 1_000),
        "/bars serves contiguous 1s bars: {recovered:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// WebSocket drop, reconnect, backfill
// ---------------------------------------------------------------------------------------------

/// The volume of every kline the REST fixture serves: stream-built 1s bars carry a few
/// hundredths, so a stored bar with this volume came from the backfill.
const HISTORY_VOLUME: f64 = 7.0;

/// Binance REST: `/api/v3/klines` answers 1s rows `[openTime,"o","h","l","c","v",closeTime,…]`
/// (numbers as strings) from `startTime` to `endTime`, up to the live second included, as
/// Binance does. `/api/v3/ticker/24hr` answers 503: REST quotes are out, so bars missing from
/// the stream can only come back through the backfill.
fn binance_rest_handler(seen: &fixture::Seen) -> Reply {
    match seen.path.as_str() {
        "/api/v3/klines" => {
            if seen.q("symbol") != Some("BTCUSDT") {
                return Reply::json(400, r#"{"code":-1121,"msg":"Invalid symbol."}"#);
            }
            if seen.q("interval") != Some("1s") {
                return Reply::json(400, r#"{"code":-1120,"msg":"Invalid interval."}"#);
            }
            let num = |name: &str| seen.q(name).and_then(|v| v.parse::<i64>().ok());
            let (Some(start), Some(end)) = (num("startTime"), num("endTime")) else {
                return Reply::json(
                    400,
                    r#"{"code":-1102,"msg":"Mandatory parameter 'startTime' was not sent, was empty/null, or malformed."}"#,
                );
            };
            let limit = num("limit").unwrap_or(500).clamp(1, 1_000);
            let now = wall_ms();
            let mut rows = Vec::new();
            let mut ts = start.div_euclid(1_000) * 1_000;
            while ts <= end.min(now) && rows.len() < limit as usize {
                let p = binance_stream::price(ts);
                rows.push(format!(
                    r#"[{ts},"{p:.2}","{:.2}","{:.2}","{p:.2}","{HISTORY_VOLUME:.8}",{},"294000.00",42,"3.50000000","147000.00","0"]"#,
                    p + 0.25,
                    p - 0.25,
                    ts + 999
                ));
                ts += 1_000;
            }
            Reply::ok(format!("[{}]", rows.join(",")))
        }
        "/api/v3/ticker/24hr" => Reply::json(
            503,
            r#"{"code":-1001,"msg":"Internal error; unable to process your request. Please try again."}"#,
        ),
        _ => Reply::json(404, r#"{"code":-1000,"msg":"Not found."}"#),
    }
}

#[test]
fn websocket_drop_is_reconnected_resubscribed_and_backfilled_without_gap_or_duplicate() {
    let rt = runtime();
    let (rest, ws) = rt.block_on(async {
        (
            HttpFixture::start("", binance_rest_handler).await,
            BinanceStream::start(Duration::from_millis(100)).await,
        )
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("e2e.db");
    let sidecar = Sidecar::start(
        dir.path(),
        &[
            ("SQLITE_PATH", db.to_str().expect("utf-8 path")),
            ("SYMBOLS", "BTCUSD"),
            ("SOURCES", "binance"),
            ("TIMEFRAMES", "1s"),
            ("COLLECTION_INTERVAL", "200ms"),
            ("WARMUP_BARS", "0"),
            ("BATCH_WRITE_INTERVAL", "100ms"),
            ("BINANCE_BASE_URL", rest.base.as_str()),
            ("BINANCE_WS_URL", ws.url.as_str()),
            ("STREAM_RECONNECT_MIN", "10ms"),
            ("STREAM_RECONNECT_MAX", "100ms"),
            ("STREAM_SILENCE_TIMEOUT", "5s"),
            ("PROVIDER_HTTP_TIMEOUT", "2s"),
            // Every stored bar here must come from the stream or its backfill.
            ("BOOTSTRAP_ON_START", "false"),
        ],
    );
    let addr = sidecar.addr;

    // Streaming: 1s bars form from the kline updates.
    wait_for(STEP, || {
        (served_bars(addr, "BTCUSD").len() >= 3).then_some(())
    })
    .expect("three 1s bars from the stream");
    assert_eq!(ws.connections(), 1);

    // The server drops the connection mid-stream and is unreachable for 3 s.
    let generation = ws.cut(Duration::from_secs(3));
    wait_for(STEP, || (ws.connections() >= 2).then_some(()))
        .expect("barkeep reconnects after the outage");
    assert!(ws.refused() >= 1, "connection attempts during the outage");
    let resumed_at = wait_for(STEP, || {
        ws.sent()
            .into_iter()
            .find_map(|(g, t)| (g == generation).then_some(t))
    })
    .expect("the stream resumes");
    wait_for(STEP, || {
        served_bars(addr, "BTCUSD")
            .last()
            .is_some_and(|(ts, _)| *ts >= resumed_at.div_euclid(1_000) * 1_000 + 2_000)
            .then_some(())
    })
    .expect("bars from the resumed stream");
    let m = metrics(addr);
    let (code, lines) = sidecar.terminate();
    assert_eq!(code, 0, "clean exit; log:\n{}", lines.join("\n"));

    // Stored: one bar a second from first to last, the outage included.
    let rows = stored(&db, "BTCUSD");
    assert_contiguous(&rows);
    assert!(rows.iter().all(|r| r.source == "binance"), "{rows:?}");
    // The outage left a gap in the bars, and it was filled: recorded, then marked repaired.
    let gaps = gap_rows(&db, "BTCUSD");
    assert!(!gaps.is_empty(), "the outage is recorded");
    assert_eq!(
        common::sql_u64(&db, "SELECT count(*) FROM gaps WHERE status <> 'repaired'"),
        0,
        "every gap repaired: {gaps:?}"
    );
    // No duplicate: every bar closed exactly once and written exactly once (the primary key
    // would hide a second write of the same bar; these counts would not).
    let closed = log_field(&lines, "stopped cleanly", "bars_closed").expect("bars_closed");
    let written = log_field(&lines, "stopped cleanly", "bars_written").expect("bars_written");
    assert_eq!(
        (closed, written),
        (rows.len() as u64, rows.len() as u64),
        "bars closed / written vs rows stored"
    );

    // The seconds the stream never delivered were backfilled from the klines history; the
    // stream's own bar just before the outage was kept, not overwritten by the backfill.
    let last_before = ws
        .sent()
        .into_iter()
        .filter_map(|(g, t)| (g < generation).then_some(t))
        .max()
        .expect("sent before the cut");
    let (before, after) = (
        last_before.div_euclid(1_000) * 1_000,
        resumed_at.div_euclid(1_000) * 1_000,
    );
    let missed: Vec<i64> = (before + 1_000..after).step_by(1_000).collect();
    assert!(
        missed.len() >= 2,
        "the outage spans whole seconds: {before}..{after}"
    );
    for ts in &missed {
        let row = rows
            .iter()
            .find(|r| r.ts == *ts)
            .unwrap_or_else(|| panic!("second {ts} of the outage is missing: {rows:?}"));
        assert_eq!(
            row.volume, HISTORY_VOLUME,
            "second {ts} came from the backfill: {row:?}"
        );
        assert_eq!(row.close, binance_stream::price(*ts), "{row:?}");
    }
    let kept = rows
        .iter()
        .find(|r| r.ts == before)
        .expect("the last stream bar before the outage");
    assert!(
        kept.volume < 1.0,
        "the stream-built bar before the outage was rewritten by the backfill: {kept:?}"
    );
    let klines: Vec<_> = rest
        .requests()
        .into_iter()
        .filter(|s| s.path == "/api/v3/klines")
        .collect();
    assert!(
        klines.iter().any(|s| s
            .q("startTime")
            .and_then(|v| v.parse::<i64>().ok())
            .is_some_and(|start| start <= missed[0])),
        "a klines request covers the outage: {klines:?}"
    );

    // Resubscribed: the same SUBSCRIBE on the first and on the new connection.
    let subscribes: Vec<(usize, serde_json::Value)> = ws
        .received()
        .into_iter()
        .map(|(n, text)| {
            (
                n,
                serde_json::from_str::<serde_json::Value>(&text).expect("JSON frame"),
            )
        })
        .filter(|(_, v)| v["method"] == "SUBSCRIBE")
        .collect();
    assert_eq!(subscribes.len(), 2, "{subscribes:?}");
    assert_eq!(subscribes[0].0, 0);
    assert_ne!(
        subscribes[1].0, 0,
        "the second SUBSCRIBE is on a new connection"
    );
    for (_, s) in &subscribes {
        assert_eq!(s["params"], serde_json::json!(["btcusdt@kline_1m"]), "{s}");
    }

    // Metrics (taken just before shutdown): the gap was fetched again off the tick.
    assert_eq!(
        counter(&m, "gaps_repaired_total"),
        counter(&m, "gaps_total"),
        "{m}"
    );
    assert!(
        counter(&m, "repaired_bars_total") >= Some(missed.len() as u64),
        "{m}"
    );
    assert!(
        counter(&m, "stream_reconnects_total") >= Some(1),
        "/metrics/json has no stream_reconnects_total ≥ 1: {}",
        m["counters"]
    );
}
