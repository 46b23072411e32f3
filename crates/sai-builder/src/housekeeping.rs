//! Job dir housekeeping and disk-space checks.
//!
//! [`remove_old_job_dirs`] deletes `<home>/jobs/<VN>` directories whose
//! modification time is older than a configured age, except those of tasks
//! still active. It only touches entries whose name looks like a job dir
//! ([`crate::jobdir::is_job_dir_name`]) and that are real directories (never
//! symlinks); `std::fs::remove_dir_all` does not follow symlinks inside.
//! The reference meant to do this hourly for dirs older than 24 h but never
//! matched anything (reference 15 item 19).
//!
//! [`free_disk_bytes`] / [`has_room`] check the space available to
//! unprivileged users on the filesystem of a path before accepting work.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::jobdir::is_job_dir_name;

/// Default age after which a finished job dir is removed (reference: 24 h).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// What [`remove_old_job_dirs`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cleanup {
    /// Names of the removed job dirs.
    pub removed: Vec<String>,
    /// Job dirs that could not be removed, with the reason.
    pub failed: Vec<(String, String)>,
}

/// Remove job dirs under `jobs_dir` last modified more than `max_age` before
/// `now`, skipping the names in `active`. A missing `jobs_dir` is not an error.
pub fn remove_old_job_dirs(
    jobs_dir: &Path,
    max_age: Duration,
    active: &HashSet<String>,
    now: SystemTime,
) -> std::io::Result<Cleanup> {
    let mut out = Cleanup::default();
    let entries = match std::fs::read_dir(jobs_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if !is_job_dir_name(&name) || active.contains(&name) {
            continue;
        }
        // file_type() does not follow symlinks.
        let Ok(ft) = entry.file_type() else { continue };
        if !ft.is_dir() {
            continue;
        }
        let path = entry.path();
        let Ok(modified) = std::fs::symlink_metadata(&path).and_then(|m| m.modified()) else {
            continue;
        };
        let age = now.duration_since(modified).unwrap_or(Duration::ZERO);
        if age <= max_age {
            continue;
        }
        match std::fs::remove_dir_all(&path) {
            Ok(()) => out.removed.push(name),
            Err(e) => out.failed.push((name, e.to_string())),
        }
    }
    out.removed.sort();
    Ok(out)
}

pub use crate::platform::free_disk_bytes;

/// Whether the filesystem holding `path` has at least `min_free` bytes free.
pub fn has_room(path: &Path, min_free: u64) -> std::io::Result<bool> {
    Ok(free_disk_bytes(path)? >= min_free)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    fn age(path: &Path, ago: Duration) {
        let t = SystemTime::now() - ago;
        File::open(path).unwrap().set_modified(t).unwrap();
    }

    #[test]
    fn removes_only_old_inactive_job_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let jobs = tmp.path().join("jobs");
        let day = Duration::from_secs(86_400);
        for name in [
            "OLD1OLD1",
            "OLD2OLD2",
            "NEW1NEW1",
            "ACTIVE01",
            ".sai-uploads",
            "notajobdirname",
        ] {
            std::fs::create_dir_all(jobs.join(name).join("src")).unwrap();
            std::fs::write(jobs.join(name).join("src/f"), b"x").unwrap();
        }
        // An old file with a job-dir-like name, and an old symlink to a dir outside.
        std::fs::write(jobs.join("FILE0000"), b"x").unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"k").unwrap();
        std::os::unix::fs::symlink(&outside, jobs.join("LINK0000")).unwrap();
        // A symlink inside an old job dir pointing outside must not be followed.
        std::os::unix::fs::symlink(&outside, jobs.join("OLD2OLD2/src/out")).unwrap();
        for name in [
            "OLD1OLD1",
            "OLD2OLD2",
            "ACTIVE01",
            ".sai-uploads",
            "notajobdirname",
            "FILE0000",
        ] {
            age(&jobs.join(name), 2 * day);
        }
        age(&jobs.join("NEW1NEW1"), Duration::from_secs(60));

        let active: HashSet<String> = ["ACTIVE01".to_string()].into();
        let c = remove_old_job_dirs(&jobs, day, &active, SystemTime::now()).unwrap();
        assert_eq!(c.removed, ["OLD1OLD1", "OLD2OLD2"]);
        assert!(c.failed.is_empty());
        for kept in [
            "NEW1NEW1",
            "ACTIVE01",
            ".sai-uploads",
            "notajobdirname",
            "FILE0000",
            "LINK0000",
        ] {
            assert!(jobs.join(kept).symlink_metadata().is_ok(), "{kept} kept");
        }
        assert!(outside.join("keep").exists());
    }

    #[test]
    fn missing_jobs_dir_is_fine() {
        let tmp = tempfile::tempdir().unwrap();
        let c = remove_old_job_dirs(
            &tmp.path().join("nope"),
            Duration::ZERO,
            &HashSet::new(),
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(c, Cleanup::default());
    }

    #[test]
    fn disk_space() {
        let tmp = tempfile::tempdir().unwrap();
        let free = free_disk_bytes(tmp.path()).unwrap();
        assert!(free > 0);
        assert!(has_room(tmp.path(), 0).unwrap());
        assert!(!has_room(tmp.path(), u64::MAX).unwrap());
        assert!(free_disk_bytes(&tmp.path().join("missing")).is_err());
    }
}
