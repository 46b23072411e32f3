//! Values the unit tests of several modules start from.

use crate::upstream::{Event, EventState};

/// A one-task event of project `p` on `git_ref`, with nothing optional set.
pub fn event(git_ref: &str, state: EventState, sec: bool) -> Event {
    Event {
        id: "0".repeat(32),
        project: "p".into(),
        git_ref: git_ref.into(),
        hash: "h".into(),
        fetch_url: "/src/p".into(),
        source_ip: None,
        created: 0,
        last_updated: 0,
        state,
        sec,
        task_count: 1,
        tasks: None,
        task_states: None,
        rebuild_of: None,
        expected_finish: None,
        commit_status: None,
        webhook: None,
        next_cursor: None,
    }
}
