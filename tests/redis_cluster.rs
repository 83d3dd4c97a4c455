//! barkeep on a Redis Cluster (`REDIS_CLUSTER_NODES`) of the test's own: three masters and three
//! replicas (tests/common/cluster.rs). Rings, features, stream and sharded pub/sub for every
//! symbol, a symbol's keys on one slot, old keys removed on every master; a master killed
//! mid-run; two shards on one cluster and one PostgreSQL.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::cluster::RedisCluster;
use common::{Sidecar, get_json, ring, sqlite_newest, unpack, wait_for};

fn symbols(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("SYM{i:03}")).collect()
}

fn vars<'a>(db: &'a str, nodes: &'a str, symbols: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("SQLITE_PATH", db),
        ("REDIS_CLUSTER_NODES", nodes),
        ("SYMBOLS", symbols),
        ("TIMEFRAMES", "1s"),
        ("COLLECTION_INTERVAL", "100ms"),
        ("BATCH_WRITE_INTERVAL", "300ms"),
        ("SYNTHETIC_BAD_TICK_RATE", "0"),
        ("BOOTSTRAP_ON_START", "false"),
        ("MARKET_HOURS", "*:always"),
    ]
}

fn ring_key(symbol: &str) -> String {
    format!("barkeep:bars:{{{symbol}}}:1s")
}

fn redis_health(addr: std::net::SocketAddr) -> serde_json::Value {
    get_json(addr, "/health").1["redis"].clone()
}

/// Every symbol's ring is SQLite's newest bars, oldest first, one second apart.
fn assert_rings_equal_sqlite(
    conn: &mut redis::cluster::ClusterConnection,
    db: &std::path::Path,
    symbols: &[String],
) {
    for s in symbols {
        let bars = ring(conn, &ring_key(s));
        assert_contiguous(s, &bars);
        assert_eq!(
            bars,
            sqlite_newest(db, s, "1s", 5_000),
            "{s}: ring = SQLite"
        );
    }
}

/// Oldest first, one second apart: no gap, no duplicate.
fn assert_contiguous(symbol: &str, bars: &[(i64, f64)]) {
    assert!(!bars.is_empty(), "{symbol}: an empty ring");
    for w in bars.windows(2) {
        assert_eq!(
            w[1].0 - w[0].0,
            1_000,
            "{symbol}: gap or duplicate at {}",
            w[0].0
        );
    }
}

#[test]
fn the_sidecar_writes_every_symbol_to_the_cluster_and_removes_old_keys_on_every_master() {
    let cluster = RedisCluster::start();
    let all = symbols(12);
    let mut conn = cluster.client();
    // The previous layout's keys, spread over the masters by their slots; and keys that are not
    // barkeep's to remove.
    let old: Vec<String> = all
        .iter()
        .flat_map(|s| {
            [
                format!("barkeep:bars:{s}:1s"),
                format!("barkeep:live:{s}:1s"),
            ]
        })
        .collect();
    let kept: Vec<String> = all.iter().map(|s| format!("other:bars:{s}:1s")).collect();
    for key in old.iter().chain(&kept) {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg("old")
            .query(&mut conn)
            .expect("SET");
    }
    let holders: BTreeSet<u16> = old.iter().map(|k| cluster.master_of(k)).collect();
    assert_eq!(holders.len(), 3, "old keys on every master");

    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("b.db");
    let db_s = db.to_str().expect("utf-8").to_string();
    let (nodes, list) = (cluster.urls(), all.join(","));
    // Sharded pub/sub: one connection per master, subscribed to the channels of its slots.
    let mut by_master: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for s in &all {
        let channel = format!("barkeep:events:{{{s}}}");
        by_master
            .entry(cluster.master_of(&channel))
            .or_default()
            .push(channel);
    }
    let mut subscribers: Vec<redis::Connection> = by_master
        .iter()
        .map(|(&port, channels)| {
            let mut c = cluster.node(port);
            for ch in channels {
                c.send_packed_command(&redis::cmd("SSUBSCRIBE").arg(ch).get_packed_command())
                    .expect("SSUBSCRIBE");
                c.recv_response().expect("subscribed");
            }
            c.set_read_timeout(Some(Duration::from_millis(200)))
                .expect("timeout");
            c
        })
        .collect();

    let sidecar = Sidecar::start(dir.path(), &vars(&db_s, &nodes, &list));
    let health = redis_health(sidecar.addr);
    assert_eq!(health["mode"], "cluster", "{health}");
    assert_eq!(
        health["nodes"].as_array().map(Vec::len),
        Some(6),
        "{health}"
    );
    assert_eq!(
        health["masters"].as_array().map(Vec::len),
        Some(3),
        "{health}"
    );

    // Every symbol's messages arrive by SSUBSCRIBE on the master of its slot.
    let mut heard: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let until = Instant::now() + Duration::from_secs(30);
    while heard.len() < all.len() && Instant::now() < until {
        for c in &mut subscribers {
            let Ok(redis::Value::Array(parts)) = c.recv_response() else {
                continue;
            };
            if let [
                redis::Value::BulkString(kind),
                _,
                redis::Value::BulkString(data),
            ] = parts.as_slice()
                && kind == b"smessage"
            {
                let msg = unpack(data);
                heard.insert(msg["symbol"].as_str().expect("symbol").to_string(), msg);
            }
        }
    }
    assert_eq!(
        heard.len(),
        all.len(),
        "messages of every symbol: {:?}",
        heard.keys()
    );
    assert!(heard.values().all(|m| m["data_type"] == "tick"));

    wait_for(Duration::from_secs(30), || {
        all.iter()
            .all(|s| ring(&mut conn, &ring_key(s)).len() >= 3)
            .then_some(())
    })
    .expect("every ring fills");
    for s in &all {
        let features: Option<Vec<u8>> = redis::cmd("GET")
            .arg(format!("barkeep:features:{{{s}}}:1s"))
            .query(&mut conn)
            .expect("GET");
        assert!(
            features.is_some_and(|f| unpack(&f)["close"].is_number()),
            "{s}: features"
        );
        let entries: u64 = redis::cmd("XLEN")
            .arg(format!("barkeep:stream:{{{s}}}"))
            .query(&mut conn)
            .expect("XLEN");
        assert!(entries > 0, "{s}: stream");
    }
    // A symbol's keys are all on its tag's slot, on one master.
    let s = &all[0];
    let master = cluster.master_of(&ring_key(s));
    let slot: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(s)
        .query(&mut cluster.node(master))
        .expect("KEYSLOT");
    let on_slot: Vec<String> = redis::cmd("CLUSTER")
        .arg("GETKEYSINSLOT")
        .arg(slot)
        .arg(100)
        .query(&mut cluster.node(master))
        .expect("GETKEYSINSLOT");
    for key in [
        ring_key(s),
        format!("barkeep:features:{{{s}}}:1s"),
        format!("barkeep:stream:{{{s}}}"),
    ] {
        assert!(
            on_slot.contains(&key),
            "{key} not on slot {slot}: {on_slot:?}"
        );
    }

    let (code, log) = sidecar.terminate();
    assert_eq!(code, 0, "{}", log.join("\n"));
    let exists = |conn: &mut redis::cluster::ClusterConnection, key: &str| -> bool {
        redis::cmd("EXISTS")
            .arg(key)
            .query::<u64>(conn)
            .expect("EXISTS")
            == 1
    };
    for key in &old {
        assert!(!exists(&mut conn, key), "{key} is still there");
    }
    for key in &kept {
        assert!(exists(&mut conn, key), "{key} was touched");
    }
    assert_rings_equal_sqlite(&mut conn, &db, &all);
}

