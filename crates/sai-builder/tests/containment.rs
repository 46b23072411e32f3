//! Steps cannot escape (issue 15): processes that called `setsid` and
//! double-forked daemons are gone after a cancel, after a timeout, after the
//! step exits, and after the builder itself is SIGKILLed. Checked by pid,
//! with real processes. On Linux the subreaper shim does this everywhere;
//! where a cgroup v2 is writable, a task cgroup also holds (and kills) the
//! task's processes. Per-task limits (memory, pids, CPU weight) on hosts
//! without a delegated cgroup v2 with those controllers go through cgroup
//! v1 (the `v1_*` tests and the builder tests with `task_limits`: they need
//! v1 controllers mounted, as on CI's hybrid hosts, and root; without them
//! they fail saying so rather than pass). Each case runs with task
//! isolation off and on (a pid namespace per step, where `$$` is not the
//! host pid: processes are found on the host by the pid file they hold
//! open).
#![cfg(target_os = "linux")]

mod daemon_common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use daemon_common::*;
use sai_builder::log::{CH_NOTICE, LogChunk};
use sai_builder::platform::cgroup::{CgroupParent, TaskCgroup, TaskLimits, Version, own_cgroup};
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

/// A builder's step: the escapers, then the step's shell writes its pid
/// to `shell.pid` (held open) and sleeps; the pid files go to the new
/// folder `<tmp>/pids`, which is returned with the step text.
fn escapers_and_shell(tmp: &Path) -> (PathBuf, String) {
    let pids_dir = tmp.join("pids");
    std::fs::create_dir(&pids_dir).unwrap();
    let p = pids_dir.display();
    let step = escapers(
        &pids_dir,
        &format!("echo $$ > {p}/shell.pid; exec 3<{p}/shell.pid; sleep 1000"),
    );
    (pids_dir, step)
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

/// Start `spec` (whose script starts the escapers in `dir`) and wait for
/// the escapers' host pids.
async fn spawn_escaping(
    spec: StepSpec,
    cancel: CancellationToken,
    dir: &Path,
) -> (tokio::task::JoinHandle<(StepReport, String)>, [i32; 2]) {
    let step = tokio::spawn(run(spec, cancel));
    (step, escaped_pids(dir).await)
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

/// With task isolation off, then on.
#[tokio::test]
async fn setsid_and_double_forked_processes_die_when_the_step_is_cancelled() {
    for isolated in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let spec = spec(1, escapers(tmp.path(), "sleep 1000"), tmp.path(), isolated);
        let cancel = CancellationToken::new();
        let (step, pids) = spawn_escaping(spec, cancel.clone(), tmp.path()).await;
        cancel.cancel();
        let (report, notices) = step.await.unwrap();
        assert_eq!(report.outcome, StepOutcome::Cancelled, "{notices}");
        // Gone by the time run_step returns, not some time later.
        assert_all_gone(&pids, "the cancel");
        assert!(process_gone(report.pgid));
    }
}

/// With task isolation off, then on.
#[tokio::test]
async fn setsid_and_double_forked_processes_die_when_the_step_times_out() {
    for isolated in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let mut spec = spec(2, escapers(tmp.path(), "sleep 1000"), tmp.path(), isolated);
        spec.timeout = Duration::from_secs(3);
        let (step, pids) = spawn_escaping(spec, CancellationToken::new(), tmp.path()).await;
        let (report, notices) = step.await.unwrap();
        assert_eq!(report.outcome, StepOutcome::TimedOut, "{notices}");
        assert_all_gone(&pids, "the timeout");
    }
}

/// The escapers' host pids are taken while the step waits for a go file.
/// With task isolation off, then on.
#[tokio::test]
async fn processes_a_finished_step_left_behind_are_ended_even_after_setsid() {
    for isolated in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let go = tmp.path().join("go");
        let rest = format!(
            "while [ ! -e {} ]; do sleep 0.05; done; exit 0",
            go.display()
        );
        let spec = spec(3, escapers(tmp.path(), &rest), tmp.path(), isolated);
        let (step, pids) = spawn_escaping(spec, CancellationToken::new(), tmp.path()).await;
        std::fs::write(&go, "").unwrap();
        let (report, notices) = step.await.unwrap();
        assert_eq!(report.outcome, StepOutcome::Exited(0), "{notices}");
        assert!(notices.contains("left running"), "{notices}");
        assert_all_gone(&pids, "the end of the step");
    }
}

