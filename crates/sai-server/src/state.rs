//! The running server's shared state ([`Server`]) and its settings: what
//! the hook, the API, the builder websocket and the outbox all work on.
//! [`Server::sched_do`] is where scheduler inputs go in and their effects
//! (run records, event states, messages, connection closes) are applied.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use sai_core::config::server::ServerConfig;
use sai_core::secret::secret_from_file;
use tokio_util::sync::CancellationToken;

use crate::auth::TokenKeys;
use crate::link::{Links, Outgoing};
use crate::logw::LogWriter;
use crate::sched::{ConnId, Effect, Fleet, QueueStats, Sched};
use crate::store::{EventDb, Store, now_ms};

use crate::{auth, changes, metrics, outbox, store};
use sai_https as tls;

/// The scheduler as the server holds it: events carry their database handle.
pub type Scheduler = Sched<Arc<EventDb>>;

/// Software name and version sent in `welcome`.
pub const SOFTWARE: &str = concat!("sai-server ", env!("CARGO_PKG_VERSION"));

/// Environment variable for fault injection, honoured only in debug builds.
/// `abort-after-event-db` aborts between writing the event database and
/// committing the event row.
pub const FAULT_ENV: &str = "SAI_SERVER_FAULT";

/// Config plus what it points at (secrets read, paths resolved).
pub struct Settings {
    /// The validated config.
    pub config: ServerConfig,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Token signing key file.
    pub token_key_path: PathBuf,
    /// Global hook key.
    pub global_key: Option<Vec<u8>>,
    /// Configured projects and their own key, if any.
    pub projects: HashMap<String, Option<Vec<u8>>>,
    /// The certificate when the server terminates TLS itself.
    pub tls: Option<Arc<tls::CertificateStore>>,
    /// The token `/metrics` requires, if any.
    pub metrics_token: Option<String>,
    /// Commit status and webhook targets per project.
    pub targets: HashMap<String, outbox::ProjectTargets>,
}

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A file could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A secret file cannot be used.
    #[error(transparent)]
    Secret(#[from] sai_core::secret::SecretError),
    /// The config does not parse or breaks rules (one `file:line:col` line each).
    #[error(transparent)]
    Config(#[from] sai_core::config::problem::InvalidConfig),
    /// A key is given twice.
    #[error("notification_key and notification_key_file are both set")]
    TwoKeys,
    /// A project has no key.
    #[error("project {0:?} has no notification key and there is no global notification_key")]
    NoKey(String),
    /// The listening address cannot be bound.
    #[error("binding {addr}: {reason}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The token key failed.
    #[error(transparent)]
    Key(#[from] auth::KeyError),
    /// The TLS certificate or key cannot be used.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// Parse and validate a config file.
pub fn load_config(path: &Path) -> Result<ServerConfig, StartError> {
    let bytes = std::fs::read(path).map_err(|source| StartError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let name = path.display().to_string();
    let format = sai_core::config::Format::from_file_name(&name);
    Ok(sai_core::config::load::<ServerConfig>(
        &name, &bytes, format,
    )?)
}

impl Settings {
    /// Resolve a config; relative paths are taken from `base` (the config's folder).
    pub fn resolve(config: ServerConfig, base: &Path) -> Result<Settings, StartError> {
        let data_dir = base.join(&config.data_dir);
        let token_key_path = match &config.token_key_file {
            Some(p) => base.join(p),
            None => data_dir.join("token.key"),
        };
        let global_key = match (&config.notification_key, &config.notification_key_file) {
            (Some(k), None) => Some(k.as_bytes().to_vec()),
            (None, Some(f)) => {
                let path = base.join(f);
                Some(secret_from_file(&path, std::fs::read(&path))?)
            }
            (None, None) => None,
            (Some(_), Some(_)) => return Err(StartError::TwoKeys),
        };
        let mut projects = HashMap::new();
        for p in &config.projects {
            let key = match (&p.notification_key, &p.notification_key_file) {
                (Some(k), None) => Some(k.as_bytes().to_vec()),
                (None, Some(f)) => {
                    let path = base.join(f);
                    Some(secret_from_file(&path, std::fs::read(&path))?)
                }
                _ => None,
            };
            if key.is_none() && global_key.is_none() {
                return Err(StartError::NoKey(p.name.clone()));
            }
            projects.insert(p.name.clone(), key);
        }
        let metrics_token = match &config.metrics_token_file {
            Some(f) => {
                let path = base.join(f);
                Some(sai_core::secret::secret_text_from_file(
                    &path,
                    std::fs::read(&path),
                )?)
            }
            None => None,
        };
        let targets = outbox::resolve_targets(&config.projects, base)?;
        let tls = match &config.tls {
            Some(t) => Some(tls::CertificateStore::open(tls::TlsFiles::resolve(
                t, base,
            ))?),
            None => None,
        };
        Ok(Settings {
            config,
            data_dir,
            token_key_path,
            global_key,
            projects,
            tls,
            metrics_token,
            targets,
        })
    }

    /// The HMAC key for a repository name, and whether the project is known.
    pub fn hook_key(&self, project: Option<&str>) -> (Option<&[u8]>, bool) {
        if self.projects.is_empty() {
            return (self.global_key.as_deref(), true);
        }
        match project.and_then(|p| self.projects.get(p)) {
            Some(Some(k)) => (Some(k.as_slice()), true),
            Some(None) => (self.global_key.as_deref(), true),
            None => (self.global_key.as_deref(), false),
        }
    }
}

/// The running server's shared state.
pub struct Server {
    /// Settings.
    pub settings: Settings,
    /// Storage.
    pub store: Store,
    sched: Mutex<Scheduler>,
    /// Effects computed under the scheduler lock, applied in order outside it.
    pending: Mutex<VecDeque<Effect<Arc<EventDb>>>>,
    applying: Mutex<()>,
    fleet: RwLock<Arc<Fleet>>,
    queue: RwLock<Arc<QueueStats>>,
    /// Live builder connections.
    pub links: Links,
    next_conn: AtomicU64,
    /// Token keys.
    pub keys: TokenKeys,
    /// Log writer.
    pub logs: LogWriter,
    /// Fires on shutdown.
    pub shutdown: CancellationToken,
    /// The live change feed (`/api/changes`).
    pub changes: Arc<changes::ChangeFeed>,
    wake_at: Mutex<Option<i64>>,
    /// Prometheus metrics.
    pub metrics: metrics::Metrics,
    /// Commit statuses and webhooks waiting to go out.
    pub outbox: outbox::Outbox,
    /// Commit status and webhook targets per project (from the settings).
    pub targets: HashMap<String, outbox::ProjectTargets>,
    unwritten: Mutex<Unwritten>,
}

/// Task and event states whose write failed (a full disk), retried until
/// they are stored; a newer write of the same task or event replaces them.
#[derive(Default)]
struct Unwritten {
    runs: HashMap<sai_core::task::TaskId, (Arc<EventDb>, sai_core::task::RunRecord)>,
    states: HashMap<sai_core::task::EventId, sai_core::task::EventState>,
    retrying: bool,
}

/// How often unwritten states are retried.
const RETRY_UNWRITTEN: Duration = Duration::from_millis(500);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Server {
    /// Hand a just-stored event to the scheduler: its tasks become
    /// dispatchable after the dispatch grace.
    pub fn schedule_created(self: &Arc<Self>, created: store::CreatedEvent) {
        let grace = self.settings.config.dispatch_grace_ms as i64;
        self.sched_do(|s, now| {
            s.add_event(
                now,
                created.event,
                created.db,
                created.tasks,
                now + grace,
                false,
            )
        });
    }

    /// Open storage and keys, load unfinished events.
    pub fn open(
        settings: Settings,
        shutdown: CancellationToken,
    ) -> Result<Arc<Server>, StartError> {
        let store = Store::open_with_cache(&settings.data_dir, settings.config.event_db_cache)?;
        let keys = TokenKeys::load_or_create(&settings.token_key_path)?;
        let changes = Arc::new(changes::ChangeFeed::default());
        let logs = LogWriter::start(
            Duration::from_millis(settings.config.log_flush_ms),
            changes.clone(),
        );
        let targets = settings.targets.clone();
        let mut sched = Sched::new(settings.config.max_infra_attempts)
            .with_disk_floor(settings.config.builder_min_free_disk_bytes)
            .with_restart_grace(
                settings
                    .config
                    .restart_grace_secs
                    .min(1 << 40)
                    .saturating_mul(1000),
            );
        sched.set_task_deadline(Some(
            settings
                .config
                .task_deadline_secs
                .min(1 << 40)
                .saturating_mul(1000) as i64,
        ));
        let server = Arc::new(Server {
            settings,
            store,
            sched: Mutex::new(sched),
            pending: Mutex::new(VecDeque::new()),
            applying: Mutex::new(()),
            fleet: RwLock::new(Arc::new(Fleet::default())),
            queue: RwLock::new(Arc::new(QueueStats::default())),
            links: Links::default(),
            next_conn: AtomicU64::new(1),
            keys,
            logs,
            shutdown,
            changes,
            wake_at: Mutex::new(None),
            metrics: metrics::Metrics::new(),
            outbox: outbox::Outbox::default(),
            targets,
            unwritten: Mutex::new(Unwritten::default()),
        });
        for event in server.store.active_events()? {
            let Some(db) = server.store.event_db(&event.id)? else {
                continue;
            };
            let tasks = db.tasks()?;
            server.sched_do(|s, now| s.add_event(now, event, db, tasks, now, false));
        }
        Ok(server)
    }

    /// Lock the scheduler for a query. Inputs go through [`Server::sched_do`].
    pub fn sched(&self) -> MutexGuard<'_, Scheduler> {
        lock(&self.sched)
    }

    /// The connected builders as last published by the scheduler; never
    /// waits for the scheduler.
    pub fn fleet(&self) -> Arc<Fleet> {
        self.fleet.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The waiting queue as last published by the scheduler; never waits
    /// for the scheduler.
    pub fn queue(&self) -> Arc<QueueStats> {
        self.queue.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A new connection id.
    pub fn new_conn_id(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Give the scheduler one input (`f` gets it and the time), then apply
    /// its effects. This is the one place scheduler changes reach the
    /// outside: the store, the connections and the published fleet.
    pub fn sched_do<R>(self: &Arc<Self>, f: impl FnOnce(&mut Scheduler, i64) -> R) -> R {
        let now = now_ms();
        let (r, wake) = {
            let mut s = self.sched();
            let r = f(&mut s, now);
            let effects = s.take_effects();
            if let Some(fleet) = s.take_fleet() {
                *self.fleet.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fleet);
            }
            if let Some(queue) = s.take_queue() {
                *self.queue.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(queue);
            }
            lock(&self.pending).extend(effects);
            (r, s.next_wake(now))
        };
        self.apply_pending();
        if let Some(at) = wake {
            self.wake_at(at);
        }
        self.retry_unwritten();
        r
    }

    /// Start retrying the unwritten states, unless that runs already.
    fn retry_unwritten(self: &Arc<Self>) {
        {
            let mut u = lock(&self.unwritten);
            if u.retrying || (u.runs.is_empty() && u.states.is_empty()) {
                return;
            }
            u.retrying = true;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            lock(&self.unwritten).retrying = false;
            return;
        };
        let me = self.clone();
        rt.spawn(async move {
            loop {
                tokio::time::sleep(RETRY_UNWRITTEN).await;
                let me2 = me.clone();
                let done = tokio::task::spawn_blocking(move || me2.write_unwritten())
                    .await
                    .unwrap_or(false);
                if done || me.shutdown.is_cancelled() {
                    return;
                }
            }
        });
    }

    /// One retry of every unwritten state; true when none is left (and the
    /// retry loop ends).
    fn write_unwritten(&self) -> bool {
        let _applying = lock(&self.applying);
        let (runs, states) = {
            let u = lock(&self.unwritten);
            (u.runs.clone(), u.states.clone())
        };
        for (task, (db, run)) in runs {
            if db.update_task(&task, &run).is_ok() {
                tracing::info!(%task, state = %run.state, "task state written after an earlier failure");
                lock(&self.unwritten).runs.remove(&task);
                self.changes.publish(changes::Change::TaskChanged {
                    task: task.to_string(),
                    state: run.state.as_str().to_string(),
                });
            }
        }
        for (event, state) in states {
            if self.store.set_event_state(&event, state).is_ok() {
                lock(&self.unwritten).states.remove(&event);
                self.changes.publish(changes::Change::EventChanged {
                    event: event.to_string(),
                    state: state.as_str().to_string(),
                });
            }
        }
        let mut u = lock(&self.unwritten);
        let done = u.runs.is_empty() && u.states.is_empty();
        if done {
            u.retrying = false;
        }
        done
    }

    /// Apply queued effects in order. Whoever holds `applying` drains the
    /// queue, so when this returns the caller's effects have been applied.
    fn apply_pending(&self) {
        let _applying = lock(&self.applying);
        loop {
            let Some(effect) = lock(&self.pending).pop_front() else {
                return;
            };
            self.apply(effect);
        }
    }

    fn apply(&self, effect: Effect<Arc<EventDb>>) {
        match effect {
            Effect::Persist { db, task, run } => {
                if let Err(e) = db.update_task(&task, &run) {
                    tracing::error!(%task, cause = %e, "writing task state; will retry");
                    lock(&self.unwritten).runs.insert(task, (db, run));
                    return;
                }
                if run.state.is_terminal() {
                    let ms = run.started.zip(run.ended).map(|(s, e)| e - s);
                    self.metrics.task_ended(run.state, ms);
                }
                lock(&self.unwritten).runs.remove(&task);
                self.changes.publish(changes::Change::TaskChanged {
                    task: task.to_string(),
                    state: run.state.as_str().to_string(),
                });
            }
            Effect::EventState { event, state } => {
                if let Err(e) = self.store.set_event_state(&event, state) {
                    tracing::error!(%event, cause = %e, "writing event state; will retry");
                    lock(&self.unwritten).states.insert(event, state);
                } else {
                    lock(&self.unwritten).states.remove(&event);
                    tracing::info!(%event, %state, "event state");
                    if state.is_terminal() {
                        self.outbox.note(&event, state);
                    }
                    self.changes.publish(changes::Change::EventChanged {
                        event: event.to_string(),
                        state: state.as_str().to_string(),
                    });
                }
            }
            Effect::Send { conn, msg } => self.links.send(conn, Outgoing::Msg(msg)),
            Effect::Close { conn, code, reason } => {
                self.links.send(conn, Outgoing::Close(code, reason))
            }
            Effect::Release { conn } => self.links.remove(conn),
        }
    }

    /// Arm one timer for the scheduler's next tick at `at` (unix ms).
    fn wake_at(self: &Arc<Self>, at: i64) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut wake = lock(&self.wake_at);
        if wake.is_none_or(|w| at < w) {
            *wake = Some(at);
            let me = self.clone();
            let delay = Duration::from_millis((at - now_ms()).max(0) as u64);
            rt.spawn(async move {
                tokio::time::sleep(delay).await;
                *lock(&me.wake_at) = None;
                me.sched_do(|s, now| s.tick(now));
            });
        }
    }

    /// Delete an event now (its folder once released).
    pub fn delete_event(self: &Arc<Self>, id: &str) -> Result<bool, store::StoreError> {
        self.sched_do(|s, now| s.drop_event(now, id));
        let deleted = self.store.delete_event(id)?;
        if deleted {
            self.changes.publish(changes::Change::EventChanged {
                event: id.to_string(),
                state: "deleted".into(),
            });
        }
        Ok(deleted)
    }

    /// Apply retention: delete terminal events beyond the per-project count
    /// or older than the max age.
    pub fn retention_sweep(&self) -> Result<usize, store::StoreError> {
        let r = &self.settings.config.retention;
        if r.keep_events_per_project.is_none() && r.max_age_days.is_none() {
            self.store.close_idle();
            return Ok(0);
        }
        let events = self.store.all_events()?;
        let mut per_project: HashMap<&str, usize> = HashMap::new();
        let now = now_ms();
        let mut doomed = Vec::new();
        for e in events.iter().rev() {
            let n = per_project.entry(e.project.as_str()).or_default();
            *n += 1;
            let too_many = r.keep_events_per_project.is_some_and(|k| *n > k as usize);
            let too_old = r
                .max_age_days
                .is_some_and(|d| now - e.created > d as i64 * 86_400_000);
            if (too_many || too_old) && !self.sched().has_event(&e.id) {
                doomed.push(e.id.clone());
            }
        }
        for id in &doomed {
            tracing::info!(event = %id, "retention: deleting event");
            self.store.delete_event(id)?;
        }
        self.store.close_idle();
        Ok(doomed.len())
    }
}
