//! A job dir taken over from an instance's previous task
//! (`Mirror::checkout_reusing`) must be exactly what a fresh checkout
//! would be, whatever the commits changed and whatever the previous steps
//! did to it; and a task must see nothing of the previous task's steps.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

mod offer_common;

use offer_common::offer_on;
use sai_builder::git_mirror::Mirror;
use sai_builder::instances::InstancePool;
use sai_builder::jobdir::Layout;
use sai_builder::log::CH_STDOUT;
use sai_builder::task::{TaskContext, TaskEvent, run_task};
use sai_core::protocol::{TaskOffer, TaskResult};
use sai_testkit::git::{GitRepo, git};
use tokio_util::sync::CancellationToken;

/// Everything under `root` as (path, what it is): file type, permission
/// bits and content or link target; `.git/index` as `git ls-files -s`
/// (its stat data differs between any two checkouts).
fn snapshot(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            let what = if meta.file_type().is_symlink() {
                format!("link -> {}", std::fs::read_link(&p).unwrap().display())
            } else if meta.is_dir() {
                stack.push(p.clone());
                format!("dir {mode:o}")
            } else if rel == ".git/index" {
                format!("index: {}", git(root, &["ls-files", "-s"]))
            } else {
                format!(
                    "file {mode:o} {:?}",
                    String::from_utf8_lossy(&std::fs::read(&p).unwrap())
                )
            };
            out.push((rel, what));
        }
    }
    out.sort();
    out
}

/// Check out `hash` into a new dir and compare `reused` with it; also
/// that `reused` is a clean worktree at `hash`.
fn assert_same_as_fresh(mirror: &Mirror, hash: &str, reused: &Path, fresh: &Path) {
    mirror.checkout(hash, fresh).unwrap();
    assert_eq!(snapshot(reused), snapshot(fresh));
    assert_eq!(git(reused, &["rev-parse", "HEAD"]), hash);
    assert_eq!(git(reused, &["status", "--porcelain", "--ignored"]), "");
    assert_eq!(
        git(reused, &["ls-files", "-s"]),
        git(fresh, &["ls-files", "-s"])
    );
}

