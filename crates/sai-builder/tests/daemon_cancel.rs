//! Tasks stopped from outside: an operator cancel, a claim refused by a
//! restarted server (the task is killed), and offers declined for lack of
//! disk space.

mod daemon_common;

use daemon_common::*;
use sai_testkit::wait_for;
use serde_json::json;

async fn gone(pid: i32, why: &dyn Fn() -> String) {
    if let Err(e) = wait_for("step killed", T, || async {
        process_gone(pid).then_some(())
    })
    .await
    {
        panic!("{e}\n{}", why());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_cancel_kills_the_step_and_the_builder_takes_more_work() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, builder) = start_server_and_builder(tmp.path(), 1);
    let why = || logs(&builder, &server);
    let (repo, ev, task) = push_waiting_build(&server, tmp.path()).await;
    log_contains(&server, &task, "run 1 started", &why).await;
    let pid = step_pid(tmp.path()).await;

    cancel_task(&server, &task, &why).await;
    gone(pid, &why).await;
    builder.wait_log("cancelled by the server").await;
    let t = server.get_json(&format!("/api/tasks/{task}")).await;
    assert_eq!(t["state"], "cancelled", "{t}");

    // The slot is free again: the next push (a new commit) runs.
    let (ev2, _) =
        push_new_commit_to_success(&server, &repo, "next\n", "echo next one", &why).await;
    assert_ne!(ev2, ev);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashed_server_restarted_without_grace_refuses_the_task_back_which_is_killed_and_rerun()
{
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let addr = free_addr();
    let mut server = start_server_at(&data, addr);
    let conf = one_server_config(&server, tmp.path(), 1);
    let builder = BuilderProc::start(&conf);
    let (_repo, ev, task) = push_waiting_build(&server, tmp.path()).await;
    {
        let why = || logs(&builder, &server);
        log_contains(&server, &task, "run 1 started", &why).await;
    }
    let pid = step_pid(tmp.path()).await;

    // The builder keeps the task through the crash (see
    // daemon_server_restart.rs); a server with no restart grace requeued it
    // at start-up, so the builder's claim is refused and the step killed.
    server.guard.kill();
    builder.wait_log("link lost").await;
    let mut c = server_config(&data);
    c.listen = addr.to_string();
    c.restart_grace_secs = 0;
    let server = sai_testkit::TestServer::start(&server_bin(), &c, &[]).unwrap();
    let why = || logs(&builder, &server);
    builder.wait_log("refused the task back").await;
    gone(pid, &why).await;
    let e = event_done(&server, &ev, &why).await;
    assert_eq!(e["tasks"][0]["state"], "success", "{e}\n{}", why());
    let log = raw_log(&server, &task).await;
    assert!(log.contains("run 2 finished"), "{log}");
    assert!(!log.contains("run 1 finished"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn offers_are_declined_without_enough_free_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, builder) = start_server_and_builder_with(tmp.path(), 1, |c| {
        c["min_free_disk_bytes"] = json!(u64::MAX / 2);
    });
    let why = || logs(&builder, &server);
    let (_, task) = push_new_repo(&server, tmp.path(), &linux_saifile("echo never")).await;
    // Held back for disk either way: the server no longer offers work once
    // the builder's load report is below its floor (waiting detail), and an
    // offer made before the first report is declined by the builder itself.
    let t = task_until(
        &server,
        &task,
        "held back for lack of disk",
        |t| {
            let declined = t["reason"]
                .as_str()
                .is_some_and(|r| r.contains("declined by b1") && r.contains("bytes free under"));
            let not_offered = t["detail"]
                .as_str()
                .is_some_and(|d| d.contains("is low on disk: b1 has"));
            declined || not_offered
        },
        &why,
    )
    .await;
    assert_eq!(t["state"], "waiting", "{t}");
    assert_eq!(t["attempt"], 0, "{t}");
    assert!(!raw_log(&server, &task).await.contains("never"));
}
