//! The link to one server: connect, serve offers, reconnect forever.
//!
//! [`run_link`] runs for the life of the daemon, one per distinct server URL:
//!
//! 1. reads the server's token (a `token_file` is re-read on every attempt,
//!    so a rotated token is picked up without a restart) and connects
//!    ([`crate::connection::connect`]), saying hello with exactly the
//!    platforms configured for this server and their instance counts;
//! 2. answers every [`ServerMessage::Offer`]: `reject` when the builder is
//!    stopping, the platform is not offered on this link, the disk under the
//!    home has less than `min_free_disk_bytes` free
//!    ([`crate::housekeeping::has_room`]) or every instance of the platform
//!    is busy (instances are shared by all links, so two servers offering
//!    the same platform cannot overbook it); otherwise `accept` and run
//!    [`crate::task::run_task`] in its own tokio task, translating its
//!    [`TaskEvent`]s to `step_started` / `step_finished` / log frames /
//!    artifact uploads and its result to `task_finished`;
//! 3. [`ServerMessage::Cancel`] cancels that task (its process group is
//!    killed; the result is `cancelled`);
//! 4. when the link is lost (the server restarts: it says
//!    [`ServerMessage::Restarting`] first; or it was killed, or the network
//!    dropped), the tasks bound to it keep running: their log is kept
//!    ([`crate::spool`]), their other messages and their result wait. The
//!    link reconnects after an exponential, jittered delay
//!    ([`crate::backoff`]), reset when the previous connection stayed up for
//!    [`LinkConfig::stable_after`] or the server said it was restarting, and
//!    claims the tasks it holds in its hello
//!    ([`sai_core::protocol::HeldTask`]). The server answers
//!    [`ServerMessage::ResumeTask`] (the task resends its log from the
//!    offset the server stored, then what waited, and carries on) or
//!    [`ServerMessage::ClaimRefused`] (the task is killed and reported to
//!    nobody). A finished task's result waits at most [`HOLD_RESULT`] for
//!    the server to come back;
//! 5. on shutdown, the link first says `shutting_down` (the server offers
//!    it nothing more), offers still in flight are rejected, running tasks are killed and
//!    reported as `handed_back` (the server requeues them at once, without
//!    counting an attempt or an infrastructure failure), and the websocket
//!    is closed cleanly.
//!
//! Declined offers: the server does not offer a task this link declined
//! again until one of the link's tasks finishes or the link reports free
//! capacity. Whenever capacity frees up anywhere in the builder (a task on
//! any link ends and releases its instance, housekeeping frees disk:
//! [`Shared::capacity_changed`]) every link sends
//! [`BuilderMessage::Capacity`] with the free instances of its platforms, and
//! the server offers the declined tasks again on the same connection.
//!
//! Load: every link reports [`BuilderMessage::Load`] ([`Shared::load`]:
//! load average, memory, disk free under the job directories, running
//! tasks) when it connects, every [`LinkConfig::load_every`], when one of
//! its tasks starts and whenever capacity frees up.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use sai_core::protocol::{
    BuilderLoad, BuilderMessage, HeldTask, LOAD_REPORT_SECS, PlatformCapacity, PlatformOffer,
    ServerMessage, TaskOffer, TaskResult,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::connection::{
    ArtifactSendError, ConnectOptions, DEFAULT_DEAD_AFTER, DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_KEEPALIVE, Link, LinkClosed, LinkSender, connect,
};
use crate::housekeeping::{free_disk_bytes, has_room};
use crate::jobdir::{Layout, vn};
use crate::log::LogChunk;
use crate::spool::Spool;
use crate::task::{TaskContext, TaskEvent, run_task};

/// Default time a connection must stay up for the backoff to start over.
pub const DEFAULT_STABLE_AFTER: Duration = Duration::from_secs(30);
/// Longest wait for queued messages to leave when closing on shutdown.
const CLOSE_FLUSH: Duration = Duration::from_secs(10);
/// How long a task that ended while its server was away keeps its result
/// for the server to come back and claim it.
pub const HOLD_RESULT: Duration = Duration::from_secs(15 * 60);

/// One platform of the builder: its slots (shared by every link) and what
/// its tasks run with.
#[derive(Debug)]
pub struct PlatformSlots {
    /// Configured `instances`.
    pub instances: u32,
    /// One permit per instance; held by a running task.
    pub slots: Arc<Semaphore>,
    /// Task settings of the platform.
    pub ctx: TaskContext,
}

