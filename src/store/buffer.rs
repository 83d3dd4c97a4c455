/*!
The rows of the ticks not written yet, shared by both history backends (SQLite and PostgreSQL).

[`Unflushed::absorb`] takes a tick's rows into the pending [`Buffer`]; a flush takes the whole
buffer out ([`Unflushed::begin_flush`]), keeps its bars visible to readers while the write is in
progress, and hands it back with the outcome ([`Flushing::finish`]): a failed write puts the
rows back in front of what arrived meanwhile, so nothing is lost; a flush dropped half-way (a
cancelled future) does the same. Readers merge the unflushed bars into what the database answered
([`merge_recent`], [`ring_summary`]), so the newest closed bars are visible
at once, not after the next flush.

While writes fail the buffer grows with the rows produced (about 100 bytes a row in memory); only
the indicator checkpoints are coalesced, since just the newest state of a series matters.
*/

use parking_lot::Mutex;

use crate::model::{
    BarRecord, Checkpoint, Event, Gap, RejectRecord, SymbolId, TickBatch, Timeframe,
};
use crate::store::history::{RingSummary, StoredBar};

/// Rows waiting for the next flush.
#[derive(Default)]
pub(in crate::store) struct Buffer {
    pub(in crate::store) bars: Vec<BarRecord>,
    pub(in crate::store) rejects: Vec<RejectRecord>,
    pub(in crate::store) gaps: Vec<(SymbolId, Timeframe, Gap)>,
    /// Gaps filled after the fact, with the bars found (0: confirmed empty).
    pub(in crate::store) revisions: Vec<(SymbolId, Timeframe, Gap, u32)>,
    pub(in crate::store) checkpoints: Vec<Checkpoint>,
}

impl Buffer {
    pub(in crate::store) fn len(&self) -> usize {
        self.bars.len()
            + self.rejects.len()
            + self.gaps.len()
            + self.revisions.len()
            + self.checkpoints.len()
    }

    /// Appends `newer` after these rows; of the checkpoints, only the newest per series stays.
    fn extend(&mut self, newer: Buffer) {
        self.bars.extend(newer.bars);
        self.rejects.extend(newer.rejects);
        self.gaps.extend(newer.gaps);
        self.revisions.extend(newer.revisions);
        self.checkpoints.extend(newer.checkpoints);
        // Stable: among equal keys the later (newer) checkpoint stays last; keep that one.
        self.checkpoints.sort_by_key(|c| (c.symbol, c.timeframe));
        let mut newest: Vec<Checkpoint> = Vec::with_capacity(self.checkpoints.len());
        for c in self.checkpoints.drain(..) {
            match newest.last_mut() {
                Some(last) if last.symbol == c.symbol && last.timeframe == c.timeframe => *last = c,
                _ => newest.push(c),
            }
        }
        self.checkpoints = newest;
    }
}

/// Bars not yet committed: buffered for the next flush, or being flushed right now.
#[derive(Default)]
pub(in crate::store) struct Unflushed {
    pending: Buffer,
    in_flight: Vec<BarRecord>,
    /// Rows of every kind in the flush in progress.
    in_flight_rows: usize,
}

impl Unflushed {
    /// Takes what a tick produced into the buffer; returns the number of buffered rows.
    pub(in crate::store) fn absorb(&mut self, batch: &TickBatch) -> usize {
        let p = &mut self.pending;
        for event in &batch.events {
            match event {
                Event::Closed { record, .. } => p.bars.push(*record),
                Event::Rejected(r) => p.rejects.push(*r),
                Event::Gap {
                    symbol,
                    timeframe,
                    gap,
                } => p.gaps.push((*symbol, *timeframe, *gap)),
                Event::Revision {
                    symbol,
                    timeframe,
                    gap,
                    bars,
                } => p.revisions.push((*symbol, *timeframe, *gap, *bars)),
                Event::Forming { .. } | Event::Session { .. } | Event::Liveness { .. } => {}
            }
        }
        p.checkpoints.extend(batch.checkpoints.iter().cloned());
        p.len()
    }

    /// Rows not written yet: buffered for the next flush or in the flush in progress.
    pub(in crate::store) fn pending_rows(&self) -> usize {
        self.pending.len() + self.in_flight_rows
    }

    /// The uncommitted bars of one series (buffered or being flushed), oldest batch first.
    /// Readers take them *before* they query the database: a flush that commits meanwhile
    /// then shows its bars in the answer or in this copy, never in neither.
    pub(in crate::store) fn bars_of(
        &self,
        symbol: SymbolId,
        timeframe: Timeframe,
    ) -> Vec<BarRecord> {
        self.in_flight
            .iter()
            .chain(&self.pending.bars)
            .filter(|r| r.symbol == symbol && r.timeframe == timeframe)
            .copied()
            .collect()
    }
}

