/*!
The `instruments` table: what the HTTP API changed of the symbol list (additions with their
calendar, removals of `SYMBOLS` entries), read once at start and written by each change. The
rule that combines it with `SYMBOLS` is `crate::instruments`'; this file only keeps the rows.
*/

use rusqlite::params;

use super::{SqliteStore, StoreError};
use crate::store::InstrumentRow;

impl SqliteStore {
    /// Every stored instrument row, in the order the symbols were first added.
    ///
    /// # Errors
    /// A failed query.
    pub fn instruments(&self) -> Result<Vec<InstrumentRow>, StoreError> {
        let conn = self.reader.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT symbol, calendar, active, added_at, updated_at FROM instruments
             ORDER BY added_at, symbol",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(InstrumentRow {
                symbol: r.get(0)?,
                calendar: r.get(1)?,
                active: r.get(2)?,
                added_ms: r.get(3)?,
                updated_ms: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Stores a symbol's row, committed before it returns; a row already there keeps its
    /// `added_ms` (the order of additions).
    ///
    /// # Errors
    /// A failed write (a full disk, a read-only or locked database).
    pub fn save_instrument(&self, row: &InstrumentRow) -> Result<(), StoreError> {
        self.writer.lock().execute(
            "INSERT INTO instruments (symbol, calendar, active, added_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (symbol) DO UPDATE SET calendar = excluded.calendar,
                 active = excluded.active, updated_at = excluded.updated_at",
            params![
                row.symbol,
                row.calendar,
                row.active,
                row.added_ms,
                row.updated_ms
            ],
        )?;
        Ok(())
    }

    /// Forgets a symbol's row (a symbol added over the API, then deleted).
    ///
    /// # Errors
    /// A failed write.
    pub fn forget_instrument(&self, symbol: &str) -> Result<(), StoreError> {
        self.writer
            .lock()
            .execute("DELETE FROM instruments WHERE symbol = ?1", params![symbol])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SymbolTable;

    fn row(symbol: &str, active: bool, at: i64) -> InstrumentRow {
        InstrumentRow {
            symbol: symbol.into(),
            calendar: active.then(|| "always".into()),
            active,
            added_ms: at,
            updated_ms: at,
        }
    }

    #[test]
    fn rows_are_kept_in_the_order_they_were_first_added() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("b.db");
        let store = SqliteStore::open(&path, SymbolTable::default()).expect("open");
        store.save_instrument(&row("ZZZ", true, 10)).expect("save");
        store.save_instrument(&row("AAA", true, 20)).expect("save");
        store
            .save_instrument(&row("EURUSD", false, 30))
            .expect("save");
        // Updated later: keeps its place.
        store.save_instrument(&row("ZZZ", false, 40)).expect("save");
        store.forget_instrument("AAA").expect("forget");
        drop(store);
        let store = SqliteStore::open(&path, SymbolTable::default()).expect("reopen");
        let rows = store.instruments().expect("read");
        assert_eq!(
            rows,
            [
                InstrumentRow {
                    updated_ms: 40,
                    ..row("ZZZ", false, 10)
                },
                row("EURUSD", false, 30)
            ]
        );
    }

    #[test]
    fn a_database_of_an_earlier_version_gets_the_table() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("old.db");
        {
            let conn = rusqlite::Connection::open(&path).expect("create");
            conn.execute_batch(
                "CREATE TABLE bars (symbol TEXT NOT NULL, timeframe TEXT NOT NULL,
                 ts INTEGER NOT NULL, open REAL, high REAL, low REAL, close REAL, volume REAL,
                 source TEXT, quality REAL, PRIMARY KEY (symbol, timeframe, ts));
                 INSERT INTO bars VALUES ('EURUSD', '1m', 0, 1, 1, 1, 1, 0, 'x', 1);",
            )
            .expect("an old schema");
        }
        let store = SqliteStore::open(&path, SymbolTable::new(["EURUSD"])).expect("migrated");
        assert!(store.instruments().expect("read").is_empty());
        store.save_instrument(&row("AAPL", true, 1)).expect("save");
        assert_eq!(store.instruments().expect("read").len(), 1);
    }
}
