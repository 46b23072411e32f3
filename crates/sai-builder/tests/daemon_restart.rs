//! Builder crashes and stops mid-task: the server requeues the task and a
//! restarted builder runs it to the end; a clean stop kills the step and
//! hands the task back without using up an infrastructure attempt.

mod daemon_common;

use std::path::Path;

use daemon_common::*;
use serde_json::json;

/// A server, a one-instance builder config for it, a [`waiting_build`]
/// pushed, and a builder running it (its first run started): the server,
/// the config, the event, the task and the builder.
async fn first_run_started(
    tmp: &Path,
) -> (
    sai_testkit::TestServer,
    std::path::PathBuf,
    String,
    String,
    BuilderProc,
) {
    let server = start_server(&tmp.join("data"));
    let conf = one_server_config(&server, tmp, 1);
    let (_repo, ev, task) = push_waiting_build(&server, tmp).await;
    let b = BuilderProc::start(&conf);
    log_contains(&server, &task, "run 1 started", &|| logs(&b, &server)).await;
    (server, conf, ev, task, b)
}

/// A server allowing 3 infrastructure attempts, a one-instance builder
/// config for it and a test repository (path, commit).
fn setup_three_infra_attempts(
    dir: &Path,
) -> (
    sai_testkit::TestServer,
    std::path::PathBuf,
    (std::path::PathBuf, String),
) {
    let mut config = server_config(&dir.join("data"));
    config.max_infra_attempts = 3;
    let server = sai_testkit::TestServer::start(&server_bin(), &config, &[]).unwrap();
    let conf = one_server_config(&server, dir, 1);
    (server, conf, make_repo(dir))
}

/// A build that counts its runs (in `dir/count`, or `dir/count-<runs_of>`
/// where `runs_of` names a shell word such as `${cmake}` to count runs of
/// each separately) and says `run $n started` (`run $n of <runs_of>
/// started`); while the shell test `stalls` holds it then waits (at most
/// 60 s) for nothing; last it says `run $n finished`.
fn stalling_build(dir: &Path, runs_of: &str, stalls: &str) -> String {
    let cnt = dir.join("count").display().to_string();
    let (cnt, of) = match runs_of {
        "" => (cnt, String::new()),
        _ => (format!("{cnt}-{runs_of}"), format!(" of {runs_of}")),
    };
    format!(
        "n=$(cat {cnt} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {cnt}; echo \"run $n{of} started\"; \
         if {stalls}; then i=0; while [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; fi; \
         echo \"run $n{of} finished\""
    )
}

/// Start a builder, wait until the task's log says `started`, stop the
/// builder cleanly and wait until the task is waiting again; returns the
/// task.
async fn stopped_mid_run(
    server: &sai_testkit::TestServer,
    conf: &Path,
    task: &str,
    started: &str,
) -> serde_json::Value {
    let mut b = BuilderProc::start(conf);
    log_contains(server, task, started, &|| logs(&b, server)).await;
    stop_cleanly(&mut b);
    task_waiting_again(server, task).await
}

/// SIGTERM the builder; it must exit with status 0.
fn stop_cleanly(b: &mut BuilderProc) {
    let st = b.guard.stop().expect("exit status");
    assert!(st.success(), "{st:?}\n{}", b.log());
}

/// Start a new builder and wait until it finishes event `ev`; returns the
/// event and the builder's and server's logs.
async fn done_by_a_new_builder(
    server: &sai_testkit::TestServer,
    conf: &Path,
    ev: &str,
) -> (serde_json::Value, String) {
    let b = BuilderProc::start(conf);
    let why = || logs(&b, server);
    let e = event_done(server, ev, &why).await;
    (e, why())
}

