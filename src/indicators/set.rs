/*!
The per-(symbol, timeframe) bundle: every indicator behind one `update(bar)`, with the
parameters, the fixed output order and names, forming-bar peeks and versioned checkpoints.
*/

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use super::vwap::DailyAnchor;
use super::{Atr, Bollinger, Ema, Macd, Obv, Rsi, Sma, Stochastic, Vwap};
use crate::model::{Bar, FEATURE_COUNT, Features};

/// Largest accepted period, TA-Lib's limit; also bounds the state a window can allocate.
pub const MAX_PERIOD: usize = 100_000;

/// Version of the checkpoint layout; bump it whenever a field of any indicator changes.
pub const CHECKPOINT_VERSION: u32 = 1;

/// Indicator periods and options. Defaults are TA-Lib's usual ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndicatorParams {
    pub sma: usize,
    pub ema_fast: usize,
    pub ema_slow: usize,
    pub rsi: usize,
    pub bb_period: usize,
    /// Band width in standard deviations (same for both bands).
    pub bb_k: f64,
    pub atr: usize,
    pub macd_fast: usize,
    pub macd_slow: usize,
    pub macd_signal: usize,
    /// Look-back of the raw %K (highest high / lowest low).
    pub stoch_k: usize,
    /// SMA smoothing raw %K into slow %K.
    pub stoch_slow_k: usize,
    /// SMA smoothing slow %K into %D.
    pub stoch_d: usize,
    /// VWAP session length.
    pub vwap_session_ms: i64,
    /// Session start after the Unix epoch (modulo the session length); 0 = UTC midnight.
    pub vwap_offset_ms: i64,
    /// VWAP sessions are the trading days of a market instead (set per symbol from its
    /// calendar unless `VWAP_SESSION`/`VWAP_OFFSET` are given).
    #[serde(default)]
    pub vwap_daily: Option<DailyAnchor>,
}

impl Default for IndicatorParams {
    fn default() -> Self {
        Self {
            sma: 20,
            ema_fast: 12,
            ema_slow: 26,
            rsi: 14,
            bb_period: 20,
            bb_k: 2.0,
            atr: 14,
            macd_fast: 12,
            macd_slow: 26,
            macd_signal: 9,
            stoch_k: 14,
            stoch_slow_k: 3,
            stoch_d: 3,
            vwap_session_ms: 86_400_000,
            vwap_offset_ms: 0,
            vwap_daily: None,
        }
    }
}

fn check_period(name: &str, value: usize, min: usize) -> Result<(), String> {
    if (min..=MAX_PERIOD).contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "{name} must be between {min} and {MAX_PERIOD}, got {value}"
        ))
    }
}

impl IndicatorParams {
    /// Checks that every indicator can be built from these parameters.
    ///
    /// # Errors
    /// A period of 0 (or below 2 for RSI, Bollinger bands and the MACD EMAs), a period above
    /// [`MAX_PERIOD`], `macd_fast` not below `macd_slow`, a non-finite or negative `bb_k`, or a
    /// `vwap_session_ms` ≤ 0. The message names the field and the value.
    pub fn validate(&self) -> Result<(), String> {
        check_period("sma", self.sma, 1)?;
        check_period("ema_fast", self.ema_fast, 1)?;
        check_period("ema_slow", self.ema_slow, 1)?;
        check_period("rsi", self.rsi, 2)?;
        check_period("bb_period", self.bb_period, 2)?;
        check_period("atr", self.atr, 1)?;
        check_period("macd_fast", self.macd_fast, 2)?;
        check_period("macd_slow", self.macd_slow, 2)?;
        check_period("macd_signal", self.macd_signal, 1)?;
        check_period("stoch_k", self.stoch_k, 1)?;
        check_period("stoch_slow_k", self.stoch_slow_k, 1)?;
        check_period("stoch_d", self.stoch_d, 1)?;
        if self.macd_fast >= self.macd_slow {
            return Err(format!(
                "macd_fast must be below macd_slow ({}), got {}",
                self.macd_slow, self.macd_fast
            ));
        }
        if !self.bb_k.is_finite() || self.bb_k < 0.0 {
            return Err(format!(
                "bb_k must be a finite number >= 0, got {}",
                self.bb_k
            ));
        }
        if self.vwap_session_ms <= 0 {
            return Err(format!(
                "vwap_session_ms must be positive, got {}",
                self.vwap_session_ms
            ));
        }
        Ok(())
    }

