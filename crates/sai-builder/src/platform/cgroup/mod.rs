//! Linux: a cgroup per task, for the per-task limits and to kill what is
//! left of a task at its end.
//!
//! Two backends behind one pair of types ([`CgroupParent`], [`TaskCgroup`]):
//!
//! * **cgroup v2** ([`v2`]), where the builder's own cgroup is writable (a
//!   systemd unit with `Delegate=yes`, or a root builder): one directory
//!   per task with `memory.max`, `pids.max` and `cpu.weight`, killed with
//!   `cgroup.kill`.
//! * **cgroup v1** ([`v1`]), the fallback on hosts whose v1 hierarchies
//!   hold the controllers (hybrid or pure v1 layouts): one directory per
//!   task in each hierarchy the limits need (memory, pids, cpu) plus the
//!   freezer when mounted, with `memory.limit_in_bytes`, `pids.max` and
//!   `cpu.shares` (mapped from the weight like systemd does, see
//!   [`v1::cpu_shares`]); killed by pid, frozen meanwhile where a freezer
//!   is mounted so nothing forks between listing and killing.
//!
//! The step's shim joins the task cgroup before forking the shell, writing
//! to one `cgroup.procs` descriptor per hierarchy opened beforehand
//! ([`TaskCgroup::procs_fds`]). A task cgroup is killed and removed when
//! dropped; those a SIGKILLed builder left behind are found by name
//! (`sai-task-*`) and removed at its next start
//! ([`CgroupParent::remove_stale`]).

pub mod v1;
pub mod v2;

use std::fmt;
use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use v2::own_cgroup;

/// Prefix of a task cgroup's directory name.
const TASK_PREFIX: &str = "sai-task-";

/// Per-task limits (from the builder config).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskLimits {
    /// Most memory in bytes (`memory.max`, v1 `memory.limit_in_bytes`).
    pub memory_max: Option<u64>,
    /// Most tasks (`pids.max`).
    pub pids_max: Option<u64>,
    /// CPU weight, 1-10000, default 100 (`cpu.weight`, v1 `cpu.shares`).
    pub cpu_weight: Option<u32>,
}

/// Which cgroup interface a parent uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The unified hierarchy.
    V2,
    /// Per-controller hierarchies.
    V1,
}

/// One limit: the controller it needs and the file it is written to.
struct Limit {
    controller: &'static str,
    file: &'static str,
    value: String,
}

impl TaskLimits {
    fn files(&self, version: Version) -> Vec<Limit> {
        let mut v = Vec::new();
        let (memory, cpu) = match version {
            Version::V2 => ("memory.max", "cpu.weight"),
            Version::V1 => ("memory.limit_in_bytes", "cpu.shares"),
        };
        if let Some(m) = self.memory_max {
            v.push(Limit {
                controller: "memory",
                file: memory,
                value: m.to_string(),
            });
        }
        if let Some(p) = self.pids_max {
            v.push(Limit {
                controller: "pids",
                file: "pids.max",
                value: p.to_string(),
            });
        }
        if let Some(w) = self.cpu_weight {
            let value = match version {
                Version::V2 => w.to_string(),
                Version::V1 => v1::cpu_shares(w).to_string(),
            };
            v.push(Limit {
                controller: "cpu",
                file: cpu,
                value,
            });
        }
        v
    }

    /// The controllers these limits need.
    fn controllers(&self) -> Vec<&'static str> {
        self.files(Version::V2)
            .into_iter()
            .map(|l| l.controller)
            .collect()
    }
}

/// A directory task cgroups are made in, in one hierarchy, and the
/// controllers that hierarchy offers there.
#[derive(Debug, Clone)]
struct Base {
    dir: PathBuf,
    controllers: Vec<String>,
}

impl Base {
    fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

/// Where the builder makes its task cgroups: one directory (v2) or one per
/// v1 hierarchy, and the limits each task gets. The v1 directories, made
/// for this builder, are removed on drop when empty.
#[derive(Debug)]
pub struct CgroupParent {
    version: Version,
    bases: Vec<Base>,
    limits: TaskLimits,
}

/// A task's cgroup (a directory in each hierarchy); killed and removed on
/// drop.
#[derive(Debug)]
pub struct TaskCgroup {
    version: Version,
    name: String,
    dirs: Vec<PathBuf>,
    procs: Vec<File>,
    memory: Option<PathBuf>,
    freezer: Option<PathBuf>,
    memory_max: Option<u64>,
}

fn write_file(path: &Path, value: &str) -> std::io::Result<()> {
    std::fs::write(path, value).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("writing {value:?} to {}: {e}", path.display()),
        )
    })
}

