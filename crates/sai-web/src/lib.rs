//! sai-web: the browser UI of Sai.
//!
//! | module | job |
//! |---|---|
//! | [`settings`] | load and resolve the config (users, keys, service credential) |
//! | [`upstream`] | typed client of sai-server's operations API |
//! | [`http`] | routes: pages, log ranges, raw log, artifacts, badges, sign-in, actions |
//! | [`pages`] | server-rendered HTML (maud) |
//! | [`live`] | one websocket per tab, fed by shared, coalescing topic watchers |
//! | [`feed`] | follows sai-server's change feed and wakes the watchers concerned |
//! | [`logview`] | line index of byte logs, windows of lines, search |
//! | [`ansi`] | streaming ANSI SGR to HTML (vte) |
//! | [`badge`] | status SVGs per project and branch |
//! | [`session`] | PASETO v4.local session cookies and CSRF tokens |
//! | [`users`] | users file, argon2 password checks |
//! | [`ratelimit`] | failed sign-ins per client |
//! | [`assets`] | JavaScript, CSS and icons embedded in the binary |

pub mod ansi;
pub mod assets;
pub mod badge;
pub mod feed;
pub mod http;
pub mod live;
pub mod logview;
pub mod pages;
pub mod ratelimit;
pub mod session;
pub mod settings;
#[cfg(test)]
mod test_fixtures;
pub mod upstream;
pub mod users;

use std::sync::{Arc, RwLock};

use tokio_util::sync::CancellationToken;

use crate::upstream::{EventDetail, Upstream, UpstreamError, Viewer};

/// Events per project shown on the overview.
pub const OVERVIEW_EVENTS: usize = 3;

/// Shared state of the running UI.
pub struct App {
    /// Resolved settings.
    pub settings: settings::Settings,
    /// sai-server client.
    pub upstream: Upstream,
    /// Users who may sign in (reloaded on SIGHUP).
    pub users: RwLock<users::Users>,
    /// Session sealing.
    pub sessions: session::Sessions,
    /// Failed sign-ins.
    pub limiter: ratelimit::SignInLimiter,
    /// Live topics.
    pub hub: live::Hub,
    /// Cancelled on SIGTERM.
    pub shutdown: CancellationToken,
}

impl App {
    /// Build the app from settings.
    pub fn new(settings: settings::Settings, shutdown: CancellationToken) -> anyhow::Result<App> {
        let sessions = session::Sessions::load_or_create(
            &settings.session_key_path,
            std::time::Duration::from_secs(settings.config.session_lifetime_secs),
        )?;
        let users = users::Users::load(&settings.config, &settings.base_dir)?;
        if users.is_empty() {
            tracing::warn!(
                "no users configured: nobody can sign in (add one with `sai user add NAME`)"
            );
        }
        Ok(App {
            upstream: Upstream::new(&settings.config.server_url, settings.service_token.clone()),
            users: RwLock::new(users),
            sessions,
            limiter: ratelimit::SignInLimiter::default(),
            hub: live::Hub::default(),
            shutdown,
            settings,
        })
    }

    /// Re-read the users file.
    pub fn reload_users(&self) -> anyhow::Result<()> {
        let users = users::Users::load(&self.settings.config, &self.settings.base_dir)?;
        tracing::info!(users = users.len(), "users reloaded");
        *self.users.write().expect("users lock") = users;
        Ok(())
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Projects with their latest events (details with task counts).
pub async fn overview_data(
    app: &App,
    viewer: &Viewer,
) -> Result<Vec<(String, Vec<EventDetail>)>, UpstreamError> {
    let mut out = Vec::new();
    for p in app.upstream.projects(viewer).await? {
        let events = app
            .upstream
            .events(&p.name, OVERVIEW_EVENTS, viewer)
            .await?;
        let mut details = Vec::new();
        for e in events {
            match app.upstream.event(&e.id, viewer).await {
                Ok(d) => details.push(d),
                Err(UpstreamError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        out.push((p.name, details));
    }
    Ok(out)
}

/// Serve on `listener` until the app's shutdown token is cancelled: HTTPS
/// when the settings name a certificate (re-read on SIGHUP), else HTTP.
pub async fn serve(app: Arc<App>, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    let sd = app.shutdown.clone();
    let app_tls = app.settings.tls.clone();
    tokio::spawn(feed::follow(app.clone()));
    // Browsers only: the server's API limits are the safe defaults here.
    let limits = sai_core::config::server::ServerLimits::default();
    sai_https::accept::serve(http::routes(app), listener, app_tls, &limits, sd).await?;
    tracing::info!("sai-web stopped");
    Ok(())
}

/// Bind a TCP listener (`host:port`).
pub async fn bind(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    use anyhow::Context;
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
        match sock.bind(a).and_then(|_| sock.listen(1024)) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(anyhow::anyhow!(
        "cannot listen on {addr}: {}",
        last.map(|e| e.to_string())
            .unwrap_or_else(|| "no address".into())
    ))
}