/// With task isolation off, then on.
#[tokio::test]
async fn a_step_keeps_its_exit_code_and_its_signal_through_the_shim() {
    for isolated in [false, true] {
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
    // The shell is the namespace's second process: pid 2 natively, 3
    // under qemu-user (seen in CI's emulated runs: pid 2 is gone by then).
    let shell: i32 = words.next().unwrap().parse().unwrap();
    assert!(
        (2..=3).contains(&shell),
        "the shell's pid in its namespace: {seen}"
    );
    assert_eq!(words.next(), Some("sai-step-init"), "{seen}");
    let pids: Vec<i32> = words.map(|w| w.parse().unwrap()).collect();
    // init, shell, sleep, the command substitution's subshell, ls, grep, tr
    assert!(pids.contains(&1) && pids.contains(&shell), "{seen}");
    assert!(pids.len() <= 8, "{seen}");
    assert!(pids.iter().all(|&p| p < 100), "{seen}");
}

/// With task isolation off, then on.
#[tokio::test(flavor = "multi_thread")]
async fn a_sigkilled_builder_takes_its_steps_escaped_processes_with_it() {
    for isolated in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let (server, mut builder) = start_server_and_builder_with(tmp.path(), 1, |c| {
            c["isolate_tasks"] = serde_json::json!(isolated);
        });
        let (pids_dir, step) = escapers_and_shell(tmp.path());
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
            panic!(
                "{e}: {all:?} (isolated: {isolated})\nbuilder log:\n{}",
                builder.log()
            );
        }
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
    let dir = cg.dirs()[0].clone();
    assert!(dir.join("cgroup.procs").exists());

    let tmp = tempfile::tempdir().unwrap();
    let mut spec = StepSpec::new(1, escapers(tmp.path(), "sleep 1000"), tmp.path(), env());
    spec.kill_grace = Duration::from_millis(300);
    spec.cgroup = Some(cg.clone());
    let cancel = CancellationToken::new();
    let (step, pids) = spawn_escaping(spec, cancel.clone(), tmp.path()).await;
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
    dropping_kills_an_outsider(cg, &dir);
    assert!(!dir.exists(), "{} removed", dir.display());
}

/// Put a process from outside the step's tree into `cg` through `dir`'s
/// `cgroup.procs`, then drop the task cgroup (which the step released):
/// the process is killed (`cgroup.kill`, or each of its pids on v1).
fn dropping_kills_an_outsider(cg: Arc<TaskCgroup>, dir: &Path) {
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
}

/// Whether a cgroup v1 hierarchy with `controller` is mounted, read from
/// /proc/self/mountinfo here rather than by the code under test.
fn v1_mounted(controller: &str) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(" - ")?.1.strip_prefix("cgroup "))
        .any(|rest| {
            rest.split_whitespace()
                .nth(1)
                .is_some_and(|o| o.split(',').any(|c| c == controller))
        })
}

