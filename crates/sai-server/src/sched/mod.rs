//! The scheduler: a pure state machine.
//!
//! It holds every non-terminal event and its tasks, and every connected
//! builder. Its inputs are method calls, each given the current time (unix
//! ms): an event added, a builder's hello / capacity / shutting-down / gone,
//! a task accepted / started a step / finished / declined, operator actions,
//! and [`Sched::tick`]. Its outputs are [`Effect`]s, collected with
//! [`Sched::take_effects`]: persist a run record, set an event's state, send
//! a message to a connection, close or release a connection. The server
//! applies them in order (`crate::state::Server::sched_do`); nothing here does I/O,
//! reads a clock or knows the store. `D` is the server's handle on an
//! event's database, carried so that effects name where to write.
//!
//! Rules (each has a unit test in `tests.rs`):
//! * A task runs wholly on one builder instance (one slot of one offered
//!   platform of one connection); there is no step migration.
//! * A task's `platform` (request) matches an offered platform by
//!   [`sai_core::platform::tuple_matches`]. Waiting tasks are indexed by
//!   their requested platform, so dispatch for a slot visits only the
//!   platforms that match its offer: a backlog no builder can run costs
//!   nothing when builders come and go.
//! * Order: older events first; inside an event, tasks whose configuration
//!   failed on that platform in the previous event of the same project and
//!   ref (`priority`) first, then saifile order.
//! * A new event's tasks are offered only after its dispatch grace
//!   (`ready_at`); [`Sched::next_wake`] says when to [`Sched::tick`].
//! * A lost builder (closed or silent connection) or a builder-reported
//!   infrastructure error puts an accepted task back to `waiting` and
//!   counts an infrastructure failure; at `max_infra_attempts` the task
//!   fails with a reason saying so. The connection's state is released.
//! * An offer that was never accepted costs nothing when its link ends,
//!   unless the server closed the link because the builder broke the
//!   protocol ([`GoneCause::Refused`]).
//! * A task a builder hands back because it is going away by operator
//!   request (`handed_back`) goes back to `waiting` at once without counting
//!   an attempt or an infrastructure failure. A link that said it is
//!   shutting down ([`Sched::shutting_down`]) gets no more offers, and if it
//!   ends before its hand-backs arrive, its tasks are requeued the same way.
//!   So are the tasks of links the server itself closes on shutdown.
//! * A declined task is not offered to the same connection again until one
//!   of that connection's tasks ends or it reports free capacity
//!   (`capacity`) on the platform it was declined on.
//! * A waiting task no connected builder offers a platform for, or whose
//!   matching instances are all busy, says so ([`Fleet::waiting_detail`]).
//! * A builder whose latest load report ([`Sched::builder_load`]) has less
//!   disk free than its floor (the larger of its own and the server's
//!   [`Sched::with_disk_floor`]) is offered nothing until a report says
//!   otherwise; a task only such builders could run says so in its
//!   waiting detail.
//! * [`Sched::take_queue`] publishes the waiting queue's depth and oldest
//!   task per platform and the tasks per state, for `/metrics`.
//! * A builder name has one connection: a hello with the name of a
//!   connected builder replaces the older connection, which is closed
//!   ([`CLOSE_REPLACED`]); its tasks go back to `waiting` without counting
//!   an attempt or an infrastructure failure.
//! * A task has a deadline ([`Sched::set_task_deadline`]) from its offer:
//!   a builder that holds it longer without a result (silent while its
//!   connection stays up) is told to cancel it, and the task counts an
//!   infrastructure failure and is not offered to that connection again
//!   until it reports free capacity.
//! * Restart: tasks left `running` by a previous server process stay
//!   `running` for their builder for the restart grace
//!   ([`Sched::with_restart_grace`]): the builder kept them going and claims
//!   them in its next hello ([`Sched::claim`]), then reports them once. A
//!   task not claimed within the grace goes back to `waiting` without
//!   counting an infrastructure failure. The server's own shutdown leaves
//!   accepted tasks `running` in the store for that reason.

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use sai_core::api::{Builder, BuilderLoad as ApiLoad, BuilderPlatform};
use sai_core::platform::tuple_matches;
use sai_core::protocol::{
    BuilderLoad, CLOSE_REPLACED, PlatformCapacity, PlatformOffer, ServerMessage, TaskOffer,
    TaskResult,
};
use sai_core::task::{Event, EventId, EventState, RunRecord, StateCounts, Task, TaskId, TaskState};

