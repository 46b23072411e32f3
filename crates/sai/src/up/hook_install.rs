//! Hooking a repository up to the local server: the post-receive hook and
//! the `sai.*` git config it reads, or the commands to do it by hand.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::UpArgs;
use crate::notify::{Repo, git};

/// The post-receive hook installed into the repository.
pub const HOOK_POST_RECEIVE: &str = include_str!("../../../../hooks/post-receive");
/// The notifier script the hook calls.
pub const HOOK_SAI_NOTIFY: &str = include_str!("../../../../hooks/sai-notify");

/// Install the hook (unless told not to, or a foreign hook is there) and
/// write the git config; what was done, for the summary.
pub fn setup_hook(
    args: &UpArgs,
    repo: &Repo,
    url: &str,
    secret: &Path,
    project: &str,
    data: &Path,
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
    let config = git_config(repo, url, secret, project, data);
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
    write_git_config(repo, url, secret, project, data)?;
    Ok(format!(
        "hook installed: {} (+ sai-notify), git config sai.url={url}",
        hook.display()
    ))
}

/// The `sai.*` git config the hook and `sai notify` read.
fn git_config(
    repo: &Repo,
    url: &str,
    secret: &Path,
    project: &str,
    data: &Path,
) -> [(&'static str, String); 5] {
    [
        ("sai.url", url.to_string()),
        ("sai.secretFile", secret.display().to_string()),
        ("sai.project", project.to_string()),
        ("sai.fetchUrl", repo.root.display().to_string()),
        (
            "sai.tokenFile",
            data.join("user.token").display().to_string(),
        ),
    ]
}

/// Write the `sai.*` git config into `repo`, so that its hook and
/// `sai notify` there reach this server.
pub fn write_git_config(
    repo: &Repo,
    url: &str,
    secret: &Path,
    project: &str,
    data: &Path,
) -> Result<()> {
    for (k, v) in git_config(repo, url, secret, project, data) {
        git(&repo.root, &["config", k, &v])?;
    }
    Ok(())
}

/// A data dir inside the work tree goes into `.git/info/exclude`, so that
/// `git status` and `git add .` leave it alone.
pub fn exclude_data_dir(repo: &Repo, data: &Path) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_for_printed_commands() {
        assert_eq!(shell_quote("/a/b-c_d.e"), "/a/b-c_d.e");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }
}