    /// The output names, in the order of [`Features::values`]; they follow the periods.
    pub fn feature_names(&self) -> [String; FEATURE_COUNT] {
        [
            format!("sma_{}", self.sma),
            format!("ema_{}", self.ema_fast),
            format!("ema_{}", self.ema_slow),
            format!("rsi_{}", self.rsi),
            "bb_upper".to_owned(),
            "bb_middle".to_owned(),
            "bb_lower".to_owned(),
            format!("atr_{}", self.atr),
            "macd".to_owned(),
            "macd_signal".to_owned(),
            "macd_hist".to_owned(),
            "stoch_k".to_owned(),
            "stoch_d".to_owned(),
            "obv".to_owned(),
            "vwap".to_owned(),
        ]
    }

    /// Bars needed before every output is ready (34 with the defaults, for MACD), assuming
    /// the session has volume (VWAP is undefined until it does).
    pub fn warmup_bars(&self) -> usize {
        let slow = self.macd_slow.max(self.macd_fast).max(1);
        let lookbacks = [
            self.sma.saturating_sub(1),
            self.ema_fast.saturating_sub(1),
            self.ema_slow.saturating_sub(1),
            self.rsi,
            self.bb_period.saturating_sub(1),
            self.atr,
            slow - 1 + self.macd_signal.saturating_sub(1),
            self.stoch_k.saturating_sub(1)
                + self.stoch_slow_k.saturating_sub(1)
                + self.stoch_d.saturating_sub(1),
        ];
        lookbacks.into_iter().max().unwrap_or(0) + 1
    }
}

/// Index constants into [`Features::values`], in the order of
/// [`IndicatorParams::feature_names`].
pub mod idx {
    pub const SMA: usize = 0;
    pub const EMA_FAST: usize = 1;
    pub const EMA_SLOW: usize = 2;
    pub const RSI: usize = 3;
    pub const BB_UPPER: usize = 4;
    pub const BB_MIDDLE: usize = 5;
    pub const BB_LOWER: usize = 6;
    pub const ATR: usize = 7;
    pub const MACD: usize = 8;
    pub const MACD_SIGNAL: usize = 9;
    pub const MACD_HIST: usize = 10;
    pub const STOCH_K: usize = 11;
    pub const STOCH_D: usize = 12;
    pub const OBV: usize = 13;
    pub const VWAP: usize = 14;
}

impl Features {
    /// All outputs missing.
    pub const EMPTY: Self = Self {
        values: [f64::NAN; FEATURE_COUNT],
    };

    /// Output `i` (see [`idx`]); `None` when not ready or out of range.
    pub fn get(&self, i: usize) -> Option<f64> {
        self.values.get(i).copied().filter(|v| !v.is_nan())
    }

    /// Whether every output is present.
    #[inline]
    pub fn is_ready(&self) -> bool {
        self.values.iter().all(|v| !v.is_nan())
    }
}

/// Why a checkpoint could not be restored. Every case means "warm up from stored bars
/// instead"; none is worth retrying.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint bytes do not decode: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error("checkpoint format version {found} is not supported (this build reads {expected})")]
    UnknownVersion { found: u32, expected: u32 },
    #[error("checkpoint was taken with different indicator parameters")]
    ParamsMismatch,
    #[error("checkpoint state is inconsistent with its parameters")]
    Inconsistent,
}

