//! `/streaming/config/instruments` against the real sidecar: a symbol added over HTTP is
//! collected (in `/health`, bars in SQLite and in a test-started Redis), survives a restart, and
//! once deleted is no longer collected, nor after a restart; bad bodies and symbols of another
//! shard are refused. On a Binance-streaming setup (fixture REST and WebSocket servers in
//! Binance's format), an added symbol is subscribed on the open stream at once and its bars
//! stream in, the background bootstrap fills its history, a reconnect subscribes it again, and a
//! deleted one is unsubscribed and gets no more bars.

mod common;

#[path = "common/binance.rs"]
mod binance;
#[path = "e2e/binance_stream.rs"]
mod binance_stream;
#[path = "providers/fixture.rs"]
#[allow(dead_code, reason = "the WebSocket script fixture is not used here")]
mod fixture;

use std::path::Path;
use std::time::Duration;

use common::{
    RedisServer, Sidecar, config_of, get_json, in_process, ring, send_json, sql_u64, wait_for,
};

const PATH: &str = "/streaming/config/instruments";

fn vars<'a>(db: &'a str, url: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("SQLITE_PATH", db),
        ("REDIS_URL", url),
        ("SYMBOLS", "EURUSD"),
        ("TIMEFRAMES", "1s"),
        ("COLLECTION_INTERVAL", "100ms"),
        ("BATCH_WRITE_INTERVAL", "200ms"),
        ("WARMUP_BARS", "30"),
        ("SYNTHETIC_BAD_TICK_RATE", "0"),
        ("BOOTSTRAP_ON_START", "false"),
    ]
}

fn bars(db: &Path, symbol: &str) -> u64 {
    sql_u64(
        db,
        &format!("SELECT count(*) FROM bars WHERE symbol = '{symbol}'"),
    )
}

fn newest_bar(db: &Path, symbol: &str) -> u64 {
    sql_u64(
        db,
        &format!("SELECT coalesce(max(ts), 0) FROM bars WHERE symbol = '{symbol}'"),
    )
}

/// Whether `/health` lists `symbol` with fresh data.
fn fresh_in_health(addr: std::net::SocketAddr, symbol: &str) -> bool {
    get_json(addr, "/health").1["symbols"][symbol]["fresh"] == true
}

fn listed_in_health(addr: std::net::SocketAddr, symbol: &str) -> bool {
    !get_json(addr, "/health").1["symbols"][symbol].is_null()
}

/// Waits until `db` holds bars of `symbol` newer than `after` (Unix ms), flushed.
fn wait_for_bars_after(db: &Path, symbol: &str, after: u64) -> u64 {
    wait_for(Duration::from_secs(20), || {
        let newest = newest_bar(db, symbol);
        (newest > after).then_some(newest)
    })
    .unwrap_or_else(|| panic!("{symbol}: no bar after {after} in SQLite"))
}

