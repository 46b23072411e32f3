//! Event-driven scheduler.
//!
//! All non-terminal events and their tasks are held in memory ([`Sched`]);
//! the event databases are the source of truth and every state change is
//! written there before it becomes visible. Dispatch runs when something
//! changes (push, builder hello, task end, reject, builder capacity report,
//! requeue, grace expiry), never on a polling timer.
//!
//! Rules:
//! * A task runs wholly on one builder instance (one slot of one offered
//!   platform of one connection); there is no step migration.
//! * A task's `platform` (request) matches an offered platform by
//!   [`sai_core::platform::tuple_matches`].
//! * Order: older events first; inside an event, tasks whose configuration
//!   failed on that platform in the previous event of the same project and
//!   ref first, then saifile order.
//! * A lost builder (closed or silent connection) or a builder-reported
//!   infrastructure error puts the task back to `waiting` and counts an
//!   infrastructure failure; at `max_infra_attempts` the task fails with a
//!   reason saying so.
//! * A task a builder hands back because it is going away by operator
//!   request (`handed_back`) goes back to `waiting` at once without counting
//!   an attempt or an infrastructure failure.
//! * A declined task is not offered to the same connection again until one
//!   of that connection's tasks ends or it reports free capacity
//!   (`capacity`) on the platform it was declined on.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use sai_core::platform::tuple_matches;
use sai_core::protocol::{PlatformCapacity, PlatformOffer, ServerMessage, TaskOffer, TaskResult};
use tokio::sync::mpsc::UnboundedSender;

use crate::store::{EventDb, EventRow, Store, TaskRow, TaskUpdate, now_ms};

/// Identifies one builder websocket connection.
pub type ConnId = u64;

/// What a connection's writer should send.
#[derive(Debug)]
pub enum Outgoing {
    /// A protocol message.
    Msg(ServerMessage),
    /// Return flow-control credit (sent as [`ServerMessage::Credit`]).
    Credit(u64),
    /// Close with code and reason.
    Close(u16, String),
}

/// Task states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// Not yet offered (or requeued).
    Waiting,
    /// Offered to or running on a builder.
    Running,
    /// All steps passed.
    Success,
    /// A step failed, or too many infrastructure failures.
    Failed,
    /// Cancelled by an operator.
    Cancelled,
}

impl TaskState {
    /// Lower-case name used in the database and the API.
    pub fn name(self) -> &'static str {
        match self {
            TaskState::Waiting => "waiting",
            TaskState::Running => "running",
            TaskState::Success => "success",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
        }
    }
    fn parse(s: &str) -> TaskState {
        match s {
            "running" => TaskState::Running,
            "success" => TaskState::Success,
            "failed" => TaskState::Failed,
            "cancelled" => TaskState::Cancelled,
            _ => TaskState::Waiting,
        }
    }
    /// Success, failed or cancelled.
    pub fn terminal(self) -> bool {
        matches!(
            self,
            TaskState::Success | TaskState::Failed | TaskState::Cancelled
        )
    }
}

/// Event state from its task states.
pub fn event_state<I: IntoIterator<Item = TaskState>>(states: I) -> &'static str {
    let (mut open, mut started, mut failed, mut cancelled) = (0, 0, 0, 0);
    for s in states {
        match s {
            TaskState::Waiting => open += 1,
            TaskState::Running => {
                open += 1;
                started += 1
            }
            TaskState::Success => started += 1,
            TaskState::Failed => failed += 1,
            TaskState::Cancelled => cancelled += 1,
        }
    }
    if open == 0 {
        if failed > 0 {
            "failed"
        } else if cancelled > 0 {
            "cancelled"
        } else {
            "success"
        }
    } else if failed > 0 {
        "running-with-failures"
    } else if started > 0 || cancelled > 0 {
        "running"
    } else {
        "waiting"
    }
}

struct TaskRt {
    row: TaskRow,
    state: TaskState,
    conn: Option<ConnId>,
}

impl TaskRt {
    fn update(&self) -> TaskUpdate {
        TaskUpdate {
            state: self.state.name().to_string(),
            builder: self.row.builder.clone(),
            exit_code: self.row.exit_code,
            failed_step: self.row.failed_step,
            reason: self.row.reason.clone(),
            attempt: self.row.attempt,
            infra_failures: self.row.infra_failures,
            build_step: self.row.build_step,
            started: self.row.started,
            ended: self.row.ended,
        }
    }
}

