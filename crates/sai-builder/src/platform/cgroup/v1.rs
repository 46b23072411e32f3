//! The cgroup v1 backend, for hosts without a delegated cgroup v2 with the
//! controllers the limits need (hybrid layouts: v1 controllers mounted,
//! an empty cgroup2 beside them; or pure v1).
//!
//! Which hierarchies exist and where they are mounted comes from
//! `/proc/self/mountinfo` (a `cgroup` mount lists its controllers in its
//! super options; its root may be a sub-cgroup, e.g. in a container), the
//! builder's own cgroup in each from `/proc/self/cgroup`. v1 hierarchies
//! are not delegated to anyone and the builder's cgroup there is often
//! shared (the root, typically), so its task cgroups go into a directory
//! of its own, `<own>/sai-builder-<owner>/sai-task-<name>`: a builder's
//! start-up sweep of stale task cgroups never touches another builder's.
//!
//! The hierarchies used are those of the controllers the limits need plus
//! the freezer where it is mounted (to stop forks while the end of a task
//! kills its processes by pid); with no limits, pids or else any
//! controller hierarchy, only to hold and kill the task's processes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Base, cgroup_mounts, write_file};

/// v1 `cpu.shares` for a v2-style `cpu_weight`, as systemd maps them:
/// linear with weight 100 (the default) at 1024 shares (the default),
/// clamped to the kernel's 2..=262144.
pub fn cpu_shares(weight: u32) -> u64 {
    (u64::from(weight) * 1024 / 100).clamp(2, 262_144)
}

/// One v1 hierarchy this process is in.
struct Hierarchy {
    controllers: Vec<String>,
    dir: PathBuf,
}

/// The v1 hierarchies with controllers, each with this process's
/// directory in it (where mounted).
fn hierarchies() -> Vec<Hierarchy> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    hierarchies_in(&own, &cgroup_mounts())
}

/// [`hierarchies`] from the text of `/proc/self/cgroup` and the cgroup
/// mounts.
fn hierarchies_in(own: &str, mounts: &[(String, PathBuf, String, String)]) -> Vec<Hierarchy> {
    let mut found = Vec::new();
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(list), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let controllers: Vec<String> = list
            .split(',')
            .filter(|c| !c.is_empty() && !c.starts_with("name="))
            .map(str::to_string)
            .collect();
        if controllers.is_empty() {
            continue;
        }
        let mount = mounts.iter().find(|(_, _, fstype, options)| {
            fstype == "cgroup"
                && controllers
                    .iter()
                    .all(|c| options.split(',').any(|o| o == c))
        });
        let Some((root, point, _, _)) = mount else {
            continue;
        };
        // The mount shows the hierarchy from `root` down; our cgroup must
        // be inside it to be reachable.
        let Ok(rel) = Path::new(path).strip_prefix(root) else {
            continue;
        };
        let dir = if rel.as_os_str().is_empty() {
            point.clone()
        } else {
            point.join(rel)
        };
        found.push(Hierarchy { controllers, dir });
    }
    found
}

/// The directories for this builder's task cgroups (created), one per
/// hierarchy needed for `controllers`, see the module doc.
pub(super) fn bases(controllers: &[&str], owner: &str) -> std::io::Result<Vec<Base>> {
    let all = hierarchies();
    let has = |h: &Hierarchy, c: &str| h.controllers.iter().any(|x| x == c);
    let mut picked: Vec<&Hierarchy> = Vec::new();
    for c in controllers {
        let h = all.iter().find(|h| has(h, c)).ok_or_else(|| {
            std::io::Error::other(format!(
                "no cgroup v1 hierarchy with the {c:?} controller is mounted \
                 (see /proc/self/mountinfo and /proc/self/cgroup)"
            ))
        })?;
        pick(&mut picked, h);
    }
    if let Some(h) = all.iter().find(|h| has(h, "freezer")) {
        pick(&mut picked, h);
    }
    if picked.is_empty() {
        let h = all
            .iter()
            .find(|h| has(h, "pids"))
            .or(all.first())
            .ok_or_else(|| std::io::Error::other("no cgroup v1 hierarchy is mounted"))?;
        pick(&mut picked, h);
    }
    picked
        .into_iter()
        .map(|h| {
            let dir = h.dir.join(format!("sai-builder-{owner}"));
            std::fs::create_dir_all(&dir).map_err(|e| {
                std::io::Error::new(e.kind(), format!("creating {}: {e}", dir.display()))
            })?;
            Ok(Base {
                dir,
                controllers: h.controllers.clone(),
            })
        })
        .collect()
}

