/*!
The open-files limit (`RLIMIT_NOFILE`) against what barkeep may hold open: the HTTP pool
(`HTTP_POOL_SIZE`) plus a reserve for provider requests (`MAX_CONCURRENCY`), Redis
(`REDIS_POOL_SIZE`) and a fixed allowance for SQLite, the listener, push streams, the runtime
and the logs.

The configuration is checked against the hard limit, the most this process can ever open;
`main` then raises the soft limit to what is needed when it is lower (the soft limit of a
shell or a systemd unit is often 1024 while the hard one is far higher).
*/

/// This process's open-files limits; `None` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

/// Descriptors kept for SQLite (database, WAL, shared memory, readers), the listener, push
/// streams, the runtime and stdio, besides the pools.
const FIXED_RESERVE: u64 = 64;

/// `HTTP_POOL_SIZE` when not set, unless the limit leaves less.
const DEFAULT_POOL: u64 = 1_024;

impl OpenFiles {
    pub const UNLIMITED: Self = Self {
        soft: None,
        hard: None,
    };

    /// This process's limits.
    pub fn of_process() -> Self {
        #[cfg(unix)]
        {
            let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
            Self {
                soft: limit.current,
                hard: limit.maximum,
            }
        }
        #[cfg(not(unix))]
        Self::UNLIMITED
    }

    /// Descriptors needed besides the HTTP pool.
    pub fn reserve(max_concurrency: usize, redis_pool_size: usize) -> u64 {
        FIXED_RESERVE + max_concurrency as u64 + redis_pool_size as u64
    }

    /// The default HTTP pool: 1024, or what the hard limit leaves after the reserve (at least 1).
    pub fn default_pool(&self, max_concurrency: usize, redis_pool_size: usize) -> usize {
        let room = self.hard.map_or(DEFAULT_POOL, |hard| {
            hard.saturating_sub(Self::reserve(max_concurrency, redis_pool_size))
        });
        usize::try_from(DEFAULT_POOL.min(room).max(1)).unwrap_or(1)
    }

    /// Raises this process's soft limit to `needed` when it is lower; never above the hard
    /// limit. Returns the soft limit now in force (`None`: unlimited).
    ///
    /// # Errors
    /// The system refused the change.
    pub fn raise_soft_to(needed: u64) -> Result<Option<u64>, String> {
        #[cfg(unix)]
        {
            use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
            let limit = getrlimit(Resource::Nofile);
            let target = limit.maximum.map_or(needed, |hard| needed.min(hard));
            if limit.current.is_some_and(|soft| soft < target) {
                setrlimit(
                    Resource::Nofile,
                    Rlimit {
                        current: Some(target),
                        maximum: limit.maximum,
                    },
                )
                .map_err(|e| format!("cannot raise the open-files limit to {target}: {e}"))?;
                return Ok(Some(target));
            }
            Ok(limit.current)
        }
        #[cfg(not(unix))]
        {
            let _ = needed;
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_pool_fits_the_limit() {
        let limited = |hard| OpenFiles {
            soft: Some(hard),
            hard: Some(hard),
        };
        assert_eq!(OpenFiles::UNLIMITED.default_pool(64, 4), 1_024);
        assert_eq!(limited(1_048_576).default_pool(64, 4), 1_024);
        assert_eq!(limited(1_024).default_pool(64, 4), 1_024 - 132);
        assert_eq!(limited(100).default_pool(64, 4), 1);
    }

    #[test]
    fn raising_to_what_is_already_allowed_changes_nothing() {
        let before = OpenFiles::of_process();
        let now = OpenFiles::raise_soft_to(1).expect("no change needed");
        assert_eq!(now, before.soft);
        assert_eq!(OpenFiles::of_process(), before);
    }
}
