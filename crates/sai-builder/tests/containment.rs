//! Steps cannot escape (issue 15): processes that called `setsid` and
//! double-forked daemons are gone after a cancel, after a timeout, after the
//! step exits, and after the builder itself is SIGKILLed. Checked by pid,
//! with real processes. On Linux the subreaper shim does this everywhere;
//! where a cgroup v2 is writable, a task cgroup also holds (and kills) the
//! task's processes. Each case runs with task isolation off and on (a pid
//! namespace per step, where `$$` is not the host pid: processes are
//! found on the host by the pid file they hold open).
#![cfg(target_os = "linux")]

mod daemon_common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use daemon_common::*;
use sai_builder::log::{CH_NOTICE, LogChunk};
use sai_builder::platform::containment::{CgroupParent, TaskLimits, own_cgroup};
use sai_builder::platform::isolation::Isolation;
use sai_builder::platform::process_gone;
use sai_builder::step_runner::{StepOutcome, StepReport, StepSpec, run_step};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A helper that writes its own pid to `$1` and sleeps holding that file
/// open (how the test finds its host pid).
const ESCAPE_SH: &str = "echo $$ > \"$1\"; exec sleep 1000 3<\"$1\"\n";

/// Step text starting two escapers: `setsid` in the background, and a
/// double-forked `setsid` daemon whose parent exits at once; then prints
/// `started` once both wrote their pids, and runs `rest`. One line: a
/// saifile's `build` has one step per line.
fn escapers(dir: &Path, rest: &str) -> String {
    let d = dir.display();
    std::fs::write(dir.join("escape.sh"), ESCAPE_SH).unwrap();
    format!(
        "setsid sh {d}/escape.sh {d}/setsid.pid </dev/null >/dev/null 2>&1 & \
         ( setsid sh {d}/escape.sh {d}/daemon.pid </dev/null >/dev/null 2>&1 & ); \
         while [ ! -s {d}/setsid.pid ] || [ ! -s {d}/daemon.pid ]; do sleep 0.05; done; \
         echo started; {rest}"
    )
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A step isolation with nothing covered: its own mount and pid namespace.
fn isolation(cwd: &Path) -> Option<Arc<Isolation>> {
    Some(Arc::new(Isolation::new(&[], &[], cwd).unwrap()))
}

/// A step of `script` in `dir`, isolated or not, with a short grace.
fn spec(n: u32, script: impl Into<String>, dir: &Path, isolated: bool) -> StepSpec {
    let mut spec = StepSpec::new(n, script.into(), dir, env());
    spec.kill_grace = Duration::from_millis(500);
    if isolated {
        spec.isolation = isolation(dir);
    }
    spec
}

/// Field `n` (1-based, after the command) of /proc/<pid>/stat.
fn stat_field(pid: i32, n: usize) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = stat.rsplit_once(')').unwrap().1;
    rest.split_whitespace().nth(n - 1).unwrap().parse().unwrap()
}

/// Both escapers' host pids, once written; asserts they really escaped
/// (each leads its own session).
async fn escaped_pids(dir: &Path) -> [i32; 2] {
    let pids = sai_testkit::wait_for("escaper pids", T, || async {
        Some([
            host_pid(&dir.join("setsid.pid"))?,
            host_pid(&dir.join("daemon.pid"))?,
        ])
    })
    .await
    .unwrap();
    for pid in pids {
        assert!(!process_gone(pid), "escaper {pid} should be running");
        // The 4th field after the command is the session id.
        assert_eq!(stat_field(pid, 4), pid, "{pid} leads its own session");
    }
    pids
}

fn env() -> BTreeMap<String, String> {
    [("PATH".to_string(), "/usr/bin:/bin".to_string())].into()
}

/// Run `spec` to its end, collecting notices.
async fn run(spec: StepSpec, cancel: CancellationToken) -> (StepReport, String) {
    let (tx, mut rx) = mpsc::channel::<LogChunk>(1024);
    let collect = tokio::spawn(async move {
        let mut notices = String::new();
        while let Some(c) = rx.recv().await {
            if c.channel == CH_NOTICE {
                notices.push_str(&String::from_utf8_lossy(&c.bytes));
                notices.push('\n');
            }
        }
        notices
    });
    let report = run_step(&spec, &tx, &cancel).await.unwrap();
    drop(tx);
    (report, collect.await.unwrap())
}

fn assert_all_gone(pids: &[i32], why: &str) {
    for &pid in pids {
        assert!(process_gone(pid), "{pid} survived {why}");
    }
}

#[tokio::test]
async fn setsid_and_double_forked_processes_die_when_the_step_is_cancelled() {
    cancel_case(false).await;
}

#[tokio::test]
async fn setsid_and_double_forked_processes_die_when_an_isolated_step_is_cancelled() {
    cancel_case(true).await;
}

async fn cancel_case(isolated: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec(1, escapers(tmp.path(), "sleep 1000"), tmp.path(), isolated);
    let cancel = CancellationToken::new();
    let step = tokio::spawn(run(spec, cancel.clone()));
    let pids = escaped_pids(tmp.path()).await;
    cancel.cancel();
    let (report, notices) = step.await.unwrap();
    assert_eq!(report.outcome, StepOutcome::Cancelled, "{notices}");
    // Gone by the time run_step returns, not some time later.
    assert_all_gone(&pids, "the cancel");
    assert!(process_gone(report.pgid));
}

