//! One event's database: its tasks (each with its run record), logs and
//! artifacts.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};
use sai_core::saifile::TaskSpec;
use sai_core::task::{EventId, RunRecord, Task};

use super::{Rows, StoreError, now_ms, parsed};

/// An open per-event database. Shared via `Arc`; when marked doomed its
/// folder is removed once the last handle is dropped.
pub struct EventDb {
    /// Event id.
    pub id: EventId,
    dir: PathBuf,
    conn: Mutex<Connection>,
    pub(super) doomed: AtomicBool,
    /// Called by [`EventDb::sync`] between its two checkpoints (tests).
    #[cfg(test)]
    mid_checkpoint: Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
}

impl std::fmt::Debug for EventDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EventDb({})", self.id)
    }
}

/// Artifact row.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ArtifactRow {
    /// Sanitised file name.
    pub name: String,
    /// Size in bytes.
    pub size: i64,
    /// Lowercase hex sha256.
    pub sha256: String,
    /// Upload time (unix ms).
    pub created: i64,
}

pub use crate::logstore::LogRecord;
use crate::logstore::{self, TaskLog};

/// WAL size from which [`EventDb::sync`] checkpoints instead of syncing.
pub const CHECKPOINT_WAL_BYTES: u64 = 32 * 1024;

/// The busy timeout of event database connections (see
/// [`super::migrations::open`]), put back after [`EventDb::sync`]'s
/// truncation, which waits for nobody.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

const TASK_COLS: &str = "id, idx, configuration, platform, steps, artifacts, packages, priority, state, builder, exit_code, failed_step, reason, attempt, infra_failures, build_step, created, started, ended, last_updated, instance, test_reports";

fn task_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Task> {
    let list = |i: usize| -> rusqlite::Result<Vec<String>> {
        let s: String = r.get(i)?;
        serde_json::from_str(&s).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
        })
    };
    Ok(Task {
        id: parsed(r, 0)?,
        idx: r.get(1)?,
        spec: TaskSpec {
            configuration: r.get(2)?,
            platform: r.get(3)?,
            steps: list(4)?,
            artifacts: list(5)?,
            packages: list(6)?,
            test_reports: list(21)?,
        },
        priority: r.get::<_, i64>(7)? != 0,
        created: r.get(16)?,
        last_updated: r.get(19)?,
        run: RunRecord {
            state: parsed(r, 8)?,
            builder: r.get(9)?,
            instance: r.get(20)?,
            exit_code: r.get(10)?,
            failed_step: r.get(11)?,
            reason: r.get(12)?,
            attempt: r.get(13)?,
            infra_failures: r.get(14)?,
            build_step: r.get(15)?,
            started: r.get(17)?,
            ended: r.get(18)?,
        },
    })
}