/// Limits need the memory/pids/cpu controllers: in the builder's own cgroup
/// v2, or else in cgroup v1 hierarchies (hybrid hosts such as CI's). Where
/// they are offered the limits are applied; only where neither has them is
/// asking for limits refused, with a clear error rather than silently
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
    let on_v2 = has("memory") && has("pids") && has("cpu");
    let on_v1 = v1_mounted("memory") && v1_mounted("pids") && v1_mounted("cpu");
    let owner = format!("limits-{}", std::process::id());
    if on_v2 || on_v1 {
        let parent = CgroupParent::for_limits(limits, &owner).unwrap();
        let cg = parent
            .create_task(&format!("limits-{}", std::process::id()))
            .unwrap();
        let read = |f: &str| {
            let dir = cg
                .dirs()
                .iter()
                .find(|d| d.join(f).exists())
                .unwrap_or_else(|| panic!("no {f} in {:?}", cg.dirs()));
            std::fs::read_to_string(dir.join(f)).unwrap()
        };
        assert_eq!(read("pids.max").trim(), "100");
        if on_v2 {
            assert_eq!(parent.version(), Version::V2);
            assert_eq!(read("memory.max").trim(), (256u64 << 20).to_string());
            assert_eq!(read("cpu.weight").trim(), "50");
        } else {
            assert_eq!(parent.version(), Version::V1);
            assert_eq!(
                read("memory.limit_in_bytes").trim(),
                (256u64 << 20).to_string()
            );
            // Weight 50 is half the default: 512 of 1024 shares.
            assert_eq!(read("cpu.shares").trim(), "512");
        }
        let dirs = cg.dirs().to_vec();
        drop(cg);
        for d in dirs {
            assert!(!d.exists(), "{} removed", d.display());
        }
    } else {
        let err = CgroupParent::for_limits(limits, &owner)
            .unwrap_err()
            .to_string();
        assert!(err.contains("controller"), "{err}");
        assert!(err.contains(&own.display().to_string()), "{err}");
        assert!(err.contains("cgroup v1"), "{err}");
    }
}

// cgroup v1 (hybrid hosts such as CI's: v1 controllers, an empty cgroup2).

/// The directory of cgroup `path` in the v1 hierarchy holding
/// `controller`, found from /proc/self/mountinfo here (not by the code
/// under test). Panics where no such hierarchy is mounted: these tests are
/// for hosts with cgroup v1 controllers, as CI's are.
fn v1_dir(controller: &str, path: &str) -> std::path::PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for line in info.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let post: Vec<&str> = post.split_whitespace().collect();
        if post[0] != "cgroup" || !post[2].split(',').any(|c| c == controller) {
            continue;
        }
        let pre: Vec<&str> = pre.split_whitespace().collect();
        let rel = Path::new(path).strip_prefix(pre[3]).unwrap();
        return Path::new(pre[4]).join(rel);
    }
    panic!(
        "no cgroup v1 hierarchy with {controller} is mounted: the v1 task limit tests need a \
         host with cgroup v1 controllers (hybrid or v1 layout, as CI's)"
    );
}

/// Process `pid`'s cgroup directory in the v1 hierarchy of `controller`.
fn v1_cgroup_of(pid: i32, controller: &str) -> std::path::PathBuf {
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = own
        .lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, list, path) = (parts.next()?, parts.next()?, parts.next()?);
            list.split(',').any(|c| c == controller).then_some(path)
        })
        .unwrap_or_else(|| panic!("{pid} is in no {controller} hierarchy:\n{own}"));
    v1_dir(controller, path)
}

const V1_LIMITS: TaskLimits = TaskLimits {
    memory_max: Some(256 << 20),
    pids_max: Some(64),
    cpu_weight: Some(50),
};

fn v1_parent(limits: TaskLimits, test: &str) -> CgroupParent {
    let parent = CgroupParent::v1(limits, &format!("{test}-{}", std::process::id()))
        .unwrap_or_else(|e| panic!("cgroup v1 for task limits ({e}): run the tests as root"));
    assert_eq!(parent.version(), Version::V1);
    parent
}

