//! Task isolation (Linux): the real `sai-builder` against the real
//! `sai-server`, two projects' tasks running at the same time on one
//! builder. Each step tries to list the builder's jobs root, its git
//! mirrors root and the folder above its job dir, and to read a file in the
//! other task's job dir (whose path the test hands it once both tasks
//! run): it sees only its own job dir and its own project's mirror, while
//! `git log` and `git status` in its checkout work.

#![cfg(target_os = "linux")]

mod daemon_common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use daemon_common::*;
use sai_testkit::wait_for;

fn steps(home: &Path, go: &Path) -> String {
    let (jobs, mirrors) = (home.join("jobs"), home.join("git-mirror"));
    let (jobs, mirrors, home, go) = (
        jobs.display(),
        mirrors.display(),
        home.display(),
        go.display(),
    );
    [
        "echo \"secret of $SAI_PROJECT\" > ../marker-$SAI_PROJECT".to_string(),
        format!("while [ ! -s {go}/go-$SAI_PROJECT ]; do sleep 0.1; done"),
        format!("echo \"JOBS: $(ls -A {jobs} | tr '\\n' ' ')\""),
        format!("echo \"MIRRORS: $(ls -A {mirrors} | tr '\\n' ' ')\""),
        "echo \"UP: $(ls -A ../.. | tr '\\n' ' ')\"".to_string(),
        format!(
            "if cat \"$(cat {go}/go-$SAI_PROJECT)\" 2>&1; then echo OTHER-READ; else echo OTHER-HIDDEN; fi"
        ),
        format!("find {home} -name 'marker-*' | sed 's/^/FOUND /'"),
        "git log --oneline -1 | sed 's/^/LOG /'".to_string(),
        "git status --short; echo STATUS-OK".to_string(),
        "test -z \"$(git status --porcelain --untracked-files=no)\"".to_string(),
    ]
    .join("\n")
}

/// The marker files the two tasks wrote in their job dirs, by project.
fn markers(home: &Path) -> Vec<(String, PathBuf)> {
    let Ok(jobs) = std::fs::read_dir(home.join("jobs")) else {
        return vec![];
    };
    let mut found = vec![];
    for job in jobs.flatten() {
        for f in std::fs::read_dir(job.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = f.file_name().to_string_lossy().to_string();
            if let Some(project) = name.strip_prefix("marker-") {
                found.push((project.to_string(), f.path()));
            }
        }
    }
    found.sort();
    found
}