/// Write the tasks of a new event in one transaction.
pub(super) fn insert_tasks(conn: &mut Connection, tasks: &[Task]) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    {
        let mut st = tx.prepare(
            "INSERT INTO tasks(id, idx, configuration, platform, steps, artifacts, packages, priority, state, created, last_updated, test_reports)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11)",
        )?;
        for t in tasks {
            st.execute(params![
                t.id.as_str(),
                t.idx,
                t.spec.configuration,
                t.spec.platform,
                serde_json::to_string(&t.spec.steps)?,
                serde_json::to_string(&t.spec.artifacts)?,
                serde_json::to_string(&t.spec.packages)?,
                t.priority as i64,
                t.run.state.as_str(),
                t.created,
                serde_json::to_string(&t.spec.test_reports)?
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

impl EventDb {
    pub(super) fn new(id: EventId, dir: PathBuf, conn: Connection) -> EventDb {
        EventDb {
            id,
            dir,
            conn: Mutex::new(conn),
            doomed: AtomicBool::new(false),
            #[cfg(test)]
            mid_checkpoint: Mutex::new(None),
        }
    }

    /// Lock the connection.
    pub fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Folder of one task's artifacts.
    pub fn artifact_dir(&self, task_id: &str) -> PathBuf {
        self.dir.join("artifacts").join(task_id)
    }

    /// All tasks in saifile order.
    pub fn tasks(&self) -> Result<Vec<Task>, StoreError> {
        self.conn().rows(
            &format!("SELECT {TASK_COLS} FROM tasks ORDER BY idx"),
            [],
            task_from_row,
        )
    }

    /// At most `limit` tasks after saifile position `after`, in saifile order.
    pub fn tasks_page(&self, after: i64, limit: i64) -> Result<Vec<Task>, StoreError> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(&format!(
            "SELECT {TASK_COLS} FROM tasks WHERE idx > ?1 ORDER BY idx LIMIT ?2"
        ))?;
        let rows = st
            .query_map([after, limit], task_from_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Number of tasks in each state.
    pub fn state_counts(
        &self,
    ) -> Result<std::collections::BTreeMap<sai_core::task::TaskState, usize>, StoreError> {
        let conn = self.conn();
        let mut st = conn.prepare_cached("SELECT state, COUNT(*) FROM tasks GROUP BY state")?;
        let mut out = std::collections::BTreeMap::new();
        for row in st.query_map([], |r| Ok((super::parsed(r, 0)?, r.get::<_, i64>(1)?)))? {
            let (state, n) = row?;
            out.insert(state, n as usize);
        }
        Ok(out)
    }

    /// One task.
    pub fn task(&self, id: &str) -> Result<Option<Task>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {TASK_COLS} FROM tasks WHERE id = ?1"),
                [id],
                task_from_row,
            )
            .optional()?)
    }

    /// `(configuration, platform)` of the failed tasks.
    pub fn failed_pairs(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.conn().rows(
            "SELECT configuration, platform FROM tasks WHERE state = ?1",
            [sai_core::task::TaskState::Failed.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    /// Write a task's run record.
    pub fn update_task(&self, id: &str, u: &RunRecord) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE tasks SET state = ?2, builder = ?3, exit_code = ?4, failed_step = ?5, reason = ?6,
               attempt = ?7, infra_failures = ?8, build_step = ?9, started = ?10, ended = ?11, last_updated = ?12,
               instance = ?13
             WHERE id = ?1",
            params![
                id,
                u.state.as_str(),
                u.builder,
                u.exit_code,
                u.failed_step,
                u.reason,
                u.attempt,
                u.infra_failures,
                u.build_step,
                u.started,
                u.ended,
                now_ms(),
                u.instance
            ],
        )?;
        Ok(())
    }

    /// Log records of a task from byte `offset`, at most about `max` bytes.
    pub fn logs(&self, task_id: &str, offset: i64, max: i64) -> Result<Vec<LogRecord>, StoreError> {
        Ok(logstore::read(&self.conn(), task_id, offset, max)?)
    }

    /// A page of a task's log from `start` (a byte or a line), at most
    /// about `max` bytes, with the line numbers of where it starts and of
    /// the whole log and the log's length, all read under one lock.
    pub fn log_page(
        &self,
        task_id: &str,
        start: logstore::LogStart,
        max: i64,
    ) -> Result<(logstore::LinePosition, Vec<LogRecord>, i64), StoreError> {
        let conn = self.conn();
        // One snapshot for the three reads, even if another handle of this
        // database commits meanwhile.
        let tx = conn.unchecked_transaction()?;
        let at = logstore::locate(&tx, task_id, start)?;
        let recs = logstore::read(&tx, task_id, at.offset, max)?;
        let total = logstore::len(&tx, task_id)?;
        // Keeps line counts a reader filled in for an older store; the
        // reads stand even if that fails (e.g. a full disk rolled it back).
        if let Err(e) = tx.commit() {
            tracing::warn!(task = task_id, "keeping log line counts: {e}");
        }
        Ok((at, recs, total))
    }

    /// Exactly the log bytes `[offset, offset + len)` of a task.
    pub fn log_bytes(&self, task_id: &str, offset: i64, len: i64) -> Result<Vec<u8>, StoreError> {
        Ok(logstore::read_bytes(&self.conn(), task_id, offset, len)?)
    }

    /// Total log bytes of a task.
    pub fn log_len(&self, task_id: &str) -> Result<i64, StoreError> {
        Ok(logstore::len(&self.conn(), task_id)?)
    }

    /// Compressed bytes the logs of this event take.
    pub fn log_bytes_stored(&self) -> Result<i64, StoreError> {
        Ok(logstore::stored_bytes(&self.conn(), None)?)
    }

    /// Compressed bytes one task's log takes.
    pub fn task_log_bytes_stored(&self, task_id: &str) -> Result<i64, StoreError> {
        Ok(logstore::stored_bytes(&self.conn(), Some(task_id))?)
    }

    /// The appending side of a task's log, where the database says it ends.
    pub fn resume_log(&self, task_id: &str) -> Result<TaskLog, StoreError> {
        Ok(TaskLog::resume(&self.conn(), task_id)?)
    }

    /// Persist what changed in these task logs, in one transaction. When it
    /// does not commit (a full disk), every log is put back as it was, so
    /// the next call writes the same records again and nothing is lost.
    pub fn write_logs<'a>(
        &self,
        logs: impl IntoIterator<Item = &'a mut TaskLog>,
    ) -> Result<(), StoreError> {
        let mut logs: Vec<&mut TaskLog> = logs.into_iter().collect();
        let before: Vec<TaskLog> = logs.iter().map(|l| (**l).clone()).collect();
        let mut conn = self.conn();
        let written = (|| {
            let tx = conn.transaction()?;
            for log in logs.iter_mut() {
                log.persist(&tx)?;
            }
            tx.commit()?;
            Ok::<(), StoreError>(())
        })();
        if written.is_err() {
            for (log, was) in logs.into_iter().zip(before) {
                *log = was;
            }
        }
        written
    }

    /// Make what was committed survive power loss: a WAL of at least
    /// [`CHECKPOINT_WAL_BYTES`] is copied into the database file, synced
    /// and truncated (so a finished big log takes its compressed size); a
    /// smaller one is only synced.
    ///
    /// The copy (and its fsyncs) runs without the connection's lock, on a
    /// connection of its own: a passive checkpoint, which takes no lock
    /// that writers need, so log writers, API readers and the scheduler's
    /// writes of this event go on meanwhile. Only then, if the connection
    /// is free at once, is the WAL truncated through it (what is left to
    /// copy is at most what was written meanwhile). Truncating from the
    /// other connection would hold sqlite's write lock, which makes a
    /// transaction of this one that reads then writes fail at once with
    /// SQLITE_BUSY. Returns whether the WAL is small now; if not, call
    /// again a little later.
    pub fn sync(&self) -> Result<bool, StoreError> {
        let wal = self.dir.join(format!("{}-wal", super::EVENT_DB));
        let len = std::fs::metadata(&wal).map_or(0, |m| m.len());
        let sync_wal = || {
            std::fs::File::open(&wal)
                .and_then(|f| f.sync_data())
                .map_err(super::io("syncing", &wal))
        };
        if len >= CHECKPOINT_WAL_BYTES {
            let copied_all = {
                let own = Connection::open(self.dir.join(super::EVENT_DB))?;
                checkpoint(&own, "PASSIVE")?
            };
            if !copied_all {
                // A reader keeps frames in the WAL (or another checkpoint
                // runs): the copy may not have synced the WAL, so sync it.
                sync_wal()?;
            }
            #[cfg(test)]
            if let Some(hook) = &*self
                .mid_checkpoint
                .lock()
                .unwrap_or_else(|e| e.into_inner())
            {
                hook();
            }
            if !copied_all {
                return Ok(false);
            }
            let Ok(conn) = self.conn.try_lock() else {
                return Ok(false);
            };
            conn.busy_timeout(std::time::Duration::ZERO)?;
            let truncated = checkpoint(&conn, "TRUNCATE");
            conn.busy_timeout(BUSY_TIMEOUT)?;
            truncated
        } else {
            if len > 0 {
                sync_wal()?;
            }
            Ok(true)
        }
    }

    /// Artifacts of a task.
    pub fn artifacts(&self, task_id: &str) -> Result<Vec<ArtifactRow>, StoreError> {
        self.conn().rows(
            "SELECT name, size, sha256, created FROM artifacts WHERE task_id = ?1 ORDER BY id",
            [task_id],
            |r| {
                Ok(ArtifactRow {
                    name: r.get(0)?,
                    size: r.get(1)?,
                    sha256: r.get(2)?,
                    created: r.get(3)?,
                })
            },
        )
    }

    /// Record an uploaded artifact (replacing one of the same name).
    pub fn add_artifact(
        &self,
        task_id: &str,
        name: &str,
        size: u64,
        sha256: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM artifacts WHERE task_id = ?1 AND name = ?2",
            params![task_id, name],
        )?;
        tx.execute(
            "INSERT INTO artifacts(task_id, name, size, sha256, created) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![task_id, name, size as i64, sha256, now_ms()],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Remove a task's logs and artifacts (rebuild).
    pub fn clear_task_output(&self, task_id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        logstore::clear(&tx, task_id)?;
        tx.execute("DELETE FROM artifacts WHERE task_id = ?1", [task_id])?;
        super::test_results::clear(&tx, task_id)?;
        tx.commit()?;
        drop(conn);
        let dir = self.artifact_dir(task_id);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(super::io("removing", &dir))?;
        }
        Ok(())
    }
}

/// Run `PRAGMA wal_checkpoint(mode)`; whether it could run and every frame
/// of the WAL is in the database file now.
fn checkpoint(conn: &Connection, mode: &str) -> Result<bool, StoreError> {
    let (busy, log, copied): (i64, i64, i64) =
        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    Ok(busy == 0 && log == copied)
}

impl Drop for EventDb {
    fn drop(&mut self) {
        if self.doomed.load(Ordering::SeqCst) {
            // Close the database before unlinking its folder.
            if let Ok(mem) = Connection::open_in_memory() {
                let conn = self.conn.get_mut().unwrap_or_else(|e| e.into_inner());
                drop(std::mem::replace(conn, mem));
            }
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                tracing::warn!(event = %self.id, cause = %e, "removing deleted event folder");
            } else {
                tracing::info!(event = %self.id, "event folder removed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::mpsc::{channel, sync_channel};
    use std::time::Duration;

    use sai_core::task::EventId;

    use sai_testkit::fixtures::incompressible;

    use super::super::{Store, fixtures};
    use super::*;

    fn wal_len(dir: &std::path::Path, id: &EventId) -> u64 {
        let wal = dir
            .join("events")
            .join(id.as_str())
            .join(format!("{}-wal", super::super::EVENT_DB));
        std::fs::metadata(wal).map_or(0, |m| m.len())
    }

    /// The checkpoint of a big WAL runs on its own connection: while it is
    /// held between its copy and its truncation, a log write and an API
    /// read of the same event complete; and it completes while another
    /// thread holds the event's connection. Afterwards the WAL is cut
    /// back and holds nothing that was lost.
    #[test]
    fn a_checkpoint_blocks_neither_log_writers_nor_readers() {
        let (dir, store, created) = fixtures::store_with_one_task();
        let id = fixtures::event_id();
        let db = created.db.clone();
        let task = created.tasks[0].id.as_str().to_string();
        let mut log = db.resume_log(&task).unwrap();
        let first = incompressible(1, 512 * 1024);
        log.push(1, 0, &first);
        db.write_logs([&mut log]).unwrap();
        assert!(wal_len(dir.path(), &id) >= CHECKPOINT_WAL_BYTES);

        // 1. The event's connection is held (a long read, say) the whole
        // time: the copy does not need it, the truncation waits for later.
        let held = db.conn();
        let (done_tx, done_rx) = channel();
        let syncing = {
            let db = db.clone();
            std::thread::spawn(move || done_tx.send(db.sync().map_err(|e| e.to_string())))
        };
        let synced = done_rx.recv_timeout(Duration::from_secs(60));
        drop(held);
        assert_eq!(
            synced,
            Ok(Ok(false)),
            "sync copied the WAL while the connection was held, left it to truncate later"
        );
        syncing.join().unwrap().unwrap();
        assert!(wal_len(dir.path(), &id) >= CHECKPOINT_WAL_BYTES);
        assert!(db.sync().unwrap(), "truncated once the connection is free");
        assert_eq!(wal_len(dir.path(), &id), 0, "copied and truncated");

        // 2. Held between the copy and the truncation, a write and a read
        // of this event go through.
        let second = incompressible(2, 512 * 1024);
        log.push(1, 1, &second);
        db.write_logs([&mut log]).unwrap();
        let (at_tx, at_rx) = sync_channel::<()>(0);
        let (go_tx, go_rx) = sync_channel::<()>(0);
        let go_rx = Mutex::new(go_rx);
        *db.mid_checkpoint.lock().unwrap() = Some(Box::new(move || {
            at_tx.send(()).unwrap();
            go_rx.lock().unwrap().recv().unwrap();
        }));
        let syncing = {
            let db = db.clone();
            std::thread::spawn(move || db.sync().map_err(|e| e.to_string()))
        };
        at_rx.recv().unwrap();
        let third = b"written while the checkpoint is held\n";
        log.push(1, 2, third);
        db.write_logs([&mut log]).unwrap();
        let len = (first.len() + second.len() + third.len()) as i64;
        assert_eq!(db.log_len(&task).unwrap(), len, "read meanwhile");
        assert_eq!(
            db.log_bytes(&task, len - third.len() as i64, third.len() as i64)
                .unwrap(),
            third
        );
        go_tx.send(()).unwrap();
        assert_eq!(syncing.join().unwrap(), Ok(true));
        assert_eq!(wal_len(dir.path(), &id), 0, "truncated when released");

        // Nothing lost: a fresh connection (as after a restart) reads all.
        drop((created, db));
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        let db = store.event_db(id.as_str()).unwrap().unwrap();
        let all = db.log_bytes(&task, 0, len).unwrap();
        assert_eq!(all.len() as i64, len);
        assert!(all.starts_with(&first) && all.ends_with(third));
    }
}
