//! Queries of the main database: projects, events, builders, users, metrics.

use std::collections::HashSet;

use rusqlite::{OptionalExtension, params};
use sai_core::task::{Event, EventState};

use super::{Store, StoreError, now_ms, parsed};

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

/// A project with its number of events.
#[derive(Debug, Clone)]
pub struct ProjectRow {
    /// Name.
    pub name: String,
    /// Last fetch URL pushed.
    pub fetch_url: String,
    /// First push (unix ms).
    pub created: i64,
    /// Events stored.
    pub event_count: i64,
}

const EVENT_COLS: &str = "id, project, ref, hash, fetch_url, source_ip, created, last_updated, state, sec, task_count, rowid";

fn event_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
    Ok(Event {
        id: parsed(r, 0)?,
        project: r.get(1)?,
        git_ref: r.get(2)?,
        hash: r.get(3)?,
        fetch_url: r.get(4)?,
        source_ip: r.get(5)?,
        created: r.get(6)?,
        last_updated: r.get(7)?,
        state: parsed(r, 8)?,
        sec: r.get::<_, i64>(9)? != 0,
        task_count: r.get(10)?,
        seq: r.get(11)?,
    })
}

impl Store {
    /// Every row of a query of the main database.
    fn rows<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        let db = self.main();
        let mut st = db.prepare(sql)?;
        let rows = st
            .query_map(params, row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// The event with this project and hash, if any.
    pub fn event_by_hash(&self, project: &str, hash: &str) -> Result<Option<String>, StoreError> {
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
    ) -> Result<HashSet<(String, String)>, StoreError> {
        let prev: Option<String> = self
            .main()
            .query_row(
                "SELECT id FROM events WHERE project = ?1 AND ref = ?2 ORDER BY rowid DESC LIMIT 1",
                params![project, git_ref],
                |r| r.get(0),
            )
            .optional()?;
        let mut out = HashSet::new();
        if let Some(prev) = prev
            && let Some(db) = self.event_db(&prev)?
        {
            out.extend(db.failed_pairs()?);
        }
        Ok(out)
    }

    /// One event row.
    pub fn event(&self, id: &str) -> Result<Option<Event>, StoreError> {
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
    pub fn events_of(&self, project: &str, limit: i64) -> Result<Vec<Event>, StoreError> {
        self.rows(
            &format!(
                "SELECT {EVENT_COLS} FROM events WHERE project = ?1 ORDER BY rowid DESC LIMIT ?2"
            ),
            params![project, limit],
            event_from_row,
        )
    }

    /// Events not in a terminal state, oldest first.
    pub fn active_events(&self) -> Result<Vec<Event>, StoreError> {
        let active: Vec<String> = EventState::ALL
            .iter()
            .filter(|s| !s.is_terminal())
            .map(|s| format!("'{s}'"))
            .collect();
        self.rows(
            &format!(
                "SELECT {EVENT_COLS} FROM events WHERE state IN ({}) ORDER BY rowid",
                active.join(", ")
            ),
            [],
            event_from_row,
        )
    }

    /// Every event row, oldest first (for retention).
    pub fn all_events(&self) -> Result<Vec<Event>, StoreError> {
        self.rows(
            &format!("SELECT {EVENT_COLS} FROM events ORDER BY rowid"),
            [],
            event_from_row,
        )
    }

    /// Set an event's state.
    pub fn set_event_state(&self, id: &str, state: EventState) -> Result<(), StoreError> {
        self.main().execute(
            "UPDATE events SET state = ?2, last_updated = ?3 WHERE id = ?1",
            params![id, state.as_str(), now_ms()],
        )?;
        Ok(())
    }

    /// Projects with their event counts.
    pub fn projects(&self) -> Result<Vec<ProjectRow>, StoreError> {
        self.rows(
            "SELECT p.name, p.fetch_url, p.created, (SELECT COUNT(*) FROM events e WHERE e.project = p.name)
             FROM projects p ORDER BY p.name",
            [],
            |r| {
                Ok(ProjectRow {
                    name: r.get(0)?,
                    fetch_url: r.get(1)?,
                    created: r.get(2)?,
                    event_count: r.get(3)?,
                })
            },
        )
    }

    /// Does this project exist?
    pub fn project_exists(&self, name: &str) -> Result<bool, StoreError> {
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
    ) -> Result<(), StoreError> {
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
    pub fn builders(&self) -> Result<Vec<BuilderRow>, StoreError> {
        self.rows(
            "SELECT name, platforms, software, peer, last_seen FROM builders ORDER BY name",
            [],
            |r| {
                Ok(BuilderRow {
                    name: r.get(0)?,
                    platforms: r.get(1)?,
                    software: r.get(2)?,
                    peer: r.get(3)?,
                    last_seen: r.get(4)?,
                })
            },
        )
    }

    /// Record that a user token was used.
    pub fn touch_user(&self, name: &str) -> Result<(), StoreError> {
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
    ) -> Result<(), StoreError> {
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

/// Insert an event row (and its project) inside `tx`; `None` if an event
/// with the same project and hash exists.
pub(super) fn insert_event_row(
    tx: &rusqlite::Transaction<'_>,
    ev: &Event,
) -> Result<Option<i64>, StoreError> {
    tx.execute(
        "INSERT INTO projects(name, fetch_url, created) VALUES (?1, ?2, ?3)
         ON CONFLICT(name) DO UPDATE SET fetch_url = excluded.fetch_url",
        params![ev.project, ev.fetch_url, ev.created],
    )?;
    let n = tx.execute(
        "INSERT INTO events(id, project, ref, hash, fetch_url, source_ip, created, last_updated, state, sec, task_count)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9, ?10)
         ON CONFLICT(project, hash) DO NOTHING",
        params![
            ev.id.as_str(),
            ev.project,
            ev.git_ref,
            ev.hash,
            ev.fetch_url,
            ev.source_ip,
            ev.created,
            ev.state.as_str(),
            ev.sec as i64,
            ev.task_count
        ],
    )?;
    Ok((n == 1).then(|| tx.last_insert_rowid()))
}
