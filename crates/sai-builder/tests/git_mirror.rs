//! Mirror + checkout against real repositories made with the `git` CLI.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};

use sai_builder::git_mirror::{Ensured, GitError, Mirror};
use sai_testkit::git::{GitRepo, git};

/// An origin repository with one commit: files at the top, in a subdir, and
/// an executable script. Returns (origin path, commit hash).
fn make_origin(root: &Path) -> (PathBuf, String) {
    let origin = GitRepo::init(root.join("origin"));
    origin
        .write("README", "hello\n")
        .write("sub/dir/file.txt", "nested content\n")
        .write_executable("build.sh", "#!/bin/sh\necho built\n");
    let hash = origin.commit("first");
    (origin.path().to_path_buf(), hash)
}

/// [`make_origin`] under `root`, and the builder home beside it:
/// (origin path, commit hash, home).
fn origin_and_home(root: &Path) -> (PathBuf, String, PathBuf) {
    let (origin, hash) = make_origin(root);
    (origin, hash, root.join("home"))
}

fn commit_more(origin: &Path, name: &str) -> String {
    let origin = GitRepo::open(origin);
    origin.write(name, name);
    origin.commit(name)
}

fn assert_checkout(src: &Path, hash: &str) {
    assert_eq!(
        std::fs::read_to_string(src.join("README")).unwrap(),
        "hello\n"
    );
    assert_eq!(
        std::fs::read_to_string(src.join("sub/dir/file.txt")).unwrap(),
        "nested content\n"
    );
    let mode = std::fs::metadata(src.join("build.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_ne!(mode & 0o111, 0, "executable bit kept: {mode:o}");
    // A real git worktree: HEAD at the commit, clean status.
    assert_eq!(git(src, &["rev-parse", "HEAD"]), hash);
    assert_eq!(git(src, &["status", "--porcelain"]), "");
}

#[test]
fn second_run_of_a_commit_needs_no_origin() {
    let tmp = tempfile::tempdir().unwrap();
    let (origin, hash, home) = origin_and_home(tmp.path());
    let url = origin.to_str().unwrap().to_string();

    let mirror = Mirror::open(&home, &url).unwrap();
    assert!(mirror.path().starts_with(home.join("git-mirror")));
    assert!(!mirror.has_commit(&hash).unwrap());
    assert_eq!(
        mirror.ensure_commit("refs/heads/main", &hash).unwrap(),
        Ensured::Fetched
    );
    let src1 = home.join("jobs/AAAA0001/src");
    let stats = mirror.checkout(&hash, &src1).unwrap();
    assert_eq!(stats.files, 3);
    assert_checkout(&src1, &hash);

    // Take the origin away: nothing may touch it any more.
    std::fs::rename(&origin, tmp.path().join("origin-gone")).unwrap();

    let mirror = Mirror::open(&home, &url).unwrap();
    assert_eq!(
        mirror.ensure_commit("refs/heads/main", &hash).unwrap(),
        Ensured::AlreadyPresent
    );
    let src2 = home.join("jobs/AAAA0002/src");
    mirror.checkout(&hash, &src2).unwrap();
    assert_checkout(&src2, &hash);
    // The first job's files are independent of the second's.
    std::fs::write(src2.join("README"), "changed").unwrap();
    assert_eq!(
        std::fs::read_to_string(src1.join("README")).unwrap(),
        "hello\n"
    );
}

#[test]
fn new_pushes_are_fetched_incrementally_over_file_url() {
    let tmp = tempfile::tempdir().unwrap();
    let (origin, first, home) = origin_and_home(tmp.path());
    let url = format!("file://{}", origin.display());
    let mirror = Mirror::open(&home, &url).unwrap();
    assert_eq!(
        mirror.ensure_commit("refs/heads/main", &first).unwrap(),
        Ensured::Fetched
    );

    git(&origin, &["checkout", "-q", "-b", "feature"]);
    let second = commit_more(&origin, "second.txt");
    assert_eq!(
        mirror.ensure_commit("refs/heads/feature", &second).unwrap(),
        Ensured::Fetched
    );
    let src = home.join("jobs/BBBB0001/src");
    mirror.checkout(&second, &src).unwrap();
    assert_eq!(
        std::fs::read_to_string(src.join("second.txt")).unwrap(),
        "second.txt"
    );
    assert_eq!(git(&src, &["rev-parse", "HEAD"]), second);
    // The first commit is still there, for a task of the older push.
    assert_eq!(
        mirror.ensure_commit("refs/heads/main", &first).unwrap(),
        Ensured::AlreadyPresent
    );
}

#[test]
fn a_hash_not_in_the_fetch_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (origin, _hash, home) = origin_and_home(tmp.path());
    let mirror = Mirror::open(&home, origin.to_str().unwrap()).unwrap();
    let bogus = "0123456789abcdef0123456789abcdef01234567";
    match mirror.ensure_commit("refs/heads/main", bogus) {
        Err(GitError::NotFetched { hash, git_ref, .. }) => {
            assert_eq!(hash, bogus);
            assert_eq!(git_ref, "refs/heads/main");
        }
        other => panic!("expected NotFetched, got {other:?}"),
    }
    assert!(matches!(
        mirror.ensure_commit("refs/heads/main", "abc"),
        Err(GitError::BadHash(_))
    ));
}

#[test]
fn an_unreachable_origin_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let url = tmp.path().join("no-such-repo");
    let mirror = Mirror::open(&home, url.to_str().unwrap()).unwrap();
    let err = mirror
        .ensure_commit(
            "refs/heads/main",
            "0123456789abcdef0123456789abcdef01234567",
        )
        .unwrap_err();
    let text = err.to_string();
    println!("{text}");
    assert!(text.contains("no-such-repo"), "{text}");
}