#[tokio::test]
async fn setsid_and_double_forked_processes_die_when_the_step_times_out() {
    timeout_case(false).await;
}

#[tokio::test]
async fn setsid_and_double_forked_processes_die_when_an_isolated_step_times_out() {
    timeout_case(true).await;
}

async fn timeout_case(isolated: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = spec(2, escapers(tmp.path(), "sleep 1000"), tmp.path(), isolated);
    spec.timeout = Duration::from_secs(3);
    let step = tokio::spawn(run(spec, CancellationToken::new()));
    let pids = escaped_pids(tmp.path()).await;
    let (report, notices) = step.await.unwrap();
    assert_eq!(report.outcome, StepOutcome::TimedOut, "{notices}");
    assert_all_gone(&pids, "the timeout");
}

#[tokio::test]
async fn processes_a_finished_step_left_behind_are_ended_even_after_setsid() {
    left_behind_case(false).await;
}

#[tokio::test]
async fn processes_an_isolated_step_left_behind_are_ended_even_after_setsid() {
    left_behind_case(true).await;
}

/// The escapers' host pids are taken while the step waits for a go file.
async fn left_behind_case(isolated: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let go = tmp.path().join("go");
    let rest = format!(
        "while [ ! -e {} ]; do sleep 0.05; done; exit 0",
        go.display()
    );
    let spec = spec(3, escapers(tmp.path(), &rest), tmp.path(), isolated);
    let step = tokio::spawn(run(spec, CancellationToken::new()));
    let pids = escaped_pids(tmp.path()).await;
    std::fs::write(&go, "").unwrap();
    let (report, notices) = step.await.unwrap();
    assert_eq!(report.outcome, StepOutcome::Exited(0), "{notices}");
    assert!(notices.contains("left running"), "{notices}");
    assert_all_gone(&pids, "the end of the step");
}

#[tokio::test]
async fn a_step_keeps_its_exit_code_and_its_signal_through_the_shim() {
    exit_case(false).await;
}

#[tokio::test]
async fn an_isolated_step_keeps_its_exit_code_and_its_signal_through_the_shim() {
    exit_case(true).await;
}

