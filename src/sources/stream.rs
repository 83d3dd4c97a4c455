/*!
Push streams: [`run_stream`], the one reconnect loop behind every WebSocket source. It connects,
lets the provider's [`Session`] subscribe, reads with a silence timeout, reconnects with
exponential backoff and jitter, reports `Reconnected { since_ms }` and stops on the shutdown
token. The provider's protocol lives in its `Session`; this loop knows none by name.

What is subscribed follows the shared symbol table
([`SymbolTable::changes`](crate::model::SymbolTable::changes), the one
notification of instruments added or deleted at run time): a session keeps its [`Subscriptions`]
(the active symbols its provider spells), and when the table changes the loop asks the session
for the frames that subscribe what was added and unsubscribe what was removed, and sends them
on the open connection, changes close together in one round (at most one round per
[`FOLLOW_PACE`], so a burst of additions stays within the providers' message limits). A new
connection (a reconnect) subscribes the set as it is then. While nothing is to be subscribed,
no connection is opened or kept.
*/

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::StreamEvent;
use super::http::{error_chain, scrub, wall_ms};
use super::settings::{ApiKey, StreamSettings};
use super::symbols::SymbolBook;
use crate::model::SymbolId;

/// One WebSocket connection's worth of a provider's protocol. A fresh session is made for every
/// connection, so per-connection state (authenticated yet? last kline volume) starts clean.
pub trait Session: Send {
    /// Brings the session's [`Subscriptions`] up to the shared table and returns the frames
    /// that tell the provider. On a fresh session (before its connection opens): the
    /// connection's first frames (subscribe, or auth; nothing when the server speaks first).
    /// After a change of the table: the frames that subscribe what was added and unsubscribe
    /// what was removed, sent at once on the open connection.
    fn follow(&mut self) -> Vec<String>;

    /// Nothing to subscribe: no connection is opened (or kept) until the table changes.
    fn is_idle(&self) -> bool;

    /// Handles one text frame: data goes to `events`, answers (e.g. subscribe after auth) to
    /// `replies`.
    ///
    /// # Errors
    /// A condition that makes this connection useless (auth refused): the loop reconnects after
    /// a backoff. A frame that merely fails to parse is logged by the session, not an error.
    fn on_text(
        &mut self,
        text: &str,
        events: &mut Vec<StreamEvent>,
        replies: &mut Vec<String>,
    ) -> Result<(), String>;
}

/// What one connection is subscribed to: the active symbols of the shared table that the
/// provider spells (and its stream takes: `keep`), by provider symbol. Several generic symbols
/// may share one provider symbol; it is subscribed while any of them is active.
pub struct Subscriptions {
    book: Arc<SymbolBook>,
    keep: fn(&str) -> bool,
    /// The ids subscribed, in id order: answers are taken for these only.
    ids: Vec<SymbolId>,
    /// The provider symbols subscribed.
    subscribed: BTreeSet<Arc<str>>,
}

/// What [`Subscriptions::follow`] changed, in provider symbols (sorted).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changed {
    pub added: Vec<Arc<str>>,
    pub removed: Vec<Arc<str>>,
}

impl Subscriptions {
    /// Nothing subscribed yet: the first [`Subscriptions::follow`] adds the table's symbols.
    pub fn new(book: Arc<SymbolBook>, keep: fn(&str) -> bool) -> Self {
        Self {
            book,
            keep,
            ids: Vec::new(),
            subscribed: BTreeSet::new(),
        }
    }

    /// Takes the table's active symbols as they are now; returns what that changed.
    pub fn follow(&mut self) -> Changed {
        let book = Arc::clone(&self.book);
        let mut ids = Vec::new();
        let mut now = BTreeSet::new();
        for (id, _) in book.symbols().active() {
            if let Some(p) = book.provider_symbol(id).filter(|p| (self.keep)(p)) {
                ids.push(id);
                if !now.contains(p) {
                    now.insert(Arc::<str>::from(p));
                }
            }
        }
        let changed = Changed {
            added: now.difference(&self.subscribed).cloned().collect(),
            removed: self.subscribed.difference(&now).cloned().collect(),
        };
        self.ids = ids;
        self.subscribed = now;
        changed
    }

    /// The ids subscribed, for [`SymbolBook::wanted_ids`].
    pub fn ids(&self) -> &[SymbolId] {
        &self.ids
    }

    /// The provider symbols subscribed, sorted.
    pub fn subscribed(&self) -> impl Iterator<Item = &Arc<str>> {
        self.subscribed.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.subscribed.is_empty()
    }
}