/// The value of `key` in a flat-keyed cgroup file (`memory.events`,
/// `memory.oom_control`).
fn keyed_value(path: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

/// Mounts of cgroup file systems, from `/proc/self/mountinfo`: (mount
/// root inside the hierarchy, mount point, file system type, super
/// options).
fn cgroup_mounts() -> Vec<(String, PathBuf, String, String)> {
    parse_cgroup_mounts(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
}

/// [`cgroup_mounts`] from the text of a mountinfo file.
fn parse_cgroup_mounts(info: &str) -> Vec<(String, PathBuf, String, String)> {
    info.lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let mut pre = pre.split_whitespace();
            let root = pre.nth(3)?;
            let point = pre.next()?;
            let mut post = post.split_whitespace();
            let fstype = post.next()?;
            if fstype != "cgroup" && fstype != "cgroup2" {
                return None;
            }
            let options = post.nth(1).unwrap_or("");
            Some((
                unescape(root),
                PathBuf::from(unescape(point)),
                fstype.to_string(),
                options.to_string(),
            ))
        })
        .collect()
}

/// Undo mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl CgroupParent {
    /// Use `dir`, a writable cgroup v2 directory, as the parent, with the
    /// controllers for `limits` enabled for its children (see [`v2`]).
    pub fn at(dir: PathBuf, limits: TaskLimits) -> std::io::Result<Self> {
        let controllers = v2::prepare(&dir, &limits.controllers())?;
        Ok(Self {
            version: Version::V2,
            bases: vec![Base { dir, controllers }],
            limits,
        })
    }

    /// The cgroup v1 hierarchies that hold `limits`, each with a directory
    /// `sai-builder-<owner>` below the builder's own cgroup there, where
    /// this builder's task cgroups go (see [`v1`]). `owner` names this
    /// builder among others sharing its cgroups.
    pub fn v1(limits: TaskLimits, owner: &str) -> std::io::Result<Self> {
        let bases = v1::bases(&limits.controllers(), owner)?;
        Ok(Self {
            version: Version::V1,
            bases,
            limits,
        })
    }

    /// The parent for a builder whose config sets `limits`: its own cgroup
    /// v2 when that offers the controllers ([`CgroupParent::at`]), else
    /// cgroup v1 ([`CgroupParent::v1`]). The error says why neither works.
    pub fn for_limits(limits: TaskLimits, owner: &str) -> std::io::Result<Self> {
        let v2 = match own_cgroup() {
            Some(dir) => Self::at(dir.clone(), limits)
                .map_err(|e| format!("cgroup v2 {}: {e}", dir.display())),
            None => Err("no cgroup v2 mount".to_string()),
        };
        v2.or_else(|v2_error| {
            Self::v1(limits, owner).map_err(|v1_error| {
                std::io::Error::other(format!(
                    "no delegated cgroup v2 with the controllers ({v2_error}) \
                     and no cgroup v1 ({v1_error})"
                ))
            })
        })
    }

    /// Which interface the task cgroups use.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The directories task cgroups are made in (one per hierarchy).
    pub fn dirs(&self) -> Vec<&Path> {
        self.bases.iter().map(|b| b.dir.as_path()).collect()
    }

    /// Create the cgroup `sai-task-<name>` with the configured limits. A
    /// leftover of the same name (a builder killed mid-task) is killed and
    /// removed first.
    pub fn create_task(&self, name: &str) -> std::io::Result<TaskCgroup> {
        let leaf = format!("{TASK_PREFIX}{name}");
        if self.bases.iter().any(|b| b.dir.join(&leaf).exists()) {
            drop(self.open(&leaf));
        }
        let mut made = Vec::new();
        let result = (|| {
            for b in &self.bases {
                let dir = b.dir.join(&leaf);
                std::fs::create_dir(&dir).map_err(|e| {
                    std::io::Error::new(e.kind(), format!("creating {}: {e}", dir.display()))
                })?;
                made.push(dir);
            }
            let cg = self.open(&leaf);
            if cg.dirs.len() != self.bases.len() {
                return Err(std::io::Error::other(format!(
                    "cannot open cgroup.procs of every directory of {leaf} in {self}"
                )));
            }
            for limit in self.limits.files(self.version) {
                let base = self
                    .bases
                    .iter()
                    .find(|b| b.has(limit.controller))
                    .expect("bases hold every controller the limits need");
                write_file(&base.dir.join(&leaf).join(limit.file), &limit.value)?;
            }
            Ok(cg)
        })();
        if result.is_err() {
            for dir in made {
                let _ = std::fs::remove_dir(dir);
            }
        }
        result
    }

    /// The task cgroup `leaf` in every hierarchy where it exists.
    fn open(&self, leaf: &str) -> TaskCgroup {
        let mut cg = TaskCgroup {
            version: self.version,
            name: leaf.to_string(),
            dirs: Vec::new(),
            procs: Vec::new(),
            memory: None,
            freezer: None,
            memory_max: self.limits.memory_max,
        };
        for b in &self.bases {
            let dir = b.dir.join(leaf);
            let Ok(procs) = std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.procs"))
            else {
                continue;
            };
            if b.has("memory") {
                cg.memory = Some(dir.clone());
            }
            if b.has("freezer") {
                cg.freezer = Some(dir.clone());
            }
            cg.dirs.push(dir);
            cg.procs.push(procs);
        }
        cg
    }

    /// Kill and remove task cgroups a dead builder left behind; returns how
    /// many.
    pub fn remove_stale(&self) -> usize {
        let mut leaves: Vec<String> = self
            .bases
            .iter()
            .filter_map(|b| std::fs::read_dir(&b.dir).ok())
            .flat_map(|entries| entries.flatten())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(TASK_PREFIX))
            .collect();
        leaves.sort();
        leaves.dedup();
        for leaf in &leaves {
            drop(self.open(leaf));
        }
        leaves.len()
    }
}

