/*!
Push streams: started once, drained at the start of each tick. Their quotes join the tick, their
provider bars are upserted, and a symbol with a live stream is not polled. A reconnect's gap is
repaired like any other (`repairs.rs`). What a stream subscribes follows the shared symbol
table (an instrument added at run time is subscribed at once, a deleted one unsubscribed); the
collector takes a symbol's stream data from the tick it collects the symbol.
*/

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Collector, StreamLink};
use crate::model::Event;
use crate::sources::StreamEvent;
use crate::sources::chain::DataType;

/// Events a push stream may queue between two ticks.
const STREAM_QUEUE: usize = 65_536;

impl Collector {
    /// Starts the push stream of every source that has one; its events are taken at the start
    /// of each tick.
    pub(super) fn start_streams(
        &mut self,
        shutdown: &CancellationToken,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        for (si, source) in self.chain.sources().enumerate() {
            if !source.capabilities().stream {
                continue;
            }
            let (tx, rx) = mpsc::channel(STREAM_QUEUE);
            if let Some(task) = Arc::clone(source).stream(tx, shutdown.child_token()) {
                tasks.push(tokio::spawn(task));
                self.streams.push(StreamLink {
                    source: si,
                    served: Vec::new(),
                    rx,
                    last_message: None,
                });
            }
        }
        self.follow_streams();
        tasks
    }

    /// Which collected symbols each push stream serves: at start, and whenever a symbol is
    /// installed or removed at run time (`instruments.rs`). The streams themselves follow the
    /// shared table's changes (`sources::stream`).
    pub(super) fn follow_streams(&mut self) {
        for link in &mut self.streams {
            let source = self.chain.source(link.source);
            link.served = self
                .all_ids
                .iter()
                .copied()
                .filter(|&id| source.supports(id))
                .collect();
        }
    }

    /// Takes what the push streams delivered since the last tick: quotes join this tick's
    /// quotes, provider bars are upserted. Symbols whose stream is alive are not polled. What a
    /// reconnect missed shows as a gap in the bars, which the repair worker fills off the tick
    /// (`repair.rs`) like any other.
    pub(super) fn drain_streams(&mut self, now: i64, events: &mut Vec<Event>) {
        let t = tokio::time::Instant::now();
        let alive_for = (self.interval * 3).max(Duration::from_secs(3));
        for link in &mut self.streams {
            let name = self.chain.source(link.source).name();
            // A stopped worker's stream delivers nothing; its symbols are polled elsewhere.
            if !self.chain.is_running(link.source, DataType::MarketData) {
                while link.rx.try_recv().is_ok() {}
                link.last_message = None;
                continue;
            }
            while let Ok(event) = link.rx.try_recv() {
                link.last_message = Some(t);
                match event {
                    StreamEvent::Quote(q) => {
                        if let Some(a) = self.answered.get_mut(q.symbol as usize) {
                            *a = true;
                            self.quotes.push((q, name));
                        }
                    }
                    StreamEvent::Bar {
                        symbol,
                        timeframe,
                        bar,
                    } => {
                        if let Some(p) = self
                            .pipelines
                            .get_mut(symbol as usize)
                            .filter(|_| self.live[symbol as usize])
                        {
                            p.on_provider_bar(timeframe, &bar, name, now, events);
                            self.answered[symbol as usize] = true;
                        }
                    }
                    StreamEvent::Reconnected { .. } => self.metrics.stream_reconnects.inc(),
                }
            }
            let alive = link
                .last_message
                .is_some_and(|at| t.duration_since(at) < alive_for);
            if let Some(m) = self.metrics.sources.get(link.source) {
                m.stream_up.set(i64::from(alive));
            }
            if alive {
                for &id in &link.served {
                    self.answered[id as usize] = true;
                }
            }
        }
    }

    /// While collection is paused: what the push streams delivered is dropped (a resumed
    /// collection starts from fresh data; the pause shows as a gap).
    pub(super) fn drop_streamed(&mut self) {
        for link in &mut self.streams {
            while let Ok(event) = link.rx.try_recv() {
                if let StreamEvent::Reconnected { .. } = event {
                    self.metrics.stream_reconnects.inc();
                }
            }
            link.last_message = None;
        }
    }
}
