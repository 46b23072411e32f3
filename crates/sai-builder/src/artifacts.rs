//! Build artifacts: the saifile's `artifacts` globs, expanded after a task.
//!
//! Patterns are rooted at the task's `src/` (the reference rooted them at the
//! job dir, so a project's `build/*.rpm` never matched: reference 15 item 16).
//! A pattern must be relative and must not contain `..` components; `*` and
//! `?` do not cross `/`. Every match is resolved and must stay inside `src/`
//! (a symlink pointing elsewhere is skipped) and be a regular file. Problems
//! (no match, rejected pattern, skipped match) become notice strings for the
//! log, never errors: a missing artifact does not fail a build.
//!
//! [`scan`] is blocking (it hashes the files); call it from `spawn_blocking`.
//! [`ChunkReader`] reads a file in fixed-size chunks for upload.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

/// Default upload chunk size.
pub const CHUNK_SIZE: usize = 64 * 1024;

/// One file to upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// Upload name: the path relative to `src/`, `/`-separated, with every
    /// character outside `[A-Za-z0-9._+-]` in a component mapped to `_`;
    /// always a valid [`sai_core::artifact_name`], which the server keeps
    /// and serves the file under.
    pub name: String,
    /// The resolved file (inside `src/`).
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Lowercase hex sha256 of the contents.
    pub sha256: String,
}

/// Result of [`scan`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// Matched files, in pattern order then path order, without duplicates.
    pub artifacts: Vec<Artifact>,
    /// Human-readable notices for the task log (channel 3).
    pub notices: Vec<String>,
}

/// Split the saifile's comma-separated `artifacts` value into patterns.
pub fn split_patterns(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

fn check_pattern(pattern: &str) -> Result<(), &'static str> {
    if pattern.is_empty() {
        return Err("it is empty");
    }
    let p = Path::new(pattern);
    if p.is_absolute() {
        return Err("it is absolute; patterns are relative to src/");
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err("it contains '..'");
    }
    Ok(())
}

