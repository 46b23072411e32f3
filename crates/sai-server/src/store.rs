//! sqlite storage: one main database and one database per event.
//!
//! Layout under the data dir:
//!
//! ```text
//! sai-server.sqlite3              projects, events, builders, users, metrics
//! events/<EVENTID>/event.sqlite3  tasks, logs, artifacts of one event
//! events/<EVENTID>/artifacts/<TASKID>/<name>
//! ```
//!
//! A push is committed in two steps: the event folder is written completely
//! under `events/<EVENTID>.tmp`, synced and renamed into place, then the
//! event row is inserted in the main database. That insert is the commit
//! point: at startup every folder without an event row is removed.
//!
//! Event databases are shared through [`EventDb`] handles; deleting an event
//! only marks its handle, and the folder is unlinked when the last handle is
//! dropped, so no database in use is ever removed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{Context, Result};
use rusqlite::{Connection, OptionalExtension, params};
use sai_core::saifile::TaskSpec;

use crate::handle_cache::HandleCache;
use crate::logstore::{self, TaskLog};

/// Name of the main database file.
pub const MAIN_DB: &str = "sai-server.sqlite3";
/// Name of the database inside an event folder.
pub const EVENT_DB: &str = "event.sqlite3";

const MAIN_MIGRATIONS: &[&str] = &[
    // 1
    "CREATE TABLE projects(
        name TEXT PRIMARY KEY,
        fetch_url TEXT NOT NULL,
        created INTEGER NOT NULL);
     CREATE TABLE events(
        id TEXT PRIMARY KEY,
        project TEXT NOT NULL,
        ref TEXT NOT NULL,
        hash TEXT NOT NULL,
        fetch_url TEXT NOT NULL,
        source_ip TEXT,
        created INTEGER NOT NULL,
        last_updated INTEGER NOT NULL,
        state TEXT NOT NULL,
        sec INTEGER NOT NULL DEFAULT 0,
        task_count INTEGER NOT NULL);
     CREATE UNIQUE INDEX events_project_hash ON events(project, hash);
     CREATE INDEX events_project_ref ON events(project, ref);
     CREATE TABLE builders(
        name TEXT PRIMARY KEY,
        platforms TEXT NOT NULL,
        software TEXT NOT NULL,
        peer TEXT,
        first_seen INTEGER NOT NULL,
        last_seen INTEGER NOT NULL);
     CREATE TABLE users(
        name TEXT PRIMARY KEY,
        first_seen INTEGER NOT NULL,
        last_seen INTEGER NOT NULL);
     CREATE TABLE metrics(
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id TEXT NOT NULL,
        project TEXT NOT NULL,
        builder TEXT NOT NULL,
        step INTEGER NOT NULL,
        exit_code INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        created INTEGER NOT NULL);",
];

const EVENT_MIGRATIONS: &[&str] = &[
    // 1
    "CREATE TABLE tasks(
        id TEXT PRIMARY KEY,
        idx INTEGER NOT NULL,
        configuration TEXT NOT NULL,
        platform TEXT NOT NULL,
        steps TEXT NOT NULL,
        artifacts TEXT NOT NULL,
        packages TEXT NOT NULL,
        priority INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL,
        builder TEXT,
        exit_code INTEGER,
        failed_step INTEGER,
        reason TEXT,
        attempt INTEGER NOT NULL DEFAULT 0,
        infra_failures INTEGER NOT NULL DEFAULT 0,
        build_step INTEGER NOT NULL DEFAULT 0,
        created INTEGER NOT NULL,
        started INTEGER,
        ended INTEGER,
        last_updated INTEGER NOT NULL);
     CREATE TABLE logs(
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id TEXT NOT NULL,
        offset INTEGER NOT NULL,
        channel INTEGER NOT NULL,
        timestamp_us INTEGER NOT NULL,
        data BLOB NOT NULL);
     CREATE INDEX logs_task_offset ON logs(task_id, offset);
     CREATE TABLE artifacts(
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id TEXT NOT NULL,
        name TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        created INTEGER NOT NULL);",
    // 2: logs compressed in blocks; rows of `logs` are moved by
    // `logstore::migrate_legacy` when the database is opened.
    crate::logstore::SCHEMA,
];

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn migrate(conn: &mut Connection, migrations: &[&str], what: &str) -> Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = migrations.len() as i64;
    if version > known {
        anyhow::bail!(
            "{what} has schema version {version}, newer than this sai-server knows ({known}); run a newer sai-server"
        );
    }
    let tx = conn.transaction()?;
    for (i, sql) in migrations.iter().enumerate().skip(version as usize) {
        tx.execute_batch(sql)
            .with_context(|| format!("{what}: migration {}", i + 1))?;
    }
    tx.pragma_update(None, "user_version", known)?;
    tx.commit()?;
    Ok(())
}

