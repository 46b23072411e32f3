//! The builder daemon: config in, one [`crate::server_link`] per server,
//! hourly housekeeping, until shutdown.
//!
//! [`load_config`] reads a config file through `sai_core::config::parse`
//! and `validate()`, every problem reported as `file:line:col: message`,
//! and resolves relative `token_file` and `ca_file` paths against the
//! config's folder.
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
            for f in [&mut server.token_file, &mut server.ca_file]
                .into_iter()
                .flatten()
            {
                if Path::new(f.as_str()).is_relative() {
                    *f = base.join(&*f).display().to_string();
                }
            }
        }
    }
    Ok(config)
}

/// Whether steps run isolated ([`crate::platform::isolation`]). Unset, it
/// is on where this builder can set it up and off, with a warning, where it
/// cannot (a container without `CAP_SYS_ADMIN`, no user namespaces); set to
/// `true`, a task that cannot be isolated fails instead of running exposed.
/// Where only the pid namespace's fresh `/proc` is refused, steps are
/// isolated from other tasks' files but not processes, with a warning.
fn isolate_tasks(config: &BuilderConfig, layout: &Layout) -> anyhow::Result<bool> {
    if !cfg!(target_os = "linux") {
        let _ = layout;
        if config.isolate_tasks == Some(true) {
            bail!(
                "isolate_tasks: steps can only be isolated on Linux; remove it from the config on this platform"
            );
        }
        return Ok(false);
    }
    #[cfg(target_os = "linux")]
    let shared_proc = |why: &str| {
        tracing::warn!(
            "steps are isolated from other tasks' files but not from their processes: \
             a fresh /proc cannot be mounted here ({why}), so steps can see every process \
             on the host in /proc; run sai-builder with CAP_SYS_ADMIN, or where the host's \
             /proc is not partly masked (podman: --security-opt unmask=ALL; systemd: \
             without ProtectKernelTunables= and ProtectKernelLogs=)"
        )
    };
    let isolate = match config.isolate_tasks {
        #[cfg(target_os = "linux")]
        Some(true) => {
            if let Ok(crate::platform::isolation::Scope::SharedProc { why }) =
                crate::platform::isolation::available(layout.home())
            {
                shared_proc(&why);
            }
            true
        }
        Some(explicit) => explicit,
        #[cfg(target_os = "linux")]
        None => match crate::platform::isolation::available(layout.home()) {
            Ok(crate::platform::isolation::Scope::Full) => true,
            Ok(crate::platform::isolation::Scope::SharedProc { why }) => {
                shared_proc(&why);
                true
            }
            Err(why) => {
                tracing::warn!(
                    "task isolation cannot be set up here ({why}), so steps can see other \
                     tasks' job dirs; run sai-builder as root or allow unprivileged user \
                     namespaces, or set \"isolate_tasks\": false to silence this"
                );
                false
            }
        },
        #[cfg(not(target_os = "linux"))]
        None => false,
    };
    if !isolate {
        tracing::info!("task isolation is off: steps can see other tasks' job dirs");
    }
    Ok(isolate)
}

/// Where task cgroups go: the builder's own cgroup v2 when it may create
/// children there (limits need their controllers too); else, when limits
/// are set, cgroup v1 hierarchies (named after this builder's home, so
/// builders sharing a cgroup never touch each other's tasks). Steps are
/// contained by the subreaper shim either way; configured limits that no
/// cgroup can hold are an error.
#[cfg(target_os = "linux")]
fn task_cgroups(
    config: &BuilderConfig,
    home: &Path,
) -> anyhow::Result<Option<Arc<crate::platform::cgroup::CgroupParent>>> {
    use crate::platform::cgroup::{CgroupParent, TaskLimits, own_cgroup};
    let limits = config
        .task_limits
        .as_ref()
        .map(|l| TaskLimits {
            memory_max: l.memory_max_bytes,
            pids_max: l.pids_max,
            cpu_weight: l.cpu_weight,
        })
        .unwrap_or_default();
    let parent = if config.task_limits.is_some() {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(home).with_context(|| format!("home {}", home.display()))?;
        let owner = format!("{:x}-{:x}", meta.dev(), meta.ino());
        CgroupParent::for_limits(limits, &owner)
            .context("task_limits are set but no cgroup can hold them")?
    } else {
        // The root of the hierarchy is nobody's delegated subtree.
        let v2 = match own_cgroup() {
            Some(dir) if dir.join("cgroup.type").exists() => CgroupParent::at(dir.clone(), limits)
                .map_err(|e| anyhow::anyhow!("cgroup {}: {e}", dir.display())),
            Some(dir) => Err(anyhow::anyhow!(
                "{} is the root cgroup, not a delegated one",
                dir.display()
            )),
            None => Err(anyhow::anyhow!("no cgroup v2 mount")),
        };
        match v2 {
            Ok(p) => p,
            Err(e) => {
                tracing::info!("no task cgroups ({e}); steps are contained by a subreaper shim");
                return Ok(None);
            }
        }
    };
    let stale = parent.remove_stale();
    tracing::info!(cgroups = %parent, stale, "tasks run in their own cgroups");
    Ok(Some(Arc::new(parent)))
}

