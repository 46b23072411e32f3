//! Stores made by older servers, opened by this one. For each earlier
//! schema version of the main database (its migrations applied only up to
//! N, `user_version` N, as an older binary left it) a store is filled with
//! rows of every table that version has: projects, events (the same commit
//! on two refs where the schema allowed it), builders, users, metrics,
//! durations, test runs, hook nonces, and event folders whose event
//! databases are themselves at each earlier event-database version, with
//! tasks and legacy log rows. The current server code then opens it: every
//! row survives, new columns have their defaults, the partial unique index
//! of migration 5 refuses a duplicate push and allows a rebuild, and
//! opening again changes nothing.

use std::path::Path;

use rusqlite::{Connection, params};
use sai_core::saifile::TaskSpec;
use sai_core::task::{Event, EventId, TaskState};
use sai_server::store::{EVENT_DB, MAIN_DB, Store, migrations};

const H1: &str = "1111111111111111111111111111111111111111";
const H2: &str = "2222222222222222222222222222222222222222";

/// An event of the old store: id, project, ref, commit, event-db version.
struct OldEvent {
    id: String,
    project: &'static str,
    git_ref: &'static str,
    hash: &'static str,
    event_version: usize,
}

fn event_id(n: u8) -> String {
    format!("{:032X}", n as u128 * 0x1111)
}

fn task_id(event: &str, n: u8) -> String {
    format!("{event}{:032X}", n as u128 + 1)
}

/// Apply `migrations[..version]` and record `version`, as an older binary
/// that knew only those migrations did.
fn old_schema(path: &Path, migrations: &[&str], version: usize) -> Connection {
    let mut conn = Connection::open(path).unwrap();
    let tx = conn.transaction().unwrap();
    for sql in &migrations[..version] {
        tx.execute_batch(sql).unwrap();
    }
    tx.pragma_update(None, "user_version", version as i64)
        .unwrap();
    tx.commit().unwrap();
    conn
}

/// An event database at `version` with two tasks (one finished, one
/// waiting) and, while the schema has the legacy `logs` table, a log row.
fn old_event_db(dir: &Path, ev: &OldEvent) {
    std::fs::create_dir_all(dir).unwrap();
    let conn = old_schema(&dir.join(EVENT_DB), migrations::EVENT, ev.event_version);
    for (i, state) in [(0u8, "success"), (1, "waiting")] {
        conn.execute(
            "INSERT INTO tasks(id, idx, configuration, platform, steps, artifacts, packages,
                               state, exit_code, attempt, created, last_updated)
             VALUES (?1, ?2, ?3, 'linux/x86_64', '[\"make\",\"make test\"]', '[\"out/*\"]', '[]',
                     ?4, ?5, ?6, 1000, 2000)",
            params![
                task_id(&ev.id, i),
                i as i64,
                format!("conf{i}"),
                state,
                (state == "success").then_some(0),
                (state == "success") as i64,
            ],
        )
        .unwrap();
    }
    if ev.event_version < 3 {
        conn.execute(
            "INSERT INTO logs(task_id, offset, channel, timestamp_us, data)
             VALUES (?1, 0, 1, 5, CAST('hello from an old log\n' AS BLOB))",
            [task_id(&ev.id, 0)],
        )
        .unwrap();
    }
}

