//! Whole tasks: offer in, events and result out, with a real origin repository.

use std::path::{Path, PathBuf};
use std::time::Duration;

mod offer_common;

use offer_common::offer_on;
use sai_builder::instances::InstancePool;
use sai_builder::jobdir::Layout;
use sai_builder::log::{CH_NOTICE, CH_STDOUT};
use sai_builder::step_runner::group_alive;
use sai_builder::task::{EXIT_TIMED_OUT, TaskContext, TaskEvent, run_task};
use sai_core::protocol::{TaskOffer, TaskResult};
use sai_testkit::git::GitRepo;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn origin(root: &Path) -> (PathBuf, String) {
    let origin = GitRepo::init(root.join("origin"));
    origin.write_executable(
        "build.sh",
        "#!/bin/sh\nmkdir -p build\necho \"build $SAI_INSTANCE_IDX\"\nprintf x > build/out.bin\n",
    );
    let hash = origin.commit("c");
    (origin.path().to_path_buf(), hash)
}

/// A task context with its home under `root`, any number of instances and
/// 2 parallel jobs.
fn context(root: &Path) -> TaskContext {
    TaskContext::new(Layout::new(root.join("home")), InstancePool::default(), 2)
}

/// A runner context in `root` and offer `n` of `steps` on a fresh origin
/// there.
fn context_and_offer(root: &Path, n: u32, steps: &[&str]) -> (TaskContext, TaskOffer) {
    let (origin, hash) = origin(root);
    (context(root), offer(n, &origin, &hash, steps))
}

/// Offer `n` of `steps`, uploading `build/*.bin` as artifacts.
fn offer(n: u32, origin: &Path, hash: &str, steps: &[&str]) -> TaskOffer {
    TaskOffer {
        artifacts: vec!["build/*.bin".into()],
        ..offer_on("linux-debian-12/x86_64/gcc", n, origin, hash, steps)
    }
}

async fn run(
    ctx: &TaskContext,
    offer: &TaskOffer,
    cancel: CancellationToken,
) -> (TaskResult, Vec<TaskEvent>) {
    let (tx, mut rx) = mpsc::channel(8);
    let collector = tokio::spawn(async move {
        let mut v = Vec::new();
        while let Some(e) = rx.recv().await {
            v.push(e);
        }
        v
    });
    let result = tokio::time::timeout(Duration::from_secs(120), run_task(ctx, offer, &tx, &cancel))
        .await
        .expect("task ends in time");
    drop(tx);
    (result, collector.await.unwrap())
}

fn text(events: &[TaskEvent], channel: u8) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            TaskEvent::Log(c) if c.channel == channel => {
                Some(String::from_utf8_lossy(&c.bytes).into_owned())
            }
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_successful_task_reports_steps_logs_and_artifacts_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let (ctx, o) = context_and_offer(
        tmp.path(),
        1,
        &["./build.sh", "test -f build/out.bin && echo ok"],
    );
    let (result, events) = run(&ctx, &o, CancellationToken::new()).await;
    assert_eq!(result, TaskResult::Success, "{}", text(&events, CH_NOTICE));
    assert_eq!(text(&events, CH_STDOUT), "build 0\nok\n");

    // Step 0's output lies between its start and finish events.
    let pos = |pred: &dyn Fn(&TaskEvent) -> bool| events.iter().position(pred).unwrap();
    let started0 = pos(&|e| matches!(e, TaskEvent::StepStarted { step: 0 }));
    let out0 = pos(&|e| matches!(e, TaskEvent::Log(c) if c.channel == CH_STDOUT));
    let finished0 = pos(&|e| {
        matches!(
            e,
            TaskEvent::StepFinished {
                step: 0,
                exit_code: 0,
                ..
            }
        )
    });
    let started1 = pos(&|e| matches!(e, TaskEvent::StepStarted { step: 1 }));
    assert!(started0 < out0 && out0 < finished0 && finished0 < started1);

    let arts: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            TaskEvent::Artifact(a) => Some(a),
            _ => None,
        })
        .collect();
    assert_eq!(arts.len(), 1);
    assert_eq!(arts[0].name, "build/out.bin");
    assert!(matches!(
        events.last(),
        Some(TaskEvent::Artifact(_)) | Some(TaskEvent::Log(_))
    ));
    assert_eq!(ctx.instances.in_use(), 0, "instance released");
    let vn = sai_builder::jobdir::vn(&o.task_id).unwrap();
    assert!(
        ctx.layout.src_dir(&vn).join("build/out.bin").exists(),
        "job dir kept"
    );
    // The instance keeps its log proxy sockets for its next task (they are
    // renamed into that task's run dir); dropping the builder's context
    // removes them.
    let run_dir = ctx.layout.run_dir(&vn);
    assert!(run_dir.join("logproxy.sai").exists(), "sockets kept");
    drop(ctx);
    assert!(!run_dir.exists(), "log proxy sockets removed");
}