struct EventRt {
    row: EventRow,
    db: Arc<EventDb>,
    tasks: Vec<TaskRt>,
    index: HashMap<String, usize>,
    ready_at: Instant,
}

struct Slot {
    offer: PlatformOffer,
    running: HashSet<String>,
}

struct Conn {
    name: String,
    peer: Option<String>,
    software: String,
    slots: Vec<Slot>,
    tx: UnboundedSender<Outgoing>,
    assigned: HashMap<String, usize>,
    /// Tasks declined (or failed) here, with the slot they were offered in.
    rejected: HashMap<String, usize>,
    cancelled: HashSet<String>,
    since: i64,
}

/// What a task id means on a connection.
pub enum Lookup {
    /// Assigned to this connection: its event database and project.
    Assigned(Arc<EventDb>, String),
    /// Was assigned but cancelled/reset by the server: drop silently.
    Cancelled,
    /// Not this connection's task.
    Unknown,
}

/// A connected builder, for the API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuilderView {
    /// Builder name.
    pub name: String,
    /// Connected now.
    pub online: bool,
    /// Peer address.
    pub peer: Option<String>,
    /// Builder software.
    pub software: String,
    /// Offered platforms with their use.
    pub platforms: Vec<PlatformView>,
    /// Unix ms of connection (online) or last seen.
    pub since: i64,
}

/// One offered platform, for the API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlatformView {
    /// Platform tuple.
    pub name: String,
    /// Slots.
    pub instances: u32,
    /// Tasks running in its slots.
    pub running: Vec<String>,
}

/// The scheduler state.
pub struct Sched {
    events: BTreeMap<i64, EventRt>,
    by_id: HashMap<String, i64>,
    conns: BTreeMap<ConnId, Conn>,
    next_conn: ConnId,
    max_infra: u32,
    feed: Option<std::sync::Arc<crate::changes::ChangeFeed>>,
}

/// Result of an operator action on a task.
#[derive(Debug, PartialEq, Eq)]
pub enum OpResult {
    /// Done.
    Done,
    /// Not possible in the current state.
    Conflict(String),
}

impl Sched {
    /// An empty scheduler.
    pub fn new(max_infra: u32) -> Sched {
        Sched {
            events: BTreeMap::new(),
            by_id: HashMap::new(),
            conns: BTreeMap::new(),
            next_conn: 1,
            max_infra,
            feed: None,
        }
    }

    /// Publish task and event state changes to `feed`.
    pub fn set_feed(&mut self, feed: std::sync::Arc<crate::changes::ChangeFeed>) {
        self.feed = Some(feed);
    }

    /// Take an event (new, or loaded at startup / for a rebuild) into memory.
    /// Tasks left `running` by a previous server process go back to `waiting`.
    /// With `keep`, the event stays in memory even if all its tasks are
    /// terminal (the caller is about to reset some).
    pub fn add_event(
        &mut self,
        store: &Store,
        row: EventRow,
        db: Arc<EventDb>,
        ready_at: Instant,
        keep: bool,
    ) -> Result<()> {
        if self.by_id.contains_key(&row.id) {
            return Ok(());
        }
        let mut tasks = Vec::new();
        let mut index = HashMap::new();
        for t in db.tasks()? {
            let mut rt = TaskRt {
                state: TaskState::parse(&t.state),
                row: t,
                conn: None,
            };
            if rt.state == TaskState::Running {
                rt.state = TaskState::Waiting;
                rt.row.reason = Some("requeued: server restarted while it ran".into());
                db.update_task(&rt.row.id, &rt.update())?;
            }
            index.insert(rt.row.id.clone(), tasks.len());
            tasks.push(rt);
        }
        let seq = row.seq;
        self.by_id.insert(row.id.clone(), seq);
        self.events.insert(
            seq,
            EventRt {
                row,
                db,
                tasks,
                index,
                ready_at,
            },
        );
        if !keep {
            self.refresh(store, seq);
        }
        Ok(())
    }

