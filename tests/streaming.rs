//! Streaming to clients against the real app (in process, the simulated market): SSE and
//! WebSocket clients over raw sockets, resume without loss or duplicate, the slow-consumer
//! rule, the snapshot endpoints, and streams outliving the HTTP idle limits.

mod common;
#[path = "common/sse.rs"]
mod sse;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use barkeep::clock::Clock;
use common::{config_of, get_json, in_process, wait_for};
use serde_json::Value;
use sse::{Sse, by_channel, consecutive, count};
use tokio_tungstenite::tungstenite::{self, Message};

fn config(extra: &[(&str, &str)]) -> (tempfile::TempDir, barkeep::config::Config) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("b.db").to_str().expect("utf-8").to_string();
    let mut vars = vec![
        ("SQLITE_PATH", db),
        ("SYMBOLS", "EURUSD,XAUUSD,BTC/USD".to_string()),
        ("COLLECTION_INTERVAL", "100ms".to_string()),
        ("SYNTHETIC_BAD_TICK_RATE", "0".to_string()),
    ];
    for (k, v) in extra {
        vars.retain(|(name, _)| name != k);
        vars.push((k, v.to_string()));
    }
    (dir, config_of(&vars))
}

#[test]
fn sse_delivers_the_subscribed_symbols_in_order_and_resumes_without_loss_or_duplicate() {
    let (_dir, config) = config(&[]);
    in_process(config, Clock::System, |addr| {
        let md = "stream:market_data:BTC/USD";
        let an = "stream:analytics:EURUSD";
        let path = "/streaming/sse?channels=stream:market_data:BTC%2FUSD,analytics&symbols=EURUSD";
        let mut sse = Sse::get(addr, path, None);
        let first = sse.until(|got| {
            count(got, md, "bar") >= 6
                && count(got, an, "features") >= 6
                && count(got, an, "signal") >= 1
        });
        let seqs = by_channel(&first);
        assert_eq!(
            seqs.keys().collect::<Vec<_>>(),
            [an, md],
            "only what was asked for"
        );
        for (channel, seqs) in &seqs {
            // The opening (each kind's newest message) may skip; from there on, one by one.
            assert!(seqs.windows(2).all(|w| w[1] > w[0]), "{channel}: {seqs:?}");
            let live = seqs
                .iter()
                .skip_while(|&&s| s < seqs[seqs.len().min(6) - 1]);
            assert!(
                consecutive(&live.copied().collect::<Vec<_>>()),
                "{channel}: {seqs:?}"
            );
        }
        let bar = first
            .iter()
            .find(|e| e.channel() == md && e.event == "bar")
            .expect("bar");
        assert_eq!(bar.data["symbol"], "BTC/USD");
        assert_eq!(bar.data["data_type"], "bar");
        assert_eq!(bar.data["metadata"]["worker_id"], "market_data:synthetic");
        assert_eq!(
            bar.id.as_deref(),
            Some(format!("{md}:{}", bar.seq()).as_str())
        );
        let snapshot = first
            .iter()
            .find(|e| e.channel() == an && e.event == "features")
            .expect("features");
        assert_eq!(
            snapshot.data["update_type"], "snapshot",
            "a kind starts whole"
        );
        assert!(
            snapshot.data["data"]["features"]["rsi_14"].is_number()
                || snapshot.data["data"]["features"]["rsi_14"].is_null()
        );

        // Disconnect, let the channels move on, resume from the last id.
        let last_id = first.last().and_then(|e| e.id.clone()).expect("an id");
        let last_seen: BTreeMap<String, u64> = seqs
            .iter()
            .map(|(c, s)| (c.clone(), *s.last().expect("seq")))
            .collect();
        drop(sse);
        let moved_on = wait_for(Duration::from_secs(20), || {
            let (_, list) = get_json(addr, "/streaming/channels");
            let now: BTreeMap<String, u64> = list["channels"]
                .as_array()?
                .iter()
                .filter_map(|c| Some((c["channel"].as_str()?.to_string(), c["seq"].as_u64()?)))
                .collect();
            last_seen
                .iter()
                .all(|(c, s)| now[c] >= s + 5)
                .then_some(now)
        })
        .expect("the channels move on");
        let mut sse = Sse::get(addr, path, Some(&last_id));
        let second = sse.until(|got| {
            let seqs = by_channel(got);
            moved_on
                .iter()
                .filter(|(c, _)| last_seen.contains_key(*c))
                .all(|(c, s)| seqs.get(c).and_then(|v| v.last()).is_some_and(|l| l >= s))
        });
        for (channel, seqs) in by_channel(&second) {
            assert_eq!(
                seqs[0],
                last_seen[&channel] + 1,
                "{channel}: nothing lost, nothing twice"
            );
            assert!(consecutive(&seqs), "{channel}: {seqs:?}");
        }
        assert!(
            second.iter().all(|e| e.event != "replay_gap"),
            "{:?}",
            second.first()
        );
        // Each kind starts whole again after a resume.
        let first_features = second
            .iter()
            .find(|e| e.channel() == an && e.event == "features");
        assert_eq!(
            first_features.map(|e| e.data["update_type"].clone()),
            Some("snapshot".into())
        );

        // A position the buffer cannot have is said so, then the state follows.
        let mut sse = Sse::get(
            addr,
            "/streaming/sse?channels=stream:market_data:EURUSD&since=999999999",
            None,
        );
        let events = sse.until(|got| got.len() >= 2);
        assert_eq!(events[0].event, "replay_gap");
        assert_eq!(events[0].data["data"]["reason"], "unknown_position");
        assert!(events[0].id.is_none(), "no resume point");
        assert_eq!(events[1].data["update_type"], "snapshot");
    });
}

