/*!
Run-time settings that outlive a restart (`runtime_settings`): one JSON text per name, written
when the control API changes something and read once at start. What the values mean is the
API's business (`api::control`); this room only stores them.
*/

use rusqlite::OptionalExtension;

use super::{SqliteStore, StoreError};

impl SqliteStore {
    /// The stored value of `name`, if any.
    ///
    /// # Errors
    /// SQLite failures.
    pub fn setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        let conn = self.reader.lock();
        Ok(conn
            .query_row(
                "SELECT value FROM runtime_settings WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Stores `value` under `name` (`None` removes it), at once and durably.
    ///
    /// # Errors
    /// SQLite failures.
    pub fn put_setting(
        &self,
        name: &str,
        value: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let conn = self.writer.lock();
        match value {
            Some(value) => conn.execute(
                "INSERT INTO runtime_settings (name, value, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                rusqlite::params![name, value, now_ms],
            )?,
            None => conn.execute("DELETE FROM runtime_settings WHERE name = ?1", [name])?,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::model::SymbolTable;
    use crate::store::sqlite::SqliteStore;

    #[test]
    fn a_setting_is_stored_replaced_and_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        let store = SqliteStore::open(&path, SymbolTable::new(["EURUSD"])).expect("open");
        assert_eq!(store.setting("workers").expect("read"), None);
        store.put_setting("workers", Some("[1]"), 1).expect("write");
        store
            .put_setting("workers", Some("[2]"), 2)
            .expect("replace");
        drop(store);
        let store = SqliteStore::open(&path, SymbolTable::new(["EURUSD"])).expect("reopen");
        assert_eq!(
            store.setting("workers").expect("read").as_deref(),
            Some("[2]")
        );
        store.put_setting("workers", None, 3).expect("remove");
        assert_eq!(store.setting("workers").expect("read"), None);
    }
}
