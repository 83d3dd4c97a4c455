/*!
Market calendars: when each symbol's market is open.

| calendar | hours | from |
|---|---|---|
| `always` | 24/7 (crypto, the simulated market) | — |
| `fx` | Sunday 17:00 to Friday 17:00 New York time, no daily break | written here |
| `us_equity` | NYSE regular hours 09:30–16:00 New York, holidays and early closes | `exchange-hours` |
| `cme_index` | CME Globex equity-index futures (17:00–16:00 Chicago, daily break) | `exchange-hours` |
| `cme_metals` | CME Globex metals and energy futures (same week, their holidays) | `exchange-hours` |
| `xetra`, `lse`, `tse` | Frankfurt, London and Tokyo cash markets | `exchange-hours` |

Exchange calendars come from the `exchange-hours` crate (sourced schedules and holiday tables,
DST-exact). Spot FX is written here because no venue publishes it: the interbank week is a
market convention, and the crate's FX families are a broker's or CME's futures hours (an hour
later on Sunday, with a daily break spot FX does not have). Where the crate's holiday tables
end, it reads the venue's normal week (and, before them, the first week it knows) rather than
refusing, so a calendar always answers.

This module owns the question "open at t, and until when"; what a closed market means for
validation, bars and health is decided by the pipeline and the API.
*/

use chrono::{DateTime, Datelike, Duration, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::America::New_York;
use exchange_hours::{Exchange, ExchangeCalendar, MarketHoursKey, SessionKind};

use crate::indicators::{DailyAnchor, Zone};
use crate::instrument::{Instrument, classify};
use crate::model::Session;

/// One trading calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MarketCalendar {
    Always,
    Fx,
    UsEquity,
    CmeIndex,
    CmeMetals,
    Xetra,
    Lse,
    Tse,
}

impl Session {
    pub const ALWAYS_OPEN: Self = Self {
        open: true,
        since_ms: i64::MIN,
        until_ms: i64::MAX,
    };

    /// Whether this answer still holds at `ts_ms`.
    pub fn covers(&self, ts_ms: i64) -> bool {
        self.since_ms <= ts_ms && ts_ms < self.until_ms
    }

    pub fn label(&self) -> &'static str {
        if self.open { "open" } else { "closed" }
    }
}

/// How far ahead a venue calendar is searched for its next session before the market is
/// taken as closed for at least that long.
const SEARCH_DAYS: i64 = 14;

