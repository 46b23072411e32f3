//! A builder connection's life as the scheduler sees it: hello (in two
//! halves, so that tasks kept running across a server restart are claimed
//! before free slots are filled), capacity and load reports, shutting
//! down, and the end of the link, with what each does to the tasks it held.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;

use sai_core::protocol::{BuilderLoad, CLOSE_REPLACED, PlatformCapacity, PlatformOffer};
use sai_core::task::{TaskId, TaskState};

use super::{Conn, ConnId, Effect, Sched, Slot};

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

impl<D: Clone> Sched<D> {
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
    pub(super) fn replace_conn(&mut self, old: ConnId) -> BTreeSet<String> {
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
}
