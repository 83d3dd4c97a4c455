/*!
The views the API reads: each symbol's session, forming and last closed bar per timeframe, kept
in step with the events and published to the snapshot when they change.
*/

use std::sync::Arc;

use super::Collector;
use crate::model::{Event, SymbolId, Timeframe};
use crate::repair::RepairJob;
use crate::store::snapshot::FrameView;

impl Collector {
    /// Notes each symbol's market session in its view and tells the sinks when it changed;
    /// the views that changed are published with the next events.
    pub(super) fn update_sessions(&mut self, now: i64, events: &mut Vec<Event>) {
        let collected = self
            .pipelines
            .iter_mut()
            .zip(&mut self.views)
            .zip(&self.live);
        for ((pipeline, view), _) in collected.filter(|(_, live)| **live) {
            let session = pipeline.session(now);
            if view.session.is_none_or(|s| s.open != session.open) {
                events.push(Event::Session {
                    symbol: pipeline.symbol(),
                    session,
                });
            }
            if view.session != Some(session) {
                view.session = Some(session);
                self.session_changed.push(pipeline.symbol());
            }
        }
    }

    /// Reports symbols whose data went quiet past `STALE_AFTER` while their market is open, and
    /// those whose data came back ([`Event::Liveness`]).
    pub(super) fn update_liveness(&mut self, now: i64, events: &mut Vec<Event>) {
        for (i, view) in self.views.iter().enumerate() {
            let Some(last) = view.last_data_ms.filter(|_| self.live[i]) else {
                continue;
            };
            let open = view.session.is_none_or(|s| s.open);
            let stale = open && now - last > self.stale_after_ms;
            if stale != self.quiet[i] {
                self.quiet[i] = stale;
                events.push(Event::Liveness {
                    symbol: i as SymbolId,
                    stale,
                    last_data_ms: last,
                });
            }
        }
    }

    /// Keeps the per-symbol views and counters in step with a batch of events, and publishes
    /// the views that changed.
    pub(super) fn apply_events(&mut self, events: &[Event]) {
        let mut touched: Vec<SymbolId> = std::mem::take(&mut self.session_changed);
        for event in events {
            match event {
                Event::Closed { record, features } => {
                    self.metrics.bars_closed.inc();
                    if let Some(frame) = self.frame_view(record.symbol, record.timeframe) {
                        // A repaired bar is older than the newest: it does not replace it.
                        if frame
                            .last_closed
                            .as_ref()
                            .is_none_or(|(r, _)| r.bar.ts <= record.bar.ts)
                        {
                            frame.last_closed = Some((*record, *features));
                        }
                        if frame
                            .forming
                            .as_ref()
                            .is_some_and(|(f, _)| f.bar.ts <= record.bar.ts)
                        {
                            frame.forming = None;
                        }
                    }
                    touched.push(record.symbol);
                }
                Event::Forming { record, features } => {
                    if let Some(frame) = self.frame_view(record.symbol, record.timeframe) {
                        frame.forming = Some((*record, *features));
                    }
                    touched.push(record.symbol);
                }
                Event::Rejected(r) => self.metrics.reject(r.reason),
                Event::Gap {
                    symbol,
                    timeframe,
                    gap,
                } => {
                    self.metrics.gaps.inc();
                    let tracked = self.pipelines.get(*symbol as usize).is_some_and(|p| {
                        p.pending_repairs()
                            .any(|(tf, g)| tf == *timeframe && g == *gap)
                    });
                    if tracked {
                        self.new_gaps.push(RepairJob {
                            symbol: *symbol,
                            timeframe: *timeframe,
                            gap: *gap,
                            tries: 0,
                        });
                    }
                }
                Event::Session { .. } | Event::Liveness { .. } => {}
                Event::Revision { bars, .. } => {
                    if *bars == 0 {
                        self.metrics.gaps_empty.inc();
                    } else {
                        self.metrics.gaps_repaired.inc();
                        self.metrics.repaired_bars.add(u64::from(*bars));
                    }
                }
            }
        }
        self.send_repairs();
        touched.sort_unstable();
        touched.dedup();
        for symbol in touched {
            self.snapshot
                .publish(symbol, Arc::new(self.views[symbol as usize].clone()));
        }
    }

    pub(super) fn frame_view(
        &mut self,
        symbol: SymbolId,
        timeframe: Timeframe,
    ) -> Option<&mut FrameView> {
        let frame = self.timeframes.iter().position(|&t| t == timeframe)?;
        self.views.get_mut(symbol as usize)?.frames.get_mut(frame)
    }
}