#[tokio::test]
async fn test_reports_are_uploaded_after_a_failing_step_and_artifacts_are_not() {
    let tmp = tempfile::tempdir().unwrap();
    let (ctx, mut o) = context_and_offer(
        tmp.path(),
        4,
        &[
            "./build.sh",
            "mkdir -p build/Testing/x && echo '<testsuite/>' > build/Testing/x/junit.xml && exit 3",
        ],
    );
    o.test_reports = vec!["build/Testing/**/*.xml".into(), "nothing/*.xml".into()];
    let (result, events) = run(&ctx, &o, CancellationToken::new()).await;
    assert_eq!(
        result,
        TaskResult::Failed {
            exit_code: 3,
            step: 1
        }
    );
    let reports: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            TaskEvent::TestReport(a) => Some(a.name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(reports, ["build/Testing/x/junit.xml"]);
    assert!(
        !events.iter().any(|e| matches!(e, TaskEvent::Artifact(_))),
        "artifacts only after success"
    );
    let notices = text(&events, CH_NOTICE);
    assert!(
        notices.contains("\"nothing/*.xml\" matched no file"),
        "{notices}"
    );
}

#[tokio::test]
async fn a_failing_step_stops_the_task() {
    let tmp = tempfile::tempdir().unwrap();
    let (ctx, o) = context_and_offer(tmp.path(), 2, &["true", "exit 7", "echo never"]);
    let (result, events) = run(&ctx, &o, CancellationToken::new()).await;
    assert_eq!(
        result,
        TaskResult::Failed {
            exit_code: 7,
            step: 1
        }
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, TaskEvent::StepStarted { step: 2 }))
    );
    assert!(!events.iter().any(|e| matches!(e, TaskEvent::Artifact(_))));
    assert_eq!(text(&events, CH_STDOUT), "");
    // The log a person reads numbers steps from 1: the second step failed.
    let notices = text(&events, CH_NOTICE);
    assert!(notices.contains("Starting step 1: true"), "{notices}");
    assert!(notices.contains("Starting step 2: exit 7"), "{notices}");
    assert!(notices.contains("Step 2 FAILED, exit code 7"), "{notices}");
    assert!(!notices.contains("Starting step 0"), "{notices}");
    // The daemon's log line reads as a sentence, not a Rust debug form.
    assert_eq!(
        sai_builder::task::describe_result(&result),
        "failed: step 2 exited with 7"
    );
    assert!(notices.contains("Checked out "), "{notices}");
    assert!(
        !notices.contains("AlreadyPresent") && !notices.contains("Fetched,"),
        "{notices}"
    );
}

#[tokio::test]
async fn a_timed_out_step_fails_the_task_with_a_notice() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut ctx, o) = context_and_offer(tmp.path(), 3, &["sleep 300"]);
    ctx.step_timeout = Duration::from_secs(1);
    let (result, events) = run(&ctx, &o, CancellationToken::new()).await;
    assert_eq!(
        result,
        TaskResult::Failed {
            exit_code: EXIT_TIMED_OUT,
            step: 0
        }
    );
    assert!(text(&events, CH_NOTICE).contains("TIMED OUT"));
}

#[tokio::test]
async fn a_cancelled_task_leaves_no_process() {
    let tmp = tempfile::tempdir().unwrap();
    let (ctx, o) = context_and_offer(tmp.path(), 4, &["sleep 300 & sleep 300 & echo $$; wait"]);
    let cancel = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel(8);
    let c2 = cancel.clone();
    let watcher = tokio::spawn(async move {
        let mut pgid = None;
        let mut events = Vec::new();
        while let Some(e) = rx.recv().await {
            if let TaskEvent::Log(c) = &e
                && c.channel == CH_STDOUT
            {
                pgid = String::from_utf8_lossy(&c.bytes).trim().parse::<i32>().ok();
                c2.cancel();
            }
            events.push(e);
        }
        (pgid, events)
    });
    let result = tokio::time::timeout(Duration::from_secs(120), run_task(&ctx, &o, &tx, &cancel))
        .await
        .unwrap();
    drop(tx);
    let (pgid, events) = watcher.await.unwrap();
    assert_eq!(result, TaskResult::Cancelled);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, TaskEvent::StepFinished { exit_code: -1, .. }))
    );
    let pgid = pgid.expect("the step printed its pid");
    assert!(
        !group_alive(pgid),
        "process group {pgid} still has live members"
    );
}

#[tokio::test]
async fn fetch_failures_are_infra_errors_and_reruns_need_no_origin() {
    let tmp = tempfile::tempdir().unwrap();
    let (origin, hash) = origin(tmp.path());
    let ctx = context(tmp.path());

    let mut bad = offer(5, &origin, &hash, &["true"]);
    bad.fetch_url = tmp.path().join("nowhere").to_str().unwrap().into();
    let (result, events) = run(&ctx, &bad, CancellationToken::new()).await;
    assert!(
        matches!(result, TaskResult::InfraError { .. }),
        "{result:?}"
    );
    assert!(text(&events, CH_NOTICE).contains("Builder problem"));
    assert_eq!(ctx.instances.in_use(), 0);

    let (result, _) = run(
        &ctx,
        &offer(6, &origin, &hash, &["./build.sh"]),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(result, TaskResult::Success);
    std::fs::rename(&origin, tmp.path().join("gone")).unwrap();
    // Same commit again (another task, and the same task re-run): no origin needed.
    for n in [7, 6] {
        let (result, events) = run(
            &ctx,
            &offer(n, &origin, &hash, &["./build.sh"]),
            CancellationToken::new(),
        )
        .await;
        assert_eq!(result, TaskResult::Success, "{}", text(&events, CH_NOTICE));
        assert!(text(&events, CH_NOTICE).contains("the commit was already in the mirror"));
    }
}

#[tokio::test]
async fn no_free_instance_is_an_infra_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (origin, hash) = origin(tmp.path());
    let ctx = TaskContext::new(
        Layout::new(tmp.path().join("home")),
        InstancePool::new(1),
        2,
    );
    let _busy = ctx.instances.acquire().unwrap();
    let (result, _) = run(
        &ctx,
        &offer(8, &origin, &hash, &["true"]),
        CancellationToken::new(),
    )
    .await;
    assert!(
        matches!(result, TaskResult::InfraError { reason } if reason.contains("no free instance"))
    );
}
