/*!
Storage faults: why the history store (SQLite or PostgreSQL) refused a write, named the way
`/health` shows it, and the log lines about it.

A write that fails leaves its rows where they were (the flush puts them back in the buffer, the
bootstrap asks again), so a fault costs memory and time, not data, until the process stops. The
reason is `disk_full` (`SQLITE_FULL`, PostgreSQL's `53100`: the disk or a quota), `read_only`
(SQLite refuses to write this database: opened read-only, or moved; PostgreSQL is a read-only
standby or in a read-only transaction), `locked` (another process holds the write lock past the
5 s busy timeout; PostgreSQL's lock or deadlock errors), `unreachable` (PostgreSQL refused or
dropped the connection, or is shutting down), or the error's own text. [`FaultLog`] keeps the
log readable during a long fault: one warning at the first failure, then at most one a minute
with the counts, and one line when writes work again.
*/

use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::ErrorCode;
use tokio::time::Instant;
use tokio_postgres::error::SqlState;

use super::history::StoreError;

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
    let named = match e {
        StoreError::Sql(rusqlite::Error::SqliteFailure(f, _))
        | StoreError::Open {
            source: rusqlite::Error::SqliteFailure(f, _),
            ..
        } => match f.code {
            ErrorCode::DiskFull => Some("disk_full"),
            ErrorCode::ReadOnly => Some("read_only"),
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => Some("locked"),
            _ => None,
        },
        StoreError::Postgres(e) => postgres_reason(e),
        StoreError::Pool(deadpool_postgres::PoolError::Backend(e)) => postgres_reason(e),
        StoreError::Pool(_) | StoreError::Timeout(_) => Some("unreachable"),
        _ => None,
    };
    named.map_or_else(|| e.to_string(), str::to_string)
}

fn postgres_reason(e: &tokio_postgres::Error) -> Option<&'static str> {
    let Some(code) = e.code() else {
        // No answer from the server: the connection failed, broke or timed out.
        let io = std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>());
        return (e.is_closed() || io).then_some("unreachable");
    };
    Some(match code {
        c if *c == SqlState::DISK_FULL || *c == SqlState::OUT_OF_MEMORY => "disk_full",
        c if *c == SqlState::READ_ONLY_SQL_TRANSACTION => "read_only",
        c if *c == SqlState::LOCK_NOT_AVAILABLE || *c == SqlState::T_R_DEADLOCK_DETECTED => {
            "locked"
        }
        c if *c == SqlState::ADMIN_SHUTDOWN
            || *c == SqlState::CRASH_SHUTDOWN
            || *c == SqlState::CANNOT_CONNECT_NOW
            || *c == SqlState::CONNECTION_FAILURE
            || *c == SqlState::TOO_MANY_CONNECTIONS =>
        {
            "unreachable"
        }
        _ => return None,
    })
}

/// Why the last write failed, until one succeeds: what `/health` shows.
#[derive(Debug, Default)]
pub struct FaultCell(Mutex<Option<Fault>>);

impl FaultCell {
    /// The fault that made the last write fail, until a write succeeds again.
    pub fn get(&self) -> Option<Fault> {
        self.0.lock().clone()
    }

    /// Notes how a write that touched the database ended.
    pub fn note<T>(&self, result: &Result<T, StoreError>) {
        let mut fault = self.0.lock();
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
    /// `SQLite` or `PostgreSQL`.
    store: &'static str,
    /// The first failure of the fault in progress.
    failing_since: Option<Instant>,
    failures: u64,
    /// Failures since the last warning.
    unreported: u64,
    last_warning: Option<Instant>,
}

impl FaultLog {
    pub fn new(what: &'static str, store: &'static str) -> Self {
        Self {
            what,
            store,
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
                "{} write failed; nothing is dropped, retrying with backoff",
                self.store
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
                "{} writes still failing; nothing is dropped",
                self.store
            );
            self.last_warning = Some(now);
            self.unreported = 0;
        } else {
            tracing::debug!(what = self.what, error = %e, "{} write failed again", self.store);
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
            "{} writes work again; nothing was lost",
            self.store
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
        let mut log = FaultLog::new("test", "SQLite");
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
