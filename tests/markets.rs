//! Real markets (issue 10, "What it must show"): a provider that answers like a closed market —
//! Yahoo's chart API with the same last trade of Friday's session forever — against the
//! symbol's calendar, on a clock set to a Saturday; and restarts, where the validator and the
//! simulated market must continue from the stored history.
//!
//! The sidecar runs in-process on [`Clock::tokio`] anchored at the chosen instant (tokio's clock
//! is not paused, so it runs in real time from there); the fixture is a real HTTP server on
//! 127.0.0.1 answering in Yahoo's documented format.

mod common;

#[path = "providers/fixture.rs"]
#[allow(dead_code, reason = "the WebSocket script fixture is not used here")]
mod fixture;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use barkeep::clock::Clock;
use barkeep::config::Config;

use common::{Sidecar, get_json, sql_u64, wait_for};
use fixture::{HttpFixture, Reply};

/// Friday 2026-12-04 15:59:58 New York: the last trade of the week's session.
const LAST_TRADE_S: i64 = 1_796_417_998;
/// Saturday 2026-12-05 12:00 UTC.
const SATURDAY_MS: i64 = 1_796_472_000_000;
/// Monday 2026-12-07 09:30 New York.
const MONDAY_OPEN_MS: i64 = 1_796_653_800_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Yahoo's chart answer for AAPL after the close: the same price at the same time, always.
fn closed_market(seen: &fixture::Seen) -> Reply {
    if seen.path != "/v8/finance/chart/AAPL" {
        return Reply::json(
            404,
            r#"{"chart":{"result":null,"error":{"code":"Not Found","description":"No data found, symbol may be delisted"}}}"#,
        );
    }
    let t = LAST_TRADE_S;
    Reply::ok(format!(
        r#"{{"chart":{{"result":[{{"meta":{{"currency":"USD","symbol":"AAPL","exchangeName":"NMS","instrumentType":"EQUITY","regularMarketPrice":191.5,"regularMarketTime":{t},"regularMarketVolume":51000000,"gmtoffset":-18000,"timezone":"EST","exchangeTimezoneName":"America/New_York","dataGranularity":"1d","range":"1d"}},"timestamp":[{t}],"indicators":{{"quote":[{{"open":[190.0],"high":[192.0],"low":[189.5],"close":[191.5],"volume":[51000000]}}]}}}}],"error":null}}}}"#
    ))
}

fn config(db: &Path, yahoo: &str, market_hours: Option<&str>) -> Config {
    let mut vars: Vec<(&str, String)> = vec![
        ("SQLITE_PATH", db.to_str().expect("utf-8 path").to_string()),
        ("SYMBOLS", "AAPL".into()),
        ("SOURCES", "yahoo".into()),
        ("COLLECTION_INTERVAL", "100ms".into()),
        ("BATCH_WRITE_INTERVAL", "100ms".into()),
        ("WARMUP_BARS", "0".into()),
        ("BOOTSTRAP_ON_START", "false".into()),
        ("YAHOO_BASE_URL", yahoo.to_string()),
        ("HTTP_ADDR", "127.0.0.1:0".into()),
    ];
    if let Some(hours) = market_hours {
        vars.push(("MARKET_HOURS", hours.to_string()));
    }
    common::config_of(&vars)
}

/// Runs the sidecar on a clock starting at `now_ms` until `scenario` returns.
fn with_sidecar<T: Send + 'static>(
    config: Config,
    now_ms: i64,
    scenario: impl FnOnce(SocketAddr) -> T + Send + 'static,
) -> T {
    common::in_process(config, Clock::tokio(now_ms), scenario)
}

fn counter(addr: SocketAddr, series: &str) -> u64 {
    let (_, m) = get_json(addr, "/metrics/json");
    m["counters"][series].as_u64().unwrap_or(0)
}

