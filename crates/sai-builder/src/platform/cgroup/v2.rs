//! The cgroup v2 backend: task cgroups below the builder's own cgroup in
//! the unified hierarchy.

use std::path::{Path, PathBuf};

use super::{cgroup_mounts, write_file};

/// The cgroup v2 mount point, from `/proc/self/mountinfo`.
fn cgroup2_mount() -> Option<PathBuf> {
    cgroup_mounts()
        .into_iter()
        .find_map(|(_, point, fstype, _)| (fstype == "cgroup2").then_some(point))
}

/// This process's cgroup v2 directory.
pub fn own_cgroup() -> Option<PathBuf> {
    let mount = cgroup2_mount()?;
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = own.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(mount.join(rel.trim_start_matches('/')))
}

/// Check that `dir` is writable and enable `controllers` for its children;
/// returns the controllers enabled. To enable controllers a non-root
/// cgroup must have no processes of its own, so the builder first moves
/// itself into a `builder` leaf below it.
pub(super) fn prepare(dir: &Path, controllers: &[&str]) -> std::io::Result<Vec<String>> {
    let probe = dir.join(format!("sai-probe-{}", std::process::id()));
    std::fs::create_dir(&probe)?;
    std::fs::remove_dir(&probe)?;
    if controllers.is_empty() {
        return Ok(Vec::new());
    }
    let available = std::fs::read_to_string(dir.join("cgroup.controllers"))?;
    let missing: Vec<_> = controllers
        .iter()
        .filter(|c| !available.split_whitespace().any(|a| a == **c))
        .collect();
    if !missing.is_empty() {
        return Err(std::io::Error::other(format!(
            "cgroup {} does not offer the {missing:?} controller(s) the task limits need",
            dir.display()
        )));
    }
    let line: String = controllers.iter().map(|c| format!("+{c} ")).collect();
    let control = dir.join("cgroup.subtree_control");
    let enabled = controllers.iter().map(|c| c.to_string()).collect();
    if write_file(&control, line.trim()).is_ok() {
        return Ok(enabled);
    }
    let leaf = dir.join("builder");
    match std::fs::create_dir(&leaf) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    write_file(&leaf.join("cgroup.procs"), "0")?;
    write_file(&control, line.trim())?;
    Ok(enabled)
}

/// Whether the cgroup (or a descendant) has processes.
pub(super) fn populated(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.events"))
        .map(|s| s.lines().any(|l| l == "populated 1"))
        .unwrap_or(false)
}

/// `cgroup.kill` (Linux 5.14); false where the kernel lacks it.
pub(super) fn kill(dir: &Path) -> bool {
    write_file(&dir.join("cgroup.kill"), "1").is_ok()
}
