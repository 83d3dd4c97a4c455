/*!
Symbols added and deleted at run time (`crate::instruments`, over the HTTP API): the commands
come on a channel the collector drains at the start of each tick.

- **Add**: the symbol gets a fresh pipeline and view, warmed up by the same [`WarmUp`] as at
  start-up, on a task of its own (its history requests must not hold the tick); when it is
  done, at the start of a tick, the pipeline is installed, the warm-up's history bars go out
  with that tick's events, and the symbol is collected from that tick on. Adding a symbol that
  is collected (a new calendar) checkpoints it and warms it up again with the new calendar.
- **Remove**: the symbol is checkpointed (a later add resumes from there), no longer fetched,
  finished or reported, and its view is taken from the API.

Each symbol has a generation: a warm-up that finishes after its symbol was removed (or added
again) is dropped.
*/

use tokio::sync::mpsc;

use super::Collector;
use crate::calendar::MarketCalendar;
use crate::model::{Event, SymbolId, TickBatch};
use crate::pipeline::SymbolPipeline;
use crate::store::snapshot::{FrameView, SymbolView};
use crate::store::sqlite::StoreError;

/// What the collector is told about the symbol list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Collect this symbol (of the shared table) on this calendar, after a warm-up.
    Add {
        id: SymbolId,
        calendar: MarketCalendar,
    },
    /// Stop collecting it.
    Remove { id: SymbolId },
}

/// A symbol warmed up off the loop, ready to be collected.
pub(super) struct Warmed {
    id: SymbolId,
    generation: u64,
    pipeline: SymbolPipeline,
    view: SymbolView,
    events: Vec<Event>,
    result: Result<(), StoreError>,
}

/// The collector's ends of the command and warm-up channels, and each symbol's state.
pub(super) struct InstrumentLink {
    pub commands: mpsc::UnboundedReceiver<Command>,
    warmed_tx: mpsc::UnboundedSender<Warmed>,
    warmed: mpsc::UnboundedReceiver<Warmed>,
    /// Per symbol id: bumped by every command, so a late warm-up is recognised.
    generation: Vec<u64>,
}

impl InstrumentLink {
    pub fn new(commands: mpsc::UnboundedReceiver<Command>) -> Self {
        let (warmed_tx, warmed) = mpsc::unbounded_channel();
        Self {
            commands,
            warmed_tx,
            warmed,
            generation: Vec::new(),
        }
    }
}

impl Collector {
    /// Applies the commands received since the last tick and installs the symbols whose
    /// warm-up is done (their history bars join `events`).
    pub(super) fn take_instruments(&mut self, events: &mut Vec<Event>) {
        while let Ok(command) = self.instruments.commands.try_recv() {
            match command {
                Command::Add { id, calendar } => self.start_warm_up(id, calendar),
                Command::Remove { id } => self.remove(id),
            }
        }
        while let Ok(warmed) = self.instruments.warmed.try_recv() {
            self.install(warmed, events);
        }
    }

    /// Makes room for `id` in every per-symbol `Vec` of the collector.
    fn grow_to(&mut self, id: SymbolId) {
        let n = id as usize + 1;
        while self.pipelines.len() < n {
            let placeholder = self.new_pipeline(self.pipelines.len() as SymbolId, None);
            self.pipelines.push(placeholder);
        }
        let frames = self.timeframes.len();
        self.views
            .resize_with(n.max(self.views.len()), || SymbolView {
                frames: vec![FrameView::default(); frames],
                ..SymbolView::default()
            });
        for flags in [
            &mut self.answered,
            &mut self.tried,
            &mut self.finished,
            &mut self.quiet,
            &mut self.live,
        ] {
            if flags.len() < n {
                flags.resize(n, false);
            }
        }
        if self.instruments.generation.len() < n {
            self.instruments.generation.resize(n, 0);
        }
    }