/// Every indicator of one (symbol, timeframe). Plain data: clone it, serialise it, restore it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndicatorSet {
    params: IndicatorParams,
    sma: Sma,
    ema_fast: Ema,
    ema_slow: Ema,
    rsi: Rsi,
    bb: Bollinger,
    atr: Atr,
    macd: Macd,
    stoch: Stochastic,
    obv: Obv,
    vwap: Vwap,
    bars_seen: u64,
    last_ts: Option<i64>,
}

#[inline]
fn nan_if_none(v: Option<f64>) -> f64 {
    v.unwrap_or(f64::NAN)
}

/// Lays the indicator outputs out in the order of [`idx`].
#[allow(
    clippy::too_many_arguments,
    reason = "one argument per indicator, in output order"
)]
#[inline]
fn assemble(
    sma: Option<f64>,
    ema_fast: Option<f64>,
    ema_slow: Option<f64>,
    rsi: Option<f64>,
    bb: Option<super::Bands>,
    atr: Option<f64>,
    macd: Option<super::MacdValue>,
    stoch: Option<super::StochValue>,
    obv: Option<f64>,
    vwap: Option<f64>,
) -> Features {
    Features {
        values: [
            nan_if_none(sma),
            nan_if_none(ema_fast),
            nan_if_none(ema_slow),
            nan_if_none(rsi),
            nan_if_none(bb.map(|b| b.upper)),
            nan_if_none(bb.map(|b| b.middle)),
            nan_if_none(bb.map(|b| b.lower)),
            nan_if_none(atr),
            nan_if_none(macd.map(|m| m.macd)),
            nan_if_none(macd.map(|m| m.signal)),
            nan_if_none(macd.map(|m| m.hist)),
            nan_if_none(stoch.map(|s| s.k)),
            nan_if_none(stoch.map(|s| s.d)),
            nan_if_none(obv),
            nan_if_none(vwap),
        ],
    }
}

impl IndicatorSet {
    /// Builds every indicator, allocating all windows now. Parameters are expected to have
    /// passed [`IndicatorParams::validate`]; out-of-range periods are clamped, not rejected.
    pub fn new(params: &IndicatorParams) -> Self {
        let p = params;
        Self {
            params: p.clone(),
            sma: Sma::new(p.sma),
            ema_fast: Ema::new(p.ema_fast),
            ema_slow: Ema::new(p.ema_slow),
            rsi: Rsi::new(p.rsi),
            bb: Bollinger::new(p.bb_period, p.bb_k),
            atr: Atr::new(p.atr),
            macd: Macd::new(p.macd_fast, p.macd_slow, p.macd_signal),
            stoch: Stochastic::new(p.stoch_k, p.stoch_slow_k, p.stoch_d),
            obv: Obv::new(),
            vwap: Vwap::new(p.vwap_session_ms, p.vwap_offset_ms, p.vwap_daily),
            bars_seen: 0,
            last_ts: None,
        }
    }

    /// Commits a closed bar (O(1), no allocation) and returns the outputs after it.
    #[inline]
    pub fn update(&mut self, bar: &Bar) -> Features {
        let close = bar.close;
        let features = assemble(
            self.sma.update(close),
            self.ema_fast.update(close),
            self.ema_slow.update(close),
            self.rsi.update(close),
            self.bb.update(close),
            self.atr.update(bar),
            self.macd.update(close),
            self.stoch.update(bar),
            self.obv.update(bar),
            self.vwap.update(bar),
        );
        self.bars_seen += 1;
        self.last_ts = Some(bar.ts);
        features
    }

    /// The outputs as if `forming` were the next closed bar. The state is untouched, so a
    /// forming bar can be re-evaluated on every tick and closed later with [`update`]
    /// (which returns the same bits).
    ///
    /// [`update`]: IndicatorSet::update
    #[inline]
    pub fn peek(&self, forming: &Bar) -> Features {
        let close = forming.close;
        assemble(
            self.sma.peek(close),
            self.ema_fast.peek(close),
            self.ema_slow.peek(close),
            self.rsi.peek(close),
            self.bb.peek(close),
            self.atr.peek(forming),
            self.macd.peek(close),
            self.stoch.peek(forming),
            self.obv.peek(forming),
            self.vwap.peek(forming),
        )
    }