fn line<'a>(log: &'a str, prefix: &str) -> &'a str {
    log.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in {log}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn tasks_of_two_projects_see_only_their_own_job_dir_and_mirror() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, builder) = start_server_and_online_builder(tmp.path(), 2).await;
    let why = || logs(&builder, &server);
    let home = builder_home(tmp.path());
    let go = tmp.path().join("go");
    std::fs::create_dir_all(&go).unwrap();
    let saifile = linux_saifile(&steps(&home, &go));

    let mut events = vec![];
    for project in ["alpha", "beta"] {
        let (repo, _) = make_repo(&tmp.path().join(project));
        let hash = new_commit(&repo, &format!("commit of {project}\n"));
        events.push(push(&server, project, &repo, &hash, &saifile).await);
    }
    // Both tasks run at once: each waits for its go file after writing its
    // marker; the test hands each the path of the other's marker.
    let r = wait_for("both tasks' markers", Duration::from_secs(60), || async {
        let m = markers(&home);
        (m.len() == 2).then_some(m)
    })
    .await;
    let m = match r {
        Ok(m) => m,
        Err(e) => panic!("{e}\n{}", why()),
    };
    let (alpha, beta) = (&m[0], &m[1]);
    assert_eq!((alpha.0.as_str(), beta.0.as_str()), ("alpha", "beta"));
    std::fs::write(go.join("go-alpha"), beta.1.display().to_string()).unwrap();
    std::fs::write(go.join("go-beta"), alpha.1.display().to_string()).unwrap();

    for (ev, (project, own), (other, _)) in [(&events[0], alpha, beta), (&events[1], beta, alpha)] {
        let e = event_done(&server, ev, &why).await;
        let task = e["tasks"][0]["id"].as_str().unwrap().to_string();
        let log = raw_log(&server, &task).await;
        assert_eq!(
            e["tasks"][0]["state"],
            "success",
            "{project}: {log}\n{}",
            why()
        );
        let own_vn = own
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        assert_eq!(line(&log, "JOBS: ").trim(), own_vn, "{project}: {log}");
        assert_eq!(line(&log, "UP: ").trim(), own_vn, "{project}: {log}");
        let mirrors: Vec<&str> = line(&log, "MIRRORS: ").split_whitespace().collect();
        assert_eq!(mirrors.len(), 1, "{project}: only its own mirror: {log}");
        assert!(!mirrors[0].ends_with(".lock"), "{log}");
        // Whole lines: the step's text (in the "Starting step" notice)
        // names both.
        assert!(log.lines().any(|l| l == "OTHER-HIDDEN"), "{project}: {log}");
        assert!(!log.lines().any(|l| l == "OTHER-READ"), "{project}: {log}");
        assert!(
            !log.contains(&format!("secret of {other}")),
            "{project} read {other}'s file: {log}"
        );
        let found: Vec<&str> = log
            .lines()
            .filter_map(|l| l.strip_prefix("FOUND "))
            .collect();
        assert_eq!(found, [own.display().to_string()], "{project}: {log}");
        assert!(
            line(&log, "LOG ").contains(&format!("commit of {project}")),
            "{project}: git log works in the checkout: {log}"
        );
        assert!(log.lines().any(|l| l == "STATUS-OK"), "{log}");
    }
    // Outside the steps, nothing changed: both job dirs and both mirrors
    // are on disk.
    assert_eq!(markers(&home).len(), 2);
    let mirrors = std::fs::read_dir(home.join("git-mirror"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .count();
    assert_eq!(mirrors, 2);
}

/// With `"isolate_tasks": false` steps see the whole builder home (the
/// old behaviour, for builders that cannot or need not isolate).
#[tokio::test(flavor = "multi_thread")]
async fn with_isolation_off_steps_see_the_whole_jobs_root() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, builder) = start_server_and_builder_with(tmp.path(), 1, |c| {
        c["isolate_tasks"] = serde_json::json!(false);
    });
    let why = || logs(&builder, &server);
    builder_online(&server, "b1", &why).await;
    let home = builder_home(tmp.path());
    let stray = home.join("jobs").join("STRAYDIR");
    std::fs::create_dir_all(&stray).unwrap();
    let build = format!(
        "echo \"JOBS: $(ls -A {} | tr '\\n' ' ')\"",
        home.join("jobs").display()
    );
    let (_, log) = run_build(&server, tmp.path(), &build, &why).await;
    assert!(line(&log, "JOBS: ").contains("STRAYDIR"), "{log}");
}

/// The host pid of the process whose command line holds `marker`.
fn host_pid_with(marker: &str) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        String::from_utf8_lossy(&cmdline)
            .contains(marker)
            .then_some(pid)
    })
}

