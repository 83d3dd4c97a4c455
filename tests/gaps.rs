//! Gap repair (issue 10), against a Binance fixture on 127.0.0.1 (klines and tickers in
//! Binance's documented format):
//! - the sidecar is killed with SIGKILL while it runs without Redis, so the bars it had not
//!   flushed yet are lost, and it stays down for a few seconds; on restart the lost interval is
//!   fetched again from the provider's history;
//! - while it runs, the provider's quotes fail for a few seconds (no fallback), leaving a gap;
//!   it is fetched again from history off the tick and the indicators are rewound and replayed.
//!
//! Either way the stored 1 s series has no hole and the indicators equal those of an
//! uninterrupted run over the same bars.

mod common;

#[path = "common/binance.rs"]
mod binance;
#[path = "providers/fixture.rs"]
#[allow(dead_code, reason = "the WebSocket script fixture is not used here")]
mod fixture;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use barkeep::indicators::{IndicatorParams, IndicatorSet};
use barkeep::model::Bar;

use binance::{binance_with_outage, wall_ms};
use common::{
    RedisServer, Sidecar, get_json, ring, sql_u64, sqlite_newest, subscribed, unpack, wait_for,
};
use fixture::{HttpFixture, Reply};

fn binance(seen: &fixture::Seen) -> Reply {
    binance_with_outage(seen, &AtomicBool::new(false))
}

fn stored_1s(db: &Path) -> Vec<Bar> {
    let conn = rusqlite::Connection::open(db).expect("open db");
    let mut stmt = conn
        .prepare(
            "SELECT ts, open, high, low, close, volume FROM bars
             WHERE symbol = 'BTCUSD' AND timeframe = '1s' ORDER BY ts",
        )
        .expect("prepare");
    stmt.query_map([], |r| {
        Ok(Bar {
            ts: r.get(0)?,
            open: r.get(1)?,
            high: r.get(2)?,
            low: r.get(3)?,
            close: r.get(4)?,
            volume: r.get(5)?,
        })
    })
    .expect("query")
    .collect::<Result<_, _>>()
    .expect("rows")
}

#[test]
fn bars_lost_to_a_kill_are_fetched_again_and_indicators_match_an_uninterrupted_run() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let rest = rt.block_on(HttpFixture::start("", binance));
    // No WebSocket here: the stream's URL refuses connections, so quotes are polled.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let ws = format!("ws://{}/ws", dead.local_addr().expect("addr"));
    drop(dead);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("gaps.db");
    let env = [
        ("SQLITE_PATH", db.to_str().expect("utf-8 path")),
        ("SYMBOLS", "BTCUSD"),
        ("SOURCES", "binance"),
        ("BINANCE_BASE_URL", rest.base.as_str()),
        ("BINANCE_WS_URL", ws.as_str()),
        ("TIMEFRAMES", "1s"),
        ("BOOTSTRAP_ON_START", "false"),
        ("WARMUP_BARS", "40"),
        ("BATCH_WRITE_INTERVAL", "2s"),
        ("CHECKPOINT_INTERVAL", "1s"),
        ("STREAM_RECONNECT_MIN", "10s"),
    ];
    let first = Sidecar::start(dir.path(), &env);
    // Wait for a flush with a checkpoint, then for bars that are not flushed yet.
    wait_for(Duration::from_secs(30), || {
        let (_, m) = get_json(first.addr, "/metrics/json");
        (m["counters"]["checkpoints_written_total"].as_u64()? >= 1).then_some(())
    })
    .expect("a flush with a checkpoint");
    let flushed = sql_u64(&db, "SELECT count(*) FROM bars");
    wait_for(Duration::from_secs(30), || {
        let (_, m) = get_json(first.addr, "/metrics/json");
        let closed = m["counters"]["bars_closed_total"].as_u64()?;
        (closed > flushed).then_some(())
    })
    .expect("more bars than flushed");
    drop(first); // SIGKILL: the unflushed bars are gone.
    let before = stored_1s(&db);
    std::thread::sleep(Duration::from_millis(100));
    let killed_at = wall_ms();
    wait_for(Duration::from_secs(10), || {
        (wall_ms() >= killed_at + 3_000).then_some(())
    });

    let second = Sidecar::start(dir.path(), &env);
    wait_for(Duration::from_secs(30), || {
        let newest = stored_1s(&db).last().map(|b| b.ts)?;
        (newest > killed_at + 5_000).then_some(())
    })
    .expect("the restarted sidecar stores live bars");
    // On a slow start the first live bar may come a second after the warm-up's repair: that
    // gap is then repaired while running. Either way none is left open.
    wait_for(Duration::from_secs(30), || {
        let (_, h) = get_json(second.addr, "/health");
        let gaps = &h["gaps"];
        (gaps["pending"] == 0 && gaps["repaired"] == gaps["recorded"]).then_some(())
    })
    .expect("no gap left to repair");
    let (code, log) = second.terminate();
    assert_eq!(code, 0, "{}", log.join("\n"));

    assert!(
        before.last().map(|b| b.ts) < Some(killed_at - 1_000),
        "the kill lost bars: {:?} vs {killed_at}",
        before.last()
    );
    assert_eq!(
        sql_u64(&db, "SELECT count(*) FROM gaps WHERE status <> 'repaired'"),
        0,
        "no gap left open"
    );
    assert_uninterrupted(&db);
}