impl PlatformSlots {
    /// `instances` slots running tasks with `ctx`.
    pub fn new(instances: u32, ctx: TaskContext) -> Self {
        Self {
            instances,
            slots: Arc::new(Semaphore::new(instances as usize)),
            ctx,
        }
    }
}

/// State shared by every link of the daemon.
#[derive(Debug)]
pub struct Shared {
    /// Builder name (the `host` of the config; the hello's `builder`).
    pub host: String,
    /// The builder home.
    pub layout: Layout,
    /// Free bytes needed under the home to accept a task (0: no check).
    pub min_free_disk_bytes: u64,
    /// Platforms by name.
    pub platforms: HashMap<String, PlatformSlots>,
    /// VNs of the tasks running now (kept by housekeeping).
    pub active: Mutex<HashSet<String>>,
    /// Bumped whenever free capacity grows (a task ended and freed its
    /// instance, housekeeping freed disk); every link watches it and reports
    /// its capacity to its server.
    pub capacity: watch::Sender<u64>,
}

impl Shared {
    /// Tell every link that free capacity grew.
    pub fn capacity_changed(&self) {
        self.capacity.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Free instances of each of `platforms` now: 0 for all when the disk
    /// under the home has less than `min_free_disk_bytes` free.
    pub fn free_capacity(&self, platforms: &[String]) -> Vec<PlatformCapacity> {
        let disk_ok = self.min_free_disk_bytes == 0
            || has_room(self.layout.home(), self.min_free_disk_bytes).unwrap_or(false);
        platforms
            .iter()
            .map(|name| PlatformCapacity {
                name: name.clone(),
                free: match self.platforms.get(name) {
                    Some(p) if disk_ok => {
                        u32::try_from(p.slots.available_permits()).unwrap_or(u32::MAX)
                    }
                    _ => 0,
                },
            })
            .collect()
    }

    /// The builder's load now, for [`BuilderMessage::Load`].
    pub fn load(&self) -> BuilderLoad {
        let mem = crate::platform::load::memory();
        let running: usize = self
            .platforms
            .values()
            .map(|p| (p.instances as usize).saturating_sub(p.slots.available_permits()))
            .sum();
        BuilderLoad {
            load_avg_1m_centi: crate::platform::load::load_avg_1m_centi(),
            cpus: cpus(),
            mem_total_bytes: mem.map(|m| m.total),
            mem_available_bytes: mem.map(|m| m.available),
            disk_free_bytes: free_disk_bytes(&self.layout.jobs_dir()).ok().or_else(|| {
                // The jobs folder appears with the first task.
                free_disk_bytes(self.layout.home()).ok()
            }),
            disk_floor_bytes: self.min_free_disk_bytes,
            running_tasks: u32::try_from(running).unwrap_or(u32::MAX),
        }
    }

    /// The VNs housekeeping must keep: the running tasks' and each
    /// instance's last job dir, which its next task takes over.
    pub fn active_vns(&self) -> HashSet<String> {
        let mut vns = self
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for p in self.platforms.values() {
            vns.extend(p.ctx.last_job_dirs.vns());
        }
        vns
    }
}

/// The CPUs this process may use, found once: std reads the cgroup's
/// quota files each time it is asked, and load reports go out with every
/// task.
fn cpus() -> Option<u32> {
    static CPUS: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| {
        std::thread::available_parallelism()
            .ok()
            .and_then(|n| u32::try_from(n.get()).ok())
    })
}

/// Where a server's token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// Given inline in the config.
    Inline(String),
    /// Read from this file on every connect ([`sai_core::secret`] rules).
    File(PathBuf),
}

impl TokenSource {
    /// The token now.
    pub fn read(&self) -> anyhow::Result<String> {
        let t = match self {
            TokenSource::Inline(t) => t.trim().to_string(),
            TokenSource::File(p) => sai_core::secret::secret_text_from_file(p, std::fs::read(p))?,
        };
        anyhow::ensure!(!t.is_empty(), "the token is empty");
        Ok(t)
    }
}

