/*!
The one model of everything pushed to streaming clients, and its rendering.

A message is `{channel, data_type, update_type, timestamp, symbol, data, vendor, metadata:
{worker_id, retry_count}, seq}`. What it carries is a typed [`Body`] until it is rendered; a
[`Frame`] is one rendered message: its JSON serialised once, shared (behind an `Arc`) by every
subscriber, the replay buffer and both transports (SSE writes its `id:`/`event:` head and the
JSON as separate chunks; the WebSocket text frame is built from them once, on first use).

`data_type` is an open set: bars and analytics today (`bar`, `features`, `signal`), continuity
(`gap`, `session`, `stale`, `resumed`, `revision`, and `replay_gap` for one client whose resume
point fell out of the buffer); other kinds of data (markets, scores, series) add their own type
and `data` shape without changing the envelope.

Deltas: a forming bar, its features and the signal are sent as `delta` while the same bar
(`ts`) keeps forming: `data` then holds `timeframe`, `ts` and `forming` (which say what it
updates) and only the fields that changed since the previous message of the same kind on the
channel ([`Key`]: data type, timeframe, forming or closed). Everything else is a `snapshot`.
*/

use std::fmt::Write as _;
use std::sync::OnceLock;

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::model::{Bar, FEATURE_COUNT, Gap, Session, SymbolTable, Timeframe};
use crate::signals::Direction;

/// The two channels of a symbol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    /// `stream:market_data:{SYMBOL}`: bars, closed and forming.
    MarketData = 0,
    /// `stream:analytics:{SYMBOL}`: features and the signal.
    Analytics = 1,
}

impl ChannelKind {
    pub const ALL: [Self; 2] = [Self::MarketData, Self::Analytics];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::MarketData => "market_data",
            Self::Analytics => "analytics",
        }
    }

    /// `market_data`, `analytics` (or with the `stream:` prefix).
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.strip_prefix("stream:").unwrap_or(s);
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// `stream:{kind}:{symbol}`.
    pub fn channel(self, symbol: &str) -> String {
        format!("stream:{}:{symbol}", self.as_str())
    }
}

/// What a message carries. `frame` is the timeframe's index among the configured ones.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Bar {
        frame: usize,
        bar: Bar,
        quality: f64,
        forming: bool,
    },
    Features {
        frame: usize,
        ts: i64,
        forming: bool,
        close: f64,
        values: [f64; FEATURE_COUNT],
    },
    Signal {
        frame: usize,
        ts: i64,
        forming: bool,
        signal: Direction,
        score: i32,
        confidence: f64,
        reasons: Vec<&'static str>,
    },
    /// An interval of the timeframe with no data.
    Gap {
        frame: usize,
        gap: Gap,
    },
    Session(Session),
    /// The symbol's data went quiet (`stale`) or came back.
    Liveness {
        stale: bool,
        last_data_ms: i64,
        quiet_ms: i64,
    },
    /// Bars of a gap repaired after the fact (sent as `bar` messages just before).
    Revision {
        frame: usize,
        gap: Gap,
        bars: u32,
    },
    /// For one client: its resume point is not in the replay buffer; the channel's state
    /// follows as snapshots.
    ReplayGap {
        since: Option<u64>,
        oldest: Option<u64>,
        reason: &'static str,
    },
}

/// Which state a message updates: a later message with the same key replaces it (latest,
/// opening snapshot) and a delta applies to the previous one with the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub data_type: &'static str,
    pub frame: Option<usize>,
    pub forming: bool,
}

impl Body {
    pub fn data_type(&self) -> &'static str {
        match self {
            Self::Bar { .. } => "bar",
            Self::Features { .. } => "features",
            Self::Signal { .. } => "signal",
            Self::Gap { .. } => "gap",
            Self::Session(_) => "session",
            Self::Liveness { stale: true, .. } => "stale",
            Self::Liveness { stale: false, .. } => "resumed",
            Self::Revision { .. } => "revision",
            Self::ReplayGap { .. } => "replay_gap",
        }
    }

    /// Data (filtered by a subscription's `data_types`) rather than continuity (always sent).
    pub fn is_data(&self) -> bool {
        matches!(
            self,
            Self::Bar { .. } | Self::Features { .. } | Self::Signal { .. }
        )
    }

    pub fn key(&self) -> Key {
        let (frame, forming) = match self {
            Self::Bar { frame, forming, .. } | Self::Features { frame, forming, .. } => {
                (Some(*frame), *forming)
            }
            Self::Signal { frame, .. } | Self::Gap { frame, .. } | Self::Revision { frame, .. } => {
                (Some(*frame), false)
            }
            _ => (None, false),
        };
        Key {
            data_type: self.data_type(),
            frame,
            forming,
        }
    }

    /// The bar a delta-able message is about (`None`: always a snapshot).
    pub fn delta_ts(&self) -> Option<i64> {
        match self {
            Self::Bar {
                bar, forming: true, ..
            } => Some(bar.ts),
            Self::Features {
                ts, forming: true, ..
            } => Some(*ts),
            Self::Signal { ts, .. } => Some(*ts),
            _ => None,
        }
    }

    /// Whether a delta from `prev` would carry anything.
    pub fn differs(&self, prev: &Body) -> bool {
        self != prev
    }
}

