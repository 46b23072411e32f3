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
//!   ([`CLOSE_REPLACED`](sai_core::protocol::CLOSE_REPLACED)); its tasks go back to `waiting` without counting
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
//!
//! | module | job |
//! |---|---|
//! | `effect` | [`Effect`]: what the server must do, the scheduler's only output |
//! | `task_flow` | events taken in; a task offered, accepted, declined, finished; the clock (deadlines, restart grace, dispatch grace) |
//! | `builder_link` | a builder connection's hello, capacity, load, claim and end |
//! | `operator` | cancel, rebuild and delete |
//! | `dispatch` | filling free slots from the waiting index |
//! | `transitions` | one task's state change with its counts, index, slots and effects |
//! | `views` | snapshots for readers: [`Fleet`], [`QueueStats`], [`OpenWork`] |

mod builder_link;
mod dispatch;
mod effect;
mod operator;
mod task_flow;
mod transitions;
mod views;

pub use builder_link::{GoneCause, Hello, Joined, Lookup};
pub use effect::Effect;
pub use operator::Conflict;
pub use views::{Fleet, OpenWork, QueueStats, human_bytes};

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use sai_core::protocol::{BuilderLoad, PlatformOffer};
use sai_core::task::{Event, EventId, StateCounts, Task, TaskId, TaskState};

/// Identifies one builder websocket connection.
pub type ConnId = u64;

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

    /// Give every offer a deadline of `ms` (none by default).
    pub fn set_task_deadline(&mut self, ms: Option<i64>) {
        self.task_deadline_ms = ms;
    }

    /// The effects of the inputs so far, in the order they must be applied.
    pub fn take_effects(&mut self) -> Vec<Effect<D>> {
        std::mem::take(&mut self.out)
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
}
