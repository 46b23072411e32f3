//! Per-project bare git mirror and network-free checkouts from it.
//!
//! * [`Mirror::open`] opens (creating if needed) the bare repository
//!   `<home>/git-mirror/<sanitised url>-<hash8>` (see [`mirror_dir_name`]).
//! * [`Mirror::ensure_commit`] returns at once, without any network I/O, when
//!   the commit is already in the mirror. When the fetch URL is a local
//!   repository (an absolute path or `file://`), the objects the mirror
//!   lacks (at most [`LOCAL_COPY_MAX_OBJECTS`]: a new push on top of a warm
//!   mirror) are copied in process from the origin's object database, no
//!   `git-upload-pack` child needed ([`Mirror::copy_from_local`]).
//!   Otherwise it fetches
//!   `+<ref>:refs/sai/<hash>` with gix (falling back to fetching the hash
//!   itself if the ref has moved on) and checks the commit arrived. Fetches
//!   are serialised by an exclusive `flock(2)` on `<mirror>.lock`: the kernel
//!   drops it when the holder dies, so a killed builder never leaves a stale
//!   lock (the reference used a lock directory, reference 8.2).
//! * [`Mirror::checkout`] makes a fresh worktree at `dest` (normally
//!   `<home>/jobs/<VN>/src`) without any transport: `dest/.git` is a new
//!   repository whose `objects/info/alternates` points at the mirror, the
//!   files are written from the mirror's object database by gix's worktree
//!   checkout, the index is written and `HEAD` is detached at the commit, so
//!   `git status`, `git log` and `git describe` work inside a build step.
//!   `dest/.git` holds only what git needs (`HEAD`, `config`, `objects/`,
//!   `refs/`): no hook samples or description from a template, and the
//!   filesystem's capabilities come from the mirror's config (probed once
//!   when the mirror was made) instead of being probed again per task.
//!
//! Everything here is blocking; async callers use [`Mirror::prepare_source`]
//! (which runs on `spawn_blocking`) or wrap calls themselves.
//!
//! Local-path and `file://` fetch URLs whose copy is too big for the in-process
//! path (a first fetch of a large history) make gix spawn `git-upload-pack`,
//! so `git` must be installed for those (tests use them).

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use gix::ObjectId;
use sha2::{Digest, Sha256};

/// The held mirror lock; released on drop (the kernel also releases it
/// when the holder dies).
#[derive(Debug)]
pub struct MirrorLock(#[allow(dead_code)] File);

/// The most objects [`Mirror::copy_from_local`] copies in process; a bigger
/// difference (a first fetch of a long history) goes through the git
/// transport, which stores it as one pack instead of loose objects.
pub const LOCAL_COPY_MAX_OBJECTS: usize = 2000;

/// How long [`Mirror`] waits for another fetch of the same mirror.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(600);

/// A git operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// A filesystem operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The commit hash is not a full hex object id.
    #[error("invalid commit hash {0:?}: expected 40 hex characters")]
    BadHash(String),
    /// The ref cannot be used as the source of a fetch refspec.
    #[error("invalid git ref {0:?}")]
    BadRef(String),
    /// gix reported an error.
    #[error("{what} ({path}): {message}")]
    Gix {
        /// What was being done.
        what: &'static str,
        /// The repository concerned.
        path: PathBuf,
        /// gix's message, with its causes.
        message: String,
    },
    /// The fetch succeeded but did not bring the wanted commit.
    #[error(
        "commit {hash} is not in what was fetched from {url} (ref {git_ref:?}); was the ref force-pushed or the hash mistyped?"
    )]
    NotFetched {
        /// The wanted commit.
        hash: String,
        /// The ref that was fetched.
        git_ref: String,
        /// The fetch URL.
        url: String,
    },
    /// Another fetch of the same mirror held the lock too long.
    #[error("timed out after {waited:?} waiting for the mirror lock {path}")]
    LockTimeout {
        /// The lock file.
        path: PathBuf,
        /// How long we waited.
        waited: Duration,
    },
    /// The checkout destination exists and is not empty.
    #[error("checkout destination {0} exists and is not empty")]
    DestNotEmpty(PathBuf),
    /// Writing the worktree failed for some files.
    #[error("checkout into {path} failed: {message}")]
    Checkout {
        /// The destination.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The blocking task running a git operation panicked or was cancelled.
    #[error("git worker task failed: {0}")]
    Join(String),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> GitError + use<'a> {
    move |source| GitError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// An error and its causes on one line, without repeats.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

fn gix_err<'a, E: std::error::Error + 'static>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(E) -> GitError + use<'a, E> {
    move |e| GitError::Gix {
        what,
        path: path.to_path_buf(),
        message: chain(&e),
    }
}