/// One server link.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// `ws://` or `wss://host[:port][/prefix]/builder`.
    pub url: String,
    /// Trust settings for a `wss://` URL (its `ca_file`, or the system roots).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The token for this server.
    pub token: TokenSource,
    /// Names of the platforms offered on this link (each in [`Shared::platforms`]).
    pub platforms: Vec<String>,
    /// Limit for connecting plus hello/welcome.
    pub handshake_timeout: Duration,
    /// Ping interval.
    pub keepalive: Duration,
    /// Silence after which the link counts as dead.
    pub dead_after: Duration,
    /// A connection up this long resets the backoff.
    pub stable_after: Duration,
    /// First reconnect delay bound.
    pub backoff_initial: Duration,
    /// Largest reconnect delay.
    pub backoff_cap: Duration,
    /// Interval of the `load` reports (also sent when a task starts or ends).
    pub load_every: Duration,
    /// Told the URL once the first connection attempt has ended either way
    /// (connected, or failed and retrying): the daemon's readiness.
    pub first_attempt: Option<tokio::sync::mpsc::UnboundedSender<String>>,
}

impl LinkConfig {
    /// A link with the default timings.
    pub fn new(url: impl Into<String>, token: TokenSource, platforms: Vec<String>) -> Self {
        Self {
            url: url.into(),
            tls: None,
            token,
            platforms,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            keepalive: DEFAULT_KEEPALIVE,
            dead_after: DEFAULT_DEAD_AFTER,
            stable_after: DEFAULT_STABLE_AFTER,
            backoff_initial: crate::backoff::INITIAL,
            backoff_cap: crate::backoff::CAP,
            load_every: Duration::from_secs(LOAD_REPORT_SECS),
            first_attempt: None,
        }
    }
}

/// How [`serve`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// The connection broke or the server closed it.
    Lost,
    /// Shutdown: tasks handed back, websocket closed.
    Shutdown,
    /// The server said it was restarting, then the link closed.
    Restarting,
}

/// Why this builder cannot take an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Decline(String);

/// Why a running task was stopped (the first reason wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The server sent `cancel`.
    Server,
    /// The daemon is shutting down.
    Shutdown,
    /// The server refused our claim after a lost link: not ours any more.
    Refused,
}

/// How far a running task got, for the claim in the next hello.
#[derive(Debug, Default)]
struct Progress {
    log_bytes: AtomicU64,
    finished: AtomicBool,
}

/// A new link for a task that kept running: resend from `offset`.
#[derive(Debug)]
struct Attach {
    sender: LinkSender,
    offset: u64,
}

#[derive(Debug)]
struct Running {
    cancel: CancellationToken,
    stop: Arc<OnceLock<Stop>>,
    offer_platform: String,
    progress: Arc<Progress>,
    attach: mpsc::UnboundedSender<Attach>,
}

impl Running {
    fn stop(&self, why: Stop) {
        let _ = self.stop.set(why);
        self.cancel.cancel();
    }
}

/// The tasks of one server link; they outlive its connections.
#[derive(Debug, Default)]
struct Tasks {
    running: HashMap<String, Running>,
    ids: HashMap<tokio::task::Id, String>,
    set: JoinSet<()>,
}

impl Tasks {
    /// Forget a task whose runner ended.
    fn reaped(&mut self, done: Result<(tokio::task::Id, ()), tokio::task::JoinError>) {
        let tid = match done {
            Ok((tid, ())) => tid,
            Err(e) => {
                tracing::error!("task runner failed: {e}");
                e.id()
            }
        };
        if let Some(id) = self.ids.remove(&tid) {
            self.running.remove(&id);
        }
    }

    /// Forget every task whose runner ended, without waiting.
    fn reap(&mut self) {
        while let Some(done) = self.set.try_join_next_with_id() {
            self.reaped(done);
        }
    }

    /// What the next hello claims.
    fn held(&self) -> Vec<HeldTask> {
        self.running
            .iter()
            .filter(|(_, r)| r.stop.get().is_none())
            .map(|(id, r)| HeldTask {
                task_id: id.clone(),
                offer_platform: r.offer_platform.clone(),
                log_bytes: r.progress.log_bytes.load(Ordering::SeqCst),
                finished: r.progress.finished.load(Ordering::SeqCst),
            })
            .collect()
    }
}

