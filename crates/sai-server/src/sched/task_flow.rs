//! A task's way through the scheduler: events taken in, offers accepted,
//! declined, progressing and finished, and what the clock does (offer
//! deadlines, unclaimed tasks after a restart, dispatch grace).

use std::collections::{BTreeSet, HashMap};

use sai_core::protocol::TaskResult;
use sai_core::task::{Event, StateCounts, Task, TaskId, TaskState};

use super::{ConnId, Effect, EventRt, Sched, TaskRt};

impl<D: Clone> Sched<D> {
    /// Take an event (new, or loaded at startup / for a rebuild) into memory;
    /// its tasks are offered from `ready_at`. Tasks left `running` by a
    /// previous server process go back to `waiting`. With `keep`, the event
    /// stays in memory even if all its tasks are terminal (the caller is
    /// about to reset some).
    pub fn add_event(
        &mut self,
        now: i64,
        event: Event,
        db: D,
        tasks: Vec<Task>,
        ready_at: i64,
        keep: bool,
    ) {
        if self.by_id.contains_key(&event.id) {
            return;
        }
        let seq = event.seq;
        let mut rt = EventRt {
            event,
            db,
            tasks: Vec::with_capacity(tasks.len()),
            index: HashMap::with_capacity(tasks.len()),
            ready_at,
            counts: StateCounts::default(),
        };
        for mut task in tasks {
            let builder = task
                .run
                .builder
                .clone()
                .filter(|_| self.restart_grace_ms > 0);
            if task.run.state == TaskState::Running
                && let Some(builder) = builder
            {
                // Its builder may still be running it: wait for its claim.
                let until = now.saturating_add(self.restart_grace_ms);
                self.orphans.insert(task.id.clone(), (builder, until));
            } else if task.run.state == TaskState::Running {
                task.run.state = TaskState::Waiting;
                task.run.reason = Some("requeued: server restarted while it ran".into());
                self.out.push(Effect::Persist {
                    db: rt.db.clone(),
                    task: task.id.clone(),
                    run: task.run.clone(),
                });
            }
            let i = rt.tasks.len();
            rt.counts.add(task.run.state);
            if task.run.state == TaskState::Waiting {
                self.waiting
                    .entry(task.spec.platform.clone())
                    .or_default()
                    .insert((seq, !task.priority, i));
            }
            rt.index.insert(task.id.clone(), i);
            rt.tasks.push(TaskRt {
                task,
                conn: None,
                accepted: false,
                deadline: 0,
            });
        }
        let platforms: BTreeSet<String> = rt
            .tasks
            .iter()
            .filter(|t| t.task.run.state == TaskState::Waiting)
            .map(|t| t.task.spec.platform.clone())
            .collect();
        self.by_id.insert(rt.event.id.clone(), seq);
        self.events.insert(seq, rt);
        self.queue_changed = true;
        if !keep {
            self.refresh(seq);
        }
        self.dispatch_platforms(now, &platforms);
    }

    /// The builder accepted an offer. False when the task is not its.
    pub fn accept(&mut self, conn: ConnId, task_id: &str) -> bool {
        self.update_assigned(conn, task_id, |t| {
            t.accepted = true;
            t.task.run.attempt += 1;
            t.task.run.reason = None;
        })
    }

    /// Change a task assigned to `conn` and persist it; false when it is
    /// not assigned there.
    pub(super) fn update_assigned(
        &mut self,
        conn: ConnId,
        task_id: &str,
        f: impl FnOnce(&mut TaskRt),
    ) -> bool {
        let Some((seq, i)) = self.assigned_index(conn, task_id) else {
            return false;
        };
        f(&mut self.events.get_mut(&seq).expect("event").tasks[i]);
        self.persist(seq, i);
        true
    }

    /// The builder declined an offer: back to waiting, not offered to this
    /// connection again until one of its tasks ends or it reports free
    /// capacity on that platform ([`Sched::capacity`]).
    pub fn reject(&mut self, now: i64, conn: ConnId, task_id: &str, reason: &str) -> bool {
        let Some((seq, i)) = self.assigned_index(conn, task_id) else {
            return false;
        };
        let si = self.release(conn, task_id);
        if let (Some(c), Some(si)) = (self.conns.get_mut(&conn), si) {
            c.rejected
                .insert(TaskId::parse(task_id).expect("assigned id"), si);
        }
        let run = self.requeue(seq, i);
        run.started = None;
        run.reason = Some(format!(
            "declined by {}: {reason}",
            run.builder.as_deref().unwrap_or("?")
        ));
        self.persist(seq, i);
        self.refresh(seq);
        let platform = self.events[&seq].tasks[i].task.spec.platform.clone();
        self.dispatch_platforms(now, &BTreeSet::from([platform]));
        true
    }

    /// A step started.
    pub fn step_started(&mut self, conn: ConnId, task_id: &str, step: u32) -> bool {
        self.update_assigned(conn, task_id, |t| t.task.run.build_step = step as i64 + 1)
    }