/// Names the renderer needs: symbols, timeframes and features as configured.
#[derive(Debug)]
pub struct Names {
    pub symbols: SymbolTable,
    pub frames: Vec<Timeframe>,
    /// `frames` as they are spelled (`1m`).
    pub timeframes: Vec<String>,
    pub features: [String; FEATURE_COUNT],
}

impl Names {
    /// The names the API's snapshot serves under.
    pub fn of(snapshot: &crate::store::snapshot::Snapshot) -> Self {
        Self {
            symbols: snapshot.symbols.clone(),
            frames: snapshot.timeframes.clone(),
            timeframes: snapshot.timeframe_names.clone(),
            features: snapshot.feature_names.clone(),
        }
    }
}

/// Everything about one message besides its body.
pub struct Envelope<'a> {
    pub channel: &'a str,
    pub symbol: &'a std::sync::Arc<str>,
    pub kind: ChannelKind,
    pub timestamp: i64,
    pub vendor: Option<&'static str>,
    pub seq: u64,
}

/// One message, shared by all who send it. Its JSON is rendered the first time something
/// sends or reads it (a subscriber's transport, a resume, `latest`, the NATS tap), on that
/// caller's thread, and then kept: the hub only numbers and keeps messages, so a channel nobody
/// reads costs no rendering at all.
#[derive(Debug)]
pub struct Frame {
    /// The channel's index in the hub.
    pub channel: u32,
    pub seq: u64,
    /// The hub's order over all channels: resuming from one event resumes every channel.
    pub order: u64,
    pub data_type: &'static str,
    pub is_data: bool,
    /// Rendered as a delta (against the previous message of its key).
    pub delta: bool,
    pub key: Key,
    /// The whole state this message leaves its key in: what a snapshot of it renders.
    pub body: Body,
    pub timestamp: i64,
    pub vendor: Option<&'static str>,
    kind: ChannelKind,
    /// Its SSE event gets an `id:` (it is a resume point).
    resumable: bool,
    symbol: std::sync::Arc<str>,
    names: std::sync::Arc<Names>,
    /// What a delta is rendered against.
    prev: Option<Body>,
    json: OnceLock<Bytes>,
    channel_name: std::sync::Arc<str>,
    ws: OnceLock<Utf8Bytes>,
}

impl Frame {
    /// The message's JSON, rendered on first use.
    pub fn json(&self) -> &Bytes {
        self.json.get_or_init(|| {
            let env = Envelope {
                channel: &self.channel_name,
                symbol: &self.symbol,
                kind: self.kind,
                timestamp: self.timestamp,
                vendor: self.vendor,
                seq: self.seq,
            };
            Bytes::from(message_json(
                &self.names,
                &env,
                &self.body,
                self.prev.as_ref(),
            ))
        })
    }

    /// The name of the channel it was sent on.
    pub fn channel_name(&self) -> &str {
        &self.channel_name
    }

    /// Appends the SSE event (`id: …\nevent: …\ndata: `, JSON, end) to `out`; no `id:` for a
    /// message that is no resume point.
    pub fn write_sse(&self, out: &mut BytesMut) {
        let json = self.json();
        out.reserve(self.channel_name.len() + self.data_type.len() + json.len() + 48);
        if self.resumable {
            let _ = writeln!(out, "id: {}:{}", self.channel_name, self.seq);
        }
        let _ = write!(out, "event: {}\ndata: ", self.data_type);
        out.extend_from_slice(json);
        out.extend_from_slice(b"\n\n");
    }

