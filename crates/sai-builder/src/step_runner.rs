//! Runs one build step.
//!
//! A step is run as `<shell> -e -c <step text>`, where the shell is
//! `/bin/bash` when it exists (saifiles written for the reference, which ran
//! steps in a bash script with `set -e`, may use bash syntax) and `/bin/sh`
//! otherwise ([`shell`]). The child:
//!
//! * has its cwd at [`StepSpec::cwd`] (the task's `src/`);
//! * gets exactly [`StepSpec::env`] as its environment (see [`crate::env`]);
//! * has stdin on `/dev/null`, stdout and stderr on pipes that are streamed
//!   live as [`LogChunk`]s on channels 1 and 2;
//! * leads its own process group, so the whole step (including background
//!   children) can be signalled at once;
//! * runs as [`StepSpec::run_as`] (uid, gid and that user's supplementary
//!   groups) when set; this needs the builder to run as root.
//!
//! Builder notices (`>saib> ...`, channel 3) mark the start and the end of
//! the step (exit code or reason, wall time; a failed step whose task
//! cgroup saw processes killed at the task's memory limit says so). The step ends with a
//! [`StepOutcome`]:
//!
//! * it exits ([`StepOutcome::Exited`] / [`StepOutcome::Signalled`]);
//!   processes it left behind in its group are killed;
//! * it runs longer than [`StepSpec::timeout`] ([`StepOutcome::TimedOut`]);
//! * stdout+stderr exceed [`StepSpec::log_limit`] bytes
//!   ([`StepOutcome::LogLimitExceeded`]; the bytes up to the limit are sent);
//! * the cancellation token fires ([`StepOutcome::Cancelled`]).
//!
//! In the last three cases the step gets SIGTERM, then SIGKILL after
//! [`StepSpec::kill_grace`], and [`run_step`] returns only once no live
//! process of it remains (zombies awaiting a reaper do not count). How a
//! step's whole tree is found is the platform's business
//! ([`crate::platform::StepProcess`]): on Linux even processes that called
//! `setsid` or double-forked are ended (a subreaper shim, and a task cgroup
//! where delegated); on other Unixes the process group; on Windows a job
//! object, with the step written as a batch script.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::log::{CH_STDERR, CH_STDOUT, LogChunk, LogSender};
use crate::platform::{ExitKind, StepCommand, StepProcess};
pub use crate::platform::{RunAs, StepError};
#[cfg(unix)]
pub use crate::platform::{group_alive, kill_group, shell};

/// Default per-step time limit (the reference's 30 minutes).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Default cap on a step's stdout+stderr bytes.
pub const DEFAULT_LOG_LIMIT: u64 = 64 * 1024 * 1024;
/// Default time between SIGTERM and SIGKILL.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(5);
/// How long output is still read after the step's process group is gone
/// (only matters when an escaped process keeps a pipe open).
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// Read size for stdout/stderr.
const READ_SIZE: usize = 4096;

/// One step to run.
#[derive(Debug, Clone)]
pub struct StepSpec {
    /// Step number as people read it (1 = the first step), for notices.
    pub step_no: u32,
    /// The step's shell text.
    pub script: String,
    /// Working directory (the task's `src/`).
    pub cwd: PathBuf,
    /// The complete environment.
    pub env: BTreeMap<String, String>,
    /// Wall-clock limit.
    pub timeout: Duration,
    /// Cap on stdout+stderr bytes.
    pub log_limit: u64,
    /// Time between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// Run as this user (requires root), or as the builder's own user.
    pub run_as: Option<RunAs>,
    /// The task's cgroup, where the builder has task cgroups.
    #[cfg(target_os = "linux")]
    pub cgroup: Option<Arc<crate::platform::cgroup::TaskCgroup>>,
    /// The task's view of the builder home, where steps are isolated.
    #[cfg(target_os = "linux")]
    pub isolation: Option<Arc<crate::platform::isolation::Isolation>>,
}

impl StepSpec {
    /// A step with the default timeout, log limit and kill grace, run as the
    /// builder's own user.
    pub fn new(
        step_no: u32,
        script: impl Into<String>,
        cwd: impl Into<PathBuf>,
        env: BTreeMap<String, String>,
    ) -> Self {
        Self {
            step_no,
            script: script.into(),
            cwd: cwd.into(),
            env,
            timeout: DEFAULT_TIMEOUT,
            log_limit: DEFAULT_LOG_LIMIT,
            kill_grace: DEFAULT_KILL_GRACE,
            run_as: None,
            #[cfg(target_os = "linux")]
            cgroup: None,
            #[cfg(target_os = "linux")]
            isolation: None,
        }
    }
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// The shell exited with this status (0 = success).
    Exited(i32),
    /// The shell was killed by this signal.
    Signalled(i32),
    /// The step ran past its timeout and was killed.
    TimedOut,
    /// The step wrote more than its log limit and was killed.
    LogLimitExceeded,
    /// The step was cancelled and killed.
    Cancelled,
}

impl StepOutcome {
    /// Whether the step succeeded.
    pub fn success(&self) -> bool {
        matches!(self, Self::Exited(0))
    }