/// Identifies one builder websocket connection.
pub type ConnId = u64;

/// Something the server must do because the scheduler's state changed.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect<D> {
    /// Write this task's run record to its event database.
    Persist {
        /// The event's database.
        db: D,
        /// The task.
        task: TaskId,
        /// Its whole run record.
        run: RunRecord,
    },
    /// Write an event's new state to the main database.
    EventState {
        /// The event.
        event: EventId,
        /// Its new state.
        state: EventState,
    },
    /// Send a protocol message on a connection.
    Send {
        /// The connection.
        conn: ConnId,
        /// The message.
        msg: ServerMessage,
    },
    /// Close a connection.
    Close {
        /// The connection.
        conn: ConnId,
        /// Websocket close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// The connection is gone: drop everything held for it.
    Release {
        /// The connection.
        conn: ConnId,
    },
}

/// Why a builder connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GoneCause {
    /// The builder closed it, or the TCP connection dropped.
    Disconnected,
    /// Nothing arrived within the dead timeout.
    Silent {
        /// The timeout.
        ms: u64,
    },
    /// Writing to it failed.
    WriteFailed(String),
    /// Reading from it failed.
    ReadFailed(String),
    /// The server closed it because the builder broke the protocol.
    Refused(String),
    /// The server is shutting down.
    ServerShutdown,
}

impl fmt::Display for GoneCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GoneCause::Disconnected => write!(f, "disconnected"),
            GoneCause::Silent { ms } => write!(f, "went silent for {ms} ms"),
            GoneCause::WriteFailed(e) => write!(f, "connection failed: {e}"),
            GoneCause::ReadFailed(e) => write!(f, "connection error: {e}"),
            GoneCause::Refused(why) => write!(f, "was disconnected by the server: {why}"),
            GoneCause::ServerShutdown => write!(f, "was disconnected: the server shut down"),
        }
    }
}

/// What a task id means on a connection.
pub enum Lookup<D> {
    /// Assigned to this connection: its event database and project.
    Assigned(D, String),
    /// Was assigned but cancelled/reset by the server: drop silently.
    Cancelled,
    /// Not this connection's task.
    Unknown,
}

/// What a builder connection says about itself when it joins.
pub struct Hello {
    /// The builder's name (from its token).
    pub name: String,
    /// Its address, as the server saw it.
    pub peer: Option<String>,
    /// Its software and version.
    pub software: String,
    /// What it offers.
    pub platforms: Vec<PlatformOffer>,
}

/// A connection that said hello and is not offered work yet
/// ([`Sched::join`]); holds the platforms of tasks requeued from the
/// connection it replaced.
#[must_use]
pub struct Joined(BTreeSet<String>);

/// Result of an operator action on a task that cannot be done now.
#[derive(Debug, PartialEq, Eq)]
pub struct Conflict(pub String);

/// A snapshot of the connected builders, published after every change so
/// that API readers never wait for the scheduler.
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    /// Connected builders, in connection order.
    pub builders: Vec<Builder>,
}

impl Fleet {
    /// Why a task asking for `platform` waits, as far as the builders tell:
    /// "no builder offers `<platform>`" when no connected builder offers a
    /// matching platform; when every one that does is below its disk floor,
    /// which builders and how much they have and need; "all N instances of
    /// `<platform>` busy" when every matching instance runs a task; `None`
    /// when one is free (the task is about to be offered).
    pub fn waiting_detail(&self, platform: &str) -> Option<String> {
        let offering: Vec<&Builder> = self
            .builders
            .iter()
            .filter(|b| b.platforms.iter().any(|p| tuple_matches(platform, &p.name)))
            .collect();
        if offering.is_empty() {
            return Some(format!("no builder offers {platform}"));
        }
        let low: Vec<String> = offering
            .iter()
            .filter_map(|b| {
                let l = b.load.as_ref().filter(|l| l.below_disk_floor)?;
                Some(format!(
                    "{} has {} free in its job directory, below its floor of {}",
                    b.name,
                    human_bytes(l.report.disk_free_bytes.unwrap_or(0)),
                    human_bytes(l.report.disk_floor_bytes)
                ))
            })
            .collect();
        if low.len() == offering.len() {
            return Some(format!(
                "every builder offering {platform} is low on disk: {}",
                low.join("; ")
            ));
        }
        let offers: Vec<&BuilderPlatform> = offering
            .iter()
            .flat_map(|b| b.platforms.iter())
            .filter(|p| tuple_matches(platform, &p.name))
            .collect();
        let slots: u64 = offers.iter().map(|p| u64::from(p.instances)).sum();
        let busy: u64 = offers
            .iter()
            .map(|p| p.running.as_ref().map_or(0, Vec::len) as u64)
            .sum();
        (busy >= slots).then(|| match slots {
            1 => format!("the only instance of {platform} is busy"),
            n => format!("all {n} instances of {platform} busy"),
        })
    }
}

