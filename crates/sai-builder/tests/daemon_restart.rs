//! Builder crashes and stops mid-task: the server requeues the task and a
//! restarted builder runs it to the end; a clean stop kills the step and
//! hands the task back without using up an infrastructure attempt.

mod daemon_common;

use std::path::Path;

use daemon_common::*;
use sai_testkit::wait_for;
use serde_json::json;

/// A build whose first run writes its shell's pid and waits (at most 60 s)
/// for a `go` file; later runs pass straight through.
fn waiting_build(dir: &Path) -> String {
    let (cnt, go, pid) = (
        dir.join("count").display().to_string(),
        dir.join("go").display().to_string(),
        dir.join("pid").display().to_string(),
    );
    format!(
        "n=$(cat {cnt} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {cnt}; echo \"run $n started\"; \
         if [ $n = 1 ]; then echo $$ > {pid}; i=0; while [ ! -e {go} ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; fi; \
         echo \"run $n finished\""
    )
}

async fn setup(tmp: &Path) -> (sai_testkit::TestServer, std::path::PathBuf, String, String) {
    let server = start_server(&tmp.join("data"));
    let token = server.builder_token("b1", &["linux"]).unwrap();
    let token_file = tmp.join("s1.token");
    std::fs::write(&token_file, token).unwrap();
    let s1 = ServerRef {
        url: server.builder_url(),
        token_file: token_file.display().to_string(),
    };
    let conf = write_builder_config(tmp, "b1", &[(LINUX, 1, &[&s1])]);
    let (repo, hash) = make_repo(tmp);
    let sf = saifile(
        LINUX,
        &waiting_build(tmp),
        json!({ "default": { "cmake": "" } }),
    );
    let ev = push(&server, "proj", &repo, &hash, &sf).await;
    let e = get(&server, &format!("/api/events/{ev}")).await;
    let task = e["tasks"][0]["id"].as_str().unwrap().to_string();
    (server, conf, ev, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn task_of_a_killed_builder_is_rerun_by_the_restarted_builder() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, conf, ev, task) = setup(tmp.path()).await;
    let mut b1 = BuilderProc::start(&conf);
    let why1 = || format!("builder log:\n{}\nserver log:\n{}", b1.log(), server.log());
    log_contains(&server, &task, "run 1 started", &why1).await;
    let t = get(&server, &format!("/api/tasks/{task}")).await;
    assert_eq!(t["state"], "running", "{t}");

    // Crash: no goodbye; the server sees the connection drop and requeues.
    b1.guard.kill();
    let why = || format!("server log:\n{}", server.log());
    task_until(
        &server,
        &task,
        "task requeued",
        |t| t["state"] == "waiting",
        &why,
    )
    .await;
    // Let the orphaned first run end (it has nobody to report to).
    std::fs::write(tmp.path().join("go"), b"").unwrap();

    let b2 = BuilderProc::start(&conf);
    let why2 = || format!("builder log:\n{}\nserver log:\n{}", b2.log(), server.log());
    let e = event_done(&server, &ev, &why2).await;
    let t = &e["tasks"][0];
    assert_eq!(t["state"], "success", "{e}\n{}", why2());
    let log = raw_log(&server, &task).await;
    assert!(log.contains("run 1 started"), "{log}");
    assert!(log.contains("run 2 started"), "{log}");
    assert!(log.contains("run 2 finished"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_kills_the_running_step_hands_the_task_back_and_exits() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, conf, ev, task) = setup(tmp.path()).await;
    let mut b1 = BuilderProc::start(&conf);
    let why1 = || format!("builder log:\n{}\nserver log:\n{}", b1.log(), server.log());
    log_contains(&server, &task, "run 1 started", &why1).await;
    let pid_file = tmp.path().join("pid");
    let pid: i32 = wait_for("pid file", T, || async {
        std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
    })
    .await
    .unwrap();
    assert!(!process_gone(pid));

    // Clean stop: SIGTERM, exit status 0.
    let st = b1.guard.stop().expect("exit status");
    assert!(st.success(), "{st:?}\n{}", b1.log());
    assert!(process_gone(pid), "the step's shell was killed");
    let log = b1.log();
    assert!(log.contains("signal received"), "{log}");
    let why = || format!("server log:\n{}", server.log());
    let t = task_until(
        &server,
        &task,
        "task handed back",
        |t| t["state"] == "waiting",
        &why,
    )
    .await;
    assert!(
        t["reason"].as_str().unwrap_or("").contains("shut down"),
        "{t}"
    );

    // The next builder runs it to the end.
    let b2 = BuilderProc::start(&conf);
    let why2 = || format!("builder log:\n{}\nserver log:\n{}", b2.log(), server.log());
    let e = event_done(&server, &ev, &why2).await;
    assert_eq!(e["tasks"][0]["state"], "success", "{e}\n{}", why2());
}

#[tokio::test(flavor = "multi_thread")]
async fn four_sigterms_in_a_row_do_not_use_up_the_infra_attempts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut config = server_config(&dir.join("data"));
    config.max_infra_attempts = 3;
    let server = sai_testkit::TestServer::start(&server_bin(), &config, &[]).unwrap();
    let token_file = dir.join("s1.token");
    std::fs::write(&token_file, server.builder_token("b1", &["linux"]).unwrap()).unwrap();
    let s1 = ServerRef {
        url: server.builder_url(),
        token_file: token_file.display().to_string(),
    };
    let conf = write_builder_config(dir, "b1", &[(LINUX, 1, &[&s1])]);
    let (repo, hash) = make_repo(dir);
    // Runs 1 to 4 wait (at most 60 s) for a file nobody creates; run 5 passes.
    let cnt = dir.join("count").display().to_string();
    let build = format!(
        "n=$(cat {cnt} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {cnt}; echo \"run $n started\"; \
         if [ $n -le 4 ]; then i=0; while [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; fi; \
         echo \"run $n finished\""
    );
    let sf = saifile(LINUX, &build, json!({ "default": { "cmake": "" } }));
    let ev = push(&server, "proj", &repo, &hash, &sf).await;
    let task = get(&server, &format!("/api/events/{ev}")).await["tasks"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    for n in 1..=4 {
        let mut b = BuilderProc::start(&conf);
        let why = || format!("builder log:\n{}\nserver log:\n{}", b.log(), server.log());
        log_contains(&server, &task, &format!("run {n} started"), &why).await;
        let st = b.guard.stop().expect("exit status");
        assert!(st.success(), "{st:?}\n{}", b.log());
        let why = || format!("server log:\n{}", server.log());
        let t = task_until(
            &server,
            &task,
            "task handed back",
            |t| t["state"] == "waiting",
            &why,
        )
        .await;
        assert_eq!(t["infra_failures"], 0, "{t}");
        assert!(
            t["reason"].as_str().unwrap_or("").contains("handed back"),
            "{t}"
        );
    }

    // The fifth builder runs it to success: no attempt was used up.
    let b = BuilderProc::start(&conf);
    let why = || format!("builder log:\n{}\nserver log:\n{}", b.log(), server.log());
    let e = event_done(&server, &ev, &why).await;
    let t = &e["tasks"][0];
    assert_eq!(t["state"], "success", "{e}\n{}", why());
    assert_eq!(t["infra_failures"], 0, "{e}");
    let log = raw_log(&server, &task).await;
    assert!(log.contains("run 5 finished"), "{log}");
    // The server noted every hand-back in the task log (channel 3).
    assert_eq!(log.matches("handed back by builder b1").count(), 4, "{log}");
}
