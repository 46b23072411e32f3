//! The init (pid 1) of an isolated step's pid namespace
//! ([`super::isolation`]).
//!
//! The step's shim forks it first, right after making the namespace, and
//! then forks the step's shell (pid 2) itself. The init runs no step code:
//!
//! * it reaps every orphan of the namespace (they are reparented to it, not
//!   to the shim, whose subreaper role stops at the namespace boundary);
//! * it passes SIGTERM, SIGINT, SIGHUP and SIGQUIT on to every other process
//!   in the namespace (`kill(-1, ..)`): the pid 1 of a namespace never gets
//!   a signal it has no handler for, so the shim's SIGTERM on cancel would
//!   otherwise be lost;
//! * it exits when the builder's end of the shim's socket is closed, and
//!   dies with the shim (`PR_SET_PDEATHSIG`); when it is gone, the kernel
//!   SIGKILLs everything left in the namespace. The shim ends a step by
//!   SIGKILLing it.
//!
//! It is not dumpable, so a step cannot reach the builder's files through
//! `/proc/1/root` or `/proc/1/cwd` (the init stays in the shim's mount
//! namespace). Like the shim it runs between fork and exec of a
//! multi-threaded process: async-signal-safe system calls only.
#![allow(unsafe_code)]

use std::io::{Error, Result};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::libc::{self, c_int, pid_t};

use super::isolation::Isolation;

/// Signals passed on to the namespace.
const FORWARDED: [c_int; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];

/// The last forwarded signal received and not yet passed on.
static PENDING: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: c_int) {
    if sig != libc::SIGCHLD {
        PENDING.store(sig, Ordering::Relaxed);
    }
}

/// In the shim before it forks the step's shell: make the step's pid
/// namespace and fork its init. Returns the init's pid (as the shim sees
/// it); the init itself never returns.
///
/// # Safety
/// Only between fork and exec of a possibly multi-threaded process; `ctl`
/// is the shim's socket to the builder.
pub unsafe fn fork_init(iso: &Isolation, ctl: c_int) -> Result<pid_t> {
    // SAFETY: async-signal-safe calls on data prepared before the fork.
    unsafe {
        iso.enter_pid_namespace()?;
        match libc::fork() {
            -1 => Err(Error::last_os_error()),
            0 => init_main(ctl),
            init => Ok(init),
        }
    }
}

/// The init's life; see the module doc.
unsafe fn init_main(ctl: c_int) -> ! {
    // SAFETY (whole function): async-signal-safe system calls on our own
    // stack; the handler only stores to an atomic.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        libc::prctl(libc::PR_SET_NAME, c"sai-step-init".as_ptr(), 0, 0, 0);
        // Nothing but the socket: above all not the pipe that tells the
        // spawning builder the shell's exec succeeded, nor stdout/stderr.
        for (lo, hi) in [(0, ctl - 1), (ctl + 1, c_int::MAX)] {
            if lo <= hi && libc::syscall(libc::SYS_close_range, lo as u32, hi as u32, 0) != 0 {
                for fd in lo..hi.min(4096) {
                    libc::close(fd);
                }
            }
        }
        let mut wanted: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut wanted);
        for sig in FORWARDED.into_iter().chain([libc::SIGCHLD]) {
            libc::sigaddset(&mut wanted, sig);
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_signal as extern "C" fn(c_int) as usize;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(sig, &act, std::ptr::null_mut());
        }
        // Blocked except while waiting in ppoll: none is missed between
        // the check and the wait.
        libc::sigprocmask(libc::SIG_BLOCK, &wanted, std::ptr::null_mut());
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        loop {
            let mut st: c_int = 0;
            while libc::waitpid(-1, &mut st, libc::WNOHANG) > 0 {}
            let sig = PENDING.swap(0, Ordering::Relaxed);
            if sig != 0 {
                libc::kill(-1, sig);
            }
            // Only hang-up and errors are reported for no events.
            let mut p = libc::pollfd {
                fd: ctl,
                events: 0,
                revents: 0,
            };
            if libc::ppoll(&mut p, 1, std::ptr::null(), &none) > 0 && p.revents != 0 {
                libc::_exit(0);
            }
        }
    }
}
