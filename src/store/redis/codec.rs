/*!
What barkeep writes to Redis and under which names: the key layout and the MessagePack maps
(bars, features, messages). The values are maps with named fields, so a reader in any language
needs no schema; the layout is the contract in the README's "Redis: what the bot reads".

Messages (pub/sub and the stream) use the envelope of the streaming model (`stream::message`):
`{channel, data_type, update_type, timestamp, symbol, data, vendor, metadata: {worker_id,
retry_count}, seq}`, in MessagePack; `data_type` is `tick` (everything one tick changed for the
symbol, all timeframes at once) or `revision`.
*/

use serde::ser::{SerializeMap, Serializer};

use crate::model::{Bar, BarRecord, FEATURE_COUNT, Timeframe};
use crate::store::snapshot::NamedFeatures;

/// Key names for one prefix. Every key of a symbol carries the symbol as a Redis Cluster hash
/// tag (`barkeep:bars:{EURUSD}:1m`), so its ring, features, events channel and stream live on
/// one slot: one key scheme whether the server is one Redis or a cluster.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

/// The kinds of key earlier layouts had, `{prefix}:{kind}:{SYMBOL}:{TF}` without a hash tag;
/// `live` (the forming bar, now part of the features value) also with one.
pub(super) const OLD_KINDS: [&str; 3] = ["bars", "live", "features"];

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }
    pub fn bars(&self, symbol: &str, tf: Timeframe) -> String {
        format!("{}:bars:{{{symbol}}}:{tf}", self.prefix)
    }
    pub fn features(&self, symbol: &str, tf: Timeframe) -> String {
        format!("{}:features:{{{symbol}}}:{tf}", self.prefix)
    }
    pub fn events(&self, symbol: &str) -> String {
        format!("{}:events:{{{symbol}}}", self.prefix)
    }
    pub fn stream(&self, symbol: &str) -> String {
        format!("{}:stream:{{{symbol}}}", self.prefix)
    }

    /// The `SCAN` pattern of one kind of key under this prefix (glob characters in the prefix
    /// escaped).
    pub(super) fn scan_pattern(&self, kind: &str) -> String {
        let mut pattern = String::with_capacity(self.prefix.len() + kind.len() + 4);
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push(':');
        pattern.push_str(kind);
        pattern.push_str(":*");
        pattern
    }

    /// The symbol of a key of an earlier layout (`barkeep:bars:EURUSD:1m`, and any
    /// `barkeep:live:…:1m`), `None` for any other key (of today's layout, another kind, a
    /// timeframe that is none, not barkeep's shape).
    pub(super) fn old_symbol<'k>(&self, kind: &str, key: &'k str) -> Option<&'k str> {
        let rest = key
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(':')?
            .strip_prefix(kind)?
            .strip_prefix(':')?;
        let (symbol, tf) = rest.rsplit_once(':')?;
        let symbol = match (kind, symbol.strip_prefix('{')) {
            ("live", Some(tagged)) => tagged.strip_suffix('}')?,
            _ => symbol,
        };
        let plain = |c: char| c.is_ascii_alphanumeric() || "._-^=/".contains(c);
        (!symbol.is_empty()
            && symbol.len() <= 32
            && symbol.chars().all(plain)
            && tf.parse::<Timeframe>().is_ok())
        .then_some(symbol)
    }
}

/// A bar as written to Redis (a ring entry, the live bar, an event's `bar`).
#[derive(serde::Serialize)]
pub(in crate::store) struct BarMsg<'a> {
    ts: i64,
    open: f64,
    high: f64,
    low: f64,
    close: f64,
    volume: f64,
    source: &'a str,
    quality: f64,
}

impl<'a> BarMsg<'a> {
    pub(in crate::store) fn new(bar: &Bar, source: &'a str, quality: f64) -> Self {
        Self {
            ts: bar.ts,
            open: bar.open,
            high: bar.high,
            low: bar.low,
            close: bar.close,
            volume: bar.volume,
            source,
            quality,
        }
    }
}

