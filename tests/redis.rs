//! The Redis knowledge base against a real `redis-server` started per test on a free port.

mod common;

use std::time::Duration;

use common::{
    RedisServer, Sidecar, get_json, ring, sql_u64, sqlite_newest, subscribed, unpack, wait_for,
    xread,
};

const KEY: &str = "barkeep:bars:{EURUSD}:1s";

fn vars<'a>(db: &'a str, url: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("SQLITE_PATH", db),
        ("REDIS_URL", url),
        ("SYMBOLS", "EURUSD,NAS100"),
        ("TIMEFRAMES", "1s"),
        ("COLLECTION_INTERVAL", "100ms"),
        ("BATCH_WRITE_INTERVAL", "500ms"),
        ("SYNTHETIC_BAD_TICK_RATE", "0"),
        // These tests follow rings bar by bar; the background bootstrap has its own test.
        ("BOOTSTRAP_ON_START", "false"),
    ]
}

fn redis_state(addr: std::net::SocketAddr) -> String {
    get_json(addr, "/health").1["redis"]["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn ring_is_capped_ordered_and_survives_a_restart_without_duplicates() {
    let redis = RedisServer::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("b.db");
    let (db_s, url) = (db.to_str().expect("utf-8").to_string(), redis.url());
    let mut v = vars(&db_s, &url);
    v.push(("WARMUP_BARS", "6200"));
    let sidecar = Sidecar::start(dir.path(), &v);
    let mut conn = redis.client();
    wait_for(Duration::from_secs(20), || {
        (ring(&mut conn, KEY).len() == 5_000).then_some(())
    })
    .expect("ring fills to 5000");
    let (code, log) = sidecar.terminate();
    assert_eq!(code, 0, "{}", log.join("\n"));
    let first_run = ring(&mut conn, KEY);
    assert_eq!(first_run.len(), 5_000, "capped at MAX_BARS_CACHE");
    assert!(sql_u64(&db, "SELECT count(*) FROM bars WHERE symbol = 'EURUSD'") >= 6_200);
    assert!(
        first_run.windows(2).all(|w| w[1].0 - w[0].0 == 1_000),
        "oldest first, no gap, no duplicate"
    );
    assert_eq!(
        first_run,
        sqlite_newest(&db, "EURUSD", "1s", 5_000),
        "ring = SQLite's newest 5000"
    );

    // Restart on the same ring: it is reconciled, not re-pushed.
    let sidecar = Sidecar::start(dir.path(), &v);
    wait_for(Duration::from_secs(10), || {
        (redis_state(sidecar.addr) == "up").then_some(())
    })
    .expect("redis up");
    wait_for(Duration::from_secs(10), || {
        (ring(&mut conn, KEY).last() > first_run.last()).then_some(())
    })
    .expect("new bars pushed onto the kept ring");
    let (_, metrics) = get_json(sidecar.addr, "/metrics/json");
    assert_eq!(
        metrics["counters"]["redis_backfilled_bars_total"], 0,
        "a matching ring is kept as it is"
    );
    let (code, _) = sidecar.terminate();
    assert_eq!(code, 0);
    let second_run = ring(&mut conn, KEY);
    assert_eq!(second_run.len(), 5_000);
    assert!(
        second_run.windows(2).all(|w| w[1].0 > w[0].0),
        "no duplicate after restart"
    );
    assert!(second_run.last() > first_run.last());
    assert_eq!(second_run, sqlite_newest(&db, "EURUSD", "1s", 5_000));
}

#[test]
fn values_are_named_maps_features_expire_and_events_are_published() {
    let redis = RedisServer::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("b.db");
    // Over the unix socket, as a bot on the same box would connect.
    let url = format!("unix://{}", redis.socket().display());
    let db_s = db.to_str().expect("utf-8").to_string();
    let mut v = vars(&db_s, &url);
    v.push(("FEATURE_CACHE_TTL", "200ms"));
    let mut subscriber = redis.client();
    let mut pubsub = subscribed(
        &mut subscriber,
        "barkeep:events:{EURUSD}",
        Duration::from_secs(10),
    );
    let sidecar = Sidecar::start(dir.path(), &v);

    // One message per tick: the closed 1s bar with its committed features, and the forming
    // bar, in the streaming model's envelope.
    let (mut closed, mut live, mut last_seq) = (0, 0, None::<u64>);
    for _ in 0..1_000 {
        let msg = pubsub.get_message().expect("a message within 10 s");
        let m = unpack(msg.get_payload_bytes());
        assert_eq!(m["symbol"], "EURUSD", "{m}");
        assert_eq!(m["channel"], "barkeep:events:{EURUSD}", "{m}");
        assert_eq!(m["data_type"], "tick", "{m}");
        assert_eq!(m["update_type"], "snapshot", "{m}");
        assert_eq!(m["metadata"]["worker_id"], "market_data:synthetic", "{m}");
        assert!(m["timestamp"].as_i64() > Some(1_600_000_000_000), "{m}");
        let seq = m["seq"].as_u64().expect("seq");
        if let Some(last) = last_seq {
            assert_eq!(seq, last + 1, "seq goes up by one per message");
        }
        last_seq = Some(seq);
        let frame = &m["data"]["1s"];
        for bar in frame["closed"].as_array().expect("closed bars") {
            assert!(
                bar["bar"]["close"].is_f64() && bar["features"]["obv"].is_f64(),
                "{m}"
            );
            // The first history bars are sent while the indicators are still warming up.
            closed += usize::from(bar["features"]["ema_12"].is_f64());
        }
        if frame["live"]["bar"]["open"].is_f64() {
            // The forming bar goes alone: its peeked features are in the features value.
            assert!(frame["live"].get("features").is_none(), "{m}");
            live += 1;
        }
        if closed > 0 && live > 0 {
            break;
        }
    }
    assert!(closed > 0 && live > 0, "closed {closed}, live {live}");
    drop(pubsub);

    let mut conn = redis.client();
    let features: Vec<u8> = redis::cmd("GET")
        .arg("barkeep:features:{EURUSD}:1s")
        .query(&mut conn)
        .expect("features key");
    let features = unpack(&features);
    // The newest bar and its features are one value.
    for field in [
        "ts",
        "age_ms",
        "forming",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "source",
        "quality",
        "sma_20",
        "rsi_14",
        "macd_hist",
        "vwap",
    ] {
        assert!(!features[field].is_null(), "{field}: {features}");
    }
    let live_key: i64 = redis::cmd("EXISTS")
        .arg("barkeep:live:{EURUSD}:1s")
        .query(&mut conn)
        .expect("EXISTS");
    assert_eq!(live_key, 0, "no live key: the bar is in the features value");
    let ttl: i64 = redis::cmd("PTTL")
        .arg("barkeep:features:{EURUSD}:1s")
        .query(&mut conn)
        .expect("PTTL");
    assert!(ttl > 0 && ttl <= 400, "features carry a TTL: {ttl}");

    let (code, _) = sidecar.terminate();
    assert_eq!(code, 0);
    wait_for(Duration::from_secs(5), || {
        let exists: i64 = redis::cmd("EXISTS")
            .arg("barkeep:features:{EURUSD}:1s")
            .query(&mut conn)
            .expect("EXISTS");
        (exists == 0).then_some(())
    })
    .expect("a stopped sidecar's features expire");
    assert_eq!(
        ring(&mut conn, KEY),
        sqlite_newest(&db, "EURUSD", "1s", 5_000)
    );
}

#[test]
fn redis_killed_mid_run_is_backfilled_from_sqlite() {
    let mut redis = RedisServer::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("b.db");
    let (db_s, url) = (db.to_str().expect("utf-8").to_string(), redis.url());
    let sidecar = Sidecar::start(dir.path(), &vars(&db_s, &url));
    let mut conn = redis.client();
    let (before, last_pushed) = wait_for(Duration::from_secs(10), || {
        let r = ring(&mut conn, KEY);
        (r.len() > 102).then(|| (r.len(), r.last().map_or(0, |b| b.0)))
    })
    .expect("live bars reach the ring");
    redis.kill();
    wait_for(Duration::from_secs(10), || {
        (redis_state(sidecar.addr) == "down").then_some(())
    })
    .expect("/health shows redis down");
    let (status, health) = get_json(sidecar.addr, "/health");
    assert_eq!((status, health["status"].as_str()), (200, Some("degraded")));
    // Bars keep closing meanwhile: three of them reach SQLite while Redis is down.
    wait_for(Duration::from_secs(15), || {
        let newest = sql_u64(&db, "SELECT max(ts) FROM bars WHERE symbol = 'EURUSD'");
        (newest as i64 >= last_pushed + 3_000).then_some(())
    })
    .expect("bars stored during the outage");
    redis.restart();
    wait_for(Duration::from_secs(15), || {
        (redis_state(sidecar.addr) == "up").then_some(())
    })
    .expect("redis up again");
    let mut conn = redis.client();
    wait_for(Duration::from_secs(10), || {
        let (_, metrics) = get_json(sidecar.addr, "/metrics/json");
        (metrics["counters"]["redis_backfilled_bars_total"].as_u64() >= Some(before as u64)
            && metrics["counters"]["redis_reconnects_total"].as_u64() >= Some(1))
        .then_some(())
    })
    .expect("the rings are backfilled after the reconnect");
    let (code, log) = sidecar.terminate();
    assert_eq!(code, 0, "{}", log.join("\n"));
    let after = ring(&mut conn, KEY);
    assert!(
        after.len() >= before + 3,
        "bars from the outage are in the ring: {} vs {before}",
        after.len()
    );
    assert!(
        after.windows(2).all(|w| w[1].0 - w[0].0 == 1_000),
        "no gap, no duplicate"
    );
    assert_eq!(
        after,
        sqlite_newest(&db, "EURUSD", "1s", 5_000),
        "ring identical to SQLite"
    );
}

#[test]
fn a_ring_ahead_of_sqlite_fills_sqlite_back() {
    let redis = RedisServer::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("b.db");
    let (db_s, url) = (db.to_str().expect("utf-8").to_string(), redis.url());
    let sidecar = Sidecar::start(dir.path(), &vars(&db_s, &url));
    let mut conn = redis.client();
    wait_for(Duration::from_secs(10), || {
        (ring(&mut conn, KEY).len() >= 20).then_some(())
    })
    .expect("bars reach the ring");
    let (code, _) = sidecar.terminate();
    assert_eq!(code, 0);
    let mut full = ring(&mut conn, KEY);
    // A crash that lost SQLite's unflushed buffer: the newest bars are only in Redis, and
    // among them a hole (two seconds without data) whose gap row was in the lost buffer too.
    let cut = full[full.len() - 10].0;
    let hole = (full[full.len() - 5].0, full[full.len() - 3].0);
    let doomed: Vec<Vec<u8>> = [-5, -4]
        .iter()
        .map(|i| {
            redis::cmd("LINDEX")
                .arg(KEY)
                .arg(*i)
                .query(&mut conn)
                .expect("lindex")
        })
        .collect();
    for raw in doomed {
        let _: i64 = redis::cmd("LREM")
            .arg(KEY)
            .arg(1)
            .arg(raw)
            .query(&mut conn)
            .expect("lrem");
    }
    full.retain(|bar| bar.0 < hole.0 || bar.0 >= hole.1);
    let sqlite = rusqlite::Connection::open(&db).expect("open");
    let removed = sqlite
        .execute(
            "DELETE FROM bars WHERE symbol = 'EURUSD' AND ts >= ?1",
            [cut],
        )
        .expect("delete");
    assert_eq!(removed, 10);
    sqlite
        .execute("DELETE FROM indicator_state", [])
        .expect("delete");
    drop(sqlite);

    let sidecar = Sidecar::start(dir.path(), &vars(&db_s, &url));
    wait_for(Duration::from_secs(10), || {
        (redis_state(sidecar.addr) == "up").then_some(())
    })
    .expect("redis up");
    let (_, metrics) = get_json(sidecar.addr, "/metrics/json");
    assert_eq!(metrics["counters"]["redis_recovered_bars_total"], 8);
    let (code, _) = sidecar.terminate();
    assert_eq!(code, 0);
    let gaps: Vec<(i64, i64)> = {
        let sqlite = rusqlite::Connection::open(&db).expect("open");
        let mut q = sqlite
            .prepare("SELECT from_ts, to_ts FROM gaps WHERE symbol = 'EURUSD' AND timeframe = '1s'")
            .expect("prepare");
        q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    assert!(
        gaps.contains(&hole),
        "the hole among the recovered bars is a gap: {gaps:?}, hole {hole:?}"
    );
    let restored = sqlite_newest(&db, "EURUSD", "1s", 5_000);
    assert!(
        full.iter().all(|bar| restored.contains(bar)),
        "every bar the ring had is in SQLite again"
    );
    assert_eq!(ring(&mut conn, KEY), restored);
}

#[test]
fn wrong_password_and_unreachable_redis_degrade_health_without_crashing() {
    let redis = RedisServer::start(&["--requirepass", "right-secret"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("b.db");
    let db_s = db.to_str().expect("utf-8").to_string();
    let url = format!("redis://:wrong-secret@127.0.0.1:{}", redis.port);
    let sidecar = Sidecar::start(dir.path(), &vars(&db_s, &url));
    let health = wait_for(Duration::from_secs(10), || {
        let (status, h) = get_json(sidecar.addr, "/health");
        (status == 200 && h["redis"]["state"] == "down").then_some(h)
    })
    .expect("degraded, not crashed");
    assert_eq!(health["status"], "degraded");
    let reason = health["redis"]["reason"]
        .as_str()
        .expect("reason")
        .to_string();
    assert!(
        reason.to_lowercase().contains("authentication failed") || reason.contains("WRONGPASS"),
        "{reason}"
    );
    assert!(
        !health.to_string().contains("wrong-secret"),
        "password leaked: {health}"
    );
    // Bars still reach SQLite.
    wait_for(Duration::from_secs(10), || {
        (sql_u64(&db, "SELECT count(*) FROM bars") > 0).then_some(())
    })
    .expect("bars reach SQLite while Redis refuses the password");
    let (code, _) = sidecar.terminate();
    assert_eq!(code, 0);

    // Nothing listening at start: barkeep starts, then connects when Redis appears.
    let mut late = RedisServer::start(&[]);
    late.kill();
    let url = late.url();
    let sidecar = Sidecar::start(dir.path(), &vars(&db_s, &url));
    wait_for(Duration::from_secs(10), || {
        (redis_state(sidecar.addr) == "down").then_some(())
    })
    .expect("down at start");
    late.restart();
    wait_for(Duration::from_secs(15), || {
        (redis_state(sidecar.addr) == "up").then_some(())
    })
    .expect("connects later");
    let (code, _) = sidecar.terminate();
    assert_eq!(code, 0);
    let mut conn = late.client();
    assert_eq!(
        ring(&mut conn, KEY),
        sqlite_newest(&db, "EURUSD", "1s", 5_000)
    );
}

/// Whether the README's Python examples can run here (said when not).
fn python_has_redis_and_msgpack() -> bool {
    let ready = std::process::Command::new("python3")
        .args(["-c", "import redis, msgpack"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ready {
        eprintln!(
            "skipped: python3 with redis and msgpack is not installed (pip install redis msgpack)"
        );
    }
    ready
}

/// Runs an example script in `examples/` with `args`; its stdout as JSON.
fn run_python_example(script: &str, args: &[&str]) -> serde_json::Value {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(script);
    let out = std::process::Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from the script")
}

#[test]
fn the_readme_python_readers_work_when_python_has_redis_and_msgpack() {
    if !python_has_redis_and_msgpack() {
        return;
    }
    let redis = RedisServer::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("b.db");
    let (db_s, url) = (db.to_str().expect("utf-8").to_string(), redis.url());
    let sidecar = Sidecar::start(dir.path(), &vars(&db_s, &url));
    wait_for(Duration::from_secs(10), || {
        (redis_state(sidecar.addr) == "up").then_some(())
    })
    .expect("redis up");
    let read = run_python_example("bot_reader.py", &[url.as_str(), "EURUSD", "1s"]);
    assert_eq!(read["bars"].as_array().map(Vec::len), Some(5));
    assert!(read["bars"][4]["close"].is_f64());
    assert!(read["features"]["rsi_14"].is_f64(), "{read}");
    assert_eq!(read["event"]["symbol"], "EURUSD");

    // The stream: read five from the oldest, then, after ten more came, on from the last id.
    let run = |last_id: &str, count: &str| {
        run_python_example(
            "bot_stream_reader.py",
            &[url.as_str(), "EURUSD", last_id, count],
        )
    };
    let first = run("0", "5");
    // The reader is away while messages keep coming; it resumes from the id it printed.
    let mut conn = redis.client();
    let away_from = first["last_id"].as_str().expect("last id").to_string();
    wait_for(Duration::from_secs(10), || {
        (xread(&mut conn, "barkeep:stream:{EURUSD}", &away_from, 20, 100).len() >= 10).then_some(())
    })
    .expect("ten more messages");
    let second = run(&away_from, "10");
    let (code, _) = sidecar.terminate();
    assert_eq!(code, 0);
    let seqs: Vec<u64> = [&first, &second]
        .iter()
        .flat_map(|r| r["messages"].as_array().cloned().unwrap_or_default())
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs.len(), 15);
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    assert!(second["messages"][0]["closes"]["1s"].is_f64(), "{second}");
}

#[test]
fn history_is_filled_in_the_background_and_the_ring_follows() {
    let redis = RedisServer::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("b.db");
    let (db_s, url) = (db.to_str().expect("utf-8").to_string(), redis.url());
    let v = [
        ("SQLITE_PATH", db_s.as_str()),
        ("REDIS_URL", url.as_str()),
        ("SYMBOLS", "EURUSD"),
        ("TIMEFRAMES", "1m"),
        ("COLLECTION_INTERVAL", "100ms"),
        ("BATCH_WRITE_INTERVAL", "200ms"),
        ("SYNTHETIC_BAD_TICK_RATE", "0"),
        ("HISTORY_DAYS", "5"),
    ];
    let mut sidecar = Sidecar::start(dir.path(), &v);
    // Serving starts before the history is complete.
    assert_eq!(get_json(sidecar.addr, "/signals/EURUSD").0, 200);
    let done = sidecar
        .wait_for_log("bootstrap done", Duration::from_secs(60))
        .expect("the background bootstrap finishes");
    assert!(
        common::log_field(&[done], "bootstrap done", "stored").is_some_and(|n| n > 5_000),
        "{}",
        sidecar.lines.join("\n")
    );
    let key = "barkeep:bars:{EURUSD}:1m";
    let mut conn = redis.client();
    wait_for(Duration::from_secs(10), || {
        let ring = ring(&mut conn, key);
        (ring.len() == 5_000 && ring == sqlite_newest(&db, "EURUSD", "1m", 5_000)).then_some(())
    })
    .expect("the ring holds SQLite's newest 5000 bars, older history included");
    let (count, first, last) = (
        sql_u64(&db, "SELECT count(*) FROM bars WHERE symbol = 'EURUSD'"),
        sql_u64(&db, "SELECT min(ts) FROM bars WHERE symbol = 'EURUSD'"),
        sql_u64(&db, "SELECT max(ts) FROM bars WHERE symbol = 'EURUSD'"),
    );
    assert!(count >= 5 * 1_440, "five days of minutes: {count}");
    assert_eq!(count, (last - first) / 60_000 + 1, "one stretch, no hole");
    let (code, log) = sidecar.terminate();
    assert_eq!(code, 0, "{}", log.join("\n"));

    // The next start finds the history there: at most the minutes it was down are fetched.
    let mut sidecar = Sidecar::start(dir.path(), &v);
    let done = sidecar
        .wait_for_log("bootstrap done", Duration::from_secs(30))
        .expect("bootstrap done");
    let stored = common::log_field(&[done], "bootstrap done", "stored").expect("stored");
    assert!(stored <= 2, "stored {stored} again");
    let (code, _) = sidecar.terminate();
    assert_eq!(code, 0);
}

#[test]
fn a_closed_market_keeps_its_last_features_marked_closed_until_the_open() {
    use barkeep::calendar::MarketCalendar;
    // A calendar that is closed now and stays closed for the test (NYSE and Tokyo never are
    // open at the same time, so one of the exchange calendars always qualifies); the one closed
    // the longest, so its last bars are hours back, beyond the warm-up's reach from now.
    let now = barkeep::clock::system_now_ms();
    let calendar = MarketCalendar::ALL
        .into_iter()
        .filter(|c| {
            let s = c.session_at(now);
            !s.open && s.until_ms > now + 300_000
        })
        .min_by_key(|c| c.session_at(now).since_ms)
        .expect("some market is closed for the next five minutes");
    let next_open = calendar.session_at(now).until_ms;
    let redis = RedisServer::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("closed.db");
    let db_s = db.to_str().expect("utf-8").to_string();
    let hours = format!("EURUSD:{}", calendar.name());
    let url = redis.url();
    let v = vec![
        ("SQLITE_PATH", db_s.as_str()),
        ("REDIS_URL", url.as_str()),
        ("SYMBOLS", "EURUSD"),
        ("TIMEFRAMES", "1m"),
        ("COLLECTION_INTERVAL", "100ms"),
        ("FEATURE_CACHE_TTL", "200ms"),
        ("BOOTSTRAP_ON_START", "false"),
        // The simulated market keeps the calendar: history up to the last close, then nothing.
        ("SYNTHETIC_SESSIONS", "calendar"),
        ("MARKET_HOURS", hours.as_str()),
    ];
    let sidecar = Sidecar::start(dir.path(), &v);
    let mut conn = redis.client();
    let features = wait_for(Duration::from_secs(20), || {
        let bytes: Option<Vec<u8>> = redis::cmd("GET")
            .arg("barkeep:features:{EURUSD}:1m")
            .query(&mut conn)
            .ok()?;
        bytes.map(|b| unpack(&b))
    })
    .expect("features written from the warm-up history");
    assert_eq!(features["session"], "closed", "{features}");
    assert_eq!(features["next_open_ms"], next_open, "{features}");
    assert!(features["ema_12"].is_f64(), "{features}");
    // Far longer than FEATURE_CACHE_TTL: it lives until the next open.
    std::thread::sleep(Duration::from_millis(100));
    let ttl: i64 = redis::cmd("PTTL")
        .arg("barkeep:features:{EURUSD}:1m")
        .query(&mut conn)
        .expect("pttl");
    assert!(ttl > 240_000, "ttl {ttl} ms");
    let (_, h) = get_json(sidecar.addr, "/health");
    assert_eq!(h["symbols"]["EURUSD"]["session"], "closed", "{h}");
    let (code, _) = sidecar.terminate();
    assert_eq!(code, 0);
}

#[test]
fn after_an_outage_features_are_readable_again_within_two_ticks() {
    let mut redis = RedisServer::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("outage.db");
    let (db_s, url) = (db.to_str().expect("utf-8").to_string(), redis.url());
    let mut v = vars(&db_s, &url);
    v.retain(|(k, _)| *k != "COLLECTION_INTERVAL");
    v.push(("COLLECTION_INTERVAL", "500ms"));
    let sidecar = Sidecar::start(dir.path(), &v);
    let features = |conn: &mut redis::Connection| -> Option<Vec<u8>> {
        redis::cmd("GET")
            .arg("barkeep:features:{EURUSD}:1s")
            .query(conn)
            .ok()
            .flatten()
    };
    let mut conn = redis.client();
    wait_for(Duration::from_secs(10), || features(&mut conn)).expect("features before the outage");
    redis.kill();
    let down_at = std::time::Instant::now();
    // Longer than the reconnect backoff's cap, so any doubling would have reached it.
    wait_for(Duration::from_secs(20), || {
        (redis_state(sidecar.addr) == "down" && down_at.elapsed() > Duration::from_secs(8))
            .then_some(())
    })
    .expect("redis down for 8 s");
    let ticks = |addr| get_json(addr, "/metrics/json").1["counters"]["ticks_total"].as_u64();
    let at_restart = ticks(sidecar.addr).expect("ticks");
    redis.restart();
    let mut conn = wait_for(Duration::from_secs(10), || {
        redis::Client::open(redis.url()).ok()?.get_connection().ok()
    })
    .expect("redis answers again");
    wait_for(Duration::from_secs(10), || features(&mut conn)).expect("features again");
    let waited = ticks(sidecar.addr).expect("ticks") - at_restart;
    assert!(
        waited <= 2,
        "features were readable again {waited} ticks after Redis came back"
    );
    let (code, _) = sidecar.terminate();
    assert_eq!(code, 0);
}

#[test]
fn keys_carry_the_symbol_as_a_hash_tag_and_the_untagged_ones_of_owned_symbols_are_removed() {
    // Two shards: this instance is shard 0 and owns `mine`, not `theirs`.
    let candidates = ["EURUSD", "NAS100", "XAUUSD", "GBPUSD", "USDJPY", "BTCUSD"];
    let mine = *candidates
        .iter()
        .find(|s| barkeep::shard::owner(s, 2) == 0)
        .expect("a symbol of shard 0");
    // A symbol no longer configured whose keys this shard would have written.
    let gone = *candidates
        .iter()
        .filter(|s| barkeep::shard::owner(s, 2) == 0)
        .nth(1)
        .expect("a second symbol of shard 0");
    let theirs = *candidates
        .iter()
        .find(|s| barkeep::shard::owner(s, 2) == 1)
        .expect("a symbol of shard 1");
    let redis = RedisServer::start(&[]);
    let mut conn = redis.client();
    let set = |conn: &mut redis::Connection, key: &str| {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg("old")
            .query(conn)
            .expect("SET");
    };
    // The first layout's keys: a ring, a live bar, features (also of a timeframe no longer
    // configured and of a symbol no longer configured but owned by this shard).
    let removed = [
        format!("barkeep:bars:{mine}:1s"),
        format!("barkeep:live:{mine}:1s"),
        format!("barkeep:live:{{{mine}}}:1s"),
        format!("barkeep:features:{mine}:1m"),
        format!("barkeep:bars:{gone}:1s"),
    ];
    // Not barkeep's first layout, or not this shard's: never touched.
    let kept = [
        format!("barkeep:bars:{theirs}:1s"),
        format!("other:bars:{mine}:1s"),
        format!("barkeep:notes:{mine}:1s"),
        format!("barkeep:bars:{mine}"),
        format!("barkeep:bars:{mine}:1s:copy"),
        format!("barkeep:bars:{mine}:weekly"),
        format!("barkeep:bars:{{{theirs}}}:1s"),
        format!("app:barkeep:bars:{mine}:1s"),
    ];
    for key in removed.iter().chain(&kept) {
        set(&mut conn, key);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("b.db");
    let (db_s, url) = (db.to_str().expect("utf-8").to_string(), redis.url());
    let symbols = format!("{mine},{theirs}");
    let mut v = vars(&db_s, &url);
    v.retain(|(k, _)| *k != "SYMBOLS");
    v.push(("SYMBOLS", &symbols));
    v.push(("SHARD", "0/2"));
    let sidecar = Sidecar::start(dir.path(), &v);
    let tagged = format!("barkeep:bars:{{{mine}}}:1s");
    wait_for(Duration::from_secs(10), || {
        (!ring(&mut conn, &tagged).is_empty()).then_some(())
    })
    .expect("bars reach the tagged ring");
    let (code, log) = sidecar.terminate();
    assert_eq!(code, 0, "{}", log.join("\n"));
    let exists = |conn: &mut redis::Connection, key: &str| -> bool {
        redis::cmd("EXISTS")
            .arg(key)
            .query::<i64>(conn)
            .expect("EXISTS")
            == 1
    };
    for key in &removed {
        assert!(!exists(&mut conn, key), "{key} is still there");
    }
    for key in &kept {
        assert!(exists(&mut conn, key), "{key} was touched");
    }
    // Every key of the symbol is on the slot of its tag.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("barkeep:*{{{mine}}}*"))
        .query(&mut conn)
        .expect("KEYS");
    assert!(
        keys.contains(&tagged) && keys.contains(&format!("barkeep:features:{{{mine}}}:1s")),
        "{keys:?}"
    );
    assert_eq!(
        ring(&mut conn, &tagged),
        sqlite_newest(&db, mine, "1s", 5_000)
    );
}

#[test]
fn a_stream_reader_that_stops_for_30_ticks_resumes_from_its_last_id_and_misses_nothing() {
    let redis = RedisServer::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("b.db");
    let (db_s, url) = (db.to_str().expect("utf-8").to_string(), redis.url());
    let mut v = vars(&db_s, &url);
    v.push(("REDIS_STREAM_MAXLEN", "1000"));
    let key = "barkeep:stream:{EURUSD}";
    let sidecar = Sidecar::start(dir.path(), &v);
    let mut conn = redis.client();
    // Read from the start until a few messages are in hand.
    let mut got: Vec<(String, serde_json::Value)> = Vec::new();
    let mut last_id = "0".to_string();
    while got.len() < 5 {
        let read = xread(&mut conn, key, &last_id, 10, 5_000);
        assert!(!read.is_empty(), "messages on the stream within 5 s");
        last_id = read.last().expect("one").0.clone();
        got.extend(read);
    }
    // Stop reading for 30 ticks (100 ms each).
    let ticks = |addr| get_json(addr, "/metrics/json").1["counters"]["ticks_total"].as_u64();
    let at_stop = ticks(sidecar.addr).expect("ticks");
    wait_for(Duration::from_secs(20), || {
        (ticks(sidecar.addr)? >= at_stop + 30).then_some(())
    })
    .expect("30 ticks");
    let (code, log) = sidecar.terminate();
    assert_eq!(code, 0, "{}", log.join("\n"));
    // Resume from the last id: everything since, then nothing more.
    loop {
        let read = xread(&mut conn, key, &last_id, 100, 200);
        let Some(last) = read.last() else { break };
        last_id = last.0.clone();
        got.extend(read);
    }
    let seqs: Vec<u64> = got
        .iter()
        .map(|(_, m)| m["seq"].as_u64().expect("seq"))
        .collect();
    assert!(seqs.len() >= 35, "{} messages", seqs.len());
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "every message exactly once, in order: {seqs:?}"
    );
    // One message per tick: each carries its own tick's time.
    let ticks: Vec<i64> = got
        .iter()
        .map(|(_, m)| m["timestamp"].as_i64().expect("timestamp"))
        .collect();
    assert!(ticks.windows(2).all(|w| w[1] > w[0]), "{ticks:?}");
    // Every closed bar the stream announced is the ring's, once, in order.
    let announced: Vec<(i64, f64)> = got
        .iter()
        .flat_map(|(_, m)| {
            m["data"]["1s"]["closed"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|b| {
            let bar = &b["bar"];
            (
                bar["ts"].as_i64().expect("ts"),
                bar["close"].as_f64().expect("close"),
            )
        })
        .collect();
    let in_ring = ring(&mut conn, KEY);
    assert!(announced.len() >= 3, "{announced:?}");
    let from = in_ring
        .iter()
        .position(|b| *b == announced[0])
        .expect("the first announced bar is in the ring");
    assert_eq!(&in_ring[from..from + announced.len()], &announced[..]);

    // After a restart the seq goes on from the stream's last message.
    let sidecar = Sidecar::start(dir.path(), &v);
    let next = wait_for(Duration::from_secs(10), || {
        xread(&mut conn, key, &last_id, 1, 500).into_iter().next()
    })
    .expect("a message after the restart");
    let (code, _) = sidecar.terminate();
    assert_eq!(code, 0);
    assert_eq!(
        next.1["seq"].as_u64(),
        Some(seqs[seqs.len() - 1] + 1),
        "{}",
        next.1
    );
}

#[test]
fn with_pubsub_off_the_stream_alone_carries_the_messages() {
    let redis = RedisServer::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("b.db");
    let (db_s, url) = (db.to_str().expect("utf-8").to_string(), redis.url());
    let mut v = vars(&db_s, &url);
    v.push(("REDIS_PUBSUB", "false"));
    let mut subscriber = redis.client();
    let mut pubsub = subscribed(
        &mut subscriber,
        "barkeep:events:{EURUSD}",
        Duration::from_millis(50),
    );
    let sidecar = Sidecar::start(dir.path(), &v);
    let mut conn = redis.client();
    // A message's PUBLISH would go before its XADD in the same pipeline: once five entries are
    // on the stream, five messages would have reached the subscriber.
    let mut last_id = "0".to_string();
    let mut seqs = Vec::new();
    while seqs.len() < 5 {
        let read = xread(&mut conn, "barkeep:stream:{EURUSD}", &last_id, 10, 5_000);
        assert!(!read.is_empty(), "messages on the stream within 5 s");
        last_id = read.last().expect("one").0.clone();
        seqs.extend(read.iter().map(|(_, m)| m["seq"].as_u64().expect("seq")));
    }
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let published = pubsub.get_message().ok();
    assert!(
        published.is_none(),
        "nothing published: {:?}",
        published.map(|m| m.get_channel_name().to_string())
    );
    drop(pubsub);
    let (code, log) = sidecar.terminate();
    assert_eq!(code, 0, "{}", log.join("\n"));
}
