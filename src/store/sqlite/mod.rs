/*!
SQLite: the durable history (bars, rejects, gaps), the indicator checkpoints and the
instruments changed at run time.

One writer connection and one reader connection; WAL lets readers (`/bars`, the start-up
warm-up, the Redis reconcile) read while the writer writes. The rooms:
- `schema.rs` — `schema.sql`, migrations of older databases, connection settings;
- `write.rs` — the buffer of what the pipeline produced and the transactions that store it (a
  failed transaction puts its rows back, so nothing is lost);
- `read.rs` — the queries, with the bars not flushed yet merged in;
- `settings.rs` — run-time settings the control API keeps across restarts;
- `instruments.rs` — the symbols added and removed over the HTTP API, kept across restarts.

The write buffer (`store::buffer`) and the fault reporting (`store::fault`) are shared with the
PostgreSQL backend; everything above the stores reaches this one through `store::history`.
This module knows nothing of Redis and does not schedule its flushes: `store::writer` decides
when to flush, `store::reconcile` reads from here to rebuild the Redis rings.
*/

mod instruments;
mod read;
mod schema;
mod settings;
mod write;

// The shared types, under the names they had when SQLite was the only store.
pub use crate::store::fault::{Fault, FaultLog, reason};
pub use crate::store::history::{FlushStats, RingSummary, StoreError, StoredBar};

use std::path::Path;

use parking_lot::Mutex;
use rusqlite::Connection;

use crate::model::SymbolTable;
use crate::store::buffer::Unflushed;
use crate::store::fault::FaultCell;

/// The SQLite database: one writer connection, one reader connection, and the rows not
/// written yet.
pub struct SqliteStore {
    symbols: SymbolTable,
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
    unflushed: Mutex<Unflushed>,
    /// Why the last write failed, until one succeeds.
    fault: FaultCell,
}

impl SqliteStore {
    /// Opens (creating if needed) the database and applies `schema.sql`.
    ///
    /// # Errors
    /// When the directory cannot be created or the file is not a usable SQLite database.
    pub fn open(path: &Path, symbols: SymbolTable) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
                path: path.display().to_string(),
                source,
            })?;
        }
        let open_err = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        let writer = schema::open_connection(path)?;
        writer.execute_batch(schema::SCHEMA).map_err(open_err)?;
        schema::migrate(&writer).map_err(open_err)?;
        let reader = schema::open_connection(path)?;
        Ok(Self {
            symbols,
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
            unflushed: Mutex::new(Unflushed::default()),
            fault: FaultCell::default(),
        })
    }

    /// The fault that made the last write fail, until a write succeeds again.
    pub fn fault(&self) -> Option<Fault> {
        self.fault.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        Bar, BarRecord, Event, Features, RejectReason, RejectRecord, TickBatch, Timeframe,
    };

    fn record(ts: i64, close: f64) -> BarRecord {
        BarRecord {
            symbol: 0,
            timeframe: "1m".parse().expect("valid"),
            bar: Bar::from_price(ts, close, 1.0),
            source: "synthetic",
            quality: 1.0,
        }
    }

    fn closed(ts: i64, close: f64) -> Event {
        Event::Closed {
            record: record(ts, close),
            features: Features {
                values: [f64::NAN; crate::model::FEATURE_COUNT],
            },
        }
    }

    #[test]
    fn upserts_merge_unflushed_and_keep_rejects() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("sub/b.db"), SymbolTable::new(["EURUSD"]))
            .expect("open");
        let tf: Timeframe = "1m".parse().expect("valid");
        let reject = Event::Rejected(RejectRecord {
            symbol: 0,
            source: "synthetic",
            reason: RejectReason::NonFinite,
            input: Bar::from_price(5, f64::NAN, 1.0),
            received_at_ms: 6,
        });
        store.absorb(&TickBatch::new(
            0,
            vec![closed(60_000, 1.0), closed(120_000, 2.0), reject],
        ));
        assert_eq!(store.flush().expect("flush").bars, 2);
        // A re-delivered bar with new values replaces the old one; unflushed rows are visible.
        store.absorb(&TickBatch::new(
            0,
            vec![closed(120_000, 2.5), closed(180_000, 3.0)],
        ));
        let recent = store.recent_bars(0, tf, 2).expect("read");
        assert_eq!(
            recent
                .iter()
                .map(|b| (b.bar.ts, b.bar.close))
                .collect::<Vec<_>>(),
            [(120_000, 2.5), (180_000, 3.0)]
        );
        store.flush().expect("flush");
        assert_eq!(store.count("bars").expect("count"), 3);
        assert_eq!(store.count("rejects").expect("count"), 1);
        assert_eq!(
            store
                .bars_after(0, tf, Some(60_000), 10)
                .expect("read")
                .len(),
            2
        );
        let conn = store.reader.lock();
        let (reason, close, raw): (String, Option<f64>, String) = conn
            .query_row("SELECT reason, close, raw FROM rejects", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .expect("row");
        assert_eq!((reason.as_str(), close), ("non_finite", None));
        assert!(raw.contains("c=NaN"), "{raw}");
    }
}