impl Drop for CgroupParent {
    fn drop(&mut self) {
        if self.version == Version::V1 {
            for b in &self.bases {
                let _ = std::fs::remove_dir(&b.dir);
            }
        }
    }
}

impl fmt::Display for CgroupParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let version = match self.version {
            Version::V2 => "cgroup v2",
            Version::V1 => "cgroup v1",
        };
        write!(f, "{version}")?;
        for (i, b) in self.bases.iter().enumerate() {
            write!(f, "{}{}", if i == 0 { " " } else { ", " }, b.dir.display())?;
        }
        Ok(())
    }
}

impl TaskCgroup {
    /// The task cgroup's directories, one per hierarchy.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Descriptors of the `cgroup.procs` files, written by the shim to join
    /// (one per hierarchy).
    pub fn procs_fds(&self) -> Vec<RawFd> {
        self.procs.iter().map(|f| f.as_raw_fd()).collect()
    }

    /// The memory limit, if one was set.
    pub fn memory_max(&self) -> Option<u64> {
        self.memory_max
    }

    /// Pids in the cgroup now (in any of its hierarchies).
    pub fn pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .dirs
            .iter()
            .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|s| {
                s.lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<_>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// How many processes the kernel has killed for want of memory in this
    /// cgroup (`oom_kill` of v2 `memory.events`, v1 `memory.oom_control`).
    pub fn oom_kills(&self) -> u64 {
        let Some(dir) = &self.memory else {
            return 0;
        };
        let file = match self.version {
            Version::V2 => "memory.events",
            Version::V1 => "memory.oom_control",
        };
        keyed_value(&dir.join(file), "oom_kill").unwrap_or(0)
    }

    fn populated(&self) -> bool {
        match self.version {
            Version::V2 => self.dirs.iter().any(|d| v2::populated(d)),
            Version::V1 => !self.pids().is_empty(),
        }
    }

    /// SIGKILL everything in the cgroup and wait up to `limit` for it to
    /// empty. v2: `cgroup.kill` (each pid on kernels before 5.14); v1: each
    /// pid, with the cgroup frozen meanwhile where a freezer is mounted.
    pub fn kill_all(&self, limit: Duration) -> bool {
        let start = Instant::now();
        while self.populated() {
            let killed = match self.version {
                Version::V2 => self.dirs.iter().all(|d| v2::kill(d)),
                Version::V1 => false,
            };
            if !killed {
                let frozen = self.freezer.as_deref().map(v1::Freeze::new);
                for pid in self.pids() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                drop(frozen);
            }
            if start.elapsed() > limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }
}

impl Drop for TaskCgroup {
    fn drop(&mut self) {
        if !self.kill_all(Duration::from_secs(5)) {
            tracing::warn!(cgroup = %self.name, dirs = ?self.dirs, "task cgroup still populated after SIGKILL");
        }
        // Processes not reaped yet keep a directory busy a moment.
        for dir in &self.dirs {
            for _ in 0..200 {
                match std::fs::remove_dir(dir) {
                    Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    _ => break,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(r"/sys/fs/cgroup/a\040b"), "/sys/fs/cgroup/a b");
        assert_eq!(unescape(r"/x\"), r"/x\");
        assert_eq!(unescape("/plain"), "/plain");
    }

    #[test]
    fn limits_name_their_files_per_version() {
        let l = TaskLimits {
            memory_max: Some(1 << 20),
            pids_max: Some(7),
            cpu_weight: Some(100),
        };
        let files = |v| {
            l.files(v)
                .into_iter()
                .map(|l| format!("{}={}", l.file, l.value))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            files(Version::V2),
            ["memory.max=1048576", "pids.max=7", "cpu.weight=100"]
        );
        assert_eq!(
            files(Version::V1),
            [
                "memory.limit_in_bytes=1048576",
                "pids.max=7",
                "cpu.shares=1024"
            ]
        );
    }
}
