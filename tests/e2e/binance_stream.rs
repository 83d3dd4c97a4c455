//! A Binance kline WebSocket paced on the wall clock, for the end-to-end reconnect test.
//!
//! `tests/providers/fixture.rs`'s `WsFixture` replays a script of frames all at once, which is
//! right for parser and reconnect-loop tests but cannot make bars form over time. This one
//! answers live `SUBSCRIBE` and `UNSUBSCRIBE` requests like Binance (`{"result":null,"id":…}`)
//! at any time on a connection, and every `every` sends a `<symbol>@kline_1m` update stamped
//! with the current time for each stream the connection is subscribed to, until
//! [`BinanceStream::cut`] drops the connection mid-stream (no close frame) and refuses new
//! connections for the outage; after that, a reconnecting client is accepted and streamed to
//! again.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// Shared between the server task and the test.
#[derive(Default)]
struct State {
    /// (connection number, text) of every frame a client sent.
    received: Mutex<Vec<(usize, String)>>,
    /// (generation, event time in Unix ms) of every round of kline updates sent, in order.
    sent: Mutex<Vec<(usize, i64)>>,
    /// (Binance symbol, event time in Unix ms) of every kline update sent, in order.
    sent_symbols: Mutex<Vec<(String, i64)>>,
    /// Until when connection attempts are dropped before the handshake.
    down_until: Mutex<Option<Instant>>,
    /// Bumped by `cut`: connections of an older generation drop themselves.
    generation: AtomicUsize,
    /// WebSocket handshakes completed.
    connections: AtomicUsize,
    /// TCP connections dropped during an outage.
    refused: AtomicUsize,
}

pub struct BinanceStream {
    pub url: String,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for BinanceStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The price the fixture quotes at `ms`, the same in the stream and in the klines history, so
/// the validator's spike check sees one consistent market.
pub fn price(ms: i64) -> f64 {
    42_000.0 + (ms.div_euclid(1_000) % 3) as f64 * 0.5
}

fn wall_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// One kline update in Binance's raw-stream format (`/ws`): the forming 1m kline so far.
fn kline(symbol: &str, event_ms: i64, close: f64, volume: f64) -> String {
    let open_ms = event_ms.div_euclid(60_000) * 60_000;
    format!(
        r#"{{"e":"kline","E":{event_ms},"s":"{symbol}","k":{{"t":{open_ms},"T":{},"s":"{symbol}","i":"1m","f":100,"L":200,"o":"42000.00","c":"{close:.2}","h":"42001.00","l":"41999.00","v":"{volume:.8}","n":100,"x":false,"q":"1.0","V":"0.5","Q":"0.5","B":"0"}}}}"#,
        open_ms + 59_999
    )
}

impl BinanceStream {
    /// Streams what each connection subscribed to, one update per stream every `every`.
    pub async fn start(every: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State::default());
        let task = {
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let down = state.down_until.lock().is_some_and(|t| Instant::now() < t);
                    if down {
                        state.refused.fetch_add(1, Ordering::SeqCst);
                        drop(stream);
                        continue;
                    }
                    tokio::spawn(serve(stream, Arc::clone(&state), every));
                }
            })
        };
        Self {
            url: format!("ws://{addr}/ws"),
            state,
            task,
        }
    }

    /// Drops every open connection now, without a close frame, and refuses connections for
    /// `outage`. Returns the new generation: updates sent from then on carry it.
    pub fn cut(&self, outage: Duration) -> usize {
        *self.state.down_until.lock() = Some(Instant::now() + outage);
        self.state.generation.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// (connection number, text) of every frame clients sent.
    pub fn received(&self) -> Vec<(usize, String)> {
        self.state.received.lock().clone()
    }

    /// (generation, event time in Unix ms) of every kline update sent, in order; a
    /// connection keeps the generation it was accepted in.
    pub fn sent(&self) -> Vec<(usize, i64)> {
        self.state.sent.lock().clone()
    }

    /// The kline updates sent for `symbol` (Binance spelling), with their event times.
    pub fn sent_for(&self, symbol: &str) -> Vec<i64> {
        self.state
            .sent_symbols
            .lock()
            .iter()
            .filter(|(s, _)| s == symbol)
            .map(|(_, t)| *t)
            .collect()
    }

    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    pub fn refused(&self) -> usize {
        self.state.refused.load(Ordering::SeqCst)
    }
}

/// One client connection: take `SUBSCRIBE` / `UNSUBSCRIBE` requests whenever they come, stream
/// the subscribed symbols until cut or gone.
async fn serve(stream: tokio::net::TcpStream, state: Arc<State>, every: Duration) {
    let generation = state.generation.load(Ordering::SeqCst);
    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let n = state.connections.fetch_add(1, Ordering::SeqCst);
    let (mut tx, mut rx) = ws.split();
    // Binance symbols (upper case) this connection is subscribed to.
    let mut subscribed: BTreeSet<String> = BTreeSet::new();
    let mut volume = 0.0;
    let mut ticker = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if state.generation.load(Ordering::SeqCst) != generation {
                    return; // cut: both halves drop, the TCP connection closes without a close frame
                }
                if subscribed.is_empty() {
                    continue;
                }
                let now = wall_ms();
                volume += 0.01;
                for symbol in &subscribed {
                    if tx.send(Message::text(kline(symbol, now, price(now), volume))).await.is_err() {
                        return;
                    }
                    state.sent_symbols.lock().push((symbol.clone(), now));
                }
                state.sent.lock().push((generation, now));
            }
            message = rx.next() => match message {
                Some(Ok(Message::Text(t))) => {
                    let text = t.as_str().to_string();
                    state.received.lock().push((n, text.clone()));
                    let Ok(request) = serde_json::from_str::<serde_json::Value>(&text) else {
                        continue;
                    };
                    let streams = request["params"].as_array().cloned().unwrap_or_default();
                    let symbols = streams
                        .iter()
                        .filter_map(|s| s.as_str()?.strip_suffix("@kline_1m"))
                        .map(str::to_ascii_uppercase);
                    match request["method"].as_str() {
                        Some("SUBSCRIBE") => subscribed.extend(symbols),
                        Some("UNSUBSCRIBE") => {
                            for s in symbols {
                                subscribed.remove(&s);
                            }
                        }
                        _ => {}
                    }
                    let reply = serde_json::json!({ "result": null, "id": request["id"] }).to_string();
                    if tx.send(Message::text(reply)).await.is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                _ => return,
            },
        }
    }
}