/// (origin, first commit, second commit): the second deletes, renames,
/// changes modes, retargets a link, turns a file into a directory and a
/// directory into a file, changes content and adds a submodule entry.
fn two_commits(root: &Path) -> (GitRepo, String, String) {
    let repo = GitRepo::init(root.join("origin"));
    repo.write("README", "hello\n")
        .write("sub/dir/file.txt", "nested content\n")
        .write("old/name.txt", "moved\n")
        .write("a.txt", "a\n")
        .write("keep.txt", "one\n")
        .write("becomes_dir", "file for now\n")
        .write("becomes_file/x", "x\n")
        .write_executable("build.sh", "#!/bin/sh\necho built\n");
    std::os::unix::fs::symlink("a.txt", repo.path().join("link")).unwrap();
    let first = repo.commit("first");
    let o = repo.path();
    std::fs::remove_file(o.join("README")).unwrap();
    std::fs::create_dir_all(o.join("new")).unwrap();
    std::fs::rename(o.join("old/name.txt"), o.join("new/name.txt")).unwrap();
    std::fs::set_permissions(o.join("build.sh"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(o.join("a.txt"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::remove_file(o.join("link")).unwrap();
    std::os::unix::fs::symlink("sub/dir/file.txt", o.join("link")).unwrap();
    std::fs::remove_file(o.join("becomes_dir")).unwrap();
    repo.write("becomes_dir/inner.txt", "inner\n");
    std::fs::remove_dir_all(o.join("becomes_file")).unwrap();
    repo.write("becomes_file", "now a file\n")
        .write("keep.txt", "two\n");
    repo.git(&["add", "-A"]);
    repo.stage_gitlink("vendor/lib", &first);
    repo.git(&["commit", "-q", "-m", "second"]);
    let second = repo.head();
    (repo, first, second)
}

/// [`two_commits`] under `root`, fetched into a mirror in `root/home`:
/// (home, mirror, first commit, second commit).
fn mirrored_two_commits(root: &Path) -> (PathBuf, Mirror, String, String) {
    let (repo, first, second) = two_commits(root);
    let home = root.join("home");
    let mirror = Mirror::open(&home, repo.path().to_str().unwrap()).unwrap();
    mirror.ensure_commit("refs/heads/main", &second).unwrap();
    (home, mirror, first, second)
}

#[test]
fn a_reused_checkout_equals_a_fresh_one_across_deletes_renames_and_mode_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let (home, mirror, first, second) = mirrored_two_commits(tmp.path());
    let src = home.join("jobs/REUSE001/src");
    mirror.checkout(&first, &src).unwrap();
    let untouched = std::fs::metadata(src.join("sub/dir/file.txt"))
        .unwrap()
        .ino();
    let head = std::fs::metadata(src.join(".git/HEAD")).unwrap().ino();

    // Forth, back and forth again: every change in both directions, and
    // the same commit again (nothing to write).
    for (n, hash) in [&second, &first, &second, &second].into_iter().enumerate() {
        let stats = mirror.checkout_reusing(hash, &src).unwrap();
        assert_same_as_fresh(
            &mirror,
            hash,
            &src,
            &home.join(format!("jobs/FRESH00{n}/src")),
        );
        assert!(
            stats.files < 9,
            "only what changed is written, not all 9 files: {stats:?}"
        );
    }
    assert_eq!(
        std::fs::metadata(src.join("sub/dir/file.txt"))
            .unwrap()
            .ino(),
        untouched,
        "a file both commits share is left in place"
    );
    assert_eq!(
        std::fs::metadata(src.join(".git/HEAD")).unwrap().ino(),
        head,
        "HEAD is rewritten in place, not replaced by a new file"
    );
    assert!(
        src.join("vendor/lib").is_dir(),
        "submodule entry as in a fresh checkout"
    );
}

#[test]
fn what_a_step_left_in_a_checkout_does_not_survive_its_reuse() {
    let tmp = tempfile::tempdir().unwrap();
    let (home, mirror, first, second) = mirrored_two_commits(tmp.path());
    let outside = tmp.path().join("outside.txt");
    std::fs::write(&outside, "not the builder's to touch\n").unwrap();

    for (n, target) in [&second, &first].into_iter().enumerate() {
        let src = home.join(format!("jobs/DIRTY00{n}/src"));
        mirror.checkout(&second, &src).unwrap();
        let w = |rel: &str, text: &str| {
            let p = src.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        // Untracked files and build output, at the top and nested.
        w("untracked.txt", "left over\n");
        w("build/out/obj.o", "object\n");
        w("sub/dir/generated.h", "generated\n");
        w("vendor/lib/cloned-submodule-file", "sub\n");
        // A tracked file changed with the same size, its mtime put back.
        let keep = src.join("keep.txt");
        let mtime = std::fs::metadata(&keep).unwrap().modified().unwrap();
        std::fs::write(&keep, "TWO\n").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&keep)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        // A tracked file replaced by a directory, another by a link out.
        std::fs::remove_file(src.join("becomes_file")).unwrap();
        w("becomes_file/nested", "dir now\n");
        std::fs::remove_file(src.join("a.txt")).unwrap();
        std::os::unix::fs::symlink(&outside, src.join("a.txt")).unwrap();
        // A mode change, a symlink in place of a directory of the tree.
        std::fs::set_permissions(src.join("build.sh"), std::fs::Permissions::from_mode(0o777))
            .unwrap();
        std::fs::rename(src.join("new"), tmp.path().join(format!("moved-away-{n}"))).unwrap();
        std::os::unix::fs::symlink(tmp.path(), src.join("new")).unwrap();
        // And in .git: a hook, a changed config, a link out for a ref dir.
        w(".git/hooks/post-checkout", "#!/bin/sh\necho pwned\n");
        let config = src.join(".git/config");
        let mut text = std::fs::read_to_string(&config).unwrap();
        text.push_str("[core]\n\tfsmonitor = echo pwned\n");
        std::fs::write(&config, text).unwrap();
        std::fs::remove_dir_all(src.join(".git/refs/tags")).unwrap();
        std::os::unix::fs::symlink(tmp.path(), src.join(".git/refs/tags")).unwrap();
        std::fs::remove_file(src.join(".git/HEAD")).unwrap();
        std::os::unix::fs::symlink(&outside, src.join(".git/HEAD")).unwrap();

        mirror.checkout_reusing(target, &src).unwrap();
        assert_same_as_fresh(
            &mirror,
            target,
            &src,
            &home.join(format!("jobs/CLEAN00{n}/src")),
        );
        assert_eq!(
            std::fs::read_to_string(&outside).unwrap(),
            "not the builder's to touch\n",
            "nothing outside the job dir is written through a link"
        );
        assert!(tmp.path().join(format!("moved-away-{n}/name.txt")).exists());
    }
}

#[test]
fn a_checkout_without_an_index_is_not_reused() {
    let tmp = tempfile::tempdir().unwrap();
    let (home, mirror, first, _) = mirrored_two_commits(tmp.path());
    let src = home.join("jobs/NOINDEX1/src");
    std::fs::create_dir_all(src.join(".git")).unwrap();
    std::fs::write(src.join("stray"), "x").unwrap();
    assert!(mirror.checkout_reusing(&first, &src).is_err());
    assert!(
        src.join("stray").exists(),
        "left for a fresh checkout elsewhere"
    );
}

fn offer(n: u32, origin: &Path, hash: &str, steps: &[&str]) -> TaskOffer {
    offer_on("linux", n, origin, hash, steps)
}

/// A task context with its home under `root` and one instance, so that
/// every task takes over the previous one's job dir.
fn one_instance_context(root: &Path) -> TaskContext {
    TaskContext::new(Layout::new(root.join("home")), InstancePool::new(1), 1)
}

async fn run(ctx: &TaskContext, offer: &TaskOffer) -> (TaskResult, String) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let collector = tokio::spawn(async move {
        let mut out = String::new();
        while let Some(e) = rx.recv().await {
            if let TaskEvent::Log(c) = e
                && c.channel == CH_STDOUT
            {
                out.push_str(&String::from_utf8_lossy(&c.bytes));
            }
        }
        out
    });
    let result = tokio::time::timeout(
        Duration::from_secs(120),
        run_task(ctx, offer, &tx, &CancellationToken::new()),
    )
    .await
    .expect("task ends in time");
    drop(tx);
    (result, collector.await.unwrap())
}

/// The daemon's way: the second task of the instance takes over the first
/// one's job dir (renamed to its own VN), and its step sees a clean
/// checkout of its commit, nothing the first task's step left.
#[tokio::test]
async fn the_next_task_of_an_instance_takes_over_its_job_dir_clean() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, first, second) = two_commits(tmp.path());
    let ctx = one_instance_context(tmp.path());
    let dirty = "mkdir -p build && echo junk > build/out.o && echo changed > keep.txt \
                 && echo beside > ../beside.txt && echo DIRTIED";
    let (r, out) = run(&ctx, &offer(1, repo.path(), &first, &[dirty])).await;
    assert_eq!((r, out.as_str()), (TaskResult::Success, "DIRTIED\n"));
    let first_dir: PathBuf = ctx
        .layout
        .job_dir(&sai_builder::jobdir::vn(&offer(1, repo.path(), &first, &[]).task_id).unwrap());
    let first_ino = std::fs::metadata(first_dir.join("src/sub/dir/file.txt"))
        .unwrap()
        .ino();

    let check = "test ! -e build && test ! -e ../beside.txt && cat keep.txt \
                 && git status --porcelain --ignored && echo CLEAN";
    let (r, out) = run(&ctx, &offer(2, repo.path(), &second, &[check])).await;
    assert_eq!((r, out.as_str()), (TaskResult::Success, "two\nCLEAN\n"));
    let second_dir = ctx
        .layout
        .job_dir(&sai_builder::jobdir::vn(&offer(2, repo.path(), &second, &[]).task_id).unwrap());
    assert!(!first_dir.exists(), "the first job dir was taken over");
    assert_eq!(
        std::fs::metadata(second_dir.join("src/sub/dir/file.txt"))
            .unwrap()
            .ino(),
        first_ino,
        "taken over, not checked out afresh"
    );
    assert_same_as_fresh(
        &Mirror::open(ctx.layout.home(), repo.path().to_str().unwrap()).unwrap(),
        &second,
        &second_dir.join("src"),
        &tmp.path().join("fresh/src"),
    );
}

