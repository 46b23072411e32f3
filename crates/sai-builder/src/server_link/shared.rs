//! What every link of the daemon shares: the platforms and their instance
//! slots (so two servers offering one platform cannot overbook it), the
//! running tasks' VNs, and the free capacity and load reported to servers.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use sai_core::protocol::{BuilderLoad, PlatformCapacity};
use tokio::sync::{Semaphore, watch};

use crate::housekeeping::{free_disk_bytes, has_room};
use crate::jobdir::Layout;
use crate::task::TaskContext;

/// One platform of the builder: its slots (shared by every link) and what
/// its tasks run with.
#[derive(Debug)]
pub struct PlatformSlots {
    /// Configured `instances`.
    pub instances: u32,
    /// One permit per instance; held by a running task.
    pub slots: Arc<Semaphore>,
    /// Task settings of the platform.
    pub ctx: TaskContext,
}

impl PlatformSlots {
    /// `instances` slots running tasks with `ctx`.
    pub fn new(instances: u32, ctx: TaskContext) -> Self {
        Self {
            instances,
            slots: Arc::new(Semaphore::new(instances as usize)),
            ctx,
        }
    }
}

/// State shared by every link of the daemon.
#[derive(Debug)]
pub struct Shared {
    /// Builder name (the `host` of the config; the hello's `builder`).
    pub host: String,
    /// The builder home.
    pub layout: Layout,
    /// Free bytes needed under the home to accept a task (0: no check).
    pub min_free_disk_bytes: u64,
    /// Platforms by name.
    pub platforms: HashMap<String, PlatformSlots>,
    /// VNs of the tasks running now (kept by housekeeping).
    pub active: Mutex<HashSet<String>>,
    /// Bumped whenever free capacity grows (a task ended and freed its
    /// instance, housekeeping freed disk); every link watches it and reports
    /// its capacity to its server.
    pub capacity: watch::Sender<u64>,
}

impl Shared {
    /// Tell every link that free capacity grew.
    pub fn capacity_changed(&self) {
        self.capacity.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Free instances of each of `platforms` now: 0 for all when the disk
    /// under the home has less than `min_free_disk_bytes` free.
    pub fn free_capacity(&self, platforms: &[String]) -> Vec<PlatformCapacity> {
        let disk_ok = self.min_free_disk_bytes == 0
            || has_room(self.layout.home(), self.min_free_disk_bytes).unwrap_or(false);
        platforms
            .iter()
            .map(|name| PlatformCapacity {
                name: name.clone(),
                free: match self.platforms.get(name) {
                    Some(p) if disk_ok => {
                        u32::try_from(p.slots.available_permits()).unwrap_or(u32::MAX)
                    }
                    _ => 0,
                },
            })
            .collect()
    }

    /// The builder's load now, for [`BuilderMessage::Load`].
    ///
    /// [`BuilderMessage::Load`]: sai_core::protocol::BuilderMessage::Load
    pub fn load(&self) -> BuilderLoad {
        let mem = crate::platform::load::memory();
        let running: usize = self
            .platforms
            .values()
            .map(|p| (p.instances as usize).saturating_sub(p.slots.available_permits()))
            .sum();
        BuilderLoad {
            load_avg_1m_centi: crate::platform::load::load_avg_1m_centi(),
            cpus: cpus(),
            mem_total_bytes: mem.map(|m| m.total),
            mem_available_bytes: mem.map(|m| m.available),
            disk_free_bytes: free_disk_bytes(&self.layout.jobs_dir()).ok().or_else(|| {
                // The jobs folder appears with the first task.
                free_disk_bytes(self.layout.home()).ok()
            }),
            disk_floor_bytes: self.min_free_disk_bytes,
            running_tasks: u32::try_from(running).unwrap_or(u32::MAX),
        }
    }

    /// The VNs housekeeping must keep: the running tasks' and each
    /// instance's last job dir, which its next task takes over.
    pub fn active_vns(&self) -> HashSet<String> {
        let mut vns = self
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for p in self.platforms.values() {
            vns.extend(p.ctx.last_job_dirs.vns());
        }
        vns
    }
}

/// The CPUs this process may use, found once: std reads the cgroup's
/// quota files each time it is asked, and load reports go out with every
/// task.
fn cpus() -> Option<u32> {
    static CPUS: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| {
        std::thread::available_parallelism()
            .ok()
            .and_then(|n| u32::try_from(n.get()).ok())
    })
}