/// The features key's value: the latest bar (forming, or the last closed) and its features, a
/// flat map, so a reader needs no schema.
pub(super) struct FeaturesMsg<'a> {
    pub(super) record: &'a BarRecord,
    pub(super) fields: NamedFeatures<'a>,
    pub(super) forming: bool,
    pub(super) tick_ms: i64,
    pub(super) age_ms: i64,
    /// `Some(next open)` once the market has closed.
    pub(super) closed_until: Option<i64>,
}

impl serde::Serialize for FeaturesMsg<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let bar = &self.record.bar;
        let mut map = s.serialize_map(Some(13 + FEATURE_COUNT))?;
        map.serialize_entry("ts", &bar.ts)?;
        map.serialize_entry("age_ms", &self.age_ms)?;
        map.serialize_entry("forming", &self.forming)?;
        map.serialize_entry("tick_ms", &self.tick_ms)?;
        map.serialize_entry("open", &bar.open)?;
        map.serialize_entry("high", &bar.high)?;
        map.serialize_entry("low", &bar.low)?;
        map.serialize_entry("close", &bar.close)?;
        map.serialize_entry("volume", &bar.volume)?;
        map.serialize_entry("source", self.record.source)?;
        map.serialize_entry("quality", &self.record.quality)?;
        let session = if self.closed_until.is_some() {
            "closed"
        } else {
            "open"
        };
        map.serialize_entry("session", session)?;
        map.serialize_entry("next_open_ms", &self.closed_until)?;
        for (name, v) in self.fields.names.iter().zip(self.fields.features.values) {
            map.serialize_entry(name, &v.is_finite().then_some(v))?;
        }
        map.end()
    }
}

/// The envelope of every message (pub/sub and stream): the streaming model's fields.
#[derive(serde::Serialize)]
pub(super) struct Message<'a, D> {
    pub(super) channel: &'a str,
    pub(super) data_type: &'static str,
    pub(super) update_type: &'static str,
    /// The tick's time, Unix ms.
    pub(super) timestamp: i64,
    pub(super) symbol: &'a str,
    pub(super) data: D,
    pub(super) vendor: Option<&'static str>,
    pub(super) metadata: Metadata,
    pub(super) seq: u64,
}

/// `worker_id` is `market_data:{vendor}` (the streaming model's worker of bars).
pub(super) struct Metadata {
    pub(super) vendor: Option<&'static str>,
}

impl serde::Serialize for Metadata {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(2))?;
        match self.vendor {
            Some(v) => map.serialize_entry("worker_id", &format_args!("market_data:{v}"))?,
            None => map.serialize_entry("worker_id", "market_data")?,
        }
        map.serialize_entry("retry_count", &0)?;
        map.end()
    }
}

/// A closed bar and the features committed after it.
#[derive(serde::Serialize)]
pub(super) struct BarWithFeatures<'a> {
    pub(super) bar: BarMsg<'a>,
    pub(super) features: NamedFeatures<'a>,
}

/// One timeframe of a tick message: the bars that closed (oldest first), each with its
/// features, and the forming bar alone (its peeked features are in the features value, written
/// in the same pipeline: sending them twice per tick cost Redis more than the message saved).
#[derive(serde::Serialize)]
pub(super) struct FrameMsg<'a, C: serde::Serialize> {
    pub(super) closed: C,
    pub(super) live: Option<LiveMsg<'a>>,
}

/// The forming bar of a tick message.
#[derive(serde::Serialize)]
pub(super) struct LiveMsg<'a> {
    pub(super) bar: BarMsg<'a>,
}

/// The `data` of a revision: a gap `[from_ts, to_ts)` filled after the fact.
#[derive(serde::Serialize)]
pub(super) struct RevisionData<'a> {
    pub(super) timeframe: &'a str,
    pub(super) from_ts: i64,
    pub(super) to_ts: i64,
    pub(super) bars: u32,
}