/// `stored` (the newest bars the database holds, oldest first) with the `unflushed` bars of the
/// series merged in (an unflushed bar replaces a stored one of the same open time), cut to the
/// newest `limit`.
pub(in crate::store) fn merge_recent(
    mut stored: Vec<StoredBar>,
    unflushed: &[BarRecord],
    limit: usize,
) -> Vec<StoredBar> {
    for r in unflushed {
        let b = StoredBar {
            bar: r.bar,
            source: r.source.to_string(),
            quality: r.quality,
        };
        match stored.binary_search_by_key(&b.bar.ts, |s| s.bar.ts) {
            Ok(i) => stored[i] = b,
            Err(i) => stored.insert(i, b),
        }
    }
    let excess = stored.len().saturating_sub(limit);
    stored.drain(..excess);
    stored
}

/// What a ring of the newest `n` bars holds, from the open times of the newest `n` stored bars
/// (any order) and the `unflushed` bars of the series.
pub(in crate::store) fn ring_summary(
    mut ts: Vec<i64>,
    unflushed: &[BarRecord],
    n: usize,
) -> RingSummary {
    ts.extend(unflushed.iter().map(|r| r.bar.ts));
    ts.sort_unstable();
    ts.dedup();
    let kept = &ts[ts.len().saturating_sub(n)..];
    RingSummary {
        len: kept.len(),
        first_ts: kept.first().copied(),
        last_ts: kept.last().copied(),
    }
}

/// A flush in progress: the rows it writes, given back to the buffer unless it succeeded.
pub(in crate::store) struct Flushing<'a> {
    unflushed: &'a Mutex<Unflushed>,
    rows: Buffer,
    settled: bool,
}

/// Takes the whole pending buffer out for one flush; its bars stay visible to readers.
pub(in crate::store) fn begin_flush(unflushed: &Mutex<Unflushed>) -> Flushing<'_> {
    let mut u = unflushed.lock();
    let rows = std::mem::take(&mut u.pending);
    u.in_flight = rows.bars.clone();
    u.in_flight_rows = rows.len();
    Flushing {
        unflushed,
        rows,
        settled: false,
    }
}

impl Flushing<'_> {
    /// The rows being written.
    pub(in crate::store) fn rows(&self) -> &Buffer {
        &self.rows
    }

    /// Ends the flush: on success the rows are gone, on failure back in front of the buffer.
    pub(in crate::store) fn finish(mut self, written: bool) {
        self.settle(written);
    }

    fn settle(&mut self, written: bool) {
        self.settled = true;
        let mut u = self.unflushed.lock();
        u.in_flight.clear();
        u.in_flight_rows = 0;
        if !written {
            // Put the rows back in front of anything that arrived meanwhile.
            let newer = std::mem::replace(&mut u.pending, std::mem::take(&mut self.rows));
            u.pending.extend(newer);
        }
    }
}

impl Drop for Flushing<'_> {
    /// A flush abandoned half-way (its future dropped) keeps its rows.
    fn drop(&mut self) {
        if !self.settled {
            self.settle(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Bar, Features};

    fn closed(ts: i64) -> Event {
        Event::Closed {
            record: BarRecord {
                symbol: 0,
                timeframe: "1m".parse().expect("valid"),
                bar: Bar::from_price(ts, 1.0, 1.0),
                source: "synthetic",
                quality: 1.0,
            },
            features: Features {
                values: [f64::NAN; crate::model::FEATURE_COUNT],
            },
        }
    }

    #[test]
    fn a_failed_or_abandoned_flush_puts_its_rows_back_in_front() {
        let u = Mutex::new(Unflushed::default());
        u.lock().absorb(&TickBatch::new(0, vec![closed(60_000)]));
        let flush = begin_flush(&u);
        assert_eq!(flush.rows().bars.len(), 1);
        u.lock().absorb(&TickBatch::new(0, vec![closed(120_000)]));
        assert_eq!(u.lock().pending_rows(), 2, "in flight and pending");
        flush.finish(false);
        let order: Vec<i64> = u.lock().pending.bars.iter().map(|r| r.bar.ts).collect();
        assert_eq!(order, [60_000, 120_000]);
        drop(begin_flush(&u));
        assert_eq!(u.lock().pending_rows(), 2, "a dropped flush keeps its rows");
        begin_flush(&u).finish(true);
        assert_eq!(u.lock().pending_rows(), 0);
    }
}