    /// The outputs after the last committed bar (all missing before any).
    pub fn last(&self) -> Features {
        assemble(
            self.sma.value(),
            self.ema_fast.value(),
            self.ema_slow.value(),
            self.rsi.value(),
            self.bb.value(),
            self.atr.value(),
            self.macd.value(),
            self.stoch.value(),
            self.obv.value(),
            self.vwap.value(),
        )
    }

    pub fn bars_seen(&self) -> u64 {
        self.bars_seen
    }

    /// Open time of the last committed bar.
    pub fn last_ts(&self) -> Option<i64> {
        self.last_ts
    }

    pub fn params(&self) -> &IndicatorParams {
        &self.params
    }

    /// Back to the state of [`IndicatorSet::new`], keeping the allocations.
    pub fn reset(&mut self) {
        self.sma.reset();
        self.ema_fast.reset();
        self.ema_slow.reset();
        self.rsi.reset();
        self.bb.reset();
        self.atr.reset();
        self.macd.reset();
        self.stoch.reset();
        self.obv.reset();
        self.vwap.reset();
        self.bars_seen = 0;
        self.last_ts = None;
    }

    /// The whole state as MessagePack, prefixed by [`CHECKPOINT_VERSION`].
    pub fn checkpoint(&self) -> Vec<u8> {
        // Encoding numbers, options and vectors into a Vec has no failure path; an empty
        // result would in any case be refused by `restore`.
        rmp_serde::to_vec(&(CHECKPOINT_VERSION, self)).unwrap_or_default()
    }

    /// Rebuilds a set from [`checkpoint`](IndicatorSet::checkpoint) bytes; it continues
    /// exactly as the checkpointed one would have.
    ///
    /// # Errors
    /// Bytes that do not decode, a format version this build does not read, parameters
    /// different from `params`, or windows whose shape does not match the parameters.
    pub fn restore(bytes: &[u8], params: &IndicatorParams) -> Result<Self, CheckpointError> {
        let (found, _): (u32, IgnoredAny) = rmp_serde::from_slice(bytes)?;
        if found != CHECKPOINT_VERSION {
            return Err(CheckpointError::UnknownVersion {
                found,
                expected: CHECKPOINT_VERSION,
            });
        }
        let (_, set): (u32, Self) = rmp_serde::from_slice(bytes)?;
        if set.params != *params {
            return Err(CheckpointError::ParamsMismatch);
        }
        if !set.is_consistent() {
            return Err(CheckpointError::Inconsistent);
        }
        Ok(set)
    }

    /// Whether every window has the shape its parameters imply, so a decoded checkpoint
    /// cannot index out of bounds later.
    fn is_consistent(&self) -> bool {
        let p = &self.params;
        p.validate().is_ok()
            && self.sma.is_consistent(p.sma)
            && self.ema_fast.is_consistent(p.ema_fast)
            && self.ema_slow.is_consistent(p.ema_slow)
            && self.rsi.is_consistent(p.rsi)
            && self.bb.is_consistent(p.bb_period, p.bb_k)
            && self.atr.is_consistent(p.atr)
            && self
                .macd
                .is_consistent(p.macd_fast, p.macd_slow, p.macd_signal)
            && self
                .stoch
                .is_consistent(p.stoch_k, p.stoch_slow_k, p.stoch_d)
            && self
                .vwap
                .is_consistent(p.vwap_session_ms, p.vwap_offset_ms, p.vwap_daily)
    }

    /// Bytes this set occupies: the struct itself plus its window buffers.
    pub fn state_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.sma.heap_bytes()
            + self.bb.heap_bytes()
            + self.stoch.heap_bytes()
    }
}
