//! Linux: steps that cannot escape.
//!
//! Every step runs under a **shim**: the child the builder spawns makes
//! itself a child subreaper (`PR_SET_CHILD_SUBREAPER`), forks the step's
//! shell and stays behind as its parent. Whatever the step starts, even
//! after `setsid` or a double fork, stays a descendant of the shim: orphans
//! are reparented to it, not to init. The shim talks to the builder over a
//! socket pair:
//!
//! * it sends the shell's pid first (the shell leads the step's process
//!   group);
//! * when the shell exits, it ends what the step left behind (SIGTERM to the
//!   step's group and to its own children, SIGKILL after the grace time),
//!   reports `L` if there was anything, and exits with the shell's status;
//! * on `T` from the builder (cancel, timeout, log spew) it does the same at
//!   once;
//! * on end-of-file (the builder dropped the step, or the builder died,
//!   SIGKILL included: the kernel closes its end) it SIGKILLs everything
//!   immediately.
//!
//! Killing is a sweep: SIGKILL every child of the shim, reap, repeat until
//! it has no children left. Killing a process reparents its children to
//! the shim, so each round goes one level deeper, and a killed process
//! cannot fork again. The shell has `PR_SET_PDEATHSIG` = SIGKILL on the
//! shim, so a step never outlives it either.
//!
//! Where the builder has task cgroups ([`super::cgroup`]: a delegated
//! cgroup v2 subtree, or cgroup v1 hierarchies when task limits are set),
//! each task also gets a cgroup: the shim moves itself into it (in every
//! hierarchy) before forking, so everything the step starts is accounted
//! there, the configured memory / pids / CPU limits apply, and the end of
//! the task kills the whole cgroup, which also catches processes that left
//! the shim's tree by other means.
//!
//! Isolated steps ([`super::isolation`]) run in a pid namespace of their
//! own: the shim makes it and forks the namespace's init
//! (`platform::pid_init`) before the shell. The shell stays the shim's
//! child; orphans go to the init instead of the shim, so the shim counts,
//! signals and kills the init's children along with its own, and its final
//! sweep SIGKILLs the init, which makes the kernel kill the whole namespace
//! at once.
//!
//! The shim runs between `fork` and `exec` of a multi-threaded process: it
//! only makes async-signal-safe system calls on memory prepared before the
//! fork (no allocation, no locks), see [`shim_fork`].
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use nix::libc::{self, c_int, pid_t};

/// Builder -> shim: end the step now, politely first.
const ORDER_TERMINATE: u8 = b'T';
/// Shim -> builder: the step had left processes behind.
const REPORT_LEFTOVERS: u8 = b'L';
/// How long the shim keeps sweeping before it gives up on a process stuck
/// in uninterruptible sleep.
const SWEEP_LIMIT_MS: u64 = 60_000;

const CHILDREN: &CStr = c"/proc/thread-self/children";

/// A step's shim, seen from the builder.
#[derive(Debug)]
pub struct Shim {
    ctl: UnixStream,
}

/// The shim's end of the socket pair, until the step is spawned.
#[derive(Debug)]
pub struct ShimEnd {
    theirs: UnixStream,
}

impl Shim {
    /// A socket pair for one step.
    pub fn pair() -> std::io::Result<(Shim, ShimEnd)> {
        let (ours, theirs) = UnixStream::pair()?;
        Ok((Shim { ctl: ours }, ShimEnd { theirs }))
    }

    /// Read the shell's pid (sent before the spawn returned).
    pub fn shell_pid(&mut self) -> std::io::Result<i32> {
        self.ctl.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut b = [0u8; 4];
        self.ctl.read_exact(&mut b)?;
        Ok(i32::from_ne_bytes(b))
    }

    /// Ask the shim to end the step (SIGTERM, then SIGKILL after the grace).
    pub fn terminate(&mut self) {
        let _ = self.ctl.write_all(&[ORDER_TERMINATE]);
    }

    /// Make the shim SIGKILL everything at once.
    pub fn kill_now(&self) {
        let _ = self.ctl.shutdown(std::net::Shutdown::Both);
    }

    /// After the shim exited: whether it had to end leftover processes.
    pub fn had_leftovers(&mut self) -> bool {
        let _ = self.ctl.set_nonblocking(true);
        let mut b = [0u8; 1];
        matches!(self.ctl.read(&mut b), Ok(1) if b[0] == REPORT_LEFTOVERS)
    }
}

impl ShimEnd {
    /// The fd the forked shim keeps.
    pub fn raw_fd(&self) -> RawFd {
        self.theirs.as_raw_fd()
    }
}

