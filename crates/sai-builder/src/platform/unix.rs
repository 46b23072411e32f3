//! Unix: `sh -e -c`, process groups, uid/gid switching, unix sockets.
//! Linux adds the subreaper shim ([`super::containment`]) and task cgroups
//! ([`super::cgroup`]).

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Gid, Pid, Uid};
use tokio::io::AsyncRead;

use super::StepError;
use super::{ExitKind, StepCommand};

/// The unprivileged user steps run as when the builder runs as root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// User name.
    pub name: String,
    /// User id.
    pub uid: Uid,
    /// Primary group id.
    pub gid: Gid,
    /// Supplementary groups (from the group database, incl. the primary).
    pub groups: Vec<Gid>,
}

#[cfg(not(any(target_vendor = "apple", target_os = "illumos", target_os = "solaris")))]
#[cfg_attr(target_feature = "crt-static", allow(dead_code))]
fn supplementary_groups(name: &CString, gid: Gid) -> Result<Vec<Gid>, Errno> {
    nix::unistd::getgrouplist(name, gid)
}

/// macOS and illumos have no `getgrouplist` in nix: walk the group
/// database for the groups naming the user.
#[cfg(any(target_vendor = "apple", target_os = "illumos", target_os = "solaris"))]
fn supplementary_groups(name: &CString, gid: Gid) -> Result<Vec<Gid>, Errno> {
    let name = name.to_string_lossy();
    let mut groups = vec![gid];
    let text = std::fs::read_to_string("/etc/group").unwrap_or_default();
    for line in text.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() == 4
            && f[3].split(',').any(|m| m == name)
            && let Ok(g) = f[2].parse()
            && !groups.contains(&Gid::from_raw(g))
        {
            groups.push(Gid::from_raw(g));
        }
    }
    Ok(groups)
}

/// Statically linked glibc builds read `/etc/passwd` and `/etc/group`
/// themselves (see [`super::files_db`] for why).
#[cfg(all(target_os = "linux", target_env = "gnu", target_feature = "crt-static"))]
mod lookup {
    use nix::unistd::{Gid, Uid};

    use super::super::files_db::{self, PasswdEntry};

    fn read(path: &str) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn ids(e: PasswdEntry) -> (String, Uid, Gid) {
        (e.name, Uid::from_raw(e.uid), Gid::from_raw(e.gid))
    }

    pub fn user_named(name: &str) -> std::io::Result<Option<(String, Uid, Gid)>> {
        Ok(files_db::user_by_name(&read("/etc/passwd")?, name).map(ids))
    }

    pub fn user_with_uid(uid: Uid) -> std::io::Result<Option<(String, Uid, Gid)>> {
        Ok(files_db::user_by_uid(&read("/etc/passwd")?, uid.as_raw()).map(ids))
    }

    pub fn groups(name: &str, gid: Gid) -> std::io::Result<Vec<Gid>> {
        let group = read("/etc/group")?;
        Ok(files_db::groups_of(&group, name, gid.as_raw())
            .into_iter()
            .map(Gid::from_raw)
            .collect())
    }
}

/// Elsewhere: the C library's user and group databases (nsswitch).
#[cfg(not(all(target_os = "linux", target_env = "gnu", target_feature = "crt-static")))]
mod lookup {
    use nix::unistd::{Gid, Uid, User};

    pub fn user_named(name: &str) -> std::io::Result<Option<(String, Uid, Gid)>> {
        Ok(User::from_name(name)?.map(|u| (u.name, u.uid, u.gid)))
    }

    pub fn user_with_uid(uid: Uid) -> std::io::Result<Option<(String, Uid, Gid)>> {
        Ok(User::from_uid(uid)?.map(|u| (u.name, u.uid, u.gid)))
    }

    pub fn groups(name: &str, gid: Gid) -> std::io::Result<Vec<Gid>> {
        let cname = std::ffi::CString::new(name)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        Ok(super::supplementary_groups(&cname, gid)?)
    }
}

