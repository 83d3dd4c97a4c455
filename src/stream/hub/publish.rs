/*!
The hub's producing half: a batch's events become messages (bodies per channel), each
numbered, rendered once, kept (newest per kind, replay buffer) and offered to the channel's
subscribers; a subscriber whose queue is full is dropped there and then. Also the hub's growth
(`Hub::lock`): the channels of a symbol added at run time.
*/

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::MutexGuard;
use tokio::sync::mpsc;

use super::{Channel, Hub, SNAPSHOT_EVERY, State};
use crate::model::{BarRecord, Event, SymbolId, TickBatch};
use crate::stream::message::{Body, ChannelKind, Envelope, render};

impl Hub {
    /// The hub's state, with channels for every symbol of the table (ids are dense and never
    /// reused, so growing is appending; checking costs a length comparison).
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        let mut st = self.state.lock();
        let table = &self.names.symbols;
        while st.open.len() < table.len() {
            let id = st.open.len() as SymbolId;
            let symbol = table.name(id);
            for kind in ChannelKind::ALL {
                st.channels.push(Channel {
                    name: kind.channel(symbol).into(),
                    symbol: id,
                    kind,
                    seq: 0,
                    keys: Vec::new(),
                    replay: VecDeque::new(),
                    evicted_order: 0,
                    subs: Vec::new(),
                });
            }
            st.open.push(true);
        }
        st
    }

    /// Turns a batch's events into messages and sends them.
    pub fn publish(&self, batch: &TickBatch) {
        let now = batch.now_ms;
        let mut st = self.lock();
        for event in &batch.events {
            match event {
                Event::Closed { record, features } | Event::Forming { record, features } => {
                    let forming = matches!(event, Event::Forming { .. });
                    let Some(frame) = self.frame_of(record) else {
                        continue;
                    };
                    let vendor = Some(record.source);
                    let md = self.channel_of(ChannelKind::MarketData, record.symbol);
                    let bar = Body::Bar {
                        frame,
                        bar: record.bar,
                        quality: record.quality,
                        forming,
                    };
                    self.push(&mut st, md, bar, vendor, now);
                    let an = self.channel_of(ChannelKind::Analytics, record.symbol);
                    let body = Body::Features {
                        frame,
                        ts: record.bar.ts,
                        forming,
                        close: record.bar.close,
                        values: features.values,
                    };
                    self.push(&mut st, an, body, vendor, now);
                    let open = st.open.get(record.symbol as usize).copied().unwrap_or(true);
                    let signal = if open {
                        crate::signals::evaluate(
                            features,
                            record.bar.close,
                            0,
                            self.settings.stale_after_ms,
                        )
                    } else {
                        crate::signals::market_closed()
                    };
                    let body = Body::Signal {
                        frame,
                        ts: record.bar.ts,
                        forming,
                        signal: signal.signal,
                        score: signal.score,
                        confidence: signal.confidence,
                        reasons: signal.reasons,
                    };
                    self.push(&mut st, an, body, vendor, now);
                }
                Event::Gap {
                    symbol,
                    timeframe,
                    gap,
                } => {
                    if let Some(frame) = self.frame_index(*timeframe) {
                        self.push_both(&mut st, *symbol, &Body::Gap { frame, gap: *gap }, now);
                    }
                }
                Event::Revision {
                    symbol,
                    timeframe,
                    gap,
                    bars,
                } => {
                    if let Some(frame) = self.frame_index(*timeframe) {
                        let body = Body::Revision {
                            frame,
                            gap: *gap,
                            bars: *bars,
                        };
                        self.push_both(&mut st, *symbol, &body, now);
                    }
                }
                Event::Session { symbol, session } => {
                    if let Some(open) = st.open.get_mut(*symbol as usize) {
                        *open = session.open;
                    }
                    self.push_both(&mut st, *symbol, &Body::Session(*session), now);
                }
                Event::Liveness {
                    symbol,
                    stale,
                    last_data_ms,
                } => {
                    let body = Body::Liveness {
                        stale: *stale,
                        last_data_ms: *last_data_ms,
                        quiet_ms: (now - last_data_ms).max(0),
                    };
                    self.push_both(&mut st, *symbol, &body, now);
                }
                Event::Rejected(_) => {}
            }
        }
        if let Some(tap) = self.tap.get()
            && !st.tapped.is_empty()
        {
            tap.offer(&mut st.tapped);
        }
    }

    fn frame_index(&self, tf: crate::model::Timeframe) -> Option<usize> {
        self.names.frames.iter().position(|&t| t == tf)
    }

    fn frame_of(&self, record: &BarRecord) -> Option<usize> {
        self.frame_index(record.timeframe)
    }

    fn push_both(&self, st: &mut State, symbol: SymbolId, body: &Body, now: i64) {
        for kind in ChannelKind::ALL {
            let c = self.channel_of(kind, symbol);
            self.push(st, c, body.clone(), None, now);
        }
    }

    /// Numbers, renders, keeps and sends one message (none when a delta would be empty).
    fn push(&self, st: &mut State, c: u32, body: Body, vendor: Option<&'static str>, now: i64) {
        let State {
            channels,
            subs,
            order,
            tapped,
            ..
        } = st;
        let Some(ch) = channels.get_mut(c as usize) else {
            return;
        };
        let key = body.key();
        let slot = ch.keys.iter().position(|(f, _)| f.key == key);
        let base = slot.and_then(|i| {
            let (prev, deltas) = &ch.keys[i];
            let same_bar = body.delta_ts().is_some() && prev.body.delta_ts() == body.delta_ts();
            (same_bar && *deltas < SNAPSHOT_EVERY).then_some(&prev.body)
        });
        if base.is_some_and(|b| !body.differs(b)) {
            return;
        }
        ch.seq += 1;
        *order += 1;
        let symbol = self.names.symbols.name(ch.symbol);
        let env = Envelope {
            channel: &ch.name,
            symbol,
            kind: ch.kind,
            timestamp: now,
            vendor,
            seq: ch.seq,
        };
        let frame = Arc::new(render(
            &self.names,
            &env,
            c,
            &ch.name,
            *order,
            body,
            base,
            true,
        ));
        match slot {
            Some(i) => {
                let deltas = if frame.delta { ch.keys[i].1 + 1 } else { 0 };
                ch.keys[i] = (Arc::clone(&frame), deltas);
            }
            None => ch.keys.push((Arc::clone(&frame), 0)),
        }
        ch.replay.push_back(Arc::clone(&frame));
        while ch.replay.len() > self.settings.replay {
            if let Some(old) = ch.replay.pop_front() {
                ch.evicted_order = old.order;
            }
        }
        self.metrics.stream_messages.inc();
        // Continuity goes to both channels of the symbol: the tap takes it once.
        if self.tap.get().is_some() && (frame.is_data || ch.kind == ChannelKind::MarketData) {
            tapped.push(Arc::clone(&frame));
        }
        let mut slow = Vec::new();
        for link in &ch.subs {
            if !link.wants(&frame) {
                continue;
            }
            if let Err(mpsc::error::TrySendError::Full(_)) = link.tx.try_send(Arc::clone(&frame)) {
                slow.push(link.id);
            }
        }
        for id in slow {
            if let Some((link, on)) = subs.remove(&id) {
                for c in on {
                    if let Some(ch) = channels.get_mut(c as usize) {
                        ch.subs.retain(|l| l.id != id);
                    }
                }
                link.flags.kicked.store(true, Ordering::Release);
                link.flags.notify.notify_one();
                if let Some(on_kick) = &link.on_kick {
                    on_kick();
                }
                self.metrics.stream_slow_consumers.inc();
                tracing::info!(
                    subscriber = id,
                    "streaming client dropped: its queue was full (slow consumer)"
                );
            }
        }
        self.metrics.stream_subscribers.set(subs.len() as i64);
    }
}
