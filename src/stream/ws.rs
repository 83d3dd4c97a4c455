/*!
One WebSocket session on an upgraded connection.

Out: `{"type":"data","channel":…,"message":{…}}` per message, acknowledgements
(`subscribed`, `unsubscribed`, `resumed`), `{"type":"error","reason":…,"message":…}` for an op
that cannot be done (the session goes on), a ping every [`HEARTBEAT`]. In:
`{"op":"subscribe"|"unsubscribe","channels":[…],"symbols":[…]}` and
`{"op":"resume","channel":…,"since":seq}`. A client silent (not even a pong) for three pings is
gone; one dropped as a slow consumer gets the `slow_consumer` error (if it takes it within
[`KICK_GRACE`]) and a close.

Per channel the session remembers the last `seq` it sent, so a message queued before a resume
is not sent twice.
*/

use std::collections::HashMap;
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, frame::coding::CloseCode};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::hub::{Start, Subscription};
use super::message::Frame;
use super::{HEARTBEAT, KICK_GRACE, SLOW_CONSUMER};

/// Largest client message taken (ops are small).
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
enum Op {
    Subscribe {
        #[serde(default)]
        channels: Vec<String>,
        #[serde(default)]
        symbols: Vec<String>,
    },
    Unsubscribe {
        #[serde(default)]
        channels: Vec<String>,
        #[serde(default)]
        symbols: Vec<String>,
    },
    Resume {
        channel: String,
        since: u64,
    },
}

struct Session {
    sub: Subscription,
    /// Channels on, with the last seq sent of each.
    on: HashMap<u32, u64>,
    out: std::collections::VecDeque<Message>,
}

impl Session {
    /// Queues opening frames and notes their positions.
    fn opening(&mut self, frames: Vec<Arc<Frame>>) {
        for frame in frames {
            let last = self.on.entry(frame.channel).or_insert(0);
            *last = (*last).max(frame.seq);
            self.out.push_back(Message::Text(frame.ws_text()));
        }
    }

    fn reply(&mut self, value: &serde_json::Value) {
        self.out
            .push_back(Message::Text(Utf8Bytes::from(value.to_string())));
    }

    fn error(&mut self, reason: &str, message: &str) {
        self.reply(&serde_json::json!({"type": "error", "reason": reason, "message": message}));
    }

    fn names(&self, channels: &[u32]) -> Vec<String> {
        channels
            .iter()
            .filter_map(|&c| self.sub.hub().channel_name(c))
            .map(|n| n.to_string())
            .collect()
    }

    fn on_text(&mut self, text: &str) {
        let op = match serde_json::from_str::<Op>(text) {
            Ok(op) => op,
            Err(e) => {
                let message = format!(
                    "{e}; expected {{\"op\":\"subscribe\"|\"unsubscribe\",\"channels\":[…]}} or {{\"op\":\"resume\",\"channel\":…,\"since\":seq}}"
                );
                return self.error("bad_request", &message);
            }
        };
        let hub = Arc::clone(self.sub.hub());
        match op {
            Op::Subscribe { channels, symbols } => match hub.resolve(&channels, &symbols) {
                Ok(cs) => {
                    let new: Vec<u32> = cs
                        .iter()
                        .copied()
                        .filter(|c| !self.on.contains_key(c))
                        .collect();
                    for &c in &new {
                        self.on.insert(c, 0);
                    }
                    let frames = self.sub.add(&new, &Start::Fresh);
                    self.opening(frames);
                    let names = self.names(&cs);
                    self.reply(&serde_json::json!({"type": "subscribed", "channels": names}));
                }
                Err(e) => self.error("not_found", &e.to_string()),
            },
            Op::Unsubscribe { channels, symbols } => match hub.resolve(&channels, &symbols) {
                Ok(cs) => {
                    self.sub.remove(&cs);
                    for c in &cs {
                        self.on.remove(c);
                    }
                    let names = self.names(&cs);
                    self.reply(&serde_json::json!({"type": "unsubscribed", "channels": names}));
                }
                Err(e) => self.error("not_found", &e.to_string()),
            },
            Op::Resume { channel, since } => match hub.resolve(&[channel.as_str()], &[]) {
                Ok(cs) => {
                    let c = cs[0];
                    self.sub.remove(&[c]);
                    self.on.insert(c, since);
                    let frames = self.sub.add(&[c], &Start::Seqs(vec![(c, since)]));
                    // A replay gap restarts the channel from its state: positions below
                    // `since` are then legitimate.
                    if frames.iter().any(|f| f.data_type == "replay_gap") {
                        self.on.insert(c, 0);
                    }
                    self.opening(frames);
                    let name = self.names(&[c]).pop();
                    self.reply(
                        &serde_json::json!({"type": "resumed", "channel": name, "since": since}),
                    );
                }
                Err(e) => self.error("not_found", &e.to_string()),
            },
        }
    }

