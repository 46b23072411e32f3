//! Making a previous task's checkout ready to become a fresh one.
//!
//! A new checkout creates every directory and file of the tree (plus
//! `.git`), and the job dir it replaces is deleted later: on ext4 those
//! inode allocations and frees are most of the builder's CPU per small task.
//! Reusing the previous job dir of the same instance instead, only the files
//! that differ are written again. The result must be indistinguishable from
//! a fresh checkout, whatever the previous steps did to the directory, so
//! [`sweep`] removes everything that is not provably what a fresh checkout
//! would write:
//!
//! * anything whose path is not in the new index (untracked files, build
//!   outputs, files of the previous commit, emptied directories);
//! * a tracked path whose type or stat data (`ino`, `size`, `mtime` and
//!   `ctime` to the nanosecond, owner) differs from what the previous
//!   checkout recorded in its index, or whose blob or mode changed between
//!   the commits; `ctime` cannot be set by a step, so a file rewritten and
//!   given its old `mtime` back is still caught;
//! * an entry written in the same instant as the previous index was
//!   ("racy"), unless its content hashes to the new blob;
//! * whatever is at a submodule (gitlink) entry, and in `.git` anything
//!   but the few files [`crate::git_mirror`] writes there.
//!
//! What remains is identical to a fresh checkout; the caller checks out the
//! removed entries again and takes the stat data of the kept ones from the
//! old index. Nothing here follows a symlink: entries are examined with
//! `lstat` and removed with `unlink`/`remove_dir_all` (which never follows
//! links either), so a symlink left by a step cannot make the builder touch
//! anything outside the job dir.

use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::SystemTime;

use gix::bstr::{BStr, BString, ByteSlice};
use gix::index::entry::{Mode, Stat};

/// Entries of `.git` that a checkout writes (see `Mirror::write_git_dir`);
/// `true` for directories.
pub const GIT_DIR_ENTRIES: &[(&str, bool)] = &[
    ("HEAD", false),
    ("config", false),
    ("index", false),
    ("objects", true),
    ("objects/info", true),
    ("objects/info/alternates", false),
    ("refs", true),
    ("refs/heads", true),
    ("refs/tags", true),
];

/// Remove what a step may have added under `git_dir`: everything but
/// [`GIT_DIR_ENTRIES`], and those too when they are not of their type
/// (a symlink where a file belongs, a file where a directory does).
pub fn sweep_git_dir(git_dir: &Path) -> std::io::Result<()> {
    sweep_git_level(git_dir, "")
}

fn sweep_git_level(dir: &Path, prefix: &str) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let rel = match name.to_str() {
            Some(n) if prefix.is_empty() => n.to_string(),
            Some(n) => format!("{prefix}/{n}"),
            None => String::new(),
        };
        let ft = entry.file_type()?;
        let wanted = GIT_DIR_ENTRIES.iter().find(|(p, _)| *p == rel);
        match wanted {
            Some((_, true)) if ft.is_dir() => sweep_git_level(&entry.path(), &rel)?,
            Some((_, false)) if ft.is_file() && entry.metadata()?.nlink() == 1 => {}
            _ => remove_any(&entry.path(), ft.is_dir())?,
        }
    }
    Ok(())
}

/// What [`sweep`] left in place.
#[derive(Debug, Default)]
pub struct Swept {
    /// `keep[i]`: entry `i` of the new index is on disk as a fresh checkout
    /// would write it (its stat data has been set from the old index).
    pub keep: Vec<bool>,
    /// Paths removed (files, links, whole directories).
    pub removed: usize,
}