    /// A task ended on its builder.
    pub fn finished(&mut self, now: i64, conn: ConnId, task_id: &str, result: &TaskResult) -> bool {
        let Some((seq, i)) = self.assigned_index(conn, task_id) else {
            return false;
        };
        let si = self.release(conn, task_id);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.rejected.clear();
        }
        let max = self.max_infra as i64;
        let id = self.events[&seq].tasks[i].task.id.clone();
        let builder = self.events[&seq].tasks[i]
            .task
            .run
            .builder
            .clone()
            .unwrap_or_default();
        let mut not_here = false;
        match result {
            TaskResult::Success => {
                let run = self.set_state(seq, i, TaskState::Success);
                run.exit_code = Some(0);
                run.reason = None;
            }
            TaskResult::Failed { exit_code, step } => {
                let run = self.set_state(seq, i, TaskState::Failed);
                run.exit_code = Some(*exit_code as i64);
                run.failed_step = Some(*step as i64);
                run.reason = Some(format!("step {} exited with {exit_code}", step + 1));
            }
            TaskResult::Cancelled => {
                let run = self.set_state(seq, i, TaskState::Cancelled);
                run.reason = Some(format!("cancelled by builder {builder}"));
            }
            TaskResult::InfraError { reason } => {
                self.infra_failure(
                    now,
                    seq,
                    i,
                    max,
                    &format!("builder {builder} reported: {reason}"),
                );
                not_here = true;
            }
            TaskResult::HandedBack { reason } => {
                // Not the task's fault nor an infrastructure failure: the
                // builder is going away on purpose. The try does not count.
                self.hand_back(
                    seq,
                    i,
                    &format!("handed back by builder {builder}: {reason}"),
                );
                not_here = true;
            }
        }
        if not_here && let (Some(c), Some(si)) = (self.conns.get_mut(&conn), si) {
            c.rejected.insert(id, si);
        }
        let run = &mut self.events.get_mut(&seq).expect("event").tasks[i].task.run;
        if run.state.is_terminal() {
            run.ended = Some(now);
        }
        let platform = self.events[&seq].tasks[i].task.spec.platform.clone();
        self.persist(seq, i);
        self.refresh(seq);
        self.dispatch_conn(now, conn);
        if not_here {
            self.dispatch_platforms(now, &BTreeSet::from([platform]));
        }
        true
    }

    /// Time passed: take back tasks past their deadline, offer what
    /// became ready.
    pub fn tick(&mut self, now: i64) {
        self.expire_deadlines(now);
        self.expire_orphans(now);
        self.dispatch_all(now);
    }

    /// Requeue, without counting, the tasks found `running` at start-up
    /// whose builder did not claim them within the restart grace.
    pub(super) fn expire_orphans(&mut self, now: i64) {
        let due: Vec<(TaskId, String)> = self
            .orphans
            .iter()
            .filter(|(_, (_, until))| *until <= now)
            .map(|(id, (b, _))| (id.clone(), b.clone()))
            .collect();
        let mut touched = BTreeSet::new();
        let mut platforms = BTreeSet::new();
        for (id, builder) in due {
            self.orphans.remove(&id);
            let Some((seq, i)) = self.locate(&id) else {
                continue;
            };
            let t = &self.events[&seq].tasks[i];
            if t.task.run.state != TaskState::Running || t.conn.is_some() {
                continue;
            }
            let secs = self.restart_grace_ms / 1000;
            let run = self.requeue(seq, i);
            run.started = None;
            run.reason = Some(format!(
                "requeued: server restarted while it ran and builder {builder} did not claim it back within {secs} s"
            ));
            self.persist(seq, i);
            touched.insert(seq);
            platforms.insert(self.events[&seq].tasks[i].task.spec.platform.clone());
        }
        for seq in touched {
            self.refresh(seq);
        }
        self.dispatch_platforms(now, &platforms);
    }

    pub(super) fn expire_deadlines(&mut self, now: i64) {
        let max = self.max_infra as i64;
        let secs = self.task_deadline_ms.unwrap_or(0) / 1000;
        let mut touched = BTreeSet::new();
        while let Some((at, id)) = self.deadlines.first().cloned() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            let Some((seq, i)) = self.locate(&id) else {
                continue;
            };
            let t = &self.events[&seq].tasks[i];
            let Some(conn) = t.conn.filter(|_| t.deadline == at) else {
                continue;
            };
            let builder = t.task.run.builder.clone().unwrap_or_default();
            let what =
                format!("builder {builder} gave no result within the task deadline of {secs} s");
            let si = self
                .conns
                .get(&conn)
                .and_then(|c| c.assigned.get(&id).copied());
            self.stop_on_builder(seq, i, &what);
            if let (Some(c), Some(si)) = (self.conns.get_mut(&conn), si) {
                c.rejected.insert(id.clone(), si);
            }
            self.infra_failure(now, seq, i, max, &what);
            self.persist(seq, i);
            touched.insert(seq);
        }
        for seq in touched {
            self.refresh(seq);
        }
    }
}
