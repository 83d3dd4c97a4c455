/*!
Where a message goes in JetStream and what it is called there: the subject
`{prefix}.{data_type}.{SYMBOL}` and the message id (`Nats-Msg-Id`) by which JetStream drops a
message it already stored (within `NATS_DUPLICATE_WINDOW`).

An id is made of what the message is about, never of a counter of this process, so a publish
retried after a lost ack and the same message produced again after a restart carry the same
id: `{SYMBOL}:{timeframe}:{time}:{data_type}[:{more}]`.

| message | id |
|---|---|
| closed bar, its features, its signal | `EURUSD:1m:1700000040000:bar` (`features`, `signal`) |
| forming bar, features, signal | `EURUSD:1m:1700000040000:bar:forming:1700000041000` (the tick's time last) |
| gap, revision | `EURUSD:1m:1700000040000:gap:1700000100000` (from, then to) |
| session | `EURUSD:-:1700000000000:session:open` (when the state began; `-`: not known) |
| stale, resumed | `EURUSD:-:1700000040000:stale` (the newest data's time) |

A symbol's `.` would split the subject's tokens: it is written `%2E` there (`BRK%2EB`); no other
character a symbol may hold needs it.
*/

use std::borrow::Cow;
use std::fmt::Write as _;

use async_nats::Subject;

use crate::model::SymbolId;
use crate::stream::message::{Body, Frame, Names};

/// Every `data_type` published, in the order of [`Subjects`]' table.
pub const DATA_TYPES: [&str; 8] = [
    "bar", "features", "signal", "gap", "session", "stale", "resumed", "revision",
];

/// An update of a bar still forming (superseded by the next one).
pub fn is_forming(body: &Body) -> bool {
    matches!(
        body,
        Body::Bar { forming: true, .. }
            | Body::Features { forming: true, .. }
            | Body::Signal { forming: true, .. }
    )
}

/// `symbol` as one subject token.
pub fn symbol_token(symbol: &str) -> Cow<'_, str> {
    if symbol.contains('.') {
        Cow::Owned(symbol.replace('.', "%2E"))
    } else {
        Cow::Borrowed(symbol)
    }
}

/// Subjects by symbol and data type, each built once, on first use.
pub struct Subjects {
    prefix: String,
    table: Vec<[Option<Subject>; DATA_TYPES.len()]>,
}

impl Subjects {
    pub fn new(prefix: &str, symbols: usize) -> Self {
        Self {
            prefix: prefix.to_string(),
            table: (0..symbols).map(|_| Default::default()).collect(),
        }
    }

    /// `{prefix}.{data_type}.{SYMBOL}`.
    pub fn get(&mut self, names: &Names, symbol: SymbolId, data_type: &str) -> Subject {
        let dt = DATA_TYPES.iter().position(|d| *d == data_type);
        // A symbol added at run time gets its row when first met.
        if self.table.len() <= symbol as usize && (symbol as usize) < names.symbols.len() {
            self.table
                .resize_with(symbol as usize + 1, Default::default);
        }
        let build = || {
            let name = names.symbols.name(symbol);
            Subject::from(format!(
                "{}.{data_type}.{}",
                self.prefix,
                symbol_token(name)
            ))
        };
        match (dt, self.table.get(symbol as usize)) {
            (Some(i), Some(_)) => {
                if let Some(s) = &self.table[symbol as usize][i] {
                    return s.clone();
                }
                let subject = build();
                self.table[symbol as usize][i] = Some(subject.clone());
                subject
            }
            // A data type added later, or a symbol out of range: built each time.
            _ => build(),
        }
    }
}

/// The message id of `frame` (see the module documentation), about `symbol`.
pub fn message_id(names: &Names, symbol: SymbolId, frame: &Frame) -> String {
    let name = names.symbols.name(symbol);
    let tf = |frame: usize| names.timeframes.get(frame).map_or("", String::as_str);
    let mut id = String::with_capacity(name.len() + 48);
    let dt = frame.data_type;
    // Writing to a String cannot fail.
    let _ = match &frame.body {
        Body::Bar {
            frame: f,
            bar,
            forming,
            ..
        } => bar_id(&mut id, name, tf(*f), bar.ts, dt, *forming, frame.timestamp),
        Body::Features {
            frame: f,
            ts,
            forming,
            ..
        }
        | Body::Signal {
            frame: f,
            ts,
            forming,
            ..
        } => bar_id(&mut id, name, tf(*f), *ts, dt, *forming, frame.timestamp),
        Body::Gap { frame: f, gap } | Body::Revision { frame: f, gap, .. } => {
            write!(id, "{name}:{}:{}:{dt}:{}", tf(*f), gap.from_ts, gap.to_ts)
        }
        Body::Session(session) => {
            let state = if session.open { "open" } else { "closed" };
            if session.since_ms == i64::MIN {
                write!(id, "{name}:-:-:{dt}:{state}")
            } else {
                write!(id, "{name}:-:{}:{dt}:{state}", session.since_ms)
            }
        }
        Body::Liveness { last_data_ms, .. } => write!(id, "{name}:-:{last_data_ms}:{dt}"),
        // Per client, never published; named by its position all the same.
        Body::ReplayGap { .. } => write!(id, "{name}:-:{}:{dt}:{}", frame.timestamp, frame.seq),
    };
    id
}

