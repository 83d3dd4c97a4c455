/*!
The per-symbol hot path: validate → build bars → update indicators, emitting [`Event`]s.

One [`SymbolPipeline`] per configured symbol owns that symbol's validator, its market session
and, per timeframe, a bar builder and an indicator set. The collector owns all pipelines on one
task, so nothing here locks; the only allocation is the caller's reusable event buffer growing
to its steady size.

Sessions: while the symbol's market is closed, quotes build nothing and are not judged (a
provider keeps answering the last trade of the session: that is neither stale nor a reject);
they come back as [`QuoteOutcome::Closed`], counted. Time the market was closed is not a gap.
A rejected quote is stored once, however many ticks repeat it (a stale last trade, or any
broken quote a provider keeps answering): the repeats come back as
[`QuoteOutcome::RepeatedReject`], counted like the first.
*/

use crate::bars::{BarBuilder, ScoredBar};
use crate::calendar::{MarketCalendar, SessionCache};
use crate::config::ValidationConfig;
use crate::indicators::{IndicatorParams, IndicatorSet};
use crate::model::{
    Bar, BarRecord, Event, Gap, Quote, RejectReason, RejectRecord, Session, SymbolId, Timeframe,
};
use crate::validate::{Validator, Verdict};

/// Bars committed after a gap that a repair replays; beyond this the repair still stores the
/// missing bars but the indicators keep their state.
const MAX_REPLAY_BARS: usize = 10_000;

/// A gap waiting for its bars: the indicators as they stood before it, and the bars committed
/// since, to be replayed after the missing ones.
struct PendingRepair {
    gap: Gap,
    before: IndicatorSet,
    since: Vec<Bar>,
    overflowed: bool,
}

/// What became of one quote.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum QuoteOutcome {
    /// The validator's verdict (an accepted quote is in the bars).
    Judged(Verdict),
    /// The market is closed, or the quote predates the session: not judged, no bar.
    Closed,
    /// The same quote from the same source as the last reject: counted, not stored again.
    RepeatedReject(RejectReason),
}

struct Frame {
    builder: BarBuilder,
    engine: IndicatorSet,
    /// Judges provider bars of this timeframe (their open times lag quote times, so they need
    /// their own reference). Created on the first provider bar.
    bar_validator: Option<Validator>,
    /// Source of the latest data in the forming bar.
    source: &'static str,
    /// The gap being repaired (one at a time; a later gap is recorded only).
    repair: Option<PendingRepair>,
}

impl Frame {
    /// Reports a gap and, when none is being repaired, remembers the indicators before it.
    fn gap(&mut self, symbol: SymbolId, gap: Gap, out: &mut Vec<Event>) {
        if self.repair.is_none() {
            self.repair = Some(PendingRepair {
                gap,
                before: self.engine.clone(),
                since: Vec::new(),
                overflowed: false,
            });
        }
        out.push(Event::Gap {
            symbol,
            timeframe: self.builder.timeframe(),
            gap,
        });
    }
}

/// Validator, bar builders and indicator sets of one symbol.
pub struct SymbolPipeline {
    symbol: SymbolId,
    validator: Validator,
    session: SessionCache,
    /// The last quote stored as a reject: (source, provider time, price bits).
    last_reject: Option<(&'static str, i64, u64)>,
    frames: Vec<Frame>,
}

impl SymbolPipeline {
    /// A pipeline for quotes arriving every `quote_interval_ms`, on `calendar`'s sessions.
    pub fn new(
        symbol: SymbolId,
        validation: &ValidationConfig,
        timeframes: &[Timeframe],
        params: &IndicatorParams,
        calendar: MarketCalendar,
        quote_interval_ms: i64,
    ) -> Self {
        Self {
            symbol,
            validator: Validator::new(validation.clone(), quote_interval_ms),
            session: SessionCache::new(calendar),
            last_reject: None,
            frames: timeframes
                .iter()
                .map(|&tf| Frame {
                    builder: BarBuilder::new(tf),
                    engine: IndicatorSet::new(params),
                    bar_validator: None,
                    source: "",
                    repair: None,
                })
                .collect(),
        }
    }