/// Where and how to connect. No `Debug`: the URL may carry the key.
#[derive(Clone)]
pub struct StreamPlan {
    pub source_name: &'static str,
    /// May carry the key (Finnhub `?token=`): never logged.
    pub url: String,
    pub key: Option<ApiKey>,
    pub timing: StreamSettings,
    /// The shared table's change notification: subscriptions follow it.
    pub changes: watch::Receiver<u64>,
}

/// The least time between two rounds of subscription changes on one connection: a burst of
/// instruments added over the API goes out as a few requests, not one each. Binance disconnects
/// a connection that sends more than 5 messages a second; a round is at most two (unsubscribe,
/// subscribe), so this keeps to 4.
const FOLLOW_PACE: Duration = Duration::from_millis(500);

/// Why one connection ended.
enum Ended {
    /// Shutdown, or nobody listens any more: the stream is over.
    Stop,
    /// Nothing is subscribed any more: closed until the table changes.
    Idle,
    /// The connection is gone; `delivered` says whether it carried any data (only then does
    /// the backoff start over, so a server that accepts and then refuses us is not hammered).
    Lost { reason: String, delivered: bool },
}

/// Runs a push stream until `shutdown` (or until `out` is closed): connects, subscribes via the
/// session, forwards events, and reconnects with exponential backoff and jitter whenever the
/// connection drops, errs or stays silent for `timing.silence_timeout_ms`. After every
/// reconnect it sends `Reconnected { since_ms }` with the wall time of the last frame received
/// before the outage, so the collector can backfill the gap. Subscriptions follow the shared
/// table (`plan.changes`) on the open connection; with nothing to subscribe it holds none.
pub async fn run_stream<S: Session>(
    plan: StreamPlan,
    mut new_session: impl FnMut() -> S + Send,
    out: mpsc::Sender<StreamEvent>,
    shutdown: CancellationToken,
) {
    let source_name = plan.source_name;
    let silence = Duration::from_millis(plan.timing.silence_timeout_ms);
    let seed = u64::try_from(wall_ms()).unwrap_or_default() ^ (source_name.len() as u64) << 32;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut attempt: u32 = 0;
    // Wall time of the last frame received on any connection so far (None before the first).
    let mut last_alive_ms: Option<i64> = None;
    let mut changes = plan.changes.clone();
    loop {
        if shutdown.is_cancelled() || out.is_closed() {
            return;
        }
        // Changes from here on are followed on the connection; this session starts from now.
        changes.mark_unchanged();
        let mut session = new_session();
        let first = session.follow();
        if session.is_idle() {
            tracing::debug!(
                source = source_name,
                "nothing to subscribe; no stream connection until an instrument is added"
            );
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = changes.changed() => if changed.is_err() { return },
            }
            continue;
        }
        let connect =
            tokio::time::timeout(silence, tokio_tungstenite::connect_async(plan.url.as_str()));
        let connected = tokio::select! {
            () = shutdown.cancelled() => return,
            r = connect => r,
        };
        match connected {
            Ok(Ok((ws, _response))) => {
                let reconnect_since = last_alive_ms;
                if last_alive_ms.is_none() {
                    last_alive_ms = Some(wall_ms());
                }
                let ended = pump(
                    ws,
                    session,
                    first,
                    &mut changes,
                    reconnect_since,
                    &mut last_alive_ms,
                    silence,
                    &out,
                    &shutdown,
                )
                .await;
                match ended {
                    Ended::Stop => return,
                    // Closed on purpose: the next connection is no reconnect after an outage.
                    Ended::Idle => {
                        last_alive_ms = None;
                        continue;
                    }
                    Ended::Lost { reason, delivered } => {
                        if delivered {
                            attempt = 0;
                        }
                        tracing::warn!(source = source_name, reason = %scrub(&reason, plan.key.as_ref()), "stream lost; reconnecting");
                    }
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(source = source_name, error = %scrub(&error_chain(&e), plan.key.as_ref()), "stream connect failed");
            }
            Err(_) => tracing::warn!(source = source_name, "stream connect timed out"),
        }
        let delay = backoff(attempt, &plan.timing, &mut rng);
        attempt = attempt.saturating_add(1);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// `min · 2^attempt`, capped at `max`, then a uniformly random share between half and all of it
/// (jitter keeps many sidecars from reconnecting in lockstep).
fn backoff(attempt: u32, timing: &StreamSettings, rng: &mut impl Rng) -> Duration {
    let exp = timing
        .reconnect_min_ms
        .saturating_mul(1_u64 << attempt.min(20))
        .min(timing.reconnect_max_ms)
        .max(1);
    Duration::from_millis(rng.random_range(exp.div_ceil(2)..=exp))
}

/// Drives one connection until it ends: `first` are the session's opening frames; a change of
/// the table sends the session's subscribe and unsubscribe frames.
#[allow(
    clippy::too_many_arguments,
    reason = "one connection's whole state, called once"
)]
async fn pump<S: Session>(
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    mut session: S,
    first: Vec<String>,
    changes: &mut watch::Receiver<u64>,
    reconnect_since: Option<i64>,
    last_alive_ms: &mut Option<i64>,
    silence: Duration,
    out: &mpsc::Sender<StreamEvent>,
    shutdown: &CancellationToken,
) -> Ended {
    let (mut sink, mut stream) = ws.split();
    let mut delivered = false;
    let lost = |reason: String, delivered: bool| Ended::Lost { reason, delivered };
    for frame in first {
        if let Err(e) = sink.send(Message::text(frame)).await {
            return lost(format!("subscribe failed: {e}"), false);
        }
    }
    if let Some(since_ms) = reconnect_since
        && !deliver(out, StreamEvent::Reconnected { since_ms }, shutdown).await
    {
        return Ended::Stop;
    }
    let mut events = Vec::new();
    let mut replies = Vec::new();
    let mut following = true;
    // A change seen and not yet followed, and the earliest it may be ([`FOLLOW_PACE`]).
    let mut pending = false;
    let mut follow_at = tokio::time::Instant::now();
    // Silence is counted from the last frame received, whatever else happens meanwhile.
    let mut silent_from = tokio::time::Instant::now();
    loop {
        let next = tokio::select! {
            () = shutdown.cancelled() => {
                // Best effort: say goodbye, but never let a dead peer delay shutdown.
                let _ = tokio::time::timeout(Duration::from_millis(250), sink.send(Message::Close(None))).await;
                return Ended::Stop;
            }
            changed = changes.changed(), if following && !pending => {
                match changed {
                    Ok(()) => pending = true,
                    // The table is gone: nothing will change any more.
                    Err(_) => following = false,
                }
                continue;
            }
            () = tokio::time::sleep_until(follow_at), if pending => {
                pending = false;
                // Changes close together are followed together (the table is read as it is).
                changes.mark_unchanged();
                follow_at = tokio::time::Instant::now() + FOLLOW_PACE;
                for frame in session.follow() {
                    if let Err(e) = sink.send(Message::text(frame)).await {
                        return lost(format!("send failed: {e}"), delivered);
                    }
                }
                if session.is_idle() {
                    let _ = tokio::time::timeout(Duration::from_millis(250), sink.send(Message::Close(None))).await;
                    return Ended::Idle;
                }
                continue;
            }
            next = tokio::time::timeout_at(silent_from + silence, stream.next()) => next,
        };
        let message = match next {
            Err(_) => return lost(format!("no frame for {silence:?}"), delivered),
            Ok(None) => return lost("connection closed".into(), delivered),
            Ok(Some(Err(e))) => return lost(e.to_string(), delivered),
            Ok(Some(Ok(message))) => message,
        };
        *last_alive_ms = Some(wall_ms());
        silent_from = tokio::time::Instant::now();
        let text = match &message {
            Message::Text(t) => t.as_str(),
            Message::Binary(b) => match std::str::from_utf8(b) {
                Ok(t) => t,
                Err(_) => continue,
            },
            Message::Close(frame) => {
                return lost(
                    format!(
                        "closed by the server{}",
                        frame
                            .as_ref()
                            .map(|f| format!(": {} {}", f.code, f.reason))
                            .unwrap_or_default()
                    ),
                    delivered,
                );
            }
            // Pings are answered by tungstenite itself on the next read.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        };
        let verdict = session.on_text(text, &mut events, &mut replies);
        for event in events.drain(..) {
            if !deliver(out, event, shutdown).await {
                return Ended::Stop;
            }
            delivered = true;
        }
        for reply in replies.drain(..) {
            if let Err(e) = sink.send(Message::text(reply)).await {
                return lost(format!("send failed: {e}"), delivered);
            }
        }
        if let Err(reason) = verdict {
            let _ =
                tokio::time::timeout(Duration::from_millis(250), sink.send(Message::Close(None)))
                    .await;
            return lost(reason, delivered);
        }
    }
}

/// Sends an event unless shutdown comes first or the receiver is gone; false = stop.
async fn deliver(
    out: &mpsc::Sender<StreamEvent>,
    event: StreamEvent,
    shutdown: &CancellationToken,
) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        sent = out.send(event) => sent.is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let timing = StreamSettings {
            silence_timeout_ms: 1_000,
            reconnect_min_ms: 100,
            reconnect_max_ms: 1_000,
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for attempt in 0..40 {
            let d = backoff(attempt, &timing, &mut rng).as_millis() as u64;
            let cap = (100_u64 << attempt.min(20)).min(1_000);
            assert!(d >= cap / 2 && d <= cap, "attempt {attempt}: {d}");
        }
    }
}