/// A waiting or running task, as [`Sched::open_work`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenWork {
    /// Its event's project.
    pub project: String,
    /// Configuration.
    pub configuration: String,
    /// Requested platform.
    pub platform: String,
    /// Start of the current attempt, when running.
    pub started: Option<i64>,
    /// Belongs to the event asked about.
    pub own: bool,
}

/// Bytes for people: `1.5 GiB`, `300 MiB`, `512 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else if v < 10.0 {
        format!("{v:.1} {}", UNITS[u])
    } else {
        format!("{v:.0} {}", UNITS[u])
    }
}

/// The waiting queue and the tasks of the events held in memory, as
/// published for `/metrics` after every change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueStats {
    /// Per requested platform: waiting tasks and the creation time (unix
    /// ms) of the oldest.
    pub waiting: BTreeMap<String, (usize, i64)>,
    /// Tasks of the events in memory (not yet ended), per state.
    pub tasks: BTreeMap<TaskState, usize>,
    /// Events in memory (waiting or running).
    pub events: usize,
}

/// Order of waiting tasks: event sequence, priority first, saifile order
/// (the index of the task in its event).
type Key = (i64, bool, usize);

struct TaskRt {
    task: Task,
    conn: Option<ConnId>,
    accepted: bool,
    /// When the current offer's deadline passes (unix ms; 0: none).
    deadline: i64,
}

struct EventRt<D> {
    event: Event,
    db: D,
    tasks: Vec<TaskRt>,
    index: HashMap<TaskId, usize>,
    ready_at: i64,
    counts: StateCounts,
}

struct Slot {
    offer: PlatformOffer,
    running: HashSet<TaskId>,
}

struct Conn {
    name: String,
    peer: Option<String>,
    software: String,
    slots: Vec<Slot>,
    assigned: HashMap<TaskId, usize>,
    /// Tasks declined (or failed) here, with the slot they were offered in.
    rejected: HashMap<TaskId, usize>,
    cancelled: HashSet<TaskId>,
    since: i64,
    shutting_down: bool,
    /// Latest load report and when it arrived.
    load: Option<(i64, BuilderLoad)>,
}

/// The scheduler state.
pub struct Sched<D> {
    events: BTreeMap<i64, EventRt<D>>,
    by_id: HashMap<EventId, i64>,
    conns: BTreeMap<ConnId, Conn>,
    /// Waiting tasks by requested platform.
    waiting: BTreeMap<String, BTreeSet<Key>>,
    max_infra: u32,
    /// Longest a task stays with a builder (ms), if limited.
    task_deadline_ms: Option<i64>,
    /// Deadlines of offered tasks; entries of tasks that moved on since are
    /// skipped when they come due.
    deadlines: BTreeSet<(i64, TaskId)>,
    stopping: bool,
    fleet_changed: bool,
    out: Vec<Effect<D>>,
    /// The server's disk floor for builders (bytes).
    disk_floor: u64,
    queue_changed: bool,
    /// How long a task found `running` at start-up waits for its builder
    /// to claim it (ms; 0: requeued at once).
    restart_grace_ms: i64,
    /// Tasks found `running` at start-up, not claimed yet: their builder
    /// and until when they wait for it.
    orphans: BTreeMap<TaskId, (String, i64)>,
}