/// Runs in the child between `fork` and `exec` (a `pre_exec` hook): joins
/// the task cgroup (if any), becomes a subreaper and forks. The new child
/// returns `Ok` and goes on to exec the step's shell; this process becomes
/// the shim and never returns.
///
/// # Safety
/// Only to be called in a freshly forked child of a possibly multi-threaded
/// process. `ctl` and `cgroup_procs` (one `cgroup.procs` per hierarchy of
/// the task cgroup) must be open descriptors.
pub unsafe fn shim_fork(
    ctl: RawFd,
    cgroup_procs: &[RawFd],
    grace: Duration,
    isolation: Option<&super::isolation::Isolation>,
) -> std::io::Result<()> {
    // SAFETY (whole function): only async-signal-safe system calls on
    // values that live on this stack or were prepared before the fork.
    unsafe {
        for &fd in cgroup_procs {
            // "0" moves the writing process.
            if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
        }
        if libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let shim = libc::getpid();
        let init = match isolation {
            Some(iso) => super::pid_init::fork_init(iso, ctl)?,
            None => 0,
        };
        // In a pid namespace of its own, the shell's parent (the shim) is
        // outside it: 0.
        let parent = if init > 0 { 0 } else { shim };
        match libc::fork() {
            -1 => Err(std::io::Error::last_os_error()),
            0 => {
                // The step's shell: its own group, and dead with the shim.
                if libc::setpgid(0, 0) != 0
                    || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    libc::_exit(125);
                }
                Ok(())
            }
            shell => shim_main(
                ctl,
                Tree::new(shell, init),
                grace.as_millis().min(u64::MAX as u128) as u64,
            ),
        }
    }
}