/// Connect to one server and serve it until `shutdown`; see the module doc.
pub async fn run_link(mut lc: LinkConfig, shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut first_attempt = lc.first_attempt.take();
    let mut backoff = Backoff::with_bounds(lc.backoff_initial, lc.backoff_cap);
    let offers: Vec<PlatformOffer> = lc
        .platforms
        .iter()
        .map(|name| PlatformOffer {
            name: name.clone(),
            instances: shared.platforms.get(name).map_or(1, |p| p.instances),
        })
        .collect();
    let url = lc.url.as_str();
    let mut tasks = Tasks::default();
    while !shutdown.is_cancelled() {
        tasks.reap();
        let held = tasks.held();
        let attempt = async {
            let token = lc.token.read()?;
            let mut opts = ConnectOptions::new(url, token, &shared.host, offers.clone());
            opts.tls = lc.tls.clone();
            opts.handshake_timeout = lc.handshake_timeout;
            opts.keepalive = lc.keepalive;
            opts.dead_after = lc.dead_after;
            opts.held = held;
            anyhow::Ok(connect(&opts).await?)
        };
        let connected = tokio::select! {
            r = attempt => r,
            _ = shutdown.cancelled() => break,
        };
        let mut attempted = || {
            if let Some(tx) = first_attempt.take() {
                let _ = tx.send(url.to_string());
            }
        };
        match connected {
            Ok(link) => {
                tracing::info!(
                    server = url,
                    software = %link.welcome.server,
                    "connected to {url}, offering {}",
                    lc.platforms.join(", ")
                );
                attempted();
                let up = Instant::now();
                let ended = serve(link, &lc, &shared, &shutdown, &mut tasks).await;
                if shutdown.is_cancelled() || ended == Ended::Shutdown {
                    tracing::info!(server = url, "link closed for shutdown");
                    break;
                }
                if !tasks.running.is_empty() {
                    tracing::warn!(
                        server = url,
                        "link lost; {} task(s) keep running and are claimed back on reconnecting",
                        tasks.running.len()
                    );
                } else {
                    tracing::warn!(server = url, "link lost");
                }
                if up.elapsed() >= lc.stable_after || ended == Ended::Restarting {
                    backoff.reset();
                }
            }
            Err(e) => {
                tracing::warn!(server = url, "cannot connect: {e:#}");
                attempted();
            }
        }
        let delay = backoff.next_delay();
        tracing::info!(server = url, "reconnecting in {:.1} s", delay.as_secs_f64());
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    // Tasks still held for a server that did not come back: stop them.
    for r in tasks.running.values() {
        r.stop(Stop::Shutdown);
    }
    tasks.running.clear();
    while let Some(done) = tasks.set.join_next_with_id().await {
        tasks.reaped(done);
    }
}

/// Serve one established link until it is lost, or the daemon stops and its
/// tasks are gone.
async fn serve(
    mut link: Link,
    lc: &LinkConfig,
    shared: &Arc<Shared>,
    shutdown: &CancellationToken,
    tasks: &mut Tasks,
) -> Ended {
    let sender = link.sender.clone();
    let mut stopping = false;
    let mut lost = false;
    let mut restarting = false;
    let mut capacity = shared.capacity.subscribe();
    capacity.mark_unchanged();
    let mut load_every = tokio::time::interval(lc.load_every);
    load_every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if lost || (stopping && tasks.running.is_empty()) {
            break;
        }
        tokio::select! {
            _ = load_every.tick(), if !stopping => {
                let _ = sender.send(&BuilderMessage::Load(shared.load())).await;
            }
            Ok(()) = capacity.changed(), if !stopping => {
                capacity.mark_unchanged();
                let _ = sender.send(&BuilderMessage::Load(shared.load())).await;
                let platforms = shared.free_capacity(&lc.platforms);
                tracing::debug!(
                    server = lc.url,
                    "reporting free capacity for {} platforms",
                    platforms.len()
                );
                let _ = sender.send(&BuilderMessage::Capacity { platforms }).await;
            }
            _ = shutdown.cancelled(), if !stopping => {
                stopping = true;
                // Said first, so the server offers this link nothing more
                // while its tasks are handed back.
                tracing::info!(server = lc.url, "telling the server this builder is shutting down");
                let _ = sender.send(&BuilderMessage::ShuttingDown).await;
                for r in tasks.running.values() {
                    r.stop(Stop::Shutdown);
                }
            }
            msg = link.incoming.recv() => match msg {
                None => lost = true,
                Some(ServerMessage::Offer { task }) => {
                    let task = *task;
                    let id = task.task_id.clone();
                    let decision = if stopping {
                        Err(Decline("the builder is shutting down".into()))
                    } else if tasks.running.contains_key(&id) {
                        Err(Decline("this task is already running here".into()))
                    } else {
                        admit(&task, lc, shared)
                    };
                    match decision {
                        Err(Decline(reason)) => {
                            tracing::info!(task = %id, %reason, "offer rejected");
                            let _ = sender
                                .send(&BuilderMessage::Reject { task_id: id, reason })
                                .await;
                        }
                        Ok((permit, ctx)) => {
                            if sender
                                .send(&BuilderMessage::Accept { task_id: id.clone() })
                                .await
                                .is_err()
                            {
                                continue;
                            }
                            tracing::info!(
                                task = %id,
                                project = %task.project,
                                platform = %task.offer_platform,
                                attempt = task.attempt,
                                "offer accepted"
                            );
                            let (attach, attached) = mpsc::unbounded_channel();
                            let r = Running {
                                cancel: CancellationToken::new(),
                                stop: Arc::new(OnceLock::new()),
                                offer_platform: task.offer_platform.clone(),
                                progress: Arc::new(Progress::default()),
                                attach,
                            };
                            let job = Job {
                                sender: sender.clone(),
                                cancel: r.cancel.clone(),
                                stop: r.stop.clone(),
                                progress: r.progress.clone(),
                                attached,
                            };
                            let handle = tasks.set.spawn(run_one(
                                task,
                                ctx,
                                job,
                                shared.clone(),
                                permit,
                            ));
                            tasks.ids.insert(handle.id(), id.clone());
                            tasks.running.insert(id, r);
                            let _ = sender.send(&BuilderMessage::Load(shared.load())).await;
                        }
                    }
                }
                Some(ServerMessage::Cancel { task_id, reason }) => match tasks.running.get(&task_id) {
                    Some(r) => {
                        tracing::info!(task = %task_id, %reason, "cancelled by the server");
                        r.stop(Stop::Server);
                    }
                    None => tracing::debug!(task = %task_id, "cancel for a task not running here"),
                },
                Some(ServerMessage::ResumeTask { task_id, log_offset }) => {
                    match tasks.running.get(&task_id) {
                        Some(r) => {
                            tracing::info!(task = %task_id, log_offset, "the server took the task back; resending its log from there");
                            let _ = r.attach.send(Attach { sender: sender.clone(), offset: log_offset });
                        }
                        None => tracing::warn!(task = %task_id, "resume for a task not running here"),
                    }
                }
                Some(ServerMessage::ClaimRefused { task_id, reason }) => {
                    if let Some(r) = tasks.running.remove(&task_id) {
                        tracing::warn!(task = %task_id, %reason, "the server refused the task back: killing it");
                        r.stop(Stop::Refused);
                    }
                }
                Some(ServerMessage::Restarting { grace_secs }) => {
                    restarting = true;
                    tracing::info!(
                        server = lc.url,
                        grace_secs,
                        "the server is restarting; running tasks keep going and are claimed back"
                    );
                }
                Some(ServerMessage::Error { task_id, message }) => {
                    match task_id {
                        Some(t) => tracing::warn!(server = lc.url, "the server reports an error about task {t}: {message}"),
                        None => tracing::warn!(server = lc.url, "the server reports an error: {message}"),
                    }
                }
                Some(other) => tracing::debug!(
                    server = lc.url,
                    "ignored a message this builder does not handle: {}",
                    serde_json::to_string(&other).unwrap_or_default()
                ),
            },
            Some(done) = tasks.set.join_next_with_id(), if !tasks.set.is_empty() => {
                tasks.reaped(done);
            }
        }
    }
    drop(sender);
    if lost {
        link.closed().await;
        if restarting {
            Ended::Restarting
        } else {
            Ended::Lost
        }
    } else {
        // Let the last messages leave, then close the websocket.
        let _ = tokio::time::timeout(CLOSE_FLUSH, link.closed()).await;
        Ended::Shutdown
    }
}

