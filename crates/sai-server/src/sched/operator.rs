//! What an operator does to tasks and events: cancel, rebuild, delete.

use std::collections::BTreeSet;

use sai_core::task::{RunRecord, TaskId, TaskState};

use super::Sched;

/// Result of an operator action on a task that cannot be done now.
#[derive(Debug, PartialEq, Eq)]
pub struct Conflict(pub String);

impl<D: Clone> Sched<D> {
    /// Operator cancel of one task.
    pub fn cancel_task(&mut self, now: i64, task_id: &str, by: &str) -> Result<(), Conflict> {
        let Some((seq, i)) = self.locate(task_id) else {
            return Err(Conflict("task is not waiting or running".into()));
        };
        let st = self.events[&seq].tasks[i].task.run.state;
        if st.is_terminal() {
            return Err(Conflict(format!("task is already {st}")));
        }
        let reason = format!("cancelled by {by}");
        let conn = self.stop_on_builder(seq, i, &reason);
        let run = self.set_state(seq, i, TaskState::Cancelled);
        run.ended = Some(now);
        run.reason = Some(reason);
        self.persist(seq, i);
        self.refresh(seq);
        if let Some(conn) = conn {
            self.dispatch_conn(now, conn);
        }
        Ok(())
    }

    /// Reset tasks to waiting (rebuild). `ids = None` resets every task.
    /// Returns the reset task ids (their logs and artifacts must be cleared).
    pub fn reset_tasks(
        &mut self,
        now: i64,
        event_id: &str,
        ids: Option<&[String]>,
        by: &str,
    ) -> Vec<TaskId> {
        let Some(&seq) = self.by_id.get(event_id) else {
            return Vec::new();
        };
        let n = self.events[&seq].tasks.len();
        let mut out = Vec::new();
        let mut platforms = BTreeSet::new();
        let reason = format!("rebuild requested by {by}");
        for i in 0..n {
            let id = self.events[&seq].tasks[i].task.id.clone();
            if ids.is_some_and(|ids| !ids.iter().any(|x| *x == *id)) {
                continue;
            }
            self.stop_on_builder(seq, i, &reason);
            self.events.get_mut(&seq).expect("event").ready_at = now;
            let run = self.set_state(seq, i, TaskState::Waiting);
            *run = RunRecord {
                reason: Some(reason.clone()),
                ..RunRecord::new()
            };
            self.persist(seq, i);
            platforms.insert(self.events[&seq].tasks[i].task.spec.platform.clone());
            out.push(id);
        }
        self.refresh(seq);
        self.dispatch_platforms(now, &platforms);
        out
    }

    /// Forget an event (being deleted): stop its running tasks.
    pub fn drop_event(&mut self, now: i64, event_id: &str) {
        let Some(seq) = self.by_id.get(event_id).copied() else {
            return;
        };
        let n = self.events[&seq].tasks.len();
        let mut freed = Vec::new();
        for i in 0..n {
            freed.extend(self.stop_on_builder(seq, i, "event deleted"));
            self.set_state(seq, i, TaskState::Cancelled);
        }
        let e = self.events.remove(&seq).expect("event");
        self.by_id.remove(&e.event.id);
        self.queue_changed = true;
        for conn in freed {
            self.dispatch_conn(now, conn);
        }
    }
}