fn open_db(path: &Path, migrations: &[&str]) -> Result<Connection> {
    let mut conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    migrate(&mut conn, migrations, &path.display().to_string())?;
    Ok(conn)
}

/// An open per-event database. Shared via `Arc`; when marked doomed its
/// folder is removed once the last handle is dropped.
pub struct EventDb {
    /// Event id.
    pub id: String,
    dir: PathBuf,
    conn: Mutex<Connection>,
    doomed: AtomicBool,
}

impl EventDb {
    /// Lock the connection.
    pub fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Folder of this event.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Folder of one task's artifacts.
    pub fn artifact_dir(&self, task_id: &str) -> PathBuf {
        self.dir.join("artifacts").join(task_id)
    }
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

/// A new event to insert.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// 32-hex id.
    pub id: String,
    /// Project name.
    pub project: String,
    /// Pushed ref.
    pub git_ref: String,
    /// Commit.
    pub hash: String,
    /// Clone URL.
    pub fetch_url: String,
    /// Peer or X-Forwarded-For.
    pub source_ip: Option<String>,
    /// Private event.
    pub sec: bool,
}

/// Event row of the main database.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EventRow {
    /// 32-hex id.
    pub id: String,
    /// Project name.
    pub project: String,
    /// Pushed ref.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// Commit hash.
    pub hash: String,
    /// Clone URL.
    pub fetch_url: String,
    /// Peer address.
    pub source_ip: Option<String>,
    /// Creation time (unix ms).
    pub created: i64,
    /// Last change (unix ms).
    pub last_updated: i64,
    /// Event state name.
    pub state: String,
    /// Private event.
    pub sec: bool,
    /// Number of tasks.
    pub task_count: i64,
    #[serde(skip)]
    /// Insertion order.
    pub seq: i64,
}

/// Task row of an event database.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TaskRow {
    /// 64-hex id.
    pub id: String,
    /// Event id.
    pub event_id: String,
    /// Saifile order.
    pub idx: i64,
    /// Configuration name.
    pub configuration: String,
    /// Platform requested.
    pub platform: String,
    /// Shell steps.
    pub steps: Vec<String>,
    /// Artifact globs.
    pub artifacts: Vec<String>,
    /// Packages.
    pub packages: Vec<String>,
    /// Failed on this platform in the previous event of the same ref.
    pub priority: bool,
    /// State name.
    pub state: String,
    /// Builder name (last one that ran it).
    pub builder: Option<String>,
    /// Exit code of the failing step.
    pub exit_code: Option<i64>,
    /// 0-based failing step.
    pub failed_step: Option<i64>,
    /// Why it failed or was cancelled.
    pub reason: Option<String>,
    /// Number of offers accepted so far.
    pub attempt: i64,
    /// Infrastructure failures so far.
    pub infra_failures: i64,
    /// Steps started so far.
    pub build_step: i64,
    /// Creation time (unix ms).
    pub created: i64,
    /// Start of the current attempt (unix ms).
    pub started: Option<i64>,
    /// End (unix ms).
    pub ended: Option<i64>,
    /// Last change (unix ms).
    pub last_updated: i64,
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

/// A builder row of the main database.
#[derive(Debug, Clone)]
pub struct BuilderRow {
    /// Name.
    pub name: String,
    /// Offered platforms (JSON).
    pub platforms: String,
    /// Software.
    pub software: String,
    /// Last peer address.
    pub peer: Option<String>,
    /// Last connection (unix ms).
    pub last_seen: i64,
}

/// Task columns an update writes.
#[derive(Debug, Clone, Default)]
pub struct TaskUpdate {
    /// New state.
    pub state: String,
    /// Builder.
    pub builder: Option<String>,
    /// Exit code.
    pub exit_code: Option<i64>,
    /// Failing step.
    pub failed_step: Option<i64>,
    /// Reason.
    pub reason: Option<String>,
    /// Attempts.
    pub attempt: i64,
    /// Infrastructure failures.
    pub infra_failures: i64,
    /// Steps started.
    pub build_step: i64,
    /// Start time.
    pub started: Option<i64>,
    /// End time.
    pub ended: Option<i64>,
}