    /// The reference's `ecode` for this outcome (reference 8.4): `0x8000 |
    /// status` exited, `0x4000 | signo` signalled, `0x2000` cancelled or log
    /// spew, `0x1000` timeout.
    pub fn reference_ecode(&self) -> u32 {
        match *self {
            Self::Exited(s) => 0x8000 | (s as u32 & 0xff),
            Self::Signalled(n) => 0x4000 | (n as u32 & 0xff),
            Self::LogLimitExceeded | Self::Cancelled => 0x2000,
            Self::TimedOut => 0x1000,
        }
    }
}

/// What [`run_step`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepReport {
    /// How the step ended.
    pub outcome: StepOutcome,
    /// Wall time from spawn to the end of the process group.
    pub duration: Duration,
    /// stdout+stderr bytes the step wrote (may exceed what was forwarded).
    pub log_bytes: u64,
    /// The step's process group id (= pid of its shell).
    pub pgid: i32,
}

/// Kills the step's whole process tree if [`run_step`] is dropped before
/// it finished (e.g. the daemon aborted the task), so no step outlives it.
struct TreeGuard<'a> {
    process: &'a mut StepProcess,
    armed: bool,
}

impl Drop for TreeGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.process.kill_now();
        }
    }
}

struct LogCounter {
    total: AtomicU64,
    limit: u64,
    exceeded: CancellationToken,
}

fn spawn_reader<R>(
    mut pipe: R,
    channel: u8,
    tx: LogSender,
    counter: Arc<LogCounter>,
) -> JoinHandle<()>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut buf = vec![0u8; READ_SIZE];
        let mut forwarding = true;
        loop {
            let n = match pipe.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let before = counter.total.fetch_add(n as u64, Ordering::SeqCst);
            let room = counter.limit.saturating_sub(before);
            let take = usize::try_from(room).unwrap_or(usize::MAX).min(n);
            if take < n {
                counter.exceeded.cancel();
            }
            if forwarding && take > 0 {
                let chunk = LogChunk {
                    channel,
                    bytes: Bytes::copy_from_slice(&buf[..take]),
                };
                // A closed receiver: keep draining so the step never blocks.
                forwarding = tx.send(chunk).await.is_ok();
            }
        }
    })
}

async fn notice(tx: &LogSender, text: String) {
    let _ = tx.send(LogChunk::notice(text)).await;
}

/// Processes the kernel killed so far for want of memory in the task's
/// cgroup.
fn oom_kills(spec: &StepSpec) -> u64 {
    #[cfg(target_os = "linux")]
    if let Some(cg) = &spec.cgroup {
        return cg.oom_kills();
    }
    let _ = spec;
    0
}

/// Why a failed step failed, when the task's memory limit killed some of
/// its processes since `before` (see [`oom_kills`]).
fn memory_limit_hit(spec: &StepSpec, before: u64) -> Option<String> {
    let killed = oom_kills(spec).checked_sub(before).filter(|&n| n > 0)?;
    #[cfg(target_os = "linux")]
    let limit = spec
        .cgroup
        .as_ref()
        .and_then(|c| c.memory_max())
        .map(|m| format!(" of {m} bytes"))
        .unwrap_or_default();
    #[cfg(not(target_os = "linux"))]
    let limit = String::new();
    Some(format!(
        "hit the task's memory limit{limit}: the kernel killed {killed} of its \
         processes (out of memory)"
    ))
}