/// Remove from the worktree at `root` (its top-level `.git` excepted)
/// everything that differs from a fresh checkout of `new`; see the module
/// doc. `old` is the index the previous checkout wrote, `old_written` when
/// it was written (its file's mtime).
pub fn sweep(
    root: &Path,
    old: &gix::index::State,
    old_written: SystemTime,
    new: &mut gix::index::State,
    objects_hash: gix::hash::Kind,
) -> std::io::Result<Swept> {
    let mut dirs: HashSet<BString> = HashSet::new();
    for e in new.entries() {
        let path = e.path(new);
        let mut end = path.len();
        while let Some(slash) = path[..end].rfind_byte(b'/') {
            if !dirs.insert(path[..slash].into()) {
                break;
            }
            end = slash;
        }
    }
    let mut walk = Walk {
        old,
        old_written,
        dirs,
        keep: vec![false; new.entries().len()],
        kept_stats: Vec::new(),
        removed: 0,
        objects_hash,
    };
    walk.level(root, &mut BString::default(), new)?;
    for (i, stat) in std::mem::take(&mut walk.kept_stats) {
        new.entries_mut()[i].stat = stat;
    }
    Ok(Swept {
        keep: walk.keep,
        removed: walk.removed,
    })
}

struct Walk<'a> {
    old: &'a gix::index::State,
    old_written: SystemTime,
    /// Every directory of the new tree, as index paths.
    dirs: HashSet<BString>,
    keep: Vec<bool>,
    kept_stats: Vec<(usize, Stat)>,
    removed: usize,
    objects_hash: gix::hash::Kind,
}

impl Walk<'_> {
    fn level(
        &mut self,
        dir: &Path,
        rel: &mut BString,
        new: &gix::index::State,
    ) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if rel.is_empty() && name == ".git" {
                continue;
            }
            let len = rel.len();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(name.as_bytes());
            let path = entry.path();
            // file_type() and symlink_metadata() never follow a symlink.
            let ft = entry.file_type()?;
            let found = new.entry_index_by_path(rel.as_ref());
            let kept = match found {
                Ok(i) => self
                    .unchanged(&path, rel.as_ref(), &new.entries()[i])?
                    .map(|stat| (i, stat)),
                Err(_) => None,
            };
            if let Some((i, stat)) = kept {
                self.keep[i] = true;
                self.kept_stats.push((i, stat));
            } else if found.is_err() && ft.is_dir() && self.dirs.contains(rel.as_bstr()) {
                self.level(&path, rel, new)?;
            } else {
                remove_any(&path, ft.is_dir())?;
                self.removed += 1;
            }
            rel.truncate(len);
        }
        Ok(())
    }

    /// Whether `path` is exactly what a fresh checkout writes for
    /// `new_entry`: then its stat data, for the new index.
    fn unchanged(
        &self,
        path: &Path,
        rel: &BStr,
        new_entry: &gix::index::Entry,
    ) -> std::io::Result<Option<Stat>> {
        let Some(old_entry) = self.old.entry_by_path(rel) else {
            return Ok(None);
        };
        if old_entry.id != new_entry.id
            || old_entry.mode != new_entry.mode
            || !matches!(
                new_entry.mode,
                Mode::FILE | Mode::FILE_EXECUTABLE | Mode::SYMLINK
            )
        {
            return Ok(None);
        }
        let meta = gix::index::fs::Metadata::from_path_no_follow(path)?;
        let right_type = if new_entry.mode == Mode::SYMLINK {
            meta.is_symlink()
        } else {
            meta.is_file() && meta.is_executable() == (new_entry.mode == Mode::FILE_EXECUTABLE)
        };
        if !right_type {
            return Ok(None);
        }
        let modified = meta.modified();
        // (ctime changes with every write, chmod, chown or link, and a
        // step cannot set it back.)
        let Ok(stat) = Stat::from_fs(&meta) else {
            return Ok(None);
        };
        if stat != old_entry.stat {
            return Ok(None);
        }
        // Written in the same clock tick as the index: a change within that
        // tick would not show in the stat data, so look at the content.
        let racy = modified.is_none_or(|m| m >= self.old_written);
        if racy {
            let data = if new_entry.mode == Mode::SYMLINK {
                std::fs::read_link(path)?.as_os_str().as_bytes().to_vec()
            } else {
                std::fs::read(path)?
            };
            let id = gix::objs::compute_hash(self.objects_hash, gix::objs::Kind::Blob, &data);
            if id.ok() != Some(new_entry.id) {
                return Ok(None);
            }
        }
        Ok(Some(stat))
    }
}

/// Remove a file, symlink or (recursively) directory; gone already is fine.
fn remove_any(path: &Path, is_dir: bool) -> std::io::Result<()> {
    let r = if is_dir {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}
