//! NATS JetStream against a real `nats-server -js` started per test (free port, temporary store):
//! a late consumer replays every message from sequence 1 exactly once, and the closed bars in the
//! stream are exactly the bars SQLite holds; a publish whose ack was lost to a dropped connection
//! is sent again and not stored twice; a NATS down at start is caught up with when it comes.

mod common;
#[path = "common/nats.rs"]
mod nats;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use common::{Sidecar, get_json, wait_for};
use nats::{NatsServer, Proxy, Stored, replay};

const SYMBOLS: &str = "EURUSD,BTCUSD,BRK.B";

fn sidecar(dir: &Path, nats_url: &str) -> Sidecar {
    let db = dir.join("b.db");
    Sidecar::start(
        dir,
        &[
            ("SYMBOLS", SYMBOLS),
            ("TIMEFRAMES", "1s"),
            ("COLLECTION_INTERVAL", "200ms"),
            ("BOOTSTRAP_ON_START", "false"),
            ("WARMUP_BARS", "30"),
            ("SQLITE_PATH", db.to_str().expect("utf-8 path")),
            ("NATS_URL", nats_url),
            ("RUST_LOG", "info,async_nats=warn"),
        ],
    )
}

fn counter(addr: std::net::SocketAddr, name: &str) -> u64 {
    let (_, m) = get_json(addr, "/metrics/json");
    m["counters"][name].as_u64().unwrap_or(0)
}

fn nats_health(addr: std::net::SocketAddr) -> serde_json::Value {
    get_json(addr, "/health").1["nats"].clone()
}

/// Every closed bar in SQLite: (symbol, ts) → close.
fn sqlite_bars(db: &Path) -> BTreeMap<(String, i64), f64> {
    let conn = rusqlite::Connection::open(db).expect("open db");
    let mut stmt = conn
        .prepare("SELECT symbol, ts, close FROM bars")
        .expect("prepare");
    stmt.query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))
        .expect("query")
        .map(|r| r.expect("row"))
        .collect()
}

/// What every test checks of the stream: sequences from 1 without a hole or a repeat, ids unique,
/// subjects `barkeep.<data_type>.<SYMBOL>`, messages whole, and the closed bars exactly SQLite's.
fn check_stream(all: &[Stored], db: &Path) {
    check_stream_values(all, db, true);
}

/// [`check_stream`]; `same_values`: the closes must also be SQLite's (after a crash the bars
/// SQLite lost are fetched again from history and may differ from the live ones NATS kept).
fn check_stream_values(all: &[Stored], db: &Path, same_values: bool) {
    assert!(!all.is_empty(), "nothing was published");
    let seqs: Vec<u64> = all.iter().map(|m| m.stream_seq).collect();
    let expected: Vec<u64> = (1..=all.len() as u64).collect();
    assert_eq!(seqs, expected, "every sequence from 1, once, in order");
    let mut ids = BTreeMap::new();
    for m in all {
        if let Some(first) = ids.insert(m.id.clone(), m.stream_seq) {
            panic!(
                "message id {} stored twice: at {first} and {}",
                m.id, m.stream_seq
            );
        }
        let symbol = m.json["symbol"].as_str().expect("symbol");
        let data_type = m.json["data_type"].as_str().expect("data_type");
        assert_eq!(
            m.subject,
            format!("barkeep.{data_type}.{}", symbol.replace('.', "%2E")),
            "{}",
            m.json
        );
        assert_eq!(m.json["update_type"], "snapshot", "{}", m.json);
        for field in ["channel", "timestamp", "data", "vendor", "metadata", "seq"] {
            assert!(m.json.get(field).is_some(), "{field} missing: {}", m.json);
        }
    }
    let closed: Vec<((String, i64), f64)> = all
        .iter()
        .filter(|m| m.json["data_type"] == "bar" && m.json["data"]["forming"] == false)
        .map(|m| {
            (
                (
                    m.json["symbol"].as_str().expect("symbol").to_string(),
                    m.json["data"]["ts"].as_i64().expect("ts"),
                ),
                m.json["data"]["close"].as_f64().expect("close"),
            )
        })
        .collect();
    let published: BTreeMap<(String, i64), f64> = closed.iter().cloned().collect();
    assert_eq!(
        published.len(),
        closed.len(),
        "a closed bar published twice"
    );
    let stored = sqlite_bars(db);
    let keys = |m: &BTreeMap<(String, i64), f64>| m.keys().cloned().collect::<BTreeSet<_>>();
    let (mut in_nats, in_sqlite) = (keys(&published), keys(&stored));
    if !same_values {
        // After a crash, bars SQLite lost are fetched again only back to the restart's
        // warm-up window: a loaded machine can close bars in the first run that lie before
        // it and before anything SQLite kept (a known limit, said in the session note). Those
        // stay in NATS only; every bar SQLite holds must still be in NATS, once.
        let oldest = |sym: &str| in_sqlite.iter().find(|(s, _)| s == sym).map(|(_, ts)| *ts);
        in_nats.retain(|(sym, ts)| oldest(sym).is_none_or(|o| *ts >= o));
    }
    assert_eq!(
        in_nats,
        in_sqlite,
        "closed bars: only in NATS {:?}, only in SQLite {:?}",
        in_nats.difference(&in_sqlite).take(5).collect::<Vec<_>>(),
        in_sqlite.difference(&in_nats).take(5).collect::<Vec<_>>()
    );
    // The same values (JSON's decimal text read back may differ in the last bit).
    for (key, close) in published.iter().filter(|_| same_values) {
        let want = stored[key];
        assert!(
            (close - want).abs() <= want.abs() * 1e-12,
            "{key:?}: {close} vs {want}"
        );
    }
    for symbol in SYMBOLS.split(',') {
        assert!(
            closed.iter().any(|c| c.0.0 == symbol),
            "no closed bar of {symbol}"
        );
    }
}

