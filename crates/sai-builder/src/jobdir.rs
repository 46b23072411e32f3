//! On-disk layout under the builder home.
//!
//! ```text
//! <home>/git-mirror/<sanitised url>-<hash8>     bare mirror per project (see git_mirror)
//! <home>/git-mirror/<sanitised url>-<hash8>.lock  flock(2) file serialising fetches
//! <home>/jobs/<VN>/                               one dir per task (VN: see [`vn`])
//! <home>/jobs/<VN>/src/                           checkout; build steps run here
//! <home>/run/<VN>/logproxy.{sai,tty0,tty1}        log proxy sockets of the task
//! ```
//!
//! The job dir of an instance's last task is kept (housekeeping leaves it
//! alone, see [`LastJobDirs`]) and becomes the job dir of the instance's
//! next task of the same fetch URL: renamed to the new VN and updated in
//! place to exactly what a fresh checkout would be
//! ([`crate::git_mirror::Mirror::checkout_reusing`]), so a task creates and
//! deletes only the files that changed instead of a whole tree.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A task id that cannot name a job directory.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid task id {0:?}: expected at least 8 ASCII letters or digits")]
pub struct InvalidTaskId(pub String);

/// The "virtual name" of a task: the first 4 plus the last 4 characters of
/// its id (reference 8.1), e.g. `ABCD…WXYZ` -> `ABCDWXYZ`.
///
/// The id must be at least 8 ASCII alphanumerics so the result is always a
/// safe single path component (task ids are 64 hex characters).
pub fn vn(task_id: &str) -> Result<String, InvalidTaskId> {
    if task_id.len() < 8 || !task_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(InvalidTaskId(task_id.to_string()));
    }
    Ok(format!(
        "{}{}",
        &task_id[..4],
        &task_id[task_id.len() - 4..]
    ))
}

/// Whether `name` looks like a job directory made by [`Layout::job_dir`]:
/// exactly 8 ASCII letters or digits. Housekeeping only ever removes those.
pub fn is_job_dir_name(name: &str) -> bool {
    name.len() == 8 && name.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Paths under one builder home directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    home: PathBuf,
}

impl Layout {
    /// Layout rooted at `home` (nothing is created).
    pub fn new(home: impl Into<PathBuf>) -> Self {
        Self { home: home.into() }
    }

    /// The builder home.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// `<home>/git-mirror`: parent of all project mirrors.
    pub fn mirrors_dir(&self) -> PathBuf {
        self.home.join("git-mirror")
    }

    /// `<home>/jobs`: parent of all job dirs.
    pub fn jobs_dir(&self) -> PathBuf {
        self.home.join("jobs")
    }

    /// `<home>/jobs/<vn>`.
    pub fn job_dir(&self, vn: &str) -> PathBuf {
        self.jobs_dir().join(vn)
    }

    /// `<home>/jobs/<vn>/src`: the checkout, cwd of every step.
    pub fn src_dir(&self, vn: &str) -> PathBuf {
        self.job_dir(vn).join("src")
    }

    /// `<home>/run/<vn>`: the task's log proxy sockets.
    pub fn run_dir(&self, vn: &str) -> PathBuf {
        self.home.join("run").join(vn)
    }
}

/// Identity and change times of a file, to tell whether anything but the
/// builder wrote it since: `ctime` changes with every write, rename into
/// place, chmod or chown and cannot be set back by a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    /// The stamp of `path` now (not following a symlink).
    #[cfg(unix)]
    pub fn of(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::symlink_metadata(path)?;
        Ok(Self {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }

    /// Not tracked off Unix (job dirs are not reused there).
    #[cfg(not(unix))]
    pub fn of(_path: &Path) -> std::io::Result<Self> {
        Err(std::io::Error::other("file stamps are Unix-only"))
    }
}

/// A job dir kept for the instance's next task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastJobDir {
    /// The fetch URL it is a checkout of.
    pub fetch_url: String,
    /// Its VN.
    pub vn: String,
    /// Its `src/.git/index` as the builder left it. The index tells the
    /// reuse which files are unchanged, so an index a step rewrote (to make
    /// a file it altered look unchanged, and so slip it into a later build)
    /// must not be trusted: then the dir is not reused.
    pub index: FileStamp,
}

/// The job dir each instance of a platform used last, by instance index.
/// The next task of the instance with the same fetch URL takes it over;
/// until then housekeeping keeps it ([`Self::vns`]).
#[derive(Debug, Clone, Default)]
pub struct LastJobDirs(Arc<Mutex<HashMap<u32, LastJobDir>>>);

impl LastJobDirs {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<u32, LastJobDir>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take instance `idx`'s last job dir if it was of `fetch_url`.
    /// (A dir of another URL is forgotten, so housekeeping removes it.)
    pub fn take(&self, idx: u32, fetch_url: &str) -> Option<LastJobDir> {
        self.map()
            .remove(&idx)
            .filter(|last| last.fetch_url == fetch_url)
    }

    /// Record that instance `idx` just used `dir`.
    pub fn set(&self, idx: u32, dir: LastJobDir) {
        self.map().insert(idx, dir);
    }

    /// The VNs kept for reuse.
    pub fn vns(&self) -> Vec<String> {
        self.map().values().map(|d| d.vn.clone()).collect()
    }
}

/// Make the job dir `prev` (an earlier task's) the job dir `job_dir` of a
/// new task: rename it, remove everything in it but `src/` (whatever the
/// steps left beside the checkout) and mark it modified now, so
/// housekeeping counts its age from this task. The checkout in `src/` is
/// the caller's to update.
pub fn reclaim_job_dir(prev: &Path, job_dir: &Path) -> std::io::Result<()> {
    std::fs::rename(prev, job_dir)?;
    for entry in std::fs::read_dir(job_dir)? {
        let entry = entry?;
        let ft = entry.file_type()?;
        if entry.file_name() == "src" && ft.is_dir() {
            continue;
        }
        if ft.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    std::fs::File::open(job_dir)?.set_modified(std::time::SystemTime::now())
}

/// Change the owner of `root` and everything below it to `uid`/`gid`
/// (used when steps run as an unprivileged user and the builder is root).
/// Symlinks are changed themselves, never followed.
pub fn chown_tree(root: &Path, user: &crate::platform::RunAs) -> std::io::Result<()> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        crate::platform::chown_to(&path, user)?;
        if std::fs::symlink_metadata(&path)?.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vn_is_first_and_last_four() {
        let id = "0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABWXYZ";
        assert_eq!(vn(id).unwrap(), "0123WXYZ");
        assert_eq!(vn("abcdefgh").unwrap(), "abcdefgh");
    }

    #[test]
    fn vn_rejects_short_or_unsafe_ids() {
        for bad in ["abc", "../../etc/passwd", "abcd/efgh", ""] {
            assert!(vn(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn job_dir_names() {
        assert!(is_job_dir_name("0123WXYZ"));
        assert!(!is_job_dir_name(".sai-uploads"));
        assert!(!is_job_dir_name("0123WXY"));
        assert!(!is_job_dir_name("0123WXY."));
    }

    #[test]
    fn layout_paths() {
        let l = Layout::new("/h");
        assert_eq!(l.src_dir("ABCDWXYZ"), Path::new("/h/jobs/ABCDWXYZ/src"));
        assert_eq!(l.run_dir("ABCDWXYZ"), Path::new("/h/run/ABCDWXYZ"));
        assert_eq!(l.mirrors_dir(), Path::new("/h/git-mirror"));
    }
}