/// Add `h` to `picked` unless it is there (co-mounted controllers share a
/// hierarchy).
fn pick<'h>(picked: &mut Vec<&'h Hierarchy>, h: &'h Hierarchy) {
    if !picked.iter().any(|p| p.dir == h.dir) {
        picked.push(h);
    }
}

/// A frozen v1 cgroup (`freezer.state`), thawed on drop. Frozen processes
/// cannot fork; a SIGKILL sent meanwhile takes effect at the thaw.
pub(super) struct Freeze<'a>(&'a Path);

impl<'a> Freeze<'a> {
    /// Freeze `dir` and wait (briefly: a process in uninterruptible sleep
    /// can keep it `FREEZING`) until it is frozen.
    pub(super) fn new(dir: &'a Path) -> Self {
        let state = dir.join("freezer.state");
        if write_file(&state, "FROZEN").is_ok() {
            let start = Instant::now();
            while start.elapsed() < Duration::from_millis(200) {
                match std::fs::read_to_string(&state) {
                    Ok(s) if s.trim() != "FROZEN" => std::thread::sleep(Duration::from_millis(1)),
                    _ => break,
                }
            }
        }
        Self(dir)
    }
}

impl Drop for Freeze<'_> {
    fn drop(&mut self) {
        let _ = write_file(&self.0.join("freezer.state"), "THAWED");
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse_cgroup_mounts;
    use super::*;

    fn found(own: &str, mountinfo: &str) -> Vec<(String, String)> {
        hierarchies_in(own, &parse_cgroup_mounts(mountinfo))
            .into_iter()
            .map(|h| (h.controllers.join(","), h.dir.display().to_string()))
            .collect()
    }

    #[test]
    fn hybrid_layout_one_controller_per_hierarchy() {
        let mountinfo = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        let own = "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/ab\n1:cpu:/\n0::/\n";
        assert_eq!(
            found(own, mountinfo),
            [
                ("pids".into(), "/sys/fs/cgroup/pids".into()),
                (
                    "memory".into(),
                    "/sys/fs/cgroup/memory/process_api/ab".into()
                ),
                ("cpu".into(), "/sys/fs/cgroup/cpu".into()),
            ]
        );
    }

    #[test]
    fn pure_v1_layout_with_co_mounted_controllers_and_a_container_root() {
        // cpu and cpuacct share a hierarchy; the container sees its own
        // cgroup as the mount root; the freezer is not mounted here.
        let mountinfo = "\
25 24 0:22 /docker/c1 /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
26 24 0:23 /docker/c1 /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
27 24 0:24 /docker/c1 /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
";
        let own = "7:freezer:/docker/c1\n4:cpu,cpuacct:/docker/c1/sub\n3:memory:/docker/c1\n\
                   2:pids:/elsewhere\n";
        assert_eq!(
            found(own, mountinfo),
            [
                (
                    "cpu,cpuacct".into(),
                    "/sys/fs/cgroup/cpu,cpuacct/sub".into()
                ),
                ("memory".into(), "/sys/fs/cgroup/memory".into()),
            ]
        );
    }

    #[test]
    fn cpu_weight_maps_to_shares_like_systemd() {
        assert_eq!(cpu_shares(100), 1024);
        assert_eq!(cpu_shares(50), 512);
        assert_eq!(cpu_shares(1), 10);
        assert_eq!(cpu_shares(10_000), 102_400);
        assert_eq!(cpu_shares(0), 2);
        assert_eq!(cpu_shares(u32::MAX), 262_144);
    }
}
