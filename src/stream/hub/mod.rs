/*!
The hub: fed the collector's batches like any sink, it turns their events into messages (off
the tick, on its own task), numbers them per channel, keeps per channel the latest message of
each kind and a bounded replay buffer (`STREAM_REPLAY`), and fans every message out to the
channel's subscribers, each through a bounded queue (`STREAM_CLIENT_QUEUE`).

A subscriber whose queue is full is dropped at once as a slow consumer (counted): the hub never
waits for a client, so neither the collector nor the other clients notice it.

A tap ([`Hub::set_tap`], the JetStream publisher's queue) gets every message the hub produced,
each batch's at once, without waiting either; continuity messages, which go to both channels of a
symbol, reach it once (the market-data channel's copy).

Positions: every message has its channel's `seq` and a hub-wide `order` (the order the hub
produced them in). A subscription starts [`Start::Fresh`] (each kind's newest message as a
snapshot, in hub order: the channel's state), after one event (everything the hub produced
after it, on every channel subscribed: what a browser's `Last-Event-ID` names), or after a
`seq` per channel. A replay starts every kind with a snapshot, so a client never needs a delta's
base it may not have; a position no longer in the buffer (or never produced, e.g. before a
restart) gets a `replay_gap` message, then the channel's state.
*/

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};

use super::jetstream::Tap;
use super::message::{Body, ChannelKind, Envelope, Frame, Key, Names, message_json, render};
use crate::metrics::Metrics;
use crate::model::{SymbolId, TickBatch};

/// A kind that keeps forming (a bar, its features, the signal) is sent whole at least every
/// this many messages, so a client that lost a delta is corrected soon.
const SNAPSHOT_EVERY: u32 = 60;

/// The hub's limits.
#[derive(Debug, Clone, Copy)]
pub struct StreamSettings {
    /// Messages kept per channel for resumes (`STREAM_REPLAY`).
    pub replay: usize,
    /// Messages a client may have waiting (`STREAM_CLIENT_QUEUE`).
    pub client_queue: usize,
    /// `STALE_AFTER`, for the signal's confidence.
    pub stale_after_ms: i64,
}

/// Where a subscription starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    Fresh,
    /// After this event (channel, seq), on every channel.
    After {
        channel: u32,
        seq: u64,
    },
    /// After these seqs; channels not named start fresh.
    Seqs(Vec<(u32, u64)>),
}

/// What a transport learns about its subscription besides messages.
#[derive(Default)]
pub struct SubFlags {
    kicked: AtomicBool,
    /// Woken when kicked.
    pub notify: Notify,
}

impl SubFlags {
    /// Dropped as a slow consumer.
    pub fn kicked(&self) -> bool {
        self.kicked.load(Ordering::Acquire)
    }
}

/// A channel as listed by `/streaming/channels`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChannelInfo {
    pub channel: String,
    pub symbol: String,
    pub kind: &'static str,
    pub seq: u64,
    pub subscribers: usize,
    pub buffered: usize,
    pub oldest_seq: Option<u64>,
}

/// The hub's side of one subscriber.
struct Link {
    id: u64,
    tx: mpsc::Sender<Arc<Frame>>,
    flags: Arc<SubFlags>,
    on_kick: Option<Box<dyn Fn() + Send + Sync>>,
    data_types: Option<Vec<String>>,
}

impl Link {
    fn wants(&self, frame: &Frame) -> bool {
        !frame.is_data
            || self
                .data_types
                .as_ref()
                .is_none_or(|t| t.iter().any(|t| t == frame.data_type))
    }
}

struct Channel {
    name: Arc<str>,
    symbol: SymbolId,
    kind: ChannelKind,
    seq: u64,
    /// The newest message of each kind, and deltas since its last snapshot.
    keys: Vec<(Arc<Frame>, u32)>,
    replay: VecDeque<Arc<Frame>>,
    /// `order` of the newest message evicted from `replay` (0: none yet).
    evicted_order: u64,
    subs: Vec<Arc<Link>>,
}

#[derive(Default)]
struct State {
    channels: Vec<Channel>,
    /// Subscriber id → the channels it is on.
    subs: HashMap<u64, (Arc<Link>, Vec<u32>)>,
    next_sub: u64,
    order: u64,
    /// Each symbol's market is open (signals say `market_closed` otherwise).
    open: Vec<bool>,
    /// This batch's messages for the tap (reused, handed over at the end of each batch).
    tapped: Vec<Arc<Frame>>,
}