/// What [`Mirror::ensure_commit`] had to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    /// The commit was already in the mirror: no network I/O happened.
    AlreadyPresent,
    /// The commit was fetched from the origin.
    Fetched,
}

impl std::fmt::Display for Ensured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Ensured::AlreadyPresent => "the commit was already in the mirror",
            Ensured::Fetched => "fetched from the origin",
        })
    }
}

/// Result of a checkout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckoutStats {
    /// Files written.
    pub files: usize,
    /// Bytes written.
    pub bytes: u64,
}

/// `url` without the password or token of a `scheme://user:secret@host/...`
/// URL, for names and messages: the secret becomes `***`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    let userinfo = &rest[..at];
    let user = userinfo.split(':').next().unwrap_or("");
    let shown = if userinfo.contains(':') {
        format!("{user}:***")
    } else {
        "***".to_string()
    };
    format!("{}://{shown}@{}", &url[..scheme_end], &rest[at + 1..])
}

/// The mirror directory name for `url`: the (redacted, see [`redact_url`])
/// URL with every character
/// outside `[A-Za-z0-9_-]` mapped to `_` (at most 100 of them), then `-` and
/// the first 8 hex digits of the URL's sha256, so URLs that sanitise alike
/// still get distinct mirrors.
pub fn mirror_dir_name(url: &str) -> String {
    let mut name: String = redact_url(url)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    let digest = Sha256::digest(url.as_bytes());
    name.push('-');
    name.push_str(&hex::encode(&digest[..4]));
    name
}

fn parse_hash(hash: &str) -> Result<ObjectId, GitError> {
    if hash.len() != 40 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(GitError::BadHash(hash.to_string()));
    }
    ObjectId::from_hex(hash.as_bytes()).map_err(|_| GitError::BadHash(hash.to_string()))
}

fn check_ref(git_ref: &str) -> Result<(), GitError> {
    let bad = git_ref.starts_with(['-', '+', '^'])
        || git_ref.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, ':' | '*' | '?' | '[' | '\\' | '~')
        })
        || git_ref.contains("..");
    if bad {
        return Err(GitError::BadRef(git_ref.to_string()));
    }
    Ok(())
}

/// A per-project bare mirror under `<home>/git-mirror/`.
#[derive(Debug, Clone)]
pub struct Mirror {
    path: PathBuf,
    lock_path: PathBuf,
    url: String,
}

impl Mirror {
    /// Open the mirror of `fetch_url` under `home`, creating the bare
    /// repository (under the lock) if it does not exist yet.
    pub fn open(home: &Path, fetch_url: &str) -> Result<Self, GitError> {
        let dir = home.join("git-mirror");
        std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
        let name = mirror_dir_name(fetch_url);
        let mirror = Self {
            path: dir.join(&name),
            lock_path: dir.join(format!("{name}.lock")),
            url: fetch_url.to_string(),
        };
        if !mirror.path.join("HEAD").exists() {
            let _lock = mirror.lock()?;
            if !mirror.path.join("HEAD").exists() {
                gix::init_bare(&mirror.path)
                    .map_err(gix_err("creating bare mirror", &mirror.path))?;
            }
        }
        Ok(mirror)
    }

