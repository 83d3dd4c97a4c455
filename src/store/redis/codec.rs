/*!
What barkeep writes to Redis and under which names: the key layout and the MessagePack maps
(bars, features, events). The values are maps with named fields, so a reader in any language
needs no schema; the layout is the contract in the README's "Redis: what the bot reads".
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

/// The kinds of key the first layout (before hash tags) had, `{prefix}:{kind}:{SYMBOL}:{TF}`.
pub(super) const UNTAGGED_KINDS: [&str; 3] = ["bars", "live", "features"];

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }
    pub fn bars(&self, symbol: &str, tf: Timeframe) -> String {
        format!("{}:bars:{{{symbol}}}:{tf}", self.prefix)
    }
    pub fn live(&self, symbol: &str, tf: Timeframe) -> String {
        format!("{}:live:{{{symbol}}}:{tf}", self.prefix)
    }
    pub fn features(&self, symbol: &str, tf: Timeframe) -> String {
        format!("{}:features:{{{symbol}}}:{tf}", self.prefix)
    }
    pub fn events(&self, symbol: &str) -> String {
        format!("{}:events:{{{symbol}}}", self.prefix)
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

    /// The symbol of a key of the first, untagged layout (`barkeep:bars:EURUSD:1m`), `None`
    /// for any other key (tagged, another kind, a timeframe that is none, not barkeep's shape).
    pub(super) fn untagged_symbol<'k>(&self, kind: &str, key: &'k str) -> Option<&'k str> {
        let rest = key
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(':')?
            .strip_prefix(kind)?
            .strip_prefix(':')?;
        let (symbol, tf) = rest.split_once(':')?;
        let plain = |c: char| c.is_ascii_alphanumeric() || "._-^=/".contains(c);
        (!symbol.is_empty()
            && symbol.len() <= 32
            && symbol.chars().all(plain)
            && tf.parse::<Timeframe>().is_ok())
        .then_some(symbol)
    }
}

/// The keys of one (symbol, timeframe), built once: formatting them per write was a visible
/// share of the allocations at 10 000 symbols.
pub(super) struct SlotKeys {
    pub(super) bars: String,
    pub(super) live: String,
    pub(super) features: String,
    pub(super) events: String,
}

impl SlotKeys {
    pub(super) fn new(keys: &Keys, symbol: &str, tf: Timeframe) -> Self {
        Self {
            bars: keys.bars(symbol, tf),
            live: keys.live(symbol, tf),
            features: keys.features(symbol, tf),
            events: keys.events(symbol),
        }
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

/// The features key's value: a flat map, so a reader needs no schema.
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
        let mut map = s.serialize_map(Some(9 + FEATURE_COUNT))?;
        map.serialize_entry("ts", &self.record.bar.ts)?;
        map.serialize_entry("age_ms", &self.age_ms)?;
        map.serialize_entry("forming", &self.forming)?;
        map.serialize_entry("tick_ms", &self.tick_ms)?;
        map.serialize_entry("close", &self.record.bar.close)?;
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

/// The pub/sub message of a closed bar or a forming-bar update.
#[derive(serde::Serialize)]
pub(super) struct EventMsg<'a> {
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) symbol: &'a str,
    pub(super) timeframe: &'a str,
    pub(super) ts: i64,
    pub(super) tick_ms: i64,
    pub(super) forming: bool,
    pub(super) bar: BarMsg<'a>,
    pub(super) features: NamedFeatures<'a>,
}

/// The pub/sub message of a gap filled after the fact.
#[derive(serde::Serialize)]
pub(super) struct RevisionMsg<'a> {
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) symbol: &'a str,
    pub(super) timeframe: &'a str,
    pub(super) from_ts: i64,
    pub(super) to_ts: i64,
    pub(super) bars: u32,
}

pub(in crate::store) fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Sized for a features map up front: growing the Vec showed up in profiles (realloc).
    let mut buf = Vec::with_capacity(512);
    // Serialising plain maps of numbers and strings into a Vec cannot fail.
    let _ = rmp_serde::encode::write_named(&mut buf, value);
    buf
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_tagged_and_the_untagged_layout_is_told_apart() {
        let keys = Keys::new("bk");
        let tf: Timeframe = "1m".parse().expect("tf");
        assert_eq!(keys.bars("EURUSD", tf), "bk:bars:{EURUSD}:1m");
        assert_eq!(keys.features("EURUSD", tf), "bk:features:{EURUSD}:1m");
        assert_eq!(keys.events("EURUSD"), "bk:events:{EURUSD}");
        assert_eq!(
            keys.untagged_symbol("bars", "bk:bars:EURUSD:1m"),
            Some("EURUSD")
        );
        assert_eq!(
            keys.untagged_symbol("live", "bk:live:BRK.B:5s"),
            Some("BRK.B")
        );
        for other in [
            "bk:bars:{EURUSD}:1m",
            "bk:bars:EURUSD",
            "bk:bars:EURUSD:1m:x",
            "bk:bars:EURUSD:week",
            "bkx:bars:EURUSD:1m",
            "bk:live:EURUSD:1m",
            "bk:bars::1m",
        ] {
            assert_eq!(keys.untagged_symbol("bars", other), None, "{other}");
        }
        assert_eq!(
            Keys::new("a*b[c]").scan_pattern("bars"),
            r"a\*b\[c\]:bars:*"
        );
    }
}