    pub fn symbol(&self) -> SymbolId {
        self.symbol
    }

    /// The symbol's market session at `ts_ms`.
    pub fn session(&mut self, ts_ms: i64) -> Session {
        self.session.at(ts_ms)
    }

    pub fn calendar(&self) -> MarketCalendar {
        self.session.calendar()
    }

    /// Seeds the quote validator's reference from stored bars of the first timeframe (oldest
    /// first), so the first quote after a restart is judged against the history.
    pub fn seed_validator(&mut self, bars: &[Bar]) {
        let tf = self
            .frames
            .first()
            .map_or(60_000, |f| f.builder.timeframe().ms());
        let tail = &bars[bars.len().saturating_sub(30)..];
        self.validator.seed(tail, tf);
    }

    /// Replaces a frame's indicator state, e.g. with a restored checkpoint.
    pub fn set_engine(&mut self, frame: usize, engine: IndicatorSet) {
        self.frames[frame].engine = engine;
    }

    pub fn engine(&self, frame: usize) -> &IndicatorSet {
        &self.frames[frame].engine
    }

    /// Feeds already-stored closed bars of one timeframe (oldest first) to its indicators, so
    /// the sidecar resumes where it stopped. Bars at or before the engine's last bar are
    /// skipped, which makes warm-up after a checkpoint restore exact.
    pub fn warm(&mut self, frame: usize, bars: &[Bar]) {
        let f = &mut self.frames[frame];
        for bar in bars {
            if f.engine.last_ts().is_none_or(|t| bar.ts > t) {
                f.engine.update(bar);
            }
            f.builder.resume_after(bar.ts);
        }
        // A checkpoint at the newest stored bar (a clean shutdown) leaves no bar to feed: the
        // builder must still know where the series ends, or the downtime is no gap.
        if let Some(ts) = f.engine.last_ts() {
            f.builder.resume_after(ts);
        }
    }

    /// Validates closed history bars of one timeframe from a source (oldest first), commits the
    /// good ones and emits them as closed so they are stored.
    pub fn ingest_history(
        &mut self,
        frame: usize,
        bars: &[Bar],
        source: &'static str,
        now_ms: i64,
        out: &mut Vec<Event>,
    ) {
        let f = &mut self.frames[frame];
        let timeframe = f.builder.timeframe();
        let mut validator = Validator::new(self.validator.config().clone(), timeframe.ms());
        let forming_ts = f.builder.forming().map(|b| b.bar.ts);
        for bar in bars {
            // Only what lies between the last closed bar and the forming one is history.
            if f.builder.last_closed_ts().is_some_and(|t| bar.ts <= t)
                || forming_ts.is_some_and(|t| bar.ts >= t)
            {
                continue;
            }
            match validator.check(bar, None) {
                Verdict::Accept { quality } => {
                    let features = f.engine.update(bar);
                    f.builder.resume_after(bar.ts);
                    let record = BarRecord {
                        symbol: self.symbol,
                        timeframe,
                        bar: *bar,
                        source,
                        quality,
                    };
                    out.push(Event::Closed { record, features });
                }
                Verdict::Duplicate => {}
                Verdict::Reject(reason) => out.push(Event::Rejected(RejectRecord {
                    symbol: self.symbol,
                    source,
                    reason,
                    input: *bar,
                    received_at_ms: now_ms,
                })),
            }
        }
        if frame == 0 && !bars.is_empty() {
            self.seed_validator(bars);
        }
    }

