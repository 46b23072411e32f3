//! The building blocks together, the way the daemon loop will use them:
//! mirror + checkout, log proxy, environment, step, artifacts, cleanup.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{Duration, SystemTime};

use sai_builder::artifacts::{ChunkReader, scan, split_patterns};
use sai_builder::env::{StepEnvInput, build_env, resolve_parallel};
use sai_builder::git_mirror::{Ensured, Mirror};
use sai_builder::housekeeping::{has_room, remove_old_job_dirs};
use sai_builder::instances::InstancePool;
use sai_builder::jobdir::{Layout, vn};
use sai_builder::log::{CH_NOTICE, CH_STDOUT, CH_TTY0, LogChunk};
use sai_builder::logproxy::LogProxy;
use sai_builder::step_runner::{StepOutcome, StepSpec, run_step};
use sai_testkit::git::GitRepo;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

const TASK: &str = "F00D0000000000000000000000000000AAAAAAAAAAAAAAAAAAAAAAAAAAAABEEF";

const BUILD_SH: &str = r#"#!/bin/sh
set -e
echo "building $SAI_PROJECT at $SAI_REMOTE_REF"
mkdir -p build
printf 'artifact-bytes' > build/out.bin
perl -MIO::Socket::UNIX -e '
  my $s = IO::Socket::UNIX->new(Peer => $ENV{SAI_LOGPROXY}) or die "proxy: $!";
  print $s "note via proxy\n";
  my $t = IO::Socket::UNIX->new(Peer => $ENV{SAI_LOGPROXY_TTY0}) or die "tty0: $!";
  print $t "board says hi\n";'
"#;

#[tokio::test]
async fn a_task_from_push_to_artifacts() {
    if !Path::new("/usr/bin/perl").exists() {
        eprintln!("skipped: no perl to talk to the log proxy");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = GitRepo::init(tmp.path().join("origin"));
    repo.write_executable("build.sh", BUILD_SH);
    let hash = repo.commit("c");
    let origin = repo.path().to_path_buf();

    let home = tmp.path().join("home");
    let layout = Layout::new(&home);
    let vn = vn(TASK).unwrap();
    assert!(has_room(tmp.path(), 1).unwrap());

    // Source.
    let mirror = Mirror::open(&home, origin.to_str().unwrap()).unwrap();
    let src = layout.src_dir(&vn);
    let (ensured, _) = mirror
        .prepare_source("refs/heads/main", &hash, &src)
        .await
        .unwrap();
    assert_eq!(ensured, Ensured::Fetched);

    // Log proxies and environment.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<LogChunk>(8);
    let proxy = LogProxy::bind(&layout.run_dir(&vn), None).unwrap();
    let serving = proxy.serve(tx.clone());
    let pool = InstancePool::default();
    let instance = pool.acquire().unwrap();
    let platform_env = BTreeMap::new();
    let env = build_env(&StepEnvInput {
        project: "demo",
        git_ref: "refs/heads/main",
        task_id: TASK,
        instance_idx: instance.idx(),
        parallel: resolve_parallel(None),
        home: &home,
        logproxy: Some(proxy.paths()),
        platform_env: &platform_env,
    })
    .unwrap();

    let collector = tokio::spawn(async move {
        let mut chunks = Vec::new();
        while let Some(c) = rx.recv().await {
            chunks.push(c);
        }
        chunks
    });

    // The step.
    let spec = StepSpec::new(1, "./build.sh", &src, env);
    let report = run_step(&spec, &tx, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.outcome, StepOutcome::Exited(0));
    drop(instance);
    let sockets = proxy.paths().clone();
    serving.shutdown(Duration::from_secs(30)).await;
    drop(proxy);
    assert!(!sockets.sai.exists());
    drop(tx);
    let chunks = collector.await.unwrap();
    let text = |ch: u8| -> String {
        chunks
            .iter()
            .filter(|c| c.channel == ch)
            .map(|c| String::from_utf8_lossy(&c.bytes).into_owned())
            .collect()
    };
    assert_eq!(text(CH_STDOUT), "building demo at main\n");
    assert!(
        text(CH_NOTICE).contains("note via proxy\n"),
        "{}",
        text(CH_NOTICE)
    );
    assert_eq!(text(CH_TTY0), "board says hi\n");

    // Artifacts, rooted at src/.
    let found = scan(&src, &split_patterns("build/*.bin, missing/*.zip"));
    assert_eq!(found.artifacts.len(), 1);
    let art = &found.artifacts[0];
    assert_eq!(art.name, "build/out.bin");
    assert_eq!(art.size, 14);
    assert_eq!(art.sha256, hex::encode(Sha256::digest(b"artifact-bytes")));
    assert_eq!(found.notices.len(), 1, "{:?}", found.notices);
    let mut reader = ChunkReader::open(&art.path, 4).await.unwrap();
    let mut body = Vec::new();
    while let Some(c) = reader.next_chunk().await.unwrap() {
        body.extend_from_slice(&c);
    }
    assert_eq!(body, b"artifact-bytes");

    // Housekeeping: kept while active, removed once old and finished.
    let active: HashSet<String> = [vn.clone()].into();
    let later = SystemTime::now() + Duration::from_secs(2 * 86_400);
    let day = Duration::from_secs(86_400);
    assert!(
        remove_old_job_dirs(&layout.jobs_dir(), day, &active, later)
            .unwrap()
            .removed
            .is_empty()
    );
    let c = remove_old_job_dirs(&layout.jobs_dir(), day, &HashSet::new(), later).unwrap();
    assert_eq!(c.removed, [vn.as_str()]);
    assert!(!layout.job_dir(&vn).exists());
    assert!(
        mirror.has_commit(&hash).unwrap(),
        "the mirror outlives the job"
    );
}
