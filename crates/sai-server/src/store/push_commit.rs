//! The commit point of a push, with one fsync shared by concurrent pushes.
//!
//! The event folder is written without syncing, from a copy of an empty
//! event database migrated once per server start (running the migrations
//! for every push cost more than the rest of the push on tmpfs). Until the
//! commit no event row names the folder, so a crash of the server before it
//! leaves an orphan that the start-up sweep removes, never half an event.
//! What makes the push durable is one transaction of the main database,
//! committed with `synchronous=FULL` (one fsync of its WAL): the event row
//! plus a *seed*, the event's tasks as written to its folder. Pushes that
//! arrive while a commit is syncing queue up and the next one commits them
//! all together (group commit: whoever takes the commit lock drains the
//! queue), so concurrent pushes share the fsync.
//!
//! A seed lives until its folder is known to be on disk: [`Store::settle_seeds`]
//! (called in the background a second or so later, from
//! [`Store::settle_recent_pushes`]) syncs the folders of the
//! seeded events and deletes their seeds; at start-up, a seeded event whose
//! database is missing or incomplete (the machine lost power before the
//! folder reached the disk) is rebuilt from its seed before being synced.

use std::path::Path;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, params};
use sai_core::saifile::TaskSpec;
use sai_core::task::{Event, RunRecord, Task};

use super::{EVENT_DB, Store, StoreError, event_db, io, migrations};

/// Where the empty event database is built, in the data dir (not under
/// `events/`, which the orphan sweep owns).
const TEMPLATE: &str = "event-template.sqlite3";

/// A push waiting for its commit: its event row, its seed and where to send
/// the result (`Some(seq)`, or `None` for a duplicate).
struct Queued {
    event: Event,
    seed: Vec<u8>,
    done: SyncSender<Result<Option<i64>, String>>,
}