/// Why a selection of channels did not resolve.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(
        "unknown channel `{0}`; channels are stream:market_data:{{SYMBOL}} and stream:analytics:{{SYMBOL}} (or market_data, analytics with symbols)"
    )]
    UnknownChannel(String),
    #[error("unknown symbol `{0}`; configured: {1}")]
    UnknownSymbol(String, String),
    #[error("no channel selected: name channels, symbols or both")]
    Nothing,
}

/// See the module documentation.
pub struct Hub {
    /// Shared with every message, which renders itself from them when first used.
    names: Arc<Names>,
    settings: StreamSettings,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    closed: AtomicBool,
    tap: OnceLock<Arc<Tap>>,
}

impl Hub {
    /// A hub with the two channels of every symbol of the table; a symbol added at run time
    /// gets its two the first time the hub is used after it was added ([`Hub::lock`]).
    pub fn new(names: Names, settings: StreamSettings, metrics: Arc<Metrics>) -> Arc<Self> {
        let hub = Self {
            names: Arc::new(names),
            settings,
            metrics,
            state: Mutex::new(State::default()),
            closed: AtomicBool::new(false),
            tap: OnceLock::new(),
        };
        drop(hub.lock());
        Arc::new(hub)
    }

    /// Every message produced from now on also goes to `tap` (once; a second tap is ignored).
    pub fn set_tap(&self, tap: Arc<Tap>) {
        let _ = self.tap.set(tap);
    }

    /// The channel named `name` (`stream:{kind}:{SYMBOL}`, the symbol in any case), of an
    /// active symbol.
    pub fn channel(&self, name: &str) -> Option<u32> {
        let (kind, symbol) = name.strip_prefix("stream:")?.split_once(':')?;
        let id = self.names.symbols.id(symbol)?;
        let c = self.channel_of(ChannelKind::parse(kind)?, id);
        let st = self.lock();
        st.channels
            .get(c as usize)
            .is_some_and(|ch| *ch.name == *name)
            .then_some(c)
    }

    /// The channel of `kind` for `symbol`.
    pub fn channel_of(&self, kind: ChannelKind, symbol: SymbolId) -> u32 {
        symbol * 2 + kind as u32
    }

    /// The symbol and kind of channel `c` (the inverse of [`Self::channel_of`]).
    pub fn channel_parts(c: u32) -> (SymbolId, ChannelKind) {
        let kind = if c.is_multiple_of(2) {
            ChannelKind::MarketData
        } else {
            ChannelKind::Analytics
        };
        (c / 2, kind)
    }

    /// `frame` whole, as JSON: its own when it is a snapshot, rendered again from the state it
    /// leaves its key in when it is a delta. Takes no lock.
    pub fn snapshot_json(&self, frame: &Frame) -> bytes::Bytes {
        if !frame.delta {
            return frame.json().clone();
        }
        let (symbol, kind) = Self::channel_parts(frame.channel);
        let env = Envelope {
            channel: frame.channel_name(),
            symbol: self.names.symbols.name(symbol),
            kind,
            timestamp: frame.timestamp,
            vendor: frame.vendor,
            seq: frame.seq,
        };
        bytes::Bytes::from(message_json(&self.names, &env, &frame.body, None))
    }

    pub fn names(&self) -> &Names {
        &self.names
    }

    /// The channels a selection names: each entry of `channels` is a channel's name or a kind
    /// (`market_data`, `analytics`) taken for every one of `symbols` (every symbol when none
    /// is given); `symbols` alone selects both kinds. In order, without repeats.
    ///
    /// # Errors
    /// An unknown channel or symbol, or an empty selection.
    pub fn resolve<S: AsRef<str>>(
        &self,
        channels: &[S],
        symbols: &[S],
    ) -> Result<Vec<u32>, ResolveError> {
        let table = &self.names.symbols;
        let symbol = |name: &str| {
            table.id(name).ok_or_else(|| {
                let known: Vec<&str> = table.active().map(|(_, n)| &**n).collect();
                ResolveError::UnknownSymbol(name.to_string(), known.join(", "))
            })
        };
        let ids: Vec<SymbolId> = if symbols.is_empty() {
            table.active().map(|(id, _)| id).collect()
        } else {
            symbols
                .iter()
                .map(|s| symbol(s.as_ref()))
                .collect::<Result<_, _>>()?
        };
        let mut kinds = Vec::new();
        let mut out = Vec::new();
        for entry in channels {
            let entry = entry.as_ref();
            if let Some(kind) = ChannelKind::parse(entry) {
                kinds.push(kind);
                continue;
            }
            let named = entry
                .strip_prefix("stream:")
                .and_then(|rest| rest.split_once(':'))
                .and_then(|(kind, sym)| Some((ChannelKind::parse(kind)?, sym)));
            let Some((kind, sym)) = named else {
                return Err(ResolveError::UnknownChannel(entry.to_string()));
            };
            let id = table
                .id(sym)
                .ok_or_else(|| ResolveError::UnknownChannel(entry.to_string()))?;
            out.push(self.channel_of(kind, id));
        }
        if channels.is_empty() && !symbols.is_empty() {
            kinds.extend(ChannelKind::ALL);
        }
        for kind in kinds {
            for &id in &ids {
                out.push(self.channel_of(kind, id));
            }
        }
        let mut seen = Vec::with_capacity(out.len());
        out.retain(|c| {
            let new = !seen.contains(c);
            seen.push(*c);
            new
        });
        if out.is_empty() {
            return Err(ResolveError::Nothing);
        }
        Ok(out)
    }

