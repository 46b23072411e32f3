//! Steps run as real child processes.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use sai_builder::env::{StepEnvInput, build_env};
use sai_builder::instances::InstancePool;
use sai_builder::log::{CH_NOTICE, CH_STDERR, CH_STDOUT, LogChunk};
use sai_builder::step_runner::{RunAs, StepOutcome, StepReport, StepSpec, group_alive, run_step};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const TASK: &str = "ABCD00000000000000000000000000001111111111111111111111111111WXYZ";

fn env_for(home: &Path, idx: u32) -> BTreeMap<String, String> {
    let platform_env: BTreeMap<String, String> = [("CC".to_string(), "clang".to_string())].into();
    build_env(&StepEnvInput {
        project: "proj",
        git_ref: "refs/heads/main",
        task_id: TASK,
        instance_idx: idx,
        parallel: 3,
        home,
        logproxy: None,
        platform_env: &platform_env,
    })
    .unwrap()
}

/// Output of one step, per channel.
#[derive(Debug, Default)]
struct Logs {
    chunks: Vec<LogChunk>,
}

impl Logs {
    fn channel(&self, ch: u8) -> String {
        let bytes: Vec<u8> = self
            .chunks
            .iter()
            .filter(|c| c.channel == ch)
            .flat_map(|c| c.bytes.to_vec())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Step `n` of `script` in `dir`, with instance 0's environment there.
fn step_in(dir: &Path, n: u32, script: impl Into<String>) -> StepSpec {
    StepSpec::new(n, script, dir, env_for(dir, 0))
}

/// Run step `n` of `script` to its end in a new temporary folder.
async fn run_script(n: u32, script: &str) -> (StepReport, Logs) {
    let tmp = tempfile::tempdir().unwrap();
    run(
        step_in(tmp.path(), n, script),
        CancellationToken::new(),
        None,
    )
    .await
}

/// Run `spec` while collecting its log; `on_chunk` may cancel.
async fn run(
    spec: StepSpec,
    cancel: CancellationToken,
    cancel_when: Option<&'static str>,
) -> (StepReport, Logs) {
    let (tx, mut rx) = mpsc::channel::<LogChunk>(4);
    let watcher_cancel = cancel.clone();
    let collector = tokio::spawn(async move {
        let mut logs = Logs::default();
        let mut seen = String::new();
        while let Some(c) = rx.recv().await {
            if c.channel == CH_STDOUT {
                seen.push_str(&String::from_utf8_lossy(&c.bytes));
                if let Some(marker) = cancel_when
                    && seen.contains(marker)
                {
                    watcher_cancel.cancel();
                }
            }
            logs.chunks.push(c);
        }
        logs
    });
    let report = tokio::time::timeout(Duration::from_secs(120), run_step(&spec, &tx, &cancel))
        .await
        .expect("step ends in time")
        .expect("step runs");
    drop(tx);
    (report, collector.await.unwrap())
}

fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .next();
            !matches!(state, Some("Z") | Some("X"))
        }
        Err(_) => false,
    }
}

#[tokio::test]
async fn streams_stdout_stderr_and_notices() {
    let (report, logs) = run_script(2, "echo out; echo err >&2; exit 3").await;
    assert_eq!(report.outcome, StepOutcome::Exited(3));
    assert_eq!(logs.channel(CH_STDOUT), "out\n");
    assert_eq!(logs.channel(CH_STDERR), "err\n");
    let notices = logs.channel(CH_NOTICE);
    assert!(notices.starts_with(">saib> Starting step 2"), "{notices}");
    assert!(notices.contains("Step 2 FAILED, exit code 3"), "{notices}");
    assert_eq!(
        logs.chunks.last().unwrap().channel,
        CH_NOTICE,
        "end notice comes last"
    );
    assert!(!group_alive(report.pgid));
}

#[tokio::test]
async fn set_e_stops_at_the_first_failure() {
    let (report, logs) = run_script(1, "false\necho not-reached").await;
    assert_eq!(report.outcome, StepOutcome::Exited(1));
    assert_eq!(logs.channel(CH_STDOUT), "");
}

#[tokio::test]
async fn environment_cwd_and_stdin() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let home = tmp.path().join("home");
    let script = r#"pwd