/// Pushes waiting for the next group commit.
#[derive(Default)]
pub(super) struct PushQueue {
    queue: Mutex<Vec<Queued>>,
    commit: Mutex<()>,
    /// The bytes of an empty event database at the current schema, built
    /// by the first push.
    template: Mutex<Option<Arc<[u8]>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The seed of an event: its tasks as JSON (what the folder holds before
/// any task ran), zstd-compressed.
pub(super) fn encode_seed(tasks: &[Task]) -> Result<Vec<u8>, StoreError> {
    let rows: Vec<serde_json::Value> = tasks
        .iter()
        .map(|t| {
            serde_json::json!([
                t.id.as_str(),
                t.spec.configuration,
                t.spec.platform,
                t.spec.steps,
                t.spec.artifacts,
                t.spec.packages,
                t.priority,
                t.created,
                t.spec.test_reports
            ])
        })
        .collect();
    let json = serde_json::to_vec(&rows)?;
    zstd::bulk::compress(&json, 3).map_err(|e| StoreError::Seed(e.to_string()))
}

fn decode_seed(seed: &[u8]) -> Result<Vec<Task>, StoreError> {
    type Row = (
        String,
        String,
        String,
        Vec<String>,
        Vec<String>,
        Vec<String>,
        bool,
        i64,
        Vec<String>,
    );
    let bad = |e: String| StoreError::Seed(e);
    let json = zstd::stream::decode_all(seed).map_err(|e| bad(e.to_string()))?;
    let rows: Vec<Row> = serde_json::from_slice(&json).map_err(|e| bad(e.to_string()))?;
    rows.into_iter()
        .enumerate()
        .map(|(i, r)| {
            Ok(Task {
                id: r
                    .0
                    .parse()
                    .map_err(|e| bad(format!("task id {}: {e}", r.0)))?,
                idx: i as i64,
                spec: TaskSpec {
                    configuration: r.1,
                    platform: r.2,
                    steps: r.3,
                    artifacts: r.4,
                    packages: r.5,
                    test_reports: r.8,
                },
                priority: r.6,
                created: r.7,
                last_updated: r.7,
                run: RunRecord::new(),
            })
        })
        .collect()
}

/// The bytes of an empty event database at the current schema (WAL mode),
/// built in `data_dir` and removed again.
fn build_template(data_dir: &Path) -> Result<Vec<u8>, StoreError> {
    let path = data_dir.join(TEMPLATE);
    let remove = || {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    };
    remove();
    let conn = migrations::open(&path, migrations::EVENT)?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    conn.pragma_update(None, "wal_checkpoint", "TRUNCATE")?;
    drop(conn);
    let bytes = std::fs::read(&path).map_err(io("reading", &path));
    remove();
    bytes
}

impl Store {
    /// Write a new event database holding `tasks` in `dir` without syncing
    /// anything; returns its connection (`synchronous=NORMAL`).
    pub(super) fn write_event_db(
        &self,
        dir: &Path,
        tasks: &[Task],
    ) -> Result<Connection, StoreError> {
        let template = {
            let mut t = lock(&self.pushes.template);
            match &*t {
                Some(t) => t.clone(),
                None => t.insert(build_template(&self.dir)?.into()).clone(),
            }
        };
        let path = dir.join(EVENT_DB);
        std::fs::write(&path, &template).map_err(io("writing", &path))?;
        let mut conn = migrations::open(&path, migrations::EVENT)?;
        conn.pragma_update(None, "synchronous", "OFF")?;
        event_db::insert_tasks(&mut conn, tasks)?;
        // The tasks stay in the WAL (synced by `settle_seeds`): a WAL that
        // is empty or fully checkpointed is restarted by the next write,
        // and with `synchronous=NORMAL` that write syncs the WAL's header
        // and its folder, in the path of the push's first offer.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Ok(conn)
    }
}

fn insert_batch(main: &mut Connection, batch: &[Queued]) -> Result<Vec<Option<i64>>, StoreError> {
    main.pragma_update(None, "synchronous", "FULL")?;
    let result = (|| {
        let tx = main.transaction()?;
        let mut out = Vec::with_capacity(batch.len());
        for q in batch {
            let seq = super::main_db::insert_event_row(&tx, &q.event)?;
            if seq.is_some() {
                tx.execute(
                    "INSERT INTO event_seeds(event_id, tasks) VALUES (?1, ?2)",
                    params![q.event.id.as_str(), q.seed],
                )?;
            }
            out.push(seq);
        }
        tx.commit()?;
        Ok(out)
    })();
    main.pragma_update(None, "synchronous", "NORMAL")?;
    result
}

impl Store {
    /// Commit an event row and its seed with the pushes queued beside it;
    /// `Ok(None)` if its project and hash exist already.
    pub(super) fn commit_push(
        &self,
        event: &Event,
        seed: Vec<u8>,
    ) -> Result<Option<i64>, StoreError> {
        let (done, result) = sync_channel(1);
        lock(&self.pushes.queue).push(Queued {
            event: event.clone(),
            seed,
            done,
        });
        {
            let _leader = lock(&self.pushes.commit);
            let batch = std::mem::take(&mut *lock(&self.pushes.queue));
            if !batch.is_empty() {
                let outcome = insert_batch(&mut self.main(), &batch);
                for (i, q) in batch.into_iter().enumerate() {
                    let r = match &outcome {
                        Ok(seqs) => Ok(seqs[i]),
                        Err(e) => Err(e.to_string()),
                    };
                    let _ = q.done.send(r);
                }
                self.unsettled
                    .store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        match result.recv() {
            Ok(Ok(seq)) => Ok(seq),
            Ok(Err(e)) => Err(StoreError::Seed(format!("committing the push: {e}"))),
            Err(_) => Err(StoreError::Seed("push commit lost".into())),
        }
    }

    /// Sync the folders of seeded events and drop their seeds; at start-up
    /// (`recover`) first rebuild any seeded event database that did not
    /// reach the disk. Returns the seeds settled.
    pub fn settle_seeds(&self, recover: bool) -> Result<usize, StoreError> {
        let seeds: Vec<(String, Vec<u8>)> = {
            let db = self.main();
            let mut st = db.prepare("SELECT event_id, tasks FROM event_seeds")?;
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?
        };
        if seeds.is_empty() {
            return Ok(0);
        }
        let events = self.events_dir();
        for (id, seed) in &seeds {
            let dir = events.join(id);
            if recover {
                let tasks = decode_seed(seed)?;
                if !event_db_holds(&dir, tasks.len()) {
                    tracing::warn!(event = %id, "event folder incomplete after a crash: rebuilt from its seed");
                    let tmp = events.join(format!("{id}.seed"));
                    let _ = std::fs::remove_dir_all(&tmp);
                    std::fs::create_dir_all(&tmp).map_err(io("creating", &tmp))?;
                    drop(self.write_event_db(&tmp, &tasks)?);
                    if dir.exists() {
                        std::fs::remove_dir_all(&dir).map_err(io("removing", &dir))?;
                    }
                    std::fs::rename(&tmp, &dir).map_err(io("renaming", &tmp))?;
                }
            }
            let db_path = dir.join(EVENT_DB);
            if db_path.exists() {
                // The WAL first: a checkpoint that empties it after this
                // has synced the database file before truncating it.
                // Gone if the database was closed meanwhile: closing
                // checkpointed it into the database file, synced below.
                let wal = dir.join(format!("{EVENT_DB}-wal"));
                match std::fs::File::open(&wal) {
                    Ok(f) => f.sync_all().map_err(io("syncing", &wal))?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io("syncing", &wal)(e)),
                }
                sync(&db_path)?;
                sync(&dir)?;
            }
        }
        sync(&events)?;
        let db = self.main();
        let mut st = db.prepare_cached("DELETE FROM event_seeds WHERE event_id = ?1")?;
        for (id, _) in &seeds {
            st.execute([id])?;
        }
        Ok(seeds.len())
    }
}

fn sync(p: &Path) -> Result<(), StoreError> {
    std::fs::File::open(p)
        .and_then(|f| f.sync_all())
        .map_err(io("syncing", p))
}

/// Whether the event database in `dir` opens and holds `tasks` tasks.
fn event_db_holds(dir: &Path, tasks: usize) -> bool {
    let path = dir.join(EVENT_DB);
    if !path.exists() {
        return false;
    }
    let Ok(conn) = Connection::open(&path) else {
        return false;
    };
    conn.query_row("SELECT COUNT(*) FROM tasks", [], |r| r.get::<_, i64>(0))
        .is_ok_and(|n| n as usize == tasks)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures;
    use super::*;
    use sai_testkit::sqlite::count;

    /// `type, name, sql` of every schema object, and `user_version`.
    fn schema(conn: &Connection) -> (Vec<(String, String, Option<String>)>, i64) {
        let mut st = conn
            .prepare("SELECT type, name, sql FROM sqlite_master ORDER BY type, name")
            .unwrap();
        let objects = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let version = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        (objects, version)
    }

    #[test]
    fn an_event_database_from_the_template_is_the_migrated_one_and_leaves_no_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let listing = |d: &Path| {
            let mut names: Vec<String> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        let data_before = listing(dir.path());
        let tasks: Vec<Task> = (0..2).map(fixtures::task).collect();
        let mut written = Vec::new();
        for n in 0..2 {
            let folder = dir.path().join(format!("ev{n}"));
            std::fs::create_dir(&folder).unwrap();
            let conn = store.write_event_db(&folder, &tasks).unwrap();
            let sync: i64 = conn
                .pragma_query_value(None, "synchronous", |r| r.get(0))
                .unwrap();
            assert_eq!(sync, 1, "handed over with synchronous=NORMAL");
            written.push(schema(&conn));
            drop(conn);
            let conn = Connection::open(folder.join(EVENT_DB)).unwrap();
            assert_eq!(count(&conn, "SELECT COUNT(*) FROM tasks"), 2);
            let mode: String = conn
                .pragma_query_value(None, "journal_mode", |r| r.get(0))
                .unwrap();
            assert_eq!(mode, "wal");
        }
        let migrated = migrations::open(&dir.path().join("m.sqlite3"), migrations::EVENT).unwrap();
        assert_eq!(written[0], schema(&migrated));
        assert_eq!(written[1], schema(&migrated));
        assert!(written[0].0.len() > 5, "{:?}", written[0]);
        drop(migrated);
        let mut expected = data_before;
        expected.extend([
            "ev0".to_string(),
            "ev1".to_string(),
            "m.sqlite3".to_string(),
        ]);
        expected.sort();
        assert_eq!(listing(dir.path()), expected, "template files left over");
    }

    #[test]
    fn a_push_leaves_its_tasks_in_the_wal_for_the_offer_to_append_to_and_settling_to_sync() {
        let (dir, store, created) = fixtures::store_with_one_task();
        let id = fixtures::event_id();
        let wal = dir
            .path()
            .join("events")
            .join(id.as_str())
            .join(format!("{EVENT_DB}-wal"));
        let wal_len = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        let pushed = wal_len();
        // Not checkpointed: an empty WAL would be restarted by the next
        // write, which syncs its header (and the folder) before the offer.
        assert!(pushed > 0, "the tasks are not in the WAL");
        let mut run = created.tasks[0].run.clone();
        run.state = sai_core::task::TaskState::Running;
        run.builder = Some("b".into());
        created
            .db
            .update_task(created.tasks[0].id.as_str(), &run)
            .unwrap();
        assert!(wal_len() > pushed, "the offer's write restarted the WAL");
        assert_eq!(store.settle_recent_pushes().unwrap(), 1);
        assert_eq!(count(&store.main(), "SELECT COUNT(*) FROM event_seeds"), 0);
        assert_eq!(created.db.tasks().unwrap()[0].run.state, run.state);
    }

    #[test]
    fn a_seed_decodes_to_the_tasks_it_was_made_of() {
        let tasks: Vec<Task> = (0..3)
            .map(|i| {
                let base = fixtures::task(i);
                Task {
                    spec: TaskSpec {
                        steps: vec!["make".into(), "make test".into()],
                        artifacts: vec!["*.deb".into()],
                        test_reports: vec![format!("build/t{i}.xml")],
                        ..base.spec
                    },
                    priority: i == 1,
                    created: 42,
                    last_updated: 42,
                    ..base
                }
            })
            .collect();
        assert_eq!(decode_seed(&encode_seed(&tasks).unwrap()).unwrap(), tasks);
        assert!(decode_seed(b"not a seed").is_err());
    }
}