#[tokio::test(flavor = "multi_thread")]
async fn task_of_a_killed_builder_is_rerun_by_the_restarted_builder() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, conf, ev, task, mut b1) = first_run_started(tmp.path()).await;
    let t = server.get_json(&format!("/api/tasks/{task}")).await;
    assert_eq!(t["state"], "running", "{t}");

    // Crash: no goodbye; the server sees the connection drop and requeues.
    b1.guard.kill();
    let why = || format!("server log:\n{}", server.log());
    task_in_state(&server, &task, "waiting", &why).await;
    // Let the orphaned first run end (it has nobody to report to).
    std::fs::write(tmp.path().join("go"), b"").unwrap();

    let (e, why2) = done_by_a_new_builder(&server, &conf, &ev).await;
    let t = &e["tasks"][0];
    assert_eq!(t["state"], "success", "{e}\n{why2}");
    let log = raw_log(&server, &task).await;
    assert!(log.contains("run 1 started"), "{log}");
    assert!(log.contains("run 2 started"), "{log}");
    assert!(log.contains("run 2 finished"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_kills_the_running_step_hands_the_task_back_and_exits() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, conf, ev, task, mut b1) = first_run_started(tmp.path()).await;
    let pid = step_pid(tmp.path()).await;
    assert!(!process_gone(pid));

    // Clean stop: SIGTERM, exit status 0.
    stop_cleanly(&mut b1);
    assert!(process_gone(pid), "the step's shell was killed");
    let log = b1.log();
    assert!(log.contains("signal received"), "{log}");
    let t = task_waiting_again(&server, &task).await;
    assert!(
        t["reason"].as_str().unwrap_or("").contains("shut down"),
        "{t}"
    );

    // The next builder runs it to the end.
    let (e, why2) = done_by_a_new_builder(&server, &conf, &ev).await;
    assert_eq!(e["tasks"][0]["state"], "success", "{e}\n{why2}");
}

#[tokio::test(flavor = "multi_thread")]
async fn four_sigterms_in_a_row_do_not_use_up_the_infra_attempts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (server, conf, (repo, hash)) = setup_three_infra_attempts(dir);
    // Runs 1 to 4 stall; run 5 passes.
    let sf = linux_saifile(&stalling_build(dir, "", "[ $n -le 4 ]"));
    let (ev, task) = push_task(&server, &repo, &hash, &sf).await;

    for n in 1..=4 {
        let t = stopped_mid_run(&server, &conf, &task, &format!("run {n} started")).await;
        assert_eq!(t["infra_failures"], 0, "{t}");
        assert!(
            t["reason"].as_str().unwrap_or("").contains("handed back"),
            "{t}"
        );
    }

    // The fifth builder runs it to success: no attempt was used up.
    let (e, why) = done_by_a_new_builder(&server, &conf, &ev).await;
    let t = &e["tasks"][0];
    assert_eq!(t["state"], "success", "{e}\n{why}");
    assert_eq!(t["infra_failures"], 0, "{e}");
    let log = raw_log(&server, &task).await;
    assert!(log.contains("run 5 finished"), "{log}");
    // The server noted every hand-back in the task log (channel 3).
    assert_eq!(log.matches("handed back by builder b1").count(), 4, "{log}");
}

/// Five restarts of the only builder while a second task waits: the
/// builder says it is shutting down each time, the running task is handed
/// back, and the waiting task is never offered to a closing link, fails no
/// attempt and counts no infrastructure failure.
#[tokio::test(flavor = "multi_thread")]
async fn five_builder_restarts_neither_fail_nor_charge_the_waiting_task() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (server, conf, (repo, hash)) = setup_three_infra_attempts(dir);
    // Runs 1 to 5 of configuration "a" stall; "b" passes at once.
    let sf = saifile(
        LINUX,
        &stalling_build(dir, "${cmake}", "[ ${cmake} = a ] && [ $n -le 5 ]"),
        json!({ "a": { "cmake": "a" }, "b": { "cmake": "b" } }),
    );
    let ev = push(&server, "proj", &repo, &hash, &sf).await;
    let e = server.get_json(&format!("/api/events/{ev}")).await;
    let id_of = |conf: &str| {
        e["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["configuration"] == conf)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (a, b) = (id_of("a"), id_of("b"));

    for n in 1..=5 {
        let ta = stopped_mid_run(&server, &conf, &a, &format!("run {n} of a started")).await;
        assert_eq!(ta["infra_failures"], 0, "{ta}");
        let tb = server.get_json(&format!("/api/tasks/{b}")).await;
        assert_eq!(tb["state"], "waiting", "{tb}");
        assert_eq!(
            (tb["attempt"].as_i64(), tb["infra_failures"].as_i64()),
            (Some(0), Some(0)),
            "{tb}"
        );
        assert!(tb["reason"].is_null(), "never offered nor declined: {tb}");
        let said = server.log().matches("builder is shutting down").count();
        assert_eq!(said, n, "one shutting_down per stop\n{}", server.log());
    }

    let (e, why) = done_by_a_new_builder(&server, &conf, &ev).await;
    for t in e["tasks"].as_array().unwrap() {
        assert_eq!(t["state"], "success", "{e}\n{why}");
        assert_eq!(t["infra_failures"], 0, "{e}");
    }
    let tb = server.get_json(&format!("/api/tasks/{b}")).await;
    assert_eq!(tb["attempt"], 1, "b ran once: {tb}");
}