#[test]
fn checkout_refuses_a_non_empty_destination() {
    let tmp = tempfile::tempdir().unwrap();
    let (origin, hash, home) = origin_and_home(tmp.path());
    let mirror = Mirror::open(&home, origin.to_str().unwrap()).unwrap();
    mirror.ensure_commit("refs/heads/main", &hash).unwrap();
    let src = home.join("jobs/CCCC0001/src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("junk"), "x").unwrap();
    assert!(matches!(
        mirror.checkout(&hash, &src),
        Err(GitError::DestNotEmpty(_))
    ));
}

#[test]
fn concurrent_tasks_share_the_mirror() {
    let tmp = tempfile::tempdir().unwrap();
    let (origin, hash, home) = origin_and_home(tmp.path());
    let url = origin.to_str().unwrap().to_string();
    let n = 4;
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (home, url, hash, barrier) =
                (home.clone(), url.clone(), hash.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let mirror = Mirror::open(&home, &url).unwrap();
                let ensured = mirror.ensure_commit("refs/heads/main", &hash).unwrap();
                let src = home.join(format!("jobs/DDDD000{i}/src"));
                mirror.checkout(&hash, &src).unwrap();
                (ensured, src)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let fetched = results
        .iter()
        .filter(|(e, _)| *e == Ensured::Fetched)
        .count();
    assert_eq!(fetched, 1, "exactly one task fetched: {results:?}");
    for (_, src) in &results {
        assert_checkout(src, &hash);
    }
}

#[tokio::test]
async fn prepare_source_runs_off_the_runtime() {
    let tmp = tempfile::tempdir().unwrap();
    let (origin, hash, home) = origin_and_home(tmp.path());
    let mirror = Mirror::open(&home, origin.to_str().unwrap()).unwrap();
    let src = home.join("jobs/EEEE0001/src");
    let (ensured, stats) = mirror
        .prepare_source("refs/heads/main", &hash, &src)
        .await
        .unwrap();
    assert_eq!(ensured, Ensured::Fetched);
    assert_eq!(stats.files, 3);
    assert_checkout(&src, &hash);
}

/// The pack files of a repository's object database.
fn packs(repo: &Path) -> Vec<PathBuf> {
    let dir = repo.join("objects/pack");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "pack"))
        .collect()
}

fn loose_object(repo: &Path, hash: &str) -> PathBuf {
    repo.join("objects").join(&hash[..2]).join(&hash[2..])
}

