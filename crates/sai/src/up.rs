//! `sai up`: the all-in-one local Sai. One process runs sai-server and one
//! sai-builder for this machine's platform (both in-process, on one tokio
//! runtime), on loopback, with everything under one data dir:
//!
//! ```text
//! <data>/server.conf     sai-server config (usable with `sai-server -c`)
//! <data>/builder.conf    sai-builder config (usable with `sai-builder -c`)
//! <data>/hook-secret     hook HMAC secret, 32 random bytes as hex, 0600
//! <data>/token.key       token signing key, 0600
//! <data>/builder.token   the builder's token, 0600
//! <data>/user.token      a user token for the privileged API calls, 0600
//! <data>/builder/        the builder's home (git mirrors, job dirs)
//! <data>/sai-server.sqlite3, <data>/events/   the server's store
//! ```
//!
//! Secrets and tokens are kept across runs; the two configs are rewritten
//! on every start (they hold the listen address and the platform).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sai_core::config::builder::{BuilderConfig, BuilderPlatform, BuilderServer};
use sai_core::config::server::ServerConfig;
use sai_core::platform::{Platform, tuple_matches};
use sai_server::auth::{TokenKeys, TokenKind};
use tokio_util::sync::CancellationToken;

use crate::notify::{Notification, Repo, describe_reply, git, read_secret};

/// Default data dir of `sai up`, relative to the current directory.
pub const DEFAULT_DATA: &str = ".sai";

/// The builder's (and its token's) name.
pub const BUILDER_NAME: &str = "local";

/// The post-receive hook installed into the repository.
pub const HOOK_POST_RECEIVE: &str = include_str!("../../../hooks/post-receive");
/// The notifier script the hook calls.
pub const HOOK_SAI_NOTIFY: &str = include_str!("../../../hooks/sai-notify");

/// Flags of `sai up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Data dir: configs, secrets, tokens, the server's store and the
    /// builder's home.
    #[arg(long, default_value = DEFAULT_DATA, value_name = "DIR")]
    pub data: PathBuf,
    /// Address sai-server listens on (hooks, builders, /api). Port 0 picks a
    /// free port; the bound address is printed.
    #[arg(long, default_value = "127.0.0.1:4400", value_name = "ADDR:PORT")]
    pub listen: String,
    /// Address the web UI (sai-web, in-process) listens on; port 0 picks a
    /// free port. The URL is printed.
    #[arg(long, default_value = "127.0.0.1:4401", value_name = "ADDR:PORT")]
    pub web: String,
    /// Platform tuple the local builder offers (default: detected, e.g.
    /// linux-debian-12/x86_64/gcc).
    #[arg(long, value_name = "TUPLE")]
    pub platform: Option<String>,
    /// How many tasks the local builder runs at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub instances: u32,
    /// Repository to hook up and build (default: the current directory's).
    #[arg(long, value_name = "DIR", conflicts_with = "no_repo")]
    pub repo: Option<PathBuf>,
    /// Do not touch any repository: just run server and builder.
    #[arg(long)]
    pub no_repo: bool,
    /// Install the post-receive hook even over an existing, foreign hook
    /// (which is kept as post-receive.orig). Without it a foreign hook is
    /// never touched.
    #[arg(long, conflicts_with = "no_install_hook")]
    pub install_hook: bool,
    /// Never install the hook; print how to instead.
    #[arg(long)]
    pub no_install_hook: bool,
    /// Ref to queue the repository's build for (default: the current
    /// branch); its commit if the ref exists, else HEAD.
    #[arg(long = "ref", value_name = "REF")]
    pub git_ref: Option<String>,
    /// Do not queue a build of the repository's HEAD at start.
    #[arg(long)]
    pub no_queue: bool,
    /// Project name (default: the repository folder's name).
    #[arg(long)]
    pub project: Option<String>,
}

/// The detected platform tuple of this machine: `linux-<ID>-<VERSION_ID
/// without dots>/<arch>/<gcc|llvm>`.
pub fn detect_platform() -> String {
    let arch: String = std::env::consts::ARCH
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let os = detect_os();
    let mut tuple = format!("{os}/{arch}");
    if let Some(tc) = detect_toolchain() {
        tuple.push('/');
        tuple.push_str(tc);
    }
    if Platform::parse(&tuple).is_ok() {
        tuple
    } else {
        format!("{}/{arch}", std::env::consts::OS)
    }
}