/// A step that alters a tracked file and rewrites the index so the file
/// looks unchanged (same stat data, the commit's blob id) must not get the
/// altered file into the instance's next task: an index the builder did
/// not leave as it was is not trusted, and the next task checks out afresh.
#[tokio::test]
async fn an_index_rewritten_by_a_step_does_not_carry_a_file_into_the_next_task() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, _, second) = two_commits(tmp.path());
    let ctx = one_instance_context(tmp.path());
    let first = offer(1, repo.path(), &second, &["echo evl > keep.txt"]);
    let (r, _) = run(&ctx, &first).await;
    assert_eq!(r, TaskResult::Success);

    // What the step could have done as well: make the index agree with
    // the altered file.
    let src = ctx
        .layout
        .src_dir(&sai_builder::jobdir::vn(&first.task_id).unwrap());
    let path = src.join(".git/index");
    let mut index =
        gix::index::File::at(&path, gix::hash::Kind::Sha1, false, Default::default()).unwrap();
    let i = index
        .entry_index_by_path(gix::bstr::BStr::new("keep.txt"))
        .unwrap();
    let meta = gix::index::fs::Metadata::from_path_no_follow(&src.join("keep.txt")).unwrap();
    index.entries_mut()[i].stat = gix::index::entry::Stat::from_fs(&meta).unwrap();
    index.write(Default::default()).unwrap();

    let (r, out) = run(&ctx, &offer(2, repo.path(), &second, &["cat keep.txt"])).await;
    assert_eq!((r, out.as_str()), (TaskResult::Success, "two\n"));
}