#[test]
fn an_added_symbol_is_collected_stored_and_kept_across_restarts_until_deleted() {
    let redis = RedisServer::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("b.db");
    let (db_s, url) = (db.to_str().expect("utf-8").to_string(), redis.url());
    let v = vars(&db_s, &url);
    let mut conn = redis.client();

    let mut sidecar = Sidecar::start(dir.path(), &v);
    let addr = sidecar.addr;
    assert!(!listed_in_health(addr, "AAPL"));
    let (status, added) = send_json(
        addr,
        "POST",
        PATH,
        Some(r#"{"symbol": "aapl", "calendar": "always"}"#),
    );
    assert_eq!(status, 201, "{added}");
    assert_eq!(added["instrument"]["symbol"], "AAPL");
    assert_eq!(added["instrument"]["calendar"], "always");
    assert_eq!(added["instrument"]["origin"], "api");
    let added_at = get_json(addr, "/health").1["now_ms"]
        .as_u64()
        .expect("now_ms");
    // Warmed up from history, then collected like the others: in /health, in SQLite, in Redis.
    sidecar
        .wait_for_log(
            "added instrument collected from this tick",
            Duration::from_secs(20),
        )
        .expect("the collector took the added symbol");
    wait_for(Duration::from_secs(20), || {
        fresh_in_health(addr, "AAPL").then_some(())
    })
    .expect("AAPL fresh in /health");
    wait_for_bars_after(&db, "AAPL", added_at);
    assert!(
        bars(&db, "AAPL") >= 30,
        "the warm-up's history is stored too: {}",
        bars(&db, "AAPL")
    );
    let ring_key = "barkeep:bars:{AAPL}:1s";
    wait_for(Duration::from_secs(20), || {
        let r = ring(&mut conn, ring_key);
        (r.len() >= 30 && r.last().is_some_and(|(ts, _)| *ts as u64 > added_at)).then_some(())
    })
    .expect("AAPL's ring in Redis has the history and the live bars");
    let r = ring(&mut conn, ring_key);
    assert!(
        r.windows(2).all(|w| w[1].0 > w[0].0),
        "ordered, no duplicate"
    );
    let (status, one) = get_json(addr, &format!("{PATH}/AAPL"));
    assert_eq!(status, 200);
    assert_eq!(one["collecting"], true);
    let (_, list) = get_json(addr, PATH);
    let symbols: Vec<&str> = list["instruments"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|i| i["symbol"].as_str())
        .collect();
    assert_eq!(symbols, ["EURUSD", "AAPL"]);
    assert_eq!(list["count"], 2);
    // Adding it again with the same settings changes nothing.
    let (status, again) = send_json(addr, "PUT", &format!("{PATH}/AAPL"), None);
    assert_eq!(
        (status, &again["changed"]),
        (200, &serde_json::json!(false))
    );
    let (code, log) = sidecar.terminate();
    assert_eq!(code, 0, "{}", log.join("\n"));

    // After a restart it is collected again, from the stored list.
    let before_restart = newest_bar(&db, "AAPL");
    let sidecar = Sidecar::start(dir.path(), &v);
    let addr = sidecar.addr;
    wait_for(Duration::from_secs(20), || {
        fresh_in_health(addr, "AAPL").then_some(())
    })
    .expect("AAPL collected after the restart");
    wait_for_bars_after(&db, "AAPL", before_restart);
    assert_eq!(get_json(addr, &format!("{PATH}/AAPL")).1["origin"], "api");

    // Deleted: gone from /health, no new bars while EURUSD goes on.
    let (status, deleted) = send_json(addr, "DELETE", &format!("{PATH}/aapl"), None);
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["instrument"]["symbol"], "AAPL");
    assert!(!listed_in_health(addr, "AAPL"));
    assert_eq!(get_json(addr, &format!("{PATH}/AAPL")).0, 404);
    assert_eq!(get_json(addr, "/features/AAPL").0, 404);
    // What was collected before the delete is flushed within a few flushes; after that, none.
    let eurusd = newest_bar(&db, "EURUSD");
    wait_for_bars_after(&db, "EURUSD", eurusd);
    let last_aapl = newest_bar(&db, "AAPL");
    let eurusd = wait_for_bars_after(&db, "EURUSD", eurusd + 2_000);
    assert!(eurusd > last_aapl + 2_000);
    assert_eq!(
        newest_bar(&db, "AAPL"),
        last_aapl,
        "no AAPL bar after the delete"
    );
    let (status, _) = send_json(addr, "DELETE", &format!("{PATH}/AAPL"), None);
    assert_eq!(status, 404, "deleting it twice");
    let (code, log) = sidecar.terminate();
    assert_eq!(code, 0, "{}", log.join("\n"));

    // And after another restart it stays deleted.
    let sidecar = Sidecar::start(dir.path(), &v);
    wait_for(Duration::from_secs(20), || {
        fresh_in_health(sidecar.addr, "EURUSD").then_some(())
    })
    .expect("EURUSD collected");
    assert!(!listed_in_health(sidecar.addr, "AAPL"));
    assert_eq!(get_json(sidecar.addr, &format!("{PATH}/AAPL")).0, 404);
    let (code, _) = sidecar.terminate();
    assert_eq!(code, 0);
}

