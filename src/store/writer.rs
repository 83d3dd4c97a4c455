/*!
The stores' one entrance: every batch the collector produces is taken by history (SQLite or
PostgreSQL, `store::history`) first, then handed to Redis.

The collector sends each [`TickBatch`] to one bounded queue, read by one task ([`StoreChain`]).
For each batch, in this order:
1. History takes its rows into the write buffer ([`History::absorb`]); from then on readers
   see them (the buffer is merged into what they read) and they are flushed with the rest.
2. The batch is offered to the Redis sink's own bounded queue, without waiting. When that queue
   is full the batch is not queued; the Redis sink is asked to resync instead (`redis_queue_full_total`),
   rebuilding its rings from history, which by step 1 holds the batch.

So Redis never shows a closed bar history does not hold, and a slow Redis never slows history or
the collector. The buffer is flushed every `BATCH_WRITE_INTERVAL` in one transaction, on a task
of its own (SQLite's on the blocking pool) while batches keep arriving, and once more when the collector has stopped (the
queue closed); dropping the Redis queue's sender then tells the Redis sink to finish.

A flush that fails (disk full, read-only, locked, PostgreSQL unreachable) keeps its rows in the buffer and is tried
again with a backoff: after `min(BATCH_WRITE_INTERVAL, 1 s)`, doubling up to [`RETRY_MAX`], back
to the normal pace after the first flush that works, which writes everything kept. Meanwhile
batches keep being taken (and passed to Redis), so the buffer grows: nothing is dropped while
the process runs. `/health` shows the reason and the rows waiting; the log says it once, then
at most once a minute, and once when it is over. At shutdown the last flush is tried five times
over about 3 s; rows still unwritten then are lost, logged with their count, and the process
exits with code 4.
*/

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::model::TickBatch;
use crate::store::fault::{FaultLog, reason};
use crate::store::history::{FlushStats, History, StoreError};
use crate::store::reconcile::Resync;

/// The longest wait between two attempts to flush while history refuses writes.
pub const RETRY_MAX: Duration = Duration::from_secs(60);

/// Where batches go after history: the Redis sink's queue, and how to ask it to resync.
pub struct RedisQueue {
    pub tx: mpsc::Sender<Arc<TickBatch>>,
    pub resync: Arc<Resync>,
}

/// History, then Redis (when configured): the task that feeds both.
pub struct StoreChain {
    history: History,
    redis: Option<RedisQueue>,
    flush_every: Duration,
    metrics: Arc<Metrics>,
    clock: Clock,
}

impl StoreChain {
    pub fn new(
        history: History,
        redis: Option<RedisQueue>,
        flush_every: Duration,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Self {
        Self {
            history,
            redis,
            flush_every,
            metrics,
            clock,
        }
    }

    /// Takes batches until the collector closes `rx`, flushing history every `flush_every`, then
    /// flushes a last time and returns (which closes the Redis queue).
    pub async fn run(self, mut rx: mpsc::Receiver<Arc<TickBatch>>) {
        let mut log = FaultLog::new("flush", self.history.name());
        let mut failures = 0u32;
        let mut started = Instant::now();
        let mut next_flush = started + self.flush_every;
        let mut flushing: Option<JoinHandle<Result<FlushStats, StoreError>>> = None;
        loop {
            tokio::select! {
                batch = rx.recv() => match batch {
                    Some(batch) => self.take(batch, &rx),
                    None => break,
                },
                () = tokio::time::sleep_until(next_flush), if flushing.is_none() => {
                    started = Instant::now();
                    let history = self.history.clone();
                    flushing = Some(tokio::spawn(async move { history.flush().await }));
                }
                result = wait_flush(&mut flushing), if flushing.is_some() => {
                    flushing = None;
                    failures = if self.record_flush(result, &mut log) { 0 } else { failures + 1 };
                    next_flush = started + self.delay_after(failures);
                }
            }
        }
        if let Some(handle) = flushing.take() {
            self.record_flush(
                handle
                    .await
                    .map_err(|e| StoreError::Join(e.to_string()))
                    .and_then(|r| r),
                &mut log,
            );
        }
        self.final_flush(&mut log).await;
    }

    /// The wait before the next flush after `failures` failed ones in a row.
    fn delay_after(&self, failures: u32) -> Duration {
        if failures == 0 {
            return self.flush_every;
        }
        let first = self.flush_every.min(Duration::from_secs(1));
        first
            .saturating_mul(1 << (failures - 1).min(16))
            .min(RETRY_MAX)
    }

    /// One batch: history takes it, then Redis is offered it.
    fn take(&self, batch: Arc<TickBatch>, rx: &mpsc::Receiver<Arc<TickBatch>>) {
        let rows = self.history.absorb(&batch);
        self.metrics.sqlite_pending_rows.set(rows as i64);
        self.metrics
            .sqlite_queue_depth
            .set((rx.max_capacity() - rx.capacity()) as i64);
        let Some(redis) = &self.redis else { return };
        match redis.tx.try_send(batch) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics.redis_queue_full.inc();
                redis.resync.request();
            }
            // The sink gave up (shutdown while Redis was unreachable): history has the batch.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// The last flush, retried a few times: a locked database, a full disk or a restarting
    /// server can be transient.
    async fn final_flush(&self, log: &mut FaultLog) {
        let mut last_error = None;
        for attempt in 0..5 {
            let result = self.history.flush().await;
            if let Err(e) = &result {
                last_error = Some(reason(e));
            }
            self.record_flush(result, log);
            if self.history.pending_rows() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
        }
        let left = self.history.pending_rows();
        if left > 0 {
            tracing::error!(
                rows = left,
                reason = %last_error.as_deref().unwrap_or("unknown"),
                "{}: rows could not be written before shutdown and are lost",
                self.history.name()
            );
        }
    }

    /// Counts a flush and logs a failure (rate-limited); whether it worked.
    fn record_flush(&self, result: Result<FlushStats, StoreError>, log: &mut FaultLog) -> bool {
        let metrics = &self.metrics;
        match result {
            Ok(stats) => {
                metrics.sqlite_flush_duration.record(stats.took);
                metrics.sqlite_flushes.inc();
                metrics.sqlite_bars_written.add(stats.bars as u64);
                metrics.sqlite_rejects_written.add(stats.rejects as u64);
                metrics.checkpoints_written.add(stats.checkpoints as u64);
                metrics
                    .sqlite_pending_rows
                    .set(self.history.pending_rows() as i64);
                metrics.sqlite_last_flush_ms.set(self.clock.now_ms());
                log.recovered(stats.bars + stats.rejects + stats.checkpoints);
                true
            }
            Err(e) => {
                metrics.sqlite_flush_errors.inc();
                let pending = self.history.pending_rows();
                metrics.sqlite_pending_rows.set(pending as i64);
                log.failed(&e, pending);
                false
            }
        }
    }
}

/// Waits for the flush in progress (never completes when there is none).
async fn wait_flush(
    flushing: &mut Option<JoinHandle<Result<FlushStats, StoreError>>>,
) -> Result<FlushStats, StoreError> {
    let Some(handle) = flushing.as_mut() else {
        return std::future::pending().await;
    };
    handle.await.map_err(|e| StoreError::Join(e.to_string()))?
}
