//! Finished tasks' durations per (project, configuration, platform), the
//! history estimates are made from (see [`crate::eta`]).

use rusqlite::params;
use sai_core::task::TaskState;

use super::{Rows, Store, StoreError};

/// What a finished task is known by in the duration history.
#[derive(Debug, Clone, Copy)]
pub struct DurationKey<'a> {
    /// Project.
    pub project: &'a str,
    /// Configuration.
    pub configuration: &'a str,
    /// Requested platform.
    pub platform: &'a str,
}

impl Store {
    /// Record how long a task ran (from the start of its last attempt to its
    /// end) and how it ended.
    pub fn record_duration(
        &self,
        key: DurationKey<'_>,
        task_id: &str,
        state: TaskState,
        duration_ms: i64,
        ended: i64,
    ) -> Result<(), StoreError> {
        self.main().execute(
            "INSERT INTO task_durations(project, configuration, platform, task_id, state, duration_ms, ended)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                key.project,
                key.configuration,
                key.platform,
                task_id,
                state.as_str(),
                duration_ms,
                ended
            ],
        )?;
        Ok(())
    }

    /// Durations of the latest `limit` successful runs, newest first.
    pub fn recent_durations(
        &self,
        key: DurationKey<'_>,
        limit: usize,
    ) -> Result<Vec<i64>, StoreError> {
        self.main().rows(
            "SELECT duration_ms FROM task_durations
             WHERE project = ?1 AND configuration = ?2 AND platform = ?3 AND state = 'success'
             ORDER BY ended DESC, id DESC LIMIT ?4",
            params![key.project, key.configuration, key.platform, limit as i64],
            |r| r.get(0),
        )
    }
}
