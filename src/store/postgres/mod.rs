/*!
PostgreSQL (`POSTGRES_URL`): the durable history (bars, rejects, gaps) and the indicator
checkpoints, with the semantics of the SQLite backend, for instances that share one database
(shards) or a team that already runs PostgreSQL.

A pool of `POSTGRES_POOL_SIZE` connections (deadpool, tokio-postgres); the schema is
`postgres.sql`, applied at start under an advisory lock (shards starting together do not race);
where the TimescaleDB extension is installed, `bars` becomes a hypertable. The rooms:
- `write.rs` — the flush: the shared buffer (`store::buffer`) written in one transaction, one
  statement per table fed whole columns as arrays (`INSERT … SELECT FROM UNNEST($1::…[], …) ON
  CONFLICT …`), never a statement per row; the immediate writes (recovery from a Redis ring,
  the bootstrap);
- `read.rs` — the queries, with the bars not flushed yet merged in;
- `tls.rs` — `sslmode` and `sslrootcert` of `POSTGRES_URL`: TLS with native-tls.

Every operation has a deadline ([`OP_TIMEOUT`]): a server that stops answering (a network
partition) fails the flush like a refused connection would, and the rows stay buffered.
*/

mod read;
pub mod tls;
mod write;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use parking_lot::Mutex;

use crate::model::{SymbolTable, TickBatch};
use crate::store::buffer::Unflushed;
use crate::store::fault::{Fault, FaultCell};
use crate::store::history::StoreError;

/// `postgres.sql`.
const SCHEMA: &str = include_str!("../../../postgres.sql");

/// The advisory lock held while the schema is applied ("barkeep" in ASCII).
const SCHEMA_LOCK: &str = "SELECT pg_advisory_xact_lock(27973489463829872)";

/// The longest a flush, a write or a query may take.
pub const OP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long opening one connection may take, unless `POSTGRES_URL` says (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The PostgreSQL database: a connection pool, and the rows not written yet.
pub struct PgStore {
    symbols: SymbolTable,
    pool: Pool,
    unflushed: Mutex<Unflushed>,
    fault: FaultCell,
}

impl PgStore {
    /// A store for `url` with up to `pool_size` connections; connects only when first used.
    ///
    /// # Errors
    /// A URL tokio-postgres cannot read, an `sslrootcert` that cannot be read (the
    /// configuration checked both already).
    pub fn new(url: &str, pool_size: usize, symbols: SymbolTable) -> Result<Self, StoreError> {
        let (mut config, tls) = tls::connection(url).map_err(|e| {
            StoreError::Setup(format!("POSTGRES_URL={}: {e}", crate::env::redact_url(url)))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("barkeep");
        }
        let manager = Manager::from_config(
            config,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(OP_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT * 2))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Setup(e.to_string()))?;
        Ok(Self {
            symbols,
            pool,
            unflushed: Mutex::new(Unflushed::default()),
            fault: FaultCell::default(),
        })
    }

    /// Creates what `postgres.sql` describes and is missing, under the schema lock.
    ///
    /// # Errors
    /// PostgreSQL unreachable, or refusing the schema.
    pub async fn apply_schema(&self) -> Result<(), StoreError> {
        within(async {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            tx.batch_execute(SCHEMA_LOCK).await?;
            tx.batch_execute(SCHEMA).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Takes what a tick produced into the buffer; returns the number of buffered rows.
    pub fn absorb(&self, batch: &TickBatch) -> usize {
        self.unflushed.lock().absorb(batch)
    }

    /// Rows not written yet: buffered for the next flush or in the flush in progress.
    pub fn pending_rows(&self) -> usize {
        self.unflushed.lock().pending_rows()
    }

    /// The fault that made the last write fail, until a write succeeds again.
    pub fn fault(&self) -> Option<Fault> {
        self.fault.get()
    }
}

/// `op`, failed with [`StoreError::Timeout`] when it takes longer than [`OP_TIMEOUT`].
async fn within<T>(op: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
    tokio::time::timeout(OP_TIMEOUT, op)
        .await
        .unwrap_or(Err(StoreError::Timeout(OP_TIMEOUT)))
}