#[test]
fn a_symbol_of_symbols_deleted_over_the_api_stays_deleted_until_added_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("b.db").to_str().expect("utf-8").to_string();
    let config = || {
        config_of(&[
            ("SQLITE_PATH", db.clone()),
            ("SYMBOLS", "EURUSD,XAUUSD".into()),
            ("BOOTSTRAP_ON_START", "false".into()),
        ])
    };
    let clock = barkeep::clock::Clock::System;
    in_process(config(), clock, |addr| {
        let (status, body) = send_json(addr, "DELETE", &format!("{PATH}/XAUUSD"), None);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["instrument"]["origin"], "symbols");
        assert!(!listed_in_health(addr, "XAUUSD"));
    });
    in_process(config(), clock, |addr| {
        assert!(
            !listed_in_health(addr, "XAUUSD"),
            "SYMBOLS lists it, the API deleted it"
        );
        assert!(listed_in_health(addr, "EURUSD"));
        let (status, body) = send_json(addr, "POST", PATH, Some(r#"{"symbol": "XAUUSD"}"#));
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["instrument"]["origin"], "symbols");
        assert!(listed_in_health(addr, "XAUUSD"));
        // A new calendar for a collected symbol is a change, kept.
        let (status, body) = send_json(
            addr,
            "PUT",
            &format!("{PATH}/eurusd"),
            Some(r#"{"calendar": "fx"}"#),
        );
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["instrument"]["calendar"], "fx");
        assert_eq!(body["instrument"]["calendar_given"], true);
    });
    in_process(config(), clock, |addr| {
        assert!(listed_in_health(addr, "XAUUSD"));
        let (_, eurusd) = get_json(addr, &format!("{PATH}/EURUSD"));
        assert_eq!(eurusd["calendar"], "fx", "{eurusd}");
    });
}