/// Two tasks at once: beta's step waits with a marker in its command line;
/// alpha's step is handed beta's real (host) pid and tries to find beta in
/// `/proc` by command line, to list its cwd through `/proc/<pid>/cwd` and
/// to read its environment. Alpha sees only its own few processes.
#[tokio::test(flavor = "multi_thread")]
async fn a_step_cannot_see_another_tasks_processes_in_proc() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, builder) = start_server_and_online_builder(tmp.path(), 2).await;
    let why = || logs(&builder, &server);
    let go = tmp.path().join("go");
    let done = tmp.path().join("done");
    // The marker is spelt whole only in beta's step; alpha's pattern (and
    // grep's own command line) holds `PIDNS-MARKE[R]`.
    let beta = format!(
        "while [ ! -e {} ]; do sleep 0.1; done; echo PIDNS-MARKER-beta",
        done.display()
    );
    let alpha = [
        format!("while [ ! -s {go} ]; do sleep 0.1; done", go = go.display()),
        format!(
            "p=$(cat {go}); echo \"MYPID: $$\"; echo \"PIDS: $(ls /proc | grep -E '^[0-9]+$' | tr '\\n' ' ')\"; \
             if grep -l 'PIDNS-MARKE[R]' /proc/[0-9]*/cmdline; then echo CMDLINE-SEEN; else echo CMDLINE-HIDDEN; fi; \
             if ls -A /proc/$p/cwd/ 2>&1; then echo CWD-READ; else echo CWD-HIDDEN; fi; \
             if tr '\\0' '\\n' < /proc/$p/environ 2>&1 | grep SAI_PROJECT; then echo ENV-READ; else echo ENV-HIDDEN; fi",
            go = go.display()
        ),
    ]
    .join("\n");
    let (repo_b, _) = make_repo(&tmp.path().join("beta"));
    let hash_b = new_commit(&repo_b, "commit of beta\n");
    let ev_b = push(&server, "beta", &repo_b, &hash_b, &linux_saifile(&beta)).await;
    let r = wait_for("beta's step", Duration::from_secs(60), || async {
        host_pid_with("PIDNS-MARKER-beta")
    })
    .await;
    let beta_pid = match r {
        Ok(p) => p,
        Err(e) => panic!("{e}\n{}", why()),
    };
    // Without a pid namespace alpha could read all of this.
    let beta_cwd = std::fs::read_link(format!("/proc/{beta_pid}/cwd")).unwrap();
    assert!(beta_cwd.is_dir(), "{}", beta_cwd.display());

    let (repo_a, _) = make_repo(&tmp.path().join("alpha"));
    let hash_a = new_commit(&repo_a, "commit of alpha\n");
    let ev_a = push(&server, "alpha", &repo_a, &hash_a, &linux_saifile(&alpha)).await;
    std::fs::write(&go, beta_pid.to_string()).unwrap();
    let e = event_done(&server, &ev_a, &why).await;
    std::fs::write(&done, "").unwrap();
    let task = e["tasks"][0]["id"].as_str().unwrap().to_string();
    let log = raw_log(&server, &task).await;
    assert_eq!(e["tasks"][0]["state"], "success", "{log}\n{}", why());
    assert!(log.lines().any(|l| l == "CMDLINE-HIDDEN"), "{log}");
    assert!(log.lines().any(|l| l == "CWD-HIDDEN"), "{log}");
    assert!(log.lines().any(|l| l == "ENV-HIDDEN"), "{log}");
    assert!(!log.contains("SAI_PROJECT=beta"), "{log}");
    // The namespace's second process: 2 natively, 3 under qemu-user
    // (seen in CI's emulated runs).
    let me: i32 = line(&log, "MYPID: ").trim().parse().unwrap();
    assert!((2..=3).contains(&me), "{log}");
    let pids: Vec<i32> = line(&log, "PIDS: ")
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(pids.contains(&1) && pids.contains(&me), "{log}");
    assert!(pids.len() <= 8 && pids.iter().all(|&p| p < 100), "{log}");
    assert!(!pids.contains(&beta_pid), "{log}");
    let e = event_done(&server, &ev_b, &why).await;
    assert_eq!(e["tasks"][0]["state"], "success", "beta: {}", why());
}

/// The emulator that runs this architecture's binaries, if the tests run
/// under one (see [`builder_command`]).
fn runner() -> Option<std::ffi::OsString> {
    std::env::var_os("SAI_TEST_RUNNER")
}

