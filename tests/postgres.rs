//! History in PostgreSQL (`POSTGRES_URL`), against a server of the test's own (tests/common/
//! postgres.rs): everything a run produced is in PostgreSQL after SIGTERM, a restart resumes
//! from its checkpoints, a repeated or retried flush stores each bar once, PostgreSQL going away
//! mid-run loses nothing, and two shards share one database and one Redis Cluster (each keeping
//! its own run-time settings and instruments; each ring in the cluster equal to its history).

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use barkeep::model::{Bar, BarRecord, Event, Features, SymbolTable, TickBatch, Timeframe};
use barkeep::store::history::History;
use barkeep::store::postgres::PgStore;
use common::cluster::RedisCluster;
use common::postgres::PgServer;
use common::{Sidecar, get_json, ring, send, send_json, wait_for};

fn vars<'a>(url: &'a str, db: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("POSTGRES_URL", url),
        ("SQLITE_PATH", db),
        ("SYMBOLS", "EURUSD,NAS100"),
        ("TIMEFRAMES", "1s"),
        ("COLLECTION_INTERVAL", "100ms"),
        ("BATCH_WRITE_INTERVAL", "200ms"),
        ("SYNTHETIC_BAD_TICK_RATE", "0"),
    ]
}

/// Bars stored twice for one key (none can be: the primary key; checked all the same, as the
/// shards write into one table).
fn duplicates(pg: &PgServer) -> u64 {
    pg.sql_u64(
        "SELECT count(*) FROM (SELECT 1 FROM bars GROUP BY symbol, timeframe, ts HAVING count(*) > 1) d",
    )
}

#[test]
fn a_run_stores_everything_in_postgres_and_a_restart_resumes_from_its_checkpoints() {
    let pg = PgServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("unused.db");
    let (url, db_s) = (pg.url(), db.to_str().expect("utf-8").to_string());
    let v = vars(&url, &db_s);
    let mut first = Sidecar::start(dir.path(), &v);
    first
        .wait_for_log("bootstrap done", Duration::from_secs(60))
        .expect("the background bootstrap finishes");
    let healthy = wait_for(Duration::from_secs(10), || {
        let h = first.store_health("postgres");
        (h["state"] == "ok").then_some(h)
    })
    .expect("/health shows PostgreSQL ok");
    assert!(healthy["reason"].is_null(), "{healthy}");
    let stopped = first.stop_cleanly();
    let (closed, written) = (stopped.bars_closed, stopped.bars_written);
    let after_first = pg.sql_u64("SELECT count(*) FROM bars");
    assert!(closed > 0);
    assert_eq!(written, closed, "every bar produced was flushed");
    assert!(
        after_first >= closed,
        "live bars and the bootstrap's history: {after_first} < {closed}"
    );
    assert!(!db.exists(), "SQLite is not used with POSTGRES_URL");
    // The final flush wrote each series' checkpoint at its newest bar.
    let behind = pg.sql_u64(
        "SELECT count(*) FROM indicator_state s WHERE s.last_ts <>
           (SELECT max(ts) FROM bars b WHERE b.symbol = s.symbol AND b.timeframe = s.timeframe)",
    );
    assert_eq!(pg.sql_u64("SELECT count(*) FROM indicator_state"), 2);
    assert_eq!(behind, 0, "checkpoints at the newest stored bar");
    let last_ts = pg.sql_u64("SELECT max(ts) FROM bars WHERE symbol = 'EURUSD'");

    let second = Sidecar::start(dir.path(), &v);
    let features = wait_for(Duration::from_secs(10), || {
        let (status, body) = get_json(second.addr, "/features/EURUSD?tf=1s");
        (status == 200 && body["features"]["macd"].is_f64()).then_some(body)
    })
    .expect("indicators ready right after restart");
    assert!(features["ts"].as_i64().expect("ts") as u64 > last_ts);
    let (_, metrics) = get_json(second.addr, "/metrics/json");
    let refetched = metrics["counters"]["history_bars_total"]
        .as_u64()
        .expect("counter");
    assert!(refetched < 10, "history re-fetched on restart: {refetched}");
    // /bars reads PostgreSQL (and the bars not flushed yet).
    let (status, bars) = get_json(second.addr, "/bars/EURUSD?tf=1s&limit=20");
    assert_eq!(status, 200, "{bars}");
    assert_eq!(bars["count"], 20, "{bars}");
    let closed = second.stop_cleanly().bars_closed;
    assert_eq!(
        pg.sql_u64("SELECT count(*) FROM bars"),
        after_first + closed,
        "no bar lost or duplicated across a restart"
    );
    assert_eq!(duplicates(&pg), 0);
}