impl MarketCalendar {
    pub const ALL: [Self; 8] = [
        Self::Always,
        Self::Fx,
        Self::UsEquity,
        Self::CmeIndex,
        Self::CmeMetals,
        Self::Xetra,
        Self::Lse,
        Self::Tse,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::Fx => "fx",
            Self::UsEquity => "us_equity",
            Self::CmeIndex => "cme_index",
            Self::CmeMetals => "cme_metals",
            Self::Xetra => "xetra",
            Self::Lse => "lse",
            Self::Tse => "tse",
        }
    }

    /// # Errors
    /// An unknown name; the message lists the known ones.
    pub fn parse(name: &str) -> Result<Self, String> {
        let wanted = name.trim().to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|c| c.name() == wanted)
            .ok_or_else(|| {
                let known: Vec<&str> = Self::ALL.iter().map(|c| c.name()).collect();
                format!("unknown calendar `{name}` (known: {})", known.join(", "))
            })
    }

    /// The calendar a generic symbol trades on when `MARKET_HOURS` does not say: crypto
    /// always, currency pairs FX, metals CME metals, US indices and tickers NYSE hours (what
    /// the providers serve for them: cash indices and stocks), the European and Japanese
    /// indices their exchange, futures (`ES=F`, `GC=F` …) their CME family.
    pub fn for_symbol(generic: &str) -> Self {
        if let Some(root) = generic.strip_suffix("=F") {
            return match root {
                "GC" | "SI" | "HG" | "PL" | "PA" | "CL" | "NG" | "MGC" | "SIL" => Self::CmeMetals,
                _ => Self::CmeIndex,
            };
        }
        match classify(generic) {
            Instrument::Crypto { .. } => Self::Always,
            Instrument::Fx { base, .. } if base.starts_with('X') && base != "XRP" => {
                Self::CmeMetals
            }
            Instrument::Fx { .. } => Self::Fx,
            Instrument::Index(index) => match index.code {
                "DAX" => Self::Xetra,
                "FTSE" => Self::Lse,
                "N225" => Self::Tse,
                _ => Self::UsEquity,
            },
            Instrument::Equity(_) => Self::UsEquity,
        }
    }

    /// The session containing `ts_ms`: open or closed, and the bounds of that state.
    pub fn session_at(self, ts_ms: i64) -> Session {
        match self {
            Self::Always => Session::ALWAYS_OPEN,
            Self::Fx => fx_session(ts_ms),
            Self::UsEquity => venue_session(venue(Exchange::Nyse), SessionKind::Regular, ts_ms),
            Self::CmeIndex => venue_session(
                family(MarketHoursKey::GlobexEquityIndex),
                SessionKind::Both,
                ts_ms,
            ),
            Self::CmeMetals => venue_session(
                family(MarketHoursKey::GlobexEnergy),
                SessionKind::Both,
                ts_ms,
            ),
            Self::Xetra => venue_session(venue(Exchange::Xetra), SessionKind::Regular, ts_ms),
            Self::Lse => venue_session(venue(Exchange::Lse), SessionKind::Regular, ts_ms),
            Self::Tse => venue_session(venue(Exchange::Tse), SessionKind::Regular, ts_ms),
        }
    }

    pub fn is_open(self, ts_ms: i64) -> bool {
        self.session_at(ts_ms).open
    }

    /// Whether the market was open at any time in `[from_ms, to_ms)`.
    pub fn open_within(self, from_ms: i64, to_ms: i64) -> bool {
        let first = self.session_at(from_ms);
        first.open || first.until_ms < to_ms
    }

    /// Where this market's trading day starts, for session VWAP: the regular open for cash
    /// markets, the day's first session for FX and futures; `None` (UTC midnight) for markets
    /// that never close.
    pub fn vwap_anchor(self) -> Option<DailyAnchor> {
        let (zone, hour, minute) = match self {
            Self::Always => return None,
            Self::Fx => (Zone::NewYork, 17, 0),
            Self::UsEquity => (Zone::NewYork, 9, 30),
            Self::CmeIndex | Self::CmeMetals => (Zone::Chicago, 17, 0),
            Self::Xetra => (Zone::Berlin, 9, 0),
            Self::Lse => (Zone::London, 8, 0),
            Self::Tse => (Zone::Tokyo, 9, 0),
        };
        Some(DailyAnchor {
            zone,
            start_min: hour * 60 + minute,
        })
    }
}

fn venue(exchange: Exchange) -> ExchangeCalendar {
    ExchangeCalendar::new(exchange)
        .with_last_known_week()
        .with_next_known_week()
}

fn family(key: MarketHoursKey) -> ExchangeCalendar {
    ExchangeCalendar::for_market_hours_key(key)
        .with_last_known_week()
        .with_next_known_week()
}

fn to_utc(ts_ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ts_ms).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// A venue's session state at `ts_ms`. A query the crate refuses (a date before its support
/// floor, 2010) reads as always open: history that old is replayed, not judged by session.
fn venue_session(calendar: ExchangeCalendar, kind: SessionKind, ts_ms: i64) -> Session {
    let at = to_utc(ts_ms);
    let Ok(next) = calendar.session_bounds_with(at, kind) else {
        return Session::ALWAYS_OPEN;
    };
    match next {
        Some((open, close)) if open <= at => Session {
            open: true,
            since_ms: open.timestamp_millis(),
            until_ms: close.timestamp_millis(),
        },
        Some((open, _)) => Session {
            open: false,
            since_ms: previous_close(calendar, kind, at),
            until_ms: open.timestamp_millis(),
        },
        None => Session {
            open: false,
            since_ms: previous_close(calendar, kind, at),
            until_ms: (at + Duration::days(SEARCH_DAYS)).timestamp_millis(),
        },
    }
}

