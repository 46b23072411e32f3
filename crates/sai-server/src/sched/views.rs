//! What the scheduler publishes for readers that must not wait for it:
//! the fleet of connected builders (and why a task waits), the queue for
//! `/metrics`, the open work an estimate is computed from, a task's run.

use std::collections::BTreeMap;

use sai_core::api::{Builder, BuilderLoad as ApiLoad, BuilderPlatform};
use sai_core::platform::tuple_matches;
use sai_core::protocol::BuilderLoad;
use sai_core::task::{RunRecord, TaskState};

use super::Sched;

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

impl<D: Clone> Sched<D> {
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

    /// Is the event held in memory (not terminal)?
    pub fn has_event(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// Number of events held in memory.
    pub fn event_count(&self) -> usize {
        self.events.len()
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
}
