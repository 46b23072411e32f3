//! Schema migrations of the two kinds of database. A database records the
//! number of migrations applied in `PRAGMA user_version`; one newer than
//! this binary knows is refused.

use std::path::Path;

use rusqlite::Connection;

use super::StoreError;

/// Migrations of the main database, in order.
pub const MAIN: &[&str] = &[
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
    // 2: finished tasks' durations (estimates) and every recorded test case
    // run (per-test history across events and rebuilds; flaky detection).
    "CREATE TABLE task_durations(
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        project TEXT NOT NULL,
        configuration TEXT NOT NULL,
        platform TEXT NOT NULL,
        task_id TEXT NOT NULL,
        state TEXT NOT NULL,
        duration_ms INTEGER NOT NULL,
        ended INTEGER NOT NULL);
     CREATE INDEX task_durations_key ON task_durations(project, configuration, platform, state, ended);
     CREATE TABLE test_runs(
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        project TEXT NOT NULL,
        suite TEXT NOT NULL,
        name TEXT NOT NULL,
        event_id TEXT NOT NULL,
        task_id TEXT NOT NULL,
        hash TEXT NOT NULL,
        ref TEXT NOT NULL,
        configuration TEXT NOT NULL,
        platform TEXT NOT NULL,
        result TEXT NOT NULL,
        duration_ms INTEGER,
        recorded INTEGER NOT NULL);
     CREATE INDEX test_runs_key ON test_runs(project, suite, name, id);
     CREATE INDEX test_runs_event ON test_runs(event_id);",
    // 3: nonces of accepted hook notifications, kept until `expires` (unix
    // ms; NULL: forever, for notifications without a timestamp).
    "CREATE TABLE hook_nonces(
        nonce TEXT PRIMARY KEY,
        expires INTEGER);
     CREATE INDEX hook_nonces_expires ON hook_nonces(expires);",
    // 4: an event is one commit pushed to one ref: the same commit on a
    // second ref is a new event.
    "DROP INDEX events_project_hash;
     CREATE UNIQUE INDEX events_project_ref_hash ON events(project, ref, hash);",
    // 5: an event may build a seen commit again (`rebuild_of` names the
    // event it repeats); only pushes stay one per (project, ref, commit).
    "ALTER TABLE events ADD COLUMN rebuild_of TEXT;
     DROP INDEX events_project_ref_hash;
     CREATE UNIQUE INDEX events_project_ref_hash ON events(project, ref, hash) WHERE rebuild_of IS NULL;
     CREATE INDEX events_project_hash_any ON events(project, hash);
     CREATE INDEX metrics_task ON metrics(task_id, created);",
    // 6: tasks of pushes whose event folder may not be on disk yet
    // (`store::push_commit`).
    "CREATE TABLE event_seeds(
        event_id TEXT PRIMARY KEY,
        tasks BLOB NOT NULL);",
];

/// Migrations of an event database, in order.
pub const EVENT: &[&str] = &[
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
    // 2: the builder's offered platform (instance slot) a task runs in.
    "ALTER TABLE tasks ADD COLUMN instance TEXT;",
    // 2: logs compressed in blocks; rows of `logs` are moved by
    // `logstore::migrate_legacy` when the database is opened.
    crate::logstore::SCHEMA,
    // 4: test report globs per task; uploaded reports and their test cases.
    "ALTER TABLE tasks ADD COLUMN test_reports TEXT NOT NULL DEFAULT '[]';
     CREATE TABLE test_reports(
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id TEXT NOT NULL,
        name TEXT NOT NULL,
        cases INTEGER NOT NULL,
        refused TEXT,
        created INTEGER NOT NULL);
     CREATE TABLE test_cases(
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id TEXT NOT NULL,
        report TEXT NOT NULL,
        suite TEXT NOT NULL,
        name TEXT NOT NULL,
        result TEXT NOT NULL,
        duration_ms INTEGER,
        message TEXT);
     CREATE INDEX test_cases_task ON test_cases(task_id);",
    // 5: line counts of log rows, so line numbers cost the index, not the log.
    crate::logstore::LINES_SCHEMA,
    // 6: builder log bytes stored per task, for resuming after a restart.
    crate::logstore::RECEIVED_SCHEMA,
];

fn migrate(conn: &mut Connection, migrations: &[&str], db: &str) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = migrations.len() as i64;
    if version > known {
        return Err(StoreError::NewerSchema {
            db: db.to_string(),
            found: version,
            known,
        });
    }
    if version == known {
        // Nothing to do: no write (every push opens a database).
        return Ok(());
    }
    let tx = conn.transaction()?;
    for (i, sql) in migrations.iter().enumerate().skip(version as usize) {
        tx.execute_batch(sql)
            .map_err(|source| StoreError::Migration {
                db: db.to_string(),
                number: i + 1,
                source,
            })?;
    }
    tx.pragma_update(None, "user_version", known)?;
    tx.commit()?;
    Ok(())
}

/// Open a database file (WAL, `synchronous=NORMAL`) and bring its schema up
/// to date.
pub fn open(path: &Path, migrations: &[&str]) -> Result<Connection, StoreError> {
    let db = path.display().to_string();
    let mut conn = Connection::open(path).map_err(|source| StoreError::Open {
        db: db.clone(),
        source,
    })?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    migrate(&mut conn, migrations, &db)?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_an_up_to_date_database_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.sqlite3");
        drop(open(&path, EVENT).unwrap());
        let wal = dir.path().join("e.sqlite3-wal");
        let before = std::fs::read(&path).unwrap();
        let conn = open(&path, EVENT).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, EVENT.len() as i64);
        // A write (even of `user_version` alone) would have put frames in
        // the WAL while the connection is open.
        let wal_len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        assert_eq!(wal_len, 0, "opening wrote {wal_len} WAL bytes");
        drop(conn);
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }
}