/// Decide on an offer: a slot permit and the task context, or why not.
fn admit(
    task: &TaskOffer,
    lc: &LinkConfig,
    shared: &Shared,
) -> Result<(OwnedSemaphorePermit, TaskContext), Decline> {
    let name = &task.offer_platform;
    let platform = match shared.platforms.get(name) {
        Some(p) if lc.platforms.iter().any(|n| n == name) => p,
        _ => {
            return Err(Decline(format!(
                "platform {name} is not offered on this connection"
            )));
        }
    };
    let home = shared.layout.home();
    if shared.min_free_disk_bytes > 0 {
        match has_room(home, shared.min_free_disk_bytes) {
            Ok(true) => {}
            Ok(false) => {
                let free = free_disk_bytes(home).unwrap_or(0);
                return Err(Decline(format!(
                    "only {free} bytes free under {}, {} needed",
                    home.display(),
                    shared.min_free_disk_bytes
                )));
            }
            Err(e) => {
                return Err(Decline(format!(
                    "cannot check free space of {}: {e}",
                    home.display()
                )));
            }
        }
    }
    let permit = platform.slots.clone().try_acquire_owned().map_err(|_| {
        Decline(format!(
            "all {} instances of platform {name} are busy",
            platform.instances
        ))
    })?;
    Ok((permit, platform.ctx.clone()))
}

