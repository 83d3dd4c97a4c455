/*!
The plain data that flows through barkeep: symbols, timeframes, quotes, bars, and (in
`event.rs`) what the pipeline emits — events, tick batches, checkpoints and their parts. This
module imports nothing else of the crate, so every room can use it.

Everything here is `Copy` or cheap to clone so the per-tick path never allocates for it. A
symbol travels as a [`SymbolId`] (an index into the [`SymbolTable`]); its name is only looked up
at the edges (sinks, HTTP, logs).
*/

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

mod alert;
mod event;
mod redis_target;
pub use alert::{AlertRule, Severity};
pub use event::{
    BarRecord, Checkpoint, Event, FEATURE_COUNT, Features, Gap, RejectReason, RejectRecord,
    Session, TickBatch,
};
pub use redis_target::RedisTarget;

/// Index of a symbol in the [`SymbolTable`]: fixed for the life of the process, never reused.
pub type SymbolId = u32;

/// The symbols this process knows, in the order they became known: `SYMBOLS` at start, then
/// those added at run time (`/streaming/config/instruments`). `SymbolId` indexes into it.
///
/// Shared (a clone is the same table) and append-only: an id keeps its name for the life of the
/// process, so every per-symbol `Vec` indexed by id stays right and only has to grow when it
/// meets an id it has not seen. A symbol deleted at run time keeps its id but is *inactive*
/// (not collected, not listed); added again, it is active under the same id. Reading a name is
/// lock-free ([`boxcar::Vec`] never moves its elements); adding takes a lock.
///
/// Every change of the active set (a symbol added, made active again, or deactivated) is
/// announced on one watch channel, [`SymbolTable::changes`]: the one way everything that follows
/// the instrument set at run time (the push streams' subscriptions, the background bootstrap)
/// learns of it, and then reads the table itself.
#[derive(Clone, Default)]
pub struct SymbolTable {
    inner: Arc<TableInner>,
}

struct TableInner {
    entries: boxcar::Vec<Entry>,
    /// Upper-cased name → id, for [`SymbolTable::id`] (a linear scan cost ~10 µs per HTTP
    /// request at 10 000 symbols). Written only by [`SymbolTable::add`], under this lock,
    /// which also keeps ids dense.
    index: RwLock<HashMap<Box<str>, SymbolId>>,
    /// Changes of the active set so far; bumped after each one is visible in `entries`.
    changed: tokio::sync::watch::Sender<u64>,
}

impl Default for TableInner {
    fn default() -> Self {
        Self {
            entries: boxcar::Vec::new(),
            index: RwLock::default(),
            changed: tokio::sync::watch::Sender::new(0),
        }
    }
}

struct Entry {
    name: Arc<str>,
    active: AtomicBool,
}

impl fmt::Debug for SymbolTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter().map(|(_, n)| n)).finish()
    }
}

impl SymbolTable {
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(names: I) -> Self {
        let table = Self::default();
        for name in names {
            table.add(name.as_ref());
        }
        table
    }

    /// Makes `name` known and active; returns its id and whether it is new to the table (a
    /// name seen before, active or not, keeps its id).
    pub fn add(&self, name: &str) -> (SymbolId, bool) {
        let mut index = self.inner.index.write();
        if let Some(&id) = index.get(name.to_ascii_uppercase().as_str()) {
            let was = self.inner.entries[id as usize]
                .active
                .swap(true, Ordering::AcqRel);
            if !was {
                self.announce();
            }
            return (id, false);
        }
        let id = self.inner.entries.push(Entry {
            name: Arc::from(name),
            active: AtomicBool::new(true),
        }) as SymbolId;
        index.insert(name.to_ascii_uppercase().into_boxed_str(), id);
        self.announce();
        (id, true)
    }

    /// Makes a symbol inactive; its id and name stay. Returns whether it was active.
    pub fn deactivate(&self, id: SymbolId) -> bool {
        let was = self
            .inner
            .entries
            .get(id as usize)
            .is_some_and(|e| e.active.swap(false, Ordering::AcqRel));
        if was {
            self.announce();
        }
        was
    }

    /// Tells every [`SymbolTable::changes`] receiver (if any) that the active set changed.
    fn announce(&self) {
        self.inner.changed.send_modify(|n| *n += 1);
    }

    /// A receiver that wakes after each later change of the active set (changes close together
    /// may wake it once); the value counts the changes so far. Read the table itself for what
    /// changed.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    /// Ids ever given out, active or not: the length every per-symbol `Vec` grows to.
    pub fn len(&self) -> usize {
        self.inner.entries.count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the symbol is collected (not deleted at run time).
    pub fn is_active(&self, id: SymbolId) -> bool {
        self.inner
            .entries
            .get(id as usize)
            .is_some_and(|e| e.active.load(Ordering::Acquire))
    }

    /// How many symbols are active.
    pub fn active_len(&self) -> usize {
        self.active().count()
    }

    /// The name of a symbol, active or not.
    ///
    /// Ids are only ever created from this table, so an out-of-range id is a bug; it panics
    /// like any slice index would.
    pub fn name(&self, id: SymbolId) -> &Arc<str> {
        &self.inner.entries[id as usize].name
    }

    /// Case-insensitive look-up of an active symbol, as users type symbols in URLs.
    pub fn id(&self, name: &str) -> Option<SymbolId> {
        self.find(name).filter(|&id| self.is_active(id))
    }

    /// Case-insensitive look-up, active or not.
    pub fn find(&self, name: &str) -> Option<SymbolId> {
        let index = self.inner.index.read();
        if name.bytes().any(|b| b.is_ascii_lowercase()) {
            index.get(name.to_ascii_uppercase().as_str()).copied()
        } else {
            index.get(name).copied()
        }
    }

    /// Every id with its name, active or not, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (SymbolId, &Arc<str>)> {
        self.inner
            .entries
            .iter()
            .map(|(i, e)| (i as SymbolId, &e.name))
    }

