//! One task from offer to result, built from the other modules.
//!
//! [`run_task`] takes a [`TaskOffer`] and:
//!
//! 1. takes an instance index of the platform (none free: infra error);
//! 2. makes `<home>/jobs/<VN>` (a leftover dir of the same VN, e.g.
//!    from a reset task, is removed first), makes sure the commit is in the
//!    project mirror and checks it out into `src/` ([`crate::git_mirror`]):
//!    on Unix, the job dir of the instance's previous task of the same fetch
//!    URL is taken over and updated in place to what a fresh checkout would
//!    be (see [`crate::jobdir`]), else a fresh one is made;
//!    with a step user, chowns the job dir to it;
//! 3. opens the task's log proxies ([`crate::logproxy`]) and builds the
//!    environment ([`crate::env`]);
//! 4. runs the steps in order ([`crate::step_runner`]) until one fails, with
//!    the task's log budget shared by its steps;
//! 5. after the steps, passed or failed, scans the test report globs, and
//!    after success the artifact globs ([`crate::artifacts`]).
//!
//! Everything the server must hear about is sent as [`TaskEvent`]s, in
//! order; the return value is the [`TaskResult`] for `task_finished`.
//! Failures of the builder itself (fetch, checkout, disk) are
//! [`TaskResult::InfraError`], not build failures. The job dir is left in
//! place for inspection; [`crate::housekeeping`] removes it later.

use std::collections::BTreeMap;
#[cfg(target_os = "linux")]
use std::sync::Arc;
use std::time::Duration;

use sai_core::protocol::{TaskOffer, TaskResult};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::artifacts::{Artifact, scan};
use crate::env::{StepEnvInput, build_env};
use crate::git_mirror::Mirror;
use crate::instances::InstancePool;
use crate::jobdir::{FileStamp, LastJobDir, LastJobDirs, Layout, chown_tree, vn};
use crate::log::LogChunk;
use crate::logproxy::LogProxies;
use crate::step_runner::{
    DEFAULT_KILL_GRACE, DEFAULT_LOG_LIMIT, DEFAULT_TIMEOUT, RunAs, StepOutcome, StepSpec, run_step,
};

/// How a task ended, as a sentence for logs (steps numbered from 1).
pub fn describe_result(result: &TaskResult) -> String {
    match result {
        TaskResult::Success => "succeeded".to_string(),
        TaskResult::Failed { exit_code, step } => {
            format!(
                "failed: step {} exited with {exit_code}",
                u64::from(*step) + 1
            )
        }
        TaskResult::Cancelled => "was cancelled".to_string(),
        TaskResult::InfraError { reason } => {
            format!("could not run here (not the build's fault): {reason}")
        }
        TaskResult::HandedBack { reason } => format!("was handed back: {reason}"),
    }
}

/// Exit code reported for a step killed by its timeout (as `timeout(1)`).
pub const EXIT_TIMED_OUT: i32 = 124;
/// Exit code reported for a step killed for exceeding the log budget.
pub const EXIT_LOG_LIMIT: i32 = 125;
/// Largest test report uploaded (the server parses at most this much).
pub const MAX_TEST_REPORT_BYTES: u64 = 8 << 20;
/// Time log proxies get to deliver bytes written just before a task ended.
const PROXY_DRAIN: Duration = Duration::from_secs(1);

/// What one platform's tasks run with.
#[derive(Debug, Clone)]
pub struct TaskContext {
    /// The builder home.
    pub layout: Layout,
    /// Instance indexes of the platform.
    pub instances: InstancePool,
    /// The platform's extra environment.
    pub platform_env: BTreeMap<String, String>,
    /// `SAI_PARALLEL`.
    pub parallel: u32,
    /// Per-step time limit.
    pub step_timeout: Duration,
    /// Log bytes (stdout+stderr) one task may write, over all its steps.
    pub log_limit: u64,
    /// SIGTERM-to-SIGKILL grace.
    pub kill_grace: Duration,
    /// Step user (when the builder is root).
    pub run_as: Option<RunAs>,
    /// Whether steps see only their own job dir (Linux; see
    /// [`crate::platform::isolation`]).
    pub isolate: bool,
    /// Where task cgroups are made (Linux, delegated cgroup v2).
    #[cfg(target_os = "linux")]
    pub cgroups: Option<Arc<crate::platform::cgroup::CgroupParent>>,
    /// Each instance's last job dir, taken over by its next task.
    pub last_job_dirs: LastJobDirs,
    /// Each instance's log proxy, taken over by its next task.
    pub log_proxies: LogProxies,
}