impl<D: Clone> Sched<D> {
    /// An empty scheduler failing tasks at `max_infra` infrastructure failures.
    pub fn new(max_infra: u32) -> Sched<D> {
        Sched {
            events: BTreeMap::new(),
            by_id: HashMap::new(),
            conns: BTreeMap::new(),
            waiting: BTreeMap::new(),
            max_infra,
            task_deadline_ms: None,
            deadlines: BTreeSet::new(),
            stopping: false,
            fleet_changed: true,
            out: Vec::new(),
            disk_floor: 0,
            queue_changed: true,
            restart_grace_ms: 0,
            orphans: BTreeMap::new(),
        }
    }

    /// Tasks found `running` at start-up wait `ms` for their builder to
    /// claim them before they are requeued (0, the default: at once).
    pub fn with_restart_grace(mut self, ms: u64) -> Sched<D> {
        self.restart_grace_ms = i64::try_from(ms).unwrap_or(i64::MAX);
        self
    }

    /// Builders reporting less disk free than `bytes` get no offers (their
    /// own larger floor applies too).
    pub fn with_disk_floor(mut self, bytes: u64) -> Sched<D> {
        self.disk_floor = bytes;
        self
    }

    /// A new snapshot of the queue when it changed since the last call.
    pub fn take_queue(&mut self) -> Option<QueueStats> {
        if !std::mem::take(&mut self.queue_changed) {
            return None;
        }
        let mut q = QueueStats {
            events: self.events.len(),
            ..QueueStats::default()
        };
        for (platform, set) in &self.waiting {
            let oldest = set
                .iter()
                .map(|&(seq, _, i)| self.events[&seq].tasks[i].task.created)
                .take(64)
                .min()
                .unwrap_or_default();
            q.waiting.insert(platform.clone(), (set.len(), oldest));
        }
        for e in self.events.values() {
            for &st in TaskState::ALL {
                let n = e.counts.get(st);
                if n > 0 {
                    *q.tasks.entry(st).or_default() += n;
                }
            }
        }
        Some(q)
    }

    /// The floor that applies to a connection, and whether its latest
    /// report is below it.
    fn disk_state(&self, c: &Conn) -> (u64, bool) {
        let Some((_, l)) = &c.load else {
            return (self.disk_floor, false);
        };
        let floor = l.disk_floor_bytes.max(self.disk_floor);
        (floor, l.disk_free_bytes.is_some_and(|f| f < floor))
    }

    /// Give every offer a deadline of `ms` (none by default).
    pub fn set_task_deadline(&mut self, ms: Option<i64>) {
        self.task_deadline_ms = ms;
    }

    /// The effects of the inputs so far, in the order they must be applied.
    pub fn take_effects(&mut self) -> Vec<Effect<D>> {
        std::mem::take(&mut self.out)
    }

    /// A new snapshot of the builders when they changed since the last call.
    pub fn take_fleet(&mut self) -> Option<Fleet> {
        if !std::mem::take(&mut self.fleet_changed) {
            return None;
        }
        let builders = self
            .conns
            .values()
            .map(|c| Builder {
                name: c.name.clone(),
                online: true,
                peer: c.peer.clone(),
                software: c.software.clone(),
                since: c.since,
                load: c.load.as_ref().map(|(at, l)| {
                    let (floor, below) = self.disk_state(c);
                    ApiLoad {
                        reported: *at,
                        report: BuilderLoad {
                            disk_floor_bytes: floor,
                            ..l.clone()
                        },
                        below_disk_floor: below,
                    }
                }),
                platforms: c
                    .slots
                    .iter()
                    .map(|s| {
                        let mut running: Vec<String> =
                            s.running.iter().map(|t| t.to_string()).collect();
                        running.sort();
                        BuilderPlatform {
                            name: s.offer.name.clone(),
                            instances: s.offer.instances,
                            running: Some(running),
                        }
                    })
                    .collect(),
            })
            .collect();
        Some(Fleet { builders })
    }

