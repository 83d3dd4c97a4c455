/*!
Streaming to clients: every bar, feature update, signal and continuity event as one message
model, numbered per channel, served as Server-Sent Events and over WebSocket, with resume.

```text
collector ──Arc<TickBatch>──▶ hub (own task: builds, numbers, keeps, fans out)
                               ├─ per channel: seq, newest message of each kind, replay buffer
                               └─ per client: bounded queue ──▶ sse::SseBody | ws::session
```

- [`message`] — the model (`channel`, `data_type`, `update_type`, `seq`, …) and its rendering,
  once per message, shared by every client.
- [`hub`] — channels, replay, subscriptions and the slow-consumer rule.
- [`sse`] — the `text/event-stream` body: `id:`/`event:`/`data:`, heartbeats, the final error.
- [`ws`] — a WebSocket session: data frames out, `subscribe`/`unsubscribe`/`resume` in, pings.
- [`jetstream`] — the hub's tap to NATS JetStream (`NATS_URL`): subjects, message ids, a
  pipelined publisher that retries without storing twice.

The HTTP side (paths, parameters, errors) is `api::streaming`; this module knows no HTTP
request and touches nothing of the collector beyond the batches it is handed.

```text
hub ──tap──▶ jetstream::Publisher ──▶ NATS JetStream (barkeep.<data_type>.<SYMBOL>)
```
*/

pub mod hub;
pub mod jetstream;
pub mod message;
pub mod sse;
pub mod ws;

use std::time::Duration;

/// A heartbeat (SSE comment) or ping (WebSocket) this often keeps idle connections open.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// How long a client dropped as a slow consumer has to take its final error before its
/// connection is closed under it.
pub const KICK_GRACE: Duration = Duration::from_secs(5);

/// The final error of a client dropped as a slow consumer, as JSON.
pub const SLOW_CONSUMER: &str = r#"{"type":"error","reason":"slow_consumer","message":"the client did not keep up: its queue of messages was full; reconnect and resume from the last id"}"#;