    /// The active symbols, in id order.
    pub fn active(&self) -> impl Iterator<Item = (SymbolId, &Arc<str>)> {
        self.inner
            .entries
            .iter()
            .filter(|(_, e)| e.active.load(Ordering::Acquire))
            .map(|(i, e)| (i as SymbolId, &e.name))
    }
}

/// A bar length. Bars are aligned to multiples of it since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Timeframe {
    ms: i64,
}

impl Timeframe {
    /// # Errors
    /// When `ms` is not positive.
    pub fn from_ms(ms: i64) -> Result<Self, String> {
        if ms <= 0 {
            return Err(format!("timeframe must be positive, got {ms} ms"));
        }
        Ok(Self { ms })
    }

    pub fn ms(self) -> i64 {
        self.ms
    }

    /// Open time of the bar that contains `ts_ms`.
    pub fn bucket(self, ts_ms: i64) -> i64 {
        ts_ms.div_euclid(self.ms) * self.ms
    }
}

impl FromStr for Timeframe {
    type Err = String;

    /// `1s`, `15s`, `1m`, `5m`, `1h`, `4h`, `1d`.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("timeframe `{s}` has no unit (use s, m, h or d)"))?;
        let (n, unit) = s.split_at(split);
        let n: i64 = n
            .parse()
            .map_err(|_| format!("timeframe `{s}` must start with a whole number"))?;
        let unit_ms = match unit {
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => {
                return Err(format!(
                    "timeframe `{s}` has unknown unit `{unit}` (use s, m, h or d)"
                ));
            }
        };
        if n == 0 {
            return Err(format!("timeframe `{s}` must be at least 1{unit}"));
        }
        let ms = n
            .checked_mul(unit_ms)
            .ok_or_else(|| format!("timeframe `{s}` is too long"))?;
        Self::from_ms(ms)
    }
}

impl fmt::Display for Timeframe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.ms;
        let (n, unit) = if ms % 86_400_000 == 0 {
            (ms / 86_400_000, "d")
        } else if ms % 3_600_000 == 0 {
            (ms / 3_600_000, "h")
        } else if ms % 60_000 == 0 {
            (ms / 60_000, "m")
        } else if ms % 1_000 == 0 {
            (ms / 1_000, "s")
        } else {
            (ms, "ms")
        };
        write!(f, "{n}{unit}")
    }
}

/// One observation of a symbol's price from a source.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quote {
    pub symbol: SymbolId,
    /// Provider time of the observation, Unix milliseconds.
    pub ts: i64,
    pub price: f64,
    /// Volume traded since the previous quote of this symbol from the same source.
    pub volume: f64,
}

/// An OHLCV bar. `ts` is the bar's open time in Unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bar {
    pub ts: i64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: f64,
}

impl Bar {
    /// A bar made of one price observation.
    pub fn from_price(ts: i64, price: f64, volume: f64) -> Self {
        Self {
            ts,
            open: price,
            high: price,
            low: price,
            close: price,
            volume,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_are_found_whatever_their_case() {
        let table = SymbolTable::new(["NAS100", "EURUSD", "BTC-USD"]);
        assert_eq!(table.id("EURUSD"), Some(1));
        assert_eq!(table.id("eurusd"), Some(1));
        assert_eq!(table.id("btc-Usd"), Some(2));
        assert_eq!(table.id("EURUSD "), None);
        assert_eq!(table.id("GBPUSD"), None);
        let many = SymbolTable::new((0..10_000).map(|i| format!("S{i}")));
        assert_eq!(many.id("s9999"), Some(9_999));
        assert_eq!(&**many.name(many.id("S4321").expect("known")), "S4321");
    }

    #[test]
    fn added_symbols_get_new_ids_and_deleted_ones_keep_theirs() {
        let table = SymbolTable::new(["NAS100", "EURUSD"]);
        let shared = table.clone();
        assert_eq!(shared.add("aapl"), (2, true));
        assert_eq!(table.len(), 3);
        assert_eq!(&**table.name(2), "aapl");
        assert_eq!(table.id("AAPL"), Some(2));
        assert!(table.deactivate(1));
        assert!(!table.deactivate(1));
        assert_eq!(table.id("EURUSD"), None, "inactive: not found by users");
        assert_eq!(table.find("eurusd"), Some(1));
        assert_eq!(table.active().map(|(id, _)| id).collect::<Vec<_>>(), [0, 2]);
        assert_eq!(table.iter().count(), 3);
        assert_eq!(table.add("EURUSD"), (1, false), "added again: the same id");
        assert!(table.is_active(1));
        assert_eq!(table.active_len(), 3);
    }

    #[test]
    fn every_change_of_the_active_set_is_announced_once() {
        let table = SymbolTable::new(["NAS100"]);
        let mut changes = table.changes();
        assert!(
            !changes.has_changed().expect("open"),
            "a receiver starts seen"
        );
        table.add("nas100");
        assert!(
            !changes.has_changed().expect("open"),
            "active already: no change"
        );
        table.add("EURUSD");
        assert!(changes.has_changed().expect("open"));
        assert_eq!(*changes.borrow_and_update(), 2);
        assert!(!table.deactivate(5), "unknown id");
        assert!(table.deactivate(1));
        assert!(!table.deactivate(1));
        assert_eq!(*changes.borrow_and_update(), 3, "deactivated once");
        table.add("eurusd");
        assert_eq!(*changes.borrow_and_update(), 4, "active again");
    }
}