    /// The WebSocket text `{"type":"data","channel":…,"message":…}`, built once.
    pub fn ws_text(&self) -> Utf8Bytes {
        self.ws
            .get_or_init(|| {
                let json = self.json();
                let mut out = Vec::with_capacity(json.len() + self.channel_name.len() + 40);
                out.extend_from_slice(b"{\"type\":\"data\",\"channel\":");
                let _ = serde_json::to_writer(&mut out, &*self.channel_name);
                out.extend_from_slice(b",\"message\":");
                out.extend_from_slice(json);
                out.push(b'}');
                // JSON is UTF-8.
                Utf8Bytes::try_from(out).unwrap_or_else(|_| Utf8Bytes::from_static("{}"))
            })
            .clone()
    }
}

/// A message: `prev` makes it a delta against that body (same key and bar), `None` a snapshot;
/// `resumable` gives its SSE event an `id:`. Its JSON is rendered when first used.
#[allow(clippy::too_many_arguments, reason = "the parts of one message")]
pub fn render(
    names: &std::sync::Arc<Names>,
    env: &Envelope<'_>,
    channel: u32,
    channel_name: &std::sync::Arc<str>,
    order: u64,
    body: Body,
    prev: Option<&Body>,
    resumable: bool,
) -> Frame {
    Frame {
        channel,
        seq: env.seq,
        order,
        data_type: body.data_type(),
        is_data: body.is_data(),
        delta: prev.is_some(),
        key: body.key(),
        timestamp: env.timestamp,
        vendor: env.vendor,
        kind: env.kind,
        resumable,
        symbol: std::sync::Arc::clone(env.symbol),
        names: std::sync::Arc::clone(names),
        prev: prev.cloned(),
        body,
        json: OnceLock::new(),
        channel_name: std::sync::Arc::clone(channel_name),
        ws: OnceLock::new(),
    }
}

/// A message's JSON: a delta against `prev` when given, else a snapshot.
pub fn message_json(
    names: &Names,
    env: &Envelope<'_>,
    body: &Body,
    prev: Option<&Body>,
) -> Vec<u8> {
    let message = Message {
        channel: env.channel,
        data_type: body.data_type(),
        update_type: if prev.is_some() { "delta" } else { "snapshot" },
        timestamp: env.timestamp,
        symbol: env.symbol.as_ref(),
        data: Data { names, body, prev },
        vendor: env.vendor,
        metadata: Metadata {
            worker_id: Worker(env.kind, env.vendor),
            retry_count: 0,
        },
        seq: env.seq,
    };
    let mut json = Vec::with_capacity(match body {
        Body::Features { .. } => 900,
        _ => 320,
    });
    // Numbers, strings and maps of them into a Vec: cannot fail.
    let _ = serde_json::to_writer(&mut json, &message);
    json
}

#[derive(Serialize)]
struct Message<'a> {
    channel: &'a str,
    data_type: &'static str,
    update_type: &'static str,
    timestamp: i64,
    symbol: &'a str,
    data: Data<'a>,
    vendor: Option<&'static str>,
    metadata: Metadata,
    seq: u64,
}

#[derive(Serialize)]
struct Metadata {
    worker_id: Worker,
    retry_count: u32,
}

/// `{channel kind}:{vendor}`, the worker that produced the data.
struct Worker(ChannelKind, Option<&'static str>);

impl Serialize for Worker {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.1 {
            Some(vendor) => s.collect_str(&format_args!("{}:{vendor}", self.0.as_str())),
            None => s.serialize_str(self.0.as_str()),
        }
    }
}

/// A body as JSON, all of it or (with `prev`) what changed.
struct Data<'a> {
    names: &'a Names,
    body: &'a Body,
    prev: Option<&'a Body>,
}

