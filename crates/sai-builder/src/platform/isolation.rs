//! Task isolation on Linux: each step runs in a private mount namespace in
//! which the builder's shared roots (the jobs root, the git mirrors root,
//! the log proxy sockets root) are covered by empty tmpfs mounts and only
//! what this task needs is bind-mounted back at its own path: its job
//! directory and its log proxy directory (read-write) and its project's
//! mirror (read-only: the checkout's `objects/info/alternates` points at
//! it, so `git log` in the checkout needs it). Other projects' mirrors and
//! other tasks' job directories are not there to list or read.
//!
//! Each step also gets a pid namespace of its own, and a fresh `/proc` for
//! it is mounted in its mount namespace: the step sees only its own
//! processes (its shell is pid 2), so it cannot list other tasks' command
//! lines or environments, nor reach their files through `/proc/<pid>/cwd`
//! or `/proc/<pid>/root`. The namespace is made by the step's shim
//! ([`super::containment`]) just before it forks: [`Isolation::enter_pid_namespace`]
//! there, then its first child becomes the namespace's init
//! (`platform::pid_init`) and its second the step's shell, still a child of
//! the shim (so the shim sees the shell's exit status and signal exactly as
//! before). Orphans inside the namespace go to that init; the shim ends
//! them through it, and SIGKILLing the init makes the kernel kill
//! everything in the namespace.
//!
//! A fresh `/proc` is refused inside a user namespace where parts of the
//! host's `/proc` are masked or overmounted (a default podman container,
//! systemd's `ProtectKernelTunables=`): there [`available`] reports
//! [`Scope::SharedProc`] and steps get the mount namespace alone
//! ([`Isolation::with_shared_proc`]), with a start-up warning.
//!
//! As root the namespaces are plain `CLONE_NEWPID` (in the shim) and
//! `CLONE_NEWNS` (in the shell); otherwise (or when root lacks
//! `CAP_SYS_ADMIN`, as in a default podman container) the shim first makes
//! a user namespace mapping only the builder's own uid and gid (where
//! unprivileged user namespaces are allowed), which owns the other two.
//! Everything is prepared before the fork; [`Isolation::enter_pid_namespace`]
//! and [`Isolation::enter`] run between fork and exec and only make
//! async-signal-safe system calls on that prepared data.

#![allow(unsafe_code)]

use std::ffi::CString;
use std::io::{Error, Result};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::libc;

/// Most directories bound back into one step's view.
const MAX_KEEPS: usize = 8;

/// A directory shown to the step at its own path.
#[derive(Debug, Clone)]
struct Keep {
    path: CString,
    read_only: bool,
}

/// What one step's mount namespace shows; see the module doc.
#[derive(Debug, Clone)]
pub struct Isolation {
    covers: Vec<CString>,
    keeps: Vec<Keep>,
    cwd: CString,
    /// `"<uid> <uid> 1\n"` and `"<gid> <gid> 1\n"` for a user namespace.
    uid_map: CString,
    gid_map: CString,
    /// A pid namespace and `/proc` of the step's own (see [`Scope`]).
    pid_ns: bool,
}

/// How much of a step's view can be made private on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The builder home's shared roots and `/proc` (a pid namespace).
    Full,
    /// Only the builder home's shared roots: a fresh `/proc` cannot be
    /// mounted here (`why`), e.g. where parts of the host's `/proc` are
    /// masked or overmounted (podman's default masked paths, systemd's
    /// `ProtectKernelTunables=`), so steps still see every process.
    SharedProc {
        /// The error of the full probe.
        why: String,
    },
}

fn cstring(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| {
        Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{}: NUL in path", p.display()),
        )
    })
}

