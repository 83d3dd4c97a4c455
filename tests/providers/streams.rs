//! The WebSocket sources against a local WebSocket server: subscribe, data, a dropped
//! connection (reconnect, resubscribe, `Reconnected`), silence, and prompt shutdown.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use barkeep::sources::binance::BinanceSource;
use barkeep::sources::finnhub::FinnhubSource;
use barkeep::sources::polygon::PolygonSource;
use barkeep::sources::{Source, StreamEvent};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::fixture::{Step, WsFixture};
use crate::{KEY, settings, symbols};

/// Collects events until `done` says so (or fails after 10 s).
pub async fn collect(
    rx: &mut mpsc::Receiver<StreamEvent>,
    done: impl Fn(&[StreamEvent]) -> bool,
) -> Vec<StreamEvent> {
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done(&events) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(e)) => events.push(e),
            Ok(None) => panic!("stream ended early: {events:?}"),
            Err(_) => panic!("timed out; so far: {events:?}"),
        }
    }
    events
}

pub fn reconnects(events: &[StreamEvent]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, StreamEvent::Reconnected { .. }))
        .count()
}

/// Starts `src`'s push stream on a task: its events, its shutdown token and the task.
pub fn spawn_stream<S: Source + 'static>(
    src: &Arc<S>,
) -> (
    mpsc::Receiver<StreamEvent>,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::channel(64);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(
        Arc::clone(src)
            .stream(tx, shutdown.clone())
            .expect("stream"),
    );
    (rx, shutdown, task)
}

/// Stops the stream and requires it to finish promptly.
pub async fn stop(shutdown: CancellationToken, task: tokio::task::JoinHandle<()>) {
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("stream stops promptly on shutdown")
        .expect("stream task did not panic");
}

pub fn kline(symbol: &str, open_ms: i64, close: &str, volume: &str, closed: bool) -> String {
    format!(
        r#"{{"e":"kline","E":{},"s":"{symbol}","k":{{"t":{open_ms},"T":{},"s":"{symbol}","i":"1m","f":100,"L":200,"o":"42000.00","c":"{close}","h":"42100.00","l":"41900.00","v":"{volume}","n":100,"x":{closed},"q":"1.0","V":"0.5","Q":"0.5","B":"0"}}}}"#,
        open_ms + 30_000,
        open_ms + 59_999
    )
}

#[tokio::test]
async fn binance_reconnects_resubscribes_and_reports_the_outage() {
    let t = crate::utc("2024-01-15 14:30");
    let ws = WsFixture::start(move |n| match n {
        0 => vec![
            Step::Expect,
            Step::Send(r#"{"result":null,"id":1}"#.into()),
            Step::Send(kline("BTCUSDT", t, "42010.00", "1.5", false)),
            Step::Send(kline("BTCUSDT", t, "42020.00", "2.0", false)),
            Step::Send(kline("BTCUSDT", t, "42030.00", "2.5", true)),
            Step::Drop,
        ],
        _ => vec![
            Step::Expect,
            Step::Send(kline("BTCUSDT", t + 60_000, "42040.00", "0.7", false)),
        ],
    })
    .await;
    let src = Arc::new(
        BinanceSource::new(
            &symbols(&["BTCUSD", "EURUSD"]),
            &settings(&[("BINANCE_WS_URL", &ws.url)]),
        )
        .expect("source"),
    );
    assert!(src.capabilities().stream);
    let (tx, mut rx) = mpsc::channel(64);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(
        Arc::clone(&src)
            .stream(tx, shutdown.clone())
            .expect("stream"),
    );
    let events = collect(&mut rx, |e| {
        reconnects(e) == 1 && matches!(e.last(), Some(StreamEvent::Quote(q)) if q.price == 42_040.0)
    })
    .await;

    let quotes: Vec<(f64, f64)> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Quote(q) => Some((q.price, q.volume)),
            _ => None,
        })
        .collect();
    // Volume is the growth of the kline's cumulative volume; the first sight reports 0.
    assert_eq!(
        quotes,
        [
            (42_010.0, 0.0),
            (42_020.0, 0.5),
            (42_030.0, 0.5),
            (42_040.0, 0.0)
        ]
    );
    let bars: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Bar {
                symbol,
                timeframe,
                bar,
            } => Some((*symbol, timeframe.ms(), bar.ts, bar.close, bar.volume)),
            _ => None,
        })
        .collect();
    assert_eq!(
        bars,
        [(0, 60_000, t, 42_030.0, 2.5)],
        "only the closed kline is a bar"
    );
    let since = events.iter().find_map(|e| match e {
        StreamEvent::Reconnected { since_ms } => Some(*since_ms),
        _ => None,
    });
    let since = since.expect("Reconnected");
    assert!(
        since <= crate::now_ms() && since > crate::now_ms() - 60_000,
        "{since}"
    );

    let subscribes = ws.texts();
    assert_eq!(
        subscribes.len(),
        2,
        "subscribed on both connections: {subscribes:?}"
    );
    for (i, (conn, text)) in subscribes.iter().enumerate() {
        assert_eq!(*conn, i);
        let v: serde_json::Value = serde_json::from_str(text).expect("json");
        assert_eq!(v["method"], "SUBSCRIBE");
        assert_eq!(
            v["params"],
            serde_json::json!(["btcusdt@kline_1m"]),
            "only crypto symbols"
        );
    }
    stop(shutdown, task).await;
}

