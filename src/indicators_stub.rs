//! TEMPORARY stub of the indicator interface while the engine is written. Not committed.
use crate::model::Bar;
pub const FEATURE_COUNT: usize = 15;
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct IndicatorParams {
    pub sma: usize,
    pub ema_fast: usize,
    pub ema_slow: usize,
    pub rsi: usize,
    pub bb_period: usize,
    pub bb_k: f64,
    pub atr: usize,
    pub macd_fast: usize,
    pub macd_slow: usize,
    pub macd_signal: usize,
    pub stoch_k: usize,
    pub stoch_slow_k: usize,
    pub stoch_d: usize,
    pub vwap_session_ms: i64,
    pub vwap_offset_ms: i64,
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
        }
    }
}
impl IndicatorParams {
    pub fn validate(&self) -> Result<(), String> {
        Ok(())
    }
    pub fn feature_names(&self) -> [String; FEATURE_COUNT] {
        std::array::from_fn(|i| format!("f{i}"))
    }
    pub fn warmup_bars(&self) -> usize {
        34
    }
}
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Features {
    pub values: [f64; FEATURE_COUNT],
}
impl Features {
    pub fn get(&self, i: usize) -> Option<f64> {
        let v = self.values[i];
        (!v.is_nan()).then_some(v)
    }
    pub fn is_ready(&self) -> bool {
        self.values.iter().all(|v| !v.is_nan())
    }
}
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
#[derive(Debug, thiserror::Error)]
#[error("bad checkpoint")]
pub struct CheckpointError;
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct IndicatorSet {
    params: IndicatorParams,
    n: u64,
    last: Option<i64>,
    close: f64,
}
impl IndicatorSet {
    pub fn new(params: &IndicatorParams) -> Self {
        Self {
            params: params.clone(),
            n: 0,
            last: None,
            close: f64::NAN,
        }
    }
    pub fn update(&mut self, bar: &Bar) -> Features {
        self.n += 1;
        self.last = Some(bar.ts);
        self.close = bar.close;
        self.last()
    }
    pub fn peek(&self, bar: &Bar) -> Features {
        let mut f = self.last();
        f.values[0] = bar.close;
        f
    }
    pub fn last(&self) -> Features {
        Features {
            values: [self.close; FEATURE_COUNT],
        }
    }
    pub fn bars_seen(&self) -> u64 {
        self.n
    }
    pub fn last_ts(&self) -> Option<i64> {
        self.last
    }
    pub fn params(&self) -> &IndicatorParams {
        &self.params
    }
    pub fn checkpoint(&self) -> Vec<u8> {
        rmp_serde::to_vec(self).unwrap_or_default()
    }
    pub fn restore(bytes: &[u8], _p: &IndicatorParams) -> Result<Self, CheckpointError> {
        rmp_serde::from_slice(bytes).map_err(|_| CheckpointError)
    }
}