fn closed(symbol: u32, ts: i64, close: f64) -> Event {
    Event::Closed {
        record: BarRecord {
            symbol,
            timeframe: "1m".parse().expect("tf"),
            bar: Bar::from_price(ts, close, 1.0),
            source: "synthetic",
            quality: 1.0,
        },
        features: Features {
            values: [f64::NAN; barkeep::model::FEATURE_COUNT],
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_or_retried_flush_stores_each_bar_once_and_a_dead_server_loses_nothing() {
    let mut pg = PgServer::start();
    let symbols = SymbolTable::new(["EURUSD", "NAS100"]);
    let store = PgStore::new(&pg.url(), 2, symbols).expect("store");
    store.apply_schema().await.expect("schema");
    let history = History::Postgres(Arc::new(store));
    let tf: Timeframe = "1m".parse().expect("tf");
    // One bar twice in one flush (a revision of it): stored once, with the later values.
    history.absorb(&TickBatch::new(
        0,
        vec![closed(0, 60_000, 1.0), closed(1, 60_000, 5.0)],
    ));
    history.absorb(&TickBatch::new(0, vec![closed(0, 60_000, 1.5)]));
    assert_eq!(history.flush().await.expect("flush").bars, 3);
    assert_eq!(pg.sql_u64("SELECT count(*) FROM bars"), 2);
    assert_eq!(
        pg.sql("SELECT close FROM bars WHERE symbol = 'EURUSD' AND ts = 60000"),
        "1.5"
    );
    // The same rows flushed again change nothing.
    history.absorb(&TickBatch::new(0, vec![closed(0, 60_000, 1.5)]));
    history.flush().await.expect("flush");
    assert_eq!(pg.sql_u64("SELECT count(*) FROM bars"), 2);

    // The server dies: the flush fails, says why, keeps its rows; reads fail too.
    pg.kill();
    history.absorb(&TickBatch::new(0, vec![closed(0, 120_000, 2.0)]));
    history.flush().await.expect_err("nothing to write to");
    let fault = history.fault().expect("a fault");
    assert_eq!(fault.reason, "unreachable", "{fault:?}");
    assert_eq!(history.pending_rows(), 1);
    // Rows that arrive meanwhile queue behind the kept ones; the newest bars stay readable
    // from the buffer only where the database answers, so this read fails.
    history.absorb(&TickBatch::new(0, vec![closed(0, 180_000, 3.0)]));
    assert!(history.recent_bars(0, tf, 10).await.is_err());
    history.flush().await.expect_err("still down");
    assert_eq!(history.fault().expect("fault").failures, 2);
    assert_eq!(history.pending_rows(), 2);

    pg.restart();
    let stats = history
        .flush()
        .await
        .expect("flush once the server is back");
    assert_eq!(stats.bars, 2);
    assert!(history.fault().is_none());
    assert_eq!(history.pending_rows(), 0);
    let recent = history.recent_bars(0, tf, 10).await.expect("read");
    assert_eq!(
        recent
            .iter()
            .map(|b| (b.bar.ts, b.bar.close))
            .collect::<Vec<_>>(),
        [(60_000, 1.5), (120_000, 2.0), (180_000, 3.0)]
    );
    assert_eq!(pg.sql_u64("SELECT count(*) FROM bars"), 4);
    assert_eq!(duplicates(&pg), 0);
}

#[test]
fn postgres_gone_mid_run_is_reported_and_nothing_is_lost_once_it_returns() {
    let mut pg = PgServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("unused.db");
    let (url, db_s) = (pg.url(), db.to_str().expect("utf-8").to_string());
    let mut v = vars(&url, &db_s);
    v.push(("BOOTSTRAP_ON_START", "false"));
    let mut sidecar = Sidecar::start(dir.path(), &v);
    wait_for(Duration::from_secs(10), || {
        (pg.sql_u64("SELECT count(*) FROM bars") > 0).then_some(())
    })
    .expect("bars flushed");
    pg.kill();
    let failing = wait_for(Duration::from_secs(20), || {
        let h = sidecar.store_health("postgres");
        (h["state"] == "failing" && h["failed_writes"].as_u64() >= Some(2)).then_some(h)
    })
    .expect("/health says PostgreSQL is failing");
    assert_eq!(failing["reason"], "unreachable", "{failing}");
    assert!(failing["pending_rows"].as_u64() > Some(0), "{failing}");
    let (status, health) = get_json(sidecar.addr, "/health");
    assert_eq!((status, health["status"].as_str()), (200, Some("degraded")));
    let (status, bars) = get_json(sidecar.addr, "/bars/EURUSD?tf=1s");
    assert_eq!(
        (status, bars["error"].as_str()),
        (503, Some("store_unavailable")),
        "{bars}"
    );
    pg.restart();
    sidecar
        .wait_for_log("PostgreSQL writes work again", Duration::from_secs(30))
        .expect("one line when writes work again");
    wait_for(Duration::from_secs(10), || {
        (sidecar.store_health("postgres")["state"] == "ok").then_some(())
    })
    .expect("/health ok again");
    let stopped = sidecar.stop_cleanly();
    let first_failures = stopped
        .log
        .iter()
        .filter(|l| l.contains("PostgreSQL write failed; nothing is dropped"))
        .count();
    assert_eq!(first_failures, 1, "one warning, not one per retry");
    assert_eq!(
        pg.sql_u64("SELECT count(*) FROM bars"),
        stopped.bars_closed,
        "every bar produced was stored"
    );
}

#[test]
fn two_shards_share_one_database_and_one_redis_cluster_and_store_every_bar_each_produced_once() {
    let pg = PgServer::start();
    let cluster = RedisCluster::start();
    let all: Vec<String> = (0..100).map(|i| format!("SYM{i:03}")).collect();
    let all_s = all.join(",");
    let (url, nodes) = (pg.url(), cluster.urls());
    let dirs = [
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    ];
    let shards: Vec<Sidecar> = dirs
        .iter()
        .enumerate()
        .map(|(i, dir)| {
            let shard = format!("{i}/2");
            Sidecar::start(
                dir.path(),
                &[
                    ("POSTGRES_URL", url.as_str()),
                    ("REDIS_CLUSTER_NODES", nodes.as_str()),
                    ("SYMBOLS", all_s.as_str()),
                    ("SHARD", shard.as_str()),
                    ("TIMEFRAMES", "1s"),
                    ("COLLECTION_INTERVAL", "200ms"),
                    ("BATCH_WRITE_INTERVAL", "300ms"),
                    ("SYNTHETIC_BAD_TICK_RATE", "0"),
                    ("BOOTSTRAP_ON_START", "false"),
                    ("MARKET_HOURS", "*:always"),
                ],
            )
        })
        .collect();
    let owned: Vec<BTreeSet<String>> = shards
        .iter()
        .map(|s| {
            let (_, health) = get_json(s.addr, "/health");
            health["symbols"]
                .as_object()
                .expect("symbols")
                .keys()
                .cloned()
                .collect()
        })
        .collect();
    assert!(owned[0].is_disjoint(&owned[1]));
    let union: BTreeSet<String> = owned[0].union(&owned[1]).cloned().collect();
    assert_eq!(union, all.iter().cloned().collect::<BTreeSet<_>>());
    // Both write: every symbol has bars in the one database.
    wait_for(Duration::from_secs(30), || {
        (pg.sql_u64("SELECT count(DISTINCT symbol) FROM bars") == 100).then_some(())
    })
    .expect("bars of all 100 symbols");
    let mut produced = 0;
    for (i, shard) in shards.into_iter().enumerate() {
        let closed = shard.stop_cleanly().bars_closed;
        let in_pg: Vec<String> = owned[i].iter().map(|s| format!("'{s}'")).collect();
        let stored = pg.sql_u64(&format!(
            "SELECT count(*) FROM bars WHERE symbol IN ({})",
            in_pg.join(",")
        ));
        assert_eq!(stored, closed, "shard {i}: every bar it produced, once");
        produced += closed;
    }
    assert_eq!(pg.sql_u64("SELECT count(*) FROM bars"), produced);
    assert_eq!(duplicates(&pg), 0);
    assert_eq!(
        pg.sql_u64("SELECT count(DISTINCT symbol) FROM indicator_state"),
        100,
        "each shard checkpointed its own symbols"
    );
    // Both wrote to the one cluster: every symbol's ring is its newest bars in PostgreSQL.
    let mut conn = cluster.client();
    for symbol in &all {
        let bars = ring(&mut conn, &format!("barkeep:bars:{{{symbol}}}:1s"));
        assert!(!bars.is_empty(), "{symbol}: no ring");
        let history: Vec<(i64, f64)> = pg
            .sql(&format!(
                "SELECT ts, close FROM (SELECT ts, close FROM bars WHERE symbol = '{symbol}' \
                 AND timeframe = '1s' ORDER BY ts DESC LIMIT 5000) t ORDER BY ts"
            ))
            .lines()
            .map(|l| {
                let (ts, close) = l.split_once('|').expect("ts|close");
                (ts.parse().expect("ts"), close.parse().expect("close"))
            })
            .collect();
        assert_eq!(bars, history, "{symbol}: ring = PostgreSQL's newest bars");
    }
}

/// A shard of `symbols` on the PostgreSQL at `url`, collecting every 100 ms.
fn shard_on(dir: &std::path::Path, url: &str, symbols: &str, shard: &str) -> Sidecar {
    Sidecar::start(
        dir,
        &[
            ("POSTGRES_URL", url),
            ("SYMBOLS", symbols),
            ("SHARD", shard),
            ("TIMEFRAMES", "1s"),
            ("COLLECTION_INTERVAL", "100ms"),
            ("BOOTSTRAP_ON_START", "false"),
            ("MARKET_HOURS", "*:always"),
        ],
    )
}

fn interval_ms(s: &Sidecar) -> u64 {
    let (status, c) = get_json(s.addr, "/streaming/config/cadences/market_data");
    assert_eq!(status, 200, "{c}");
    c["interval_ms"].as_u64().expect("interval_ms")
}

fn collects(s: &Sidecar, symbol: &str) -> bool {
    let (_, health) = get_json(s.addr, "/health");
    health["symbols"].get(symbol).is_some()
}

#[test]
fn shards_sharing_one_database_keep_their_own_run_time_settings_and_instruments() {
    let pg = PgServer::start();
    let url = pg.url();
    let all: Vec<String> = (0..20).map(|i| format!("SYM{i:03}")).collect();
    let all_s = all.join(",");
    let of_shard = |shard: u32, skip: usize| {
        (0..400)
            .map(|i| format!("NEW{i}"))
            .filter(|s| barkeep::shard::owner(s, 2) == shard)
            .nth(skip)
            .expect("a symbol of that shard")
    };
    let (added, stored) = (of_shard(1, 0), of_shard(1, 1));
    let dirs = [
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    ];
    let start = |i: usize| shard_on(dirs[i].path(), &url, &all_s, &format!("{i}/2"));
    let (zero, one) = (start(0), start(1));
    assert_eq!((interval_ms(&zero), interval_ms(&one)), (100, 100));
    let (status, body) = send(
        zero.addr,
        "PUT",
        "/streaming/config/cadences/market_data",
        &[("Content-Type", "application/json")],
        Some(r#"{"interval_ms": 400}"#),
    );
    assert_eq!(status, 200, "{body}");
    // An instrument shard 1 owns: refused by shard 0, added through shard 1.
    let body = format!(r#"{{"symbol": "{added}", "calendar": "always"}}"#);
    let (status, e) = send_json(
        zero.addr,
        "POST",
        "/streaming/config/instruments",
        Some(&body),
    );
    assert_eq!(
        (status, e["error"].as_str()),
        (409, Some("wrong_shard")),
        "{e}"
    );
    let (status, e) = send_json(
        one.addr,
        "POST",
        "/streaming/config/instruments",
        Some(&body),
    );
    assert_eq!(status, 201, "{e}");
    zero.stop_cleanly();
    one.stop_cleanly();
    assert_eq!(
        pg.sql("SELECT shard, name FROM runtime_settings ORDER BY shard, name"),
        "0/2|cadence:market_data"
    );
    // An instrument stored for shard 1 by someone else (an instance of another SHARD, a
    // script): in the shared table, not added through shard 1.
    pg.sql(&format!(
        "INSERT INTO instruments (symbol, calendar, active, added_at, updated_at)
         VALUES ('{stored}', 'always', true, 1, 1)"
    ));

    let (zero, one) = (start(0), start(1));
    assert_eq!(interval_ms(&zero), 400, "shard 0 keeps its change");
    assert_eq!(
        interval_ms(&one),
        100,
        "shard 1 does not take shard 0's change"
    );
    for symbol in [&added, &stored] {
        assert!(
            collects(&one, symbol),
            "shard 1 collects its stored {symbol}"
        );
        assert!(!collects(&zero, symbol), "shard 0 skips shard 1's {symbol}");
    }
    let quoted = format!("'{added}', '{stored}'");
    wait_for(Duration::from_secs(20), || {
        (pg.sql_u64(&format!(
            "SELECT count(DISTINCT symbol) FROM bars WHERE symbol IN ({quoted})"
        )) == 2)
            .then_some(())
    })
    .expect("shard 1 stores bars of both");
    zero.stop_cleanly();
    one.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settings_table_of_an_earlier_version_is_migrated_keeping_its_rows_unsharded() {
    let pg = PgServer::start();
    pg.sql(
        "CREATE TABLE runtime_settings (name TEXT PRIMARY KEY, value TEXT NOT NULL,
         updated_at BIGINT NOT NULL);
         INSERT INTO runtime_settings VALUES ('workers', '{\"stopped\": []}', 1)",
    );
    for round in 0..2 {
        let store = PgStore::new(&pg.url(), 1, SymbolTable::new(["EURUSD"])).expect("store");
        store.apply_schema().await.expect("schema applied again");
        assert_eq!(
            store.setting("", "workers").await.expect("read").as_deref(),
            Some("{\"stopped\": []}"),
            "round {round}"
        );
        store
            .put_setting("1/2", "workers", Some("[]"), 2)
            .await
            .expect("a shard's row beside the unsharded one");
    }
    assert_eq!(
        pg.sql(
            "SELECT string_agg(a.attname, ',' ORDER BY k.n) FROM pg_constraint c,
             unnest(c.conkey) WITH ORDINALITY k(att, n)
             JOIN pg_attribute a ON a.attnum = k.att
             WHERE c.conrelid = 'runtime_settings'::regclass AND c.contype = 'p'
               AND a.attrelid = c.conrelid"
        ),
        "shard,name"
    );
    assert_eq!(pg.sql_u64("SELECT count(*) FROM runtime_settings"), 2);
}