/// The storage of one server.
pub struct Store {
    dir: PathBuf,
    main: Mutex<Connection>,
    events: HandleCache<EventDb>,
}

const TASK_COLS: &str = "id, idx, configuration, platform, steps, artifacts, packages, priority, state, builder, exit_code, failed_step, reason, attempt, infra_failures, build_step, created, started, ended, last_updated";

fn task_from_row(event_id: &str, r: &rusqlite::Row<'_>) -> rusqlite::Result<TaskRow> {
    let list = |i: usize| -> rusqlite::Result<Vec<String>> {
        let s: String = r.get(i)?;
        Ok(serde_json::from_str(&s).unwrap_or_default())
    };
    Ok(TaskRow {
        id: r.get(0)?,
        event_id: event_id.to_string(),
        idx: r.get(1)?,
        configuration: r.get(2)?,
        platform: r.get(3)?,
        steps: list(4)?,
        artifacts: list(5)?,
        packages: list(6)?,
        priority: r.get::<_, i64>(7)? != 0,
        state: r.get(8)?,
        builder: r.get(9)?,
        exit_code: r.get(10)?,
        failed_step: r.get(11)?,
        reason: r.get(12)?,
        attempt: r.get(13)?,
        infra_failures: r.get(14)?,
        build_step: r.get(15)?,
        created: r.get(16)?,
        started: r.get(17)?,
        ended: r.get(18)?,
        last_updated: r.get(19)?,
    })
}

const EVENT_COLS: &str = "id, project, ref, hash, fetch_url, source_ip, created, last_updated, state, sec, task_count, rowid";

fn event_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventRow> {
    Ok(EventRow {
        id: r.get(0)?,
        project: r.get(1)?,
        git_ref: r.get(2)?,
        hash: r.get(3)?,
        fetch_url: r.get(4)?,
        source_ip: r.get(5)?,
        created: r.get(6)?,
        last_updated: r.get(7)?,
        state: r.get(8)?,
        sec: r.get::<_, i64>(9)? != 0,
        task_count: r.get(10)?,
        seq: r.get(11)?,
    })
}

impl Store {
    /// Open (creating and migrating) the store in `dir`, and remove event
    /// folders that have no event row (interrupted pushes, deleted events).
    pub fn open(dir: &Path) -> Result<Store> {
        Store::open_with_cache(dir, 16)
    }

    /// Open, keeping up to `event_db_cache` idle event databases open.
    pub fn open_with_cache(dir: &Path, event_db_cache: usize) -> Result<Store> {
        std::fs::create_dir_all(dir.join("events"))
            .with_context(|| format!("creating {}", dir.join("events").display()))?;
        let main = open_db(&dir.join(MAIN_DB), MAIN_MIGRATIONS)?;
        let store = Store {
            dir: dir.to_path_buf(),
            main: Mutex::new(main),
            events: HandleCache::new(event_db_cache),
        };
        store.remove_orphans()?;
        Ok(store)
    }

    /// The data dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Lock the main database.
    pub fn main(&self) -> MutexGuard<'_, Connection> {
        self.main.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn events_dir(&self) -> PathBuf {
        self.dir.join("events")
    }