/// Send one task event to the server.
async fn forward(ev: TaskEvent, id: &str, sender: &LinkSender) -> Result<(), LinkClosed> {
    let test_report = matches!(ev, TaskEvent::TestReport(_));
    match ev {
        TaskEvent::Log(chunk) => sender.send_log(id, chunk).await,
        TaskEvent::StepStarted { step } => {
            sender
                .send(&BuilderMessage::StepStarted {
                    task_id: id.to_string(),
                    step,
                })
                .await
        }
        TaskEvent::StepFinished {
            step,
            exit_code,
            duration,
        } => {
            crate::metrics::metrics().step(exit_code, duration);
            sender
                .send(&BuilderMessage::StepFinished {
                    task_id: id.to_string(),
                    step,
                    exit_code,
                    duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
                })
                .await
        }
        TaskEvent::Artifact(a) | TaskEvent::TestReport(a) => {
            match sender.send_upload(id, &a, test_report).await {
                Ok(()) => Ok(()),
                Err(ArtifactSendError::Closed(c)) => Err(c),
                Err(e) => {
                    let what = if test_report {
                        "test report"
                    } else {
                        "artifact"
                    };
                    tracing::warn!(task = id, artifact = %a.name, "{what} not uploaded: {e}");
                    sender
                        .send_log(
                            id,
                            LogChunk::notice(format!("{what} {} not uploaded: {e}", a.name)),
                        )
                        .await
                }
            }
        }
    }
}

/// What ties a running task to its server link.
struct Job {
    /// The link it was accepted on.
    sender: LinkSender,
    cancel: CancellationToken,
    stop: Arc<OnceLock<Stop>>,
    progress: Arc<Progress>,
    /// New links after a lost one.
    attached: mpsc::UnboundedReceiver<Attach>,
}

/// Where a task's events go: the link while it is up; the spool and a
/// queue while it is down, resent when the server takes the task back.
struct Outlet {
    id: String,
    link: Option<LinkSender>,
    spool: Spool,
    /// Events other than log bytes that wait for the link.
    waiting: VecDeque<TaskEvent>,
    progress: Arc<Progress>,
}

impl Outlet {
    fn detach(&mut self) {
        if self.link.take().is_some() {
            tracing::warn!(task = %self.id, "link lost: the task keeps running, its log is kept");
        }
    }

    async fn event(&mut self, ev: TaskEvent) {
        if let TaskEvent::Log(chunk) = &ev {
            if let Err(e) = self.spool.append(chunk) {
                tracing::warn!(task = %self.id, "cannot keep the log for a resend: {e}");
            }
            self.progress
                .log_bytes
                .store(self.spool.len(), Ordering::SeqCst);
            if let Some(s) = &self.link
                && let TaskEvent::Log(chunk) = ev
                && s.send_log(&self.id, chunk).await.is_err()
            {
                self.detach();
            }
            return;
        }
        match &self.link {
            Some(s) if self.waiting.is_empty() => {
                if forward(ev, &self.id, s).await.is_err() {
                    self.detach();
                }
            }
            _ => self.waiting.push_back(ev),
        }
    }

