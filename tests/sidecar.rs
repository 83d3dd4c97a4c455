//! The real binary end to end: start on the embedded default, serve, stop on SIGTERM, and
//! account for every bar and every reject in SQLite.

mod common;

use std::time::Duration;

use common::{Sidecar, get, get_json, log_field, sql_u64, wait_for};

#[test]
fn runs_on_defaults_serves_signals_and_stores_every_bar_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("data/barkeep.db");
    // Defaults except a short live timeframe and interval so bars close within the test, and
    // no background bootstrap (its bars are not produced by this run; tests/redis.rs covers it).
    let sidecar = Sidecar::start(
        dir.path(),
        &[
            ("TIMEFRAMES", "1m,1s"),
            ("COLLECTION_INTERVAL", "100ms"),
            ("SYNTHETIC_BAD_TICK_RATE", "0"),
            ("BOOTSTRAP_ON_START", "false"),
        ],
    );
    let addr = sidecar.addr;
    let health = wait_for(Duration::from_secs(10), || {
        let (status, body) = get_json(addr, "/health");
        (status == 200 && body["status"] == "ok").then_some(body)
    })
    .expect("/health becomes 200 ok");
    assert_eq!(health["symbols_total"], 3);
    assert_eq!(health["sqlite"]["state"], "ok");

    // Warmed up from history: every indicator has a value at once.
    let (status, signal) = get_json(addr, "/signals/EURUSD");
    assert_eq!(status, 200, "{signal}");
    for name in [
        "sma_20",
        "ema_12",
        "ema_26",
        "rsi_14",
        "bb_upper",
        "bb_middle",
        "bb_lower",
        "atr_14",
        "macd",
        "macd_signal",
        "macd_hist",
        "stoch_k",
        "stoch_d",
        "obv",
        "vwap",
    ] {
        assert!(
            signal["features"][name].is_f64(),
            "{name} missing: {signal}"
        );
    }
    let close = signal["bar"]["close"].as_f64().expect("close");
    assert!(
        (1.0..1.16).contains(&close),
        "EURUSD near 1.08, got {close}"
    );
    assert!(["buy", "sell", "neutral"].contains(&signal["signal"].as_str().expect("signal")));
    let confidence = signal["confidence"].as_f64().expect("confidence");
    assert!((0.0..=1.0).contains(&confidence));
    let (status, gold) = get_json(addr, "/features/xauusd?tf=1s");
    assert_eq!(status, 200, "{gold}");
    assert_eq!(gold["symbol"], "XAUUSD");
    assert!((1_500.0..2_500.0).contains(&gold["bar"]["close"].as_f64().expect("close")));

    // Let some live 1-second bars close, then check they are readable before any flush.
    let live_bars = wait_for(Duration::from_secs(10), || {
        let (_, bars) = get_json(addr, "/bars/NAS100?tf=1s&limit=50");
        (bars["count"].as_u64()? >= 3).then_some(bars)
    })
    .expect("1s bars close");
    let ts: Vec<i64> = live_bars["bars"]
        .as_array()
        .expect("bars")
        .iter()
        .map(|b| b["ts"].as_i64().expect("ts"))
        .collect();
    assert!(
        ts.windows(2).all(|w| w[0] < w[1] && w[1] % 1_000 == 0),
        "{ts:?}"
    );
    let (status, metrics) = get(addr, "/metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("barkeep_ticks_total "), "{metrics}");

    let (code, log) = sidecar.terminate();
    assert_eq!(code, 0, "exit code; log:\n{}", log.join("\n"));
    let closed = log_field(&log, "stopped cleanly", "bars_closed").expect("bars_closed in log");
    let written = log_field(&log, "stopped cleanly", "bars_written").expect("bars_written in log");
    let stored = sql_u64(&db, "SELECT count(*) FROM bars");
    assert!(closed > 300, "history plus live bars: {closed}");
    assert_eq!(stored, closed, "bars produced = rows stored");
    assert_eq!(written, closed);
    assert_eq!(
        sql_u64(&db, "SELECT count(*) FROM indicator_state"),
        6,
        "a checkpoint per (symbol, timeframe)"
    );
}