#[test]
fn a_closed_market_is_closed_not_down_and_stores_no_reject() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("closed.db");
    let rt = runtime();
    let yahoo = rt.block_on(HttpFixture::start("", closed_market));
    let health = with_sidecar(config(&db, &yahoo.base, None), SATURDAY_MS, |addr| {
        wait_for(Duration::from_secs(20), || {
            (counter(addr, "quotes_closed_total") >= 20).then_some(())
        })
        .expect("the closed market keeps answering");
        get_json(addr, "/health")
    });
    let (code, h) = health;
    assert_eq!(code, 200, "{h}");
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["symbols"]["AAPL"]["session"], "closed", "{h}");
    assert_eq!(h["symbols"]["AAPL"]["next_open_ms"], MONDAY_OPEN_MS, "{h}");
    assert_eq!(h["symbols_open"], 0, "{h}");
    assert_eq!(sql_u64(&db, "SELECT count(*) FROM rejects"), 0);
    assert_eq!(
        sql_u64(&db, "SELECT count(*) FROM bars"),
        0,
        "no bar while closed"
    );
    assert_eq!(sql_u64(&db, "SELECT count(*) FROM gaps"), 0);
}

#[test]
fn an_open_market_with_the_same_last_trade_is_stale_and_stored_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("stale.db");
    let rt = runtime();
    let yahoo = rt.block_on(HttpFixture::start("", closed_market));
    // The calendar says open (say, a feed that stopped during the session).
    let cfg = config(&db, &yahoo.base, Some("AAPL:always"));
    let (code, h, stale) = with_sidecar(cfg, SATURDAY_MS, |addr| {
        let stale = wait_for(Duration::from_secs(20), || {
            let n = counter(addr, "rejects_total{reason=\"stale\"}");
            (n >= 20).then_some(n)
        })
        .expect("stale quotes counted every tick");
        let (code, h) = get_json(addr, "/health");
        (code, h, stale)
    });
    assert_eq!(code, 503, "the only open symbol has no fresh data: {h}");
    assert_eq!(h["status"], "down", "{h}");
    assert_eq!(h["symbols"]["AAPL"]["session"], "open", "{h}");
    assert_eq!(h["symbols"]["AAPL"]["fresh"], false, "{h}");
    assert!(stale >= 20);
    assert_eq!(
        sql_u64(&db, "SELECT count(*) FROM rejects WHERE reason = 'stale'"),
        1,
        "one row however many ticks"
    );
    assert_eq!(sql_u64(&db, "SELECT count(*) FROM rejects"), 1);
}

/// The sidecar binary on the simulated market, `TIMEFRAMES=1s,1m`, with its background
/// bootstrap, until `bars` live quotes per symbol were accepted; returns its log.
fn run_synthetic(dir: &Path, db: &Path, bars: u64, extra: &[(&str, &str)]) -> Vec<String> {
    let mut env = vec![
        ("SQLITE_PATH", db.to_str().expect("utf-8 path")),
        ("SYMBOLS", "NAS100,EURUSD,BTCUSD"),
        ("TIMEFRAMES", "1s,1m"),
        ("SYNTHETIC_BAD_TICK_RATE", "0"),
        ("BATCH_WRITE_INTERVAL", "200ms"),
        ("HISTORY_DAYS", "1"),
    ];
    env.extend_from_slice(extra);
    let sidecar = Sidecar::start(dir, &env);
    wait_for(Duration::from_secs(60), || {
        let (_, m) = get_json(sidecar.addr, "/metrics/json");
        let live = m["counters"]["quotes_accepted_total"].as_u64()?;
        (live >= bars * 3).then_some(())
    })
    .expect("live quotes accepted");
    let (code, log) = sidecar.terminate();
    assert_eq!(code, 0, "{}", log.join("\n"));
    log
}

#[test]
fn the_simulated_market_joins_history_and_live_bars_without_a_jump_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("synthetic.db");
    // A first start with the background bootstrap, then a restart from what it stored.
    run_synthetic(dir.path(), &db, 5, &[]);
    let first = sql_u64(&db, "SELECT count(*) FROM bars WHERE timeframe = '1s'");
    run_synthetic(dir.path(), &db, 5, &[]);
    assert!(sql_u64(&db, "SELECT count(*) FROM bars WHERE timeframe = '1s'") > first);
    assert_eq!(
        sql_u64(&db, "SELECT count(*) FROM rejects"),
        0,
        "no spike or any other reject where history meets live quotes"
    );
    // Every stored bar continues the previous one: at most a few seconds of moves apart.
    let conn = rusqlite::Connection::open(&db).expect("open");
    let mut stmt = conn
        .prepare(
            "SELECT symbol, ts, open, close FROM bars WHERE timeframe = '1s' ORDER BY symbol, ts",
        )
        .expect("prepare");
    let rows: Vec<(String, i64, f64, f64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    let worst = rows
        .windows(2)
        .filter(|w| w[0].0 == w[1].0)
        .map(|w| (w[1].2 / w[0].3 - 1.0).abs())
        .fold(0.0, f64::max);
    assert!(
        worst < 0.005,
        "largest step between stored 1 s bars: {worst}"
    );
}

