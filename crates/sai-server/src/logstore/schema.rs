//! The tables of the log store, applied as event database migrations, and
//! the housekeeping around them: the builder byte counts, removing a
//! task's log.

use rusqlite::{Connection, OptionalExtension, Transaction};

use super::Result;

/// Schema of the block table, applied as an event database migration.
pub const SCHEMA: &str = "CREATE TABLE log_blocks(
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id TEXT NOT NULL,
        first_offset INTEGER NOT NULL,
        end_offset INTEGER NOT NULL,
        channels INTEGER NOT NULL,
        raw_len INTEGER NOT NULL,
        sealed INTEGER NOT NULL,
        data BLOB NOT NULL);
     CREATE UNIQUE INDEX log_blocks_task_first ON log_blocks(task_id, first_offset);
     CREATE INDEX log_blocks_task_end ON log_blocks(task_id, end_offset);";

/// Line counts of the rows of [`SCHEMA`], applied as a later migration:
/// newlines in the row's bytes and whether its last byte is a newline
/// (NULL in rows written before, filled by the first reader). The index
/// covers them so walking a task's counts never touches its blobs.
pub const LINES_SCHEMA: &str = "ALTER TABLE log_blocks ADD COLUMN newlines INTEGER;
     ALTER TABLE log_blocks ADD COLUMN ends_line INTEGER;
     CREATE INDEX log_blocks_task_lines
        ON log_blocks(task_id, first_offset, end_offset, newlines, ends_line);";

/// Schema of the builder byte counts ([`TaskLog::received`](super::TaskLog::received)), applied as
/// an event database migration.
pub const RECEIVED_SCHEMA: &str =
    "CREATE TABLE log_received(task_id TEXT PRIMARY KEY, bytes INTEGER NOT NULL);";

/// Stored builder log bytes of a task's current attempt.
pub fn received(conn: &Connection, task_id: &str) -> Result<i64> {
    Ok(conn
        .query_row(
            "SELECT bytes FROM log_received WHERE task_id = ?1",
            [task_id],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0))
}

/// Remove a task's log (rebuild).
pub fn clear(tx: &Transaction<'_>, task_id: &str) -> Result<()> {
    tx.execute("DELETE FROM log_blocks WHERE task_id = ?1", [task_id])?;
    tx.execute("DELETE FROM log_received WHERE task_id = ?1", [task_id])?;
    Ok(())
}