fn clean(s: &str) -> String {
    s.trim()
        .trim_matches('"')
        .trim_matches('\'')
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect::<String>()
        .to_ascii_lowercase()
}

fn detect_os() -> String {
    let os = std::env::consts::OS;
    if os != "linux" {
        return os.to_string();
    }
    let text = std::fs::read_to_string("/etc/os-release")
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .unwrap_or_default();
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
            .map(clean)
            .filter(|v| !v.is_empty())
    };
    match (field("ID"), field("VERSION_ID")) {
        (Some(id), Some(ver)) => format!("linux-{id}-{ver}"),
        (Some(id), None) => format!("linux-{id}"),
        _ => "linux".into(),
    }
}

fn detect_toolchain() -> Option<&'static str> {
    let out = Command::new("cc").arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    if text.contains("clang") {
        Some("llvm")
    } else if text.contains("gcc") || text.contains("free software foundation") {
        Some("gcc")
    } else {
        None
    }
}

/// Write `bytes` to `path` with mode 0600 (replacing it).
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The hook secret under `data`, created (32 random bytes, hex, 0600) if missing.
pub fn ensure_hook_secret(data: &Path) -> Result<PathBuf> {
    let path = data.join("hook-secret");
    if !path.exists() {
        let mut b = [0u8; 32];
        rand::fill(&mut b[..]);
        write_private(&path, format!("{}\n", hex::encode(b)).as_bytes())?;
    }
    read_secret(&path)?;
    Ok(path)
}

/// A token file kept while it verifies and `fits`, else minted anew.
fn ensure_token(
    keys: &TokenKeys,
    path: &Path,
    kind: TokenKind,
    name: &str,
    platforms: &[String],
    fits: impl Fn(&[String]) -> bool,
) -> Result<()> {
    if let Ok(t) = std::fs::read_to_string(path)
        && let Ok(id) = keys.verify(kind, t.trim(), &[])
        && id.name == name
        && fits(&id.platforms)
    {
        return Ok(());
    }
    let token = keys.mint(kind, name, platforms, Duration::from_secs(365 * 86_400))?;
    write_private(path, format!("{token}\n").as_bytes())
}

fn write_json_config(path: &Path, comment: &str, value: &impl serde::Serialize) -> Result<()> {
    let mut text = String::new();
    for l in comment.lines() {
        text.push_str("# ");
        text.push_str(l);
        text.push('\n');
    }
    text.push_str(&serde_json::to_string_pretty(value)?);
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Environment the local builder's steps get on top of the builder's
/// defaults: the `PATH` and toolchain homes of the user running `sai up`
/// (the step `HOME` is the builder's home, so rustup/cargo would not find
/// them otherwise).
fn toolchain_env() -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let home = std::env::var_os("HOME").map(PathBuf::from);
    if let Ok(path) = std::env::var("PATH") {
        env.insert("PATH".to_string(), path);
    }
    for (var, dflt) in [("RUSTUP_HOME", ".rustup"), ("CARGO_HOME", ".cargo")] {
        let v = std::env::var_os(var)
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(dflt)))
            .filter(|p| p.is_dir());
        if let Some(v) = v.and_then(|p| p.to_str().map(str::to_string)) {
            env.insert(var.to_string(), v);
        }
    }
    env
}