#[tokio::test]
async fn binance_silence_means_reconnect() {
    let t = crate::utc("2024-01-15 14:30");
    let ws = WsFixture::start(move |n| match n {
        0 => vec![Step::Expect, Step::Hold],
        _ => vec![
            Step::Expect,
            Step::Send(kline("BTCUSDT", t, "42010.00", "1.0", false)),
        ],
    })
    .await;
    let s = settings(&[
        ("BINANCE_WS_URL", &ws.url),
        ("STREAM_SILENCE_TIMEOUT", "200ms"),
    ]);
    let src = Arc::new(BinanceSource::new(&symbols(&["BTCUSD"]), &s).expect("source"));
    let (tx, mut rx) = mpsc::channel(64);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(
        Arc::clone(&src)
            .stream(tx, shutdown.clone())
            .expect("stream"),
    );
    let events = collect(&mut rx, |e| {
        e.iter().any(|e| matches!(e, StreamEvent::Quote(_)))
    })
    .await;
    assert!(
        matches!(events[0], StreamEvent::Reconnected { .. }),
        "{events:?}"
    );
    assert!(ws.connections.load(Ordering::SeqCst) >= 2);
    assert_eq!(
        ws.texts().iter().filter(|(c, _)| *c < 2).count(),
        2,
        "resubscribed after the silent connection"
    );
    stop(shutdown, task).await;
}