    /// When [`Sched::tick`] must run next: the earliest end of a dispatch
    /// grace of an event with waiting tasks.
    pub fn next_wake(&self, now: i64) -> Option<i64> {
        let grace = self
            .events
            .values()
            .filter(|e| e.ready_at > now && e.counts.get(TaskState::Waiting) > 0)
            .map(|e| e.ready_at)
            .min();
        let deadline = self.deadlines.first().map(|(at, _)| *at);
        let orphan = self.orphans.values().map(|(_, until)| *until).min();
        grace.into_iter().chain(deadline).chain(orphan).min()
    }

    /// Is the event held in memory (not terminal)?
    pub fn has_event(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// Number of events held in memory.
    pub fn event_count(&self) -> usize {
        self.events.len()
    }

    // ---- inputs ----------------------------------------------------------

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

    /// A builder connection said hello.
    pub fn builder_hello(&mut self, now: i64, conn: ConnId, hello: Hello) {
        let joined = self.join(now, conn, hello);
        self.joined(now, conn, joined);
    }

    /// The first half of [`Sched::builder_hello`]: the connection is known
    /// but offered nothing yet, so that the tasks its builder holds can be
    /// claimed ([`Sched::claim`]) before [`Sched::joined`] fills its free slots.
    pub fn join(&mut self, now: i64, conn: ConnId, hello: Hello) -> Joined {
        let Hello {
            name,
            peer,
            software,
            platforms,
        } = hello;
        let older: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.name == name)
            .map(|(id, _)| *id)
            .collect();
        let mut requeued = BTreeSet::new();
        for old in older {
            requeued.extend(self.replace_conn(old));
        }
        self.conns.insert(
            conn,
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
                assigned: HashMap::new(),
                rejected: HashMap::new(),
                cancelled: HashSet::new(),
                since: now,
                shutting_down: false,
                load: None,
            },
        );
        self.fleet_changed = true;
        Joined(requeued)
    }

    /// The second half of [`Sched::builder_hello`]: offer work.
    pub fn joined(&mut self, now: i64, conn: ConnId, joined: Joined) {
        self.dispatch_conn(now, conn);
        self.dispatch_platforms(now, &joined.0);
    }

    /// A newer connection of the same builder said hello: close the older
    /// one and requeue what it held without counting; returns the requested
    /// platforms of the requeued tasks.
    fn replace_conn(&mut self, old: ConnId) -> BTreeSet<String> {
        let mut requeued = BTreeSet::new();
        let Some(c) = self.conns.remove(&old) else {
            return requeued;
        };
        let name = &c.name;
        self.fleet_changed = true;
        self.out.push(Effect::Close {
            conn: old,
            code: CLOSE_REPLACED,
            reason: format!("replaced by a newer connection of builder {name}"),
        });
        self.out.push(Effect::Release { conn: old });
        let why =
            format!("builder {name} connected again; its newer connection replaced the older");
        let mut touched = BTreeSet::new();
        for (seq, i) in self.still_held(old, &c) {
            if self.events[&seq].tasks[i].accepted {
                self.hand_back(seq, i, &why);
            } else {
                let run = self.requeue(seq, i);
                run.started = None;
                run.reason = Some(format!("requeued: {why}"));
            }
            self.persist(seq, i);
            touched.insert(seq);
            requeued.insert(self.events[&seq].tasks[i].task.spec.platform.clone());
        }
        for seq in touched {
            self.refresh(seq);
        }
        requeued
    }

    /// The builder reported its free capacity: the tasks it declined on the
    /// platforms with free instances may be offered to it again.
    pub fn capacity(&mut self, now: i64, conn: ConnId, platforms: &[PlatformCapacity]) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
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
        c.rejected.retain(|_, si| !free.contains(si));
        if !free.is_empty() {
            self.dispatch_conn(now, conn);
        }
    }

    /// The builder reported its load. Below its disk floor it is offered
    /// nothing; a report back above the floor offers it work again.
    pub fn builder_load(&mut self, now: i64, conn: ConnId, load: BuilderLoad) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.load = Some((now, load));
        self.fleet_changed = true;
        if !self.disk_state(&self.conns[&conn]).1 {
            self.dispatch_conn(now, conn);
        }
    }

    /// The builder said it is going away: offer it nothing more.
    pub fn shutting_down(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.shutting_down = true;
        }
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
    fn update_assigned(
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

    /// A connection ended: requeue (or fail) what it held, and release it.
    pub fn builder_gone(&mut self, now: i64, conn: ConnId, cause: &GoneCause) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        self.fleet_changed = true;
        self.out.push(Effect::Release { conn });
        let max = self.max_infra as i64;
        let mut touched = Vec::new();
        let mut requeued = BTreeSet::new();
        for (seq, i) in self.still_held(conn, &c) {
            let t = &self.events[&seq].tasks[i];
            let name = &c.name;
            if t.accepted
                && *cause == GoneCause::ServerShutdown
                && !c.shutting_down
                && self.restart_grace_ms > 0
            {
                // Left `running` in the store: the builder keeps it going
                // and claims it from the restarted server.
                continue;
            }
            if !t.accepted && !matches!(cause, GoneCause::Refused(_)) {
                let run = self.requeue(seq, i);
                run.started = None;
                run.reason = Some(format!(
                    "requeued: offered to builder {name}, which {cause} before accepting it"
                ));
            } else if c.shutting_down || *cause == GoneCause::ServerShutdown {
                let why = if c.shutting_down {
                    format!("builder {name} said it was shutting down and {cause}")
                } else {
                    format!("builder {name} {cause}")
                };
                self.hand_back(seq, i, &why);
            } else {
                self.infra_failure(now, seq, i, max, &format!("builder {name} {cause}"));
            }
            self.persist(seq, i);
            touched.push(seq);
            let t = &self.events[&seq].tasks[i].task;
            if t.run.state == TaskState::Waiting {
                requeued.insert(t.spec.platform.clone());
            }
        }
        touched.sort();
        touched.dedup();
        for seq in touched {
            self.refresh(seq);
        }
        self.dispatch_platforms(now, &requeued);
    }

    /// The server is stopping: offer nothing more, close every connection.
    pub fn stop(&mut self, code: u16, reason: &str) {
        self.stopping = true;
        for &conn in self.conns.keys() {
            self.out.push(Effect::Close {
                conn,
                code,
                reason: reason.to_string(),
            });
        }
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
    fn expire_orphans(&mut self, now: i64) {
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

    /// A builder claims a task it kept running while the server restarted
    /// (or its link dropped): the task becomes this connection's again,
    /// accepted, in the slot of `offer_platform`. `Err` says why not: the
    /// task is not running for this builder any more (cancelled, deleted,
    /// requeued, given to another builder) or the slot is full.
    pub fn claim(
        &mut self,
        now: i64,
        conn: ConnId,
        task_id: &str,
        offer_platform: &str,
    ) -> Result<(), String> {
        let Some(c) = self.conns.get(&conn) else {
            return Err("the connection is gone".into());
        };
        let Some((seq, i)) = self.locate(task_id) else {
            return Err("the task is not running on this server any more".into());
        };
        let t = &self.events[&seq].tasks[i];
        let held_for = self.orphans.get(task_id).map(|(b, _)| b.as_str());
        if t.task.run.state != TaskState::Running || t.conn.is_some() || held_for != Some(&c.name) {
            return Err(format!(
                "the task is {} and not held for builder {}",
                t.task.run.state, c.name
            ));
        }
        let Some(si) = c.slots.iter().position(|s| {
            s.offer.name == offer_platform && s.running.len() < s.offer.instances as usize
        }) else {
            return Err(format!(
                "no free instance of {offer_platform} on this connection"
            ));
        };
        self.orphans.remove(task_id);
        let deadline = self.task_deadline_ms.map(|ms| now + ms);
        let c = self.conns.get_mut(&conn).expect("conn exists");
        let id = self.events[&seq].tasks[i].task.id.clone();
        c.slots[si].running.insert(id.clone());
        c.assigned.insert(id.clone(), si);
        let t = &mut self.events.get_mut(&seq).expect("event").tasks[i];
        t.conn = Some(conn);
        t.accepted = true;
        t.deadline = deadline.unwrap_or(0);
        if let Some(at) = deadline {
            self.deadlines.insert((at, id));
        }
        self.fleet_changed = true;
        Ok(())
    }

    fn expire_deadlines(&mut self, now: i64) {
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

    // ---- queries ---------------------------------------------------------

    /// Check a task id against what is assigned to `conn`.
    pub fn lookup(&self, conn: ConnId, task_id: &str) -> Lookup<D> {
        let Some(c) = self.conns.get(&conn) else {
            return Lookup::Unknown;
        };
        if c.assigned.contains_key(task_id)
            && let Some(e) = TaskId::event_of(task_id)
                .and_then(|ev| self.by_id.get(ev))
                .and_then(|s| self.events.get(s))
        {
            return Lookup::Assigned(e.db.clone(), e.event.project.clone());
        }
        if c.cancelled.contains(task_id) {
            Lookup::Cancelled
        } else {
            Lookup::Unknown
        }
    }

    /// The waiting and running tasks of the open event `event_id` and of
    /// the events before it in dispatch order: the work its expected finish
    /// is computed from (`crate::eta`). Empty when the event is not open.
    pub fn open_work(&self, event_id: &str) -> Vec<OpenWork> {
        let Some(&until) = self.by_id.get(event_id) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (seq, e) in self.events.range(..=until) {
            for t in &e.tasks {
                let run = &t.task.run;
                if matches!(run.state, TaskState::Waiting | TaskState::Running) {
                    out.push(OpenWork {
                        project: e.event.project.clone(),
                        configuration: t.task.spec.configuration.clone(),
                        platform: t.task.spec.platform.clone(),
                        started: (run.state == TaskState::Running)
                            .then_some(run.started)
                            .flatten(),
                        own: *seq == until,
                    });
                }
            }
        }
        out
    }

    /// The run record of a task held in memory.
    pub fn run_of(&self, task_id: &str) -> Option<&RunRecord> {
        let (seq, i) = self.locate(task_id)?;
        Some(&self.events[&seq].tasks[i].task.run)
    }

    // ---- internals -------------------------------------------------------

    fn locate(&self, task_id: &str) -> Option<(i64, usize)> {
        let ev = TaskId::event_of(task_id)?;
        let seq = *self.by_id.get(ev)?;
        let i = *self.events.get(&seq)?.index.get(task_id)?;
        Some((seq, i))
    }

    /// Where the tasks assigned to `c`, the connection `conn` just removed,
    /// stand, leaving out those given to another connection since.
    fn still_held(&self, conn: ConnId, c: &Conn) -> Vec<(i64, usize)> {
        c.assigned
            .keys()
            .filter_map(|task_id| self.locate(task_id))
            .filter(|&(seq, i)| self.events[&seq].tasks[i].conn == Some(conn))
            .collect()
    }

    fn assigned_index(&self, conn: ConnId, task_id: &str) -> Option<(i64, usize)> {
        let c = self.conns.get(&conn)?;
        c.assigned.contains_key(task_id).then_some(())?;
        let (seq, i) = self.locate(task_id)?;
        (self.events[&seq].tasks[i].conn == Some(conn)).then_some((seq, i))
    }

    /// Move a task to `to`, keeping the counts and the waiting index right;
    /// the run record to finish the change.
    fn set_state(&mut self, seq: i64, i: usize, to: TaskState) -> &mut RunRecord {
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
    fn requeue(&mut self, seq: i64, i: usize) -> &mut RunRecord {
        self.events.get_mut(&seq).expect("event").tasks[i].conn = None;
        self.set_state(seq, i, TaskState::Waiting)
    }

    fn hand_back(&mut self, seq: i64, i: usize, why: &str) {
        let run = self.requeue(seq, i);
        run.started = None;
        run.attempt = (run.attempt - 1).max(0);
        run.reason = Some(format!("requeued: {why}"));
    }

    fn infra_failure(&mut self, now: i64, seq: i64, i: usize, max: i64, what: &str) {
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

    fn persist(&mut self, seq: i64, i: usize) {
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
    fn refresh(&mut self, seq: i64) {
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
    fn release(&mut self, conn: ConnId, task_id: &str) -> Option<usize> {
        let c = self.conns.get_mut(&conn)?;
        let si = c.assigned.remove(task_id)?;
        c.slots[si].running.remove(task_id);
        self.fleet_changed = true;
        Some(si)
    }

    /// Tell the task's builder to stop it; returns that connection.
    fn stop_on_builder(&mut self, seq: i64, i: usize, reason: &str) -> Option<ConnId> {
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

    /// Offer tasks of these requested platforms to the connections with a
    /// free slot that matches one of them.
    fn dispatch_platforms(&mut self, now: i64, platforms: &BTreeSet<String>) {
        self.dispatch_where(now, |offer| {
            platforms.iter().any(|p| tuple_matches(p, offer))
        });
    }

    fn dispatch_all(&mut self, now: i64) {
        self.dispatch_where(now, |_| true);
    }

    /// Offer waiting tasks to the connections with a free slot whose offered
    /// platform passes `wanted`.
    fn dispatch_where(&mut self, now: i64, wanted: impl Fn(&str) -> bool) {
        if self.waiting.is_empty() {
            return;
        }
        let conns: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.slots
                    .iter()
                    .any(|s| s.running.len() < s.offer.instances as usize && wanted(&s.offer.name))
            })
            .map(|(id, _)| *id)
            .collect();
        for conn in conns {
            self.dispatch_conn(now, conn);
        }
    }

    /// Offer waiting tasks to the free slots of one connection.
    fn dispatch_conn(&mut self, now: i64, conn: ConnId) {
        if self.stopping {
            return;
        }
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if c.shutting_down || self.disk_state(c).1 {
            return;
        }
        for si in 0..c.slots.len() {
            loop {
                let c = &self.conns[&conn];
                let slot = &c.slots[si];
                if slot.running.len() >= slot.offer.instances as usize {
                    break;
                }
                let Some((seq, i)) = self.pick(c, &slot.offer.name, now) else {
                    break;
                };
                self.assign(now, conn, si, seq, i);
            }
        }
    }

    /// The first waiting task, in dispatch order, that `c` may run in a slot
    /// offering `offer`: visits only the requested platforms that match.
    fn pick(&self, c: &Conn, offer: &str, now: i64) -> Option<(i64, usize)> {
        let mut best: Option<Key> = None;
        for (platform, set) in &self.waiting {
            if !tuple_matches(platform, offer) {
                continue;
            }
            let first = set.iter().find(|&&(seq, _, i)| {
                let e = &self.events[&seq];
                e.ready_at <= now && !c.rejected.contains_key(&e.tasks[i].task.id)
            });
            if let Some(&k) = first
                && best.is_none_or(|b| k < b)
            {
                best = Some(k);
            }
        }
        best.map(|(seq, _, i)| (seq, i))
    }

    fn assign(&mut self, now: i64, conn: ConnId, si: usize, seq: i64, i: usize) {
        let c = self.conns.get_mut(&conn).expect("conn exists");
        let offer_name = c.slots[si].offer.name.clone();
        let builder = c.name.clone();
        let e = self.events.get_mut(&seq).expect("event exists");
        let t = &mut e.tasks[i];
        t.conn = Some(conn);
        t.accepted = false;
        let id = t.task.id.clone();
        if let Some(ms) = self.task_deadline_ms {
            t.deadline = now + ms;
            self.deadlines.insert((t.deadline, id.clone()));
        }
        c.slots[si].running.insert(id.clone());
        c.assigned.insert(id.clone(), si);
        self.fleet_changed = true;
        let run = self.set_state(seq, i, TaskState::Running);
        run.builder = Some(builder);
        run.instance = Some(offer_name.clone());
        run.started = Some(now);
        run.ended = None;
        run.build_step = 0;
        let e = &self.events[&seq];
        let t = &e.tasks[i].task;
        let offer = TaskOffer {
            task_id: t.id.to_string(),
            event_id: e.event.id.to_string(),
            project: e.event.project.clone(),
            fetch_url: e.event.fetch_url.clone(),
            git_ref: e.event.git_ref.clone(),
            hash: e.event.hash.clone(),
            configuration: t.spec.configuration.clone(),
            platform: t.spec.platform.clone(),
            offer_platform: offer_name,
            steps: t.spec.steps.clone(),
            artifacts: t.spec.artifacts.clone(),
            packages: t.spec.packages.clone(),
            attempt: t.run.attempt as u32 + 1,
            test_reports: t.spec.test_reports.clone(),
        };
        self.persist(seq, i);
        self.out.push(Effect::Send {
            conn,
            msg: ServerMessage::Offer {
                task: Box::new(offer),
            },
        });
    }
}