#[test]
fn after_a_restart_a_jump_against_the_stored_history_is_a_spike() {
    use barkeep::model::{Bar, SymbolTable};
    use barkeep::store::sqlite::{SqliteStore, StoredBar};
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("restart.db");
    // Stored history of 1 m bars ending at 100, up to a minute ago.
    let now = barkeep::clock::system_now_ms();
    {
        let store = SqliteStore::open(&db, SymbolTable::new(["BTCUSD"])).expect("store");
        let bars: Vec<StoredBar> = (0..60)
            .map(|i| StoredBar {
                bar: Bar {
                    ts: now - (61 - i) * 60_000,
                    open: 100.0,
                    high: 100.2,
                    low: 99.8,
                    close: 100.0 + (i % 2) as f64 * 0.1 - 0.1 * f64::from(i == 59),
                    volume: 5.0,
                },
                source: "stored".into(),
                quality: 1.0,
            })
            .collect();
        store
            .insert_missing(0, "1m".parse().expect("tf"), &bars, &[])
            .expect("insert");
    }
    let rt = runtime();
    // Yahoo answers at `price`, now.
    let price = std::sync::Arc::new(AtomicU64::new(100.05_f64.to_bits()));
    let quoted = std::sync::Arc::clone(&price);
    let yahoo = rt.block_on(HttpFixture::start("", move |seen: &fixture::Seen| {
        if seen.path != "/v8/finance/chart/BTC-USD" {
            return Reply::json(
                404,
                r#"{"chart":{"result":null,"error":{"code":"Not Found","description":"No data found, symbol may be delisted"}}}"#,
            );
        }
        let t = barkeep::clock::system_now_ms() / 1_000;
        let p = f64::from_bits(quoted.load(Ordering::SeqCst));
        Reply::ok(format!(
            r#"{{"chart":{{"result":[{{"meta":{{"currency":"USD","symbol":"BTC-USD","exchangeName":"CCC","instrumentType":"CRYPTOCURRENCY","regularMarketPrice":{p},"regularMarketTime":{t},"regularMarketVolume":1000,"gmtoffset":0,"timezone":"UTC","exchangeTimezoneName":"UTC","dataGranularity":"1d","range":"1d"}},"timestamp":[{t}],"indicators":{{"quote":[{{"open":[116.0],"high":[116.0],"low":[116.0],"close":[116.0],"volume":[1000]}}]}}}}],"error":null}}}}"#
        ))
    }));
    let vars = [
        ("SQLITE_PATH", db.to_str().expect("utf-8 path").to_string()),
        ("SYMBOLS", "BTCUSD".into()),
        ("SOURCES", "yahoo".into()),
        ("YAHOO_BASE_URL", yahoo.base.clone()),
        ("BOOTSTRAP_ON_START", "false".into()),
        ("COLLECTION_INTERVAL", "100ms".into()),
        ("BATCH_WRITE_INTERVAL", "100ms".into()),
    ];
    let cfg = common::config_of(&vars);
    // A first run at the stored level ends with an indicator checkpoint; the restart then
    // resumes from it (no stored bar after it) and meets a 16 % jump.
    with_sidecar(cfg.clone(), now, |addr| {
        wait_for(Duration::from_secs(20), || {
            (counter(addr, "quotes_accepted_total") >= 3).then_some(())
        })
        .expect("quotes at the stored level are accepted");
    });
    assert_eq!(sql_u64(&db, "SELECT count(*) FROM indicator_state"), 1);
    price.store(116.0_f64.to_bits(), Ordering::SeqCst);
    let spikes = with_sidecar(cfg, barkeep::clock::system_now_ms(), move |addr| {
        wait_for(Duration::from_secs(20), || {
            let n = counter(addr, "rejects_total{reason=\"spike\"}");
            (n >= 1).then_some(n)
        })
        .expect("the jump is refused")
    });
    assert!(spikes >= 1);
    let first_reject: String = rusqlite::Connection::open(&db)
        .expect("open")
        .query_row(
            "SELECT reason FROM rejects ORDER BY rowid LIMIT 1",
            [],
            |r| r.get(0),
        )
        .expect("a reject row");
    assert_eq!(first_reject, "spike");
}