    /// The bare repository's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The fetch URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Take the exclusive mirror lock, waiting up to the lock timeout.
    /// Released when the returned value drops (or the process dies).
    pub fn lock(&self) -> Result<MirrorLock, GitError> {
        let start = Instant::now();
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&self.lock_path)
            .map_err(io("opening lock", &self.lock_path))?;
        loop {
            // std's file locks: flock(2) on Unix, LockFileEx on Windows.
            match file.try_lock() {
                Ok(()) => return Ok(MirrorLock(file)),
                Err(std::fs::TryLockError::WouldBlock) => {
                    if start.elapsed() >= DEFAULT_LOCK_TIMEOUT {
                        return Err(GitError::LockTimeout {
                            path: self.lock_path.clone(),
                            waited: start.elapsed(),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(GitError::Io {
                        what: "locking",
                        path: self.lock_path.clone(),
                        source: e,
                    });
                }
            }
        }
    }

    fn repo(&self) -> Result<gix::Repository, GitError> {
        gix::open(&self.path).map_err(gix_err("opening mirror", &self.path))
    }

    /// The mirror opened once for several operations (each open reads the
    /// system, global and mirror config files): what a task does.
    pub fn opened(&self) -> Result<OpenMirror<'_>, GitError> {
        Ok(OpenMirror {
            mirror: self,
            repo: self.repo()?,
        })
    }

    /// Whether the mirror holds commit `hash` (no network I/O).
    pub fn has_commit(&self, hash: &str) -> Result<bool, GitError> {
        let id = parse_hash(hash)?;
        self.opened()?.has_id(&id)
    }

    /// Make sure commit `hash` (pushed as `git_ref`, which may be empty) is in
    /// the mirror, fetching it only if it is not there yet.
    pub fn ensure_commit(&self, git_ref: &str, hash: &str) -> Result<Ensured, GitError> {
        self.opened()?.ensure_commit(git_ref, hash)
    }

    /// Copy commit `id` and every object it needs that the mirror lacks from
    /// the local repository at `origin` into the mirror, in process, and
    /// point `refs/sai/<hash>` at it (as a fetch would). `Ok(false)` when
    /// this path does not apply and the caller should use the git transport:
    /// `origin` is not a repository here, lacks the commit or part of its
    /// history, or more than [`LOCAL_COPY_MAX_OBJECTS`] objects are missing.
    ///
    /// Objects are written referenced-first (blobs and subtrees before their
    /// tree, trees and parents before their commit; each loose object is
    /// renamed into place whole), so an object in the mirror always has
    /// everything it references there too, even if the builder dies midway:
    /// the walk can stop at the first object the mirror has. Submodule
    /// entries (gitlinks) are not objects of this repository and are skipped,
    /// as in a fetch.
    pub fn copy_from_local(
        &self,
        mirror: &gix::Repository,
        origin: &Path,
        id: &ObjectId,
    ) -> Result<bool, GitError> {
        let Ok(origin_repo) = gix::open(origin) else {
            return Ok(false);
        };
        if origin_repo.object_hash() != mirror.object_hash() {
            return Ok(false);
        }
        let Some(objects) = missing_objects(&origin_repo, mirror, *id) else {
            return Ok(false);
        };
        use gix::objs::Write as _;
        for (oid, kind, data) in &objects {
            let written = mirror
                .objects
                .write_buf(*kind, data)
                .map_err(|e| GitError::Gix {
                    what: "copying objects into the mirror",
                    path: self.path.clone(),
                    message: format!("{oid}: {e}"),
                })?;
            if written != *oid {
                return Err(GitError::Gix {
                    what: "copying objects into the mirror",
                    path: self.path.clone(),
                    message: format!(
                        "object {oid} of {} hashes to {written}: corrupt origin?",
                        origin.display()
                    ),
                });
            }
        }
        mirror
            .reference(
                format!("refs/sai/{id}").as_str(),
                *id,
                gix::refs::transaction::PreviousValue::Any,
                "sai: copied from a local origin",
            )
            .map_err(gix_err("updating the mirror's ref", &self.path))?;
        Ok(true)
    }

    fn fetch(&self, refspec: &str) -> Result<(), GitError> {
        let started = std::time::Instant::now();
        let r = self.fetch_untimed(refspec);
        crate::metrics::metrics().fetch(r.is_ok(), started.elapsed());
        r
    }

    fn fetch_untimed(&self, refspec: &str) -> Result<(), GitError> {
        let repo = self.repo()?;
        let err = |e: gix::Error| GitError::Gix {
            what: "fetching",
            path: self.path.clone(),
            message: format!("{refspec} from {}: {}", redact_url(&self.url), chain(&e)),
        };
        let remote = repo
            .remote_at(self.url.as_str())
            .map_err(err)?
            .with_fetch_tags(gix::remote::fetch::Tags::None)
            .with_refspecs([refspec], gix::remote::Direction::Fetch)
            .map_err(err)?;
        let connection = remote.connect(gix::remote::Direction::Fetch).map_err(err)?;
        connection
            .prepare_fetch(gix::progress::Discard, Default::default())
            .map_err(err)?
            .receive(gix::progress::Discard, &AtomicBool::new(false))
            .map_err(err)?;
        Ok(())
    }

    /// Write a fresh worktree of commit `hash` at `dest` from the mirror
    /// alone (no transport; see the module doc). `dest` must not exist or be
    /// an empty directory.
    pub fn checkout(&self, hash: &str, dest: &Path) -> Result<CheckoutStats, GitError> {
        self.opened()?.checkout(hash, dest)
    }

    /// Turn `dest`, a worktree an earlier [`checkout`](Self::checkout) (or
    /// this) of this mirror made and a task's steps may have changed at
    /// will, into exactly what a fresh checkout of `hash` would be, writing
    /// only what differs (see [`crate::worktree_sweep`]). Fails without
    /// harm to anything outside `dest` when `dest` is not such a worktree
    /// (no readable index); the caller then starts over with a fresh one.
    #[cfg(unix)]
    pub fn checkout_reusing(&self, hash: &str, dest: &Path) -> Result<CheckoutStats, GitError> {
        self.opened()?.checkout_reusing(hash, dest)
    }

    /// Record the current stat data of every file of the checkout at
    /// `dest` in its index. For the builder's own changes right after a
    /// checkout (the chown to the step user changes every file's owner and
    /// `ctime`), so that the next task reusing `dest` recognises the files
    /// as unchanged instead of writing them all again.
    pub fn restat_index(&self, dest: &Path) -> Result<(), GitError> {
        let repo = self.repo()?;
        let path = dest.join(".git").join("index");
        let mut index = gix::index::File::at(&path, repo.object_hash(), false, Default::default())
            .map_err(gix_err("reading index", dest))?;
        for i in 0..index.entries().len() {
            use gix::index::entry::Mode;
            if !matches!(
                index.entries()[i].mode,
                Mode::FILE | Mode::FILE_EXECUTABLE | Mode::SYMLINK
            ) {
                continue;
            }
            let Ok(rel) = gix::path::from_bstr(index.entries()[i].path(&index)) else {
                continue;
            };
            let file = dest.join(rel);
            let Ok(meta) = gix::index::fs::Metadata::from_path_no_follow(&file) else {
                continue;
            };
            if let Ok(stat) = gix::index::entry::Stat::from_fs(&meta) {
                index.entries_mut()[i].stat = stat;
            }
        }
        index
            .write(Default::default())
            .map_err(gix_err("writing index", dest))
    }

    /// Make `git_dir` a minimal non-bare repository borrowing the mirror's
    /// objects (`objects/info/alternates`), `HEAD` detached at `hash`, with
    /// the mirror's config as a worktree's (`bare = false`).
    fn write_git_dir(&self, git_dir: &Path, hash: &str) -> Result<(), GitError> {
        let objects = std::fs::canonicalize(self.path.join("objects"))
            .map_err(io("resolving", &self.path))?;
        let info = git_dir.join("objects").join("info");
        std::fs::create_dir_all(&info).map_err(io("creating", &info))?;
        let refs = git_dir.join("refs");
        std::fs::create_dir_all(refs.join("heads")).map_err(io("creating", &refs))?;
        std::fs::create_dir_all(refs.join("tags")).map_err(io("creating", &refs))?;
        let mirror_config = self.path.join("config");
        let config = std::fs::read_to_string(&mirror_config)
            .map_err(io("reading", &mirror_config))?
            .replace("bare = true", "bare = false");
        for (name, text) in [
            ("config", config),
            ("HEAD", format!("{hash}\n")),
            (
                "objects/info/alternates",
                format!("{}\n", objects.display()),
            ),
        ] {
            let path = git_dir.join(name);
            // A reused checkout's files are rewritten only when they differ
            // (a step may have replaced them; sweep_git_dir removed links).
            if std::fs::read(&path).is_ok_and(|old| old == text.as_bytes()) {
                continue;
            }
            write_in_place(&path, text.as_bytes()).map_err(io("writing", &path))?;
        }
        Ok(())
    }

    /// Async convenience for the daemon: [`ensure_commit`](Self::ensure_commit)
    /// then [`checkout`](Self::checkout), on tokio's blocking pool.
    pub async fn prepare_source(
        &self,
        git_ref: &str,
        hash: &str,
        dest: &Path,
    ) -> Result<(Ensured, CheckoutStats), GitError> {
        let mirror = self.clone();
        let (git_ref, hash, dest) = (git_ref.to_string(), hash.to_string(), dest.to_path_buf());
        tokio::task::spawn_blocking(move || {
            let ensured = mirror.ensure_commit(&git_ref, &hash)?;
            let stats = mirror.checkout(&hash, &dest)?;
            Ok((ensured, stats))
        })
        .await
        .map_err(|e| GitError::Join(e.to_string()))?
    }
}

/// A [`Mirror`] with its repository open; see [`Mirror::opened`].
pub struct OpenMirror<'a> {
    mirror: &'a Mirror,
    repo: gix::Repository,
}