/// `p` with symlinks resolved (the checkout's alternates name the mirror
/// by its canonical path), or as given when it does not exist.
fn real(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

impl Isolation {
    /// Cover each of `covers` (existing directories are covered; missing
    /// ones skipped) and show `keeps` (directory, read-only) inside them;
    /// the step starts in `cwd`.
    pub fn new(covers: &[PathBuf], keeps: &[(PathBuf, bool)], cwd: &Path) -> Result<Isolation> {
        if keeps.len() > MAX_KEEPS {
            return Err(Error::other(format!(
                "at most {MAX_KEEPS} directories can be shown to a step"
            )));
        }
        let covers = covers
            .iter()
            .filter(|c| c.is_dir())
            .map(|c| cstring(&real(c)))
            .collect::<Result<_>>()?;
        let keeps = keeps
            .iter()
            .map(|(p, ro)| {
                Ok(Keep {
                    path: cstring(&real(p))?,
                    read_only: *ro,
                })
            })
            .collect::<Result<_>>()?;
        let uid = nix::unistd::geteuid();
        let gid = nix::unistd::getegid();
        Ok(Isolation {
            covers,
            keeps,
            cwd: cstring(&real(cwd))?,
            uid_map: CString::new(format!("{uid} {uid} 1\n")).expect("digits"),
            gid_map: CString::new(format!("{gid} {gid} 1\n")).expect("digits"),
            pid_ns: true,
        })
    }

    /// The same view without a pid namespace and `/proc` of its own (for
    /// [`Scope::SharedProc`]).
    pub fn with_shared_proc(mut self) -> Isolation {
        self.pid_ns = false;
        self
    }

    /// Whether steps get a pid namespace (made by the shim, which then
    /// calls [`Isolation::enter_pid_namespace`]).
    pub fn has_pid_namespace(&self) -> bool {
        self.pid_ns
    }

    /// Make the pid namespace the step's processes are forked into (as
    /// root; otherwise, or where root may not, inside a user namespace of
    /// the builder's own uid and gid, which this process then lives in
    /// too). Runs in the step's shim before it forks.
    ///
    /// # Safety
    /// Only async-signal-safe system calls on data prepared before the
    /// fork; call it only between fork and exec.
    pub unsafe fn enter_pid_namespace(&self) -> Result<()> {
        // SAFETY: our caller's contract.
        unsafe { self.unshare(libc::CLONE_NEWPID) }
    }

    /// `unshare(namespace)`: directly as root; otherwise, or where root
    /// may not, together with a user namespace mapping the builder's own
    /// uid and gid.
    ///
    /// # Safety
    /// As [`Isolation::enter_pid_namespace`]: only between fork and exec.
    unsafe fn unshare(&self, namespace: libc::c_int) -> Result<()> {
        // SAFETY: system calls on CStrings prepared before the fork.
        unsafe {
            if libc::unshare(namespace) != 0 {
                if libc::unshare(libc::CLONE_NEWUSER | namespace) != 0 {
                    return Err(Error::last_os_error());
                }
                write_file(c"/proc/self/setgroups", b"deny")?;
                write_file(c"/proc/self/uid_map", self.uid_map.as_bytes())?;
                write_file(c"/proc/self/gid_map", self.gid_map.as_bytes())?;
            }
        }
        Ok(())
    }

    /// Enter the step's mount namespace and set up its view, with a `/proc`
    /// of its pid namespace. Runs in the step's shell (forked after
    /// [`Isolation::enter_pid_namespace`]) before exec.
    ///
    /// # Safety
    /// Only async-signal-safe system calls on data prepared before the
    /// fork; call it only between fork and exec.
    pub unsafe fn enter(&self) -> Result<()> {
        // SAFETY (whole function): system calls on CStrings and stack
        // buffers that outlive them; no allocation.
        unsafe {
            // Root, or inside the user namespace the shim made for the
            // pid namespace; otherwise a user namespace of our own.
            self.unshare(libc::CLONE_NEWNS)?;
            check(libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            // Hold the kept directories before they are covered.
            let mut fds = [-1; MAX_KEEPS];
            for (fd, keep) in fds.iter_mut().zip(&self.keeps) {
                *fd = libc::open(
                    keep.path.as_ptr(),
                    libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
                );
                if *fd < 0 {
                    return Err(Error::last_os_error());
                }
            }
            for cover in &self.covers {
                check(libc::mount(
                    c"tmpfs".as_ptr(),
                    cover.as_ptr(),
                    c"tmpfs".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    c"mode=0755,size=64k".as_ptr().cast(),
                ))?;
            }
            for (fd, keep) in fds.iter().zip(&self.keeps) {
                if libc::mkdir(keep.path.as_ptr(), 0o755) != 0
                    && *libc::__errno_location() != libc::EEXIST
                {
                    return Err(Error::last_os_error());
                }
                let mut buf = [0u8; 32];
                let source = proc_fd_path(*fd, &mut buf);
                check(libc::mount(
                    source.as_ptr().cast(),
                    keep.path.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ))?;
                if keep.read_only {
                    // A remount must keep the flags the mount is locked
                    // with (in a user namespace), so read and repeat them.
                    let mut st: libc::statvfs = std::mem::zeroed();
                    if libc::fstatvfs(*fd, &mut st) != 0 {
                        return Err(Error::last_os_error());
                    }
                    let mut flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
                    for (st_flag, ms_flag) in [
                        (libc::ST_NOSUID, libc::MS_NOSUID),
                        (libc::ST_NODEV, libc::MS_NODEV),
                        (libc::ST_NOEXEC, libc::MS_NOEXEC),
                        (libc::ST_NOATIME, libc::MS_NOATIME),
                        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
                        (libc::ST_RELATIME, libc::MS_RELATIME),
                    ] {
                        if st.f_flag & st_flag != 0 {
                            flags |= ms_flag;
                        }
                    }
                    check(libc::mount(
                        std::ptr::null(),
                        keep.path.as_ptr(),
                        std::ptr::null(),
                        flags,
                        std::ptr::null(),
                    ))?;
                }
            }
            for fd in fds.iter().take(self.keeps.len()) {
                libc::close(*fd);
            }
            // This process is in the step's pid namespace: a /proc of it.
            if self.pid_ns {
                check(libc::mount(
                    c"proc".as_ptr(),
                    c"/proc".as_ptr(),
                    c"proc".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    std::ptr::null(),
                ))?;
            }
            // The cwd was entered before the covers: enter it again through
            // the new view, or `..` would lead into the covered roots.
            check(libc::chdir(self.cwd.as_ptr()))?;
        }
        Ok(())
    }
}

fn check(r: libc::c_int) -> Result<()> {
    if r != 0 {
        Err(Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Write `data` to `path` (one `write`). Async-signal-safe.
unsafe fn write_file(path: &std::ffi::CStr, data: &[u8]) -> Result<()> {
    // SAFETY: open/write/close on a CStr and a byte slice.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(Error::last_os_error());
        }
        let n = libc::write(fd, data.as_ptr().cast(), data.len());
        let err = Error::last_os_error();
        libc::close(fd);
        if n != data.len() as isize {
            return Err(err);
        }
    }
    Ok(())
}

/// `/proc/self/fd/<fd>` NUL-terminated in `buf`, without allocating.
fn proc_fd_path(fd: libc::c_int, buf: &mut [u8; 32]) -> &[u8] {
    const PREFIX: &[u8] = b"/proc/self/fd/";
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 12];
    let len = decimal(fd, &mut digits);
    let at = PREFIX.len() + len;
    buf[PREFIX.len()..at].copy_from_slice(&digits[..len]);
    buf[at] = 0;
    &buf[..=at]
}

/// Whether (and how far) steps can be isolated here, probed once per
/// process (with a scratch directory under `home`); the error says why not.
pub fn available(home: &Path) -> std::result::Result<Scope, String> {
    static PROBED: std::sync::OnceLock<std::result::Result<Scope, String>> =
        std::sync::OnceLock::new();
    PROBED
        .get_or_init(|| {
            let scratch = home.join(format!(".isolation-probe-{}", std::process::id()));
            match probe(&scratch) {
                Ok(()) => Ok(Scope::Full),
                Err(full) => match probe_shared_proc(&scratch) {
                    Ok(()) => Ok(Scope::SharedProc {
                        why: full.to_string(),
                    }),
                    Err(e) => Err(e.to_string()),
                },
            }
        })
        .clone()
}

/// Run a probe's test process, then remove its scratch directory; an error
/// unless the process succeeded.
fn run_probe(mut cmd: std::process::Command, scratch: &Path) -> Result<()> {
    let status = cmd.status()?;
    let _ = std::fs::remove_dir_all(scratch);
    if status.success() {
        Ok(())
    } else {
        Err(Error::other(format!(
            "isolated test process ended {status}"
        )))
    }
}

/// Whether a step could be isolated here without a pid namespace: a child
/// that enters the mount isolation of a scratch directory and exits.
pub fn probe_shared_proc(scratch: &Path) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let shown = scratch.join("shown");
    std::fs::create_dir_all(&shown)?;
    let iso = Isolation::new(&[scratch.to_path_buf()], &[(shown.clone(), true)], &shown)?
        .with_shared_proc();
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.args(["-c", "exit 0"]).current_dir(&shown);
    // SAFETY: `enter` is written for this place (after fork, before exec).
    unsafe {
        cmd.pre_exec(move || iso.enter());
    }
    run_probe(cmd, scratch)
}

/// Whether a step could be isolated here: a child that makes a pid
/// namespace, forks a shell into it that enters an isolation of a scratch
/// directory (with its own `/proc`) and checks that it is pid 1 there,
/// then exits. Errors say why not.
pub fn probe(scratch: &Path) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let shown = scratch.join("shown");
    std::fs::create_dir_all(&shown)?;
    let iso = Isolation::new(&[scratch.to_path_buf()], &[(shown.clone(), true)], &shown)?;
    let mut cmd = std::process::Command::new("/bin/sh");
    // `read` is a builtin: /proc/self is the shell itself.
    cmd.args([
        "-c",
        "read -r pid rest < /proc/self/stat && [ \"$$\" = 1 ] && [ \"$pid\" = 1 ]",
    ])
    .current_dir(&shown);
    // SAFETY: both are written for this place (after fork, before exec);
    // the middle process only forks, waits and exits.
    unsafe {
        cmd.pre_exec(move || {
            iso.enter_pid_namespace()?;
            match libc::fork() {
                -1 => Err(Error::last_os_error()),
                0 => iso.enter(),
                child => {
                    let mut st = 0;
                    while libc::waitpid(child, &mut st, 0) < 0
                        && *libc::__errno_location() == libc::EINTR
                    {}
                    libc::_exit(if libc::WIFEXITED(st) {
                        libc::WEXITSTATUS(st)
                    } else {
                        126
                    })
                }
            }
        });
    }
    run_probe(cmd, scratch)
}

/// `n` in decimal into `buf`, without allocating (safe between fork and
/// exec); returns the length.
pub(super) fn decimal(n: libc::pid_t, buf: &mut [u8; 12]) -> usize {
    let mut n = n.max(0) as u32;
    let mut rev = [0u8; 12];
    let mut len = 0;
    loop {
        rev[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        buf[i] = rev[len - 1 - i];
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_fd_paths_are_written_without_allocating() {
        let mut buf = [0u8; 32];
        assert_eq!(proc_fd_path(7, &mut buf), b"/proc/self/fd/7\0");
        assert_eq!(proc_fd_path(1234, &mut buf), b"/proc/self/fd/1234\0");
        assert_eq!(proc_fd_path(0, &mut buf), b"/proc/self/fd/0\0");
    }
}