/// The close of the last session before `at` (searched back day by day), or `at` itself when
/// none is found within the search horizon.
fn previous_close(calendar: ExchangeCalendar, kind: SessionKind, at: DateTime<Utc>) -> i64 {
    for days in 1..=SEARCH_DAYS {
        let probe = at - Duration::days(days);
        if let Ok(Some((open, close))) = calendar.session_bounds_with(probe, kind)
            && open < at
            && close <= at
        {
            // The latest session that closed before `at`: walk forward from it.
            let mut last = close;
            while let Ok(Some((o, c))) = calendar.session_bounds_with(last, kind) {
                if c > at || o >= at {
                    break;
                }
                last = c;
            }
            return last.timestamp_millis();
        }
    }
    at.timestamp_millis()
}

/// The interbank FX week: open from Sunday 17:00 to Friday 17:00 New York time.
fn fx_session(ts_ms: i64) -> Session {
    let local = to_utc(ts_ms).with_timezone(&New_York);
    let five_pm = NaiveTime::from_hms_opt(17, 0, 0).unwrap_or(NaiveTime::MIN);
    let days_from_sunday = i64::from(local.weekday().num_days_from_sunday());
    let sunday = local.date_naive() - Duration::days(days_from_sunday);
    let at = |days: i64| {
        let date = sunday + Duration::days(days);
        // 17:00 never falls in a DST transition (those happen at 02:00).
        New_York
            .from_local_datetime(&date.and_time(five_pm))
            .earliest()
            .map_or(ts_ms, |t| t.timestamp_millis())
    };
    let (this_open, this_close) = (at(0), at(5));
    if ts_ms < this_open {
        // Sunday before the open: closed since Friday.
        Session {
            open: false,
            since_ms: at(-2),
            until_ms: this_open,
        }
    } else if ts_ms < this_close {
        Session {
            open: true,
            since_ms: this_open,
            until_ms: this_close,
        }
    } else {
        debug_assert!(matches!(local.weekday(), Weekday::Fri | Weekday::Sat));
        Session {
            open: false,
            since_ms: this_close,
            until_ms: at(7),
        }
    }
}

/// The calendar of every configured symbol, with each one's current session cached so the
/// per-tick question costs a comparison, not a calendar search.
#[derive(Debug, Clone)]
pub struct SessionCache {
    calendar: MarketCalendar,
    current: Option<Session>,
}

impl SessionCache {
    pub fn new(calendar: MarketCalendar) -> Self {
        Self {
            calendar,
            current: None,
        }
    }

    pub fn calendar(&self) -> MarketCalendar {
        self.calendar
    }