echo "proj=$SAI_PROJECT ref=$SAI_REMOTE_REF vn=$SAI_VN idx=$SAI_INSTANCE_IDX par=$SAI_PARALLEL cc=$CC home=$HOME"
echo "user=${USER-unset} cargo=${CARGO_PKG_NAME-unset}"
if read -r line; then echo "stdin=$line"; else echo stdin-closed; fi
echo pgid=$(ps -o pgid= $$ 2>/dev/null | tr -d ' ') pid=$$"#;
    let spec = StepSpec::new(1, script, &src, env_for(&home, 5));
    let (report, logs) = run(spec, CancellationToken::new(), None).await;
    assert_eq!(report.outcome, StepOutcome::Exited(0));
    let out = logs.channel(CH_STDOUT);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        std::fs::canonicalize(&src).unwrap().to_str().unwrap()
    );
    assert_eq!(
        lines[1],
        format!(
            "proj=proj ref=main vn=ABCDWXYZ idx=5 par=3 cc=clang home={}",
            home.display()
        )
    );
    // Nothing leaks from the builder's own environment.
    assert_eq!(lines[2], "user=unset cargo=unset");
    assert_eq!(lines[3], "stdin-closed");
    if let Some(pg) = lines.get(4).filter(|l| !l.starts_with("pgid= ")) {
        // `ps` may be missing; when present the shell leads its own group.
        let (pgid, pid) = pg.split_once(' ').unwrap();
        assert_eq!(
            pgid.trim_start_matches("pgid="),
            pid.trim_start_matches("pid=")
        );
    }
}

#[tokio::test]
async fn a_step_past_its_timeout_fails_with_a_notice() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = step_in(tmp.path(), 4, "echo $$; sleep 300");
    spec.timeout = Duration::from_secs(1);
    let (report, logs) = run(spec, CancellationToken::new(), None).await;
    assert_eq!(report.outcome, StepOutcome::TimedOut);
    assert!(!report.outcome.success());
    let notices = logs.channel(CH_NOTICE);
    assert!(notices.contains("Step 4 TIMED OUT"), "{notices}");
    assert!(notices.contains("Step 4 FAILED: timed out"), "{notices}");
    assert!(!group_alive(report.pgid));
}

#[tokio::test]
async fn cancel_leaves_no_process_of_the_group_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let script = "sleep 300 & echo $!; sleep 300 & echo $!; echo started; wait";
    let spec = step_in(tmp.path(), 1, script);
    let (report, logs) = run(spec, CancellationToken::new(), Some("started")).await;
    assert_eq!(report.outcome, StepOutcome::Cancelled);
    assert!(logs.channel(CH_NOTICE).contains("Step 1 cancelled"));
    let out = logs.channel(CH_STDOUT);
    let pids: Vec<i32> = out.lines().filter_map(|l| l.parse().ok()).collect();
    assert_eq!(pids.len(), 2, "{out}");
    assert!(
        !group_alive(report.pgid),
        "process group {} has live members",
        report.pgid
    );
    for pid in pids {
        assert!(!pid_alive(pid), "background sleep {pid} survived");
    }
}

#[tokio::test]
async fn processes_ignoring_sigterm_get_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let script = "trap '' TERM; sleep 300 & echo $!; echo started; wait";
    let mut spec = step_in(tmp.path(), 1, script);
    spec.kill_grace = Duration::from_millis(200);
    let (report, logs) = run(spec, CancellationToken::new(), Some("started")).await;
    assert_eq!(report.outcome, StepOutcome::Cancelled);
    let pid: i32 = logs
        .channel(CH_STDOUT)
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(!pid_alive(pid));
    assert!(!group_alive(report.pgid));
}

#[tokio::test]
async fn already_cancelled_step_does_not_start() {
    let tmp = tempfile::tempdir().unwrap();
    let marker = tmp.path().join("ran");
    let spec = step_in(tmp.path(), 1, "touch ran");
    let cancel = CancellationToken::new();
    cancel.cancel();
    let (report, _) = run(spec, cancel, None).await;
    assert_eq!(report.outcome, StepOutcome::Cancelled);
    assert!(!marker.exists());
}

#[tokio::test]
async fn background_leftovers_are_killed_when_the_step_exits() {
    let (report, logs) = run_script(1, "sleep 300 & echo $!").await;
    assert_eq!(report.outcome, StepOutcome::Exited(0));
    let pid: i32 = logs.channel(CH_STDOUT).trim().parse().unwrap();
    assert!(!pid_alive(pid));
    assert!(logs.channel(CH_NOTICE).contains("left running"));
}

