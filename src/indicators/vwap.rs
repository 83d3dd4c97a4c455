/*!
Session VWAP (TA-Lib has none): Σ(typical · volume) / Σ volume since the session start, with
typical = (high + low + close) / 3. Sessions are `session_ms` long and start at
`offset_ms` after the Unix epoch modulo `session_ms` — UTC midnight with the defaults — which is
pandas-ta's `vwap(anchor="D")`. A bar belongs to the session containing its open time.

`None` while the session has no volume yet (0/0). Both sums are Neumaier-compensated
([`CompensatedSum`]), so a session of 86 400 one-second bars keeps full precision.
*/

use serde::{Deserialize, Serialize};

use super::compensated::CompensatedSum;
use crate::model::Bar;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vwap {
    session_ms: i64,
    offset_ms: i64,
    /// Index of the current session; `None` before the first bar.
    session: Option<i64>,
    price_volume: CompensatedSum,
    volume: CompensatedSum,
}

impl Vwap {
    /// `session_ms` > 0 (smaller is treated as 1).
    pub fn new(session_ms: i64, offset_ms: i64) -> Self {
        Self {
            session_ms: session_ms.max(1),
            offset_ms,
            session: None,
            price_volume: CompensatedSum::ZERO,
            volume: CompensatedSum::ZERO,
        }
    }

    #[inline]
    pub fn lookback(&self) -> usize {
        0
    }

    /// The session a bar opening at `ts` (Unix ms) belongs to.
    #[inline]
    pub fn session_of(&self, ts: i64) -> i64 {
        ts.saturating_sub(self.offset_ms)
            .div_euclid(self.session_ms)
    }

    #[inline]
    fn step(&self, bar: &Bar) -> (i64, CompensatedSum, CompensatedSum) {
        let session = self.session_of(bar.ts);
        let (pv, v) = if self.session == Some(session) {
            (self.price_volume, self.volume)
        } else {
            (CompensatedSum::ZERO, CompensatedSum::ZERO)
        };
        let typical = (bar.high + bar.low + bar.close) / 3.0;
        (session, pv.plus(typical * bar.volume), v.plus(bar.volume))
    }

    #[inline]
    fn ratio(price_volume: &CompensatedSum, volume: &CompensatedSum) -> Option<f64> {
        let v = volume.value();
        (v > 0.0).then(|| price_volume.value() / v)
    }

    #[inline]
    pub fn peek(&self, bar: &Bar) -> Option<f64> {
        let (_, pv, v) = self.step(bar);
        Self::ratio(&pv, &v)
    }

    #[inline]
    pub fn update(&mut self, bar: &Bar) -> Option<f64> {
        let (session, pv, v) = self.step(bar);
        self.session = Some(session);
        self.price_volume = pv;
        self.volume = v;
        Self::ratio(&pv, &v)
    }

    #[inline]
    pub fn value(&self) -> Option<f64> {
        Self::ratio(&self.price_volume, &self.volume)
    }

    #[inline]
    pub fn is_ready(&self) -> bool {
        self.value().is_some()
    }

    pub fn reset(&mut self) {
        *self = Self::new(self.session_ms, self.offset_ms);
    }

    pub(crate) fn is_consistent(&self, session_ms: i64, offset_ms: i64) -> bool {
        self.session_ms == session_ms && self.offset_ms == offset_ms
    }
}