impl OpenMirror<'_> {
    fn has_id(&self, id: &ObjectId) -> Result<bool, GitError> {
        let found = self
            .repo
            .try_find_header(*id)
            .map_err(gix_err("looking up commit", &self.mirror.path))?;
        Ok(matches!(found, Some(h) if h.kind() == gix::objs::Kind::Commit))
    }

    /// [`Mirror::ensure_commit`].
    pub fn ensure_commit(&self, git_ref: &str, hash: &str) -> Result<Ensured, GitError> {
        let id = parse_hash(hash)?;
        check_ref(git_ref)?;
        if self.has_id(&id)? {
            return Ok(Ensured::AlreadyPresent);
        }
        let _lock = self.mirror.lock()?;
        // Another task may have fetched it while we waited for the lock.
        if self.has_id(&id)? {
            return Ok(Ensured::AlreadyPresent);
        }
        if let Some(origin) = local_origin(&self.mirror.url) {
            let started = Instant::now();
            if self.mirror.copy_from_local(&self.repo, &origin, &id)? {
                crate::metrics::metrics().fetch(true, started.elapsed());
                return Ok(Ensured::Fetched);
            }
        }
        let dest = format!("refs/sai/{hash}");
        let ref_result = if git_ref.is_empty() {
            None
        } else {
            let r = self.mirror.fetch(&format!("+{git_ref}:{dest}"));
            if self.has_id(&id)? {
                return Ok(Ensured::Fetched);
            }
            Some(r)
        };
        // The ref moved on (or none was given): ask for the commit itself.
        // Servers may refuse this; then the ref fetch's outcome is the useful one.
        let hash_result = self.mirror.fetch(&format!("+{hash}:{dest}"));
        if self.has_id(&id)? {
            return Ok(Ensured::Fetched);
        }
        match ref_result.unwrap_or(hash_result) {
            Err(e) => Err(e),
            Ok(()) => Err(GitError::NotFetched {
                hash: hash.to_string(),
                git_ref: git_ref.to_string(),
                url: redact_url(&self.mirror.url),
            }),
        }
    }

    /// [`Mirror::checkout`].
    pub fn checkout(&self, hash: &str, dest: &Path) -> Result<CheckoutStats, GitError> {
        let id = parse_hash(hash)?;
        if dest.exists() {
            let mut entries = std::fs::read_dir(dest).map_err(io("reading", dest))?;
            if entries.next().is_some() {
                return Err(GitError::DestNotEmpty(dest.to_path_buf()));
            }
        }
        let git_dir = dest.join(".git");
        self.mirror.write_git_dir(&git_dir, hash)?;
        // The mirror's object database and config serve the checkout; the
        // index is written into the new repository.
        let mut index = tree_index(&self.repo, id, dest)?;
        index.set_path(git_dir.join("index"));
        let outcome = write_entries(&self.repo, &mut index, dest, true)?;
        index
            .write(Default::default())
            .map_err(gix_err("writing index", dest))?;
        Ok(CheckoutStats {
            files: outcome.files_updated,
            bytes: outcome.bytes_written,
        })
    }

    /// [`Mirror::checkout_reusing`].
    #[cfg(unix)]
    pub fn checkout_reusing(&self, hash: &str, dest: &Path) -> Result<CheckoutStats, GitError> {
        let id = parse_hash(hash)?;
        let git_dir = dest.join(".git");
        let index_path = git_dir.join("index");
        let written = std::fs::symlink_metadata(&index_path)
            .and_then(|m| m.modified())
            .map_err(io("reading", &index_path))?;
        let old = gix::index::File::at(
            &index_path,
            self.repo.object_hash(),
            false,
            Default::default(),
        )
        .map_err(gix_err("reading the previous index", dest))?;
        crate::worktree_sweep::sweep_git_dir(&git_dir).map_err(io("cleaning", &git_dir))?;
        self.mirror.write_git_dir(&git_dir, hash)?;
        let mut index = tree_index(&self.repo, id, dest)?;
        index.set_path(&index_path);
        let swept =
            crate::worktree_sweep::sweep(dest, &old, written, &mut index, self.repo.object_hash())
                .map_err(io("cleaning", dest))?;
        // Check out what the sweep did not keep, then give those entries
        // their new stat data in the full index.
        let mut todo = index.clone();
        todo.remove_entries(|i, _, _| swept.keep[i]);
        // (gix's checkout cannot take an index without entries.)
        let (files, bytes) = if todo.entries().is_empty() {
            (0, 0)
        } else {
            let outcome = write_entries(&self.repo, &mut todo, dest, false)?;
            (outcome.files_updated, outcome.bytes_written)
        };
        for entry in todo.entries() {
            if let Ok(i) = index.entry_index_by_path(entry.path(&todo)) {
                index.entries_mut()[i].stat = entry.stat;
            }
        }
        index
            .write(Default::default())
            .map_err(gix_err("writing index", dest))?;
        Ok(CheckoutStats { files, bytes })
    }
}

