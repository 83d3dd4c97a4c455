//! The WebSocket sources follow the shared symbol table while connected: a symbol added at run
//! time is subscribed on the open connection, a deleted one unsubscribed (and its data no longer
//! taken), a reconnect subscribes the set as it is then, and with nothing left to subscribe the
//! connection is closed until a symbol is added.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use barkeep::sources::StreamEvent;
use barkeep::sources::binance::BinanceSource;
use barkeep::sources::finnhub::FinnhubSource;
use barkeep::sources::polygon::PolygonSource;

use crate::fixture::{Step, WsFixture};
use crate::streams::{collect, kline, reconnects, spawn_stream, stop};
use crate::{settings, symbols};

/// The symbol ids of the quotes among `events`, in order.
fn quoted(events: &[StreamEvent]) -> Vec<u32> {
    events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Quote(q) => Some(q.symbol),
            _ => None,
        })
        .collect()
}

/// (connection, method, params, id) of every Binance request the fixture received.
fn binance_requests(ws: &WsFixture) -> Vec<(usize, String, serde_json::Value, u64)> {
    ws.texts()
        .iter()
        .map(|(n, t)| {
            let v: serde_json::Value = serde_json::from_str(t).expect("json");
            let method = v["method"].as_str().expect("method").to_string();
            (
                *n,
                method,
                v["params"].clone(),
                v["id"].as_u64().expect("id"),
            )
        })
        .collect()
}