fn read_trimmed(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

/// With task limits on a v1 host: every process of the step, escapers
/// included, is in the task cgroup in the memory, pids and cpu hierarchies;
/// the limit files hold the configured values (weight 50 = 512 shares); a
/// cancel ends them all; dropping the task cgroup kills a process put into
/// it from outside and removes every directory.
#[tokio::test]
async fn v1_task_cgroups_hold_every_process_of_the_step_with_the_limits() {
    let parent = v1_parent(V1_LIMITS, "hold");
    let cg = Arc::new(parent.create_task("hold").unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let step = escapers(
        tmp.path(),
        &format!("echo $$ > {}/shell.pid; sleep 1000", tmp.path().display()),
    );
    let mut spec = StepSpec::new(1, step, tmp.path(), env());
    spec.kill_grace = Duration::from_millis(300);
    spec.cgroup = Some(cg.clone());
    let cancel = CancellationToken::new();
    let (step, escaped) = spawn_escaping(spec, cancel.clone(), tmp.path()).await;
    let shell = sai_testkit::wait_for("shell pid", T, || async {
        read_pid(&tmp.path().join("shell.pid"))
    })
    .await
    .unwrap();
    let all = [escaped[0], escaped[1], shell];
    let mut dirs = Vec::new();
    for controller in ["memory", "pids", "cpu"] {
        let dir = v1_cgroup_of(shell, controller);
        assert!(dir.ends_with("sai-task-hold"), "{}", dir.display());
        assert!(
            cg.dirs().contains(&dir),
            "{} not in {:?}",
            dir.display(),
            cg.dirs()
        );
        for pid in all {
            assert_eq!(v1_cgroup_of(pid, controller), dir, "{pid} in {controller}");
        }
        dirs.push(dir);
    }
    assert_eq!(
        read_trimmed(&dirs[0].join("memory.limit_in_bytes")),
        (256u64 << 20).to_string()
    );
    assert_eq!(read_trimmed(&dirs[1].join("pids.max")), "64");
    assert_eq!(read_trimmed(&dirs[2].join("cpu.shares")), "512");
    let members = cg.pids();
    for pid in all {
        assert!(members.contains(&pid), "{pid} not in {members:?}");
    }

    cancel.cancel();
    let (report, notices) = step.await.unwrap();
    assert_eq!(report.outcome, StepOutcome::Cancelled, "{notices}");
    assert_all_gone(&all, "the cancel");

    // A process outside the shim's tree, put into the pids cgroup only.
    dropping_kills_an_outsider(cg, &dirs[1]);
    let left = still_there(&dirs);
    assert!(left.is_empty(), "not removed: {left:?}");
}

/// Those of `dirs` that still exist.
fn still_there(dirs: &[std::path::PathBuf]) -> Vec<&std::path::PathBuf> {
    dirs.iter().filter(|d| d.exists()).collect()
}

/// `pids_max` on a v1 host: a step starting more processes than allowed
/// sees its forks fail (EAGAIN: the shell reports it cannot fork), the
/// kernel counts the refusals, and the step's processes never exceed it.
#[tokio::test]
async fn v1_pids_max_makes_the_steps_forks_fail() {
    let limits = TaskLimits {
        pids_max: Some(12),
        ..TaskLimits::default()
    };
    let parent = v1_parent(limits, "pids");
    let cg = Arc::new(parent.create_task("pids").unwrap());
    let pids_dir = cg
        .dirs()
        .iter()
        .find(|d| d.join("pids.max").exists())
        .unwrap()
        .clone();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().display();
    let step = format!(
        "sh -c 'i=0; while [ $i -lt 40 ]; do sleep 30 & i=$((i+1)); done; wait' \
         > {d}/fork.log 2>&1 || echo \"exit $?\" >> {d}/fork.log"
    );
    let mut spec = StepSpec::new(1, step, tmp.path(), env());
    spec.kill_grace = Duration::from_millis(300);
    spec.cgroup = Some(cg.clone());
    let (report, notices) = run(spec, CancellationToken::new()).await;
    let log = std::fs::read_to_string(tmp.path().join("fork.log")).unwrap();
    assert!(
        log.to_lowercase().contains("fork"),
        "the step should see its forks fail:\n{log}\n{notices}"
    );
    assert_eq!(report.outcome, StepOutcome::Exited(0), "{notices}");
    let events = read_trimmed(&pids_dir.join("pids.events"));
    let refused: u64 = events
        .strip_prefix("max ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("pids.events: {events}"));
    assert!(refused > 0, "pids.events: {events}");
    assert!(cg.pids().is_empty(), "{:?}", cg.pids());
}

/// `memory_max` on a v1 host: a step allocating past it is OOM-killed and
/// fails with a notice naming the task's memory limit; a step of the same
/// task failing for another reason afterwards does not.
#[tokio::test]
async fn v1_memory_max_oom_kills_the_step_and_says_so() {
    let limits = TaskLimits {
        memory_max: Some(64 << 20),
        ..TaskLimits::default()
    };
    let parent = v1_parent(limits, "oom");
    let cg = Arc::new(parent.create_task("oom").unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = StepSpec::new(
        1,
        "dd if=/dev/zero of=/dev/null bs=256M count=1",
        tmp.path(),
        env(),
    );
    spec.cgroup = Some(cg.clone());
    let (report, notices) = run(spec, CancellationToken::new()).await;
    assert!(!report.outcome.success(), "{notices}");
    assert!(cg.oom_kills() >= 1, "{notices}");
    assert!(
        notices.contains(&format!(
            "Step 1 hit the task's memory limit of {} bytes",
            64u64 << 20
        )),
        "{notices}"
    );
    assert!(notices.contains("out of memory"), "{notices}");

    let mut spec = StepSpec::new(2, "exit 3", tmp.path(), env());
    spec.cgroup = Some(cg.clone());
    let (report, notices) = run(spec, CancellationToken::new()).await;
    assert_eq!(report.outcome, StepOutcome::Exited(3));
    assert!(!notices.contains("memory limit"), "{notices}");
}

/// A builder with `task_limits` on a v1 host runs its task's processes in
/// v1 task cgroups with the limits. SIGKILLed mid-task, it leaves the task
/// cgroups behind; at its next start they are removed and what was in
/// them (here a process put there after the kill) is killed. The task then
/// runs to its end and its cgroups are gone.
#[tokio::test(flavor = "multi_thread")]
async fn a_sigkilled_builders_v1_task_cgroups_are_swept_at_its_next_start() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start_server(&tmp.path().join("data"));
    let conf = one_server_config_with(&server, tmp.path(), 1, |c| {
        c["task_limits"] = serde_json::json!({
            "memory_max_bytes": 512u64 << 20,
            "pids_max": 200,
            "cpu_weight": 200,
        });
    });
    let mut builder = BuilderProc::start(&conf);
    let (pids_dir, step) = escapers_and_shell(tmp.path());
    let p = pids_dir.display();
    let step = format!("if [ -e {p}/ran ]; then exit 0; fi; touch {p}/ran; {step}");
    let (repo, hash) = make_repo(tmp.path());
    let ev = push(&server, "proj", &repo, &hash, &linux_saifile(&step)).await;
    let escaped = escaped_pids(&pids_dir).await;
    // The builder isolates steps: `$$` is the step's pid namespace's.
    let shell = sai_testkit::wait_for("shell pid", T, || async {
        host_pid(&pids_dir.join("shell.pid"))
    })
    .await
    .unwrap();
    assert!(builder.log().contains("cgroup v1"), "{}", builder.log());
    let dirs: Vec<_> = ["memory", "pids", "cpu"]
        .iter()
        .map(|c| v1_cgroup_of(shell, c))
        .collect();
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("sai-task-"), "{}", dir.display());
        for pid in escaped {
            assert!(
                read_trimmed(&dir.join("cgroup.procs"))
                    .lines()
                    .any(|l| l == pid.to_string()),
                "{pid} in {}",
                dir.display()
            );
        }
    }
    assert_eq!(read_trimmed(&dirs[1].join("pids.max")), "200");
    assert_eq!(read_trimmed(&dirs[2].join("cpu.shares")), "2048");

    builder.guard.kill();
    let all = [escaped[0], escaped[1], shell];
    sai_testkit::wait_for("the step's processes to go", T, || async {
        all.iter().all(|&p| process_gone(p)).then_some(())
    })
    .await
    .unwrap();
    for dir in &dirs {
        assert!(
            dir.exists(),
            "{} is left by the SIGKILLed builder",
            dir.display()
        );
    }
    // Something still in the stale cgroups when the builder comes back.
    let mut outsider = std::process::Command::new("sleep")
        .arg("1000")
        .spawn()
        .unwrap();
    let opid = outsider.id() as i32;
    for dir in &dirs {
        std::fs::write(dir.join("cgroup.procs"), opid.to_string()).unwrap();
    }

    let builder = BuilderProc::start(&conf);
    let status = tokio::task::spawn_blocking(move || outsider.wait().unwrap())
        .await
        .unwrap();
    assert!(!status.success(), "killed, not exited: {status:?}");
    let swept = sai_testkit::wait_for("the stale task cgroups to go", T, || async {
        still_there(&dirs).is_empty().then_some(())
    })
    .await;
    if let Err(e) = swept {
        panic!("{e}: {dirs:?}\n{}", logs(&builder, &server));
    }
    // The task comes back to the restarted builder and ends; its cgroups go
    // with it.
    let task = first_task(&server, &ev).await;
    let why = || logs(&builder, &server);
    task_in_state(&server, &task, "success", &why).await;
    for dir in &dirs {
        assert!(!dir.exists(), "{} removed after the task", dir.display());
    }
    drop(builder);
    for dir in &dirs {
        let _ = std::fs::remove_dir(dir.parent().unwrap());
    }
}

/// A builder with `task_limits` on a v1 host, through the server: an
/// operator cancel ends the step's escapers and removes the task cgroups;
/// a later task allocating past `memory_max_bytes` fails, and its log says
/// it hit the task's memory limit.
#[tokio::test(flavor = "multi_thread")]
async fn a_builder_with_v1_task_limits_cancels_cleanly_and_reports_the_memory_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let memory = 64u64 << 20;
    let (server, builder) = start_server_and_builder_with(tmp.path(), 1, |c| {
        c["task_limits"] = serde_json::json!({ "memory_max_bytes": memory, "pids_max": 100 });
    });
    let why = || logs(&builder, &server);
    let (pids_dir, step) = escapers_and_shell(tmp.path());
    let (repo, hash) = make_repo(tmp.path());
    let (_, task) = push_task(&server, &repo, &hash, &linux_saifile(&step)).await;
    let escaped = escaped_pids(&pids_dir).await;
    // The builder isolates steps: `$$` is the step's pid namespace's.
    let shell = sai_testkit::wait_for("shell pid", T, || async {
        host_pid(&pids_dir.join("shell.pid"))
    })
    .await
    .unwrap();
    let dirs: Vec<_> = ["memory", "pids"]
        .iter()
        .map(|c| v1_cgroup_of(shell, c))
        .collect();
    for dir in &dirs {
        for pid in [escaped[0], escaped[1], shell] {
            assert_eq!(
                &v1_cgroup_of(
                    pid,
                    if dir.join("pids.max").exists() {
                        "pids"
                    } else {
                        "memory"
                    }
                ),
                dir
            );
        }
    }
    assert_eq!(
        read_trimmed(&dirs[0].join("memory.limit_in_bytes")),
        memory.to_string()
    );

    cancel_task(&server, &task, &why).await;
    let all = [escaped[0], escaped[1], shell];
    let ended = sai_testkit::wait_for(
        "the cancelled step's processes and cgroups to go",
        T,
        || async {
            (all.iter().all(|&p| process_gone(p)) && still_there(&dirs).is_empty()).then_some(())
        },
    )
    .await;
    if let Err(e) = ended {
        panic!("{e}: {all:?} {dirs:?}\n{}", why());
    }

    let hash = new_commit(&repo, "oom\n");
    let sf = linux_saifile("dd if=/dev/zero of=/dev/null bs=256M count=1");
    let (_, task) = push_task(&server, &repo, &hash, &sf).await;
    task_in_state(&server, &task, "failed", &why).await;
    log_contains(
        &server,
        &task,
        &format!("hit the task's memory limit of {memory} bytes"),
        &why,
    )
    .await;
    drop(builder);
    for dir in &dirs {
        let _ = std::fs::remove_dir(dir.parent().unwrap());
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
