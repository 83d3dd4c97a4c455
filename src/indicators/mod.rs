/*!
Incremental technical indicators, exact to TA-Lib from bar 0 (warm-up seeding included), O(1)
per bar, allocation-free after construction, forming-bar aware and resumable.

Files:
- `set.rs` — [`IndicatorSet`], the per-(symbol, timeframe) bundle the pipeline calls:
  [`IndicatorParams`] (periods, names, warm-up), [`Features`] (15 outputs in [`idx`] order),
  `update` / `peek` / `last`, and versioned MessagePack checkpoints ([`CheckpointError`]).
- `sma.rs` — [`Sma`]; `ema.rs` — [`Ema`]; `rsi.rs` — [`Rsi`] (Wilder);
  `bbands.rs` — [`Bollinger`] ([`Bands`]); `atr.rs` — [`Atr`] (Wilder);
  `macd.rs` — [`Macd`] ([`MacdValue`], TA-Lib's own warm-up seeding);
  `stoch.rs` — [`Stochastic`] ([`StochValue`], slow %K/%D with SMA smoothing);
  `obv.rs` — [`Obv`]; `vwap.rs` — [`Vwap`] (session-anchored).
- `window.rs` — the sliding windows the indicators share: ring buffer, running sum, running
  moments, monotonic deque for rolling extremes.
- `compensated.rs` — the Neumaier-compensated sum behind the cumulative OBV and VWAP.

Every indicator has `new(periods..)`, `update` (commit a closed bar, return its output),
`peek` (the output as if a forming bar closed now, from `&self`), `value`, `is_ready` and
`reset`, and is plain serde data. `update` computes through the very code `peek` uses and then
commits, so peeking a forming bar any number of times and then closing it gives the same bits
as one `update` — it can never be counted twice.

Reference: TA-Lib 0.8.1 as bundled in `ta-lib==0.8.2` (`scripts/golden.py` regenerates the
fixtures; `tests/golden.rs` checks every output at every bar within 1e-9 relative). Where that
build differs from older TA-Lib descriptions, barkeep follows the build: RSI is 0 only when the
sum of the average gain and loss is exactly 0, and a small but real standard deviation is not
zeroed by a fixed 1e-14.
EMA, ATR and RSI use TA-Lib's exact arithmetic (including its fused multiply-adds) and are
bit-identical to it; MACD rounds its EMA steps unfused (see `macd.rs`) and agrees to an ulp or
two; the windowed sums (SMA, Bollinger, stochastic smoothing) and the cumulative ones (OBV,
VWAP) are drift-proofed instead and agree to ~1e-13 or better.

Drift is bounded by construction, never by hope: the windowed sums are re-summed from their
stored window periodically (SMA, stoch smoothing) or rebuilt from it when they lose precision
(Bollinger variance, kept as deviations from a shift inside the window), the cumulative sums
are compensated (OBV, VWAP), and the exponential recursions (EMA, MACD, RSI, ATR) are
contractive. `tests/indicators.rs` checks this over ten million 1-second bars.

Input assumptions — the validator refuses anything else before it reaches the engine: prices
finite and > 0, `low <= open, close <= high`, volume finite and >= 0, bars of one set in
increasing `ts` order, closed bars committed once. Invalid input is not detected here: NaN
propagates into the outputs that see it (and stays in the running state), and `high < low`
gives meaningless ranges.
*/

mod atr;
mod bbands;
mod compensated;
mod ema;
mod macd;
mod obv;
mod rsi;
mod set;
mod sma;
mod stoch;
mod vwap;
pub mod window;

pub use atr::Atr;
pub use bbands::{Bands, Bollinger};
pub use compensated::CompensatedSum;
pub use ema::Ema;
pub use macd::{Macd, MacdValue};
pub use obv::Obv;
pub use rsi::Rsi;
pub use set::{
    CHECKPOINT_VERSION, CheckpointError, IndicatorParams, IndicatorSet, MAX_PERIOD, idx,
};
pub use sma::Sma;
pub use stoch::{StochValue, Stochastic};
pub use vwap::{DailyAnchor, Vwap, Zone};