/// Write `path`'s whole content into the file itself (truncating it, or
/// creating it): rewriting a reused checkout's `HEAD` then takes no new
/// inode. Never through a link: `sweep_git_dir` removed symlinks and
/// hard-linked files a step may have left, and a symlink made since fails.
fn write_in_place(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits());
    }
    options.open(path)?.write_all(bytes)
}

/// The index of commit `id`'s tree, as a checkout of it writes it.
fn tree_index(
    repo: &gix::Repository,
    id: ObjectId,
    dest: &Path,
) -> Result<gix::index::File, GitError> {
    let what = "checking out";
    let commit = repo.find_commit(id).map_err(gix_err(what, dest))?;
    let tree = commit.tree_id().map_err(gix_err(what, dest))?;
    repo.index_from_tree(&tree).map_err(gix_err(what, dest))
}

/// Write the files of `index`'s entries under `dest` with gix's worktree
/// checkout (filters and the filesystem's capabilities from the mirror's
/// config), setting their stat data in `index`. With `empty`, `dest` holds
/// nothing yet; otherwise existing paths are replaced.
fn write_entries(
    repo: &gix::Repository,
    index: &mut gix::index::State,
    dest: &Path,
    empty: bool,
) -> Result<gix::worktree::state::checkout::Outcome, GitError> {
    let what = "checking out";
    let mut opts = repo
        .checkout_options(gix::worktree::stack::state::attributes::Source::IdMapping)
        .map_err(gix_err(what, dest))?;
    opts.destination_is_initially_empty = empty;
    opts.overwrite_existing = !empty;
    let odb = repo
        .objects
        .clone()
        .into_arc()
        .map_err(gix_err(what, dest))?;
    let outcome = gix::worktree::state::checkout(
        index,
        dest,
        odb,
        &gix::progress::Discard,
        &gix::progress::Discard,
        &AtomicBool::new(false),
        opts,
    )
    .map_err(gix_err(what, dest))?;
    if !outcome.errors.is_empty() || !outcome.collisions.is_empty() {
        let mut message = String::new();
        for e in &outcome.errors {
            message.push_str(&format!("{}: {}; ", e.path, e.error));
        }
        for c in &outcome.collisions {
            message.push_str(&format!("{}: collision; ", c.path));
        }
        return Err(GitError::Checkout {
            path: dest.to_path_buf(),
            message,
        });
    }
    Ok(outcome)
}