impl RunAs {
    /// Look `name` up in the user and group databases.
    pub fn lookup(name: &str) -> Result<Self, StepError> {
        let lookup_error = |source| StepError::UserLookup {
            name: name.to_string(),
            source,
        };
        let (_, uid, gid) = lookup::user_named(name)
            .map_err(lookup_error)?
            .ok_or_else(|| StepError::NoSuchUser(name.to_string()))?;
        let groups = lookup::groups(name, gid).map_err(lookup_error)?;
        Ok(Self {
            name: name.to_string(),
            uid,
            gid,
            groups,
        })
    }

    /// The user owning `path` (the config's default step user is the owner
    /// of the builder home).
    pub fn owner_of(path: &Path) -> Result<Self, StepError> {
        use std::os::unix::fs::MetadataExt;
        let uid = std::fs::metadata(path)
            .map_err(|e| StepError::Owner {
                path: path.to_path_buf(),
                source: e,
            })?
            .uid();
        let (name, _, _) = lookup::user_with_uid(Uid::from_raw(uid))
            .map_err(|source| StepError::UserLookup {
                name: format!("uid {uid}"),
                source,
            })?
            .ok_or_else(|| StepError::NoSuchUser(format!("uid {uid}")))?;
        Self::lookup(&name)
    }

    /// Whether steps can run as this user: the builder is root or is
    /// this user already.
    pub fn check_switchable(&self) -> Result<(), StepError> {
        if Uid::effective().is_root() || Uid::effective() == self.uid {
            Ok(())
        } else {
            Err(StepError::NotRoot(self.name.clone()))
        }
    }
}

/// Whether the builder runs with administrator rights (root).
pub fn is_privileged() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Change the owner of `path` itself (not following symlinks) to `user`.
pub fn chown_to(path: &Path, user: &RunAs) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
}

/// The (device, inode) of `path` itself (a link is not followed).
pub fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).ok()?;
    Some((meta.dev(), meta.ino()))
}

/// Make `path` private to its owner (`0700` for directories, `0600` else).
pub fn make_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = if path.is_dir() { 0o700 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Bytes available to unprivileged users on the filesystem holding `path`.
pub fn free_disk_bytes(path: &Path) -> std::io::Result<u64> {
    let st = nix::sys::statvfs::statvfs(path)?;
    #[allow(clippy::useless_conversion)] // field widths differ between targets
    let bytes = u64::from(st.blocks_available()).saturating_mul(u64::from(st.fragment_size()));
    Ok(bytes)
}

/// The shell steps run in: `/bin/bash` if present, else `/bin/sh`.
pub fn shell() -> PathBuf {
    let bash = Path::new("/bin/bash");
    if bash.exists() {
        bash.to_path_buf()
    } else {
        PathBuf::from("/bin/sh")
    }
}

#[allow(unsafe_code)]
fn drop_privileges(cmd: &mut tokio::process::Command, run_as: &RunAs) {
    let (uid, gid, groups) = (run_as.uid, run_as.gid, run_as.groups.clone());
    // SAFETY: the closure runs in the forked child between fork and exec. It
    // only issues the async-signal-safe syscalls setgroups(2), setgid(2) and
    // setuid(2) on data prepared before the fork, and does not allocate.
    // It cannot use Command::uid/gid: std would drop all supplementary
    // groups there, before pre_exec closures run.
    unsafe {
        cmd.pre_exec(move || {
            #[cfg(not(target_vendor = "apple"))]
            nix::unistd::setgroups(&groups)?;
            #[cfg(target_vendor = "apple")]
            let _ = &groups; // macOS: the primary group only (no setgroups in nix)
            nix::unistd::setgid(gid)?;
            nix::unistd::setuid(uid)?;
            Ok(())
        });
    }
}

/// Whether any live (non-zombie) process is left in process group `pgid`.
pub fn group_alive(pgid: i32) -> bool {
    if killpg(Pid::from_raw(pgid), None) == Err(Errno::ESRCH) {
        return false;
    }
    #[cfg(target_os = "linux")]
    {
        // Members exist; zombies (waiting for a reaper we don't control)
        // don't count.
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return true;
        };
        for entry in dir.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // "pid (comm) state ppid pgrp ..."; comm may contain spaces and ')'.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            let mut fields = rest.split_whitespace();
            let state = fields.next().unwrap_or("");
            let pgrp = fields.nth(1).and_then(|s| s.parse::<i32>().ok());
            if pgrp == Some(pgid) && state != "Z" && state != "X" {
                return true;
            }
        }
        false
    }
    #[cfg(not(target_os = "linux"))]
    true
}