    /// A fresh pipeline for `id`, on `calendar` (the configured one when `None`).
    pub(super) fn new_pipeline(
        &self,
        id: SymbolId,
        calendar: Option<MarketCalendar>,
    ) -> SymbolPipeline {
        let config = &self.pipeline_config;
        let calendar = calendar.unwrap_or_else(|| {
            config
                .calendars
                .get(id as usize)
                .copied()
                .unwrap_or(MarketCalendar::Always)
        });
        SymbolPipeline::new(
            id,
            &config.validation,
            &config.timeframes,
            &config.indicators_for(calendar),
            calendar,
            config.collection_interval_ms as i64,
        )
    }

    fn start_warm_up(&mut self, id: SymbolId, calendar: MarketCalendar) {
        self.grow_to(id);
        let i = id as usize;
        if self.live[i] {
            // Collected already: on its new calendar from a new warm-up, which resumes from
            // this checkpoint.
            self.stop_collecting(id);
        }
        self.instruments.generation[i] += 1;
        let Some(warm) = self.warm.clone() else {
            tracing::warn!(symbol = %self.symbols.name(id), "an instrument was added before the warm-up; ignored");
            return;
        };
        let generation = self.instruments.generation[i];
        let mut pipeline = self.new_pipeline(id, Some(calendar));
        let mut view = SymbolView {
            frames: vec![FrameView::default(); self.timeframes.len()],
            ..SymbolView::default()
        };
        let now = self.clock.now_ms();
        let tx = self.instruments.warmed_tx.clone();
        tracing::info!(symbol = %self.symbols.name(id), calendar = calendar.name(), "warming up an added instrument");
        tokio::spawn(async move {
            let mut events = Vec::new();
            let result = warm
                .symbol(&mut pipeline, &mut view, now, &mut events)
                .await;
            let _ = tx.send(Warmed {
                id,
                generation,
                pipeline,
                view,
                events,
                result,
            });
        });
    }

    fn install(&mut self, warmed: Warmed, events: &mut Vec<Event>) {
        let i = warmed.id as usize;
        let name = self.symbols.name(warmed.id);
        if self.instruments.generation.get(i) != Some(&warmed.generation) {
            tracing::debug!(symbol = %name, "a warm-up overtaken by a later change; dropped");
            return;
        }
        if let Err(e) = &warmed.result {
            // The symbol stays listed and is warmed up again at the next start; meanwhile it is
            // collected from its first live quote.
            tracing::warn!(symbol = %name, error = %e, "warm-up of an added instrument failed; collecting it without history");
        }
        tracing::info!(symbol = %name, history_events = warmed.events.len(), "added instrument collected from this tick");
        self.pipelines[i] = warmed.pipeline;
        self.views[i] = warmed.view;
        self.live[i] = true;
        self.quiet[i] = false;
        self.all_ids.push(warmed.id);
        self.follow_streams();
        self.metrics.symbols.set(self.all_ids.len() as i64);
        events.extend(warmed.events);
        self.session_changed.push(warmed.id);
    }

    fn remove(&mut self, id: SymbolId) {
        self.grow_to(id);
        self.instruments.generation[id as usize] += 1;
        if self.live[id as usize] {
            self.stop_collecting(id);
            tracing::info!(symbol = %self.symbols.name(id), "instrument no longer collected");
        }
    }

    /// Checkpoints a collected symbol (its forming bars are dropped) and stops collecting it.
    fn stop_collecting(&mut self, id: SymbolId) {
        let i = id as usize;
        let checkpoints = self.checkpoints_of(&self.pipelines[i]);
        self.emit(TickBatch {
            now_ms: self.clock.now_ms(),
            events: Vec::new(),
            checkpoints,
        });
        self.live[i] = false;
        self.quiet[i] = false;
        self.all_ids.retain(|&s| s != id);
        self.follow_streams();
        self.snapshot.clear(id);
        self.views[i] = SymbolView {
            frames: vec![FrameView::default(); self.timeframes.len()],
            ..SymbolView::default()
        };
        self.metrics.symbols.set(self.all_ids.len() as i64);
    }
}

/// The shared handle the HTTP side sends commands through.
pub type CommandSender = mpsc::UnboundedSender<Command>;

impl Collector {
    /// Where run-time changes of the symbol list are sent ([`Command`]).
    pub fn commands(&self) -> CommandSender {
        self.command_tx.clone()
    }
}