    /// A channel's name.
    pub fn channel_name(&self, c: u32) -> Option<Arc<str>> {
        let st = self.lock();
        st.channels.get(c as usize).map(|ch| Arc::clone(&ch.name))
    }

    /// Takes batches until the collector stops, then ends every subscription.
    pub async fn run(self: Arc<Self>, mut rx: mpsc::Receiver<Arc<TickBatch>>) {
        while let Some(batch) = rx.recv().await {
            self.publish(&batch);
        }
        self.close();
    }

    /// The hub stopped: every subscription ends (a transport then closes its connection).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Some(tap) = self.tap.get() {
            tap.close();
        }
        let mut st = self.lock();
        st.subs.clear();
        for ch in &mut st.channels {
            ch.subs.clear();
        }
        self.metrics.stream_subscribers.set(0);
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// A new subscription, on no channel yet; `on_kick` runs (on the hub's task) when it is
    /// dropped as a slow consumer.
    pub fn subscribe(
        self: &Arc<Self>,
        data_types: Option<Vec<String>>,
        on_kick: Option<Box<dyn Fn() + Send + Sync>>,
    ) -> Subscription {
        let (tx, rx) = mpsc::channel(self.settings.client_queue.max(1));
        let flags = Arc::new(SubFlags::default());
        let mut st = self.lock();
        let id = st.next_sub;
        st.next_sub += 1;
        let link = Arc::new(Link {
            id,
            tx,
            flags: Arc::clone(&flags),
            on_kick,
            data_types,
        });
        if !self.is_closed() {
            st.subs.insert(id, (link, Vec::new()));
        }
        self.metrics.stream_subscribers.set(st.subs.len() as i64);
        Subscription {
            hub: Arc::clone(self),
            id,
            rx,
            flags,
        }
    }

    /// Puts subscriber `id` on `channels` from `start`; returns what it must be sent before its
    /// queue (state or replay), in order.
    fn attach(&self, id: u64, channels: &[u32], start: &Start) -> Vec<Arc<Frame>> {
        let mut st = self.lock();
        let Some((link, on)) = st.subs.get(&id).map(|(l, on)| (Arc::clone(l), on.clone())) else {
            return Vec::new();
        };
        // A single event names a point in the hub's order (`None`: not in its buffer).
        let after = match start {
            Start::After { channel, seq } => Some(
                st.channels
                    .get(*channel as usize)
                    .and_then(|ch| ch.replay.iter().find(|f| f.seq == *seq))
                    .map(|f| f.order),
            ),
            _ => None,
        };
        let mut gaps = Vec::new();
        let mut out: Vec<Arc<Frame>> = Vec::new();
        for &c in channels {
            let Some(ch) = st.channels.get(c as usize) else {
                continue;
            };
            let lost = |since: Option<u64>, reason: &'static str| {
                let symbol = self.names.symbols.name(ch.symbol);
                let env = Envelope {
                    channel: &ch.name,
                    symbol,
                    kind: ch.kind,
                    timestamp: 0,
                    vendor: None,
                    seq: since.unwrap_or(0),
                };
                let body = Body::ReplayGap {
                    since,
                    oldest: ch.replay.front().map(|f| f.seq),
                    reason,
                };
                Arc::new(render(&self.names, &env, c, &ch.name, 0, body, None, false))
            };
            let replay: Option<Vec<&Arc<Frame>>> = match (start, after) {
                (Start::After { channel, seq }, Some(None)) => {
                    let ahead = st
                        .channels
                        .get(*channel as usize)
                        .is_none_or(|ev| *seq > ev.seq);
                    let reason = if ahead {
                        "unknown_position"
                    } else {
                        "out_of_buffer"
                    };
                    gaps.push(lost(None, reason));
                    None
                }
                (_, Some(Some(order))) => {
                    if ch.evicted_order > order {
                        gaps.push(lost(None, "out_of_buffer"));
                        None
                    } else {
                        Some(ch.replay.iter().filter(|f| f.order > order).collect())
                    }
                }
                (Start::Seqs(seqs), _) => match seqs.iter().find(|(sc, _)| *sc == c) {
                    None => None,
                    Some(&(_, since)) if since > ch.seq => {
                        gaps.push(lost(Some(since), "unknown_position"));
                        None
                    }
                    Some(&(_, since)) => {
                        let oldest = ch.replay.front().map_or(ch.seq + 1, |f| f.seq);
                        if since + 1 < oldest {
                            gaps.push(lost(Some(since), "out_of_buffer"));
                            None
                        } else {
                            Some(ch.replay.iter().filter(|f| f.seq > since).collect())
                        }
                    }
                },
                _ => None,
            };
            match replay {
                Some(frames) => out.extend(frames.into_iter().cloned()),
                // Fresh: each kind's newest message.
                None => out.extend(ch.keys.iter().map(|(f, _)| Arc::clone(f))),
            }
        }
        out.retain(|f| link.wants(f));
        out.sort_by_key(|f| f.order);
        // Every kind starts with a snapshot: re-render a leading delta whole.
        let mut seen: Vec<(u32, Key)> = Vec::new();
        for f in &mut out {
            if seen.contains(&(f.channel, f.key)) {
                continue;
            }
            seen.push((f.channel, f.key));
            if f.delta
                && let Some(ch) = st.channels.get(f.channel as usize)
            {
                let env = Envelope {
                    channel: &ch.name,
                    symbol: self.names.symbols.name(ch.symbol),
                    kind: ch.kind,
                    timestamp: f.timestamp,
                    vendor: f.vendor,
                    seq: f.seq,
                };
                let body = f.body.clone();
                *f = Arc::new(render(
                    &self.names,
                    &env,
                    f.channel,
                    &ch.name,
                    f.order,
                    body,
                    None,
                    true,
                ));
            }
        }
        gaps.extend(out);
        let mut on = on;
        for &c in channels {
            if on.contains(&c) {
                continue;
            }
            if let Some(ch) = st.channels.get_mut(c as usize) {
                ch.subs.push(Arc::clone(&link));
                on.push(c);
            }
        }
        if let Some(entry) = st.subs.get_mut(&id) {
            entry.1 = on;
        }
        gaps
    }

    fn detach(&self, id: u64, channels: Option<&[u32]>) {
        let mut st = self.lock();
        let State {
            channels: all,
            subs,
            ..
        } = &mut *st;
        let Some((_, on)) = subs.get_mut(&id) else {
            return;
        };
        let leaving: Vec<u32> = match channels {
            None => std::mem::take(on),
            Some(cs) => {
                on.retain(|c| !cs.contains(c));
                cs.to_vec()
            }
        };
        for c in leaving {
            if let Some(ch) = all.get_mut(c as usize) {
                ch.subs.retain(|l| l.id != id);
            }
        }
        if channels.is_none() {
            subs.remove(&id);
        }
        self.metrics.stream_subscribers.set(subs.len() as i64);
    }

    /// Every channel with its position and subscriber count.
    pub fn channels(&self) -> Vec<ChannelInfo> {
        let st = self.lock();
        st.channels
            .iter()
            .filter(|ch| self.names.symbols.is_active(ch.symbol))
            .map(|ch| ChannelInfo {
                channel: ch.name.to_string(),
                symbol: self.names.symbols.name(ch.symbol).to_string(),
                kind: ch.kind.as_str(),
                seq: ch.seq,
                subscribers: ch.subs.len(),
                buffered: ch.replay.len(),
                oldest_seq: ch.replay.front().map(|f| f.seq),
            })
            .collect()
    }

    /// The newest message of channel `c`, whole (a delta is rendered as the snapshot it leaves).
    pub fn latest(&self, c: u32) -> Option<bytes::Bytes> {
        let st = self.lock();
        let ch = st.channels.get(c as usize)?;
        ch.replay.back().map(|newest| self.snapshot_json(newest))
    }
}

/// A subscriber's end: its queue and flags; leaves the hub when dropped.
pub struct Subscription {
    hub: Arc<Hub>,
    id: u64,
    pub rx: mpsc::Receiver<Arc<Frame>>,
    pub flags: Arc<SubFlags>,
}

impl Subscription {
    /// Adds `channels` from `start`; returns what goes out before the queue.
    pub fn add(&self, channels: &[u32], start: &Start) -> Vec<Arc<Frame>> {
        self.hub.attach(self.id, channels, start)
    }

    /// Leaves `channels` (messages of theirs already queued are still in the queue).
    pub fn remove(&self, channels: &[u32]) {
        self.hub.detach(self.id, Some(channels));
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.detach(self.id, None);
    }
}

mod publish;
#[cfg(test)]
mod tests;
