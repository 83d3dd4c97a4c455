/*!
Storage faults: why SQLite refused a write, named the way `/health` shows it, and the log lines
about it.

A write that fails leaves its rows where they were (the flush puts them back in the buffer, the
bootstrap asks again), so a fault costs memory and time, not data, until the process stops. The
reason is `disk_full` (`SQLITE_FULL`: the disk or the file system quota), `read_only` (SQLite
refuses to write this database: opened read-only, or moved), `locked` (another process holds
the write lock past the 5 s busy timeout), or the error's own text. [`FaultLog`] keeps the log
readable during a long fault: one warning at the first failure, then at most one a minute with
the counts, and one line when writes work again.
*/

use std::time::Duration;

use rusqlite::ErrorCode;
use tokio::time::Instant;

use super::{SqliteStore, StoreError};

/// Between two warnings about the same fault.
const REPEAT_EVERY: Duration = Duration::from_secs(60);

/// What `/health` says about a fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// `disk_full`, `read_only`, `locked`, or the error's text.
    pub reason: String,
    /// Writes that failed since the first one of this fault.
    pub failures: u64,
    /// When the first one failed.
    pub since: Instant,
}

/// The name `/health` and the log give to a failed write.
pub fn reason(e: &StoreError) -> String {
    let code = match e {
        StoreError::Sql(rusqlite::Error::SqliteFailure(f, _))
        | StoreError::Open {
            source: rusqlite::Error::SqliteFailure(f, _),
            ..
        } => Some(f.code),
        _ => None,
    };
    match code {
        Some(ErrorCode::DiskFull) => "disk_full".into(),
        Some(ErrorCode::ReadOnly) => "read_only".into(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => "locked".into(),
        _ => e.to_string(),
    }
}

impl SqliteStore {
    /// The fault that made the last write fail, until a write succeeds again.
    pub fn fault(&self) -> Option<Fault> {
        self.fault.lock().clone()
    }

    /// Notes how a write that touched the database ended.
    pub(super) fn note<T>(&self, result: &Result<T, StoreError>) {
        let mut fault = self.fault.lock();
        match result {
            Ok(_) => *fault = None,
            Err(e) => {
                let reason = reason(e);
                match fault.as_mut() {
                    Some(f) => {
                        f.failures += 1;
                        f.reason = reason;
                    }
                    None => {
                        *fault = Some(Fault {
                            reason,
                            failures: 1,
                            since: Instant::now(),
                        })
                    }
                }
            }
        }
    }
}

/// Rate-limited log lines about one kind of write (`what`).
#[derive(Debug)]
pub struct FaultLog {
    what: &'static str,
    /// The first failure of the fault in progress.
    failing_since: Option<Instant>,
    failures: u64,
    /// Failures since the last warning.
    unreported: u64,
    last_warning: Option<Instant>,
}

impl FaultLog {
    pub fn new(what: &'static str) -> Self {
        Self {
            what,
            failing_since: None,
            failures: 0,
            unreported: 0,
            last_warning: None,
        }
    }

    /// Whether the last write failed.
    pub fn failing(&self) -> bool {
        self.failing_since.is_some()
    }

    /// A failed write, with the rows it keeps waiting: a warning the first time, then at most
    /// one a minute.
    pub fn failed(&mut self, e: &StoreError, pending_rows: usize) {
        let now = Instant::now();
        self.failures += 1;
        self.unreported += 1;
        let Some(since) = self.failing_since else {
            self.failing_since = Some(now);
            self.last_warning = Some(now);
            self.unreported = 0;
            tracing::warn!(
                what = self.what,
                reason = %reason(e),
                error = %e,
                pending_rows,
                "SQLite write failed; nothing is dropped, retrying with backoff"
            );
            return;
        };
        if self
            .last_warning
            .is_none_or(|at| now.duration_since(at) >= REPEAT_EVERY)
        {
            tracing::warn!(
                what = self.what,
                reason = %reason(e),
                error = %e,
                pending_rows,
                failures = self.failures,
                failures_since_last_warning = self.unreported,
                failing_for_s = now.duration_since(since).as_secs(),
                "SQLite writes still failing; nothing is dropped"
            );
            self.last_warning = Some(now);
            self.unreported = 0;
        } else {
            tracing::debug!(what = self.what, error = %e, "SQLite write failed again");
        }
    }

    /// A write that worked: one line if it ends a fault.
    pub fn recovered(&mut self, rows_written: usize) {
        let Some(since) = self.failing_since.take() else {
            return;
        };
        tracing::info!(
            what = self.what,
            failures = self.failures,
            failed_for_s = since.elapsed().as_secs(),
            rows_written,
            "SQLite writes work again; nothing was lost"
        );
        self.failures = 0;
        self.unreported = 0;
        self.last_warning = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(code: i32) -> StoreError {
        StoreError::Sql(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(code),
            None,
        ))
    }

    #[test]
    fn reasons_name_the_fault() {
        assert_eq!(reason(&failure(rusqlite::ffi::SQLITE_FULL)), "disk_full");
        assert_eq!(
            reason(&failure(rusqlite::ffi::SQLITE_READONLY)),
            "read_only"
        );
        assert_eq!(
            reason(&failure(rusqlite::ffi::SQLITE_READONLY_DBMOVED)),
            "read_only"
        );
        assert_eq!(reason(&failure(rusqlite::ffi::SQLITE_BUSY)), "locked");
        assert_eq!(reason(&failure(rusqlite::ffi::SQLITE_LOCKED)), "locked");
        let io = reason(&failure(rusqlite::ffi::SQLITE_IOERR_WRITE));
        assert!(io.contains("Error writing to disk"), "{io}");
    }

    #[tokio::test(start_paused = true)]
    async fn warnings_are_rate_limited() {
        let mut log = FaultLog::new("test");
        let e = failure(rusqlite::ffi::SQLITE_FULL);
        log.failed(&e, 10);
        assert_eq!((log.failures, log.unreported), (1, 0));
        for _ in 0..30 {
            tokio::time::advance(Duration::from_secs(1)).await;
            log.failed(&e, 10);
        }
        assert_eq!(log.unreported, 30, "no warning within the minute");
        tokio::time::advance(Duration::from_secs(30)).await;
        log.failed(&e, 10);
        assert_eq!(log.unreported, 0, "a warning once the minute has passed");
        log.recovered(10);
        assert!(!log.failing());
        assert_eq!(log.failures, 0);
    }
}
