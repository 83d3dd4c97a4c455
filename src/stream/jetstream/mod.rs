/*!
NATS JetStream: every message the streaming hub produces, published to
`{NATS_SUBJECT_PREFIX}.{data_type}.{SYMBOL}` in a stream (`NATS_STREAM`) created or updated at
start with the configured limits, each with a message id so a retried publish is stored once.

```text
hub ──[Arc<Frame>, each batch at once]──▶ tap (bounded, never waits) ──▶ publisher task
                                                                         ├─ snapshot JSON, subject, Nats-Msg-Id
                                                                         ├─ up to MAX_IN_FLIGHT publishes awaiting acks
                                                                         └─ failed or lost acks sent again, same id
```

- [`tap`] — the queue between the hub and the publisher, and what it drops when full.
- [`ids`] — subjects and message ids.

The publisher never holds up the hub: it takes what the tap queued, publishes it without
waiting for each ack (pipelined, acks awaited together), and while NATS is away it waits with
the messages queued (up to `NATS_QUEUE`), then publishes them when the connection is back. A
publish whose ack does not come (a dropped connection, a restarting server) is sent again with
the same id: JetStream acknowledges it as a duplicate if it had stored it. Messages are
published whole (`update_type: snapshot`, also where the hub sent SSE and WebSocket clients a
delta), so a consumer may start at any sequence.
*/

mod ids;
mod tap;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use async_nats::connection::State;
use async_nats::jetstream::context::{Context, ContextBuilder, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream;
use async_nats::{Client, ConnectOptions, Event, Subject};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use ids::{DATA_TYPES, message_id, symbol_token};
pub use tap::Tap;

use super::hub::Hub;
use super::message::Frame;
use crate::config::NatsConfig;
use crate::metrics::Metrics;

/// Publishes awaiting their ack at most.
pub const MAX_IN_FLIGHT: usize = 4_096;

/// How long an ack (and a stream request) may take before the publish counts as lost.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors other than a lost connection after which a message is given up.
const MAX_ATTEMPTS: u32 = 5;

/// Messages taken from the tap at once.
const TAKE: usize = 512;

/// Where the publisher stands, for `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatsState {
    /// Not connected yet since start.
    Connecting,
    /// Connected, the stream ready.
    Up,
    /// Connection lost, or the stream cannot be created: messages wait in the queue.
    Down,
}

impl NatsState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Up => "up",
            Self::Down => "down",
        }
    }
}

/// The publisher's state as `/health` shows it.
pub struct NatsStatus {
    state: AtomicU8,
    reason: Mutex<Option<String>>,
    last_ack: Mutex<Option<Instant>>,
    /// The stream's name.
    pub stream: String,
    /// Woken when the client (re)connects.
    wake: Notify,
}

impl NatsStatus {
    pub fn new(stream: &str) -> Arc<Self> {
        Arc::new(Self {
            state: AtomicU8::new(0),
            reason: Mutex::new(None),
            last_ack: Mutex::new(None),
            stream: stream.to_string(),
            wake: Notify::new(),
        })
    }

    pub fn state(&self) -> NatsState {
        match self.state.load(Ordering::Relaxed) {
            1 => NatsState::Up,
            2 => NatsState::Down,
            _ => NatsState::Connecting,
        }
    }

    pub fn reason(&self) -> Option<String> {
        self.reason.lock().clone()
    }

    /// Milliseconds since the last ack, `None` before the first.
    pub fn last_ack_age_ms(&self) -> Option<u64> {
        self.last_ack.lock().map(|t| t.elapsed().as_millis() as u64)
    }

    fn set(&self, state: NatsState, reason: Option<String>, metrics: &Metrics) {
        self.state.store(
            match state {
                NatsState::Connecting => 0,
                NatsState::Up => 1,
                NatsState::Down => 2,
            },
            Ordering::Relaxed,
        );
        metrics
            .nats_connected
            .set(i64::from(state == NatsState::Up));
        *self.reason.lock() = reason;
    }
}