fn bar_id(
    id: &mut String,
    symbol: &str,
    tf: &str,
    ts: i64,
    dt: &str,
    forming: bool,
    tick_ms: i64,
) -> std::fmt::Result {
    write!(id, "{symbol}:{tf}:{ts}:{dt}")?;
    if forming {
        write!(id, ":forming:{tick_ms}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::{Bar, Gap, Session, SymbolTable};
    use crate::stream::message::{ChannelKind, Envelope, render};

    fn names() -> Names {
        Names {
            symbols: SymbolTable::new(["EURUSD", "BRK.B"]),
            frames: vec!["1m".parse().expect("tf")],
            timeframes: vec!["1m".into()],
            features: std::array::from_fn(|i| format!("f{i}")),
        }
    }

    fn frame(names: &Arc<Names>, symbol: SymbolId, body: Body, tick_ms: i64) -> Frame {
        let name: Arc<str> = "stream:market_data:X".into();
        let env = Envelope {
            channel: &name,
            symbol: names.symbols.name(symbol),
            kind: ChannelKind::MarketData,
            timestamp: tick_ms,
            vendor: None,
            seq: 7,
        };
        render(names, &env, symbol * 2, &name, 1, body, None, true)
    }

    #[test]
    fn ids_name_what_a_message_is_about_not_when_it_was_sent() {
        let n = Arc::new(names());
        let bar = |forming| Body::Bar {
            frame: 0,
            bar: Bar::from_price(1_700_000_040_000, 1.0, 1.0),
            quality: 1.0,
            forming,
        };
        let id = |symbol, body, tick| message_id(&n, symbol, &frame(&n, symbol, body, tick));
        assert_eq!(id(0, bar(false), 5), "EURUSD:1m:1700000040000:bar");
        assert_eq!(
            id(0, bar(false), 6),
            id(0, bar(false), 5),
            "stable whenever sent"
        );
        assert_eq!(
            id(0, bar(true), 1_700_000_041_000),
            "EURUSD:1m:1700000040000:bar:forming:1700000041000"
        );
        let gap = Gap {
            from_ts: 10,
            to_ts: 20,
        };
        assert_eq!(id(1, Body::Gap { frame: 0, gap }, 5), "BRK.B:1m:10:gap:20");
        let revision = Body::Revision {
            frame: 0,
            gap,
            bars: 0,
        };
        assert_eq!(id(1, revision, 5), "BRK.B:1m:10:revision:20");
        let session = |open, since_ms| {
            Body::Session(Session {
                open,
                since_ms,
                until_ms: i64::MAX,
            })
        };
        assert_eq!(id(0, session(true, i64::MIN), 5), "EURUSD:-:-:session:open");
        assert_eq!(id(0, session(false, 99), 5), "EURUSD:-:99:session:closed");
        let stale = Body::Liveness {
            stale: true,
            last_data_ms: 42,
            quiet_ms: 1,
        };
        assert_eq!(id(0, stale, 5), "EURUSD:-:42:stale");
    }

    #[test]
    fn subjects_keep_one_token_per_symbol() {
        let n = names();
        let mut subjects = Subjects::new("desk.md", 2);
        assert_eq!(subjects.get(&n, 0, "bar").as_str(), "desk.md.bar.EURUSD");
        assert_eq!(subjects.get(&n, 1, "gap").as_str(), "desk.md.gap.BRK%2EB");
        assert_eq!(subjects.get(&n, 1, "gap").as_str(), "desk.md.gap.BRK%2EB");
        assert_eq!(
            subjects.get(&n, 1, "later").as_str(),
            "desk.md.later.BRK%2EB"
        );
        assert!(is_forming(&Body::Signal {
            frame: 0,
            ts: 0,
            forming: true,
            signal: crate::signals::Direction::Neutral,
            score: 0,
            confidence: 0.0,
            reasons: Vec::new(),
        }));
    }
}
