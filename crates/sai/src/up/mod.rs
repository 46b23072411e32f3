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
//!
//! | module | job |
//! |---|---|
//! | `platform` | the platform tuple this machine offers |
//! | `secrets` | hook secret and tokens in the data dir |
//! | `configs` | the generated server and builder configs |
//! | `hook_install` | the repository's post-receive hook and `sai.*` git config |
//! | `processes` | running and stopping the two daemons |
//! | `demo` | the demo project built when no repository is given |
//! | `watch` | the live summary: progress, unrunnable tasks, results |
//! | `output` | stdout: message lines and the live progress block |
//!
//! What is built: with `--demo`, always the demo project (wherever it is
//! typed; no hook is installed in the current repository: the README's first
//! command, so that it never starts a checkout's own CI); with `--repo DIR`,
//! that repository; otherwise the repository `sai up` is typed in when its
//! HEAD has a `.sai.json`, else (no `.sai.json`, or outside any repository)
//! the demo project. `--no-repo` builds nothing.

mod configs;
mod demo;
mod hook_install;
mod output;
mod platform;
mod processes;
mod secrets;
mod watch;
mod web;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use sai_core::platform::{Platform, tuple_matches};
use sai_server::auth::{TokenKeys, TokenKind};
use tokio_util::sync::CancellationToken;

use crate::notify::{Repo, describe_reply, push_of_repo, read_secret, rebuild_event, send};
pub use output::say;
use processes::{Daemons, dialable};

pub use platform::detect_platform;

/// Default data dir of `sai up`, relative to the current directory.
pub const DEFAULT_DATA: &str = ".sai";

/// The builder's (and its token's) name.
pub const BUILDER_NAME: &str = "local";

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
    /// Repository to hook up and build (default: the repository `sai up` is
    /// typed in if its HEAD has a `.sai.json`, else the demo project).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["no_repo", "demo"])]
    pub repo: Option<PathBuf>,
    /// Do not build anything, not even the demo: just run server and builder.
    #[arg(long, conflicts_with = "demo")]
    pub no_repo: bool,
    /// Build the demo project under the data dir, even inside a repository
    /// that has a `.sai.json` (which is left alone: no hook, no build).
    #[arg(long)]
    pub demo: bool,
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

/// What `sai up` builds.
enum Target {
    /// Nothing (`--no-repo`).
    Nothing,
    /// The demo project under the data dir.
    Demo,
    /// The repository `--repo` names.
    Repo(Repo),
}

/// `--no-repo`, `--demo`, `--repo DIR`, or else the current directory's
/// repository when its HEAD has a `.sai.json`, else the demo.
fn choose_target(args: &UpArgs) -> Result<Target> {
    if args.no_repo {
        return Ok(Target::Nothing);
    }
    if args.demo {
        return Ok(Target::Demo);
    }
    if let Some(dir) = &args.repo {
        return Ok(Target::Repo(Repo::open(dir)?));
    }
    Ok(match Repo::open(Path::new(".")) {
        Ok(here) if has_saifile(&here) => Target::Repo(here),
        _ => Target::Demo,
    })
}

fn has_saifile(repo: &Repo) -> bool {
    repo.saifile_at("HEAD").ok().flatten().is_some()
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
    let target = choose_target(&args)?;

    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("creating {}", args.data.display()))?;
    let data = std::fs::canonicalize(&args.data)?;
    if let Target::Demo = target
        && let Ok(here) = Repo::open(Path::new("."))
    {
        if let Err(e) = hook_install::exclude_data_dir(&here, &data) {
            tracing::warn!("could not add the data dir to .git/info/exclude: {e:#}");
        }
        if args.demo && has_saifile(&here) {
            say(&format!(
                "{} has a .sai.json: left alone (--demo); to hook it up and build it, \
                 run `sai up` there without --demo",
                here.root.display(),
            ));
        } else if !args.demo && here.root.join(".sai.json").is_file() {
            say(&format!(
                "{} has a .sai.json in its work tree but not in HEAD: commit it, \
                 then `sai up` here builds this repository",
                here.root.display(),
            ));
        }
    }
    let secret = secrets::ensure_hook_secret(&data)?;
    let server_config = configs::server_config(&data, &args.listen)?;
    let settings = sai_server::Settings::resolve(server_config, &data)?;
    let keys = TokenKeys::load_or_create(&settings.token_key_path)?;
    let plat = platform.clone();
    secrets::ensure_token(
        &keys,
        &data.join("builder.token"),
        TokenKind::Builder,
        BUILDER_NAME,
        std::slice::from_ref(&platform),
        |ps| ps.iter().any(|p| tuple_matches(p, &plat)),
    )?;
    secrets::ensure_token(
        &keys,
        &data.join("user.token"),
        TokenKind::User,
        BUILDER_NAME,
        &[],
        |_| true,
    )?;
    // sai-web reads and acts for its signed-in users with this token.
    secrets::ensure_token(
        &keys,
        &data.join("web.token"),
        TokenKind::Service,
        "sai-web",
        &[],
        |_| true,
    )?;

    let rt = tokio::runtime::Runtime::new()?;
    let result = rt.block_on(serve(args, platform, data, settings, secret, target));
    rt.shutdown_timeout(Duration::from_secs(5));
    result
}