/// Run one step, streaming its output to `tx`; see the module doc.
pub async fn run_step(
    spec: &StepSpec,
    tx: &LogSender,
    cancel: &CancellationToken,
) -> Result<StepReport, StepError> {
    if let Some(run_as) = &spec.run_as {
        run_as.check_switchable()?;
    }
    let command = StepCommand {
        script: spec.script.clone(),
        cwd: spec.cwd.clone(),
        env: spec.env.clone(),
        kill_grace: spec.kill_grace,
        run_as: spec.run_as.clone(),
        #[cfg(target_os = "linux")]
        cgroup: spec.cgroup.clone(),
        #[cfg(target_os = "linux")]
        isolation: spec.isolation.clone(),
    };
    let as_user = spec
        .run_as
        .as_ref()
        .map(|r| format!(" as {}", r.name))
        .unwrap_or_default();
    let mut lines = spec.script.lines();
    let first = lines.next().unwrap_or("");
    let more = if lines.next().is_some() { " ..." } else { "" };
    notice(
        tx,
        format!("Starting step {}{as_user}: {first}{more}", spec.step_no),
    )
    .await;
    if cancel.is_cancelled() {
        notice(
            tx,
            format!("Step {} cancelled before it started", spec.step_no),
        )
        .await;
        return Ok(StepReport {
            outcome: StepOutcome::Cancelled,
            duration: Duration::ZERO,
            log_bytes: 0,
            pgid: 0,
        });
    }
    let ooms_before = oom_kills(spec);
    let start = Instant::now();
    let (mut process, stdout, stderr) = StepProcess::spawn(&command)?;
    let pgid = process.id();
    let mut guard = TreeGuard {
        process: &mut process,
        armed: true,
    };
    let counter = Arc::new(LogCounter {
        total: AtomicU64::new(0),
        limit: spec.log_limit,
        exceeded: CancellationToken::new(),
    });
    let mut readers = vec![
        spawn_reader(stdout, CH_STDOUT, tx.clone(), counter.clone()),
        spawn_reader(stderr, CH_STDERR, tx.clone(), counter.clone()),
    ];

    enum End {
        Exit(std::io::Result<(ExitKind, bool)>),
        TimedOut,
        LogLimit,
        Cancelled,
    }
    let end = tokio::select! {
        status = guard.process.wait() => End::Exit(status),
        _ = tokio::time::sleep(spec.timeout) => End::TimedOut,
        _ = counter.exceeded.cancelled() => End::LogLimit,
        _ = cancel.cancelled() => End::Cancelled,
    };
    let step = spec.step_no;
    let outcome = match end {
        End::Exit(status) => {
            let (kind, leftovers) = status.map_err(StepError::Wait)?;
            if leftovers {
                notice(tx, format!("Step {step}: killed processes it left running")).await;
            }
            match kind {
                ExitKind::Code(code) => StepOutcome::Exited(code),
                ExitKind::Signal(sig) => StepOutcome::Signalled(sig),
            }
        }
        other => {
            let (outcome, why) = match other {
                End::TimedOut => (
                    StepOutcome::TimedOut,
                    format!("Step {step} TIMED OUT after {:?}: killing it", spec.timeout),
                ),
                End::LogLimit => (
                    StepOutcome::LogLimitExceeded,
                    format!(
                        "Step {step} exceeded the log limit of {} bytes: killing it",
                        spec.log_limit
                    ),
                ),
                _ => (
                    StepOutcome::Cancelled,
                    format!("Step {step} cancelled: killing it"),
                ),
            };
            notice(tx, why).await;
            guard.process.stop().await;
            outcome
        }
    };
    guard.armed = false;
    // Output of a dead group ends at EOF; an escaped process holding a pipe
    // gets DRAIN_GRACE.
    for r in &mut readers {
        if tokio::time::timeout(DRAIN_GRACE, &mut *r).await.is_err() {
            r.abort();
        }
    }
    if !outcome.success()
        && let Some(why) = memory_limit_hit(spec, ooms_before)
    {
        notice(tx, format!("Step {step} {why}")).await;
    }
    let duration = start.elapsed();
    let secs = duration.as_secs_f64();
    let text = match outcome {
        StepOutcome::Exited(0) => format!("Step {step} succeeded after {secs:.3}s"),
        StepOutcome::Exited(code) => {
            format!("Step {step} FAILED, exit code {code}, after {secs:.3}s")
        }
        StepOutcome::Signalled(sig) => {
            format!("Step {step} FAILED, killed by signal {sig}, after {secs:.3}s")
        }
        StepOutcome::TimedOut => format!("Step {step} FAILED: timed out after {secs:.3}s"),
        StepOutcome::LogLimitExceeded => {
            format!("Step {step} FAILED: log limit exceeded after {secs:.3}s")
        }
        StepOutcome::Cancelled => format!("Step {step} cancelled after {secs:.3}s"),
    };
    notice(tx, text).await;
    Ok(StepReport {
        outcome,
        duration,
        log_bytes: counter.total.load(Ordering::SeqCst),
        pgid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecodes_follow_the_reference() {
        assert_eq!(StepOutcome::Exited(0).reference_ecode(), 0x8000);
        assert_eq!(StepOutcome::Exited(2).reference_ecode(), 0x8002);
        assert_eq!(StepOutcome::Signalled(9).reference_ecode(), 0x4009);
        assert_eq!(StepOutcome::Cancelled.reference_ecode(), 0x2000);
        assert_eq!(StepOutcome::LogLimitExceeded.reference_ecode(), 0x2000);
        assert_eq!(StepOutcome::TimedOut.reference_ecode(), 0x1000);
        assert!(StepOutcome::Exited(0).success());
        assert!(!StepOutcome::Exited(1).success());
    }

    #[cfg(unix)]
    #[test]
    fn unknown_user_is_an_error() {
        match RunAs::lookup("no-such-user-sai-test") {
            Err(StepError::NoSuchUser(n)) => assert_eq!(n, "no-such-user-sai-test"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[cfg(unix)]
    #[test]
    fn root_lookup() {
        let root = RunAs::lookup("root").unwrap();
        assert!(root.uid.is_root());
        assert!(root.groups.contains(&root.gid));
    }

    #[cfg(unix)]
    #[test]
    fn owner_lookup() {
        let tmp = tempfile::tempdir().unwrap();
        let owner = RunAs::owner_of(tmp.path()).unwrap();
        assert_eq!(owner.uid, nix::unistd::Uid::effective());
        assert!(matches!(
            RunAs::owner_of(&tmp.path().join("missing")),
            Err(StepError::Owner { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn shell_exists() {
        assert!(shell().exists());
    }
}