fn assert_uninterrupted(db: &Path) {
    let bars = stored_1s(db);
    let holes: Vec<(i64, i64)> = bars
        .windows(2)
        .filter(|w| w[1].ts != w[0].ts + 1_000)
        .map(|w| (w[0].ts, w[1].ts))
        .collect();
    assert_eq!(holes, [], "the stored series has no hole");
    let params = IndicatorParams::default();
    let mut uninterrupted = IndicatorSet::new(&params);
    let mut expected = None;
    for b in &bars {
        expected = Some(uninterrupted.update(b));
    }
    let state: Vec<u8> = rusqlite::Connection::open(db)
        .expect("open")
        .query_row(
            "SELECT state FROM indicator_state WHERE symbol = 'BTCUSD' AND timeframe = '1s'",
            [],
            |r| r.get(0),
        )
        .expect("checkpoint");
    let resumed = IndicatorSet::restore(&state, &params).expect("restore");
    assert_eq!(resumed.last_ts(), bars.last().map(|b| b.ts));
    assert_eq!(
        format!("{:?}", resumed.last()),
        format!("{:?}", expected.expect("bars")),
        "every indicator as in an uninterrupted run"
    );
}

#[test]
fn a_gap_while_running_is_fetched_again_and_the_indicators_replayed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("running.db");
    run_with_outage(&db, None);
    assert_uninterrupted(&db);
    assert_eq!(
        sql_u64(&db, "SELECT count(*) FROM gaps WHERE status = 'repaired'"),
        sql_u64(&db, "SELECT count(*) FROM gaps"),
        "every gap is marked repaired"
    );
    assert!(sql_u64(&db, "SELECT count(*) FROM gaps") >= 1);
}

#[test]
fn a_repaired_gap_reaches_the_redis_ring_in_order_with_a_revision_event() {
    let redis = RedisServer::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("redis.db");
    // Every event of BTCUSD, until a revision arrives.
    let mut subscriber = redis.client();
    let (tx, rx) = std::sync::mpsc::channel();
    let listening = std::thread::spawn(move || {
        let mut pubsub = subscribed(
            &mut subscriber,
            "barkeep:events:{BTCUSD}",
            Duration::from_secs(60),
        );
        while let Ok(msg) = pubsub.get_message() {
            let event = unpack(msg.get_payload_bytes());
            if event["data_type"] == "revision" {
                let _ = tx.send(event["data"].clone());
                return;
            }
        }
    });
    run_with_outage(&db, Some(redis.url()));
    let revision = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("a revision event");
    let _ = listening.join();
    assert!(revision["bars"].as_u64() >= Some(2), "{revision}");
    assert!(
        revision["from_ts"].as_i64() < revision["to_ts"].as_i64(),
        "{revision}"
    );
    assert_eq!(revision["timeframe"], "1s");
    assert_uninterrupted(&db);
    let mut conn = redis.client();
    let in_ring = ring(&mut conn, "barkeep:bars:{BTCUSD}:1s");
    let stored = sqlite_newest(&db, "BTCUSD", "1s", in_ring.len().max(1));
    assert!(in_ring.len() > 10, "{}", in_ring.len());
    assert_eq!(
        in_ring, stored,
        "the ring holds the repaired bars, in order"
    );
}

/// Runs the sidecar in-process on the Binance fixture; its quotes fail for 3.5 s mid-run (no
/// fallback), and the run goes on until the gap was repaired and a few more bars closed.
fn run_with_outage(db: &Path, redis_url: Option<String>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let down = Arc::new(AtomicBool::new(false));
    let outage = Arc::clone(&down);
    let rest = rt.block_on(HttpFixture::start("", move |seen: &fixture::Seen| {
        binance_with_outage(seen, &outage)
    }));
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let ws = format!("ws://{}/ws", dead.local_addr().expect("addr"));
    drop(dead);
    let mut vars = vec![
        ("SQLITE_PATH", db.to_str().expect("utf-8").to_string()),
        ("SYMBOLS", "BTCUSD".into()),
        ("SOURCES", "binance".into()),
        ("BINANCE_BASE_URL", rest.base.clone()),
        ("BINANCE_WS_URL", ws),
        ("STREAM_RECONNECT_MIN", "10s".into()),
        ("TIMEFRAMES", "1s".into()),
        ("BOOTSTRAP_ON_START", "false".into()),
        ("WARMUP_BARS", "30".into()),
        ("BATCH_WRITE_INTERVAL", "200ms".into()),
    ];
    vars.extend(redis_url.map(|url| ("REDIS_URL", url)));
    common::in_process(
        common::config_of(&vars),
        barkeep::clock::Clock::System,
        move |addr| {
            let counter = |name: &str| {
                let (_, m) = get_json(addr, "/metrics/json");
                m["counters"][name].as_u64().unwrap_or(0)
            };
            wait_for(Duration::from_secs(20), || {
                (counter("quotes_accepted_total") >= 3).then_some(())
            })
            .expect("live quotes");
            down.store(true, Ordering::SeqCst);
            let started = wall_ms();
            wait_for(Duration::from_secs(20), || {
                (wall_ms() > started + 3_500).then_some(())
            });
            down.store(false, Ordering::SeqCst);
            wait_for(Duration::from_secs(20), || {
                (counter("gaps_repaired_total") >= 1).then_some(())
            })
            .expect("the gap is repaired");
            assert!(counter("gaps_total") >= 1);
            let (_, h) = get_json(addr, "/health");
            assert!(h["gaps"]["repaired"].as_u64() >= Some(1), "{h}");
            assert!(
                counter("repaired_bars_total") >= 2,
                "{}",
                counter("repaired_bars_total")
            );
            // A few more live bars after the repair, then stop.
            let closed = counter("bars_closed_total");
            wait_for(Duration::from_secs(20), || {
                (counter("bars_closed_total") >= closed + 3).then_some(())
            })
            .expect("live bars go on");
        },
    );
}