    /// One quote from `source`: validated, then added to every timeframe's bar.
    pub fn on_quote(
        &mut self,
        quote: &Quote,
        source: &'static str,
        now_ms: i64,
        out: &mut Vec<Event>,
    ) -> QuoteOutcome {
        let session = self.session.at(now_ms);
        // Closed now, or stamped before this session opened: the last trade of a session
        // that is over (or a trade outside the session), which builds no bar.
        if !session.open || quote.ts < session.since_ms {
            return QuoteOutcome::Closed;
        }
        let input = Bar::from_price(quote.ts, quote.price, quote.volume);
        let verdict = self.validator.check(&input, Some(now_ms));
        let quality = match verdict {
            Verdict::Accept { quality } => quality,
            Verdict::Reject(reason) => {
                let key = (source, quote.ts, quote.price.to_bits());
                if self.last_reject == Some(key) {
                    return QuoteOutcome::RepeatedReject(reason);
                }
                self.last_reject = Some(key);
                out.push(self.reject(reason, input, source, now_ms));
                return QuoteOutcome::Judged(verdict);
            }
            Verdict::Duplicate => return QuoteOutcome::Judged(verdict),
        };
        let mut late = false;
        let calendar = self.session.calendar();
        for f in &mut self.frames {
            let step = f.builder.add(&input, quality);
            if let Some(closed) = step.closed {
                out.push(commit(self.symbol, f, closed));
            }
            if let Some(gap) = step.gap.and_then(|g| open_part(calendar, g)) {
                f.gap(self.symbol, gap, out);
            }
            late |= step.late;
            if !step.late {
                f.source = source;
            }
        }
        if late {
            out.push(self.reject(RejectReason::Late, input, source, now_ms));
        }
        QuoteOutcome::Judged(verdict)
    }

    /// A provider's own bar (e.g. a 1-minute aggregate from a stream): validated against the
    /// previous provider bars, then upserted into the frame of the same timeframe. Bars of a
    /// timeframe that is not built are ignored (returns `None`).
    pub fn on_provider_bar(
        &mut self,
        timeframe: Timeframe,
        bar: &Bar,
        source: &'static str,
        now_ms: i64,
        out: &mut Vec<Event>,
    ) -> Option<Verdict> {
        let symbol = self.symbol;
        let config = self.validator.config().clone();
        let f = self
            .frames
            .iter_mut()
            .find(|f| f.builder.timeframe() == timeframe)?;
        // A bar's data is as recent as its last moment, not its open time.
        let probe = Bar {
            ts: (bar.ts + timeframe.ms() - 1).min(now_ms),
            ..*bar
        };
        let verdict = f
            .bar_validator
            .get_or_insert_with(|| Validator::new(config, timeframe.ms()))
            .check(&probe, Some(now_ms));
        let quality = match verdict {
            Verdict::Accept { quality } => quality,
            Verdict::Duplicate => return Some(verdict),
            Verdict::Reject(reason) => {
                out.push(Event::Rejected(RejectRecord {
                    symbol,
                    source,
                    reason,
                    input: *bar,
                    received_at_ms: now_ms,
                }));
                return Some(verdict);
            }
        };
        let step = f.builder.upsert(bar, quality);
        if let Some(closed) = step.closed {
            out.push(commit(symbol, f, closed));
        }
        if let Some(gap) = step.gap.and_then(|g| open_part(self.session.calendar(), g)) {
            f.gap(symbol, gap, out);
        }
        if step.late {
            out.push(Event::Rejected(RejectRecord {
                symbol,
                source,
                reason: RejectReason::Late,
                input: *bar,
                received_at_ms: now_ms,
            }));
        } else {
            f.source = source;
        }
        Some(verdict)
    }

    /// The gaps waiting for repair, per timeframe.
    pub fn pending_repairs(&self) -> impl Iterator<Item = (Timeframe, Gap)> + '_ {
        self.frames
            .iter()
            .filter_map(|f| f.repair.as_ref().map(|r| (f.builder.timeframe(), r.gap)))
    }

