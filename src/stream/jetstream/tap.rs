/*!
The hub's tap: a bounded queue of the messages the hub produced, taken by the JetStream
publisher. The hub hands it each batch's messages under one lock and never waits: what does not
fit is dropped there, counted and logged (at most once a minute).

Half the queue is for everything, the other half only for what does not go stale: past half
full, updates of a bar still forming (`bar`, `features`, `signal` with `forming: true`) are no
longer queued, so during a long NATS outage the closed bars, their features and signals and the
continuity messages (gaps, sessions, stale/resumed, revisions) keep their place.
*/

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::metrics::Metrics;
use crate::stream::message::Frame;

/// At most one warning about dropped messages this often.
const DROP_LOG_EVERY: Duration = Duration::from_secs(60);

/// See the module documentation.
pub struct Tap {
    queue: Mutex<VecDeque<Arc<Frame>>>,
    capacity: usize,
    closed: AtomicBool,
    notify: Notify,
    metrics: Arc<Metrics>,
    /// When the last warning about drops was logged, and drops since.
    drops: Mutex<(Option<Instant>, u64)>,
}

impl Tap {
    pub fn new(capacity: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            queue: Mutex::new(VecDeque::new()),
            capacity: capacity.max(2),
            closed: AtomicBool::new(false),
            notify: Notify::new(),
            metrics,
            drops: Mutex::new((None, 0)),
        })
    }

    /// Queues `frames` (emptied) as far as they fit; never waits.
    pub fn offer(&self, frames: &mut Vec<Arc<Frame>>) {
        let mut dropped = 0_u64;
        {
            let mut queue = self.queue.lock();
            for frame in frames.drain(..) {
                let limit = if super::ids::is_forming(&frame.body) {
                    self.capacity / 2
                } else {
                    self.capacity
                };
                if queue.len() < limit {
                    queue.push_back(frame);
                } else {
                    dropped += 1;
                }
            }
            self.metrics.nats_queue_depth.set(queue.len() as i64);
        }
        self.notify.notify_one();
        if dropped > 0 {
            self.metrics.nats_dropped.add(dropped);
            let mut drops = self.drops.lock();
            drops.1 += dropped;
            if drops.0.is_none_or(|t| t.elapsed() >= DROP_LOG_EVERY) {
                tracing::warn!(
                    dropped = drops.1,
                    queue = self.capacity,
                    "NATS queue full: messages dropped (NATS is slow or away; raise NATS_QUEUE to hold more)"
                );
                *drops = (Some(Instant::now()), 0);
            }
        }
    }

    /// Moves up to `max` queued messages into `out`.
    pub fn take(&self, max: usize, out: &mut VecDeque<Arc<Frame>>) {
        let mut queue = self.queue.lock();
        let n = max.min(queue.len());
        out.extend(queue.drain(..n));
        self.metrics.nats_queue_depth.set(queue.len() as i64);
    }

    pub fn len(&self) -> usize {
        self.queue.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until something is offered or the tap closes (returns at once if either happened
    /// since the last wait).
    pub async fn offered(&self) {
        self.notify.notified().await;
    }

    /// The hub stopped: nothing more will be offered.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}