/// A store as the server with `version` main migrations left it.
fn old_store(dir: &Path, version: usize) -> Vec<OldEvent> {
    // The same commit on a second ref is a second event only from
    // migration 4 on; before, it was refused, so the old store has another
    // commit there.
    let second_hash = if version >= 4 { H1 } else { H2 };
    let old_versions = migrations::EVENT.len() - 1;
    let events: Vec<OldEvent> = [
        ("p1", "refs/heads/main", H1),
        ("p1", "refs/heads/dev", second_hash),
        ("p2", "refs/heads/main", H1),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (project, git_ref, hash))| OldEvent {
        id: event_id(i as u8 + 1),
        project,
        git_ref,
        hash,
        event_version: i % old_versions + 1,
    })
    .collect();
    std::fs::create_dir_all(dir.join("events")).unwrap();
    let conn = old_schema(&dir.join(MAIN_DB), migrations::MAIN, version);
    for p in ["p1", "p2"] {
        conn.execute(
            "INSERT INTO projects(name, fetch_url, created) VALUES (?1, ?2, 100)",
            params![p, format!("https://git.example/{p}")],
        )
        .unwrap();
    }
    for ev in &events {
        conn.execute(
            "INSERT INTO events(id, project, ref, hash, fetch_url, source_ip, created,
                                last_updated, state, sec, task_count)
             VALUES (?1, ?2, ?3, ?4, 'https://git.example/x', '127.0.0.1', 100, 200,
                     'waiting', 0, 2)",
            params![ev.id, ev.project, ev.git_ref, ev.hash],
        )
        .unwrap();
        old_event_db(&dir.join("events").join(&ev.id), ev);
    }
    conn.execute_batch(
        "INSERT INTO builders VALUES ('b1', '[\"linux/x86_64\"]', 'sai-builder 0.1', '127.0.0.1', 10, 20);
         INSERT INTO users VALUES ('alice', 10, 20);
         INSERT INTO metrics(task_id, project, builder, step, exit_code, duration_ms, created)
             VALUES ('t', 'p1', 'b1', 1, 0, 1234, 30);",
    )
    .unwrap();
    if version >= 2 {
        conn.execute_batch(
            "INSERT INTO task_durations(project, configuration, platform, task_id, state, duration_ms, ended)
                 VALUES ('p1', 'conf0', 'linux/x86_64', 't', 'success', 999, 40);
             INSERT INTO test_runs(project, suite, name, event_id, task_id, hash, ref, configuration,
                                   platform, result, duration_ms, recorded)
                 VALUES ('p1', 's', 'n', 'e', 't', 'h', 'r', 'c', 'p', 'passed', 3, 50);",
        )
        .unwrap();
    }
    if version >= 3 {
        conn.execute_batch("INSERT INTO hook_nonces VALUES ('nonce-1', NULL);")
            .unwrap();
    }
    events
}

