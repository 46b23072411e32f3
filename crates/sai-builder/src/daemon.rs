//! The builder daemon: config in, one [`crate::server_link`] per server,
//! hourly housekeeping, until shutdown.
//!
//! [`load_config`] reads a config file through `sai_core::config::parse`
//! and `validate()`, every problem reported as `file:line:col: message`,
//! and resolves relative `token_file` paths against the config's folder.
//! [`run`] then:
//!
//! * checks the home, and picks the step user: when the daemon runs as
//!   root, `run_as` (default: the owner of `home`); otherwise the daemon's
//!   own user;
//! * sets up every platform once (its instance slots are shared by all the
//!   servers that platform takes work from);
//! * starts one link per distinct server URL
//!   ([`BuilderConfig::servers`]), each offering exactly the platforms
//!   configured for that server;
//! * removes job dirs older than `job_retention_secs` at start and every
//!   hour, sparing the running tasks' dirs;
//! * on `shutdown`: links stop accepting, kill their tasks, report them and
//!   close; `run` returns when every link has closed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use sai_core::config::builder::BuilderConfig;
use sai_core::config::{Format, load};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::env::resolve_parallel;
use crate::housekeeping::remove_old_job_dirs;
use crate::instances::InstancePool;
use crate::jobdir::Layout;
use crate::server_link::{LinkConfig, PlatformSlots, Shared, TokenSource, run_link};
use crate::step_runner::RunAs;
use crate::task::TaskContext;

/// Default config path.
pub const DEFAULT_CONFIG: &str = "/etc/sai/builder/conf";
/// Interval of the job dir cleanup.
pub const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(3600);

/// Read, parse and validate a builder config; see the module doc.
pub fn load_config(path: &Path) -> anyhow::Result<BuilderConfig> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let name = path.display().to_string();
    let format = Format::from_file_name(&name);
    let mut config: BuilderConfig = load(&name, &bytes, format)?;
    let base = path.parent().unwrap_or(Path::new("."));
    for platform in &mut config.platforms {
        for server in &mut platform.servers {
            if let Some(f) = &mut server.token_file
                && Path::new(f.as_str()).is_relative()
            {
                *f = base.join(&*f).display().to_string();
            }
        }
    }
    Ok(config)
}

/// The user build steps run as: `None` means the daemon's own user.
fn step_user(config: &BuilderConfig) -> anyhow::Result<Option<RunAs>> {
    if !nix::unistd::geteuid().is_root() {
        if let Some(u) = &config.run_as {
            tracing::info!("not running as root: run_as \"{u}\" ignored, steps run as this user");
        }
        return Ok(None);
    }
    let user = match &config.run_as {
        Some(name) => RunAs::lookup(name).with_context(|| format!("run_as \"{name}\""))?,
        None => RunAs::owner_of(Path::new(&config.home))
            .with_context(|| format!("finding the owner of home {}", config.home))?,
    };
    if user.uid.is_root() {
        tracing::warn!("build steps run as root; set run_as or give the home to a build user");
        return Ok(None);
    }
    tracing::info!(user = %user.name, "build steps run as this user");
    Ok(Some(user))
}

/// Everything [`run`] derives from the config before connecting.
fn prepare(config: &BuilderConfig) -> anyhow::Result<(Arc<Shared>, Vec<LinkConfig>)> {
    let home = PathBuf::from(&config.home);
    if !home.is_dir() {
        bail!("home {} is not an existing directory", home.display());
    }
    for (server, _) in config.servers() {
        if server.url.starts_with("wss://") {
            bail!(
                "{}: wss:// is not supported by this build of sai-builder yet; use ws:// (e.g. behind a TLS-terminating tunnel)",
                server.url
            );
        }
    }
    let layout = Layout::new(&home);
    let run_as = step_user(config)?;
    let cpus = resolve_parallel(None);
    let mut platforms = HashMap::new();
    for p in &config.platforms {
        let mut ctx = TaskContext::new(
            layout.clone(),
            InstancePool::new(p.instances),
            p.parallel(config, cpus),
        );
        ctx.platform_env = p.env.clone();
        ctx.step_timeout = Duration::from_secs(p.step_timeout_secs(config));
        ctx.log_limit = p.log_limit_bytes(config);
        ctx.run_as = run_as.clone();
        platforms.insert(p.name.clone(), PlatformSlots::new(p.instances, ctx));
    }
    let shared = Arc::new(Shared {
        host: config.host.clone(),
        layout,
        min_free_disk_bytes: config.min_free_disk_bytes,
        platforms,
        active: Mutex::new(Default::default()),
        capacity: tokio::sync::watch::Sender::new(0),
    });
    let links = config
        .servers()
        .into_iter()
        .map(|(server, names)| {
            let token = match (&server.token_file, &server.token) {
                (Some(f), _) => TokenSource::File(PathBuf::from(f)),
                (None, Some(t)) => TokenSource::Inline(t.clone()),
                (None, None) => TokenSource::Inline(String::new()),
            };
            LinkConfig::new(
                server.url.clone(),
                token,
                names.into_iter().map(str::to_string).collect(),
            )
        })
        .collect();
    Ok((shared, links))
}

/// The checks [`run`] makes before connecting (home exists, no `wss://`
/// URL, the step user exists), for `--check-config`.
pub fn check(config: &BuilderConfig) -> anyhow::Result<()> {
    prepare(config).map(|_| ())
}

/// Run the daemon until `shutdown` is cancelled; see the module doc.
pub async fn run(config: BuilderConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let (shared, links) = prepare(&config)?;
    tracing::info!(
        host = %config.host,
        home = %config.home,
        servers = links.len(),
        "sai-builder {} starting",
        env!("CARGO_PKG_VERSION")
    );
    let mut set = JoinSet::new();
    for lc in links {
        set.spawn(run_link(lc, shared.clone(), shutdown.clone()));
    }
    let keeper = tokio::spawn(housekeeping(
        shared.clone(),
        Duration::from_secs(config.job_retention_secs),
        shutdown.clone(),
    ));
    while let Some(r) = set.join_next().await {
        if let Err(e) = r {
            tracing::error!("server link failed: {e}");
        }
    }
    shutdown.cancel();
    let _ = keeper.await;
    tracing::info!("sai-builder stopped");
    Ok(())
}

async fn housekeeping(shared: Arc<Shared>, retention: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(HOUSEKEEPING_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let jobs = shared.layout.jobs_dir();
        let active = shared.active_vns();
        let res = tokio::task::spawn_blocking(move || {
            remove_old_job_dirs(&jobs, retention, &active, SystemTime::now())
        })
        .await;
        match res {
            Ok(Ok(c)) => {
                if !c.removed.is_empty() {
                    tracing::info!(removed = ?c.removed, "old job dirs removed");
                    // Disk was freed: links that declined for lack of it
                    // tell their servers.
                    shared.capacity_changed();
                }
                for (name, why) in c.failed {
                    tracing::warn!(job = %name, "cannot remove old job dir: {why}");
                }
            }
            Ok(Err(e)) => tracing::warn!("job dir cleanup: {e}"),
            Err(e) => tracing::warn!("job dir cleanup worker: {e}"),
        }
    }
}