/// Waits until the sidecar published everything it queued and JetStream acknowledged it.
fn wait_caught_up(addr: std::net::SocketAddr, timeout: Duration) -> serde_json::Value {
    wait_for(timeout, || {
        let n = nats_health(addr);
        (n["state"] == "up"
            && n["queue_depth"] == 0
            && n["in_flight"] == 0
            && n["acked"].as_u64() > Some(0))
        .then_some(n)
    })
    .unwrap_or_else(|| panic!("not caught up: {}", nats_health(addr)))
}

#[test]
fn a_late_consumer_replays_every_message_from_sequence_one_exactly_once() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut barkeep = sidecar(dir.path(), &server.url());
    barkeep
        .wait_for_log("NATS JetStream stream ready", Duration::from_secs(20))
        .expect("stream ready");
    // Live bars close: at least three seconds' worth for every symbol.
    wait_for(Duration::from_secs(30), || {
        (counter(barkeep.addr, "bars_closed_total") >= 9).then_some(())
    })
    .expect("bars close");
    let health = wait_caught_up(barkeep.addr, Duration::from_secs(20));
    assert_eq!(health["dropped"], 0, "{health}");
    assert_eq!(health["failed"], 0, "{health}");
    assert_eq!(health["stream"], "barkeep");
    let (code, _) = barkeep.terminate();
    assert_eq!(code, 0);
    // Consumers started after barkeep stopped: from 1, and from any sequence.
    let all = replay(&server.url(), "barkeep", 1);
    check_stream(&all, &dir.path().join("b.db"));
    let types: BTreeSet<&str> = all
        .iter()
        .map(|m| m.json["data_type"].as_str().expect("data_type"))
        .collect();
    for t in ["bar", "features", "signal", "session"] {
        assert!(types.contains(t), "no {t} message: {types:?}");
    }
    let from = all.len() as u64 / 2;
    let tail = replay(&server.url(), "barkeep", from);
    let tail_seqs: Vec<u64> = tail.iter().map(|m| m.stream_seq).collect();
    assert_eq!(tail_seqs, (from..=all.len() as u64).collect::<Vec<_>>());
    assert_eq!(tail[0].id, all[from as usize - 1].id);
}

