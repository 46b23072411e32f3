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
//! (a copy of an empty, migrated event database, then its tasks), then the
//! event row is inserted in the main database with the event's tasks (its
//! seed), in one synced transaction shared with concurrent pushes
//! (`push_commit`). That insert is the commit point: at startup every
//! folder without an event row is removed (the orphan sweep: a push
//! interrupted before its commit), and a seeded event whose folder did not
//! reach the disk is rebuilt from its seed.
//!
//! Event databases are shared through [`EventDb`] handles; deleting an event
//! only marks its handle, and the folder is unlinked when the last handle is
//! dropped, so no database in use is ever removed.
//!
//! Modules: [`migrations`] (schemas, `user_version`), [`main_db`] (queries
//! of the main database), [`event_db`] (one event's tasks, logs, artifacts).

pub mod durations;
pub mod event_db;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod main_db;
pub mod migrations;
mod push_commit;
pub mod test_results;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};
use sai_core::saifile::TaskSpec;
use sai_core::task::{Event, EventId, EventState, RunRecord, Task, TaskId};

pub use crate::logstore::LogRecord;
pub use event_db::{ArtifactRow, EventDb};

use crate::handle_cache::HandleCache;
pub use main_db::{BuilderRow, ProjectRow};

/// Name of the main database file.
pub const MAIN_DB: &str = "sai-server.sqlite3";
/// Name of the database inside an event folder.
pub const EVENT_DB: &str = "event.sqlite3";

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A database could not be opened.
    #[error("opening {db}: {source}")]
    Open {
        /// The database file.
        db: String,
        /// Why.
        source: rusqlite::Error,
    },
    /// A database was written by a newer sai-server.
    #[error(
        "{db} has schema version {found}, newer than this sai-server knows ({known}); run a newer sai-server"
    )]
    NewerSchema {
        /// The database file.
        db: String,
        /// Its `user_version`.
        found: i64,
        /// Migrations this binary knows.
        known: i64,
    },
    /// A migration failed.
    #[error("{db}: migration {number}: {source}")]
    Migration {
        /// The database file.
        db: String,
        /// 1-based migration number.
        number: usize,
        /// Why.
        source: rusqlite::Error,
    },
    /// A query failed.
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    /// A file or folder operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The seed of a push could not be written, read or committed.
    #[error("push seed: {0}")]
    Seed(String),
    /// A JSON column could not be written.
    #[error("encoding a column: {0}")]
    Json(#[from] serde_json::Error),
    /// The compressed log store failed.
    #[error(transparent)]
    Log(#[from] crate::logstore::LogError),
}

impl StoreError {
    /// Did this fail because the data disk is full (`SQLITE_FULL`, `ENOSPC`)?
    pub fn is_disk_full(&self) -> bool {
        fn sql(e: &rusqlite::Error) -> bool {
            e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
        }
        match self {
            StoreError::Open { source, .. } | StoreError::Migration { source, .. } => sql(source),
            StoreError::Sql(e) => sql(e),
            StoreError::Io { source, .. } => {
                source.kind() == std::io::ErrorKind::StorageFull
                    || source.raw_os_error() == Some(28)
            }
            StoreError::Log(crate::logstore::LogError::Db(e)) => sql(e),
            _ => false,
        }
    }
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { what, path, source }
}

/// A text column parsed with `FromStr` (ids, states): unknown text is an
/// error, never a default.
fn parsed<T>(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<T>
where
    T: FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let s: String = r.get(i)?;
    s.parse().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// Every row of a query, on the main or an event database's connection.
trait Rows {
    /// Every row of `sql`, each made by `row`.
    fn rows<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError>;
}

impl Rows for Connection {
    fn rows<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        let mut st = self.prepare(sql)?;
        let rows = st
            .query_map(params, row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }
}

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A pushed event as written: what the scheduler needs, nothing read back.
pub struct CreatedEvent {
    /// The event row.
    pub event: Event,
    /// Its open database.
    pub db: Arc<EventDb>,
    /// Its tasks, in saifile order.
    pub tasks: Vec<Task>,
}

/// The storage of one server.
pub struct Store {
    dir: PathBuf,
    main: Mutex<Connection>,
    events: HandleCache<EventDb>,
    pushes: push_commit::PushQueue,
    /// Seeds were committed since the last [`Store::settle_seeds`].
    unsettled: std::sync::atomic::AtomicBool,
}

impl Store {
    /// Open (creating and migrating) the store in `dir`, and remove event
    /// folders that have no event row (interrupted pushes, deleted events).
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_with_cache(dir, 16)
    }

    /// Open, keeping up to `event_db_cache` idle event databases open.
    pub fn open_with_cache(dir: &Path, event_db_cache: usize) -> Result<Store, StoreError> {
        let events = dir.join("events");
        std::fs::create_dir_all(&events).map_err(io("creating", &events))?;
        let main = migrations::open(&dir.join(MAIN_DB), migrations::MAIN)?;
        let store = Store {
            dir: dir.to_path_buf(),
            main: Mutex::new(main),
            events: HandleCache::new(event_db_cache),
            pushes: push_commit::PushQueue::default(),
            unsettled: std::sync::atomic::AtomicBool::new(false),
        };
        store.remove_orphans()?;
        store.settle_seeds(true)?;
        Ok(store)
    }

    /// Lock the main database.
    pub(crate) fn main(&self) -> MutexGuard<'_, Connection> {
        self.main.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn events_dir(&self) -> PathBuf {
        self.dir.join("events")
    }

    fn remove_orphans(&self) -> Result<(), StoreError> {
        let known: HashSet<String> = {
            let db = self.main();
            let mut st = db.prepare("SELECT id FROM events")?;
            st.query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<_>>()?
        };
        let dir = self.events_dir();
        for entry in std::fs::read_dir(&dir).map_err(io("listing", &dir))? {
            let entry = entry.map_err(io("listing", &dir))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if !known.contains(&name) {
                tracing::warn!(folder = %name, "removing event folder without event row");
                let p = entry.path();
                if p.is_dir() {
                    std::fs::remove_dir_all(&p).map_err(io("removing", &p))?;
                } else {
                    std::fs::remove_file(&p).map_err(io("removing", &p))?;
                }
            }
        }
        Ok(())
    }

    /// Insert an event and all its tasks (`(id, spec, priority)`); see the
    /// module doc for the commit protocol. The store sets the event's
    /// `created`, `last_updated`, `state`, `task_count` and `seq`. `Ok(None)`
    /// when an event with the same project, ref and hash already exists (nothing
    /// written).
    pub fn create_event(
        &self,
        mut ev: Event,
        tasks: Vec<(TaskId, TaskSpec, bool)>,
        fault_abort: bool,
    ) -> Result<Option<CreatedEvent>, StoreError> {
        let final_dir = self.events_dir().join(ev.id.as_str());
        let now = now_ms();
        let tasks: Vec<Task> = tasks
            .into_iter()
            .enumerate()
            .map(|(i, (id, spec, priority))| Task {
                id,
                idx: i as i64,
                spec,
                priority,
                created: now,
                last_updated: now,
                run: RunRecord::new(),
            })
            .collect();
        // Written in place: until the commit below no event row names this
        // folder, so a crash before it leaves an orphan that the start-up
        // sweep removes. The connection that wrote it is kept, not reopened.
        std::fs::create_dir(&final_dir).map_err(io("creating", &final_dir))?;
        let write = || -> Result<(Connection, Vec<u8>), StoreError> {
            let conn = self.write_event_db(&final_dir, &tasks)?;
            Ok((conn, push_commit::encode_seed(&tasks)?))
        };
        let (conn, seed) = match write() {
            Ok(written) => written,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&final_dir);
                return Err(e);
            }
        };
        if fault_abort {
            tracing::error!("SAI_SERVER_FAULT=abort-after-event-db: aborting");
            std::process::abort();
        }
        ev.created = now;
        ev.last_updated = now;
        ev.task_count = tasks.len() as i64;
        ev.state = if tasks.is_empty() {
            EventState::Success
        } else {
            EventState::Waiting
        };
        match self.commit_push(&ev, seed) {
            Ok(Some(seq)) => ev.seq = seq,
            Ok(None) => {
                drop(conn);
                let _ = std::fs::remove_dir_all(&final_dir);
                return Ok(None);
            }
            Err(e) => {
                drop(conn);
                let _ = std::fs::remove_dir_all(&final_dir);
                return Err(e);
            }
        }
        let db = self.open_event_db_with(&ev.id, Some(conn))?;
        Ok(Some(CreatedEvent {
            event: ev,
            db,
            tasks,
        }))
    }

    fn open_event_db(&self, id: &EventId) -> Result<Arc<EventDb>, StoreError> {
        self.open_event_db_with(id, None)
    }

    /// [`Store::open_event_db`], with the connection `opened` on it if the
    /// caller has one (a push keeps the one that wrote the database).
    fn open_event_db_with(
        &self,
        id: &EventId,
        opened: Option<Connection>,
    ) -> Result<Arc<EventDb>, StoreError> {
        let dir = self.events_dir().join(id.as_str());
        self.events.get_or_open(id.as_str(), || {
            let mut conn = match opened {
                Some(conn) => conn,
                None => migrations::open(&dir.join(EVENT_DB), migrations::EVENT)?,
            };
            // Many of these are open at once: a small page cache each, and a
            // WAL cut back after checkpoints so an idle event's folder is
            // about its compressed size.
            conn.pragma_update(None, "cache_size", -1024)?;
            conn.pragma_update(None, "journal_size_limit", 1 << 20)?;
            let n = crate::logstore::migrate_legacy(&mut conn)?;
            if n > 0 {
                tracing::info!(event = %id, tasks = n, "logs compressed into blocks");
            }
            Ok(EventDb::new(id.clone(), dir.clone(), conn))
        })
    }

    /// A shared handle on an event database; `None` if the event is unknown.
    pub fn event_db(&self, id: &str) -> Result<Option<Arc<EventDb>>, StoreError> {
        let Ok(id) = EventId::parse(id) else {
            return Ok(None);
        };
        if let Some(db) = self.events.get(id.as_str()) {
            return Ok(Some(db));
        }
        let exists: bool = self
            .main()
            .query_row("SELECT 1 FROM events WHERE id = ?1", [id.as_str()], |_| {
                Ok(())
            })
            .optional()?
            .is_some();
        if !exists {
            return Ok(None);
        }
        self.open_event_db(&id).map(Some)
    }

    /// Settle the seeds of recent pushes if there are any (see
    /// `push_commit`); run in the background about once a second.
    pub fn settle_recent_pushes(&self) -> Result<usize, StoreError> {
        if !self.unsettled.swap(false, Ordering::SeqCst) {
            return Ok(0);
        }
        let r = self.settle_seeds(false);
        if r.is_err() {
            self.unsettled.store(true, Ordering::SeqCst);
        }
        r
    }

    /// Close cached event databases nobody else holds.
    pub fn close_idle(&self) {
        self.events.close_idle();
    }

    /// Close the cached event databases nobody held or asked for during
    /// the last `unused_for`, and when some were, let the main database's
    /// page cache go too (it is read back from the page cache of the
    /// system); how many event databases were closed. What an idle server
    /// keeps of its databases is then the main connection's schema.
    pub fn release_unused(&self, unused_for: std::time::Duration) -> usize {
        let closed = self.events.close_unused(unused_for);
        if closed > 0
            && let Err(e) = self.main().execute_batch("PRAGMA shrink_memory")
        {
            tracing::warn!(cause = %e, "releasing the main database's cache");
        }
        closed
    }

    /// Event databases open now (kept idle or in use).
    pub fn open_event_dbs(&self) -> usize {
        self.events.open()
    }

    /// Delete an event: its row now, its folder when no handle is left.
    pub fn delete_event(&self, id: &str) -> Result<bool, StoreError> {
        let handle = self.event_db(id)?;
        let n = self
            .main()
            .execute("DELETE FROM events WHERE id = ?1", params![id])?;
        self.main()
            .execute("DELETE FROM test_runs WHERE event_id = ?1", params![id])?;
        drop(handle);
        if let Some(db) = self.events.remove(id) {
            db.doomed.store(true, Ordering::SeqCst);
        }
        Ok(n == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::fixtures::{self, spec};
    use sai_testkit::sqlite::count;

    #[test]
    fn create_dedupe_delete() {
        let (dir, store, created) = fixtures::store_with_one_task();
        let id = fixtures::event_id();
        // What the scheduler gets is what a reader finds.
        assert_eq!(created.tasks, created.db.tasks().unwrap());
        assert_eq!(Some(created.event.clone()), store.event(&id).unwrap());
        drop(created);
        let mut ev2 = fixtures::event();
        ev2.id = EventId::parse("1123456789ABCDEF0123456789ABCDEF").unwrap();
        assert!(
            store
                .create_event(ev2.clone(), vec![], false)
                .unwrap()
                .is_none()
        );
        assert!(!dir.path().join("events").join(ev2.id.as_str()).exists());
        let db = store.event_db(&id).unwrap().unwrap();
        assert_eq!(db.tasks().unwrap().len(), 1);
        assert!(store.delete_event(&id).unwrap());
        assert!(
            dir.path().join("events").join(id.as_str()).exists(),
            "in use"
        );
        drop(db);
        assert!(!dir.path().join("events").join(id.as_str()).exists());
    }

    fn new_event(hash: &str) -> Event {
        let id = EventId::from_bytes(rand_id(hash));
        Event::new(id, "p", "refs/heads/main", hash, "https://x", None, false)
    }

    fn rand_id(seed: &str) -> [u8; 16] {
        use sha2::Digest;
        let d = sha2::Sha256::digest(seed.as_bytes());
        d[..16].try_into().unwrap()
    }

    #[test]
    fn concurrent_pushes_commit_together_and_duplicates_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        // 8 threads push the same 25 hashes: each hash is accepted once.
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    let mut accepted = Vec::new();
                    for h in 0..25 {
                        let mut ev = new_event(&format!("{t}-{h}"));
                        ev.hash = format!("hash{h}");
                        let tasks =
                            vec![(ev.id.task(rand_id(&format!("{t}{h}"))), spec("a"), false)];
                        if let Some(c) = store.create_event(ev, tasks, false).unwrap() {
                            accepted.push((c.event.id.clone(), c.event.seq));
                        }
                    }
                    accepted
                })
            })
            .collect();
        let accepted: Vec<_> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        assert_eq!(accepted.len(), 25, "{accepted:?}");
        let seqs: HashSet<i64> = accepted.iter().map(|a| a.1).collect();
        assert_eq!(seqs.len(), 25);
        for (id, _) in &accepted {
            assert_eq!(
                store
                    .event_db(id.as_str())
                    .unwrap()
                    .unwrap()
                    .tasks()
                    .unwrap()
                    .len(),
                1
            );
        }
        let folders = std::fs::read_dir(dir.path().join("events"))
            .unwrap()
            .count();
        assert_eq!(folders, 25, "refused duplicates leave no folder");
        assert_eq!(store.settle_recent_pushes().unwrap(), 25);
        assert_eq!(store.settle_recent_pushes().unwrap(), 0);
    }

    #[test]
    fn a_pushed_event_whose_folder_was_lost_is_rebuilt_from_its_seed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ev = new_event("abc");
        let id = ev.id.clone();
        let tasks = vec![
            (id.task([1; 16]), spec("a"), false),
            (id.task([2; 16]), spec("b"), true),
        ];
        let created = store.create_event(ev, tasks, false).unwrap().unwrap();
        let want = created.tasks.clone();
        drop(created);
        drop(store);
        // Power lost before the unsynced folder reached the disk: it is
        // gone (or half there) while the synced event row and seed remain.
        let folder = dir.path().join("events").join(id.as_str());
        std::fs::remove_dir_all(&folder).unwrap();
        let store = Store::open(dir.path()).unwrap();
        let got = store
            .event_db(id.as_str())
            .unwrap()
            .unwrap()
            .tasks()
            .unwrap();
        assert_eq!(got, want);
        // Once settled the seed is gone.
        assert_eq!(count(&store.main(), "SELECT COUNT(*) FROM event_seeds"), 0);
    }

    #[test]
    fn schema_version_is_recorded_and_newer_databases_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join(MAIN_DB)).unwrap();
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, migrations::MAIN.len() as i64);
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let err = Store::open(dir.path()).err().unwrap();
        assert!(matches!(err, StoreError::NewerSchema { found: 99, .. }));
        assert!(err.to_string().contains("newer"), "{err}");
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

    #[test]
    fn an_event_database_of_schema_1_gains_the_instance_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.sqlite3");
        {
            let mut conn = Connection::open(&path).unwrap();
            let tx = conn.transaction().unwrap();
            tx.execute_batch(migrations::EVENT[0]).unwrap();
            tx.pragma_update(None, "user_version", 1).unwrap();
            tx.commit().unwrap();
        }
        let conn = migrations::open(&path, migrations::EVENT).unwrap();
        conn.execute("UPDATE tasks SET instance = 'x'", []).unwrap();
    }
}