#[test]
fn restart_resumes_from_sqlite_without_refetching_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("data/barkeep.db");
    let vars = [
        ("TIMEFRAMES", "1s"),
        ("COLLECTION_INTERVAL", "100ms"),
        ("SYNTHETIC_BAD_TICK_RATE", "0"),
    ];
    let mut first = Sidecar::start(dir.path(), &vars);
    wait_for(Duration::from_secs(10), || {
        (get(first.addr, "/health").0 == 200).then_some(())
    })
    .expect("healthy");
    // The background bootstrap has filled the history before the stop, so the second start
    // has nothing to fetch but its downtime.
    first
        .wait_for_log("bootstrap done", Duration::from_secs(30))
        .expect("the background bootstrap finishes");
    let (code, log) = first.terminate();
    assert_eq!(code, 0, "{}", log.join("\n"));
    let after_first = sql_u64(&db, "SELECT count(*) FROM bars");
    let last_ts = sql_u64(&db, "SELECT max(ts) FROM bars WHERE symbol = 'EURUSD'");

    let second = Sidecar::start(dir.path(), &vars);
    let features = wait_for(Duration::from_secs(10), || {
        let (status, body) = get_json(second.addr, "/features/EURUSD?tf=1s");
        (status == 200 && body["features"]["macd"].is_f64()).then_some(body)
    })
    .expect("indicators ready right after restart");
    assert!(features["ts"].as_i64().expect("ts") as u64 > last_ts);
    let (_, metrics) = get_json(second.addr, "/metrics/json");
    // The stored bars (and the checkpoint) were enough: at most the downtime was fetched.
    let refetched = metrics["counters"]["history_bars_total"]
        .as_u64()
        .expect("counter");
    assert!(refetched < 10, "history re-fetched on restart: {refetched}");
    let (code, log) = second.terminate();
    assert_eq!(code, 0, "{}", log.join("\n"));
    let closed = log_field(&log, "stopped cleanly", "bars_closed").expect("bars_closed");
    assert_eq!(
        sql_u64(&db, "SELECT count(*) FROM bars"),
        after_first + closed,
        "no bar lost or duplicated across a restart"
    );
}

#[test]
fn bad_ticks_are_rejected_with_their_reason_and_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("b.db");
    let sidecar = Sidecar::start(
        dir.path(),
        &[
            ("SQLITE_PATH", db.to_str().expect("utf-8 path")),
            (
                "SYMBOLS",
                "NAS100,XAUUSD,EURUSD,BTCUSD,AAPL,GBPUSD,USDJPY,ETHUSD,SPX500,MSFT",
            ),
            ("COLLECTION_INTERVAL", "50ms"),
            ("SYNTHETIC_BAD_TICK_RATE", "0.4"),
            // Live ticks only: the log's reject count is compared with the table.
            ("BOOTSTRAP_ON_START", "false"),
        ],
    );
    let reasons = [
        "non_finite",
        "non_positive_price",
        "negative_volume",
        "future_timestamp",
        "stale",
        "out_of_order",
        "spike",
    ];
    // The simulated market trades once a second: wait until each kind of bad tick came.
    wait_for(Duration::from_secs(60), || {
        let (_, m) = get_json(sidecar.addr, "/metrics/json");
        let seen = |r: &str| m["counters"][format!("rejects_total{{reason=\"{r}\"}}")].as_u64();
        reasons
            .iter()
            .all(|r| seen(r).is_some_and(|n| n > 0))
            .then_some(())
    })
    .expect("rejects of every reason accumulate");
    let repeated = |m: &serde_json::Value| m["counters"]["rejects_repeated_total"].as_u64();
    let (_, m) = get_json(sidecar.addr, "/metrics/json");
    assert!(
        repeated(&m).is_some_and(|n| n > 0),
        "a quote answered for a whole second at 50 ms ticks is stored once: {m}"
    );
    let (code, log) = sidecar.terminate();
    assert_eq!(code, 0, "{}", log.join("\n"));
    let rejects = log_field(&log, "stopped cleanly", "rejects").expect("rejects in log");
    let repeated = log_field(&log, "stopped cleanly", "rejects_repeated").expect("in log");
    assert_eq!(
        sql_u64(&db, "SELECT count(*) FROM rejects"),
        rejects - repeated,
        "every reject stored once"
    );
    for reason in reasons {
        let n = sql_u64(
            &db,
            &format!("SELECT count(*) FROM rejects WHERE reason = '{reason}'"),
        );
        assert!(n > 0, "no `{reason}` reject stored");
    }
    // Raw values are kept for inspection; no bad value reached a bar.
    assert!(
        sql_u64(
            &db,
            "SELECT count(*) FROM rejects WHERE reason = 'non_finite' AND raw LIKE '%NaN%'"
        ) > 0
    );
    assert_eq!(
        sql_u64(
            &db,
            "SELECT count(*) FROM bars WHERE low <= 0 OR volume < 0 OR high < low"
        ),
        0
    );
}