impl TaskContext {
    /// A context with the default limits, running steps as the builder's user.
    pub fn new(layout: Layout, instances: InstancePool, parallel: u32) -> Self {
        Self {
            layout,
            instances,
            platform_env: BTreeMap::new(),
            parallel,
            step_timeout: DEFAULT_TIMEOUT,
            log_limit: DEFAULT_LOG_LIMIT,
            kill_grace: DEFAULT_KILL_GRACE,
            run_as: None,
            isolate: false,
            #[cfg(target_os = "linux")]
            cgroups: None,
            last_job_dirs: LastJobDirs::default(),
            log_proxies: LogProxies::default(),
        }
    }
}

/// Progress of a task, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskEvent {
    /// Log bytes (steps, notices, proxies).
    Log(LogChunk),
    /// Step `step` (0-based) started.
    StepStarted {
        /// 0-based step index.
        step: u32,
    },
    /// Step `step` ended.
    StepFinished {
        /// 0-based step index.
        step: u32,
        /// Exit code: the shell's, `128 + signal`, [`EXIT_TIMED_OUT`],
        /// [`EXIT_LOG_LIMIT`], or -1 when cancelled.
        exit_code: i32,
        /// Wall time.
        duration: Duration,
    },
    /// A file to upload (only after every step succeeded).
    Artifact(Artifact),
    /// A JUnit XML test report to upload (after the steps, passed or failed).
    TestReport(Artifact),
}

fn exit_code(outcome: StepOutcome) -> i32 {
    match outcome {
        StepOutcome::Exited(c) => c,
        StepOutcome::Signalled(s) => 128 + s,
        StepOutcome::TimedOut => EXIT_TIMED_OUT,
        StepOutcome::LogLimitExceeded => EXIT_LOG_LIMIT,
        StepOutcome::Cancelled => -1,
    }
}

fn infra(reason: impl Into<String>) -> TaskResult {
    TaskResult::InfraError {
        reason: reason.into(),
    }
}

/// Forward log chunks as events until every sender is gone.
fn spawn_forwarder(
    mut rx: mpsc::Receiver<LogChunk>,
    events: mpsc::Sender<TaskEvent>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(c) = rx.recv().await {
            if events.send(TaskEvent::Log(c)).await.is_err() {
                // Nobody listens: keep draining so producers never block.
                while rx.recv().await.is_some() {}
            }
        }
    })
}