/// Milliseconds on the monotonic clock.
fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime is async-signal-safe and writes only `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// What the shim heard on its socket within `ms`.
enum Heard {
    Nothing,
    Terminate,
    Gone,
}

fn listen(ctl: c_int, ms: c_int) -> Heard {
    let mut p = libc::pollfd {
        fd: ctl,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll/read on our own descriptor and stack buffers.
    unsafe {
        if libc::poll(&mut p, 1, ms) <= 0 {
            return Heard::Nothing;
        }
        let mut b = [0u8; 1];
        match libc::read(ctl, b.as_mut_ptr().cast(), 1) {
            1 if b[0] == ORDER_TERMINATE => Heard::Terminate,
            1 => Heard::Nothing,
            -1 if *libc::__errno_location() == libc::EINTR => Heard::Nothing,
            _ => Heard::Gone,
        }
    }
}

/// The shim's children: the step's shell and, in a pid namespace, its init.
struct Tree {
    shell: pid_t,
    /// 0 without a pid namespace, and once reaped.
    init: pid_t,
    /// `/proc/<init>/task/<init>/children`, NUL-terminated.
    init_children: [u8; 64],
}

impl Tree {
    fn new(shell: pid_t, init: pid_t) -> Self {
        let mut buf = [0u8; 12];
        let len = super::isolation::decimal(init, &mut buf);
        let digits = &buf[..len];
        let mut init_children = [0u8; 64];
        let mut at = 0;
        for part in [
            b"/proc/".as_slice(),
            digits,
            b"/task/",
            digits,
            b"/children",
        ] {
            init_children[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        Tree {
            shell,
            init,
            init_children,
        }
    }

    /// Reap every child that has exited; remember the shell's status.
    fn reap(&mut self, status: &mut Option<c_int>) {
        loop {
            let mut st: c_int = 0;
            // SAFETY: waitpid writes only `st`.
            let pid = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            if pid == self.shell {
                *status = Some(st);
            }
            if pid == self.init {
                self.init = 0;
            }
        }
    }

    /// Call `f` with each process of the step that has no parent of the
    /// step's own left: the shim's children and the init's (not the init
    /// itself); returns how many.
    fn for_each_child(&self, mut f: impl FnMut(pid_t)) -> usize {
        let init = self.init;
        let mut n = 0;
        for_each_pid_in(CHILDREN, |pid| {
            if pid != init {
                f(pid);
                n += 1;
            }
        });
        if init > 0
            && let Ok(path) = CStr::from_bytes_until_nul(&self.init_children)
        {
            n += for_each_pid_in(path, f);
        }
        n
    }

    fn has_children(&self) -> bool {
        self.for_each_child(|_| {}) > 0
    }
}

/// Call `f` with each pid listed in the /proc file `path`; returns how many.
fn for_each_pid_in(path: &CStr, mut f: impl FnMut(pid_t)) -> usize {
    let mut buf = [0u8; 8192];
    // SAFETY: open/read/close of a /proc file into a stack buffer.
    let n = unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return 0;
        }
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        n
    };
    let mut count = 0;
    let mut pid: pid_t = 0;
    let mut digits = false;
    for &c in &buf[..n.max(0) as usize] {
        if c.is_ascii_digit() {
            pid = pid * 10 + (c - b'0') as pid_t;
            digits = true;
        } else if digits {
            f(pid);
            count += 1;
            pid = 0;
            digits = false;
        }
    }
    if digits {
        f(pid);
        count += 1;
    }
    count
}

fn nap(ms: c_int) {
    // SAFETY: poll with no descriptors is a sleep.
    unsafe { libc::poll(std::ptr::null_mut(), 0, ms) };
}

/// SIGKILL every descendant: kill the children, reap, repeat until none.
/// In a pid namespace the init goes too, which makes the kernel kill the
/// whole namespace at once (however fast the step forks).
fn sweep(tree: &mut Tree, status: &mut Option<c_int>) {
    let start = now_ms();
    loop {
        // SAFETY: kill(2) on our children (the init until it is reaped)
        // and on pids the kernel lists as our or the init's children.
        let mut listed = 0;
        if tree.init > 0 {
            unsafe { libc::kill(tree.init, libc::SIGKILL) };
            listed += 1;
        }
        listed += tree.for_each_child(|pid| unsafe {
            libc::kill(pid, libc::SIGKILL);
        });
        tree.reap(status);
        if listed == 0 {
            return;
        }
        if now_ms() - start > SWEEP_LIMIT_MS {
            return;
        }
        nap(5);
    }
}

/// The shim's life after the fork; see the module doc.
fn shim_main(ctl: c_int, mut tree: Tree, grace_ms: u64) -> ! {
    let shell = tree.shell;
    // SAFETY: signal dispositions, descriptor closing and the first write
    // are async-signal-safe calls on our own state.
    unsafe {
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT] {
            libc::signal(sig, libc::SIG_IGN);
        }
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        let pid = shell.to_ne_bytes();
        libc::write(ctl, pid.as_ptr().cast(), 4);
        // Keep only stdio and the socket: in particular not the pipe that
        // tells the spawning builder the exec succeeded, nor its end of our
        // socket.
        close_from(3, ctl);
    }
    let mut status = None;
    let mut kill_now = false;
    loop {
        tree.reap(&mut status);
        if status.is_some() {
            break;
        }
        match listen(ctl, 50) {
            Heard::Nothing => {}
            Heard::Terminate => break,
            Heard::Gone => {
                kill_now = true;
                break;
            }
        }
    }
    let mut leftovers = false;
    if !kill_now {
        leftovers = status.is_some() && tree.has_children();
        // SAFETY: signalling the step's group and our (and the init's)
        // children; the init passes it on to its whole namespace.
        unsafe {
            libc::kill(-shell, libc::SIGTERM);
            tree.for_each_child(|pid| {
                libc::kill(pid, libc::SIGTERM);
            });
            if tree.init > 0 {
                libc::kill(tree.init, libc::SIGTERM);
            }
        }
        let deadline = now_ms() + grace_ms;
        while now_ms() < deadline {
            tree.reap(&mut status);
            if !tree.has_children() {
                break;
            }
            if let Heard::Gone = listen(ctl, 20) {
                break;
            }
        }
    }
    sweep(&mut tree, &mut status);
    if leftovers {
        // SAFETY: a write to our socket.
        unsafe { libc::write(ctl, [REPORT_LEFTOVERS].as_ptr().cast(), 1) };
    }
    exit_like(status)
}

/// Close every descriptor from `first` on, except `keep`.
///
/// # Safety
/// Only for the shim, which owns no Rust objects wrapping those fds.
unsafe fn close_from(first: c_int, keep: c_int) {
    // SAFETY: close_range(2) on ranges that exclude `keep`; a kernel
    // without it gets the loop.
    unsafe {
        let ranges = [(first, keep - 1), (keep + 1, c_int::MAX)];
        for (lo, hi) in ranges {
            if lo > hi {
                continue;
            }
            if libc::syscall(libc::SYS_close_range, lo as u32, hi as u32, 0) != 0 {
                for fd in lo..hi.min(4096) {
                    libc::close(fd);
                }
            }
        }
    }
}

/// Exit with the shell's status: its code, or die of its signal.
fn exit_like(status: Option<c_int>) -> ! {
    // SAFETY: async-signal-safe calls that end this process.
    unsafe {
        match status {
            Some(st) if libc::WIFEXITED(st) => libc::_exit(libc::WEXITSTATUS(st)),
            Some(st) if libc::WIFSIGNALED(st) => {
                let sig = libc::WTERMSIG(st);
                let no_core = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::setrlimit(libc::RLIMIT_CORE, &no_core);
                libc::signal(sig, libc::SIG_DFL);
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, sig);
                libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
                libc::kill(libc::getpid(), sig);
                libc::_exit(128 + sig)
            }
            _ => libc::_exit(255),
        }
    }
}
