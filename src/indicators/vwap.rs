/*!
Session VWAP (TA-Lib has none): Σ(typical · volume) / Σ volume since the session start, with
typical = (high + low + close) / 3. Sessions are either `session_ms` long and start at
`offset_ms` after the Unix epoch modulo `session_ms` — UTC midnight with the defaults, which is
pandas-ta's `vwap(anchor="D")` — or, with a [`DailyAnchor`], a trading day that starts at a
local time in a market's zone (09:30 New York for US equities, 17:00 New York for FX),
daylight saving included. A bar belongs to the session containing its open time.

`None` while the session has no volume yet (0/0). Both sums are Neumaier-compensated
([`CompensatedSum`]), so a session of 86 400 one-second bars keeps full precision.
*/

use chrono::{DateTime, Datelike, Duration, NaiveTime, TimeZone};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::compensated::CompensatedSum;
use crate::model::Bar;

/// The zones trading days start in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Zone {
    NewYork,
    Chicago,
    London,
    Berlin,
    Tokyo,
}

impl Zone {
    fn tz(self) -> Tz {
        match self {
            Self::NewYork => chrono_tz::America::New_York,
            Self::Chicago => chrono_tz::America::Chicago,
            Self::London => chrono_tz::Europe::London,
            Self::Berlin => chrono_tz::Europe::Berlin,
            Self::Tokyo => chrono_tz::Asia::Tokyo,
        }
    }
}

/// A trading day starting every day at `start_min` minutes after local midnight in `zone`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DailyAnchor {
    pub zone: Zone,
    pub start_min: u16,
}

impl DailyAnchor {
    /// The session containing `ts` (Unix ms): its index (days since the common era of the
    /// local trading date) and its bounds `[start, end)` in Unix ms.
    fn session(self, ts: i64) -> (i64, i64, i64) {
        let tz = self.tz();
        let start = Duration::minutes(i64::from(self.start_min));
        let local = DateTime::from_timestamp_millis(ts)
            .unwrap_or_default()
            .with_timezone(&tz)
            .naive_local();
        let date = (local - start).date();
        let open = |d: chrono::NaiveDate| {
            let t = d.and_time(NaiveTime::MIN) + start;
            // The earliest instant at or after the local start (a DST gap moves it later).
            tz.from_local_datetime(&t)
                .earliest()
                .or_else(|| tz.from_local_datetime(&(t + Duration::hours(1))).earliest())
                .map_or(ts, |t| t.timestamp_millis())
        };
        let next = date.succ_opt().unwrap_or(date);
        (i64::from(date.num_days_from_ce()), open(date), open(next))
    }

    fn tz(self) -> Tz {
        self.zone.tz()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vwap {
    session_ms: i64,
    offset_ms: i64,
    #[serde(default)]
    daily: Option<DailyAnchor>,
    /// Bounds `[start, end)` of the current session, so a bar in it is placed without a
    /// time-zone conversion.
    #[serde(default)]
    bounds: (i64, i64),
    /// Index of the current session; `None` before the first bar.
    session: Option<i64>,
    price_volume: CompensatedSum,
    volume: CompensatedSum,
}

impl Vwap {
    /// `session_ms` > 0 (smaller is treated as 1); with `daily`, sessions are its trading days
    /// instead.
    pub fn new(session_ms: i64, offset_ms: i64, daily: Option<DailyAnchor>) -> Self {
        Self {
            session_ms: session_ms.max(1),
            offset_ms,
            daily,
            bounds: (0, 0),
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
        match self.daily {
            None => ts
                .saturating_sub(self.offset_ms)
                .div_euclid(self.session_ms),
            Some(_) if self.bounds.0 <= ts && ts < self.bounds.1 => self.session.unwrap_or(0),
            Some(anchor) => anchor.session(ts).0,
        }
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
        if let Some(anchor) = self.daily
            && self.session != Some(session)
        {
            let (_, start, end) = anchor.session(bar.ts);
            self.bounds = (start, end);
        }
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
        *self = Self::new(self.session_ms, self.offset_ms, self.daily);
    }

    pub(crate) fn is_consistent(
        &self,
        session_ms: i64,
        offset_ms: i64,
        daily: Option<DailyAnchor>,
    ) -> bool {
        self.session_ms == session_ms && self.offset_ms == offset_ms && self.daily == daily
    }
}