#[test]
fn post_subscribe_filters_by_data_type_and_errors_are_json() {
    let (_dir, config) = config(&[]);
    in_process(config, Clock::System, |addr| {
        let body = r#"{"channels":["analytics"],"symbols":["XAUUSD"],"data_types":["signal"]}"#;
        let (status, mut sse) = Sse::open(
            addr,
            &format!(
                "POST /streaming/subscribe/sse HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        );
        assert_eq!(status, 200);
        let events = sse.until(|got| got.iter().filter(|e| e.event == "signal").count() >= 2);
        assert!(
            events
                .iter()
                .all(|e| e.channel() == "stream:analytics:XAUUSD")
        );
        assert!(events.iter().all(|e| e.event != "features"), "filtered out");
        for (path, status, kind) in [
            ("/streaming/sse?symbols=NOPE", 404, "not_found"),
            ("/streaming/sse", 400, "bad_request"),
            (
                "/streaming/sse?channels=analytics&data_types=news",
                400,
                "bad_request",
            ),
            (
                "/streaming/sse?channels=analytics&since=1",
                400,
                "bad_request",
            ),
            (
                "/streaming/latest/stream:market_data:NOPE",
                404,
                "not_found",
            ),
            ("/streaming/ws?channels=analytics", 426, "upgrade_required"),
            ("/streaming/nothing", 404, "not_found"),
        ] {
            let (got, json) = get_json(addr, path);
            assert_eq!(
                (got, json["error"].as_str()),
                (status, Some(kind)),
                "{path}: {json}"
            );
        }
        let (got, json) = common::request(addr, "POST", "/streaming/channels");
        assert_eq!(got, 405, "{json}");
    });
}

#[test]
fn channels_and_latest_show_what_exists() {
    let (_dir, config) = config(&[]);
    in_process(config, Clock::System, |addr| {
        let mut sse = Sse::get(addr, "/streaming/sse?symbols=BTC%2FUSD", None);
        sse.until(|got| got.len() >= 3);
        let (status, list) = get_json(addr, "/streaming/channels");
        assert_eq!(status, 200);
        assert_eq!(list["count"], 6, "{list}");
        let btc = list["channels"]
            .as_array()
            .expect("list")
            .iter()
            .find(|c| c["channel"] == "stream:market_data:BTC/USD")
            .expect("BTC/USD")
            .clone();
        assert_eq!(
            (btc["subscribers"].as_u64(), btc["kind"].as_str()),
            (Some(1), Some("market_data")),
            "{btc}"
        );
        let (status, latest) = get_json(addr, "/streaming/latest/stream:market_data:BTC%2FUSD");
        assert_eq!(status, 200, "{latest}");
        assert_eq!(latest["channel"], "stream:market_data:BTC/USD");
        assert_eq!(
            latest["update_type"], "snapshot",
            "the newest message, whole"
        );
        assert!(latest["seq"].as_u64().expect("seq") >= btc["seq"].as_u64().expect("seq"));
        for field in [
            "data_type",
            "timestamp",
            "symbol",
            "data",
            "vendor",
            "metadata",
        ] {
            assert!(latest.get(field).is_some(), "{field}: {latest}");
        }
    });
}

type Ws = tungstenite::WebSocket<TcpStream>;

fn ws_connect(addr: SocketAddr, query: &str) -> Ws {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let (ws, response) =
        tungstenite::client::client(format!("ws://{addr}/streaming/ws{query}"), stream)
            .expect("upgrade");
    assert_eq!(response.status(), 101);
    ws
}

fn ws_next(ws: &mut Ws) -> Value {
    loop {
        match ws.read().expect("a message") {
            Message::Text(t) => return serde_json::from_str(&t).expect("JSON"),
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
}

fn ws_send(ws: &mut Ws, op: &str) {
    ws.send(Message::Text(op.into())).expect("send");
}

#[test]
fn websocket_subscribes_unsubscribes_resumes_and_survives_bad_ops() {
    let (_dir, config) = config(&[]);
    in_process(config, Clock::System, |addr| {
        let md = "stream:market_data:EURUSD";
        let an = "stream:analytics:EURUSD";
        let mut ws = ws_connect(addr, "?channels=market_data&symbols=EURUSD");
        let first = ws_next(&mut ws);
        assert_eq!(
            (first["type"].as_str(), first["channel"].as_str()),
            (Some("data"), Some(md)),
            "{first}"
        );
        assert_eq!(first["message"]["channel"], md);

        ws_send(
            &mut ws,
            r#"{"op":"subscribe","channels":["stream:analytics:EURUSD"]}"#,
        );
        let mut seen: Vec<Value> = Vec::new();
        while !seen.iter().any(|m| m["type"] == "subscribed") {
            seen.push(ws_next(&mut ws));
        }
        let mut an_seqs = Vec::new();
        while an_seqs.len() < 8 {
            let m = ws_next(&mut ws);
            if m["channel"] == an {
                an_seqs.push(m["message"]["seq"].as_u64().expect("seq"));
            }
        }
        assert!(consecutive(&an_seqs), "{an_seqs:?}");

        ws_send(&mut ws, r#"{"op":"nonsense"}"#);
        ws_send(&mut ws, "not JSON");
        let mut errors = 0;
        while errors < 2 {
            if ws_next(&mut ws)["type"] == "error" {
                errors += 1;
            }
        }
        ws.send(Message::Ping(b"hi".to_vec().into())).expect("ping");
        let pong = loop {
            if let Message::Pong(p) = ws.read().expect("message") {
                break p;
            }
        };
        assert_eq!(&pong[..], b"hi");

        ws_send(
            &mut ws,
            r#"{"op":"unsubscribe","channels":["stream:market_data:EURUSD"]}"#,
        );
        while ws_next(&mut ws)["type"] != "unsubscribed" {}
        // Resume analytics a few messages back: the replay, then on without a gap.
        let last = *an_seqs.last().expect("seq");
        let since = last - 5;
        ws_send(
            &mut ws,
            &format!(r#"{{"op":"resume","channel":"{an}","since":{since}}}"#),
        );
        let mut after: Vec<u64> = Vec::new();
        let mut acked = false;
        while !(acked && after.len() >= 12) {
            let m = ws_next(&mut ws);
            assert_ne!(m["channel"], md, "unsubscribed: {m}");
            if m["type"] == "resumed" {
                acked = true;
            } else if m["channel"] == an {
                after.push(m["message"]["seq"].as_u64().expect("seq"));
            }
        }
        let from = after
            .iter()
            .position(|&s| s == since + 1)
            .expect("the replay starts after `since`");
        assert!(consecutive(&after[from..]), "{after:?}");
    });
}

#[test]
fn a_client_that_never_reads_is_dropped_while_others_and_the_ticks_go_on() {
    let symbols: Vec<String> = (0..30).map(|i| format!("SYM{i}")).collect();
    let symbols = symbols.join(",");
    let (_dir, config) = config(&[
        ("SYMBOLS", &symbols),
        ("TIMEFRAMES", "1s,1m,5m,1h"),
        ("STREAM_CLIENT_QUEUE", "16"),
        ("WARMUP_BARS", "20"),
    ]);
    in_process(config, Clock::System, |addr| {
        // Ask for everything, then read nothing: one over SSE, one over WebSocket.
        let mut stalled = Sse::get(addr, "/streaming/sse?channels=market_data,analytics", None);
        let mut stalled_ws = ws_connect(addr, "?channels=market_data,analytics");
        let mut reader = Sse::get(addr, "/streaming/sse?channels=stream:analytics:SYM3", None);
        let metric = |name: &str| get_json(addr, "/metrics/json").1["counters"][name].as_u64();
        let mut events = Vec::new();
        let kicked_at_tick = wait_for(Duration::from_secs(60), || {
            events.extend(reader.until(|got| !got.is_empty()));
            (metric("stream_slow_consumers_total")? >= 2).then(|| metric("ticks_total"))?
        })
        .expect("the stalled clients are dropped as slow consumers");
        // The WebSocket one gets the error, then a close.
        let error = loop {
            match stalled_ws.read().expect("the rest, then the error") {
                Message::Text(t) if t.contains("\"type\":\"error\"") => break t,
                _ => {}
            }
        };
        let error: Value = serde_json::from_str(&error).expect("JSON");
        assert_eq!(error["reason"], "slow_consumer", "{error}");
        assert!(
            matches!(stalled_ws.read(), Ok(Message::Close(_)) | Err(_)),
            "closed after the error"
        );
        // The stalled client's stream ends with the final error.
        let mut last = None;
        while let Some(e) = stalled.next() {
            last = Some(e);
        }
        let last = last.expect("some events");
        assert_eq!(
            (last.event.as_str(), last.data["reason"].as_str()),
            ("error", Some("slow_consumer")),
            "{:?}",
            last.data
        );
        // The other client keeps receiving, one by one, while ticks run on.
        events.extend(reader.until(|got| got.len() >= 60));
        let seqs = by_channel(&events)
            .remove("stream:analytics:SYM3")
            .expect("SYM3");
        // The opening holds each kind's newest message (up to 13 kinds with 4 timeframes).
        let live: Vec<u64> = seqs.iter().copied().skip(16).collect();
        assert!(consecutive(&live), "{seqs:?}");
        wait_for(Duration::from_secs(20), || {
            (metric("ticks_total")? > kicked_at_tick + 5).then_some(())
        })
        .expect("ticks keep running");
        assert_eq!(
            metric("stream_slow_consumers_total"),
            Some(2),
            "only the stalled clients"
        );
    });
}

#[test]
fn streams_outlive_the_idle_timeout_and_are_never_shed_as_idle() {
    let (_dir, config) = config(&[
        ("HTTP_IDLE_TIMEOUT", "200ms"),
        ("HTTP_HEADER_TIMEOUT", "200ms"),
        ("HTTP_MAX_CONNECTIONS_PER_PEER", "3"),
    ]);
    in_process(config, Clock::System, |addr| {
        let mut sse = Sse::get(addr, "/streaming/sse?symbols=EURUSD", None);
        let mut ws = ws_connect(addr, "?symbols=XAUUSD");
        // Two streams and an idle connection hold the peer's cap: a new connection sheds the
        // idle one, never a stream (they are busy).
        let _idle = TcpStream::connect(addr).expect("connect");
        for _ in 0..3 {
            let (status, _) = get_json(addr, "/health");
            assert!(status == 200 || status == 503);
        }
        let started = Instant::now();
        let mut events = 0;
        while started.elapsed() < Duration::from_millis(1_500) {
            assert!(
                sse.next().is_some(),
                "the SSE stream ended after {:?}",
                started.elapsed()
            );
            assert_eq!(ws_next(&mut ws)["type"], "data");
            events += 1;
        }
        assert!(events > 0);
    });
}