/// Waits (up to 10 s) until the fixture has received `n` text frames.
async fn received(ws: &WsFixture, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ws.texts().len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} frames of {n}: {:?}",
            ws.texts().len(),
            ws.texts()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn binance_subscribes_added_and_unsubscribes_deleted_symbols_on_the_open_connection() {
    let t = crate::utc("2024-01-15 14:30");
    let ws = WsFixture::start(move |n| match n {
        0 => vec![
            Step::Expect, // SUBSCRIBE btcusdt
            Step::Send(r#"{"result":null,"id":1}"#.into()),
            Step::Send(kline("BTCUSDT", t, "42010.00", "1.0", false)),
            Step::Expect, // SUBSCRIBE ethusdt, once ETHUSD is added
            Step::Send(r#"{"result":null,"id":2}"#.into()),
            Step::Send(kline("ETHUSDT", t, "2510.00", "3.0", false)),
            Step::Expect, // UNSUBSCRIBE btcusdt, once BTCUSD is deleted
            Step::Send(r#"{"result":null,"id":3}"#.into()),
            // Sent before the server took the unsubscribe in: not taken any more.
            Step::Send(kline("BTCUSDT", t, "42020.00", "1.5", false)),
            Step::Drop,
        ],
        _ => vec![
            Step::Expect,
            Step::Send(kline("ETHUSDT", t, "2520.00", "3.5", false)),
        ],
    })
    .await;
    let table = symbols(&["BTCUSD", "EURUSD"]);
    let src = Arc::new(
        BinanceSource::new(&table, &settings(&[("BINANCE_WS_URL", &ws.url)])).expect("source"),
    );
    let (mut rx, shutdown, task) = spawn_stream(&src);
    let mut events = collect(&mut rx, |e| quoted(e) == [0]).await;
    let (eth, new) = table.add("ETHUSD");
    assert_eq!((eth, new), (2, true));
    events.extend(collect(&mut rx, |e| quoted(e) == [2]).await);
    assert!(table.deactivate(0));
    events.extend(
        collect(&mut rx, |e| {
            reconnects(e) == 1
                && matches!(e.last(), Some(StreamEvent::Quote(q)) if q.price == 2_520.0)
        })
        .await,
    );
    assert_eq!(
        quoted(&events),
        [0, 2, 2],
        "the deleted symbol's data is not taken after its UNSUBSCRIBE: {events:?}"
    );
    let streams = |names: &[&str]| serde_json::json!(names);
    assert_eq!(
        binance_requests(&ws),
        [
            (0, "SUBSCRIBE".into(), streams(&["btcusdt@kline_1m"]), 1),
            (0, "SUBSCRIBE".into(), streams(&["ethusdt@kline_1m"]), 2),
            (0, "UNSUBSCRIBE".into(), streams(&["btcusdt@kline_1m"]), 3),
            // The reconnect subscribes the set as it is now.
            (1, "SUBSCRIBE".into(), streams(&["ethusdt@kline_1m"]), 1),
        ]
    );
    stop(shutdown, task).await;
}

#[tokio::test]
async fn a_stream_with_nothing_left_to_subscribe_closes_and_opens_again_for_an_added_symbol() {
    let t = crate::utc("2024-01-15 14:30");
    let ws = WsFixture::start(move |n| match n {
        0 => vec![
            Step::Expect,
            Step::Send(kline("BTCUSDT", t, "42010.00", "1.0", false)),
            Step::Hold, // records the UNSUBSCRIBE, then sees the client leave
        ],
        _ => vec![
            Step::Expect,
            Step::Send(kline("ETHUSDT", t, "2510.00", "3.0", false)),
        ],
    })
    .await;
    let table = symbols(&["BTCUSD"]);
    let src = Arc::new(
        BinanceSource::new(&table, &settings(&[("BINANCE_WS_URL", &ws.url)])).expect("source"),
    );
    let (mut rx, shutdown, task) = spawn_stream(&src);
    let mut events = collect(&mut rx, |e| quoted(e) == [0]).await;
    assert!(table.deactivate(0));
    received(&ws, 2).await;
    assert_eq!(ws.connections.load(Ordering::SeqCst), 1);
    table.add("ETHUSD");
    events.extend(collect(&mut rx, |e| quoted(e) == [1]).await);
    assert_eq!(ws.connections.load(Ordering::SeqCst), 2);
    assert_eq!(
        reconnects(&events),
        0,
        "closed on purpose, not an outage: {events:?}"
    );
    let methods: Vec<(usize, String, serde_json::Value)> = binance_requests(&ws)
        .into_iter()
        .map(|(n, m, p, _)| (n, m, p))
        .collect();
    assert_eq!(
        methods,
        [
            (
                0,
                "SUBSCRIBE".into(),
                serde_json::json!(["btcusdt@kline_1m"])
            ),
            (
                0,
                "UNSUBSCRIBE".into(),
                serde_json::json!(["btcusdt@kline_1m"])
            ),
            (
                1,
                "SUBSCRIBE".into(),
                serde_json::json!(["ethusdt@kline_1m"])
            ),
        ]
    );
    stop(shutdown, task).await;
}

#[tokio::test]
async fn finnhub_subscribes_added_and_unsubscribes_deleted_symbols_on_the_open_connection() {
    let trade = |symbol: &str, price: f64| {
        format!(
            r#"{{"data":[{{"p":{price},"s":"{symbol}","t":1705329000100,"v":1}}],"type":"trade"}}"#
        )
    };
    let (aapl, msft) = (trade("AAPL", 185.5), trade("MSFT", 402.0));
    let ws = WsFixture::start(move |_| {
        vec![
            Step::Expect,
            Step::Send(aapl.clone()),
            Step::Expect,
            Step::Send(msft.clone()),
            Step::Expect,
            Step::Send(aapl.clone()),
            Step::Send(msft.clone()),
        ]
    })
    .await;
    let table = symbols(&["AAPL", "NAS100"]);
    let src = Arc::new(
        FinnhubSource::new(&table, &settings(&[("FINNHUB_WS_URL", &ws.url)])).expect("source"),
    );
    let (mut rx, shutdown, task) = spawn_stream(&src);
    let mut events = collect(&mut rx, |e| quoted(e) == [0]).await;
    table.add("msft");
    events.extend(collect(&mut rx, |e| quoted(e) == [2]).await);
    table.deactivate(0);
    events.extend(collect(&mut rx, |e| quoted(e) == [2]).await);
    assert_eq!(quoted(&events), [0, 2, 2], "AAPL not taken once deleted");
    let frames: Vec<serde_json::Value> = ws
        .texts()
        .iter()
        .map(|(_, t)| serde_json::from_str(t).expect("json"))
        .collect();
    assert_eq!(
        frames,
        [
            serde_json::json!({"type": "subscribe", "symbol": "AAPL"}),
            serde_json::json!({"type": "subscribe", "symbol": "MSFT"}),
            serde_json::json!({"type": "unsubscribe", "symbol": "AAPL"}),
        ]
    );
    assert_eq!(ws.connections.load(Ordering::SeqCst), 1, "no reconnect");
    stop(shutdown, task).await;
}

#[tokio::test]
async fn a_burst_of_additions_goes_out_as_a_few_requests() {
    let ws = WsFixture::start(|_| vec![Step::Hold]).await;
    let table = symbols(&["BTCUSD"]);
    let src = Arc::new(
        BinanceSource::new(&table, &settings(&[("BINANCE_WS_URL", &ws.url)])).expect("source"),
    );
    let (_rx, shutdown, task) = spawn_stream(&src);
    received(&ws, 1).await;
    // Ten additions 10 ms apart, as a script calling the API would make them.
    let coins = [
        "ETH", "SOL", "XRP", "ADA", "DOGE", "DOT", "LTC", "LINK", "BNB", "TRX",
    ];
    for coin in coins {
        table.add(&format!("{coin}USD"));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut want: Vec<String> = coins
        .iter()
        .map(|c| format!("{}usdt@kline_1m", c.to_ascii_lowercase()))
        .collect();
    want.sort();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let got = loop {
        let mut got: Vec<String> = binance_requests(&ws)
            .iter()
            .skip(1)
            .flat_map(|(_, _, params, _)| params.as_array().cloned().unwrap_or_default())
            .filter_map(|p| p.as_str().map(str::to_string))
            .collect();
        got.sort();
        if got == want {
            break got;
        }
        assert!(tokio::time::Instant::now() < deadline, "so far: {got:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let requests = binance_requests(&ws).len() - 1;
    assert!(
        requests <= 3,
        "{} symbols in {requests} SUBSCRIBE requests: {:?}",
        got.len(),
        ws.texts()
    );
    stop(shutdown, task).await;
}

const CONNECTED: &str =
    r#"[{"ev":"status","status":"connected","message":"Connected Successfully"}]"#;
const AUTHED: &str = r#"[{"ev":"status","status":"auth_success","message":"authenticated"}]"#;

#[tokio::test]
async fn polygon_follows_the_table_once_authenticated() {
    let ws = WsFixture::start(|_| {
        vec![
            Step::Send(CONNECTED.into()),
            Step::Expect, // auth
            Step::Send(AUTHED.into()),
            Step::Expect, // subscribe
            Step::Hold,
        ]
    })
    .await;
    let table = symbols(&["AAPL", "BTCUSD"]);
    let src = Arc::new(
        PolygonSource::new(&table, &settings(&[("POLYGON_WS_URL", &ws.url)])).expect("source"),
    );
    let (_rx, shutdown, task) = spawn_stream(&src);
    received(&ws, 2).await; // auth, subscribe
    table.add("MSFT");
    received(&ws, 3).await;
    // Changes made together go out in one round.
    table.add("ETHUSD"); // not on the stocks cluster: nothing to send
    table.add("NVDA");
    assert!(table.deactivate(0));
    received(&ws, 5).await;
    let actions: Vec<(String, String)> = ws
        .texts()
        .iter()
        .skip(1)
        .map(|(_, t)| {
            let v: serde_json::Value = serde_json::from_str(t).expect("json");
            (
                v["action"].as_str().expect("action").to_string(),
                v["params"].as_str().expect("params").to_string(),
            )
        })
        .collect();
    let expected = |a: &str, p: &str| (a.to_string(), p.to_string());
    assert_eq!(
        actions,
        [
            expected("subscribe", "AM.AAPL,A.AAPL"),
            expected("subscribe", "AM.MSFT,A.MSFT"),
            expected("unsubscribe", "AM.AAPL,A.AAPL"),
            expected("subscribe", "AM.NVDA,A.NVDA"),
        ]
    );
    stop(shutdown, task).await;
}
