//! `sai notify`: tell a sai-server about a commit of a local repository,
//! with the same signed notification the git hooks send (`hooks/sai-notify`).
//!
//! `sai up` queues the repository's HEAD through [`push_of_repo`] and
//! [`send`], the same code path.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use sai_core::notification::Push;
use serde_json::Value;

/// Flags of `sai notify`.
#[derive(Debug, clap::Args)]
pub struct NotifyArgs {
    /// Server base URL, e.g. http://127.0.0.1:4400 (the notification is
    /// POSTed to the path /update-hook under it). Default: the repository's `sai.url`
    /// git config (which `sai up` writes).
    #[arg(long, env = "SAI_URL", value_name = "URL")]
    pub url: Option<String>,
    /// File holding the server's notification secret (one trailing newline
    /// is ignored), e.g. the `hook-secret` of a `sai up` data dir. Default:
    /// the repository's `sai.secretFile` git config.
    #[arg(long, env = "SAI_SECRET_FILE", value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
    /// When the server has seen this commit before, build it again as a new
    /// event (which names the one it repeats; the old results stay). Needs a
    /// user token: --token-file.
    #[arg(long)]
    pub rebuild: bool,
    /// File holding a user token, for --rebuild. Default: the repository's
    /// `sai.tokenFile` git config (`sai up` writes its `user.token`).
    #[arg(long, env = "SAI_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The git repository (work tree or bare).
    #[arg(long, default_value = ".", value_name = "DIR")]
    pub repo: PathBuf,
    /// The ref to report, e.g. refs/heads/main (default: the current branch).
    /// A bare branch name gets refs/heads/ prepended.
    #[arg(long = "ref", value_name = "REF")]
    pub git_ref: Option<String>,
    /// The commit to build (default: the ref's commit when it exists, else HEAD).
    #[arg(long, value_name = "REV")]
    pub rev: Option<String>,
    /// Project name (default: the repository folder's name without `.git`).
    #[arg(long, env = "SAI_PROJECT")]
    pub project: Option<String>,
    /// URL builders fetch from (default: the repository's path).
    #[arg(long, env = "SAI_FETCH_URL", value_name = "URL")]
    pub fetch_url: Option<String>,
    /// PEM file of the CA that signed an https:// server's certificate (a
    /// private CA); only it is trusted then. Default: the system roots
    /// (or the file named by SSL_CERT_FILE).
    #[arg(long, env = "SAI_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

/// Run `git -C dir args...`; its trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .context("running git (is it installed?)")?;
    if !out.status.success() {
        bail!(
            "git {} in {}: {}",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A repository: its root (work tree, or the git dir when bare).
#[derive(Debug, Clone)]
pub struct Repo {
    /// Absolute path of the work tree (or of the bare repository).
    pub root: PathBuf,
}

impl Repo {
    /// Find the repository containing `dir`.
    pub fn open(dir: &Path) -> Result<Repo> {
        let bare = git(dir, &["rev-parse", "--is-bare-repository"])? == "true";
        // Inside a git dir (as hooks run) there is no work tree either.
        let top = if bare {
            None
        } else {
            git(dir, &["rev-parse", "--show-toplevel"])
                .ok()
                .filter(|t| !t.is_empty())
        };
        let root = match top {
            Some(t) => PathBuf::from(t),
            None => PathBuf::from(git(dir, &["rev-parse", "--absolute-git-dir"])?),
        };
        Ok(Repo { root })
    }

    /// Default project name: the folder name without `.git`, made valid.
    pub fn default_project(&self) -> String {
        let name = self
            .root
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let name = name.strip_suffix(".git").unwrap_or(&name);
        let mut s: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        while s.starts_with('.') {
            s.remove(0);
        }
        s.truncate(64);
        if s.is_empty() { "project".into() } else { s }
    }

    /// A `git config` value of this repository, if set.
    pub fn config(&self, key: &str) -> Option<String> {
        git(&self.root, &["config", "--get", key])
            .ok()
            .filter(|v| !v.is_empty())
    }

    /// The current branch as `refs/heads/<b>`, if HEAD is on a branch.
    pub fn current_ref(&self) -> Option<String> {
        git(&self.root, &["symbolic-ref", "-q", "HEAD"])
            .ok()
            .filter(|r| !r.is_empty())
    }

    /// The `.sai.json` of a commit, or `None` when it has none.
    pub fn saifile_at(&self, hash: &str) -> Result<Option<Vec<u8>>> {
        let spec = format!("{hash}:.sai.json");
        let out = Command::new("git")
            .arg("-C")
            .arg(&self.root)
            .args(["show", &spec])
            .output()
            .context("running git")?;
        if !out.status.success() || out.stdout.is_empty() {
            return Ok(None);
        }
        Ok(Some(out.stdout))
    }
}

/// Read a secret file by the rule every daemon uses ([`sai_core::secret`]).
pub fn read_secret(path: &Path) -> Result<Vec<u8>> {
    Ok(sai_core::secret::secret_from_file(
        path,
        std::fs::read(path),
    )?)
}

/// The push to report for a commit of `repo`. `Ok(None)` when that commit
/// has no `.sai.json` (nothing to build).
pub fn push_of_repo(
    repo: &Repo,
    git_ref: Option<&str>,
    rev: Option<&str>,
    project: Option<&str>,
    fetch_url: Option<&str>,
) -> Result<Option<Push>> {
    let git_ref = match git_ref {
        Some(r) if r.starts_with("refs/") => r.to_string(),
        Some(r) => format!("refs/heads/{r}"),
        None => repo
            .current_ref()
            .context("HEAD is not on a branch (detached): give the ref to report with --ref")?,
    };
    let rev = match rev {
        Some(r) => r.to_string(),
        None => {
            let spec = format!("{git_ref}^{{commit}}");
            if git(&repo.root, &["rev-parse", "-q", "--verify", &spec]).is_ok() {
                git_ref.clone()
            } else {
                "HEAD".to_string()
            }
        }
    };
    let spec = format!("{rev}^{{commit}}");
    let hash = git(&repo.root, &["rev-parse", "--verify", &spec])?;
    let Some(saifile) = repo.saifile_at(&hash)? else {
        return Ok(None);
    };
    Ok(Some(Push {
        project: project
            .map(str::to_string)
            .unwrap_or_else(|| repo.default_project()),
        fetch_url: fetch_url
            .map(str::to_string)
            .unwrap_or_else(|| repo.root.display().to_string()),
        git_ref,
        hash,
        saifile,
    }))
}

/// The notification file of `push`: JSON plus a newline, as
/// `hooks/sai-notify` makes it.
fn notification_file(push: &Push) -> Vec<u8> {
    let mut nonce = [0u8; 16];
    rand::fill(&mut nonce[..]);
    push.notification(nonce, unix_now()).file_bytes()
}

/// Sign the notification of `push` with `key` and POST it to
/// `<url>/update-hook` with `client` (see [`http_client`]); the server's
/// JSON reply, or an error naming its status and message.
pub async fn send(push: &Push, client: &reqwest::Client, url: &str, key: &[u8]) -> Result<Value> {
    let body = notification_file(push);
    let auth = sai_core::notification::sign(key, &body);
    let endpoint = format!("{}/update-hook", url.trim_end_matches('/'));
    let req = client
        .post(&endpoint)
        .header("user-agent", "sai-notifier")
        .header("content-type", "application/json")
        .header("authorization", auth)
        .body(body);
    let text = post_text(req, &endpoint).await?;
    serde_json::from_str(&text).with_context(|| format!("{endpoint}: reply is not JSON"))
}

/// Send a POST to `endpoint`; the reply's text when its status is a
/// success, else an error naming the endpoint, the status and the reply.
async fn post_text(req: reqwest::RequestBuilder, endpoint: &str) -> Result<String> {
    let resp = req
        .send()
        .await
        .with_context(|| format!("POST {endpoint}"))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("{endpoint}: {status}: {}", text.trim());
    }
    Ok(text)
}

/// Ask the server to build the commit of event `id` again as a new event
/// (`POST /api/events/<id>/again` with a user token; the new event names
/// `id` in its `rebuild_of`); what happened, in one line.
pub async fn rebuild_event(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    id: &str,
) -> Result<String> {
    let url = url.trim_end_matches('/');
    let endpoint = format!("{url}/api/events/{id}/again");
    let text = post_text(client.post(&endpoint).bearer_auth(token.trim()), &endpoint).await?;
    let v: Value = serde_json::from_str(&text)
        .with_context(|| format!("{endpoint}: reply is not JSON: {}", text.trim()))?;
    let project = v["project"].as_str().unwrap_or("?");
    let git_ref = v["ref"].as_str().unwrap_or("?");
    let new_id = v["id"].as_str().unwrap_or("?");
    let n = v["tasks"].as_array().map_or(0, Vec::len);
    Ok(format!(
        "building {project} {git_ref} again as event {new_id} (a rebuild of event {id}), \
         {n} tasks queued: {url}/api/events/{new_id}"
    ))
}

/// The warnings in a reply (the saifile's, e.g. a misspelt key), one line each.
pub fn reply_warnings(reply: &Value) -> Vec<String> {
    reply["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w.as_str().map(str::to_string))
        .collect()
}

/// The HTTP client for notifications (rustls, certificates always checked):
/// trusting only the CA certificates in `ca_file` when given, else the
/// system roots.
pub fn http_client(ca_file: Option<&Path>) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30));
    if let Some(path) = ca_file {
        let pem =
            std::fs::read(path).with_context(|| format!("reading CA file {}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("CA file {}: not PEM certificates", path.display()))?;
        if certs.is_empty() {
            bail!("CA file {}: no CERTIFICATE in it", path.display());
        }
        b = b.tls_built_in_root_certs(false);
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build().context("setting up the HTTP client")
}

/// What a reply means, in one line.
pub fn describe_reply(n: &Push, url: &str, reply: &Value) -> String {
    let url = url.trim_end_matches('/');
    if let Some(id) = reply["event_id"].as_str() {
        if reply["duplicate"].as_bool() == Some(true) {
            format!(
                "{} {} ({}) was already queued as event {id}: {url}/api/events/{id} \
                 (to build it again: sai notify --rebuild)",
                n.project, n.git_ref, n.hash
            )
        } else {
            format!(
                "queued {} {} ({}) as event {id} with {} tasks: {url}/api/events/{id}",
                n.project,
                n.git_ref,
                n.hash,
                reply["tasks"].as_u64().unwrap_or(0)
            )
        }
    } else if let Some(why) = reply["ignored"].as_str() {
        format!("the server ignored {}: {why}", n.git_ref)
    } else {
        format!("the server replied {reply}")
    }
}

/// `sai notify`.
pub fn run(args: NotifyArgs) -> Result<ExitCode> {
    let repo = Repo::open(&args.repo)?;
    let url = args
        .url
        .clone()
        .or_else(|| repo.config("sai.url"))
        .with_context(|| {
            format!(
                "no server URL: pass --url, set SAI_URL, or `git -C {} config sai.url URL` \
             (`sai up` writes it)",
                repo.root.display()
            )
        })?;
    let secret_file = args
        .secret_file
        .clone()
        .or_else(|| repo.config("sai.secretFile").map(PathBuf::from))
        .with_context(|| {
            format!(
                "no notification secret: pass --secret-file, set SAI_SECRET_FILE, or \
                 `git -C {} config sai.secretFile FILE` (`sai up` writes it)",
                repo.root.display()
            )
        })?;
    let token = if args.rebuild {
        let file = args
            .token_file
            .clone()
            .or_else(|| repo.config("sai.tokenFile").map(PathBuf::from))
            .context(
                "--rebuild needs a user token: pass --token-file FILE (e.g. the user.token of \
                 a `sai up` data dir, or one from `sai token user`)",
            )?;
        let t = std::fs::read_to_string(&file)
            .with_context(|| format!("reading the token file {}", file.display()))?;
        Some(t.trim().to_string())
    } else {
        None
    };
    let key = read_secret(&secret_file)?;
    let project = args.project.clone().or_else(|| repo.config("sai.project"));
    let fetch_url = args
        .fetch_url
        .clone()
        .or_else(|| repo.config("sai.fetchUrl"));
    let Some(n) = push_of_repo(
        &repo,
        args.git_ref.as_deref(),
        args.rev.as_deref(),
        project.as_deref(),
        fetch_url.as_deref(),
    )?
    else {
        println!(
            "sai notify: no .sai.json in that commit of {}: nothing to build",
            repo.root.display()
        );
        return Ok(ExitCode::SUCCESS);
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = http_client(args.ca_file.as_deref())?;
    let reply = rt.block_on(send(&n, &client, &url, &key))?;
    for w in reply_warnings(&reply) {
        println!("sai notify: warning: {w}");
    }
    match (
        &token,
        reply["duplicate"] == true,
        reply["event_id"].as_str(),
    ) {
        (Some(token), true, Some(id)) => {
            println!(
                "sai notify: {}",
                rt.block_on(rebuild_event(&client, &url, token, id))?
            );
        }
        _ => println!("sai notify: {}", describe_reply(&n, &url, &reply)),
    }
    Ok(ExitCode::SUCCESS)
}

/// Unix seconds now (the notification's `timestamp`).
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