    fn remove_orphans(&self) -> Result<()> {
        let known: std::collections::HashSet<String> = {
            let db = self.main();
            let mut st = db.prepare("SELECT id FROM events")?;
            st.query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<_>>()?
        };
        for entry in std::fs::read_dir(self.events_dir())? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().to_string();
            if !known.contains(&name) {
                tracing::warn!(folder = %name, "removing event folder without event row");
                let p = entry.path();
                if p.is_dir() {
                    std::fs::remove_dir_all(&p)?;
                } else {
                    std::fs::remove_file(&p)?;
                }
            }
        }
        Ok(())
    }

    /// The event with this project and hash, if any.
    pub fn event_by_hash(&self, project: &str, hash: &str) -> Result<Option<String>> {
        Ok(self
            .main()
            .query_row(
                "SELECT id FROM events WHERE project = ?1 AND hash = ?2",
                params![project, hash],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// `(configuration, platform)` pairs that failed in the newest earlier
    /// event of the same project and ref.
    pub fn previous_failures(
        &self,
        project: &str,
        git_ref: &str,
    ) -> Result<std::collections::HashSet<(String, String)>> {
        let prev: Option<String> = self
            .main()
            .query_row(
                "SELECT id FROM events WHERE project = ?1 AND ref = ?2 ORDER BY rowid DESC LIMIT 1",
                params![project, git_ref],
                |r| r.get(0),
            )
            .optional()?;
        let mut out = std::collections::HashSet::new();
        if let Some(prev) = prev
            && let Some(db) = self.event_db(&prev)?
        {
            let conn = db.conn();
            let mut st =
                conn.prepare("SELECT configuration, platform FROM tasks WHERE state = 'failed'")?;
            for row in st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))? {
                out.insert(row?);
            }
        }
        Ok(out)
    }

    /// Insert an event and all its tasks; see the module doc for the commit
    /// protocol. Returns `Ok(false)` when an event with the same project and
    /// hash already exists (nothing written).
    pub fn create_event(
        &self,
        ev: &NewEvent,
        tasks: &[(String, TaskSpec, bool)],
        fault_abort: bool,
    ) -> Result<bool> {
        let final_dir = self.events_dir().join(&ev.id);
        let tmp_dir = self.events_dir().join(format!("{}.tmp", ev.id));
        let now = now_ms();
        std::fs::create_dir_all(&tmp_dir)?;
        let write = || -> Result<()> {
            let db_path = tmp_dir.join(EVENT_DB);
            let mut conn = open_db(&db_path, EVENT_MIGRATIONS)?;
            let tx = conn.transaction()?;
            {
                let mut st = tx.prepare(
                    "INSERT INTO tasks(id, idx, configuration, platform, steps, artifacts, packages, priority, state, created, last_updated)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'waiting', ?9, ?9)",
                )?;
                for (i, (id, t, prio)) in tasks.iter().enumerate() {
                    st.execute(params![
                        id,
                        i as i64,
                        t.configuration,
                        t.platform,
                        serde_json::to_string(&t.steps)?,
                        serde_json::to_string(&t.artifacts)?,
                        serde_json::to_string(&t.packages)?,
                        *prio as i64,
                        now
                    ])?;
                }
            }
            tx.commit()?;
            conn.pragma_update(None, "wal_checkpoint", "TRUNCATE")?;
            drop(conn);
            std::fs::File::open(&db_path)?.sync_all()?;
            std::fs::File::open(&tmp_dir)?.sync_all()?;
            std::fs::rename(&tmp_dir, &final_dir)?;
            std::fs::File::open(self.events_dir())?.sync_all()?;
            Ok(())
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_dir_all(&tmp_dir);
            return Err(e);
        }
        if fault_abort {
            tracing::error!("SAI_SERVER_FAULT=abort-after-event-db: aborting");
            std::process::abort();
        }
        let res = (|| -> Result<bool> {
            let mut db = self.main();
            let tx = db.transaction()?;
            tx.execute(
                "INSERT INTO projects(name, fetch_url, created) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET fetch_url = excluded.fetch_url",
                params![ev.project, ev.fetch_url, now],
            )?;
            let n = tx.execute(
                "INSERT INTO events(id, project, ref, hash, fetch_url, source_ip, created, last_updated, state, sec, task_count)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9, ?10)
                 ON CONFLICT(project, hash) DO NOTHING",
                params![
                    ev.id,
                    ev.project,
                    ev.git_ref,
                    ev.hash,
                    ev.fetch_url,
                    ev.source_ip,
                    now,
                    if tasks.is_empty() { "success" } else { "waiting" },
                    ev.sec as i64,
                    tasks.len() as i64
                ],
            )?;
            tx.commit()?;
            Ok(n == 1)
        })();
        match res {
            Ok(true) => Ok(true),
            Ok(false) => {
                let _ = std::fs::remove_dir_all(&final_dir);
                Ok(false)
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&final_dir);
                Err(e)
            }
        }
    }

    /// A shared handle on an event database; `None` if the event is unknown.
    pub fn event_db(&self, id: &str) -> Result<Option<Arc<EventDb>>> {
        if !sai_core::protocol::is_event_id(id) {
            return Ok(None);
        }
        if let Some(db) = self.events.get(id) {
            return Ok(Some(db));
        }
        let exists: bool = self
            .main()
            .query_row("SELECT 1 FROM events WHERE id = ?1", [id], |_| Ok(()))
            .optional()?
            .is_some();
        if !exists {
            return Ok(None);
        }
        let dir = self.events_dir().join(id);
        self.events
            .get_or_open(id, || {
                let mut conn = open_db(&dir.join(EVENT_DB), EVENT_MIGRATIONS)?;
                // Many of these are open at once: a small page cache each, and
                // a WAL cut back after checkpoints so an idle event's folder
                // is about its compressed size.
                conn.pragma_update(None, "cache_size", -1024)?;
                conn.pragma_update(None, "journal_size_limit", 1 << 20)?;
                let n = crate::logstore::migrate_legacy(&mut conn)?;
                if n > 0 {
                    tracing::info!(event = %id, tasks = n, "logs compressed into blocks");
                }
                Ok(EventDb {
                    id: id.to_string(),
                    dir: dir.clone(),
                    conn: Mutex::new(conn),
                    doomed: AtomicBool::new(false),
                })
            })
            .map(Some)
    }

    /// Close cached event databases nobody else holds.
    pub fn close_idle(&self) {
        self.events.close_idle();
    }

    /// Event databases open now (kept idle or in use).
    pub fn open_event_dbs(&self) -> usize {
        self.events.open()
    }

    /// Delete an event: its row now, its folder when no handle is left.
    pub fn delete_event(&self, id: &str) -> Result<bool> {
        let handle = self.event_db(id)?;
        let n = self
            .main()
            .execute("DELETE FROM events WHERE id = ?1", [id])?;
        drop(handle);
        if let Some(db) = self.events.remove(id) {
            db.doomed.store(true, Ordering::SeqCst);
        }
        Ok(n == 1)
    }

    /// One event row.
    pub fn event(&self, id: &str) -> Result<Option<EventRow>> {
        Ok(self
            .main()
            .query_row(
                &format!("SELECT {EVENT_COLS} FROM events WHERE id = ?1"),
                [id],
                event_from_row,
            )
            .optional()?)
    }

    /// Events of a project, newest first.
    pub fn events_of(&self, project: &str, limit: i64) -> Result<Vec<EventRow>> {
        let db = self.main();
        let mut st = db.prepare(&format!(
            "SELECT {EVENT_COLS} FROM events WHERE project = ?1 ORDER BY rowid DESC LIMIT ?2"
        ))?;
        let rows = st
            .query_map(params![project, limit], event_from_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Events not in a terminal state, oldest first.
    pub fn active_events(&self) -> Result<Vec<EventRow>> {
        let db = self.main();
        let mut st = db.prepare(&format!(
            "SELECT {EVENT_COLS} FROM events WHERE state IN ('waiting', 'running', 'running-with-failures') ORDER BY rowid"
        ))?;
        let rows = st
            .query_map([], event_from_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Every event row, oldest first (for retention).
    pub fn all_events(&self) -> Result<Vec<EventRow>> {
        let db = self.main();
        let mut st = db.prepare(&format!("SELECT {EVENT_COLS} FROM events ORDER BY rowid"))?;
        let rows = st
            .query_map([], event_from_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Set an event's state.
    pub fn set_event_state(&self, id: &str, state: &str) -> Result<()> {
        self.main().execute(
            "UPDATE events SET state = ?2, last_updated = ?3 WHERE id = ?1",
            params![id, state, now_ms()],
        )?;
        Ok(())
    }

    /// Projects with their event counts.
    pub fn projects(&self) -> Result<Vec<(String, String, i64, i64)>> {
        let db = self.main();
        let mut st = db.prepare(
            "SELECT p.name, p.fetch_url, p.created, (SELECT COUNT(*) FROM events e WHERE e.project = p.name)
             FROM projects p ORDER BY p.name",
        )?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Does this project exist?
    pub fn project_exists(&self, name: &str) -> Result<bool> {
        Ok(self
            .main()
            .query_row("SELECT 1 FROM projects WHERE name = ?1", [name], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Record a builder connection.
    pub fn upsert_builder(
        &self,
        name: &str,
        platforms: &str,
        software: &str,
        peer: Option<&str>,
    ) -> Result<()> {
        let now = now_ms();
        self.main().execute(
            "INSERT INTO builders(name, platforms, software, peer, first_seen, last_seen) VALUES (?1, ?2, ?3, ?4, ?5, ?5)
             ON CONFLICT(name) DO UPDATE SET platforms = excluded.platforms, software = excluded.software,
               peer = excluded.peer, last_seen = excluded.last_seen",
            params![name, platforms, software, peer, now],
        )?;
        Ok(())
    }

    /// Every builder ever seen.
    pub fn builders(&self) -> Result<Vec<BuilderRow>> {
        let db = self.main();
        let mut st = db.prepare(
            "SELECT name, platforms, software, peer, last_seen FROM builders ORDER BY name",
        )?;
        let rows = st
            .query_map([], |r| {
                Ok(BuilderRow {
                    name: r.get(0)?,
                    platforms: r.get(1)?,
                    software: r.get(2)?,
                    peer: r.get(3)?,
                    last_seen: r.get(4)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Record that a user token was used.
    pub fn touch_user(&self, name: &str) -> Result<()> {
        let now = now_ms();
        self.main().execute(
            "INSERT INTO users(name, first_seen, last_seen) VALUES (?1, ?2, ?2)
             ON CONFLICT(name) DO UPDATE SET last_seen = excluded.last_seen",
            params![name, now],
        )?;
        Ok(())
    }

    /// Record one step's metrics.
    pub fn add_metric(
        &self,
        task_id: &str,
        project: &str,
        builder: &str,
        step: u32,
        exit_code: i32,
        duration_ms: u64,
    ) -> Result<()> {
        self.main().execute(
            "INSERT INTO metrics(task_id, project, builder, step, exit_code, duration_ms, created)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                task_id,
                project,
                builder,
                step,
                exit_code,
                duration_ms as i64,
                now_ms()
            ],
        )?;
        Ok(())
    }
}

/// Reads and writes inside one event database.
impl EventDb {
    /// All tasks in saifile order.
    pub fn tasks(&self) -> Result<Vec<TaskRow>> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!("SELECT {TASK_COLS} FROM tasks ORDER BY idx"))?;
        let rows = st
            .query_map([], |r| task_from_row(&self.id, r))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// One task.
    pub fn task(&self, id: &str) -> Result<Option<TaskRow>> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {TASK_COLS} FROM tasks WHERE id = ?1"),
                [id],
                |r| task_from_row(&self.id, r),
            )
            .optional()?)
    }

    /// Write a task's mutable columns.
    pub fn update_task(&self, id: &str, u: &TaskUpdate) -> Result<()> {
        self.conn().execute(
            "UPDATE tasks SET state = ?2, builder = ?3, exit_code = ?4, failed_step = ?5, reason = ?6,
               attempt = ?7, infra_failures = ?8, build_step = ?9, started = ?10, ended = ?11, last_updated = ?12
             WHERE id = ?1",
            params![
                id,
                u.state,
                u.builder,
                u.exit_code,
                u.failed_step,
                u.reason,
                u.attempt,
                u.infra_failures,
                u.build_step,
                u.started,
                u.ended,
                now_ms()
            ],
        )?;
        Ok(())
    }

    /// Set the step counter of a task.
    pub fn set_build_step(&self, id: &str, step: i64) -> Result<()> {
        self.conn().execute(
            "UPDATE tasks SET build_step = ?2, last_updated = ?3 WHERE id = ?1",
            params![id, step, now_ms()],
        )?;
        Ok(())
    }

    /// Log records of a task from byte `offset`, at most about `max` bytes.
    pub fn logs(&self, task_id: &str, offset: i64, max: i64) -> Result<Vec<LogRecord>> {
        Ok(logstore::read(&self.conn(), task_id, offset, max)?)
    }

    /// Exactly the log bytes `[offset, offset + len)` of a task.
    pub fn log_bytes(&self, task_id: &str, offset: i64, len: i64) -> Result<Vec<u8>> {
        Ok(logstore::read_bytes(&self.conn(), task_id, offset, len)?)
    }

    /// Total log bytes of a task.
    pub fn log_len(&self, task_id: &str) -> Result<i64> {
        Ok(logstore::len(&self.conn(), task_id)?)
    }

    /// Compressed bytes the logs of this event take.
    pub fn log_bytes_stored(&self) -> Result<i64> {
        Ok(logstore::stored_bytes(&self.conn(), None)?)
    }

    /// Compressed bytes one task's log takes.
    pub fn task_log_bytes_stored(&self, task_id: &str) -> Result<i64> {
        Ok(logstore::stored_bytes(&self.conn(), Some(task_id))?)
    }

    /// The appending side of a task's log, where the database says it ends.
    pub fn resume_log(&self, task_id: &str) -> Result<TaskLog> {
        Ok(TaskLog::resume(&self.conn(), task_id)?)
    }

    /// Persist what changed in these task logs, in one transaction.
    pub fn write_logs<'a>(&self, logs: impl IntoIterator<Item = &'a mut TaskLog>) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for log in logs {
            log.persist(&tx)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Artifacts of a task.
    pub fn artifacts(&self, task_id: &str) -> Result<Vec<ArtifactRow>> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT name, size, sha256, created FROM artifacts WHERE task_id = ?1 ORDER BY id",
        )?;
        let rows = st
            .query_map([task_id], |r| {
                Ok(ArtifactRow {
                    name: r.get(0)?,
                    size: r.get(1)?,
                    sha256: r.get(2)?,
                    created: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Record an uploaded artifact (replacing one of the same name).
    pub fn add_artifact(&self, task_id: &str, name: &str, size: u64, sha256: &str) -> Result<()> {
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
    pub fn clear_task_output(&self, task_id: &str) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        logstore::clear(&tx, task_id)?;
        tx.execute("DELETE FROM artifacts WHERE task_id = ?1", [task_id])?;
        tx.commit()?;
        drop(conn);
        let dir = self.artifact_dir(task_id);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        Ok(())
    }
}

/// Make an artifact name safe as a single file name: keep the last path
/// component, replace anything but `A-Za-z0-9._+-` with `_`, refuse empty,
/// `.` and `..`, cap at 128 bytes.
pub fn sanitise_artifact_name(name: &str) -> Option<String> {
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let clean: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(128)
        .collect();
    if clean.is_empty() || clean.chars().all(|c| c == '.') {
        None
    } else {
        Some(clean)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitise() {
        assert_eq!(
            sanitise_artifact_name("../../etc/passwd").unwrap(),
            "passwd"
        );
        assert_eq!(sanitise_artifact_name("a b$.rpm").unwrap(), "a_b_.rpm");
        assert!(sanitise_artifact_name("..").is_none());
        assert!(sanitise_artifact_name("x/").is_none());
    }

    fn spec(c: &str) -> TaskSpec {
        TaskSpec {
            configuration: c.into(),
            platform: "linux".into(),
            steps: vec!["true".into()],
            artifacts: vec![],
            packages: vec![],
        }
    }

    #[test]
    fn create_dedupe_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = "0123456789ABCDEF0123456789ABCDEF".to_string();
        let ev = NewEvent {
            id: id.clone(),
            project: "p".into(),
            git_ref: "refs/heads/main".into(),
            hash: "abc".into(),
            fetch_url: "https://x".into(),
            source_ip: None,
            sec: false,
        };
        let tasks = vec![(format!("{id}{}", "A".repeat(32)), spec("a"), false)];
        assert!(store.create_event(&ev, &tasks, false).unwrap());
        let mut ev2 = ev.clone();
        ev2.id = "1123456789ABCDEF0123456789ABCDEF".into();
        assert!(!store.create_event(&ev2, &[], false).unwrap());
        assert!(!dir.path().join("events").join(&ev2.id).exists());
        let db = store.event_db(&id).unwrap().unwrap();
        assert_eq!(db.tasks().unwrap().len(), 1);
        assert!(store.delete_event(&id).unwrap());
        assert!(dir.path().join("events").join(&id).exists(), "in use");
        drop(db);
        assert!(!dir.path().join("events").join(&id).exists());
    }

    #[test]
    fn schema_version_is_recorded_and_newer_databases_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join(MAIN_DB)).unwrap();
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, MAIN_MIGRATIONS.len() as i64);
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let err = Store::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("newer"), "{err}");
    }

    #[test]
    fn orphans_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        std::fs::create_dir_all(dir.path().join("events/0123456789ABCDEF0123456789ABCDEF"))
            .unwrap();
        std::fs::create_dir_all(
            dir.path()
                .join("events/0123456789ABCDEF0123456789ABCDEF.tmp"),
        )
        .unwrap();
        drop(Store::open(dir.path()).unwrap());
        assert_eq!(
            std::fs::read_dir(dir.path().join("events"))
                .unwrap()
                .count(),
            0
        );
    }
}