#[tokio::test]
async fn log_limit_stops_a_spewing_step() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = step_in(tmp.path(), 1, "while :; do echo spam spam spam; done");
    spec.log_limit = 10_000;
    let (report, logs) = run(spec, CancellationToken::new(), None).await;
    assert_eq!(report.outcome, StepOutcome::LogLimitExceeded);
    assert!(report.log_bytes > 10_000);
    let forwarded = logs.channel(CH_STDOUT).len() + logs.channel(CH_STDERR).len();
    assert_eq!(
        forwarded, 10_000,
        "exactly the bytes up to the limit are forwarded"
    );
    assert!(
        logs.channel(CH_NOTICE)
            .contains("exceeded the log limit of 10000 bytes")
    );
    assert!(!group_alive(report.pgid));
}

#[tokio::test]
async fn instance_indexes_are_distinct_among_concurrent_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let pool = InstancePool::default();
    let n = 4;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(n));
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (pool, home, barrier) = (pool.clone(), tmp.path().to_path_buf(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let guard = pool.acquire().unwrap();
            // Every step holds its index until all have started.
            barrier.wait().await;
            let spec = StepSpec::new(
                1,
                "echo $SAI_INSTANCE_IDX",
                &home,
                env_for(&home, guard.idx()),
            );
            let (report, logs) = run(spec, CancellationToken::new(), None).await;
            assert!(report.outcome.success());
            let idx: u32 = logs.channel(CH_STDOUT).trim().parse().unwrap();
            barrier.wait().await;
            drop(guard);
            idx
        }));
    }
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap());
    }
    seen.sort_unstable();
    assert_eq!(seen, [0, 1, 2, 3]);
    assert_eq!(pool.in_use(), 0);
    assert_eq!(pool.acquire().unwrap().idx(), 0);
}

#[tokio::test]
async fn runs_as_the_configured_user_when_root() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: not root");
        return;
    }
    let Ok(nobody) = RunAs::lookup("nobody") else {
        eprintln!("skipped: no user nobody");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), "x").unwrap();
    sai_builder::jobdir::chown_tree(tmp.path(), &nobody).unwrap();
    let mut spec = StepSpec::new(
        1,
        "id -u; id -g; id -G; echo y > f; touch new",
        &src,
        env_for(tmp.path(), 0),
    );
    spec.run_as = Some(nobody.clone());
    let (report, logs) = run(spec, CancellationToken::new(), None).await;
    assert_eq!(
        report.outcome,
        StepOutcome::Exited(0),
        "{}",
        logs.channel(CH_STDERR)
    );
    let out = logs.channel(CH_STDOUT);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], [nobody.uid.to_string(), nobody.gid.to_string()]);
    // Exactly the user's groups: root's supplementary groups are gone.
    let mut got: Vec<u32> = lines[2]
        .split_whitespace()
        .map(|g| g.parse().unwrap())
        .collect();
    let mut want: Vec<u32> = nobody.groups.iter().map(|g| g.as_raw()).collect();
    got.sort_unstable();
    got.dedup();
    want.sort_unstable();
    want.dedup();
    assert_eq!(got, want);
    assert!(logs.channel(CH_NOTICE).contains("as nobody"));
    // The step could not have done this as nobody without root.
    let mut spec = StepSpec::new(
        2,
        "touch /root/sai-should-not-exist",
        &src,
        env_for(tmp.path(), 0),
    );
    spec.run_as = Some(nobody);
    let (report, _) = run(spec, CancellationToken::new(), None).await;
    assert!(!report.outcome.success());
    assert!(!Path::new("/root/sai-should-not-exist").exists());
}

#[tokio::test]
async fn dropping_a_running_step_kills_its_group() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = step_in(tmp.path(), 1, "sleep 300 & echo $!; wait");
    let (tx, mut rx) = mpsc::channel::<LogChunk>(16);
    let task = tokio::spawn(async move {
        let cancel = CancellationToken::new();
        run_step(&spec, &tx, &cancel).await
    });
    let pid: i32 = loop {
        let c = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .expect("output in time")
            .expect("step running");
        if c.channel == CH_STDOUT {
            break String::from_utf8_lossy(&c.bytes).trim().parse().unwrap();
        }
    };
    assert!(pid_alive(pid));
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while pid_alive(pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "sleep {pid} survived the dropped step"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