    /// A queued message, unless its channel was left or it was sent already.
    fn queued(&mut self, frame: &Frame) {
        if let Some(last) = self.on.get_mut(&frame.channel)
            && frame.seq > *last
        {
            *last = frame.seq;
            self.out.push_back(Message::Text(frame.ws_text()));
        }
    }
}

/// Runs the session until the client leaves, goes silent, is dropped as slow, or the hub
/// stops. `opening` is what the subscription returned for `channels`, the connection's own.
pub async fn session<S>(io: S, sub: Subscription, channels: Vec<u32>, opening: Vec<Arc<Frame>>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_CLIENT_MESSAGE))
        .max_frame_size(Some(MAX_CLIENT_MESSAGE));
    let mut ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    let mut s = Session {
        sub,
        on: HashMap::new(),
        out: std::collections::VecDeque::new(),
    };
    for c in channels {
        s.on.insert(c, 0);
    }
    s.opening(opening);
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
    let mut unanswered = 0_u32;
    let flags = Arc::clone(&s.sub.flags);
    loop {
        while let Some(message) = s.out.pop_front() {
            let sent = tokio::select! {
                sent = ws.send(message) => sent.is_ok(),
                () = flags.notify.notified() => return slow(ws).await,
            };
            if !sent {
                return;
            }
        }
        if flags.kicked() {
            return slow(ws).await;
        }
        tokio::select! {
            () = flags.notify.notified() => return slow(ws).await,
            frame = s.sub.rx.recv() => match frame {
                Some(frame) => {
                    s.queued(&frame);
                    // Take what else is waiting, so it goes out in one go.
                    while let Ok(frame) = s.sub.rx.try_recv() {
                        s.queued(&frame);
                    }
                }
                None if flags.kicked() => return slow(ws).await,
                None => {
                    let _ = ws.close(Some(CloseFrame {
                        code: CloseCode::Away,
                        reason: "server stopping".into(),
                    })).await;
                    return;
                }
            },
            message = ws.next() => {
                unanswered = 0;
                match message {
                    Some(Ok(Message::Text(text))) => s.on_text(&text),
                    Some(Ok(Message::Binary(_))) => {
                        s.error("bad_request", "ops are JSON text messages");
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                }
            }
            _ = ping.tick() => {
                unanswered += 1;
                if unanswered > 3 {
                    tracing::debug!("WebSocket client silent for three pings; closing");
                    return;
                }
                s.out.push_back(Message::Ping(bytes::Bytes::new()));
            }
        }
    }
}

/// The end of a client dropped as a slow consumer: its error and a close, if it takes them in
/// time.
async fn slow<S>(mut ws: WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let bye = async {
        ws.send(Message::Text(Utf8Bytes::from_static(SLOW_CONSUMER)))
            .await?;
        ws.close(Some(CloseFrame {
            code: CloseCode::Policy,
            reason: "slow_consumer".into(),
        }))
        .await
    };
    let _ = tokio::time::timeout(KICK_GRACE, bye).await;
}
