//! Queries of the main database: projects, events, builders, users, metrics.

use std::collections::HashSet;

use rusqlite::{OptionalExtension, params};
use sai_core::api::StepTime;
use sai_core::task::{Event, EventState};

use super::{Rows, Store, StoreError, now_ms, parsed};

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

const EVENT_COLS: &str = "id, project, ref, hash, fetch_url, source_ip, created, last_updated, state, sec, task_count, rowid, rebuild_of";

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
        rebuild_of: r
            .get::<_, Option<String>>(12)?
            .and_then(|s| sai_core::task::EventId::parse(&s).ok()),
    })
}

impl Store {
    /// The event of this commit pushed to this ref of this project, if any.
    pub fn event_by_hash(
        &self,
        project: &str,
        git_ref: &str,
        hash: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .main()
            .query_row(
                "SELECT id FROM events WHERE project = ?1 AND ref = ?2 AND hash = ?3 ORDER BY rowid DESC LIMIT 1",
                params![project, git_ref, hash],
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

    /// At most `limit` events of a project older than sequence number
    /// `before`, newest first; private ones only with `private`.
    pub fn events_of(
        &self,
        project: &str,
        limit: i64,
        before: i64,
        private: bool,
    ) -> Result<Vec<Event>, StoreError> {
        self.main().rows(
            &format!(
                "SELECT {EVENT_COLS} FROM events WHERE project = ?1 AND rowid < ?3 AND (?4 OR sec = 0)
                 ORDER BY rowid DESC LIMIT ?2"
            ),
            params![project, limit, before, private],
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
        self.main().rows(
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
        self.main().rows(
            &format!("SELECT {EVENT_COLS} FROM events ORDER BY rowid"),
            [],
            event_from_row,
        )
    }

    /// Number of events per state.
    pub fn event_state_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.main().rows(
            "SELECT state, count(*) FROM events GROUP BY state",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
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
        self.main().rows(
            "SELECT p.name, p.fetch_url, p.created, (SELECT COUNT(*) FROM events e WHERE e.project = p.name)
             FROM projects p ORDER BY p.name",
            [],
            ProjectRow::from_row,
        )
    }

    /// Projects with at least one public event, as an anonymous caller may
    /// see them: counts, first push and fetch URL of their public events only.
    pub fn public_projects(&self) -> Result<Vec<ProjectRow>, StoreError> {
        self.main().rows(
            "SELECT project,
                    (SELECT fetch_url FROM events l WHERE l.project = e.project AND l.sec = 0
                     ORDER BY l.rowid DESC LIMIT 1),
                    MIN(created), COUNT(*)
             FROM events e WHERE sec = 0 GROUP BY project ORDER BY project",
            [],
            ProjectRow::from_row,
        )
    }

    /// Does this project have an event an anonymous caller may see?
    pub fn project_is_public(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .main()
            .query_row(
                "SELECT 1 FROM events WHERE project = ?1 AND sec = 0 LIMIT 1",
                [name],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Which of these event ids are private events.
    pub fn private_events<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<HashSet<String>, StoreError> {
        let db = self.main();
        let mut st = db.prepare_cached("SELECT 1 FROM events WHERE id = ?1 AND sec != 0")?;
        let mut out = HashSet::new();
        for id in ids {
            if st.exists([id])? {
                out.insert(id.to_string());
            }
        }
        Ok(out)
    }

    /// Remember a hook notification's nonce until `expires` (unix ms; `None`:
    /// forever); false when it was seen before (a replay). Expired nonces
    /// are forgotten first.
    pub fn remember_nonce(&self, nonce: &str, expires: Option<i64>) -> Result<bool, StoreError> {
        // One transaction: one WAL commit per hook, not two.
        let mut db = self.main();
        let tx = db.transaction()?;
        tx.execute(
            "DELETE FROM hook_nonces WHERE expires < ?1",
            params![now_ms()],
        )?;
        let n = tx.execute(
            "INSERT INTO hook_nonces(nonce, expires) VALUES (?1, ?2) ON CONFLICT(nonce) DO NOTHING",
            params![nonce, expires],
        )?;
        tx.commit()?;
        Ok(n == 1)
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
        self.main().rows(
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

    /// The steps of `task_id` that ended at or after `since` (unix ms; the
    /// start of its current attempt), in the order they ended.
    pub fn step_times(&self, task_id: &str, since: i64) -> Result<Vec<StepTime>, StoreError> {
        self.main().rows(
            "SELECT step, exit_code, duration_ms, created FROM metrics
             WHERE task_id = ?1 AND created >= ?2 ORDER BY id",
            params![task_id, since],
            |r| {
                let ended: i64 = r.get(3)?;
                let duration_ms: i64 = r.get(2)?;
                Ok(StepTime {
                    step: r.get::<_, i64>(0)? + 1,
                    exit_code: r.get(1)?,
                    started: ended - duration_ms,
                    ended,
                    duration_ms,
                })
            },
        )
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

/// Insert an event row (and its project) inside `tx`; `None` if a pushed
/// event of the same project, ref and commit exists.
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
        "INSERT INTO events(id, project, ref, hash, fetch_url, source_ip, created, last_updated, state, sec, task_count, rebuild_of)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT(project, ref, hash) WHERE rebuild_of IS NULL DO NOTHING",
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
            ev.task_count,
            ev.rebuild_of.as_ref().map(|e| e.as_str())
        ],
    )?;
    Ok((n == 1).then(|| tx.last_insert_rowid()))
}

impl ProjectRow {
    /// A row of (name, fetch URL, first push, event count).
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ProjectRow> {
        Ok(ProjectRow {
            name: r.get(0)?,
            fetch_url: r.get(1)?,
            created: r.get(2)?,
            event_count: r.get(3)?,
        })
    }
}