#[tokio::test]
async fn shutdown_stops_a_stream_that_cannot_connect() {
    // A server that accepts and hangs up before any handshake: the stream never connects and
    // keeps backing off, retrying, until told to stop.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("ws://{}", listener.local_addr().expect("addr"));
    let attempts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&attempts);
    let refuser = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    let src = Arc::new(
        BinanceSource::new(
            &symbols(&["BTCUSD"]),
            &settings(&[("BINANCE_WS_URL", &url)]),
        )
        .expect("source"),
    );
    let (tx, mut rx) = mpsc::channel(8);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(
        Arc::clone(&src)
            .stream(tx, shutdown.clone())
            .expect("stream"),
    );
    // Two attempts seen: it tried, failed, backed off and tried again.
    tokio::time::timeout(Duration::from_secs(20), async {
        while attempts.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the stream retried");
    stop(shutdown, task).await;
    refuser.abort();
    assert!(rx.try_recv().is_err(), "never connected, so no Reconnected");
}

const CONNECTED: &str =
    r#"[{"ev":"status","status":"connected","message":"Connected Successfully"}]"#;
const AUTHED: &str = r#"[{"ev":"status","status":"auth_success","message":"authenticated"}]"#;

fn aggregates(t: i64, close: f64) -> String {
    format!(
        r#"[{{"ev":"AM","sym":"AAPL","v":10204,"av":200304,"op":114.04,"vw":114.404,"o":114.11,"c":{close},"h":114.19,"l":114.09,"a":114.1314,"z":10,"s":{t},"e":{}}},{{"ev":"A","sym":"AAPL","v":12,"av":200316,"op":114.04,"vw":114.2,"o":{close},"c":{close},"h":{close},"l":{close},"a":114.13,"z":6,"s":{},"e":{}}}]"#,
        t + 60_000,
        t + 60_000,
        t + 61_000
    )
}

#[tokio::test]
async fn polygon_authenticates_then_subscribes_on_every_connection() {
    let t = crate::utc("2024-01-15 14:30");
    let ws = WsFixture::start(move |n| {
        let mut steps = vec![
            Step::Send(CONNECTED.into()),
            Step::Expect, // auth
            Step::Send(AUTHED.into()),
            Step::Expect, // subscribe
            Step::Send(
                r#"[{"ev":"status","status":"success","message":"subscribed to: AM.AAPL"}]"#.into(),
            ),
            Step::Send(aggregates(
                t + n as i64 * 60_000,
                if n == 0 { 114.14 } else { 115.14 },
            )),
        ];
        if n == 0 {
            steps.push(Step::Drop);
        }
        steps
    })
    .await;
    let s = settings(&[("POLYGON_WS_URL", &ws.url)]);
    let src = Arc::new(PolygonSource::new(&symbols(&["AAPL", "BTCUSD"]), &s).expect("source"));
    let (tx, mut rx) = mpsc::channel(64);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(
        Arc::clone(&src)
            .stream(tx, shutdown.clone())
            .expect("stream"),
    );
    let events = collect(&mut rx, |e| {
        e.iter()
            .filter(|e| matches!(e, StreamEvent::Bar { .. }))
            .count()
            == 2
            && e.iter()
                .filter(|e| matches!(e, StreamEvent::Quote(_)))
                .count()
                == 2
    })
    .await;
    assert_eq!(reconnects(&events), 1, "{events:?}");
    let bars: Vec<(i64, f64, f64)> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Bar { timeframe, bar, .. } => {
                assert_eq!(timeframe.ms(), 60_000);
                Some((bar.ts, bar.close, bar.volume))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        bars,
        [(t, 114.14, 10_204.0), (t + 60_000, 115.14, 10_204.0)]
    );
    let quote = events.iter().find_map(|e| match e {
        StreamEvent::Quote(q) => Some(*q),
        _ => None,
    });
    let quote = quote.expect("second aggregate as a quote");
    assert_eq!(
        (quote.ts, quote.volume),
        (t + 60_999, 12.0),
        "stamped inside its second"
    );

    let texts = ws.texts();
    let auths: Vec<_> = texts
        .iter()
        .filter(|(_, t)| t.contains(r#""action":"auth""#))
        .collect();
    let subs: Vec<_> = texts
        .iter()
        .filter(|(_, t)| t.contains(r#""action":"subscribe""#))
        .collect();
    assert_eq!((auths.len(), subs.len()), (2, 2), "{texts:?}");
    assert!(auths[0].1.contains(KEY));
    let sub: serde_json::Value = serde_json::from_str(&subs[1].1).expect("json");
    assert_eq!(
        sub["params"], "AM.AAPL,A.AAPL",
        "equities only on the stocks cluster"
    );
    stop(shutdown, task).await;
}

#[tokio::test]
async fn polygon_refused_auth_never_subscribes_and_retries() {
    let ws = WsFixture::start(|_| {
        vec![
            Step::Send(CONNECTED.into()),
            Step::Expect,
            Step::Send(
                r#"[{"ev":"status","status":"auth_failed","message":"authentication failed"}]"#
                    .into(),
            ),
        ]
    })
    .await;
    let src = Arc::new(
        PolygonSource::new(
            &symbols(&["AAPL"]),
            &settings(&[("POLYGON_WS_URL", &ws.url)]),
        )
        .expect("source"),
    );
    let (tx, _rx) = mpsc::channel(64);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(
        Arc::clone(&src)
            .stream(tx, shutdown.clone())
            .expect("stream"),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while ws.connections.load(Ordering::SeqCst) < 3 {
        assert!(tokio::time::Instant::now() < deadline, "no retries");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ws.texts().iter().all(|(_, t)| !t.contains("subscribe")));
    stop(shutdown, task).await;
}

#[tokio::test]
async fn finnhub_coalesces_trades_and_resubscribes_each_symbol() {
    let trades = r#"{"data":[{"c":null,"p":185.5,"s":"AAPL","t":1705329000100,"v":100},{"c":["1"],"p":185.7,"s":"AAPL","t":1705329000300,"v":50},{"c":null,"p":185.6,"s":"AAPL","t":1705329000200,"v":25},{"p":42000.5,"s":"BINANCE:BTCUSDT","t":1705329000250,"v":0.01}],"type":"trade"}"#;
    let ws = WsFixture::start(move |n| match n {
        0 => vec![
            Step::Expect,
            Step::Expect,
            Step::Send(r#"{"type":"ping"}"#.into()),
            Step::Send(trades.into()),
            Step::Drop,
        ],
        _ => vec![
            Step::Expect,
            Step::Expect,
            Step::Send(r#"{"type":"error","msg":"Subscribing to too many symbols"}"#.into()),
            Step::Send(
                r#"{"data":[{"p":186.0,"s":"AAPL","t":1705329060000,"v":1}],"type":"trade"}"#
                    .into(),
            ),
        ],
    })
    .await;
    let src = Arc::new(
        FinnhubSource::new(
            &symbols(&["AAPL", "BTCUSD", "NAS100"]),
            &settings(&[("FINNHUB_WS_URL", &ws.url)]),
        )
        .expect("source"),
    );
    let (tx, mut rx) = mpsc::channel(64);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(
        Arc::clone(&src)
            .stream(tx, shutdown.clone())
            .expect("stream"),
    );
    let events = collect(
        &mut rx,
        |e| matches!(e.last(), Some(StreamEvent::Quote(q)) if q.price == 186.0),
    )
    .await;
    let quotes: Vec<(u32, f64, i64, f64)> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Quote(q) => Some((q.symbol, q.price, q.ts, q.volume)),
            _ => None,
        })
        .collect();
    assert_eq!(
        quotes,
        [
            (0, 185.7, 1_705_329_000_300, 175.0),
            (1, 42_000.5, 1_705_329_000_250, 0.01),
            (0, 186.0, 1_705_329_060_000, 1.0)
        ],
        "one quote per symbol per frame: latest price, summed volume"
    );
    assert_eq!(reconnects(&events), 1);
    let uris = ws.uris.lock().clone();
    assert_eq!(uris.len(), 2);
    assert!(
        uris.iter().all(|u| u.contains(&format!("token={KEY}"))),
        "{uris:?}"
    );
    let texts = ws.texts();
    let per_connection = |c: usize| -> Vec<String> {
        texts
            .iter()
            .filter(|(n, _)| *n == c)
            .map(|(_, t)| {
                serde_json::from_str::<serde_json::Value>(t).expect("json")["symbol"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    };
    assert_eq!(
        per_connection(0),
        ["AAPL", "BINANCE:BTCUSDT"],
        "NAS100 is not a Finnhub symbol"
    );
    assert_eq!(
        per_connection(1),
        per_connection(0),
        "resubscribed after the drop"
    );
    stop(shutdown, task).await;
}

#[tokio::test]
async fn polygon_silence_means_reconnect() {
    let t = crate::utc("2024-01-15 14:30");
    let ws = WsFixture::start(move |n| {
        let mut steps = vec![
            Step::Send(CONNECTED.into()),
            Step::Expect,
            Step::Send(AUTHED.into()),
            Step::Expect,
        ];
        steps.push(if n == 0 {
            Step::Hold
        } else {
            Step::Send(aggregates(t, 114.14))
        });
        steps
    })
    .await;
    let s = settings(&[
        ("POLYGON_WS_URL", &ws.url),
        ("STREAM_SILENCE_TIMEOUT", "200ms"),
    ]);
    let src = Arc::new(PolygonSource::new(&symbols(&["AAPL"]), &s).expect("source"));
    let (tx, mut rx) = mpsc::channel(64);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(
        Arc::clone(&src)
            .stream(tx, shutdown.clone())
            .expect("stream"),
    );
    let events = collect(&mut rx, |e| {
        e.iter().any(|e| matches!(e, StreamEvent::Bar { .. }))
    })
    .await;
    assert!(
        matches!(events[0], StreamEvent::Reconnected { .. }),
        "{events:?}"
    );
    let subs = ws
        .texts()
        .iter()
        .filter(|(_, t)| t.contains(r#""action":"subscribe""#))
        .count();
    assert_eq!(subs, 2);
    stop(shutdown, task).await;
}

#[tokio::test]
async fn finnhub_silence_means_reconnect() {
    let ws = WsFixture::start(|n| {
        if n == 0 {
            vec![Step::Expect, Step::Hold]
        } else {
            vec![
                Step::Expect,
                Step::Send(
                    r#"{"data":[{"p":186.0,"s":"AAPL","t":1705329060000,"v":1}],"type":"trade"}"#
                        .into(),
                ),
            ]
        }
    })
    .await;
    let s = settings(&[
        ("FINNHUB_WS_URL", &ws.url),
        ("STREAM_SILENCE_TIMEOUT", "200ms"),
    ]);
    let src = Arc::new(FinnhubSource::new(&symbols(&["AAPL"]), &s).expect("source"));
    let (tx, mut rx) = mpsc::channel(64);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(
        Arc::clone(&src)
            .stream(tx, shutdown.clone())
            .expect("stream"),
    );
    let events = collect(&mut rx, |e| {
        e.iter().any(|e| matches!(e, StreamEvent::Quote(_)))
    })
    .await;
    assert!(
        matches!(events[0], StreamEvent::Reconnected { .. }),
        "{events:?}"
    );
    assert_eq!(ws.texts().len(), 2, "subscribed on both connections");
    stop(shutdown, task).await;
}
