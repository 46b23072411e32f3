//! sai-server: signed hook intake, sqlite store, event-driven scheduler,
//! authenticated builder websocket and the operations API.
//!
//! [`run`] serves on an already bound listener until the cancellation token
//! fires; `main.rs` parses flags, loads the config and calls it. See
//! `docs/server.md` and `docs/protocol.md`.

pub mod api;
pub mod auth;
pub mod changes;
pub mod hook;
pub mod logw;
pub mod openapi;
pub mod sched;
pub mod store;
pub mod token_cli;
pub mod ws;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sai_core::config::server::ServerConfig;
use sai_core::secret::secret_from_file;
use tokio_util::sync::CancellationToken;
use warp::Filter;

use crate::auth::TokenKeys;
use crate::logw::LogWriter;
use crate::sched::Sched;
use crate::store::Store;

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
}

/// Parse and validate a config file.
pub fn load_config(path: &Path) -> Result<ServerConfig> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let name = path.display().to_string();
    let format = sai_core::config::Format::from_file_name(&name);
    Ok(sai_core::config::load::<ServerConfig>(
        &name, &bytes, format,
    )?)
}

impl Settings {
    /// Resolve a config; relative paths are taken from `base` (the config's folder).
    pub fn resolve(config: ServerConfig, base: &Path) -> Result<Settings> {
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
            (Some(_), Some(_)) => {
                anyhow::bail!("notification_key and notification_key_file are both set")
            }
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
                anyhow::bail!(
                    "project {:?} has no notification key and there is no global notification_key",
                    p.name
                );
            }
            projects.insert(p.name.clone(), key);
        }
        Ok(Settings {
            config,
            data_dir,
            token_key_path,
            global_key,
            projects,
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
    sched: Mutex<Sched>,
    /// Token keys.
    pub keys: TokenKeys,
    /// Log writer.
    pub logs: LogWriter,
    /// Fires on shutdown.
    pub shutdown: CancellationToken,
    /// The live change feed (`/api/changes`).
    pub changes: Arc<changes::ChangeFeed>,
    wake_at: Mutex<Option<Instant>>,
}

impl Server {
    /// Open storage and keys, load unfinished events.
    pub fn open(settings: Settings, shutdown: CancellationToken) -> Result<Arc<Server>> {
        let store = Store::open(&settings.data_dir)?;
        let keys = TokenKeys::load_or_create(&settings.token_key_path)?;
        let changes = Arc::new(changes::ChangeFeed::default());
        let logs = LogWriter::start(
            Duration::from_millis(settings.config.log_flush_ms),
            changes.clone(),
        );
        let mut sched = Sched::new(settings.config.max_infra_attempts);
        sched.set_feed(changes.clone());
        let server = Arc::new(Server {
            settings,
            store,
            sched: Mutex::new(sched),
            keys,
            logs,
            shutdown,
            changes,
            wake_at: Mutex::new(None),
        });
        {
            let mut sched = server.sched();
            for row in server.store.active_events()? {
                let Some(db) = server.store.event_db(&row.id)? else {
                    continue;
                };
                sched.add_event(&server.store, row, db, Instant::now(), false)?;
            }
        }
        Ok(server)
    }

    /// Lock the scheduler.
    pub fn sched(&self) -> MutexGuard<'_, Sched> {
        self.sched.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run dispatch now, and arm one timer for the next grace expiry.
    pub fn kick(self: &Arc<Self>) {
        let later = self.sched().dispatch();
        if let Some(at) = later {
            let mut wake = self.wake_at.lock().unwrap_or_else(|e| e.into_inner());
            if wake.is_none_or(|w| at < w) {
                *wake = Some(at);
                let me = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep_until(at.into()).await;
                    *me.wake_at.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    me.kick();
                });
            }
        }
    }

    /// Delete an event now (its folder once released).
    pub fn delete_event(&self, id: &str) -> Result<bool> {
        self.sched().drop_event(id);
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
    pub fn retention_sweep(&self) -> Result<usize> {
        let r = &self.settings.config.retention;
        if r.keep_events_per_project.is_none() && r.max_age_days.is_none() {
            self.store.close_idle();
            return Ok(0);
        }
        let events = self.store.all_events()?;
        let mut per_project: HashMap<&str, usize> = HashMap::new();
        let now = store::now_ms();
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

/// Bind the listening socket. `TCP_NODELAY` is set on it so that accepted
/// connections inherit it (Linux): small protocol messages (offers, credit)
/// must not wait for delayed ACKs.
pub async fn bind(addr: &str) -> Result<tokio::net::TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr)
        .await
        .with_context(|| format!("resolving {addr}"))?
    {
        let sock = if a.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        sock.set_reuseaddr(true)?;
        sock.set_nodelay(true)?;
        match sock.bind(a).and_then(|_| sock.listen(1024)) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(anyhow::anyhow!(
        "binding {addr}: {}",
        last.map(|e| e.to_string())
            .unwrap_or_else(|| "no address".into())
    ))
}

/// Open the server and serve on `listener` until `shutdown` fires.
pub async fn run(
    settings: Settings,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<()> {
    let server = Server::open(settings, shutdown)?;
    serve(server, listener).await
}

/// Serve an opened server on `listener` until its shutdown token fires,
/// then close builder connections and flush pending logs.
pub async fn serve(server: Arc<Server>, listener: tokio::net::TcpListener) -> Result<()> {
    let shutdown = server.shutdown.clone();
    server.kick();
    let retention = {
        let s = server.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = s.retention_sweep() {
                    tracing::error!(cause = %e, "retention sweep");
                }
                tokio::select! {
                    _ = s.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(600)) => {}
                }
            }
        })
    };
    let routes = routes(server.clone());
    let sd = shutdown.clone();
    warp::serve(routes)
        .incoming(listener)
        .graceful(async move { sd.cancelled().await })
        .run()
        .await;
    server
        .sched()
        .close_all(1001, "sai-server is shutting down");
    server.logs.flush().await;
    retention.abort();
    tracing::info!("sai-server stopped");
    Ok(())
}