#[test]
fn a_publish_retried_after_a_dropped_connection_is_not_stored_twice() {
    let server = NatsServer::start();
    let proxy = Proxy::start(server.port);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut barkeep = sidecar(dir.path(), &proxy.url());
    barkeep
        .wait_for_log("NATS JetStream stream ready", Duration::from_secs(20))
        .expect("stream ready");
    wait_caught_up(barkeep.addr, Duration::from_secs(20));
    // The server stores what it gets, but its acks are lost; then the connection drops.
    let published = counter(barkeep.addr, "nats_published_total");
    proxy.mute(true);
    wait_for(Duration::from_secs(20), || {
        (counter(barkeep.addr, "nats_published_total") >= published + 5).then_some(())
    })
    .expect("publishes while the acks are lost");
    proxy.cut();
    proxy.mute(false);
    barkeep
        .wait_for_log("NATS connection lost", Duration::from_secs(20))
        .expect("the drop is noticed");
    wait_for(Duration::from_secs(30), || {
        (counter(barkeep.addr, "nats_duplicates_total") > 0).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "no retry was recognised as a duplicate: {}",
            nats_health(barkeep.addr)
        )
    });
    let health = wait_caught_up(barkeep.addr, Duration::from_secs(30));
    assert!(health["retried"].as_u64() > Some(0), "{health}");
    assert_eq!(health["failed"], 0, "{health}");
    let (code, _) = barkeep.terminate();
    assert_eq!(code, 0);
    check_stream(
        &replay(&server.url(), "barkeep", 1),
        &dir.path().join("b.db"),
    );
}

#[test]
fn nats_down_at_start_is_reported_and_caught_up_with_when_it_comes() {
    let mut server = NatsServer::reserve();
    let dir = tempfile::tempdir().expect("tempdir");
    let barkeep = sidecar(dir.path(), &server.url());
    // barkeep runs without it (fresh data), says so, and keeps the messages.
    let health = wait_for(Duration::from_secs(20), || {
        let (_, h) = get_json(barkeep.addr, "/health");
        (h["symbols_fresh"].as_u64() > Some(0)).then_some(h)
    })
    .expect("collecting without NATS");
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(
        ["connecting", "down"].contains(&health["nats"]["state"].as_str().unwrap_or("")),
        "{health}"
    );
    wait_for(Duration::from_secs(20), || {
        let n = nats_health(barkeep.addr);
        (n["state"] == "down" && n["queue_depth"].as_u64() >= Some(30)).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "messages queue while NATS is away: {}",
            nats_health(barkeep.addr)
        )
    });
    assert!(counter(barkeep.addr, "bars_closed_total") > 0);
    assert_eq!(counter(barkeep.addr, "nats_acked_total"), 0);
    server.restart();
    let health = wait_caught_up(barkeep.addr, Duration::from_secs(30));
    assert_eq!(health["dropped"], 0, "{health}");
    let (_, h) = get_json(barkeep.addr, "/health");
    assert_ne!(h["status"], "down", "{h}");
    let (code, _) = barkeep.terminate();
    assert_eq!(code, 0);
    // Everything produced while NATS was away (the warm-up's bars included) was published.
    check_stream(
        &replay(&server.url(), "barkeep", 1),
        &dir.path().join("b.db"),
    );
}

#[test]
fn bars_produced_again_after_a_crash_are_not_stored_twice() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("b.db");
    let mut first = sidecar(dir.path(), &server.url());
    first
        .wait_for_log("NATS JetStream stream ready", Duration::from_secs(20))
        .expect("stream ready");
    wait_for(Duration::from_secs(30), || {
        (counter(first.addr, "bars_closed_total") >= 9).then_some(())
    })
    .expect("bars close");
    wait_caught_up(first.addr, Duration::from_secs(20));
    // A crash: SQLite loses its unflushed bars (BATCH_WRITE_INTERVAL), NATS has them.
    first.child.kill().expect("kill");
    let _ = first.child.wait();
    drop(first);
    let mut second = sidecar(dir.path(), &server.url());
    second
        .wait_for_log("NATS JetStream stream ready", Duration::from_secs(20))
        .expect("stream ready");
    wait_for(Duration::from_secs(30), || {
        (counter(second.addr, "bars_closed_total") >= 6).then_some(())
    })
    .expect("bars close again");
    let health = wait_caught_up(second.addr, Duration::from_secs(20));
    // The warm-up fetched again what the crash lost, and the session was reported again: the
    // same ids, recognised by JetStream.
    assert!(health["duplicates"].as_u64() > Some(0), "{health}");
    let (code, _) = second.terminate();
    assert_eq!(code, 0);
    check_stream_values(&replay(&server.url(), "barkeep", 1), &db, false);
}