    /// A new link: resend the log from `offset`, then what waited.
    async fn attach(&mut self, a: Attach) {
        let chunks = match self.spool.read_from(a.offset) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(task = %self.id, "cannot read the kept log: {e}");
                Vec::new()
            }
        };
        for chunk in chunks {
            if a.sender.send_log(&self.id, chunk).await.is_err() {
                return;
            }
        }
        while let Some(ev) = self.waiting.pop_front() {
            if forward(ev, &self.id, &a.sender).await.is_err() {
                return;
            }
        }
        self.link = Some(a.sender);
    }
}

/// Run one accepted task and report it; see the module doc.
async fn run_one(
    offer: TaskOffer,
    ctx: TaskContext,
    job: Job,
    shared: Arc<Shared>,
    permit: OwnedSemaphorePermit,
) {
    let Job {
        sender,
        cancel,
        stop,
        progress,
        mut attached,
    } = job;
    let id = offer.task_id.clone();
    let task_vn = vn(&id).ok();
    if let Some(v) = &task_vn {
        shared
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(v.clone());
    }
    let spool_path = shared
        .layout
        .home()
        .join("spool")
        .join(format!("{}.log", task_vn.as_deref().unwrap_or("task")));
    let mut out = Outlet {
        id: id.clone(),
        link: Some(sender),
        spool: Spool::new(spool_path),
        waiting: VecDeque::new(),
        progress: progress.clone(),
    };
    let (tx, mut rx) = mpsc::channel::<TaskEvent>(256);
    let run = async {
        let r = run_task(&ctx, &offer, &tx, &cancel).await;
        drop(tx);
        r
    };
    let relay = async {
        let mut can_attach = true;
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(ev) => out.event(ev).await,
                    None => break,
                },
                a = attached.recv(), if can_attach => match a {
                    Some(a) => out.attach(a).await,
                    None => can_attach = false,
                },
            }
        }
        can_attach
    };
    let (result, can_attach) = tokio::join!(run, relay);
    progress.finished.store(true, Ordering::SeqCst);
    let result = match (stop.get(), result) {
        (Some(Stop::Shutdown), TaskResult::Cancelled) => TaskResult::HandedBack {
            reason: format!(
                "sai-builder on {} shut down during the task (operator request)",
                shared.host
            ),
        },
        (_, r) => r,
    };
    tracing::info!(
        task = %id,
        "task {id} {}",
        crate::task::describe_result(&result)
    );
    crate::metrics::metrics().task(&result);
    if stop.get() != Some(&Stop::Refused) {
        // Without a link, the result waits for the server to take the
        // task back (or for the daemon to give up on it).
        if out.link.is_none() && can_attach {
            tracing::info!(task = %id, "holding the result until the server is back");
            if let Ok(Some(a)) = tokio::time::timeout(HOLD_RESULT, attached.recv()).await {
                out.attach(a).await;
            }
        }
        match &out.link {
            Some(s) => {
                let _ = s
                    .send(&BuilderMessage::TaskFinished {
                        task_id: id.clone(),
                        result,
                    })
                    .await;
            }
            None => {
                tracing::warn!(task = %id, "the server did not take the task back; its result is dropped")
            }
        }
    }
    let idle = {
        let mut active = shared.active.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = &task_vn {
            active.remove(v);
        }
        active.is_empty()
    };
    drop(permit);
    shared.capacity_changed();
    if idle {
        // The last running task ended: hand what the task's buffers, git
        // and checkout freed back to the kernel now (the periodic trimmer
        // waits for 2 MiB), so the idle builder stays small.
        sai_daemon::memory::trim();
    }
}

#[cfg(test)]
mod tests {
    use super::TokenSource;

    #[test]
    fn token_files_follow_the_secret_file_rule() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        let source = TokenSource::File(file.clone());
        std::fs::write(&file, "v4.public.abc \r\n\n").unwrap();
        assert_eq!(source.read().unwrap(), "v4.public.abc");
        std::fs::write(&file, " \n").unwrap();
        let e = source.read().unwrap_err().to_string();
        assert_eq!(e, format!("secret file {} is empty", file.display()));
        std::fs::remove_file(&file).unwrap();
        let e = source.read().unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("cannot read secret file {}: ", file.display())),
            "{e}"
        );
    }
}