/// All routes.
pub fn routes(
    server: Arc<Server>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible> + Clone {
    let s0 = server.clone();
    let changes = warp::path!("api" / "changes")
        .and(warp::ws())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .map(
            move |ws: warp::ws::Ws, authz: Option<String>, query: String| {
                changes_upgrade(s0.clone(), ws, authz, &query)
            },
        );
    let s1 = server.clone();
    let builder = warp::ws()
        .and(warp::path::full())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::addr::remote())
        .map(
            move |ws: warp::ws::Ws,
                  path: warp::path::FullPath,
                  authz: Option<String>,
                  peer: Option<SocketAddr>| {
                ws::upgrade(s1.clone(), ws, path.as_str(), authz, peer)
            },
        );
    let s2 = server;
    let query = warp::query::raw().or(warp::any().map(String::new)).unify();
    let http = warp::method()
        .and(warp::path::full())
        .and(query)
        .and(warp::header::headers_cloned())
        .and(warp::addr::remote())
        .and(warp::body::stream())
        .then(
            move |method, path: warp::path::FullPath, query, headers, peer, body| {
                let s = s2.clone();
                async move {
                    api::handle(
                        s,
                        method,
                        path.as_str().to_string(),
                        query,
                        headers,
                        peer,
                        body,
                    )
                    .await
                }
            },
        );
    changes
        .or(builder)
        .unify()
        .or(http)
        .unify()
        .recover(|_r: warp::Rejection| async {
            Ok::<_, std::convert::Infallible>(api::error(
                warp::http::StatusCode::BAD_REQUEST,
                "bad request",
                None,
            ))
        })
        .unify()
}

/// `GET /api/changes?after=SEQ` (websocket): the change feed, for holders of
/// a service token (sai-web) only.
fn changes_upgrade(
    server: Arc<Server>,
    ws: warp::ws::Ws,
    authz: Option<String>,
    query: &str,
) -> warp::reply::Response {
    use warp::Reply;
    let token = auth::bearer(authz.as_deref());
    let ok = token.is_some_and(|t| server.keys.verify(auth::TokenKind::Service, t, &[]).is_ok());
    if !ok {
        return api::error(
            warp::http::StatusCode::UNAUTHORIZED,
            "service token required: Authorization: Bearer <token from `sai-server token service`>",
            None,
        );
    }
    let after = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("after="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| server.changes.newest());
    let feed = server.changes.clone();
    let shutdown = server.shutdown.clone();
    ws.on_upgrade(move |socket| changes::serve_subscriber(feed, socket, after, shutdown))
        .into_response()
}
