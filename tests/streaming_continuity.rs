//! Continuity on the streams, against a Binance fixture on 127.0.0.1 whose ticker fails for a
//! while (its documented 503) and whose klines keep answering: an SSE client sees `stale` while
//! no data comes, `resumed` when it does, the `gap` the outage left, the repaired bars and the
//! `revision` — on one channel, `seq` by `seq`.

#[path = "common/binance.rs"]
mod binance;
mod common;
#[path = "providers/fixture.rs"]
#[allow(dead_code, reason = "the WebSocket script fixture is not used here")]
mod fixture;
#[path = "common/sse.rs"]
mod sse;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use fixture::HttpFixture;
use sse::{Sse, by_channel, consecutive};

#[test]
fn an_outage_shows_as_stale_resumed_gap_and_revision_on_the_stream() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let down = Arc::new(AtomicBool::new(false));
    let outage = Arc::clone(&down);
    let rest = rt.block_on(HttpFixture::start("", move |seen: &fixture::Seen| {
        binance::binance_with_outage(seen, &outage)
    }));
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let ws = format!("ws://{}/ws", dead.local_addr().expect("addr"));
    drop(dead);
    let dir = tempfile::tempdir().expect("tempdir");
    let vars = vec![
        (
            "SQLITE_PATH",
            dir.path().join("b.db").to_str().expect("utf-8").to_string(),
        ),
        ("SYMBOLS", "BTCUSD".into()),
        ("SOURCES", "binance".into()),
        ("BINANCE_BASE_URL", rest.base.clone()),
        ("BINANCE_WS_URL", ws),
        ("STREAM_RECONNECT_MIN", "10s".into()),
        ("TIMEFRAMES", "1s".into()),
        ("BOOTSTRAP_ON_START", "false".into()),
        ("WARMUP_BARS", "30".into()),
        ("STALE_AFTER", "2s".into()),
    ];
    common::in_process(
        common::config_of(&vars),
        barkeep::clock::Clock::System,
        move |addr| {
            let md = "stream:market_data:BTCUSD";
            let mut sse = Sse::get(
                addr,
                "/streaming/sse?channels=market_data&symbols=BTCUSD",
                None,
            );
            let is = |e: &sse::Event, t: &str| e.channel() == md && e.event == t;
            let mut events = sse.until(|got| {
                got.iter()
                    .filter(|e| is(e, "bar") && e.data["data"]["forming"] == false)
                    .count()
                    >= 2
            });
            down.store(true, Ordering::SeqCst);
            events.extend(sse.until(|got| got.iter().any(|e| is(e, "stale"))));
            down.store(false, Ordering::SeqCst);
            events.extend(sse.until(|got| {
                ["resumed", "gap", "revision"]
                    .iter()
                    .all(|t| got.iter().any(|e| is(e, t)))
            }));
            let position = |t: &str| events.iter().position(|e| is(e, t));
            let (stale, resumed, gap, revision) = (
                position("stale").expect("stale"),
                position("resumed").expect("resumed"),
                position("gap").expect("gap"),
                position("revision").expect("revision"),
            );
            assert!(
                stale < resumed && gap < revision,
                "{stale} {resumed} {gap} {revision}"
            );
            let quiet = &events[stale].data["data"];
            assert!(quiet["quiet_ms"].as_i64() > Some(2_000), "{quiet}");
            let repaired = &events[revision].data["data"];
            let (from, to) = (
                repaired["from_ts"].as_i64().expect("from"),
                repaired["to_ts"].as_i64().expect("to"),
            );
            assert!(repaired["bars"].as_u64() >= Some(1), "{repaired}");
            assert_eq!(events[gap].data["data"]["from_ts"].as_i64(), Some(from));
            // The repaired bars came as closed bars just before the revision.
            let filled = events[gap..revision]
                .iter()
                .filter(|e| is(e, "bar"))
                .filter(|e| {
                    let ts = e.data["data"]["ts"].as_i64().unwrap_or(0);
                    e.data["data"]["forming"] == false && (from..to).contains(&ts)
                })
                .count();
            assert_eq!(filled as u64, repaired["bars"].as_u64().expect("bars"));
            let seqs = by_channel(&events).remove(md).expect("market data");
            let live: Vec<u64> = seqs.iter().copied().skip(3).collect();
            assert!(consecutive(&live), "{seqs:?}");
        },
    );
}
