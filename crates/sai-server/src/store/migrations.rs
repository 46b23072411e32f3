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
    // 2: tasks of pushes whose event folder may not be on disk yet
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