/// Whether process `pid` is gone (or only a zombie).
pub fn process_gone(pid: i32) -> bool {
    #[cfg(target_os = "linux")]
    {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        nix::sys::signal::kill(Pid::from_raw(pid), None) == Err(Errno::ESRCH)
    }
}

/// A running step: the whole tree of processes it starts.
#[derive(Debug)]
pub struct StepProcess {
    child: tokio::process::Child,
    pgid: i32,
    grace: Duration,
    #[cfg(target_os = "linux")]
    shim: super::containment::Shim,
}

/// The step's output pipes.
pub type OutputPipe = Box<dyn AsyncRead + Unpin + Send>;

impl StepProcess {
    /// Start `cmd` with stdin on `/dev/null` and stdout/stderr on pipes.
    pub fn spawn(cmd: &StepCommand) -> Result<(Self, OutputPipe, OutputPipe), StepError> {
        let shell = shell();
        let mut c = tokio::process::Command::new(&shell);
        c.args(super::script::unix_args(&cmd.script))
            .current_dir(&cmd.cwd)
            .env_clear()
            .envs(&cmd.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let spawn_err = |source| StepError::Spawn {
            shell: shell.clone(),
            cwd: cmd.cwd.clone(),
            source,
        };
        #[cfg(target_os = "linux")]
        let (mut shim, shim_end) = super::containment::Shim::pair().map_err(spawn_err)?;
        #[cfg(target_os = "linux")]
        {
            let ctl = shim_end.raw_fd();
            let cgroup = cmd
                .cgroup
                .as_ref()
                .map(|c| c.procs_fds())
                .unwrap_or_default();
            let grace = cmd.kill_grace;
            // Isolated steps get a pid namespace (made by the shim).
            let iso = cmd.isolation.clone().filter(|i| i.has_pid_namespace());
            // SAFETY: shim_fork is written for exactly this place (after
            // fork, before exec); the descriptors outlive the spawn.
            #[allow(unsafe_code)]
            unsafe {
                c.pre_exec(move || {
                    super::containment::shim_fork(ctl, &cgroup, grace, iso.as_deref())
                });
            }
        }
        // After the shim (which stays outside), before dropping root: the
        // shell's own mount namespace, with a /proc of its pid namespace.
        #[cfg(target_os = "linux")]
        if let Some(iso) = cmd.isolation.clone() {
            // SAFETY: Isolation::enter is written for this place (after
            // fork, before exec) and only uses data prepared before.
            #[allow(unsafe_code)]
            unsafe {
                c.pre_exec(move || iso.enter());
            }
        }
        // Registered after the shim: only the step's shell switches user.
        if let Some(run_as) = &cmd.run_as
            && is_privileged()
        {
            drop_privileges(&mut c, run_as);
        }
        let mut child = c.spawn().map_err(spawn_err)?;
        #[cfg(target_os = "linux")]
        drop(shim_end);
        #[cfg(target_os = "linux")]
        let pgid = shim.shell_pid().map_err(spawn_err)?;
        // A running child always has an id; pids fit in i32.
        #[cfg(not(target_os = "linux"))]
        let pgid = child.id().map(|p| p as i32).unwrap_or(0);
        let out: OutputPipe = Box::new(child.stdout.take().expect("piped stdout"));
        let err: OutputPipe = Box::new(child.stderr.take().expect("piped stderr"));
        Ok((
            Self {
                child,
                pgid,
                grace: cmd.kill_grace,
                #[cfg(target_os = "linux")]
                shim,
            },
            out,
            err,
        ))
    }

    /// The step's process group id (= pid of its shell).
    pub fn id(&self) -> i32 {
        self.pgid
    }

    /// Wait for the step's shell to exit, then end whatever it left running
    /// (SIGTERM, SIGKILL after the grace). Returns how the shell ended and
    /// whether anything had to be ended.
    pub async fn wait(&mut self) -> std::io::Result<(ExitKind, bool)> {
        #[cfg(target_os = "linux")]
        {
            let status = self.child.wait().await?;
            Ok((status.into(), self.shim.had_leftovers()))
        }
        #[cfg(not(target_os = "linux"))]
        {
            let status = self.child.wait().await?;
            let left = kill_group(self.pgid, self.grace).await;
            Ok((status.into(), left))
        }
    }

    /// End the whole step now: SIGTERM, SIGKILL after the grace, and wait
    /// until it is gone.
    pub async fn stop(&mut self) {
        #[cfg(target_os = "linux")]
        {
            self.shim.terminate();
            let limit = self.grace + Duration::from_secs(60);
            if tokio::time::timeout(limit, self.child.wait())
                .await
                .is_err()
            {
                tracing::warn!(pgid = self.pgid, "step shim still running: killing it");
                self.shim.kill_now();
                let _ = self.child.wait().await;
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let pg = Pid::from_raw(self.pgid);
            let _ = killpg(pg, Signal::SIGTERM);
            let _ = tokio::time::timeout(self.grace, self.child.wait()).await;
            let _ = killpg(pg, Signal::SIGKILL);
            let _ = self.child.wait().await;
            kill_group(self.pgid, Duration::ZERO).await;
        }
    }

    /// Kill everything at once without waiting (the step was dropped).
    pub fn kill_now(&mut self) {
        #[cfg(target_os = "linux")]
        self.shim.kill_now();
        if self.pgid > 0 {
            let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
        }
    }
}

async fn wait_group_gone(pgid: i32, limit: Duration) -> bool {
    let start = std::time::Instant::now();
    loop {
        if !group_alive(pgid) {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGTERM the process group, SIGKILL it after `grace`, and wait until no
/// live member is left (giving up, with a warning, a minute after SIGKILL).
/// Returns whether any member had to be signalled.
pub async fn kill_group(pgid: i32, grace: Duration) -> bool {
    if !group_alive(pgid) {
        return false;
    }
    let pg = Pid::from_raw(pgid);
    let _ = killpg(pg, Signal::SIGTERM);
    if wait_group_gone(pgid, grace).await {
        return true;
    }
    // SIGKILL cannot be ignored, but a process stuck in uninterruptible
    // sleep (D state) only dies when its syscall returns: give up waiting
    // after a minute rather than hang the builder.
    for _ in 0..60 {
        let _ = killpg(pg, Signal::SIGKILL);
        if wait_group_gone(pgid, Duration::from_secs(1)).await {
            return true;
        }
    }
    tracing::warn!(
        pgid,
        "process group still has live members a minute after SIGKILL"
    );
    true
}

/// A log proxy listener: a unix socket file, mode 0600.
#[derive(Debug)]
pub struct LogListener(pub(super) tokio::net::UnixListener);

/// One connection to a log proxy.
pub type LogStream = tokio::net::UnixStream;

impl LogListener {
    /// Bind the socket at `path` (replacing a stale one), private to
    /// `owner` (or the builder). Returns the listener and what steps are
    /// told to connect to (the path). Must be called inside a tokio runtime.
    pub fn bind(path: &Path, owner: Option<&RunAs>) -> std::io::Result<(Self, PathBuf)> {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = tokio::net::UnixListener::bind(path)?;
        make_private(path)?;
        if let Some(user) = owner {
            chown_to(path, user)?;
        }
        Ok((Self(listener), path.to_path_buf()))
    }

    /// Remove what [`LogListener::bind`] made at `endpoint`.
    pub fn remove(endpoint: &Path) {
        let _ = std::fs::remove_file(endpoint);
    }

    /// A std listener on a duplicate of the (non-blocking) socket.
    pub(super) fn try_clone_std(&self) -> std::io::Result<std::os::unix::net::UnixListener> {
        use std::os::fd::AsFd;
        Ok(self.0.as_fd().try_clone_to_owned()?.into())
    }
}