    /// Fills a gap with history `bars` from `source`: they are validated and sent as closed
    /// bars, then the bars committed since the gap are replayed, so the indicators are what an
    /// uninterrupted run would have; ends with an [`Event::Revision`]. An empty answer is the
    /// provider confirming no trades. Returns `false` when no such gap is waiting.
    pub fn repair(
        &mut self,
        timeframe: Timeframe,
        gap: Gap,
        bars: &[Bar],
        source: &'static str,
        now_ms: i64,
        out: &mut Vec<Event>,
    ) -> bool {
        let symbol = self.symbol;
        let config = self.validator.config().clone();
        let Some(f) = self
            .frames
            .iter_mut()
            .find(|f| f.builder.timeframe() == timeframe)
        else {
            return false;
        };
        let Some(pending) = f.repair.take_if(|r| r.gap == gap) else {
            return false;
        };
        let mut validator = Validator::new(config, timeframe.ms());
        let mut engine = pending.before;
        let mut filled = 0;
        for bar in bars
            .iter()
            .filter(|b| b.ts >= gap.from_ts && b.ts < gap.to_ts)
        {
            match validator.check(bar, None) {
                Verdict::Accept { quality } => {
                    let features = engine.update(bar);
                    filled += 1;
                    out.push(Event::Closed {
                        record: BarRecord {
                            symbol,
                            timeframe,
                            bar: *bar,
                            source,
                            quality,
                        },
                        features,
                    });
                }
                Verdict::Duplicate => {}
                Verdict::Reject(reason) => out.push(Event::Rejected(RejectRecord {
                    symbol,
                    source,
                    reason,
                    input: *bar,
                    received_at_ms: now_ms,
                })),
            }
        }
        if !pending.overflowed {
            for bar in &pending.since {
                engine.update(bar);
            }
            f.engine = engine;
        }
        out.push(Event::Revision {
            symbol,
            timeframe,
            gap,
            bars: filled,
        });
        true
    }

    /// Gives up repairing a gap (its sources could not serve it): it stays recorded.
    pub fn abandon_repair(&mut self, timeframe: Timeframe, gap: Gap) {
        for f in &mut self.frames {
            if f.builder.timeframe() == timeframe {
                f.repair.take_if(|r| r.gap == gap);
            }
        }
    }

    /// End of a collection tick: closes bars whose interval has ended and reports each forming
    /// bar with its peeked features.
    pub fn finish_tick(&mut self, now_ms: i64, out: &mut Vec<Event>) {
        for f in &mut self.frames {
            if let Some(closed) = f.builder.close_due(now_ms) {
                out.push(commit(self.symbol, f, closed));
            }
            if let Some(forming) = f.builder.forming() {
                out.push(Event::Forming {
                    record: BarRecord {
                        symbol: self.symbol,
                        timeframe: f.builder.timeframe(),
                        bar: forming.bar,
                        source: f.source,
                        quality: forming.quality,
                    },
                    features: f.engine.peek(&forming.bar),
                });
            }
        }
    }

    fn reject(&self, reason: RejectReason, input: Bar, source: &'static str, now_ms: i64) -> Event {
        Event::Rejected(RejectRecord {
            symbol: self.symbol,
            source,
            reason,
            input,
            received_at_ms: now_ms,
        })
    }
}

/// The part of a gap during which the market was open: closures at either end are no gap
/// (a weekend between Friday's last bar and Monday's first is not missing data).
fn open_part(calendar: MarketCalendar, gap: Gap) -> Option<Gap> {
    let first = calendar.session_at(gap.from_ts);
    let from_ts = if first.open {
        gap.from_ts
    } else {
        first.until_ms
    };
    let last = calendar.session_at(gap.to_ts - 1);
    let to_ts = if last.open { gap.to_ts } else { last.since_ms };
    (from_ts < to_ts).then_some(Gap { from_ts, to_ts })
}