/// What was done about the hook, for the summary.
fn setup_hook(
    args: &UpArgs,
    repo: &Repo,
    url: &str,
    secret: &Path,
    project: &str,
) -> Result<String> {
    let hooks_rel = git(&repo.root, &["rev-parse", "--git-path", "hooks"])?;
    let hooks = if Path::new(&hooks_rel).is_absolute() {
        PathBuf::from(hooks_rel)
    } else {
        repo.root.join(hooks_rel)
    };
    let hook = hooks.join("post-receive");
    let existing = std::fs::read_to_string(&hook).ok();
    let ours = existing
        .as_deref()
        .is_some_and(|t| t == HOOK_POST_RECEIVE || t.contains("sai-notify"));
    let fetch_url = repo.root.display().to_string();
    let config = [
        ("sai.url", url.to_string()),
        ("sai.secretFile", secret.display().to_string()),
        ("sai.project", project.to_string()),
        ("sai.fetchUrl", fetch_url),
    ];
    let install = !args.no_install_hook && (existing.is_none() || ours || args.install_hook);
    if !install {
        let mut s = format!(
            "hook not installed ({}). To install it by hand:\n",
            if args.no_install_hook {
                "--no-install-hook".to_string()
            } else {
                format!("{} exists and is not Sai's", hook.display())
            }
        );
        let src = concat!(env!("CARGO_MANIFEST_DIR"), "/../../hooks");
        s.push_str(&format!(
            "    cp {src}/post-receive {src}/sai-notify {}/\n",
            hooks.display()
        ));
        for (k, v) in &config {
            s.push_str(&format!(
                "    git -C {} config {k} {}\n",
                repo.root.display(),
                shell_quote(v)
            ));
        }
        s.push_str("  (or call `sai notify` from your own hook)");
        return Ok(s);
    }
    std::fs::create_dir_all(&hooks)?;
    if let Some(old) = &existing
        && !ours
    {
        std::fs::write(hooks.join("post-receive.orig"), old)?;
    }
    write_exec(&hooks.join("sai-notify"), HOOK_SAI_NOTIFY)?;
    write_exec(&hook, HOOK_POST_RECEIVE)?;
    for (k, v) in &config {
        git(&repo.root, &["config", k, v])?;
    }
    Ok(format!(
        "hook installed: {} (+ sai-notify), git config sai.url={url}",
        hook.display()
    ))
}

/// A data dir inside the work tree goes into `.git/info/exclude`, so that
/// `git status` and `git add .` leave it alone.
fn exclude_data_dir(repo: &Repo, data: &Path) -> Result<()> {
    let Ok(rel) = data.strip_prefix(&repo.root) else {
        return Ok(());
    };
    let Some(rel) = rel.to_str().filter(|r| !r.is_empty()) else {
        return Ok(());
    };
    if git(&repo.root, &["check-ignore", "-q", rel]).is_ok() {
        return Ok(());
    }
    let exclude = git(&repo.root, &["rev-parse", "--git-path", "info/exclude"])?;
    let exclude = repo.root.join(exclude);
    if let Some(dir) = exclude.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut text = std::fs::read_to_string(&exclude).unwrap_or_default();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!("# sai up data dir\n/{rel}/\n"));
    std::fs::write(&exclude, text)?;
    Ok(())
}

fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-:@=".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn write_exec(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// Loopback for an unspecified listen address, so the builder can dial it.
fn dialable(addr: SocketAddr) -> SocketAddr {
    let mut a = addr;
    if a.ip().is_unspecified() {
        a.set_ip(if a.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    a
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "sai up: {line}");
    let _ = out.flush();
}

/// `sai up`.
pub fn run(args: UpArgs) -> Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init()
        .ok();
    let platform = match &args.platform {
        Some(p) => p.clone(),
        None => detect_platform(),
    };
    Platform::parse(&platform).map_err(|e| anyhow::anyhow!("platform {platform:?}: {e}"))?;
    let repo = if args.no_repo {
        None
    } else {
        let dir = args.repo.clone().unwrap_or_else(|| PathBuf::from("."));
        match Repo::open(&dir) {
            Ok(r) => Some(r),
            Err(e) if args.repo.is_some() => return Err(e),
            Err(_) => {
                say(
                    "the current directory is not in a git repository: no hook, nothing queued (use --repo DIR)",
                );
                None
            }
        }
    };

    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("creating {}", args.data.display()))?;
    let data = std::fs::canonicalize(&args.data)?;
    let secret = ensure_hook_secret(&data)?;

    let server_config = ServerConfig {
        schema: Some("sai-server".into()),
        listen: args.listen.clone(),
        data_dir: ".".into(),
        notification_key_file: Some("hook-secret".into()),
        ..ServerConfig::default()
    };
    let problems: Vec<String> = server_config
        .validate()
        .iter()
        .map(ToString::to_string)
        .collect();
    if !problems.is_empty() {
        bail!("--listen: {}", problems.join("; "));
    }
    write_json_config(
        &data.join("server.conf"),
        "sai-server config generated by `sai up` (rewritten on every start).\n\
         Run it alone with: sai-server -c server.conf",
        &server_config,
    )?;
    let settings = sai_server::Settings::resolve(server_config, &data)?;
    let keys = TokenKeys::load_or_create(&settings.token_key_path)?;
    let plat = platform.clone();
    ensure_token(
        &keys,
        &data.join("builder.token"),
        TokenKind::Builder,
        BUILDER_NAME,
        std::slice::from_ref(&platform),
        |ps| ps.iter().any(|p| tuple_matches(p, &plat)),
    )?;
    ensure_token(
        &keys,
        &data.join("user.token"),
        TokenKind::User,
        BUILDER_NAME,
        &[],
        |_| true,
    )?;
    // sai-web reads and acts for its signed-in users with this token.
    ensure_token(
        &keys,
        &data.join("web.token"),
        TokenKind::Service,
        "sai-web",
        &[],
        |_| true,
    )?;

    let rt = tokio::runtime::Runtime::new()?;
    let result = rt.block_on(serve(args, platform, data, settings, secret, repo));
    rt.shutdown_timeout(Duration::from_secs(5));
    result
}