fn count(conn: &Connection, table: &str) -> i64 {
    conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

/// The schema as sqlite records it, to compare two opens.
fn schema(path: &Path) -> Vec<String> {
    let conn = Connection::open(path).unwrap();
    let mut st = conn
        .prepare("SELECT type || ' ' || name || ' ' || IFNULL(sql, '') FROM sqlite_master ORDER BY type, name")
        .unwrap();
    let mut rows: Vec<String> = st
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    let v: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    rows.push(format!("user_version {v}"));
    rows
}

fn spec() -> TaskSpec {
    TaskSpec {
        configuration: "again".into(),
        platform: "linux/x86_64".into(),
        steps: vec!["true".into()],
        artifacts: vec![],
        packages: vec![],
        test_reports: vec![],
    }
}

/// Everything the old store held is read back by the current code.
fn assert_rows_survive(store: &Store, dir: &Path, version: usize, old: &[OldEvent]) {
    let events = store.all_events().unwrap();
    assert_eq!(events.len(), old.len(), "v{version}: events");
    for (ev, was) in events.iter().zip(old) {
        assert_eq!(ev.id.as_str(), was.id, "v{version}");
        assert_eq!(
            (ev.project.as_str(), ev.git_ref.as_str(), ev.hash.as_str()),
            (was.project, was.git_ref, was.hash),
            "v{version}"
        );
        assert_eq!(ev.source_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!((ev.created, ev.last_updated, ev.task_count), (100, 200, 2));
        assert_eq!(ev.rebuild_of, None, "v{version}: new column's default");
        let db = store.event_db(&was.id).unwrap().expect("event db opens");
        let tasks = db.tasks().unwrap();
        assert_eq!(
            tasks.len(),
            2,
            "v{version}, event db v{}",
            was.event_version
        );
        for (i, t) in tasks.iter().enumerate() {
            assert_eq!(t.id.as_str(), task_id(&was.id, i as u8));
            assert_eq!(t.spec.configuration, format!("conf{i}"));
            assert_eq!(t.spec.steps, ["make", "make test"]);
            assert_eq!(t.spec.artifacts, ["out/*"]);
            assert_eq!(t.run.instance, None, "event db column 2's default");
            assert!(
                t.spec.test_reports.is_empty(),
                "event db column 4's default"
            );
        }
        assert_eq!(tasks[0].run.state, TaskState::Success);
        assert_eq!(tasks[0].run.exit_code, Some(0));
        assert_eq!(tasks[1].run.state, TaskState::Waiting);
        drop(db);
        let conn = Connection::open(dir.join("events").join(&was.id).join(EVENT_DB)).unwrap();
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, migrations::EVENT.len() as i64);
        if was.event_version < 3 {
            // The legacy log rows were packed into blocks.
            assert_eq!(count(&conn, "logs"), 0, "legacy rows moved");
        }
    }
    let projects: Vec<(String, String)> = store
        .projects()
        .unwrap()
        .into_iter()
        .map(|p| (p.name, p.fetch_url))
        .collect();
    assert_eq!(
        projects,
        [
            ("p1".to_string(), "https://git.example/p1".to_string()),
            ("p2".to_string(), "https://git.example/p2".to_string())
        ]
    );
    let main = Connection::open(dir.join(MAIN_DB)).unwrap();
    for (table, n) in [("builders", 1), ("users", 1), ("metrics", 1)] {
        assert_eq!(count(&main, table), n, "v{version}: {table}");
    }
    let later = |since: usize, n: i64| if version >= since { n } else { 0 };
    assert_eq!(count(&main, "task_durations"), later(2, 1));
    assert_eq!(count(&main, "test_runs"), later(2, 1));
    assert_eq!(count(&main, "hook_nonces"), later(3, 1));
    assert_eq!(count(&main, "event_seeds"), 0);
    let index: String = main
        .query_row(
            "SELECT sql FROM sqlite_master WHERE name = 'events_project_ref_hash'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(index.contains("WHERE rebuild_of IS NULL"), "{index}");
}

#[test]
fn stores_of_every_earlier_schema_version_open_with_every_row() {
    assert!(migrations::MAIN.len() >= 6, "migration 5 is tested here");
    for version in 1..migrations::MAIN.len() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let old = old_store(dir, version);

        let store = Store::open(dir).unwrap_or_else(|e| panic!("v{version}: {e}"));
        assert_rows_survive(&store, dir, version, &old);

        // A duplicate push (same project, ref and commit) is refused ...
        let dup = Event::new(
            EventId::parse(&event_id(10)).unwrap(),
            "p1",
            "refs/heads/main",
            H1,
            "https://git.example/p1",
            None,
            false,
        );
        let dup_id = dup.id.clone();
        assert!(
            store
                .create_event(
                    dup.clone(),
                    vec![(dup_id.task([1; 16]), spec(), false)],
                    false
                )
                .unwrap()
                .is_none(),
            "v{version}: a duplicate push is refused"
        );
        // ... a rebuild of it is a new event ...
        let mut rebuild = dup.clone();
        rebuild.rebuild_of = Some(EventId::parse(&old[0].id).unwrap());
        let created = store
            .create_event(rebuild, vec![(dup_id.task([2; 16]), spec(), false)], false)
            .unwrap()
            .unwrap_or_else(|| panic!("v{version}: a rebuild is allowed"));
        assert_eq!(
            store.event(dup_id.as_str()).unwrap().unwrap().rebuild_of,
            Some(EventId::parse(&old[0].id).unwrap())
        );
        drop(created);
        // ... and the same commit on a ref where it was not pushed yet is a
        // push of its own.
        let mut other_ref = dup.clone();
        other_ref.id = EventId::parse(&event_id(11)).unwrap();
        other_ref.git_ref = "refs/heads/release".into();
        assert!(
            store
                .create_event(other_ref, vec![], false)
                .unwrap()
                .is_some(),
            "v{version}: the same commit on another ref"
        );
        drop(store);

        // Opening again is idempotent: same schema, same rows.
        let before = schema(&dir.join(MAIN_DB));
        let events_before = Store::open(dir).unwrap().all_events().unwrap();
        let store = Store::open(dir).unwrap();
        assert_eq!(schema(&dir.join(MAIN_DB)), before, "v{version}");
        assert_eq!(store.all_events().unwrap(), events_before);
        assert_eq!(events_before.len(), old.len() + 2);
        assert_rows_survive_again(&store, &old);
    }
}

/// The old events and their tasks are still there after a second open.
fn assert_rows_survive_again(store: &Store, old: &[OldEvent]) {
    for was in old {
        let db = store.event_db(&was.id).unwrap().unwrap();
        assert_eq!(db.tasks().unwrap().len(), 2);
    }
}
