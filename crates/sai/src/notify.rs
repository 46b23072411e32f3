//! `sai notify`: tell a sai-server about a commit of a local repository,
//! with the same signed notification the git hooks send (`hooks/sai-notify`).
//!
//! `sai up` queues the repository's HEAD through [`Notification::from_repo`]
//! and [`Notification::send`], the same code path.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Flags of `sai notify`.
#[derive(Debug, clap::Args)]
pub struct NotifyArgs {
    /// Server base URL, e.g. http://127.0.0.1:4400 (the notification is
    /// POSTed to <URL>/update-hook).
    #[arg(long, env = "SAI_URL", value_name = "URL")]
    pub url: String,
    /// File holding the server's notification secret (one trailing newline
    /// is ignored), e.g. the `hook-secret` of a `sai up` data dir.
    #[arg(long, env = "SAI_SECRET_FILE", value_name = "FILE")]
    pub secret_file: PathBuf,
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
}

/// One notification, ready to sign and send.
#[derive(Debug, Clone)]
pub struct Notification {
    /// `repository.name`.
    pub project: String,
    /// `repository.fetchurl`.
    pub fetch_url: String,
    /// `ref`.
    pub git_ref: String,
    /// `hash` (the commit).
    pub hash: String,
    /// The `.sai.json` of that commit.
    pub saifile: Vec<u8>,
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

impl Notification {
    /// Build the notification for a commit of `repo`. `Ok(None)` when that
    /// commit has no `.sai.json` (nothing to build).
    pub fn from_repo(
        repo: &Repo,
        git_ref: Option<&str>,
        rev: Option<&str>,
        project: Option<&str>,
        fetch_url: Option<&str>,
    ) -> Result<Option<Notification>> {
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
        Ok(Some(Notification {
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

    /// The notification file: JSON plus a newline, as `hooks/sai-notify` makes it.
    pub fn body(&self) -> Vec<u8> {
        let mut nonce = [0u8; 16];
        rand::fill(&mut nonce[..]);
        sai_core::notification::Notification::new(
            &self.project,
            &self.fetch_url,
            &self.git_ref,
            &self.hash,
            &self.saifile,
            nonce,
        )
        .file_bytes()
    }

    /// Sign with `key` and POST to `<url>/update-hook`; the server's JSON
    /// reply, or an error naming its status and message.
    pub async fn send(&self, url: &str, key: &[u8]) -> Result<Value> {
        let body = self.body();
        let auth = sai_core::notification::sign(key, &body);
        let endpoint = format!("{}/update-hook", url.trim_end_matches('/'));
        let resp = reqwest::Client::new()
            .post(&endpoint)
            .header("user-agent", "sai-notifier")
            .header("content-type", "application/json")
            .header("authorization", auth)
            .body(body)
            .send()
            .await
            .with_context(|| format!("POST {endpoint}"))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("{endpoint}: {status}: {}", text.trim());
        }
        serde_json::from_str(&text).with_context(|| format!("{endpoint}: reply is not JSON"))
    }
}

/// What a reply means, in one line.
pub fn describe_reply(n: &Notification, url: &str, reply: &Value) -> String {
    let url = url.trim_end_matches('/');
    if let Some(id) = reply["event_id"].as_str() {
        if reply["duplicate"].as_bool() == Some(true) {
            format!(
                "{} {} ({}) was already queued as event {id}: {url}/api/events/{id}",
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
    let key = read_secret(&args.secret_file)?;
    let repo = Repo::open(&args.repo)?;
    let Some(n) = Notification::from_repo(
        &repo,
        args.git_ref.as_deref(),
        args.rev.as_deref(),
        args.project.as_deref(),
        args.fetch_url.as_deref(),
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
    let reply = rt.block_on(n.send(&args.url, &key))?;
    println!("sai notify: {}", describe_reply(&n, &args.url, &reply));
    Ok(ExitCode::SUCCESS)
}