/// A local origin is read in process: the commits arrive as loose objects
/// (a `git-upload-pack` fetch would have written a pack), the mirror is
/// complete (`git fsck`), `refs/sai/<hash>` names the commit as after a
/// fetch, and history pushed several commits at a time, with deleted files,
/// mode changes, a symlink and a submodule entry, checks out exactly.
#[test]
fn a_local_origin_is_copied_in_process_completely() {
    let tmp = tempfile::tempdir().unwrap();
    let (origin, first, home) = origin_and_home(tmp.path());
    let mirror = Mirror::open(&home, &format!("file://{}", origin.display())).unwrap();
    assert_eq!(
        mirror.ensure_commit("refs/heads/main", &first).unwrap(),
        Ensured::Fetched
    );
    assert!(loose_object(mirror.path(), &first).is_file());
    assert!(packs(mirror.path()).is_empty(), "no pack: nothing fetched");

    // Three commits pushed at once: only the tip is asked for.
    let repo = GitRepo::open(&origin);
    repo.write("a.txt", "a\n").write("dir/b.txt", "b\n");
    repo.commit("add");
    std::fs::remove_file(origin.join("README")).unwrap();
    std::fs::set_permissions(
        origin.join("build.sh"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::set_permissions(origin.join("a.txt"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("a.txt", origin.join("link")).unwrap();
    repo.commit("delete, chmod, link");
    // A submodule entry (gitlink): not an object of this repository.
    repo.stage_gitlink("vendor/lib", &first);
    repo.git(&["commit", "-q", "-m", "submodule"]);
    let tip = repo.head();
    assert_eq!(
        mirror.ensure_commit("refs/heads/main", &tip).unwrap(),
        Ensured::Fetched
    );
    assert!(packs(mirror.path()).is_empty());
    git(
        mirror.path(),
        &["fsck", "--no-dangling", "--connectivity-only"],
    );
    assert_eq!(git(mirror.path(), &["rev-list", "--count", &tip]), "4");
    assert_eq!(
        git(mirror.path(), &["rev-parse", &format!("refs/sai/{tip}")]),
        tip
    );

    let src = home.join("jobs/FFFF0001/src");
    mirror.checkout(&tip, &src).unwrap();
    assert_eq!(git(&src, &["rev-parse", "HEAD"]), tip);
    assert_eq!(git(&src, &["status", "--porcelain", "--ignored"]), "");
    assert!(!src.join("README").exists(), "deleted file gone");
    let mode = |p: &str| {
        std::fs::symlink_metadata(src.join(p))
            .unwrap()
            .permissions()
            .mode()
    };
    assert_eq!(mode("build.sh") & 0o111, 0, "executable bit dropped");
    assert_ne!(mode("a.txt") & 0o111, 0, "executable bit added");
    assert_eq!(
        std::fs::read_link(src.join("link")).unwrap(),
        Path::new("a.txt")
    );
    assert_eq!(
        std::fs::read_to_string(src.join("dir/b.txt")).unwrap(),
        "b\n"
    );
    // Exactly the commit's tree: files on disk are the tree's entries.
    let tree: Vec<String> = git(&src, &["ls-tree", "-r", "--name-only", &tip])
        .lines()
        .map(str::to_string)
        .collect();
    let mut on_disk = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(&src).unwrap().display().to_string();
            if rel == ".git" {
                continue;
            }
            if p.is_dir() && !p.is_symlink() {
                if rel == "vendor/lib" {
                    on_disk.push(rel);
                } else {
                    stack.push(p);
                }
            } else {
                on_disk.push(rel);
            }
        }
    }
    on_disk.sort();
    let mut tree_sorted = tree.clone();
    tree_sorted.sort();
    assert_eq!(on_disk, tree_sorted);
    // The job's repository is minimal: no template hooks.
    assert!(!src.join(".git/hooks").exists());
}

/// A first fetch of more objects than the in-process copy takes goes
/// through the git transport and lands as a pack; the next, small push is
/// copied in process on top of it.
#[test]
fn a_large_first_fetch_is_a_pack_and_later_pushes_are_copied() {
    let tmp = tempfile::tempdir().unwrap();
    let origin = GitRepo::init(tmp.path().join("origin"));
    for i in 0..=sai_builder::git_mirror::LOCAL_COPY_MAX_OBJECTS {
        origin.write(format!("d{}/f{i}", i % 16), format!("{i}\n"));
    }
    let first = origin.commit("many files");
    let home = tmp.path().join("home");
    let mirror = Mirror::open(&home, &origin.url()).unwrap();
    assert_eq!(
        mirror.ensure_commit("refs/heads/main", &first).unwrap(),
        Ensured::Fetched
    );
    assert_eq!(packs(mirror.path()).len(), 1);
    assert!(!loose_object(mirror.path(), &first).exists());

    origin.write("d0/f0", "changed\n");
    let second = origin.commit("small change");
    assert_eq!(
        mirror.ensure_commit("refs/heads/main", &second).unwrap(),
        Ensured::Fetched
    );
    assert_eq!(packs(mirror.path()).len(), 1, "no second pack");
    assert!(loose_object(mirror.path(), &second).is_file());
    git(
        mirror.path(),
        &["fsck", "--no-dangling", "--connectivity-only"],
    );
    let src = home.join("jobs/GGGG0001/src");
    let stats = mirror.checkout(&second, &src).unwrap();
    assert_eq!(
        stats.files,
        sai_builder::git_mirror::LOCAL_COPY_MAX_OBJECTS + 1
    );
    assert_eq!(
        std::fs::read_to_string(src.join("d0/f0")).unwrap(),
        "changed\n"
    );
    assert_eq!(git(&src, &["status", "--porcelain"]), "");
}
