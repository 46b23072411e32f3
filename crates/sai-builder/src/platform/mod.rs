//! What differs between the operating systems the builder runs on.
//!
//! Everything else in sai-builder is written once; this module is the only
//! place with `cfg(unix)` / `cfg(windows)` / `cfg(target_os = "linux")`.
//!
//! | item | Unix | Windows |
//! |---|---|---|
//! | [`StepCommand`] (the shell of a step) | `<sh> -e -c <text>` | the text as a `.bat` script run by `cmd /D /C` ([`script::windows_batch`]) |
//! | [`StepProcess`] (a step's whole process tree) | its own process group; on Linux also a subreaper shim ([`containment`]) and a task cgroup, v2 where delegated, else v1 when limits are set ([`cgroup`]) | a job object (process-wrap) |
//! | [`RunAs`] (user switching) | uid, gid and supplementary groups, set in the child | refused with [`StepError::RunAsUnsupported`] |
//! | log proxy endpoints | unix sockets (mode 0600) | loopback TCP listeners |
//! | [`free_disk_bytes`] | `statvfs(2)` | `GetDiskFreeSpaceExW` (fs4) |
//! | [`load`] (load average, memory) | `/proc/loadavg`, `/proc/meminfo` (Linux; `None` elsewhere) | `None` |
//! | task isolation (a step sees only its own job dir) | Linux: a private mount namespace and pid namespace with its own `/proc` ([`isolation`]); other Unix: none | none |
//! | file locks (mirror, devices) | `std::fs::File::lock` (flock) | `std::fs::File::lock` (LockFileEx) |

pub mod load;
pub mod script;

#[cfg(target_os = "linux")]
pub mod cgroup;
#[cfg(target_os = "linux")]
pub mod containment;
#[cfg(unix)]
#[cfg_attr(
    not(all(target_os = "linux", target_env = "gnu", target_feature = "crt-static")),
    allow(dead_code)
)]
mod files_db;
#[cfg(target_os = "linux")]
pub mod isolation;
#[cfg(target_os = "linux")]
mod pid_init;
#[cfg(unix)]
mod unix;
#[cfg(windows)]
mod windows;

#[cfg(unix)]
pub use unix::*;
#[cfg(windows)]
pub use windows::*;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// A step that could not be run at all.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The configured user does not exist.
    #[error("step user {0:?} does not exist")]
    NoSuchUser(String),
    /// Looking the user up failed.
    #[error("looking up step user {name:?}: {source}")]
    UserLookup {
        /// The user name.
        name: String,
        /// The error.
        source: std::io::Error,
    },
    /// The owner of a path could not be read.
    #[error("reading the owner of {path}: {source}")]
    Owner {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A step user is configured but the builder is not root.
    #[error("cannot run steps as {0:?}: the builder is not running as root")]
    NotRoot(String),
    /// A step user is configured on a platform without user switching.
    #[error(
        "cannot run steps as {0:?}: run_as is only supported on Unix; on this platform steps run as the builder's own account (remove run_as from the builder config)"
    )]
    RunAsUnsupported(String),
    /// The step cannot be written as a script for this platform.
    #[error("writing the step script: {0}")]
    Script(#[from] script::ScriptError),
    /// The shell could not be started.
    #[error("starting {shell} in {cwd}: {source}")]
    Spawn {
        /// The shell.
        shell: PathBuf,
        /// The working directory.
        cwd: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Waiting for the step failed.
    #[error("waiting for the step: {0}")]
    Wait(std::io::Error),
}

/// What a log proxy listener does the same way on every platform (its
/// socket type and `bind`/`remove` are per platform).
impl LogListener {
    /// The next connection.
    pub async fn accept(&self) -> std::io::Result<LogStream> {
        self.0.accept().await.map(|(s, _)| s)
    }

    /// Connections waiting in the backlog (a client that wrote and exited
    /// just before the stop), taken with plain non-blocking accept(2) calls
    /// on a duplicate of the listening socket, which stays bound.
    pub fn drain_backlog(&self) -> Vec<LogStream> {
        let mut out = Vec::new();
        if let Ok(std_listener) = self.try_clone_std() {
            while let Ok((stream, _)) = std_listener.accept() {
                if let Ok(stream) = stream
                    .set_nonblocking(true)
                    .and_then(|()| LogStream::from_std(stream))
                {
                    out.push(stream);
                }
            }
        }
        out
    }
}

/// Everything needed to start one step, independent of the platform.
#[derive(Debug, Clone)]
pub struct StepCommand {
    /// The step's text (shell on Unix, batch on Windows).
    pub script: String,
    /// Working directory.
    pub cwd: PathBuf,
    /// The complete environment (nothing is inherited).
    pub env: BTreeMap<String, String>,
    /// Time between the polite stop request and the hard kill.
    pub kill_grace: Duration,
    /// The user to run as, if not the builder's own.
    pub run_as: Option<RunAs>,
    /// The task's cgroup to start the step in (Linux, where available).
    #[cfg(target_os = "linux")]
    pub cgroup: Option<std::sync::Arc<cgroup::TaskCgroup>>,
    /// The step's own view of the builder home (Linux).
    #[cfg(target_os = "linux")]
    pub isolation: Option<std::sync::Arc<isolation::Isolation>>,
}

/// How a step's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal (Unix only).
    Signal(i32),
}

impl From<std::process::ExitStatus> for ExitKind {
    fn from(status: std::process::ExitStatus) -> Self {
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            if let Some(sig) = status.signal() {
                return Self::Signal(sig);
            }
        }
        Self::Code(status.code().unwrap_or(255))
    }
}