/// One message on its way: what is sent (again, on a retry) and how often it failed.
struct Pending {
    /// The hub's order: retries go out in it.
    order: u64,
    subject: Subject,
    id: String,
    payload: bytes::Bytes,
    attempts: u32,
    sent: Instant,
}

/// What an ack said.
enum Acked {
    Stored,
    Duplicate,
    /// Not stored: send again (the connection, the server or the stream is away).
    Lost(String, PublishErrorKind),
}

/// See the module documentation.
pub struct Publisher {
    config: NatsConfig,
    hub: Arc<Hub>,
    tap: Arc<Tap>,
    status: Arc<NatsStatus>,
    metrics: Arc<Metrics>,
    /// How long to keep publishing after the hub stopped.
    drain: Duration,
}

impl Publisher {
    /// A publisher of what `hub` produces, through a tap it installs on the hub.
    pub fn new(
        config: NatsConfig,
        hub: &Arc<Hub>,
        status: Arc<NatsStatus>,
        metrics: Arc<Metrics>,
        drain: Duration,
    ) -> Self {
        let tap = Tap::new(config.queue, Arc::clone(&metrics));
        hub.set_tap(Arc::clone(&tap));
        Self {
            config,
            hub: Arc::clone(hub),
            tap,
            status,
            metrics,
            drain,
        }
    }

    fn stream_config(&self) -> stream::Config {
        let c = &self.config;
        let limit = |v: Option<u64>| v.map_or(-1, |n| n.min(i64::MAX as u64) as i64);
        stream::Config {
            name: c.stream.clone(),
            subjects: vec![format!("{}.>", c.subject_prefix)],
            max_age: c.max_age_ms.map_or(Duration::ZERO, Duration::from_millis),
            max_messages: limit(c.max_messages),
            max_bytes: limit(c.max_bytes),
            duplicate_window: Duration::from_millis(c.duplicate_window_ms),
            num_replicas: c.replicas,
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::Old,
            ..Default::default()
        }
    }

    fn connect_options(&self) -> ConnectOptions {
        let status = Arc::clone(&self.status);
        ConnectOptions::new()
            .name("barkeep")
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis(50u64.saturating_mul(1 << attempts.min(6)))
                    .min(Duration::from_secs(2))
            })
            .event_callback(move |event| {
                let status = Arc::clone(&status);
                async move {
                    if matches!(event, Event::Connected | Event::Disconnected) {
                        status.wake.notify_one();
                    }
                }
            })
    }

    /// Publishes until the hub has stopped and everything queued is acknowledged, or `drain`
    /// after `shutdown` at most.
    pub async fn run(self, shutdown: CancellationToken) {
        let servers = self.config.servers.join(",");
        let shown = crate::env::redact_url(&servers);
        let client = match self
            .connect_options()
            .connect(self.config.servers.as_slice())
            .await
        {
            Ok(client) => client,
            Err(e) => {
                // Only a malformed address fails here (the configuration refused those).
                self.status.set(
                    NatsState::Down,
                    Some(format!("cannot connect: {e}")),
                    &self.metrics,
                );
                tracing::error!(servers = %shown, error = %e, "NATS: cannot connect; nothing is published");
                return;
            }
        };
        let js = ContextBuilder::new()
            .timeout(ACK_TIMEOUT)
            .max_ack_inflight(MAX_IN_FLIGHT * 2)
            .backpressure_on_inflight(true)
            .build(client.clone());
        let mut run = Run {
            publisher: &self,
            client,
            js,
            subjects: ids::Subjects::new(
                &self.config.subject_prefix,
                self.hub.names().symbols.len(),
            ),
            ready: false,
            backoff: Duration::from_millis(100),
            started: Instant::now(),
            in_flight: FuturesUnordered::new(),
            retry: BTreeMap::new(),
            fresh: VecDeque::new(),
            shown,
        };
        run.go(&shutdown).await;
    }
}