async fn serve(
    args: UpArgs,
    platform: String,
    data: PathBuf,
    settings: sai_server::Settings,
    secret: PathBuf,
    repo: Option<Repo>,
) -> Result<ExitCode> {
    let listener = sai_server::bind(&settings.config.listen).await?;
    let addr = dialable(listener.local_addr()?);
    let url = format!("http://{addr}");
    let server_sd = CancellationToken::new();
    let builder_sd = CancellationToken::new();
    let server = sai_server::Server::open(settings, server_sd.clone())?;
    std::fs::write(data.join("server.addr"), format!("{addr}\n"))?;

    let home = data.join("builder");
    std::fs::create_dir_all(&home)?;
    let mut builder_config = BuilderConfig {
        schema: Some("sai-builder".into()),
        home: home.display().to_string(),
        host: BUILDER_NAME.into(),
        platforms: vec![BuilderPlatform {
            name: platform.clone(),
            servers: vec![BuilderServer {
                url: format!("ws://{addr}/builder"),
                token_file: Some("builder.token".into()),
                token: None,
            }],
            instances: args.instances,
            env: toolchain_env(),
            limits: None,
        }],
        step_timeout_secs: sai_core::config::builder::DEFAULT_STEP_TIMEOUT_SECS,
        log_limit_bytes: sai_core::config::builder::DEFAULT_LOG_LIMIT_BYTES,
        parallel: None,
        run_as: None,
        job_retention_secs: sai_core::config::builder::DEFAULT_JOB_RETENTION_SECS,
        min_free_disk_bytes: 256 * 1024 * 1024,
    };
    let problems = builder_config.validate();
    if !problems.is_empty() {
        let p: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        bail!("generated builder config is invalid: {}", p.join("; "));
    }
    write_json_config(
        &data.join("builder.conf"),
        "sai-builder config generated by `sai up` (rewritten on every start).\n\
         Run it alone with: sai-builder -c builder.conf",
        &builder_config,
    )?;
    // In-process: the token file by absolute path.
    for p in &mut builder_config.platforms {
        for s in &mut p.servers {
            s.token_file = Some(data.join("builder.token").display().to_string());
        }
    }

    let mut server_task = tokio::spawn(sai_server::serve(server, listener));
    let mut builder_task =
        tokio::spawn(sai_builder::daemon::run(builder_config, builder_sd.clone()));

    say(&format!("server listening on {url}"));
    let web_sd = CancellationToken::new();
    match crate::up_web::start(&args.web, &url, &data, web_sd.clone()).await {
        Ok((web_url, _task)) => say(&format!("web UI: {web_url}")),
        Err(e) => say(&format!("web UI: not started: {e:#}")),
    }
    say(&format!("data dir: {}", data.display()));
    say(&format!(
        "builder {BUILDER_NAME} offers {platform} x {}",
        args.instances
    ));
    say(&format!(
        "API: {url}/api/projects, {url}/api/builders (user token for privileged calls: {})",
        data.join("user.token").display()
    ));

    if let Some(repo) = &repo {
        let project = args
            .project
            .clone()
            .unwrap_or_else(|| repo.default_project());
        if let Err(e) = exclude_data_dir(repo, &data) {
            tracing::warn!("could not add the data dir to .git/info/exclude: {e:#}");
        }
        match setup_hook(&args, repo, &url, &secret, &project) {
            Ok(s) => say(&s),
            Err(e) => say(&format!("could not install the hook: {e:#}")),
        }
        if !args.no_queue {
            queue(&args, repo, &project, &url, &secret).await;
        }
        say(&format!(
            "to build again: push into {} (its post-receive hook notifies Sai), or run\n    \
             sai notify --url {url} --secret-file {} --repo {}",
            repo.root.display(),
            secret.display(),
            repo.root.display()
        ));
    }
    say("running; Ctrl-C to stop");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let early = tokio::select! {
        _ = tokio::signal::ctrl_c() => None,
        _ = term.recv() => None,
        r = &mut server_task => Some(("sai-server", r.map_err(anyhow::Error::from).and_then(|r| r))),
        r = &mut builder_task => Some(("sai-builder", r.map_err(anyhow::Error::from).and_then(|r| r))),
    };
    say("stopping: builder first (running tasks are killed and handed back), then the server");
    web_sd.cancel();
    builder_sd.cancel();
    let finished = |who: &str| early.as_ref().is_some_and(|(w, _)| *w == who);
    if !finished("sai-builder") {
        match tokio::time::timeout(Duration::from_secs(20), &mut builder_task).await {
            Ok(Ok(Err(e))) => tracing::error!("sai-builder: {e:#}"),
            Ok(Err(e)) => tracing::error!("sai-builder task: {e}"),
            Err(_) => tracing::warn!("sai-builder did not stop within 20 s"),
            Ok(Ok(Ok(()))) => {}
        }
    }
    server_sd.cancel();
    if !finished("sai-server") {
        match tokio::time::timeout(Duration::from_secs(20), &mut server_task).await {
            Ok(Ok(Err(e))) => tracing::error!("sai-server: {e:#}"),
            Ok(Err(e)) => tracing::error!("sai-server task: {e}"),
            Err(_) => tracing::warn!("sai-server did not stop within 20 s"),
            Ok(Ok(Ok(()))) => {}
        }
    }
    match early {
        None => {
            say("stopped");
            Ok(ExitCode::SUCCESS)
        }
        Some((who, Err(e))) => bail!("{who} failed: {e:#}"),
        Some((who, Ok(()))) => bail!("{who} stopped unexpectedly"),
    }
}