/// The user build steps run as: `None` means the daemon's own user.
/// Only Unix can switch users; elsewhere `run_as` is refused.
#[cfg(not(unix))]
fn step_user(config: &BuilderConfig) -> anyhow::Result<Option<RunAs>> {
    match &config.run_as {
        Some(name) => Err(crate::step_runner::StepError::RunAsUnsupported(name.clone()).into()),
        None => Ok(None),
    }
}

/// The user build steps run as: `None` means the daemon's own user.
#[cfg(unix)]
fn step_user(config: &BuilderConfig) -> anyhow::Result<Option<RunAs>> {
    if !crate::platform::is_privileged() {
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
    let layout = Layout::new(&home);
    let run_as = step_user(config)?;
    #[cfg(target_os = "linux")]
    let cgroups = task_cgroups(config, &home)?;
    let isolate = isolate_tasks(config, &layout)?;
    #[cfg(not(target_os = "linux"))]
    if config.task_limits.is_some() {
        bail!("task_limits need Linux cgroups; remove them from the config on this platform");
    }
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
        ctx.isolate = isolate;
        #[cfg(target_os = "linux")]
        {
            ctx.cgroups = cgroups.clone();
        }
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
            let mut link = LinkConfig::new(
                server.url.clone(),
                token,
                names.into_iter().map(str::to_string).collect(),
            );
            if server.url.starts_with("wss://") {
                let ca = server.ca_file.as_deref().map(Path::new);
                link.tls = Some(
                    crate::tls::client_config(ca)
                        .with_context(|| format!("server {}", server.url))?,
                );
            }
            Ok(link)
        })
        .collect::<anyhow::Result<_>>()?;
    Ok((shared, links))
}

/// The checks [`run`] makes before connecting (home exists, CA files and
/// system roots readable, the step user exists), for `--check-config`.
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
    crate::tls::install_crypto_provider();
    if let Some(addr) = &config.metrics_listen {
        let listener = crate::metrics::bind(addr).await?;
        tracing::info!("metrics on http://{}/metrics", listener.local_addr()?);
        tokio::spawn(crate::metrics::serve(listener, shutdown.clone()));
    }
    let (attempted, mut first_attempts) = tokio::sync::mpsc::unbounded_channel();
    let n_links = links.len();
    let mut set = JoinSet::new();
    for mut lc in links {
        lc.first_attempt = Some(attempted.clone());
        set.spawn(run_link(lc, shared.clone(), shutdown.clone()));
    }
    drop(attempted);
    // Ready once every link has connected or is retrying; the watchdog
    // keep-alives start then (systemd arms the watchdog at READY=1).
    let health = shared.clone();
    let sd = shutdown.clone();
    tokio::spawn(async move {
        let mut seen = 0;
        while seen < n_links && first_attempts.recv().await.is_some() {
            seen += 1;
        }
        if seen == n_links {
            sai_daemon::supervise::ready(&format!("serving {n_links} server link(s)"));
            sai_daemon::supervise::spawn_watchdog(
                move || drop(health.active.lock().unwrap_or_else(|e| e.into_inner())),
                sd,
            );
        }
    });
    let sd = shutdown.clone();
    tokio::spawn(async move {
        sd.cancelled().await;
        sai_daemon::supervise::stopping();
    });

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
    let mut ticker = sai_daemon::ticker::Ticker::new(HOUSEKEEPING_EVERY, shutdown);
    while ticker.tick().await {
        let jobs = shared.layout.jobs_dir();
        let active = shared.active_vns();
        let res = tokio::task::spawn_blocking(move || {
            remove_old_job_dirs(&jobs, retention, &active, SystemTime::now())
        })
        .await;
        match res {
            Ok(Ok(c)) => {
                if !c.removed.is_empty() {
                    tracing::info!(
                        "removed {} old job dirs: {}",
                        c.removed.len(),
                        c.removed.join(", ")
                    );
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