/// Check `hash` out into `src` (in `job_dir`), taking over the earlier job
/// dir `reuse` (its path and index stamp) when given and possible: (what
/// was written, whether `reuse` was taken over). A job dir that cannot be
/// updated in place is moved back to its old name (housekeeping removes it)
/// and a fresh checkout made.
fn check_out(
    mirror: &crate::git_mirror::OpenMirror<'_>,
    hash: &str,
    job_dir: &std::path::Path,
    src: &std::path::Path,
    reuse: Option<(std::path::PathBuf, FileStamp)>,
) -> Result<(crate::git_mirror::CheckoutStats, bool), crate::git_mirror::GitError> {
    #[cfg(unix)]
    if let Some((prev, stamp)) = &reuse
        && prev.is_dir()
    {
        let prev = prev.as_path();
        let reused = crate::jobdir::reclaim_job_dir(prev, job_dir)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                let index = src.join(".git").join("index");
                match FileStamp::of(&index) {
                    Ok(now) if now == *stamp => Ok(()),
                    _ => Err("its index was changed by a step".to_string()),
                }
            })
            .and_then(|()| {
                mirror
                    .checkout_reusing(hash, src)
                    .map_err(|e| e.to_string())
            });
        match reused {
            Ok(stats) => return Ok((stats, true)),
            Err(why) => {
                tracing::warn!(
                    "job dir {} not reusable ({why}): checking out afresh",
                    prev.display()
                );
                if job_dir.exists() && std::fs::rename(job_dir, prev).is_err() {
                    let _ = std::fs::remove_dir_all(job_dir);
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (reuse, job_dir);
    Ok((mirror.checkout(hash, src)?, false))
}

/// Run `offer` to the end; see the module doc.
///
/// Ordering: a step's log chunks all come between its `StepStarted` and
/// `StepFinished`; builder notices are in line with them; bytes from the log
/// proxies (written by any process at any time) are forwarded as they come.
/// Everything is sent before this returns.
pub async fn run_task(
    ctx: &TaskContext,
    offer: &TaskOffer,
    events: &mpsc::Sender<TaskEvent>,
    cancel: &CancellationToken,
) -> TaskResult {
    let result = run_inner(ctx, offer, events, cancel).await;
    if let TaskResult::InfraError { reason } = &result {
        let _ = events
            .send(TaskEvent::Log(LogChunk::notice(format!(
                "Builder problem: {reason}"
            ))))
            .await;
    }
    result
}

async fn run_inner(
    ctx: &TaskContext,
    offer: &TaskOffer,
    events: &mpsc::Sender<TaskEvent>,
    cancel: &CancellationToken,
) -> TaskResult {
    let notice = |text: String| async move {
        let _ = events.send(TaskEvent::Log(LogChunk::notice(text))).await;
    };
    let vn = match vn(&offer.task_id) {
        Ok(v) => v,
        Err(e) => return infra(e.to_string()),
    };
    let Some(instance) = ctx.instances.acquire() else {
        return infra(format!(
            "no free instance of platform {}",
            offer.offer_platform
        ));
    };
    notice(format!(
        "Task {} ({}) on instance {}: {} {} at {}",
        offer.task_id,
        offer.platform,
        instance.idx(),
        offer.project,
        offer.git_ref,
        offer.hash
    ))
    .await;

    // Source.
    let job_dir = ctx.layout.job_dir(&vn);
    let src = ctx.layout.src_dir(&vn);
    if job_dir.exists()
        && let Err(e) = tokio::fs::remove_dir_all(&job_dir).await
    {
        return infra(format!("removing old {}: {e}", job_dir.display()));
    }
    let reuse = ctx
        .last_job_dirs
        .take(instance.idx(), &offer.fetch_url)
        .filter(|last| last.vn != vn)
        .map(|last| (ctx.layout.job_dir(&last.vn), last.index));
    // One trip to the blocking pool: open the mirror, fetch, check out.
    let prepare = {
        let (home, url) = (ctx.layout.home().to_path_buf(), offer.fetch_url.clone());
        let (git_ref, hash) = (offer.git_ref.clone(), offer.hash.clone());
        let (job_dir, dest) = (job_dir.clone(), src.clone());
        tokio::task::spawn_blocking(move || {
            let mirror = Mirror::open(&home, &url)?;
            let (ensured, stats) = {
                let opened = mirror.opened()?;
                let ensured = opened.ensure_commit(&git_ref, &hash)?;
                (ensured, check_out(&opened, &hash, &job_dir, &dest, reuse)?)
            };
            Ok::<_, crate::git_mirror::GitError>((mirror, ensured, stats))
        })
    };
    let prepared = tokio::select! {
        r = prepare => match r {
            Ok(r) => r,
            Err(e) => return infra(format!("git worker: {e}")),
        },
        _ = cancel.cancelled() => {
            notice("Task cancelled while fetching".to_string()).await;
            return TaskResult::Cancelled;
        }
    };
    let mirror = match prepared {
        Ok((mirror, ensured, (stats, reused))) => {
            let how = if reused {
                "the previous job dir updated in place; "
            } else {
                ""
            };
            notice(format!(
                "Checked out {} ({ensured}; {how}{} files written)",
                offer.hash, stats.files
            ))
            .await;
            mirror
        }
        Err(e) => return infra(e.to_string()),
    };
    tracing::debug!(task = %offer.task_id, mirror = %mirror.path().display(), "source ready");
    if let Some(user) = &ctx.run_as {
        let (dir, user) = (job_dir.clone(), user.clone());
        let (m, checkout) = (mirror.clone(), src.clone());
        let chowned = tokio::task::spawn_blocking(move || {
            chown_tree(&dir, &user).map_err(|e| e.to_string())?;
            // The owners (and so ctime) changed: keep the index in step,
            // for the next task's reuse of this checkout.
            m.restat_index(&checkout).map_err(|e| e.to_string())
        });
        match chowned.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return infra(format!("chown {}: {e}", job_dir.display())),
            Err(e) => return infra(format!("chown worker: {e}")),
        }
    }
    // Kept for the instance's next task, with its index as left now.
    if let Ok(index) = FileStamp::of(&src.join(".git").join("index")) {
        ctx.last_job_dirs.set(
            instance.idx(),
            LastJobDir {
                fetch_url: offer.fetch_url.clone(),
                vn: vn.clone(),
                index,
            },
        );
    }

    // Log proxies and environment.
    let owner = ctx.run_as.as_ref();
    let (proxy_tx, proxy_rx) = mpsc::channel::<LogChunk>(64);
    let proxy_forwarder = spawn_forwarder(proxy_rx, events.clone());
    let proxy = match ctx
        .log_proxies
        .take_or_bind(instance.idx(), &ctx.layout.run_dir(&vn), owner)
    {
        Ok(p) => p,
        Err(e) => return infra(format!("log proxy sockets: {e}")),
    };
    let serving = proxy.serve(proxy_tx);
    let env = match build_env(&StepEnvInput {
        project: &offer.project,
        git_ref: &offer.git_ref,
        task_id: &offer.task_id,
        instance_idx: instance.idx(),
        parallel: ctx.parallel,
        home: ctx.layout.home(),
        logproxy: Some(proxy.paths()),
        platform_env: &ctx.platform_env,
    }) {
        Ok(e) => e,
        Err(e) => return infra(e.to_string()),
    };

    // The task's cgroup: all its steps' processes, killed and removed when
    // the task ends.
    #[cfg(target_os = "linux")]
    let cgroup = match &ctx.cgroups {
        Some(parent) => match parent.create_task(&vn) {
            Ok(cg) => Some(Arc::new(cg)),
            Err(e) => return infra(format!("task cgroup in {parent}: {e}")),
        },
        None => None,
    };

    // What the steps see of the builder home: their own job dir, log proxy
    // dir and (read-only, for the checkout's alternates) project mirror.
    #[cfg(target_os = "linux")]
    let isolation = if ctx.isolate {
        use crate::platform::isolation::{Isolation, Scope, available};
        let scope = match available(ctx.layout.home()) {
            Ok(scope) => scope,
            Err(why) => {
                return infra(format!(
                    "task isolation cannot be set up on this builder ({why}): run sai-builder as \
                     root or allow unprivileged user namespaces, or set \"isolate_tasks\": false \
                     in its config"
                ));
            }
        };
        let run_dir = ctx.layout.run_dir(&vn);
        let covers = [
            ctx.layout.jobs_dir(),
            ctx.layout.mirrors_dir(),
            run_dir
                .parent()
                .map(std::path::Path::to_path_buf)
                .unwrap_or_default(),
        ];
        let keeps = [
            (job_dir.clone(), false),
            (run_dir, false),
            (mirror.path().to_path_buf(), true),
        ];
        match Isolation::new(&covers, &keeps, &src) {
            Ok(iso) if scope == Scope::Full => Some(Arc::new(iso)),
            Ok(iso) => Some(Arc::new(iso.with_shared_proc())),
            Err(e) => return infra(format!("task isolation: {e}")),
        }
    } else {
        None
    };

    // Steps.
    let mut budget = ctx.log_limit;
    let mut result = TaskResult::Success;
    for (i, script) in offer.steps.iter().enumerate() {
        let step = u32::try_from(i).unwrap_or(u32::MAX);
        let _ = events.send(TaskEvent::StepStarted { step }).await;
        // Notices number steps from 1 (as the server's reasons and API do);
        // the wire protocol's `step` stays 0-based.
        let mut spec = StepSpec::new(step + 1, script.clone(), &src, env.clone());
        spec.timeout = ctx.step_timeout;
        spec.log_limit = budget;
        spec.kill_grace = ctx.kill_grace;
        spec.run_as = ctx.run_as.clone();
        #[cfg(target_os = "linux")]
        {
            spec.cgroup = cgroup.clone();
            spec.isolation = isolation.clone();
        }
        let (step_tx, step_rx) = mpsc::channel::<LogChunk>(64);
        let step_forwarder = spawn_forwarder(step_rx, events.clone());
        let ran = run_step(&spec, &step_tx, cancel).await;
        drop(step_tx);
        let _ = step_forwarder.await;
        let report = match ran {
            Ok(r) => r,
            Err(e) => {
                result = infra(e.to_string());
                break;
            }
        };
        budget = budget.saturating_sub(report.log_bytes);
        let code = exit_code(report.outcome);
        let _ = events
            .send(TaskEvent::StepFinished {
                step,
                exit_code: code,
                duration: report.duration,
            })
            .await;
        match report.outcome {
            o if o.success() => {}
            StepOutcome::Cancelled => {
                result = TaskResult::Cancelled;
                break;
            }
            _ => {
                result = TaskResult::Failed {
                    exit_code: code,
                    step,
                };
                break;
            }
        }
    }
    serving.shutdown(PROXY_DRAIN).await;
    let _ = proxy_forwarder.await;
    ctx.log_proxies.keep(instance.idx(), proxy);
    drop(instance);

    // Test reports: also (above all) when a step failed.
    if matches!(result, TaskResult::Success | TaskResult::Failed { .. })
        && !offer.test_reports.is_empty()
    {
        let (dir, patterns) = (src.clone(), offer.test_reports.clone());
        match tokio::task::spawn_blocking(move || scan(&dir, &patterns)).await {
            Ok(found) => {
                for n in found.notices {
                    notice(format!("test reports: {n}")).await;
                }
                for a in found.artifacts {
                    if a.size > MAX_TEST_REPORT_BYTES {
                        notice(format!(
                            "Test report {} not uploaded: {} bytes, more than {MAX_TEST_REPORT_BYTES}",
                            a.name, a.size
                        ))
                        .await;
                        continue;
                    }
                    notice(format!("Test report {} ({} bytes)", a.name, a.size)).await;
                    let _ = events.send(TaskEvent::TestReport(a)).await;
                }
            }
            Err(e) => notice(format!("test report scan failed: {e}")).await,
        }
    }

    // Artifacts.
    if result == TaskResult::Success && !offer.artifacts.is_empty() {
        let (dir, patterns) = (src.clone(), offer.artifacts.clone());
        match tokio::task::spawn_blocking(move || scan(&dir, &patterns)).await {
            Ok(found) => {
                for n in found.notices {
                    notice(n).await;
                }
                for a in found.artifacts {
                    notice(format!(
                        "Artifact {} ({} bytes, sha256 {})",
                        a.name, a.size, a.sha256
                    ))
                    .await;
                    let _ = events.send(TaskEvent::Artifact(a)).await;
                }
            }
            Err(e) => notice(format!("artifact scan failed: {e}")).await,
        }
    }
    result
}