async fn exit_case(isolated: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let (report, _) = run(
        spec(1, "exit 7", tmp.path(), isolated),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(report.outcome, StepOutcome::Exited(7));
    let (report, _) = run(
        spec(1, "kill -USR1 $$", tmp.path(), isolated),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(report.outcome, StepOutcome::Signalled(10));
}

/// In its pid namespace a step's `/proc` holds only its own processes:
/// the namespace's init (1) and the step's shell (2) and what it starts;
/// the test process itself is not there.
#[tokio::test]
async fn an_isolated_step_sees_only_its_own_processes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let script = format!(
        "sleep 1000 & echo \"$$ $(cat /proc/1/comm) $(ls /proc | grep -E '^[0-9]+$' | tr '\\n' ' ')\" > {}; kill $!",
        out.display()
    );
    let (report, notices) = run(spec(1, script, tmp.path(), true), CancellationToken::new()).await;
    assert_eq!(report.outcome, StepOutcome::Exited(0), "{notices}");
    let seen = std::fs::read_to_string(&out).unwrap();
    let mut words = seen.split_whitespace();
    assert_eq!(words.next(), Some("2"), "the shell is pid 2: {seen}");
    assert_eq!(words.next(), Some("sai-step-init"), "{seen}");
    let pids: Vec<i32> = words.map(|w| w.parse().unwrap()).collect();
    // init, shell, sleep, the command substitution's subshell, ls, grep, tr
    assert!(pids.contains(&1) && pids.contains(&2), "{seen}");
    assert!(pids.len() <= 8, "{seen}");
    assert!(pids.iter().all(|&p| p < 100), "{seen}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sigkilled_builder_takes_its_steps_escaped_processes_with_it() {
    sigkilled_builder_case(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sigkilled_builder_takes_its_isolated_steps_escaped_processes_with_it() {
    sigkilled_builder_case(true).await;
}

async fn sigkilled_builder_case(isolated: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let server = start_server(&tmp.path().join("data"));
    let conf = one_server_config_with(&server, tmp.path(), 1, |c| {
        c["isolate_tasks"] = serde_json::json!(isolated);
    });
    let mut builder = BuilderProc::start(&conf);
    let pids_dir = tmp.path().join("pids");
    std::fs::create_dir(&pids_dir).unwrap();
    let step = escapers(
        &pids_dir,
        &format!(
            "echo $$ > {d}/shell.pid; exec 3<{d}/shell.pid; sleep 1000",
            d = pids_dir.display()
        ),
    );
    let (repo, hash) = make_repo(tmp.path());
    let sf = linux_saifile(&step);
    push(&server, "proj", &repo, &hash, &sf).await;
    let pids = escaped_pids(&pids_dir).await;
    let shell = sai_testkit::wait_for("shell pid", T, || async {
        host_pid(&pids_dir.join("shell.pid"))
    })
    .await
    .unwrap();
    builder.guard.kill();
    let all = [pids[0], pids[1], shell];
    let gone = sai_testkit::wait_for("the step's processes to go", T, || async {
        all.iter().all(|&p| process_gone(p)).then_some(())
    })
    .await;
    if let Err(e) = gone {
        panic!("{e}: {all:?}\nbuilder log:\n{}", builder.log());
    }
}

/// The cgroup path, where this machine lets us create cgroups: the step
/// joins the task cgroup; a cancel ends the escapers; dropping the task
/// cgroup kills a process that joined it from outside the step's tree
/// (`cgroup.kill`) and removes the directory.
#[tokio::test]
async fn a_task_cgroup_holds_the_steps_processes_and_is_killed_and_removed() {
    let Some(own) = own_cgroup() else {
        panic!("no cgroup v2 mount: the containment tests need one (mount cgroup2)");
    };
    let parent = CgroupParent::at(own.clone(), TaskLimits::default()).unwrap_or_else(|e| {
        panic!(
            "cannot create cgroups below {} ({e}): run the tests as root or with a delegated cgroup",
            own.display()
        )
    });
    let name = format!("test-{}", std::process::id());
    let cg = Arc::new(parent.create_task(&name).unwrap());
    let dir = cg.dir().to_path_buf();
    assert!(dir.join("cgroup.procs").exists());

    let tmp = tempfile::tempdir().unwrap();
    let mut spec = StepSpec::new(1, escapers(tmp.path(), "sleep 1000"), tmp.path(), env());
    spec.kill_grace = Duration::from_millis(300);
    spec.cgroup = Some(cg.clone());
    let cancel = CancellationToken::new();
    let step = tokio::spawn(run(spec, cancel.clone()));
    let pids = escaped_pids(tmp.path()).await;
    let members = cg.pids();
    for pid in pids {
        assert!(members.contains(&pid), "{pid} not in {members:?}");
        let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        assert!(own.contains(&format!("sai-task-{name}")), "{own}");
    }
    cancel.cancel();
    let (report, _) = step.await.unwrap();
    assert_eq!(report.outcome, StepOutcome::Cancelled);
    assert_all_gone(&pids, "the cancel");

    // A process outside the shim's tree, put into the cgroup directly.
    let mut outsider = std::process::Command::new("sleep")
        .arg("1000")
        .spawn()
        .unwrap();
    let opid = outsider.id() as i32;
    std::fs::write(dir.join("cgroup.procs"), opid.to_string()).unwrap();
    assert!(cg.pids().contains(&opid));
    drop(Arc::try_unwrap(cg).expect("the step released the cgroup"));
    let status = outsider.wait().unwrap();
    assert!(!status.success(), "killed, not exited: {status:?}");
    assert!(!dir.exists(), "{} removed", dir.display());
}

/// Limits need the memory/pids/cpu controllers in the parent; where they
/// are not offered, asking for limits is a clear error rather than silently
/// unlimited tasks.
#[test]
fn task_limits_are_applied_or_refused_by_name() {
    let own = own_cgroup().expect("a cgroup v2 mount");
    let limits = TaskLimits {
        memory_max: Some(256 << 20),
        pids_max: Some(100),
        cpu_weight: Some(50),
    };
    let offered = std::fs::read_to_string(own.join("cgroup.controllers")).unwrap_or_default();
    let has = |c: &str| offered.split_whitespace().any(|o| o == c);
    if has("memory") && has("pids") && has("cpu") {
        let parent = CgroupParent::at(own, limits).unwrap();
        let cg = parent
            .create_task(&format!("limits-{}", std::process::id()))
            .unwrap();
        let read = |f: &str| std::fs::read_to_string(cg.dir().join(f)).unwrap();
        assert_eq!(read("memory.max").trim(), (256u64 << 20).to_string());
        assert_eq!(read("pids.max").trim(), "100");
        assert_eq!(read("cpu.weight").trim(), "50");
    } else {
        let err = CgroupParent::at(own.clone(), limits)
            .unwrap_err()
            .to_string();
        assert!(err.contains("controller"), "{err}");
        assert!(err.contains(&own.display().to_string()), "{err}");
    }
}

/// Without a pid namespace ([`Isolation::with_shared_proc`], where no fresh
/// `/proc` can be mounted) the step still runs in its mount namespace, and
/// sees the host's pids.
#[tokio::test]
async fn an_isolated_step_with_a_shared_proc_runs_in_the_hosts_pid_namespace() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut spec = spec(
        1,
        format!("echo $$ > {}; exit 3", out.display()),
        tmp.path(),
        false,
    );
    let iso = Isolation::new(&[], &[], tmp.path())
        .unwrap()
        .with_shared_proc();
    spec.isolation = Some(Arc::new(iso));
    let (report, notices) = run(spec, CancellationToken::new()).await;
    assert_eq!(report.outcome, StepOutcome::Exited(3), "{notices}");
    let pid = read_pid(&out).unwrap();
    assert_eq!(pid, report.pgid, "the shell's host pid");
}
