//! Dispatch: filling free slots with waiting tasks, in priority order,
//! visiting only the requested platforms an offer matches.

use std::collections::BTreeSet;

use sai_core::platform::tuple_matches;
use sai_core::protocol::{ServerMessage, TaskOffer};
use sai_core::task::TaskState;

use super::{Conn, ConnId, Effect, Key, Sched};

impl<D: Clone> Sched<D> {
    /// Offer tasks of these requested platforms to the connections with a
    /// free slot that matches one of them.
    pub(super) fn dispatch_platforms(&mut self, now: i64, platforms: &BTreeSet<String>) {
        self.dispatch_where(now, |offer| {
            platforms.iter().any(|p| tuple_matches(p, offer))
        });
    }

    pub(super) fn dispatch_all(&mut self, now: i64) {
        self.dispatch_where(now, |_| true);
    }

    /// Offer waiting tasks to the connections with a free slot whose offered
    /// platform passes `wanted`.
    pub(super) fn dispatch_where(&mut self, now: i64, wanted: impl Fn(&str) -> bool) {
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
    pub(super) fn dispatch_conn(&mut self, now: i64, conn: ConnId) {
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
    pub(super) fn pick(&self, c: &Conn, offer: &str, now: i64) -> Option<(i64, usize)> {
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

    pub(super) fn assign(&mut self, now: i64, conn: ConnId, si: usize, seq: i64, i: usize) {
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
