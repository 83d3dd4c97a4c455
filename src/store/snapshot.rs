/*!
The in-process latest state: per symbol, the forming and last closed bar and their features per
timeframe, swapped in whole by the collector after each tick (arc-swap), so HTTP handlers read a
consistent view without taking a lock or waiting for the collector.
*/

use arc_swap::ArcSwapOption;
use serde::ser::{SerializeMap, Serializer};
use std::sync::{Arc, OnceLock};

use crate::indicators::IndicatorParams;
use crate::model::{BarRecord, FEATURE_COUNT, Features, Session, SymbolId, SymbolTable, Timeframe};

/// The latest of one timeframe of one symbol.
#[derive(Debug, Clone, Default)]
pub struct FrameView {
    pub forming: Option<(BarRecord, Features)>,
    pub last_closed: Option<(BarRecord, Features)>,
    /// The HTTP bodies of this view, made on first request.
    pub bodies: BodyCache,
}

/// The `/features` and `/signals` bodies of a published view, serialised once by the first
/// request that needs them (`api::handlers`); later requests only append what depends on
/// the time of the request. A clone starts empty, so the collector's working copy, which is
/// cloned into each published view, never carries a body of older data.
#[derive(Debug, Default)]
pub struct BodyCache {
    pub features: OnceLock<CachedBody>,
    pub signals: OnceLock<CachedBody>,
}

impl Clone for BodyCache {
    fn clone(&self) -> Self {
        Self::default()
    }
}

/// A body serialised once per published view, without the fields that depend on the time of
/// the request and without its closing brace (each request appends those and closes it), with
/// the signal score the confidence is derived from.
#[derive(Debug)]
pub struct CachedBody {
    pub text: Vec<u8>,
    pub score: i32,
}

impl FrameView {
    /// The freshest features: the forming bar's if there is one, else the last closed bar's.
    pub fn latest(&self) -> Option<(&BarRecord, &Features, bool)> {
        match (&self.forming, &self.last_closed) {
            (Some((r, f)), _) => Some((r, f, true)),
            (None, Some((r, f))) => Some((r, f, false)),
            (None, None) => None,
        }
    }
}

/// The latest of one symbol.
#[derive(Debug, Clone, Default)]
pub struct SymbolView {
    /// One per configured timeframe, in configuration order.
    pub frames: Vec<FrameView>,
    /// Provider time of the newest accepted data, Unix ms.
    pub last_data_ms: Option<i64>,
    /// Source of the newest accepted data.
    pub source: Option<&'static str>,
    /// The market session as of the last tick (`None` before the first).
    pub session: Option<Session>,
}

/// What `/health` reads of each symbol.
#[derive(Debug, Clone, Copy, Default)]
pub struct Freshness {
    pub last_data_ms: Option<i64>,
    pub source: Option<&'static str>,
    pub session: Option<Session>,
}

/// All symbols' latest views plus what is needed to present them.
pub struct Snapshot {
    pub symbols: SymbolTable,
    pub timeframes: Vec<Timeframe>,
    pub feature_names: [String; FEATURE_COUNT],
    /// `timeframes` as text, e.g. `1m`.
    pub timeframe_names: Vec<String>,
    /// Indexed by symbol id; grows (never moves) when the collector first publishes a symbol
    /// added at run time.
    views: boxcar::Vec<ArcSwapOption<SymbolView>>,
}

impl Snapshot {
    pub fn new(symbols: SymbolTable, timeframes: Vec<Timeframe>, params: &IndicatorParams) -> Self {
        Self {
            views: (0..symbols.len()).map(|_| ArcSwapOption::empty()).collect(),
            symbols,
            timeframe_names: timeframes.iter().map(ToString::to_string).collect(),
            timeframes,
            feature_names: params.feature_names(),
        }
    }

    pub fn get(&self, symbol: SymbolId) -> Option<Arc<SymbolView>> {
        self.views
            .get(symbol as usize)
            .and_then(ArcSwapOption::load_full)
    }

    /// Provider time of a symbol's newest data, its source and its market session, read
    /// without taking a reference to the view (what `/health` needs for every symbol).
    pub fn freshness(&self, symbol: SymbolId) -> Freshness {
        self.views
            .get(symbol as usize)
            .map_or(Freshness::default(), |slot| {
                let guard = slot.load();
                guard.as_ref().map_or(Freshness::default(), |v| Freshness {
                    last_data_ms: v.last_data_ms,
                    source: v.source,
                    session: v.session,
                })
            })
    }

    /// Swaps in a symbol's view. Only the collector publishes, so growing here (for a symbol
    /// added at run time) has one writer.
    pub fn publish(&self, symbol: SymbolId, view: Arc<SymbolView>) {
        self.set(symbol, Some(view));
    }

    /// Forgets a symbol's view (deleted at run time): it is no longer collected.
    pub fn clear(&self, symbol: SymbolId) {
        self.set(symbol, None);
    }

    fn set(&self, symbol: SymbolId, view: Option<Arc<SymbolView>>) {
        while self.views.count() <= symbol as usize {
            self.views.push(ArcSwapOption::empty());
        }
        if let Some(slot) = self.views.get(symbol as usize) {
            slot.store(view);
        }
    }

    pub fn frame_index(&self, timeframe: Timeframe) -> Option<usize> {
        self.timeframes.iter().position(|&t| t == timeframe)
    }
}

/// Features as a map of the configured names to values, `null` (MessagePack `nil`) until an
/// indicator is ready: the one shape used by HTTP, Redis and `replay`. Serialised directly,
/// without building an intermediate map.
#[derive(Clone, Copy)]
pub struct NamedFeatures<'a> {
    pub names: &'a [String; FEATURE_COUNT],
    pub features: &'a Features,
}

impl serde::Serialize for NamedFeatures<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(FEATURE_COUNT))?;
        for (name, v) in self.names.iter().zip(self.features.values) {
            map.serialize_entry(name, &v.is_finite().then_some(v))?;
        }
        map.end()
    }
}