/// The repository a fetch URL names on this machine: an absolute path or a
/// `file://` URL. Relative paths (relative to what?) and remote URLs: `None`.
fn local_origin(url: &str) -> Option<PathBuf> {
    let path = match url.strip_prefix("file://") {
        Some(rest) => rest,
        None if url.contains("://") => return None,
        None => url,
    };
    let path = Path::new(path);
    (path.is_absolute() && path.is_dir()).then(|| path.to_path_buf())
}

/// An object copied by [`Mirror::copy_from_local`]: id, kind, content.
type CopiedObject = (ObjectId, gix::objs::Kind, Vec<u8>);

/// The objects reachable from `root` in `origin` that `mirror` lacks, each
/// after every object it references; `None` if `origin` lacks one of them,
/// one cannot be parsed, or there are more than [`LOCAL_COPY_MAX_OBJECTS`].
fn missing_objects(
    origin: &gix::Repository,
    mirror: &gix::Repository,
    root: ObjectId,
) -> Option<Vec<CopiedObject>> {
    use gix::objs::Kind;
    let hash_kind = origin.object_hash();
    // The lookups below mostly miss (that is what they are for); by default
    // every miss makes gix re-scan the mirror's pack directory and
    // alternates (~20 system calls each). The mirror lock is held, so
    // nothing adds objects meanwhile.
    let mut in_mirror = mirror.objects.clone();
    in_mirror.refresh_never();
    use gix::objs::Exists as _;
    let mut ordered: Vec<CopiedObject> = Vec::new();
    let mut seen: HashSet<ObjectId> = HashSet::new();
    // (id, the object once its references have been queued).
    type Loaded = Option<(Kind, Vec<u8>)>;
    let mut stack: Vec<(ObjectId, Loaded)> = vec![(root, None)];
    while let Some((oid, loaded)) = stack.pop() {
        if let Some((kind, data)) = loaded {
            ordered.push((oid, kind, data));
            continue;
        }
        if !seen.insert(oid) || in_mirror.exists(&oid) {
            continue;
        }
        if seen.len() > LOCAL_COPY_MAX_OBJECTS {
            return None;
        }
        let mut object = origin.try_find_object(oid).ok()??;
        let (kind, data) = (object.kind, std::mem::take(&mut object.data));
        let mut refs: Vec<ObjectId> = Vec::new();
        match kind {
            Kind::Commit => {
                let mut commit = gix::objs::CommitRefIter::from_bytes(&data, hash_kind);
                refs.push(commit.tree_id().ok()?);
                refs.extend(commit.parent_ids());
            }
            Kind::Tree => {
                let tree = gix::objs::TreeRef::from_bytes(&data, hash_kind).ok()?;
                refs.extend(
                    tree.entries
                        .iter()
                        .filter(|e| !e.mode.is_commit())
                        .map(|e| e.oid.to_owned()),
                );
            }
            Kind::Tag => {
                refs.push(
                    gix::objs::TagRefIter::from_bytes(&data, hash_kind)
                        .target_id()
                        .ok()?,
                );
            }
            Kind::Blob => {}
        }
        stack.push((oid, Some((kind, data))));
        stack.extend(refs.into_iter().map(|r| (r, None)));
    }
    Some(ordered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_names_are_sanitised_and_distinct() {
        let a = mirror_dir_name("https://example.com/a/b.git");
        assert!(a.starts_with("https___example_com_a_b_git-"), "{a}");
        assert_eq!(a.len(), "https___example_com_a_b_git-".len() + 8);
        let b = mirror_dir_name("https://example.com/a_b.git");
        assert_ne!(a, b);
        assert!(
            mirror_dir_name(&"x/".repeat(200))
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
        );
        assert!(mirror_dir_name(&"x".repeat(500)).len() <= 109);
    }

    #[test]
    fn secrets_stay_out_of_names_and_messages() {
        for (url, shown) in [
            (
                "https://bot:s3cret@git.example.com/a.git",
                "https://bot:***@git.example.com/a.git",
            ),
            (
                "https://tok3n@git.example.com/a.git",
                "https://***@git.example.com/a.git",
            ),
            ("ssh://git@host/x@y", "ssh://***@host/x@y"),
            ("/srv/git/a.git", "/srv/git/a.git"),
            ("git@host:a.git", "git@host:a.git"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
        let name = mirror_dir_name("https://bot:s3cret@git.example.com/a.git");
        assert!(!name.contains("s3cret"), "{name}");
        assert_ne!(
            name,
            mirror_dir_name("https://bot:other@git.example.com/a.git")
        );
    }

    #[test]
    fn hashes_and_refs_are_validated() {
        assert!(parse_hash("0123456789abcdef0123456789abcdef01234567").is_ok());
        for bad in ["0123", "g123456789abcdef0123456789abcdef01234567"] {
            assert!(parse_hash(bad).is_err(), "hash {bad:?} accepted");
        }
        for good in ["refs/heads/main", ""] {
            assert!(check_ref(good).is_ok(), "ref {good:?} refused");
        }
        for bad in [
            "refs/heads/a:refs/heads/b",
            "--upload-pack=x",
            "+refs/heads/x",
            "refs/heads/*",
        ] {
            assert!(check_ref(bad).is_err(), "ref {bad:?} accepted");
        }
    }
}