fn commit(symbol: SymbolId, f: &mut Frame, closed: ScoredBar) -> Event {
    let features = f.engine.update(&closed.bar);
    if let Some(r) = &mut f.repair {
        if r.since.len() < MAX_REPLAY_BARS {
            r.since.push(closed.bar);
        } else {
            r.overflowed = true;
        }
    }
    Event::Closed {
        record: BarRecord {
            symbol,
            timeframe: f.builder.timeframe(),
            bar: closed.bar,
            source: f.source,
            quality: closed.quality,
        },
        features,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_100_000; // a 5-minute boundary

    fn pipeline() -> SymbolPipeline {
        SymbolPipeline::new(
            0,
            &ValidationConfig::default(),
            &["1m".parse().expect("valid"), "5m".parse().expect("valid")],
            &IndicatorParams::default(),
            MarketCalendar::Always,
            1_000,
        )
    }

    fn quote(ts: i64, price: f64) -> Quote {
        Quote {
            symbol: 0,
            ts,
            price,
            volume: 1.0,
        }
    }

    #[test]
    fn quotes_become_closed_bars_with_features_in_every_timeframe() {
        let mut p = pipeline();
        let mut out = Vec::new();
        for s in 0..600 {
            let ts = T0 + s * 1_000;
            p.on_quote(
                &quote(ts, 100.0 + (s % 7) as f64 * 0.01),
                "synthetic",
                ts,
                &mut out,
            );
            p.finish_tick(ts + 500, &mut out);
        }
        let closed = |tf: i64| {
            out.iter()
                .filter(
                    |e| matches!(e, Event::Closed { record, .. } if record.timeframe.ms() == tf),
                )
                .count()
        };
        assert_eq!(closed(60_000), 9, "the tenth minute is still forming");
        assert_eq!(closed(300_000), 1);
        assert_eq!(p.engine(0).bars_seen(), 9);
        let last_forming = out.iter().rev().find_map(|e| match e {
            Event::Forming { record, .. } if record.timeframe.ms() == 60_000 => Some(record),
            _ => None,
        });
        assert_eq!(last_forming.map(|r| r.bar.ts), Some(T0 + 540_000));
        assert!(
            out.iter()
                .all(|e| !matches!(e, Event::Rejected(_) | Event::Gap { .. }))
        );
    }

    #[test]
    fn a_restart_from_a_checkpoint_at_the_newest_bar_records_the_downtime_as_a_gap() {
        // Found by examples/soak.rs: after a SIGTERM the 1 s downtime was in no `gaps` row.
        let (mut first, mut out) = (pipeline(), Vec::new());
        for ts in (0..150).map(|s| T0 + s * 1_000) {
            first.on_quote(&quote(ts, 100.0), "synthetic", ts, &mut out);
            first.finish_tick(ts + 500, &mut out);
        }
        let params = IndicatorParams::default();
        let restored = IndicatorSet::restore(&first.engine(0).checkpoint(), &params);
        let (mut second, mut out, back) = (pipeline(), Vec::new(), T0 + 600_000);
        second.set_engine(0, restored.expect("checkpoint"));
        second.warm(0, &[]);
        second.on_quote(&quote(back, 100.0), "synthetic", back, &mut out);
        let gaps: Vec<(i64, i64)> = out
            .iter()
            .filter_map(|e| match e {
                Event::Gap { timeframe, gap, .. } if timeframe.ms() == 60_000 => {
                    Some((gap.from_ts, gap.to_ts))
                }
                _ => None,
            })
            .collect();
        // From the minute after the last closed one (T0 + 60 s) to the first live quote.
        assert_eq!(gaps, [(T0 + 120_000, back)]);
    }

    #[test]
    fn rejects_carry_reason_and_raw_values() {
        let mut p = pipeline();
        let mut out = Vec::new();
        p.on_quote(&quote(T0, 100.0), "synthetic", T0, &mut out);
        let verdict = p.on_quote(&quote(T0 + 1_000, -3.0), "synthetic", T0 + 1_000, &mut out);
        assert_eq!(
            verdict,
            QuoteOutcome::Judged(Verdict::Reject(RejectReason::NonPositivePrice))
        );
        let Some(Event::Rejected(r)) = out.last() else {
            panic!("no reject event: {out:?}")
        };
        assert_eq!(
            (r.reason, r.input.close, r.input.ts, r.source),
            (
                RejectReason::NonPositivePrice,
                -3.0,
                T0 + 1_000,
                "synthetic"
            )
        );
    }
}