    /// The session containing `ts_ms`; only searched when `ts_ms` leaves the cached one.
    pub fn at(&mut self, ts_ms: i64) -> Session {
        match self.current {
            Some(s) if s.covers(ts_ms) => s,
            _ => {
                let s = self.calendar.session_at(ts_ms);
                self.current = Some(s);
                s
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> i64 {
        s.parse::<DateTime<Utc>>()
            .expect("RFC 3339 instant")
            .timestamp_millis()
    }

    #[test]
    fn nyse_keeps_its_holidays_and_early_closes() {
        let c = MarketCalendar::UsEquity;
        // Thanksgiving 2026: closed all day; the next day closes at 13:00 New York.
        assert!(!c.is_open(utc("2026-11-26T16:00:00Z")));
        let friday = c.session_at(utc("2026-11-27T15:00:00Z"));
        assert!(friday.open);
        assert_eq!(friday.until_ms, utc("2026-11-27T18:00:00Z"));
        assert!(!c.is_open(utc("2026-11-27T19:00:00Z")));
        // An ordinary Monday: 09:30–16:00 New York (EST: 14:30–21:00 UTC).
        let monday = c.session_at(utc("2026-11-30T15:00:00Z"));
        assert_eq!(
            (monday.since_ms, monday.until_ms),
            (utc("2026-11-30T14:30:00Z"), utc("2026-11-30T21:00:00Z"))
        );
        // Saturday: closed since Friday's early close, until Monday's open.
        let saturday = c.session_at(utc("2026-11-28T12:00:00Z"));
        assert!(!saturday.open);
        assert_eq!(saturday.since_ms, utc("2026-11-27T18:00:00Z"));
        assert_eq!(saturday.until_ms, utc("2026-11-30T14:30:00Z"));
        // Christmas 2026 falls on a Friday.
        assert!(!c.is_open(utc("2026-12-25T16:00:00Z")));
    }

    #[test]
    fn fx_opens_sunday_17_new_york_across_dst() {
        let c = MarketCalendar::Fx;
        // Summer (EDT, UTC-4): Sunday 2026-03-08 is the DST change day in the US.
        let before = c.session_at(utc("2026-03-08T20:59:00Z"));
        assert!(!before.open);
        assert_eq!(before.until_ms, utc("2026-03-08T21:00:00Z"), "17:00 EDT");
        assert_eq!(
            before.since_ms,
            utc("2026-03-06T22:00:00Z"),
            "Friday 17:00 EST"
        );
        assert!(c.is_open(utc("2026-03-08T21:00:00Z")));
        // Winter (EST, UTC-5).
        assert!(!c.is_open(utc("2026-11-29T21:30:00Z")));
        assert!(c.is_open(utc("2026-11-29T22:00:00Z")));
        let week = c.session_at(utc("2026-12-02T12:00:00Z"));
        assert_eq!(
            (week.since_ms, week.until_ms),
            (utc("2026-11-29T22:00:00Z"), utc("2026-12-04T22:00:00Z"))
        );
        assert!(!c.is_open(utc("2026-12-05T12:00:00Z")), "Saturday");
    }

    #[test]
    fn crypto_trades_on_sunday() {
        let sunday = utc("2026-11-29T10:00:00Z");
        assert_eq!(MarketCalendar::for_symbol("BTCUSD"), MarketCalendar::Always);
        assert!(MarketCalendar::Always.is_open(sunday));
        assert!(!MarketCalendar::Fx.is_open(sunday));
        assert!(!MarketCalendar::UsEquity.is_open(sunday));
    }

    #[test]
    fn cme_index_futures_have_a_daily_break() {
        let c = MarketCalendar::CmeIndex;
        // Tuesday 2026-12-01: 16:00–17:00 Chicago (22:00–23:00 UTC) is the break.
        assert!(c.is_open(utc("2026-12-01T21:00:00Z")));
        assert!(!c.is_open(utc("2026-12-01T22:30:00Z")));
        assert!(c.is_open(utc("2026-12-01T23:30:00Z")));
        assert!(!c.is_open(utc("2026-12-05T12:00:00Z")), "Saturday");
    }

    #[test]
    fn symbols_get_their_market() {
        for (symbol, calendar) in [
            ("EURUSD", MarketCalendar::Fx),
            ("XAUUSD", MarketCalendar::CmeMetals),
            ("ETHUSDT", MarketCalendar::Always),
            ("AAPL", MarketCalendar::UsEquity),
            ("NAS100", MarketCalendar::UsEquity),
            ("GER40", MarketCalendar::Xetra),
            ("ES=F", MarketCalendar::CmeIndex),
            ("GC=F", MarketCalendar::CmeMetals),
        ] {
            assert_eq!(MarketCalendar::for_symbol(symbol), calendar, "{symbol}");
        }
        assert_eq!(
            MarketCalendar::parse("US_Equity"),
            Ok(MarketCalendar::UsEquity)
        );
        assert!(
            MarketCalendar::parse("nasdaq")
                .expect_err("unknown")
                .contains("us_equity")
        );
    }

    #[test]
    fn the_cache_answers_like_the_calendar() {
        let mut cache = SessionCache::new(MarketCalendar::UsEquity);
        let start = utc("2026-11-25T00:00:00Z");
        for minute in (0..7 * 24 * 60).step_by(7) {
            let ts = start + minute * 60_000;
            assert_eq!(
                cache.at(ts).open,
                MarketCalendar::UsEquity.is_open(ts),
                "{ts}"
            );
        }
    }
}