type AckFuture = std::pin::Pin<Box<dyn std::future::Future<Output = (Pending, Acked)> + Send>>;

/// The publisher's working state.
struct Run<'a> {
    publisher: &'a Publisher,
    client: Client,
    js: Context,
    subjects: ids::Subjects,
    /// The stream exists with our configuration.
    ready: bool,
    /// Wait before asking for the stream again.
    backoff: Duration,
    started: Instant,
    in_flight: FuturesUnordered<AckFuture>,
    /// Messages to send again, by the hub's order.
    retry: BTreeMap<u64, Pending>,
    /// Taken from the tap, not sent yet.
    fresh: VecDeque<Arc<Frame>>,
    /// The servers, passwords hidden.
    shown: String,
}

impl Run<'_> {
    async fn go(&mut self, shutdown: &CancellationToken) {
        let p = self.publisher;
        let mut drain_until: Option<tokio::time::Instant> = None;
        loop {
            if drain_until.is_none() && shutdown.is_cancelled() {
                drain_until = Some(tokio::time::Instant::now() + p.drain);
            }
            let waiting = p.tap.len() + self.fresh.len() + self.retry.len();
            if p.tap.is_closed() && waiting == 0 && self.in_flight.is_empty() {
                break;
            }
            if drain_until.is_some_and(|d| tokio::time::Instant::now() >= d) {
                tracing::warn!(
                    unpublished = waiting + self.in_flight.len(),
                    "NATS: messages not published before shutdown are lost (NATS was slow or away)"
                );
                break;
            }
            let connected = self.client.connection_state() == State::Connected;
            if !connected {
                self.mark_down();
            } else if !self.ready {
                self.ensure_stream().await;
            }
            let sendable = connected && self.ready;
            if sendable {
                self.fill().await;
            }
            p.metrics.nats_in_flight.set(self.in_flight.len() as i64);
            let room = self.in_flight.len() < MAX_IN_FLIGHT;
            // Disconnected: look again soon (the client reconnects by itself); the stream
            // refused: again after a backoff; else a wake-up now and then.
            let pause = match (connected, self.ready) {
                (false, _) => Duration::from_millis(250),
                (true, false) => self.backoff,
                (true, true) => Duration::from_secs(1),
            };
            tokio::select! {
                Some((pending, acked)) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.acked(pending, acked);
                }
                () = p.tap.offered(), if room && sendable && self.retry.is_empty() => {}
                () = p.status.wake.notified() => {}
                () = shutdown.cancelled(), if drain_until.is_none() => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
        p.metrics.nats_in_flight.set(0);
        p.status
            .set(NatsState::Down, Some("stopped".into()), &p.metrics);
        let _ = tokio::time::timeout(Duration::from_secs(1), self.client.flush()).await;
    }

    /// Creates the stream or brings it to the configured limits.
    async fn ensure_stream(&mut self) {
        let p = self.publisher;
        match self.js.create_or_update_stream(p.stream_config()).await {
            Ok(info) => {
                self.ready = true;
                self.backoff = Duration::from_millis(100);
                p.status.set(NatsState::Up, None, &p.metrics);
                tracing::info!(
                    servers = %self.shown,
                    stream = %info.config.name,
                    subjects = ?info.config.subjects,
                    messages = info.state.messages,
                    "NATS JetStream stream ready; publishing"
                );
            }
            Err(e) => {
                let reason = format!("stream {}: {e}", p.config.stream);
                if p.status.reason().as_deref() != Some(reason.as_str()) {
                    tracing::warn!(error = %e, stream = %p.config.stream, "NATS: cannot create or update the stream; retrying");
                }
                p.status.set(NatsState::Down, Some(reason), &p.metrics);
                self.backoff = (self.backoff * 2).min(Duration::from_secs(5));
            }
        }
    }

    fn mark_down(&mut self) {
        let p = self.publisher;
        match p.status.state() {
            NatsState::Up => {
                tracing::warn!(
                    servers = %self.shown,
                    queued = p.tap.len(),
                    "NATS connection lost; messages wait in the queue (NATS_QUEUE) and are published when it is back"
                );
                p.status.set(
                    NatsState::Down,
                    Some("connection lost; reconnecting".into()),
                    &p.metrics,
                );
            }
            NatsState::Connecting if self.started.elapsed() > Duration::from_secs(5) => {
                tracing::warn!(
                    servers = %self.shown,
                    "NATS: no connection yet; retrying, messages wait in the queue (NATS_QUEUE)"
                );
                p.status.set(
                    NatsState::Down,
                    Some("no connection yet; retrying".into()),
                    &p.metrics,
                );
            }
            _ => {}
        }
        // A reconnect may find a server that lost the stream: make sure again.
        self.ready = false;
    }

    /// Sends retries first, then fresh messages, while the window has room.
    async fn fill(&mut self) {
        let p = self.publisher;
        while self.in_flight.len() < MAX_IN_FLIGHT {
            let pending = if let Some((_, pending)) = self.retry.pop_first() {
                p.metrics.nats_retried.inc();
                pending
            } else {
                if self.fresh.is_empty() {
                    p.tap.take(TAKE, &mut self.fresh);
                }
                let Some(frame) = self.fresh.pop_front() else {
                    break;
                };
                p.metrics.nats_published.inc();
                self.pending(&frame)
            };
            let message = PublishMessage::build()
                .payload(pending.payload.clone())
                .message_id(&pending.id);
            match self.js.send_publish(pending.subject.clone(), message).await {
                Ok(ack) => {
                    let fut = async move {
                        let acked = match ack.await {
                            Ok(a) if a.duplicate => Acked::Duplicate,
                            Ok(_) => Acked::Stored,
                            Err(e) => Acked::Lost(e.to_string(), e.kind()),
                        };
                        (pending, acked)
                    };
                    self.in_flight.push(Box::pin(fut));
                }
                Err(e) => {
                    let kind = e.kind();
                    self.acked(pending, Acked::Lost(e.to_string(), kind));
                    break;
                }
            }
        }
    }

    fn pending(&mut self, frame: &Frame) -> Pending {
        let p = self.publisher;
        let names = p.hub.names();
        let (symbol, _) = Hub::channel_parts(frame.channel);
        Pending {
            order: frame.order,
            subject: self.subjects.get(names, symbol, frame.data_type),
            id: ids::message_id(names, symbol, frame),
            payload: p.hub.snapshot_json(frame),
            attempts: 0,
            sent: Instant::now(),
        }
    }

    fn acked(&mut self, mut pending: Pending, acked: Acked) {
        let p = self.publisher;
        match acked {
            Acked::Stored | Acked::Duplicate => {
                p.metrics.nats_acked.inc();
                if matches!(acked, Acked::Duplicate) {
                    p.metrics.nats_duplicates.inc();
                }
                p.metrics.nats_ack_latency.record(pending.sent.elapsed());
                *p.status.last_ack.lock() = Some(Instant::now());
            }
            Acked::Lost(error, kind) => {
                // A connection lost, a server restarting, a stream gone: not the message's fault.
                let transient = matches!(
                    kind,
                    PublishErrorKind::TimedOut
                        | PublishErrorKind::BrokenPipe
                        | PublishErrorKind::StreamNotFound
                        | PublishErrorKind::MaxAckPending
                );
                if kind == PublishErrorKind::StreamNotFound {
                    self.ready = false;
                }
                if !transient {
                    pending.attempts += 1;
                }
                if pending.attempts >= MAX_ATTEMPTS || kind == PublishErrorKind::MaxPayloadExceeded
                {
                    p.metrics.nats_failed.inc();
                    tracing::warn!(id = %pending.id, error = %error, "NATS: message given up after repeated errors");
                    return;
                }
                tracing::debug!(id = %pending.id, error = %error, "NATS publish not acknowledged; sending again");
                pending.sent = Instant::now();
                self.retry.insert(pending.order, pending);
            }
        }
    }
}
