//! Stores written before blocks kept one uncompressed row per record in a
//! `logs` table; [`migrate_legacy`] packs them into sealed blocks through
//! the write side, once.

use rusqlite::{Connection, OptionalExtension};

use super::schema::clear;
use super::write::TaskLog;
use super::{LogError, Result};

/// Pack the uncompressed `logs` rows of older stores into sealed blocks and
/// delete them, in one transaction. Returns the number of tasks migrated.
pub fn migrate_legacy(conn: &mut Connection) -> Result<usize> {
    let has_legacy: bool = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'logs'",
            [],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if !has_legacy
        || conn
            .query_row("SELECT 1 FROM logs LIMIT 1", [], |_| Ok(()))
            .optional()?
            .is_none()
    {
        return Ok(0);
    }
    let tx = conn.transaction()?;
    let tasks: Vec<String> = tx
        .prepare("SELECT DISTINCT task_id FROM logs")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for task in &tasks {
        clear(&tx, task)?;
        let mut log = TaskLog::new(task, 0);
        {
            let mut st = tx.prepare(
                "SELECT offset, channel, timestamp_us, data FROM logs WHERE task_id = ?1 ORDER BY offset",
            )?;
            let mut rows = st.query([task])?;
            while let Some(r) = rows.next()? {
                let offset: i64 = r.get(0)?;
                let data = r.get_ref(3)?.as_blob()?;
                // Old rows are contiguous; a gap or overlap would shift every
                // later offset, so refuse rather than silently reflow.
                if offset != log.len() {
                    return Err(LogError::Corrupt {
                        task: task.clone(),
                        offset,
                        what: "legacy log rows are not contiguous",
                    });
                }
                log.push(r.get::<_, i64>(1)? as u8, r.get(2)?, data);
                if log.wants_seal() {
                    log.persist(&tx)?;
                }
            }
        }
        log.seal();
        log.persist(&tx)?;
    }
    tx.execute("DELETE FROM logs", [])?;
    tx.commit()?;
    Ok(tasks.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logstore::fixtures::db;
    use crate::logstore::{read, read_bytes};
    use rusqlite::params;
    use sai_testkit::sqlite::count;

    #[test]
    fn legacy_rows_are_migrated_into_blocks() {
        let mut c = db();
        c.execute_batch(
            "CREATE TABLE logs(id INTEGER PRIMARY KEY AUTOINCREMENT, task_id TEXT NOT NULL,
              offset INTEGER NOT NULL, channel INTEGER NOT NULL, timestamp_us INTEGER NOT NULL,
              data BLOB NOT NULL);",
        )
        .unwrap();
        let mut all = Vec::new();
        for i in 0..3000i64 {
            let line = format!("legacy line {i} of an old store, channel {}\n", 1 + i % 2);
            c.execute(
                "INSERT INTO logs(task_id, offset, channel, timestamp_us, data) VALUES ('t1', ?1, ?2, ?3, ?4)",
                params![all.len() as i64, 1 + i % 2, i, line.as_bytes()],
            )
            .unwrap();
            all.extend_from_slice(line.as_bytes());
        }
        assert_eq!(migrate_legacy(&mut c).unwrap(), 1);
        assert_eq!(migrate_legacy(&mut c).unwrap(), 0, "idempotent");
        assert_eq!(count(&c, "SELECT COUNT(*) FROM logs"), 0);
        assert_eq!(read_bytes(&c, "t1", 0, i64::MAX).unwrap(), all);
        let recs = read(&c, "t1", 0, i64::MAX).unwrap();
        assert_eq!(recs.len(), 3000);
        assert_eq!((recs[1].channel, recs[1].timestamp_us), (2, 1));
        // A new writer continues after the migrated log.
        assert_eq!(TaskLog::resume(&c, "t1").unwrap().len(), all.len() as i64);
    }
}