async fn serve(
    args: UpArgs,
    platform: String,
    data: PathBuf,
    settings: sai_server::Settings,
    secret: PathBuf,
    target: Target,
) -> Result<ExitCode> {
    let listener = sai_server::bind(&settings.config.listen).await?;
    let addr = dialable(listener.local_addr()?);
    let url = format!("http://{addr}");
    let server_sd = CancellationToken::new();
    let server = sai_server::Server::open(settings, server_sd.clone())?;
    std::fs::write(data.join("server.addr"), format!("{addr}\n"))?;
    let builder_config = configs::builder_config(&data, addr, &platform, args.instances)?;
    let daemons = Daemons::start(server, listener, server_sd, builder_config);

    say(&format!("server listening on {url}"));
    let web_sd = CancellationToken::new();
    match web::start(&args.web, &url, &data, web_sd.clone()).await {
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

    let user_token = std::fs::read_to_string(data.join("user.token"))
        .ok()
        .map(|t| t.trim().to_string());
    let watcher = tokio::spawn(watch::Watch::new(&url, &platform, user_token.clone()).run());

    if let Target::Demo = target {
        let repo = demo::ensure(&data, &platform)?;
        hook_install::write_git_config(&repo, &url, &secret, demo::PROJECT, &data)?;
        let why = if args.demo {
            "--demo"
        } else {
            "no repository with a .sai.json here"
        };
        say(&format!(
            "building the demo project {} ({why}): {}",
            repo.root.display(),
            demo::CONFIGURATIONS
                .iter()
                .map(|(c, what)| format!("{c}: {what}"))
                .collect::<Vec<_>>()
                .join("; ")
        ));
        if !args.no_queue {
            queue(
                &args,
                &repo,
                demo::PROJECT,
                &url,
                &secret,
                user_token.as_deref(),
            )
            .await;
        }
        say(&format!(
            "to build your own repository: run `sai up` in it, or `sai up --repo DIR` \
             (its .sai.json: see docs/saifile.md); \
             to build the demo again: edit and commit in {}, then `sai notify --repo {}`",
            repo.root.display(),
            repo.root.display()
        ));
    }
    if let Target::Repo(repo) = &target {
        let project = args
            .project
            .clone()
            .unwrap_or_else(|| repo.default_project());
        if args.repo.is_none() {
            say(&format!(
                "building {} (its HEAD has a .sai.json; `sai up --demo` builds the demo instead)",
                repo.root.display()
            ));
        }
        if let Err(e) = hook_install::exclude_data_dir(repo, &data) {
            tracing::warn!("could not add the data dir to .git/info/exclude: {e:#}");
        }
        match hook_install::setup_hook(&args, repo, &url, &secret, &project, &data) {
            Ok(s) => say(&s),
            Err(e) => say(&format!("could not install the hook: {e:#}")),
        }
        if !args.no_queue {
            queue(&args, repo, &project, &url, &secret, None).await;
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
    let stopped = daemons.run_until_stopped().await;
    web_sd.cancel();
    watcher.abort();
    stopped?.into_result()
}

/// Queue the build of `repo`'s HEAD (or `--ref`); with `rebuild_token`, a
/// commit queued before is built again.
async fn queue(
    args: &UpArgs,
    repo: &Repo,
    project: &str,
    url: &str,
    secret: &Path,
    rebuild_token: Option<&str>,
) {
    let n = match push_of_repo(repo, args.git_ref.as_deref(), None, Some(project), None) {
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
    let client = match crate::notify::http_client(None) {
        Ok(client) => client,
        Err(e) => return say(&format!("queueing {} failed: {e:#}", n.git_ref)),
    };
    let reply = match send(&n, &client, url, &key).await {
        Ok(reply) => reply,
        Err(e) => return say(&format!("queueing {} failed: {e:#}", n.git_ref)),
    };
    if let (Some(token), true, Some(id)) = (
        rebuild_token,
        reply["duplicate"] == true,
        reply["event_id"].as_str(),
    ) {
        match rebuild_event(&client, url, token, id).await {
            Ok(line) => say(&line),
            Err(e) => say(&format!("building event {id} again failed: {e:#}")),
        }
        return;
    }
    say(&describe_reply(&n, url, &reply));
}
