/*!
Run-time settings that outlive a restart (`runtime_settings`): one JSON text per shard (`''`
unsharded, else `i/N`: `Shard::key`) and name, written
when the control API changes something and read once at start. What the values mean is the
API's business (`api::control`); this room only stores them.
*/

use rusqlite::OptionalExtension;

use super::{SqliteStore, StoreError};

impl SqliteStore {
    /// The value of `name` stored for `shard`, if any.
    ///
    /// # Errors
    /// SQLite failures.
    pub fn setting(&self, shard: &str, name: &str) -> Result<Option<String>, StoreError> {
        let conn = self.reader.lock();
        Ok(conn
            .query_row(
                "SELECT value FROM runtime_settings WHERE shard = ?1 AND name = ?2",
                [shard, name],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Stores `value` under `name` for `shard` (`None` removes it), at once and durably.
    ///
    /// # Errors
    /// SQLite failures.
    pub fn put_setting(
        &self,
        shard: &str,
        name: &str,
        value: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let conn = self.writer.lock();
        match value {
            Some(value) => conn.execute(
                "INSERT INTO runtime_settings (shard, name, value, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (shard, name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                rusqlite::params![shard, name, value, now_ms],
            )?,
            None => conn.execute(
                "DELETE FROM runtime_settings WHERE shard = ?1 AND name = ?2",
                [shard, name],
            )?,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::model::SymbolTable;
    use crate::store::sqlite::SqliteStore;

    #[test]
    fn a_setting_is_stored_replaced_and_removed_per_shard() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        let store = SqliteStore::open(&path, SymbolTable::new(["EURUSD"])).expect("open");
        assert_eq!(store.setting("", "workers").expect("read"), None);
        store
            .put_setting("", "workers", Some("[1]"), 1)
            .expect("write");
        store
            .put_setting("", "workers", Some("[2]"), 2)
            .expect("replace");
        store
            .put_setting("1/2", "workers", Some("[3]"), 2)
            .expect("another shard's");
        drop(store);
        let store = SqliteStore::open(&path, SymbolTable::new(["EURUSD"])).expect("reopen");
        assert_eq!(
            store.setting("", "workers").expect("read").as_deref(),
            Some("[2]")
        );
        assert_eq!(store.setting("0/2", "workers").expect("read"), None);
        store.put_setting("", "workers", None, 3).expect("remove");
        assert_eq!(store.setting("", "workers").expect("read"), None);
        assert_eq!(
            store.setting("1/2", "workers").expect("read").as_deref(),
            Some("[3]"),
            "removing one shard's leaves the other's"
        );
    }

    #[test]
    fn a_table_of_an_earlier_version_gets_the_shard_and_keeps_its_rows_unsharded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("old.db");
        {
            let conn = rusqlite::Connection::open(&path).expect("create");
            conn.execute_batch(
                "CREATE TABLE runtime_settings (name TEXT PRIMARY KEY, value TEXT NOT NULL,
                 updated_at INTEGER NOT NULL) WITHOUT ROWID;
                 INSERT INTO runtime_settings VALUES ('workers', '[1]', 1);",
            )
            .expect("an old schema");
        }
        for round in 0..2 {
            let store = SqliteStore::open(&path, SymbolTable::new(["EURUSD"])).expect("migrated");
            assert_eq!(
                store.setting("", "workers").expect("read").as_deref(),
                Some("[1]")
            );
            let shards = store.setting("0/2", "workers").expect("read");
            assert_eq!(shards.is_some(), round > 0, "the first open wrote it");
            store
                .put_setting("0/2", "workers", Some("[2]"), 2)
                .expect("a shard's row beside it");
        }
    }
}