#[test]
fn bad_bodies_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_of(&[
        (
            "SQLITE_PATH",
            dir.path().join("b.db").to_str().expect("utf-8").into(),
        ),
        ("SYMBOLS", "EURUSD".into()),
        ("BOOTSTRAP_ON_START", "false".into()),
    ]);
    in_process(config, barkeep::clock::Clock::System, |addr| {
        for (body, field) in [
            (r#"{"calendar": "fx"}"#, "symbol"),
            (r#"{"symbol": 42}"#, "symbol"),
            (r#"{"symbol": "NOT A SYMBOL"}"#, "symbol"),
            (r#"{"symbol": "AAPL", "calendar": "mars"}"#, "calendar"),
        ] {
            let (status, e) = send_json(addr, "POST", PATH, Some(body));
            assert_eq!(status, 400, "{body}: {e}");
            assert_eq!(e["error"], "bad_request");
            assert_eq!(e["field"], field, "{body}: {e}");
        }
        // An unknown field is named in the message.
        let (status, e) = send_json(
            addr,
            "POST",
            PATH,
            Some(r#"{"symbol": "AAPL", "calender": "fx"}"#),
        );
        assert_eq!(status, 400);
        assert!(
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("calender")),
            "{e}"
        );
        for body in ["[1, 2]", "{\"symbol\": "] {
            assert_eq!(send_json(addr, "POST", PATH, Some(body)).0, 400, "{body}");
        }
        let big = format!(r#"{{"symbol": "AAPL", "pad": "{}"}}"#, "x".repeat(70_000));
        let (status, e) = send_json(addr, "POST", PATH, Some(&big));
        assert_eq!(
            (status, e["error"].as_str()),
            (413, Some("payload_too_large"))
        );
        assert_eq!(send_json(addr, "DELETE", PATH, None).0, 405);
        assert_eq!(
            send_json(addr, "POST", &format!("{PATH}/AAPL"), None).0,
            405
        );
        assert_eq!(get_json(addr, &format!("{PATH}/AAPL/x")).0, 404);
        // Nothing was added by the refused requests.
        assert_eq!(get_json(addr, PATH).1["count"], 1);
    });
}

#[test]
fn a_symbol_another_shard_owns_is_refused_saying_which() {
    let dir = tempfile::tempdir().expect("tempdir");
    let symbols: Vec<String> = (0..20).map(|i| format!("SYM{i:03}")).collect();
    let config = config_of(&[
        (
            "SQLITE_PATH",
            dir.path().join("b.db").to_str().expect("utf-8").into(),
        ),
        ("SYMBOLS", symbols.join(",")),
        ("SHARD", "0/2".into()),
        ("BOOTSTRAP_ON_START", "false".into()),
    ]);
    let theirs = (0..200)
        .map(|i| format!("NEW{i}"))
        .find(|s| barkeep::shard::owner(s, 2) == 1)
        .expect("a symbol shard 1 owns");
    let mine = (0..200)
        .map(|i| format!("NEW{i}"))
        .find(|s| barkeep::shard::owner(s, 2) == 0)
        .expect("a symbol shard 0 owns");
    in_process(config, barkeep::clock::Clock::System, move |addr| {
        let (status, e) = send_json(
            addr,
            "POST",
            PATH,
            Some(&format!(r#"{{"symbol": "{theirs}"}}"#)),
        );
        assert_eq!(status, 409, "{e}");
        assert_eq!(e["error"], "wrong_shard");
        let message = e["message"].as_str().expect("message");
        assert!(message.contains("shard 1 of 2"), "{message}");
        assert!(!listed_in_health(addr, &theirs));
        let (status, e) = send_json(
            addr,
            "POST",
            PATH,
            Some(&format!(r#"{{"symbol": "{mine}"}}"#)),
        );
        assert_eq!(status, 201, "{e}");
        assert!(listed_in_health(addr, &mine));
    });
}

#[test]
fn changes_need_the_token_when_one_is_set_and_reads_do_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "instruments-token-0123456789";
    let config = config_of(&[
        (
            "SQLITE_PATH",
            dir.path().join("b.db").to_str().expect("utf-8").into(),
        ),
        ("SYMBOLS", "EURUSD".into()),
        ("API_TOKEN", token.into()),
        ("BOOTSTRAP_ON_START", "false".into()),
    ]);
    in_process(config, barkeep::clock::Clock::System, move |addr| {
        let body = Some(r#"{"symbol": "AAPL"}"#);
        let (status, e) = send_json(addr, "POST", PATH, body);
        assert_eq!(
            (status, e["error"].as_str()),
            (401, Some("unauthorized")),
            "{e}"
        );
        let (status, _) = send_json(addr, "DELETE", &format!("{PATH}/EURUSD"), None);
        assert_eq!(status, 401);
        assert_eq!(
            get_json(addr, PATH).1["count"],
            1,
            "nothing changed; reading is open"
        );
        let bearer = format!("Bearer {token}");
        let (status, text) = common::send(addr, "POST", PATH, &[("Authorization", &bearer)], body);
        assert_eq!(status, 201, "{text}");
        assert!(listed_in_health(addr, "AAPL"));
    });
}

/// (connection, method, params) of every request the stream fixture received.
fn stream_requests(ws: &binance_stream::BinanceStream) -> Vec<(usize, String, serde_json::Value)> {
    ws.received()
        .into_iter()
        .map(|(n, text)| {
            let v: serde_json::Value = serde_json::from_str(&text).expect("JSON frame");
            (
                n,
                v["method"].as_str().unwrap_or_default().to_string(),
                v["params"].clone(),
            )
        })
        .collect()
}

/// (ts, volume) of every stored 1s bar of `symbol` opening at or after `from` (Unix ms).
fn bars_from(db: &Path, symbol: &str, from: i64) -> Vec<(i64, f64)> {
    let conn = rusqlite::Connection::open(db).expect("open db");
    let mut stmt = conn
        .prepare("SELECT ts, volume FROM bars WHERE symbol = ?1 AND ts >= ?2 ORDER BY ts")
        .expect("prepare");
    stmt.query_map(rusqlite::params![symbol, from], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .expect("query")
    .collect::<Result<_, _>>()
    .expect("rows")
}

#[test]
fn an_added_symbol_streams_at_once_is_backfilled_and_once_deleted_is_unsubscribed() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (rest, ws) = rt.block_on(async {
        (
            fixture::HttpFixture::start("", |seen: &fixture::Seen| {
                binance::binance_for_any_symbol(seen, binance_stream::price)
            })
            .await,
            binance_stream::BinanceStream::start(Duration::from_millis(100)).await,
        )
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("b.db");
    let mut sidecar = Sidecar::start(
        dir.path(),
        &[
            ("SQLITE_PATH", db.to_str().expect("utf-8")),
            ("SYMBOLS", "BTCUSD"),
            ("SOURCES", "binance"),
            ("TIMEFRAMES", "1s"),
            ("COLLECTION_INTERVAL", "200ms"),
            ("BATCH_WRITE_INTERVAL", "100ms"),
            ("WARMUP_BARS", "30"),
            ("HISTORY_DAYS", "1"),
            ("BOOTSTRAP_ON_START", "background"),
            ("BINANCE_BASE_URL", rest.base.as_str()),
            ("BINANCE_WS_URL", ws.url.as_str()),
            ("STREAM_RECONNECT_MIN", "10ms"),
            ("STREAM_RECONNECT_MAX", "100ms"),
            ("PROVIDER_HTTP_TIMEOUT", "2s"),
        ],
    );
    let addr = sidecar.addr;
    let step = Duration::from_secs(30);
    wait_for(step, || (ws.sent_for("BTCUSDT").len() >= 3).then_some(())).expect("BTCUSD streams");

    // Added over HTTP: subscribed on the open connection, no reconnect.
    let added_at = binance::wall_ms();
    let (status, body) = send_json(addr, "POST", PATH, Some(r#"{"symbol": "ETHUSD"}"#));
    assert_eq!(status, 201, "{body}");
    let subscribed = wait_for(step, || {
        stream_requests(&ws)
            .into_iter()
            .find(|(_, m, p)| m == "SUBSCRIBE" && *p == serde_json::json!(["ethusdt@kline_1m"]))
    })
    .expect("ETHUSDT subscribed");
    assert_eq!(subscribed.0, 0, "on the connection already open");
    assert_eq!(ws.connections(), 1);
    // Its bars stream in: closed 1s bars after the add, with the stream's volume (REST
    // quotes carry none, history bars 2.0).
    let streamed = wait_for(step, || {
        let live: Vec<(i64, f64)> = bars_from(&db, "ETHUSD", added_at + 1_000)
            .into_iter()
            .filter(|(_, v)| *v > 0.0 && *v < 2.0)
            .collect();
        (live.len() >= 3).then_some(live)
    })
    .expect("ETHUSD bars from the stream in SQLite");
    assert!(!ws.sent_for("ETHUSDT").is_empty());
    assert!(
        get_json(addr, "/bars/ETHUSD?tf=1s&limit=5").0 == 200,
        "{streamed:?}"
    );

    // The background bootstrap fills its history: HISTORY_DAYS=1 back from the add, more than
    // the warm-up's 30 bars, through klines requests of its own.
    let day_back = added_at - 86_400_000 + 60_000;
    wait_for(Duration::from_secs(120), || {
        (!bars_from(&db, "ETHUSD", 0).is_empty() && bars_from(&db, "ETHUSD", 0)[0].0 <= day_back)
            .then_some(())
    })
    .expect("ETHUSD's history backfilled a day back");
    let history_requests = rest
        .requests()
        .iter()
        .filter(|s| s.path == "/api/v3/klines" && s.q("symbol") == Some("ETHUSDT"))
        .count();
    assert!(
        history_requests >= 87,
        "a day of 1s bars is 87 windows: {history_requests}"
    );
    let logged = sidecar
        .wait_for_log("bootstrap done", Duration::from_secs(5))
        .expect("a bootstrap round logged");
    assert!(logged.contains("symbols"), "{logged}");

    // A reconnect subscribes the set as it is now, the added symbol too.
    ws.cut(Duration::from_millis(200));
    let resubscribed = wait_for(step, || {
        stream_requests(&ws)
            .into_iter()
            .find(|(n, m, _)| *n > 0 && m == "SUBSCRIBE")
    })
    .expect("resubscribed after the cut");
    assert_eq!(
        resubscribed.2,
        serde_json::json!(["btcusdt@kline_1m", "ethusdt@kline_1m"])
    );

    // Deleted: UNSUBSCRIBE on the open connection, and no more ETHUSD bars while BTCUSD goes on.
    let (status, body) = send_json(addr, "DELETE", &format!("{PATH}/ETHUSD"), None);
    assert_eq!(status, 200, "{body}");
    let unsubscribed_at = binance::wall_ms();
    wait_for(step, || {
        stream_requests(&ws)
            .into_iter()
            .find(|(_, m, p)| m == "UNSUBSCRIBE" && *p == serde_json::json!(["ethusdt@kline_1m"]))
    })
    .expect("ETHUSDT unsubscribed");
    let btc_after = |t: i64| {
        wait_for(step, || {
            (!bars_from(&db, "BTCUSD", t).is_empty()).then_some(())
        })
        .unwrap_or_else(|| panic!("BTCUSD bars from {t}"));
    };
    // A bar of BTCUSD a second after the delete is stored: the delete has been applied and
    // flushed by then.
    btc_after(unsubscribed_at + 1_000);
    let eth = bars_from(&db, "ETHUSD", 0).len();
    btc_after(unsubscribed_at + 4_000);
    assert_eq!(
        bars_from(&db, "ETHUSD", 0).len(),
        eth,
        "no ETHUSD bar after the delete"
    );
    let sent = ws.sent_for("ETHUSDT").len();
    btc_after(unsubscribed_at + 5_000);
    assert_eq!(
        ws.sent_for("ETHUSDT").len(),
        sent,
        "the stream sends it no more"
    );
    let (code, log) = sidecar.terminate();
    assert_eq!(code, 0, "{}", log.join("\n"));
}