/// Every file and directory under `root` (links not followed) with its inode.
fn inodes(root: &Path) -> std::collections::BTreeMap<PathBuf, u64> {
    let mut found = std::collections::BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                todo.push(entry.path());
            }
            found.insert(entry.path(), meta.ino());
        }
    }
    found
}

/// What an instance's next task of a one-file push creates in the builder
/// home: the push's new objects in the mirror (commit, tree, blob) and the
/// ref that keeps them, the changed file and the checkout's new index. The job dir, `HEAD` and the
/// log proxy sockets carry over (renamed to the new task's VN): on ext4
/// without a journal every new inode costs a scan past each inode freed in
/// the last minutes (BENCHMARKS.md, issue 10).
#[tokio::test]
async fn an_instances_next_task_creates_only_the_pushed_objects_the_changed_file_and_an_index() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, _, second) = two_commits(tmp.path());
    let ctx = one_instance_context(tmp.path());
    for n in [1, 2] {
        let (r, _) = run(&ctx, &offer(n, repo.path(), &second, &["true"])).await;
        assert_eq!(r, TaskResult::Success);
    }
    let before = inodes(ctx.layout.home());
    repo.write("keep.txt", "three\n");
    let third = repo.commit("three");
    let (r, _) = run(&ctx, &offer(3, repo.path(), &third, &["true"])).await;
    assert_eq!(r, TaskResult::Success);

    // A file is carried over when it has the inode it had before at its
    // path there (with the second task's VN where the third's stands).
    let vn = |n| sai_builder::jobdir::vn(&offer(n, repo.path(), &third, &[]).task_id).unwrap();
    let (vn2, vn3) = (vn(2), vn(3));
    let (mirror, others): (Vec<PathBuf>, Vec<PathBuf>) = inodes(ctx.layout.home())
        .into_iter()
        .filter(|(path, ino)| {
            let then = PathBuf::from(path.to_string_lossy().replace(&vn3, &vn2));
            !path.is_dir() && before.get(&then) != Some(ino)
        })
        .map(|(path, _)| path)
        .partition(|p| p.starts_with(ctx.layout.mirrors_dir()));
    let objects = mirror
        .iter()
        .filter(|p| p.parent().unwrap().parent().unwrap().ends_with("objects"))
        .count();
    assert_eq!(objects, 3, "the push's commit, tree and blob: {mirror:#?}");
    assert_eq!(mirror.len(), 4, "and refs/sai/<commit>: {mirror:#?}");
    assert!(
        mirror
            .iter()
            .any(|p| p.ends_with(format!("refs/sai/{third}")))
    );
    let names: Vec<_> = others
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(names.contains(&"index".to_string()), "{others:#?}");
    // keep.txt may get its old inode number back from the filesystem.
    assert!(
        names.iter().all(|n| n == "index" || n == "keep.txt"),
        "nothing but the index and the changed file is new in the job and run dirs: {others:#?}"
    );
}