async fn queue(args: &UpArgs, repo: &Repo, project: &str, url: &str, secret: &Path) {
    let n = match Notification::from_repo(repo, args.git_ref.as_deref(), None, Some(project), None)
    {
        Ok(Some(n)) => n,
        Ok(None) => {
            say(&format!(
                "no .sai.json in HEAD of {}: nothing queued",
                repo.root.display()
            ));
            return;
        }
        Err(e) => {
            say(&format!("nothing queued: {e:#}"));
            return;
        }
    };
    let key = match read_secret(secret) {
        Ok(k) => k,
        Err(e) => {
            say(&format!("nothing queued: {e:#}"));
            return;
        }
    };
    match n.send(url, &key).await {
        Ok(reply) => say(&describe_reply(&n, url, &reply)),
        Err(e) => say(&format!("queueing {} failed: {e:#}", n.git_ref)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detected_platform_is_a_valid_tuple() {
        let p = detect_platform();
        assert!(Platform::parse(&p).is_ok(), "{p}");
        assert!(!p.contains('.'), "{p}");
        assert!(p.split('/').nth(1).is_some(), "{p}: no arch");
    }

    #[test]
    fn os_release_values_are_cleaned() {
        assert_eq!(clean("\"12\""), "12");
        assert_eq!(clean("22.04"), "2204");
        assert_eq!(clean("'opensuse-leap'"), "opensuse-leap");
        assert_eq!(clean("Fedora Linux"), "fedoralinux");
    }

    #[test]
    fn quoting_for_printed_commands() {
        assert_eq!(shell_quote("/a/b-c_d.e"), "/a/b-c_d.e");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }
}