fn upload_name(rel: &Path) -> String {
    rel.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(
                s.to_string_lossy()
                    .chars()
                    .map(|c| {
                        if sai_core::artifact_name::is_name_char(c) {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect::<String>(),
            ),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK_SIZE];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((size, hex::encode(hasher.finalize())))
}

/// Expand `patterns` under `src` (see the module doc).
pub fn scan(src: &Path, patterns: &[String]) -> Scan {
    let mut out = Scan::default();
    let root = match std::fs::canonicalize(src) {
        Ok(r) => r,
        Err(e) => {
            out.notices
                .push(format!("artifacts: cannot resolve {}: {e}", src.display()));
            return out;
        }
    };
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    let mut seen = BTreeSet::new();
    for pattern in patterns {
        if let Err(why) = check_pattern(pattern) {
            out.notices
                .push(format!("artifact pattern {pattern:?} ignored: {why}"));
            continue;
        }
        let full = format!(
            "{}/{}",
            glob::Pattern::escape(&root.to_string_lossy()),
            pattern
        );
        let paths = match glob::glob_with(&full, options) {
            Ok(p) => p,
            Err(e) => {
                out.notices
                    .push(format!("artifact pattern {pattern:?} is invalid: {e}"));
                continue;
            }
        };
        let mut matched = false;
        for entry in paths {
            let path = match entry {
                Ok(p) => p,
                Err(e) => {
                    out.notices
                        .push(format!("artifact pattern {pattern:?}: {e}"));
                    continue;
                }
            };
            let rel = path.strip_prefix(&root).unwrap_or(&path).to_path_buf();
            let resolved = match std::fs::canonicalize(&path) {
                Ok(r) => r,
                Err(e) => {
                    out.notices
                        .push(format!("artifact {} skipped: {e}", rel.display()));
                    continue;
                }
            };
            if !resolved.starts_with(&root) {
                out.notices.push(format!(
                    "artifact {} skipped: it resolves outside src/",
                    rel.display()
                ));
                continue;
            }
            if !resolved.is_file() {
                out.notices.push(format!(
                    "artifact {} skipped: not a regular file",
                    rel.display()
                ));
                continue;
            }
            matched = true;
            if !seen.insert(resolved.clone()) {
                continue;
            }
            let name = upload_name(&rel);
            if let Err(e) = sai_core::artifact_name::check(&name) {
                out.notices
                    .push(format!("artifact {} skipped: {e}", rel.display()));
                continue;
            }
            match hash_file(&resolved) {
                Ok((size, sha256)) => out.artifacts.push(Artifact {
                    name,
                    path: resolved,
                    size,
                    sha256,
                }),
                Err(e) => out
                    .notices
                    .push(format!("artifact {} skipped: {e}", rel.display())),
            }
        }
        if !matched {
            out.notices.push(format!(
                "artifact pattern {pattern:?} matched no file in src/"
            ));
        }
    }
    out
}

/// Reads a file as a sequence of fixed-size chunks (the last may be shorter).
#[derive(Debug)]
pub struct ChunkReader {
    file: tokio::fs::File,
    chunk_size: usize,
}

impl ChunkReader {
    /// Open `path` for reading in chunks of `chunk_size` (at least 1) bytes.
    pub async fn open(path: &Path, chunk_size: usize) -> std::io::Result<Self> {
        Ok(Self {
            file: tokio::fs::File::open(path).await?,
            chunk_size: chunk_size.max(1),
        })
    }

    /// The next chunk, or `None` at end of file. Every chunk but the last is
    /// exactly `chunk_size` bytes.
    pub async fn next_chunk(&mut self) -> std::io::Result<Option<Bytes>> {
        let mut buf = vec![0u8; self.chunk_size];
        let mut filled = 0;
        while filled < buf.len() {
            let n = self.file.read(&mut buf[filled..]).await?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            return Ok(None);
        }
        buf.truncate(filled);
        Ok(Some(Bytes::from(buf)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, data: &[u8]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }

    /// `dir/src` holding `inside.txt`, with `dir/secret.txt` beside it,
    /// outside the dir that is scanned; returns `dir/src`.
    fn src_beside_a_secret(dir: &Path) -> PathBuf {
        let src = dir.join("src");
        write(&src.join("inside.txt"), b"in");
        write(&dir.join("secret.txt"), b"s");
        src
    }

    fn pats(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    /// The names of the artifacts found.
    fn names(scan: &Scan) -> Vec<&str> {
        scan.artifacts.iter().map(|a| a.name.as_str()).collect()
    }

    /// Whether one notice holds all of `parts`.
    /// Asserts that one of the scan's notices contains every one of `parts`.
    #[track_caller]
    fn assert_noticed(scan: &Scan, parts: &[&str]) {
        assert!(
            scan.notices
                .iter()
                .any(|n| parts.iter().all(|p| n.contains(p))),
            "{parts:?} in none of {:?}",
            scan.notices
        );
    }

    #[test]
    fn split() {
        assert_eq!(
            split_patterns(" build/*.rpm, ,x.tar.gz,"),
            pats(&["build/*.rpm", "x.tar.gz"])
        );
    }

    #[test]
    fn globs_are_rooted_at_src() {
        let tmp = tempfile::tempdir().unwrap();
        let job = tmp.path().join("job");
        let src = job.join("src");
        write(&src.join("build/sai-1.rpm"), b"rpm");
        write(&src.join("build/sub/deep.rpm"), b"deep");
        write(&job.join("build/outside.rpm"), b"no");
        let scan = scan(&src, &pats(&["build/*.rpm"]));
        assert_eq!(scan.notices, Vec::<String>::new());
        assert_eq!(
            scan.artifacts.len(),
            1,
            "* does not cross /: {:?}",
            scan.artifacts
        );
        let a = &scan.artifacts[0];
        assert_eq!(a.name, "build/sai-1.rpm");
        assert_eq!(a.size, 3);
        assert_eq!(a.sha256, hex::encode(Sha256::digest(b"rpm")));
        assert!(a.path.ends_with("src/build/sai-1.rpm"));
    }

    #[test]
    fn names_keep_their_relative_path_and_stay_valid() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        write(&src.join("out/deep/result file.txt"), b"r");
        let long = format!("{}/{}/x.bin", "d".repeat(200), "e".repeat(60));
        write(&src.join(&long), b"l");
        let scan = scan(&src, &pats(&["out/deep/*.txt", "d*/e*/x.bin"]));
        assert_eq!(names(&scan), ["out/deep/result_file.txt"]);
        assert_noticed(&scan, &["x.bin skipped", "longer than"]);
    }

    #[test]
    fn missing_match_is_a_notice() {
        let tmp = tempfile::tempdir().unwrap();
        let scan = scan(tmp.path(), &pats(&["*.zip"]));
        assert!(scan.artifacts.is_empty());
        assert_eq!(scan.notices.len(), 1);
        assert_noticed(&scan, &["matched no file"]);
    }

    #[test]
    fn absolute_and_parent_patterns_are_rejected() {
        let tmp = tempfile::tempdir().unwrap();
        let src = src_beside_a_secret(tmp.path());
        let scan = scan(
            &src,
            &pats(&["/etc/passwd", "../secret.txt", "x/../../secret.txt"]),
        );
        assert!(scan.artifacts.is_empty());
        assert_eq!(scan.notices.len(), 3, "{:?}", scan.notices);
        assert!(scan.notices.iter().all(|n| n.contains("ignored")));
    }

    #[test]
    fn symlinks_out_of_src_are_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let src = src_beside_a_secret(tmp.path());
        std::os::unix::fs::symlink(tmp.path().join("secret.txt"), src.join("leak.txt")).unwrap();
        std::os::unix::fs::symlink(src.join("inside.txt"), src.join("alias.txt")).unwrap();
        std::os::unix::fs::symlink(tmp.path(), src.join("up")).unwrap();
        let scan = scan(&src, &pats(&["*.txt", "up/*.txt"]));
        // alias.txt resolves to inside.txt: uploaded once.
        assert_eq!(names(&scan), ["alias.txt"]);
        assert_noticed(&scan, &["leak.txt", "outside"]);
        assert_noticed(&scan, &["up/secret.txt", "outside"]);
    }

    #[test]
    fn directories_are_skipped_and_names_sanitised() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("dir.out")).unwrap();
        write(&src.join("we ird#name.out"), b"x");
        let scan = scan(&src, &pats(&["*.out"]));
        assert_eq!(scan.artifacts.len(), 1);
        assert_eq!(scan.artifacts[0].name, "we_ird_name.out");
        assert_noticed(&scan, &["not a regular file"]);
    }

    #[tokio::test]
    async fn chunks_are_fixed_size() {
        let tmp = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let path = tmp.path().join("f");
        std::fs::write(&path, &data).unwrap();
        let mut r = ChunkReader::open(&path, 4096).await.unwrap();
        let mut sizes = Vec::new();
        let mut all = Vec::new();
        while let Some(c) = r.next_chunk().await.unwrap() {
            sizes.push(c.len());
            all.extend_from_slice(&c);
        }
        assert_eq!(sizes, [4096, 4096, 1808]);
        assert_eq!(all, data);
        let empty = tmp.path().join("e");
        std::fs::write(&empty, b"").unwrap();
        assert!(
            ChunkReader::open(&empty, 10)
                .await
                .unwrap()
                .next_chunk()
                .await
                .unwrap()
                .is_none()
        );
    }
}