pub(in crate::store) fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Sized for a features map up front: growing the Vec showed up in profiles (realloc).
    let mut buf = Vec::with_capacity(512);
    encode_into(&mut buf, value);
    buf
}

/// Appends `value` as MessagePack to `buf`.
pub(super) fn encode_into<T: serde::Serialize>(buf: &mut Vec<u8>, value: &T) {
    // Serialising plain maps of numbers and strings into a Vec cannot fail.
    let _ = rmp_serde::encode::write_named(buf, value);
}

/// The `ts` of a MessagePack bar returned by `LINDEX`: `None` for an empty ring, and
/// `i64::MIN` for something that is not a bar (so the ring is rewritten, never trusted).
pub(in crate::store) fn decode_ts(value: &redis::Value, key: &str) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct Ts {
        ts: i64,
    }
    match value {
        redis::Value::Nil => None,
        redis::Value::BulkString(bytes) => match rmp_serde::from_slice::<Ts>(bytes) {
            Ok(t) => Some(t.ts),
            Err(e) => {
                tracing::warn!(key, error = %e, "Redis ring holds something that is not a bar; rewriting it");
                Some(i64::MIN)
            }
        },
        other => {
            tracing::warn!(key, reply = ?other, "unexpected Redis reply; rewriting the ring");
            Some(i64::MIN)
        }
    }
}

/// The `seq` of the message in the first entry of an `XREVRANGE … COUNT 1` reply
/// (`[[id, [field, value, …]]]`), `None` for an empty stream or anything else.
pub(super) fn last_entry_seq(reply: &redis::Value) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Seq {
        seq: u64,
    }
    let redis::Value::Array(entries) = reply else {
        return None;
    };
    let redis::Value::Array(entry) = entries.first()? else {
        return None;
    };
    let redis::Value::Array(fields) = entry.get(1)? else {
        return None;
    };
    fields.chunks(2).find_map(|pair| match pair {
        [
            redis::Value::BulkString(name),
            redis::Value::BulkString(msg),
        ] if name.as_slice() == STREAM_FIELD.as_bytes() => {
            rmp_serde::from_slice::<Seq>(msg).ok().map(|m| m.seq)
        }
        _ => None,
    })
}

/// The field of a stream entry that holds the message.
pub(super) const STREAM_FIELD: &str = "msg";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_tagged_and_earlier_layouts_are_told_apart() {
        let keys = Keys::new("bk");
        let tf: Timeframe = "1m".parse().expect("tf");
        assert_eq!(keys.bars("EURUSD", tf), "bk:bars:{EURUSD}:1m");
        assert_eq!(keys.features("EURUSD", tf), "bk:features:{EURUSD}:1m");
        assert_eq!(keys.events("EURUSD"), "bk:events:{EURUSD}");
        assert_eq!(keys.stream("EURUSD"), "bk:stream:{EURUSD}");
        let old = |kind, key| keys.old_symbol(kind, key);
        assert_eq!(old("bars", "bk:bars:EURUSD:1m"), Some("EURUSD"));
        assert_eq!(old("live", "bk:live:BRK.B:5s"), Some("BRK.B"));
        assert_eq!(old("live", "bk:live:{BRK.B}:5s"), Some("BRK.B"));
        for other in [
            "bk:bars:{EURUSD}:1m",
            "bk:bars:EURUSD",
            "bk:bars:EURUSD:1m:x",
            "bk:bars:EURUSD:week",
            "bkx:bars:EURUSD:1m",
            "bk:live:EURUSD:1m",
            "bk:bars::1m",
        ] {
            assert_eq!(keys.old_symbol("bars", other), None, "{other}");
        }
        assert_eq!(
            Keys::new("a*b[c]").scan_pattern("bars"),
            r"a\*b\[c\]:bars:*"
        );
    }
}
