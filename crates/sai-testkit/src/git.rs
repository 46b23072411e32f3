//! Real git repositories for tests, made with the `git` CLI in a clean
//! environment (no system or global config, branch `main`, no signing, a
//! fixed test identity), so results do not depend on the machine.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use sai_testkit::git::GitRepo;
//! let tmp = tempfile::tempdir()?;
//! let repo = GitRepo::init(tmp.path().join("origin"));
//! repo.write("README", "hello\n").write_executable("build.sh", "#!/bin/sh\necho built\n");
//! let hash = repo.commit("first");
//! let bare = repo.bare_clone(tmp.path().join("origin.git"));
//! assert_eq!(bare.head(), hash);
//! # Ok(())
//! # }
//! ```

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Result, bail};

/// `git -C dir <args>` set up for the clean test environment (no user or
/// system config, fixed identity and default branch), not yet run.
pub fn git_command(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("git");
    cmd.arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null");
    cmd
}

/// Run `git -C dir <args>` in the clean test environment; its trimmed stdout.
pub fn try_git(dir: &Path, args: &[&str]) -> Result<String> {
    let out = git_command(dir, args).output()?;
    if !out.status.success() {
        bail!(
            "git {args:?} in {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// [`try_git`], panicking (with git's stderr) on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    try_git(dir, args).unwrap_or_else(|e| panic!("{e:#}"))
}

/// A git repository (work tree or bare) at a path. Methods panic on failure:
/// this is test fixture code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitRepo {
    path: PathBuf,
}

impl GitRepo {
    /// Create `dir` (and its parents) and `git init` a repository there,
    /// on branch `main`.
    pub fn init(dir: impl Into<PathBuf>) -> GitRepo {
        let path = dir.into();
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        git(&path, &["init", "-q"]);
        GitRepo { path }
    }

    /// An existing repository.
    pub fn open(dir: impl Into<PathBuf>) -> GitRepo {
        GitRepo { path: dir.into() }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its path as a fetch URL.
    pub fn url(&self) -> String {
        self.path.display().to_string()
    }

    /// Write a file of the work tree (parent folders created); not staged.
    pub fn write(&self, rel: impl AsRef<Path>, content: impl AsRef<[u8]>) -> &Self {
        let p = self.path.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("creating {}: {e}", parent.display()));
        }
        std::fs::write(&p, content).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
        self
    }

    /// [`GitRepo::write`] with mode 0755.
    pub fn write_executable(&self, rel: impl AsRef<Path>, content: impl AsRef<[u8]>) -> &Self {
        let rel = rel.as_ref();
        self.write(rel, content);
        let p = self.path.join(rel);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
        self
    }

    /// Run git in the repository; its trimmed stdout.
    pub fn git(&self, args: &[&str]) -> String {
        git(&self.path, args)
    }

    /// Stage everything (`git add -A`) and commit it; returns the new hash.
    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
        self.head()
    }

    /// Stage a submodule entry (a gitlink to commit `hash`) at `path`,
    /// without a submodule checkout or `.gitmodules`; commit it with
    /// `git commit` (not [`GitRepo::commit`], whose `add -A` drops it).
    pub fn stage_gitlink(&self, path: &str, hash: &str) -> &Self {
        self.git(&[
            "update-index",
            "--add",
            "--cacheinfo",
            &format!("160000,{hash},{path}"),
        ]);
        self
    }

    /// The hash of `HEAD`.
    pub fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"])
    }

    /// `git clone --bare` into `dest` (e.g. an origin to push to or fetch from).
    pub fn bare_clone(&self, dest: impl Into<PathBuf>) -> GitRepo {
        let dest = dest.into();
        let parent = dest.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("creating {}: {e}", parent.display()));
        let src = self.url();
        let d = dest.display().to_string();
        git(parent, &["clone", "-q", "--bare", &src, &d]);
        GitRepo { path: dest }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_write_commit_and_bare_clone() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = GitRepo::init(tmp.path().join("a/origin"));
        repo.write("sub/dir/f.txt", "x\n")
            .write_executable("build.sh", "#!/bin/sh\n");
        let first = repo.commit("first");
        assert_eq!(first.len(), 40);
        assert_eq!(repo.git(&["status", "--porcelain"]), "");
        let mode = std::fs::metadata(repo.path().join("build.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_ne!(mode & 0o111, 0);
        repo.write("README", "more\n");
        let second = repo.commit("second");
        assert_ne!(first, second);
        assert_eq!(repo.git(&["rev-parse", "--abbrev-ref", "HEAD"]), "main");
        let bare = repo.bare_clone(tmp.path().join("b/origin.git"));
        assert_eq!(bare.head(), second);
        assert_eq!(bare.git(&["rev-parse", "--is-bare-repository"]), "true");
        assert!(try_git(tmp.path(), &["rev-parse", "nope"]).is_err());
    }
}