    /// Is the event held in memory (not terminal)?
    pub fn has_event(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// Register a builder connection after a valid hello.
    pub fn register(
        &mut self,
        name: String,
        peer: Option<String>,
        software: String,
        platforms: Vec<PlatformOffer>,
        tx: UnboundedSender<Outgoing>,
    ) -> ConnId {
        let id = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(
            id,
            Conn {
                name,
                peer,
                software,
                slots: platforms
                    .into_iter()
                    .map(|offer| Slot {
                        offer,
                        running: HashSet::new(),
                    })
                    .collect(),
                tx,
                assigned: HashMap::new(),
                rejected: HashMap::new(),
                cancelled: HashSet::new(),
                since: now_ms(),
            },
        );
        id
    }

    /// Connected builders.
    pub fn builders(&self) -> Vec<BuilderView> {
        self.conns
            .values()
            .map(|c| BuilderView {
                name: c.name.clone(),
                online: true,
                peer: c.peer.clone(),
                software: c.software.clone(),
                since: c.since,
                platforms: c
                    .slots
                    .iter()
                    .map(|s| {
                        let mut running: Vec<String> = s.running.iter().cloned().collect();
                        running.sort();
                        PlatformView {
                            name: s.offer.name.clone(),
                            instances: s.offer.instances,
                            running,
                        }
                    })
                    .collect(),
            })
            .collect()
    }

    /// "no builder offers <platform>" when no connected builder offers a
    /// platform matching `platform`.
    pub fn waiting_detail(&self, platform: &str) -> Option<String> {
        let offered = self.conns.values().any(|c| {
            c.slots
                .iter()
                .any(|s| tuple_matches(platform, &s.offer.name))
        });
        (!offered).then(|| format!("no builder offers {platform}"))
    }

    /// Check a task id against what is assigned to `conn`.
    pub fn lookup(&self, conn: ConnId, task_id: &str) -> Lookup {
        let Some(c) = self.conns.get(&conn) else {
            return Lookup::Unknown;
        };
        if c.assigned.contains_key(task_id) {
            let ev = &task_id[..sai_core::protocol::EVENT_ID_LEN.min(task_id.len())];
            if let Some(e) = self.by_id.get(ev).and_then(|s| self.events.get(s)) {
                return Lookup::Assigned(e.db.clone(), e.row.project.clone());
            }
        }
        if c.cancelled.contains(task_id) {
            Lookup::Cancelled
        } else {
            Lookup::Unknown
        }
    }

    fn locate(&self, task_id: &str) -> Option<(i64, usize)> {
        let ev = sai_core::protocol::event_of_task(task_id)?;
        let seq = *self.by_id.get(ev)?;
        let i = *self.events.get(&seq)?.index.get(task_id)?;
        Some((seq, i))
    }

    fn persist(&self, seq: i64, i: usize) {
        let e = &self.events[&seq];
        let t = &e.tasks[i];
        if let Err(err) = e.db.update_task(&t.row.id, &t.update()) {
            tracing::error!(task = %t.row.id, cause = %err, "writing task state");
        }
        if let Some(f) = &self.feed {
            f.publish(crate::changes::Change::TaskChanged {
                task: t.row.id.clone(),
                state: t.state.name().to_string(),
            });
        }
    }

    /// Recompute an event's state; store it when changed; drop terminal
    /// events from memory.
    fn refresh(&mut self, store: &Store, seq: i64) {
        let Some(e) = self.events.get_mut(&seq) else {
            return;
        };
        let st = event_state(e.tasks.iter().map(|t| t.state));
        if st != e.row.state {
            if let Err(err) = store.set_event_state(&e.row.id, st) {
                tracing::error!(event = %e.row.id, cause = %err, "writing event state");
                return;
            }
            tracing::info!(event = %e.row.id, state = st, "event state");
            e.row.state = st.to_string();
            if let Some(f) = &self.feed {
                f.publish(crate::changes::Change::EventChanged {
                    event: e.row.id.clone(),
                    state: st.to_string(),
                });
            }
        }
        if matches!(st, "success" | "failed" | "cancelled") {
            let id = e.row.id.clone();
            self.events.remove(&seq);
            self.by_id.remove(&id);
        }
    }

    /// Offer waiting tasks to free builder slots. Returns the earliest
    /// instant a not-yet-ready event becomes ready, if any waits.
    pub fn dispatch(&mut self) -> Option<Instant> {
        let now = Instant::now();
        let mut later: Option<Instant> = None;
        for e in self.events.values() {
            if e.ready_at > now && e.tasks.iter().any(|t| t.state == TaskState::Waiting) {
                later = Some(later.map_or(e.ready_at, |l: Instant| l.min(e.ready_at)));
            }
        }
        let conn_ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for cid in conn_ids {
            let nslots = self.conns[&cid].slots.len();
            for si in 0..nslots {
                loop {
                    let c = &self.conns[&cid];
                    let slot = &c.slots[si];
                    if slot.running.len() >= slot.offer.instances as usize {
                        break;
                    }
                    let Some((seq, i)) = self.pick(c, &slot.offer.name, now) else {
                        break;
                    };
                    self.assign(cid, si, seq, i);
                }
            }
        }
        later
    }

    fn pick(&self, c: &Conn, offer: &str, now: Instant) -> Option<(i64, usize)> {
        for (seq, e) in &self.events {
            if e.ready_at > now {
                continue;
            }
            let best = e
                .tasks
                .iter()
                .enumerate()
                .filter(|(_, t)| {
                    t.state == TaskState::Waiting
                        && !c.rejected.contains_key(&t.row.id)
                        && tuple_matches(&t.row.platform, offer)
                })
                .min_by_key(|(_, t)| (!t.row.priority, t.row.idx));
            if let Some((i, _)) = best {
                return Some((*seq, i));
            }
        }
        None
    }

    fn assign(&mut self, cid: ConnId, si: usize, seq: i64, i: usize) {
        let c = self.conns.get_mut(&cid).expect("conn exists");
        let e = self.events.get_mut(&seq).expect("event exists");
        let t = &mut e.tasks[i];
        t.state = TaskState::Running;
        t.conn = Some(cid);
        t.row.builder = Some(c.name.clone());
        t.row.started = Some(now_ms());
        t.row.ended = None;
        t.row.build_step = 0;
        let offer = TaskOffer {
            task_id: t.row.id.clone(),
            event_id: e.row.id.clone(),
            project: e.row.project.clone(),
            fetch_url: e.row.fetch_url.clone(),
            git_ref: e.row.git_ref.clone(),
            hash: e.row.hash.clone(),
            configuration: t.row.configuration.clone(),
            platform: t.row.platform.clone(),
            offer_platform: c.slots[si].offer.name.clone(),
            steps: t.row.steps.clone(),
            artifacts: t.row.artifacts.clone(),
            packages: t.row.packages.clone(),
            attempt: t.row.attempt as u32 + 1,
        };
        c.slots[si].running.insert(t.row.id.clone());
        c.assigned.insert(t.row.id.clone(), si);
        let _ = c.tx.send(Outgoing::Msg(ServerMessage::Offer {
            task: Box::new(offer),
        }));
        tracing::debug!(task = %t.row.id, builder = %c.name, "offered");
        self.persist(seq, i);
    }

    /// Free the task's slot on `cid`; returns the slot index.
    fn release(&mut self, cid: ConnId, task_id: &str) -> Option<usize> {
        let c = self.conns.get_mut(&cid)?;
        let si = c.assigned.remove(task_id)?;
        c.slots[si].running.remove(task_id);
        Some(si)
    }

    fn assigned_index(&self, cid: ConnId, task_id: &str) -> Option<(i64, usize)> {
        let c = self.conns.get(&cid)?;
        c.assigned.contains_key(task_id).then_some(())?;
        let (seq, i) = self.locate(task_id)?;
        (self.events[&seq].tasks[i].conn == Some(cid)).then_some((seq, i))
    }

    /// The builder accepted an offer.
    pub fn accept(&mut self, cid: ConnId, task_id: &str) -> bool {
        let Some((seq, i)) = self.assigned_index(cid, task_id) else {
            return false;
        };
        let t = &mut self.events.get_mut(&seq).expect("event").tasks[i];
        t.row.attempt += 1;
        t.row.reason = None;
        self.persist(seq, i);
        true
    }

    /// The builder declined an offer: back to waiting, not offered to this
    /// connection again until one of its tasks ends or it reports free
    /// capacity on that platform ([`Sched::capacity`]).
    pub fn reject(&mut self, store: &Store, cid: ConnId, task_id: &str, reason: &str) -> bool {
        let Some((seq, i)) = self.assigned_index(cid, task_id) else {
            return false;
        };
        let si = self.release(cid, task_id);
        if let (Some(c), Some(si)) = (self.conns.get_mut(&cid), si) {
            c.rejected.insert(task_id.to_string(), si);
        }
        let t = &mut self.events.get_mut(&seq).expect("event").tasks[i];
        t.state = TaskState::Waiting;
        t.conn = None;
        t.row.started = None;
        t.row.reason = Some(format!(
            "declined by {}: {reason}",
            t.row.builder.as_deref().unwrap_or("?")
        ));
        self.persist(seq, i);
        self.refresh(store, seq);
        true
    }

    /// The builder reported its free capacity: the tasks it declined on the
    /// platforms with free instances may be offered to it again. Returns
    /// whether anything changed (the caller then dispatches).
    pub fn capacity(&mut self, cid: ConnId, platforms: &[PlatformCapacity]) -> bool {
        let Some(c) = self.conns.get_mut(&cid) else {
            return false;
        };
        let free: HashSet<usize> = c
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                platforms
                    .iter()
                    .any(|p| p.name == s.offer.name && p.free > 0)
            })
            .map(|(si, _)| si)
            .collect();
        let before = c.rejected.len();
        c.rejected.retain(|_, si| !free.contains(si));
        // Free room is worth a dispatch even with nothing declined.
        before != c.rejected.len() || !free.is_empty()
    }

    /// A step started.
    pub fn step_started(&mut self, cid: ConnId, task_id: &str, step: u32) -> bool {
        let Some((seq, i)) = self.assigned_index(cid, task_id) else {
            return false;
        };
        let e = self.events.get_mut(&seq).expect("event");
        let t = &mut e.tasks[i];
        t.row.build_step = step as i64 + 1;
        if let Err(err) = e.db.set_build_step(&t.row.id, t.row.build_step) {
            tracing::error!(cause = %err, "writing build step");
        }
        true
    }

    /// A task ended on its builder.
    pub fn finished(
        &mut self,
        store: &Store,
        cid: ConnId,
        task_id: &str,
        result: &TaskResult,
    ) -> bool {
        let Some((seq, i)) = self.assigned_index(cid, task_id) else {
            return false;
        };
        let si = self.release(cid, task_id);
        let max = self.max_infra as i64;
        if let Some(c) = self.conns.get_mut(&cid) {
            c.rejected.clear();
        }
        let t = &mut self.events.get_mut(&seq).expect("event").tasks[i];
        t.conn = None;
        let builder = t.row.builder.clone().unwrap_or_default();
        match result {
            TaskResult::Success => {
                t.state = TaskState::Success;
                t.row.exit_code = Some(0);
                t.row.reason = None;
            }
            TaskResult::Failed { exit_code, step } => {
                t.state = TaskState::Failed;
                t.row.exit_code = Some(*exit_code as i64);
                t.row.failed_step = Some(*step as i64);
                t.row.reason = Some(format!("step {} exited with {exit_code}", step + 1));
            }
            TaskResult::Cancelled => {
                t.state = TaskState::Cancelled;
                t.row.reason = Some(format!("cancelled by builder {builder}"));
            }
            TaskResult::InfraError { reason } => {
                Self::infra_failure(t, max, &format!("builder {builder} reported: {reason}"));
                if let (Some(c), Some(si)) = (self.conns.get_mut(&cid), si) {
                    c.rejected.insert(task_id.to_string(), si);
                }
            }
            TaskResult::HandedBack { reason } => {
                // Not the task's fault nor an infrastructure failure: the
                // builder is going away on purpose. The try does not count.
                t.state = TaskState::Waiting;
                t.row.started = None;
                t.row.attempt = (t.row.attempt - 1).max(0);
                t.row.reason = Some(format!(
                    "requeued: handed back by builder {builder}: {reason}"
                ));
                if let (Some(c), Some(si)) = (self.conns.get_mut(&cid), si) {
                    c.rejected.insert(task_id.to_string(), si);
                }
            }
        }
        let t = &mut self.events.get_mut(&seq).expect("event").tasks[i];
        if t.state.terminal() {
            t.row.ended = Some(now_ms());
        }
        self.persist(seq, i);
        self.refresh(store, seq);
        true
    }

    fn infra_failure(t: &mut TaskRt, max: i64, what: &str) {
        t.row.infra_failures += 1;
        t.conn = None;
        if t.row.infra_failures >= max {
            t.state = TaskState::Failed;
            t.row.exit_code = None;
            t.row.ended = Some(now_ms());
            t.row.reason = Some(format!(
                "infrastructure failure, not a build failure: {what}; gave up after {} infrastructure failures",
                t.row.infra_failures
            ));
        } else {
            t.state = TaskState::Waiting;
            t.row.started = None;
            t.row.reason = Some(format!(
                "requeued after infrastructure failure {} of {max}: {what}",
                t.row.infra_failures
            ));
        }
    }

    /// A connection ended: requeue (or fail) what it was running.
    pub fn conn_lost(&mut self, store: &Store, cid: ConnId, why: &str) {
        let Some(c) = self.conns.remove(&cid) else {
            return;
        };
        let max = self.max_infra as i64;
        let mut touched = Vec::new();
        for task_id in c.assigned.keys() {
            if let Some((seq, i)) = self.locate(task_id) {
                let t = &mut self.events.get_mut(&seq).expect("event").tasks[i];
                if t.conn == Some(cid) {
                    Self::infra_failure(t, max, &format!("builder {} {why}", c.name));
                    self.persist(seq, i);
                    touched.push(seq);
                }
            }
        }
        touched.sort();
        touched.dedup();
        for seq in touched {
            self.refresh(store, seq);
        }
    }

    fn stop_on_builder(&mut self, seq: i64, i: usize, reason: &str) {
        let t = &mut self.events.get_mut(&seq).expect("event").tasks[i];
        if let Some(cid) = t.conn.take() {
            let id = t.row.id.clone();
            self.release(cid, &id);
            if let Some(c) = self.conns.get_mut(&cid) {
                c.cancelled.insert(id.clone());
                let _ = c.tx.send(Outgoing::Msg(ServerMessage::Cancel {
                    task_id: id,
                    reason: reason.to_string(),
                }));
            }
        }
    }

    /// Operator cancel of one task.
    pub fn cancel_task(&mut self, store: &Store, task_id: &str, by: &str) -> OpResult {
        let Some((seq, i)) = self.locate(task_id) else {
            return OpResult::Conflict("task is not waiting or running".into());
        };
        let st = self.events[&seq].tasks[i].state;
        if st.terminal() {
            return OpResult::Conflict(format!("task is already {}", st.name()));
        }
        self.stop_on_builder(seq, i, &format!("cancelled by {by}"));
        let t = &mut self.events.get_mut(&seq).expect("event").tasks[i];
        t.state = TaskState::Cancelled;
        t.row.ended = Some(now_ms());
        t.row.reason = Some(format!("cancelled by {by}"));
        self.persist(seq, i);
        self.refresh(store, seq);
        OpResult::Done
    }

    /// Reset tasks to waiting (rebuild). `ids = None` resets every task.
    /// Returns the reset task ids (their logs and artifacts must be cleared).
    pub fn reset_tasks(
        &mut self,
        store: &Store,
        event_id: &str,
        ids: Option<&[String]>,
        by: &str,
    ) -> Vec<String> {
        let Some(&seq) = self.by_id.get(event_id) else {
            return Vec::new();
        };
        let n = self.events[&seq].tasks.len();
        let mut out = Vec::new();
        for i in 0..n {
            let id = self.events[&seq].tasks[i].row.id.clone();
            if ids.is_some_and(|ids| !ids.contains(&id)) {
                continue;
            }
            self.stop_on_builder(seq, i, &format!("rebuild requested by {by}"));
            let e = self.events.get_mut(&seq).expect("event");
            e.ready_at = Instant::now();
            let t = &mut e.tasks[i];
            t.state = TaskState::Waiting;
            t.row.builder = None;
            t.row.exit_code = None;
            t.row.failed_step = None;
            t.row.reason = Some(format!("rebuild requested by {by}"));
            t.row.attempt = 0;
            t.row.infra_failures = 0;
            t.row.build_step = 0;
            t.row.started = None;
            t.row.ended = None;
            self.persist(seq, i);
            out.push(id);
        }
        self.refresh(store, seq);
        out
    }

    /// Forget an event (being deleted): stop its running tasks.
    pub fn drop_event(&mut self, event_id: &str) {
        let Some(seq) = self.by_id.get(event_id).copied() else {
            return;
        };
        let n = self.events[&seq].tasks.len();
        for i in 0..n {
            self.stop_on_builder(seq, i, "event deleted");
        }
        self.events.remove(&seq);
        self.by_id.remove(event_id);
    }

    /// Close every connection (shutdown).
    pub fn close_all(&self, code: u16, reason: &str) {
        for c in self.conns.values() {
            let _ = c.tx.send(Outgoing::Close(code, reason.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskState::*;

    #[test]
    fn event_states() {
        assert_eq!(event_state([]), "success");
        assert_eq!(event_state([Waiting, Waiting]), "waiting");
        assert_eq!(event_state([Waiting, Running]), "running");
        assert_eq!(event_state([Success, Waiting]), "running");
        assert_eq!(event_state([Failed, Running]), "running-with-failures");
        assert_eq!(event_state([Success, Success]), "success");
        assert_eq!(event_state([Success, Failed]), "failed");
        assert_eq!(event_state([Success, Cancelled]), "cancelled");
        assert_eq!(event_state([Failed, Cancelled]), "failed");
    }
}