/// A float as JSON: `null` when not finite (an indicator not ready yet).
fn num(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

fn same(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits()
}

impl Serialize for Data<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let tf = |frame: &usize| self.names.timeframes.get(*frame).map_or("", String::as_str);
        let mut map = s.serialize_map(None)?;
        match self.body {
            Body::Bar {
                frame,
                bar,
                quality,
                forming,
            } => {
                let prev = match self.prev {
                    Some(Body::Bar { bar, quality, .. }) => Some((bar, *quality)),
                    _ => None,
                };
                map.serialize_entry("timeframe", tf(frame))?;
                map.serialize_entry("ts", &bar.ts)?;
                map.serialize_entry("forming", forming)?;
                let fields = [
                    ("open", bar.open, prev.map(|p| p.0.open)),
                    ("high", bar.high, prev.map(|p| p.0.high)),
                    ("low", bar.low, prev.map(|p| p.0.low)),
                    ("close", bar.close, prev.map(|p| p.0.close)),
                    ("volume", bar.volume, prev.map(|p| p.0.volume)),
                    ("quality", *quality, prev.map(|p| p.1)),
                ];
                for (name, v, before) in fields {
                    if before.is_none_or(|b| !same(b, v)) {
                        map.serialize_entry(name, &num(v))?;
                    }
                }
            }
            Body::Features {
                frame,
                ts,
                forming,
                close,
                values,
            } => {
                let prev = match self.prev {
                    Some(Body::Features { close, values, .. }) => Some((*close, values)),
                    _ => None,
                };
                map.serialize_entry("timeframe", tf(frame))?;
                map.serialize_entry("ts", ts)?;
                map.serialize_entry("forming", forming)?;
                if prev.is_none_or(|p| !same(p.0, *close)) {
                    map.serialize_entry("close", &num(*close))?;
                }
                map.serialize_entry(
                    "features",
                    &ChangedFeatures {
                        names: &self.names.features,
                        values,
                        prev: prev.map(|p| p.1),
                    },
                )?;
            }
            Body::Signal {
                frame,
                ts,
                forming,
                signal,
                score,
                confidence,
                reasons,
            } => {
                let prev = match self.prev {
                    Some(Body::Signal {
                        signal,
                        score,
                        confidence,
                        reasons,
                        ..
                    }) => Some((signal, score, confidence, reasons)),
                    _ => None,
                };
                map.serialize_entry("timeframe", tf(frame))?;
                map.serialize_entry("ts", ts)?;
                map.serialize_entry("forming", forming)?;
                if prev.is_none_or(|p| p.0 != signal) {
                    map.serialize_entry("signal", signal)?;
                }
                if prev.is_none_or(|p| p.1 != score) {
                    map.serialize_entry("score", score)?;
                }
                if prev.is_none_or(|p| !same(*p.2, *confidence)) {
                    map.serialize_entry("confidence", confidence)?;
                }
                if prev.is_none_or(|p| p.3 != reasons) {
                    map.serialize_entry("reasons", reasons)?;
                }
            }
            Body::Gap { frame, gap } => {
                map.serialize_entry("timeframe", tf(frame))?;
                map.serialize_entry("from_ts", &gap.from_ts)?;
                map.serialize_entry("to_ts", &gap.to_ts)?;
            }
            Body::Session(session) => {
                map.serialize_entry("state", session.label())?;
                map.serialize_entry("open", &session.open)?;
                map.serialize_entry(
                    "since_ms",
                    &(session.since_ms > i64::MIN).then_some(session.since_ms),
                )?;
                map.serialize_entry(
                    "until_ms",
                    &(session.until_ms < i64::MAX).then_some(session.until_ms),
                )?;
            }
            Body::Liveness {
                last_data_ms,
                quiet_ms,
                ..
            } => {
                map.serialize_entry("last_data_ms", last_data_ms)?;
                map.serialize_entry("quiet_ms", quiet_ms)?;
            }
            Body::Revision { frame, gap, bars } => {
                map.serialize_entry("timeframe", tf(frame))?;
                map.serialize_entry("from_ts", &gap.from_ts)?;
                map.serialize_entry("to_ts", &gap.to_ts)?;
                map.serialize_entry("bars", bars)?;
            }
            Body::ReplayGap {
                since,
                oldest,
                reason,
            } => {
                map.serialize_entry("reason", reason)?;
                map.serialize_entry("since", since)?;
                map.serialize_entry("oldest_available", oldest)?;
            }
        }
        map.end()
    }
}

/// The features map, or only the features that changed since `prev`.
struct ChangedFeatures<'a> {
    names: &'a [String; FEATURE_COUNT],
    values: &'a [f64; FEATURE_COUNT],
    prev: Option<&'a [f64; FEATURE_COUNT]>,
}

impl Serialize for ChangedFeatures<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (i, (name, v)) in self.names.iter().zip(self.values).enumerate() {
            if self.prev.is_none_or(|p| !same(p[i], *v)) {
                map.serialize_entry(name, &num(*v))?;
            }
        }
        map.end()
    }
}

#[cfg(test)]
#[path = "message_tests.rs"]
mod tests;