#[test]
fn a_master_killed_mid_run_is_replaced_by_its_replica_and_every_ring_equals_history() {
    let mut cluster = RedisCluster::start();
    let all = symbols(12);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("b.db");
    let db_s = db.to_str().expect("utf-8").to_string();
    let (nodes, list) = (cluster.urls(), all.join(","));
    let sidecar = Sidecar::start(dir.path(), &vars(&db_s, &nodes, &list));
    let mut conn = cluster.client();
    wait_for(Duration::from_secs(30), || {
        all.iter()
            .all(|s| ring(&mut conn, &ring_key(s)).len() >= 3)
            .then_some(())
    })
    .expect("every ring fills");
    let victim = cluster.master_of(&ring_key(&all[0]));
    let before = cluster.masters();
    cluster.kill(victim);
    // The replica of the killed master takes its slots.
    wait_for(Duration::from_secs(60), || {
        let masters = cluster.masters();
        (masters.len() == 3 && !masters.contains_key(&victim)).then_some(())
    })
    .unwrap_or_else(|| panic!("no fail-over from {before:?}: {}", cluster.cluster_nodes()));
    cluster.wait_until_ok(Duration::from_secs(60));
    let promoted = Instant::now();
    // barkeep goes on: every ring grows past the fail-over by a few ticks.
    let mut conn = cluster.client();
    let last = |conn: &mut redis::cluster::ClusterConnection, s: &str| {
        ring(conn, &ring_key(s)).last().map_or(0, |b| b.0)
    };
    let base: Vec<i64> = all.iter().map(|s| last(&mut conn, s)).collect();
    wait_for(Duration::from_secs(60), || {
        all.iter()
            .zip(&base)
            .all(|(s, &b)| last(&mut conn, s) >= b + 3_000)
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "rings stopped after the fail-over ({:?} ago); health {}",
            promoted.elapsed(),
            redis_health(sidecar.addr)
        )
    });
    let health = redis_health(sidecar.addr);
    assert_eq!(health["state"], "up", "{health}");
    assert!(
        !health["masters"]
            .to_string()
            .contains(&format!(":{victim}\"")),
        "the dead master is no longer listed: {health}"
    );
    let (_, metrics) = get_json(sidecar.addr, "/metrics/json");
    assert!(
        metrics["counters"]["redis_resyncs_total"].as_u64() >= Some(2),
        "the rings were reconciled after the fail-over: {}",
        metrics["counters"]
    );
    let (code, log) = sidecar.terminate();
    assert_eq!(code, 0, "{}", log.join("\n"));
    assert_rings_equal_sqlite(&mut conn, &db, &all);
}
