//! Moving one task between states while keeping the event's counts, the
//! waiting index, the connection's slots and the effects right. Every input
//! goes through these.

use sai_core::protocol::ServerMessage;
use sai_core::task::{EventState, RunRecord, TaskId, TaskState};

use super::{Conn, ConnId, Effect, Sched};

impl<D: Clone> Sched<D> {
    /// The floor that applies to a connection, and whether its latest
    /// report is below it.
    pub(super) fn disk_state(&self, c: &Conn) -> (u64, bool) {
        let Some((_, l)) = &c.load else {
            return (self.disk_floor, false);
        };
        let floor = l.disk_floor_bytes.max(self.disk_floor);
        (floor, l.disk_free_bytes.is_some_and(|f| f < floor))
    }

    pub(super) fn locate(&self, task_id: &str) -> Option<(i64, usize)> {
        let ev = TaskId::event_of(task_id)?;
        let seq = *self.by_id.get(ev)?;
        let i = *self.events.get(&seq)?.index.get(task_id)?;
        Some((seq, i))
    }

    /// Where the tasks assigned to `c`, the connection `conn` just removed,
    /// stand, leaving out those given to another connection since.
    pub(super) fn still_held(&self, conn: ConnId, c: &Conn) -> Vec<(i64, usize)> {
        c.assigned
            .keys()
            .filter_map(|task_id| self.locate(task_id))
            .filter(|&(seq, i)| self.events[&seq].tasks[i].conn == Some(conn))
            .collect()
    }

    pub(super) fn assigned_index(&self, conn: ConnId, task_id: &str) -> Option<(i64, usize)> {
        let c = self.conns.get(&conn)?;
        c.assigned.contains_key(task_id).then_some(())?;
        let (seq, i) = self.locate(task_id)?;
        (self.events[&seq].tasks[i].conn == Some(conn)).then_some((seq, i))
    }

    /// Move a task to `to`, keeping the counts and the waiting index right;
    /// the run record to finish the change.
    pub(super) fn set_state(&mut self, seq: i64, i: usize, to: TaskState) -> &mut RunRecord {
        let e = self.events.get_mut(&seq).expect("event");
        let t = &mut e.tasks[i];
        let from = t.task.run.state;
        if from != to {
            self.queue_changed = true;
            e.counts.moved(from, to);
            let key = (seq, !t.task.priority, i);
            if from == TaskState::Waiting
                && let Some(set) = self.waiting.get_mut(&t.task.spec.platform)
            {
                set.remove(&key);
                if set.is_empty() {
                    self.waiting.remove(&t.task.spec.platform);
                }
            }
            if to == TaskState::Waiting {
                self.waiting
                    .entry(t.task.spec.platform.clone())
                    .or_default()
                    .insert(key);
            }
            t.task.run.state = to;
        }
        &mut t.task.run
    }

    /// Back to waiting, off its connection.
    pub(super) fn requeue(&mut self, seq: i64, i: usize) -> &mut RunRecord {
        self.events.get_mut(&seq).expect("event").tasks[i].conn = None;
        self.set_state(seq, i, TaskState::Waiting)
    }

    pub(super) fn hand_back(&mut self, seq: i64, i: usize, why: &str) {
        let run = self.requeue(seq, i);
        run.started = None;
        run.attempt = (run.attempt - 1).max(0);
        run.reason = Some(format!("requeued: {why}"));
    }

    pub(super) fn infra_failure(&mut self, now: i64, seq: i64, i: usize, max: i64, what: &str) {
        let t = &mut self.events.get_mut(&seq).expect("event").tasks[i];
        t.conn = None;
        let failures = t.task.run.infra_failures + 1;
        t.task.run.infra_failures = failures;
        if failures >= max {
            let run = self.set_state(seq, i, TaskState::Failed);
            run.exit_code = None;
            run.ended = Some(now);
            run.reason = Some(format!(
                "infrastructure failure, not a build failure: {what}; gave up after {failures} infrastructure failures"
            ));
        } else {
            let run = self.set_state(seq, i, TaskState::Waiting);
            run.started = None;
            run.reason = Some(format!(
                "requeued after infrastructure failure {failures} of {max}: {what}"
            ));
        }
    }

    pub(super) fn persist(&mut self, seq: i64, i: usize) {
        let e = &self.events[&seq];
        let t = &e.tasks[i].task;
        self.out.push(Effect::Persist {
            db: e.db.clone(),
            task: t.id.clone(),
            run: t.run.clone(),
        });
    }

    /// Recompute an event's state; emit it when changed; drop terminal
    /// events from memory.
    pub(super) fn refresh(&mut self, seq: i64) {
        let Some(e) = self.events.get_mut(&seq) else {
            return;
        };
        let st = EventState::of(&e.counts);
        if st != e.event.state {
            e.event.state = st;
            self.out.push(Effect::EventState {
                event: e.event.id.clone(),
                state: st,
            });
        }
        if st.is_terminal() {
            let id = e.event.id.clone();
            self.events.remove(&seq);
            self.by_id.remove(&id);
            self.queue_changed = true;
        }
    }

    /// Free the task's slot on `conn`; returns the slot index.
    pub(super) fn release(&mut self, conn: ConnId, task_id: &str) -> Option<usize> {
        let c = self.conns.get_mut(&conn)?;
        let si = c.assigned.remove(task_id)?;
        c.slots[si].running.remove(task_id);
        self.fleet_changed = true;
        Some(si)
    }

    /// Tell the task's builder to stop it; returns that connection.
    pub(super) fn stop_on_builder(&mut self, seq: i64, i: usize, reason: &str) -> Option<ConnId> {
        let t = &mut self.events.get_mut(&seq).expect("event").tasks[i];
        let conn = t.conn.take()?;
        t.accepted = false;
        let id = t.task.id.clone();
        self.release(conn, &id);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.cancelled.insert(id.clone());
            self.out.push(Effect::Send {
                conn,
                msg: ServerMessage::Cancel {
                    task_id: id.to_string(),
                    reason: reason.to_string(),
                },
            });
        }
        Some(conn)
    }
}