/// A command (to be given the program and its arguments) that runs them
/// where no fresh `/proc` can be mounted, as a systemd unit with
/// `ProtectKernelTunables=` and no `CAP_SYS_ADMIN` has it: in a mount
/// namespace with `/proc/sys` overmounted read-only and the capability
/// dropped (under [`runner`], as the tests themselves run).
fn without_fresh_proc() -> std::process::Command {
    let root = nix::unistd::geteuid().is_root();
    let mut cmd = std::process::Command::new("unshare");
    cmd.args([
        if root { "-m" } else { "-rm" },
        "--propagation",
        "private",
        "sh",
        "-c",
        "mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && \
         exec setpriv --bounding-set -sys_admin \"$@\"",
        "sh",
    ])
    .args(runner());
    cmd
}

/// Where no fresh `/proc` can be mounted (simulated as a systemd unit with
/// `ProtectKernelTunables=` and no `CAP_SYS_ADMIN` has it: `/proc/sys`
/// overmounted, the capability dropped), the start-up probe says why and
/// falls back to the mount isolation alone instead of none; here, without
/// that, it finds the full isolation.
#[test]
fn where_no_fresh_proc_can_be_mounted_the_probe_falls_back_to_a_shared_proc() {
    use sai_builder::platform::isolation::{Scope, available};
    const CHILD: &str = "SAI_TEST_ISOLATION_PROBE_CHILD";
    let tmp = tempfile::tempdir().unwrap();
    if std::env::var_os(CHILD).is_some() {
        println!("SCOPE {:?}", available(tmp.path()));
        return;
    }
    assert_eq!(available(tmp.path()), Ok(Scope::Full));
    let out = without_fresh_proc()
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "where_no_fresh_proc_can_be_mounted_the_probe_falls_back_to_a_shared_proc",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .output()
        .expect("unshare (util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let scope = stdout
        .lines()
        .find_map(|l| l.strip_prefix("SCOPE "))
        .unwrap_or_else(|| panic!("{stdout}\n{stderr}"));
    assert!(scope.starts_with("Ok(SharedProc"), "{scope}");
    assert!(scope.contains("Operation not permitted"), "{scope}");
}

/// The real builder where no fresh `/proc` can be mounted (as under the
/// shipped systemd unit: `/proc/sys` overmounted, no `CAP_SYS_ADMIN`):
/// with `isolate_tasks` unset it says so at start-up, and its steps still
/// see only their own job dir, though they share the host's pids.
#[tokio::test(flavor = "multi_thread")]
async fn a_builder_that_cannot_mount_a_fresh_proc_warns_and_still_isolates_files() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start_server(&tmp.path().join("data"));
    let conf = one_server_config(&server, tmp.path(), 1);
    let log_path = tmp.path().join("builder.confined.log");
    let child = without_fresh_proc()
        .arg(env!("CARGO_BIN_EXE_sai-builder"))
        .arg("-c")
        .arg(&conf)
        .env("RUST_LOG", "info,sai_builder=debug")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("unshare (util-linux)");
    let builder = BuilderProc {
        guard: sai_testkit::ProcessGuard::new(child, Duration::from_secs(30)),
        log_path,
    };
    let why = || logs(&builder, &server);
    builder_online(&server, "b1", &why).await;
    assert!(
        builder
            .log()
            .contains("a fresh /proc cannot be mounted here"),
        "{}",
        why()
    );
    let home = builder_home(tmp.path());
    std::fs::create_dir_all(home.join("jobs").join("STRAYDIR")).unwrap();
    let build = format!(
        "echo \"JOBS: $(ls -A {} | tr '\\n' ' ')\"; echo \"MYPID: $$\"",
        home.join("jobs").display()
    );
    let (e, log) = run_build(&server, tmp.path(), &build, &why).await;
    assert_eq!(e["tasks"][0]["state"], "success", "{log}\n{}", why());
    let jobs = line(&log, "JOBS: ");
    assert!(!jobs.contains("STRAYDIR"), "{log}");
    assert_eq!(jobs.split_whitespace().count(), 1, "{log}");
    let pid: i32 = line(&log, "MYPID: ").trim().parse().unwrap();
    assert!(pid > 2, "the host's pids: {log}");
}
