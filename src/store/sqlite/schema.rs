/*!
Opening the database: `schema.sql` (which only creates what is missing), the migrations of
databases made by earlier versions, and the connection settings (WAL, `synchronous=NORMAL`,
a 5 s busy timeout).
*/

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use super::StoreError;

pub(super) const SCHEMA: &str = include_str!("../../../schema.sql");

/// Brings a database made by an earlier version up to `schema.sql`: `gaps.status` came with
/// gap repair; `runtime_settings.shard` with shards (SQLite cannot change a primary key, so the
/// table is rebuilt, in one transaction, its rows kept under `''`).
pub(super) fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let has_shard: bool = conn.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info('runtime_settings') WHERE name = 'shard'",
        [],
        |r| r.get(0),
    )?;
    if !has_shard {
        // The old table is set aside, `schema.sql` creates the new one (and nothing else: the
        // rest exists), the rows move over.
        conn.execute_batch(
            "BEGIN IMMEDIATE; ALTER TABLE runtime_settings RENAME TO runtime_settings_unsharded;",
        )?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(
            "INSERT INTO runtime_settings (shard, name, value, updated_at)
                 SELECT '', name, value, updated_at FROM runtime_settings_unsharded;
             DROP TABLE runtime_settings_unsharded;
             COMMIT;",
        )?;
    }
    let has_status: bool = conn.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info('gaps') WHERE name = 'status'",
        [],
        |r| r.get(0),
    )?;
    if !has_status {
        conn.execute_batch("ALTER TABLE gaps ADD COLUMN status TEXT NOT NULL DEFAULT 'open'")?;
    }
    Ok(())
}

/// A connection with barkeep's settings.
pub(super) fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let open_err = |source| StoreError::Open {
        path: path.display().to_string(),
        source,
    };
    let conn = Connection::open(path).map_err(open_err)?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(open_err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(open_err)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(open_err)?;
    Ok(conn)
}
