//! Tasks stopped from outside: an operator cancel, a server crash (the
//! link's tasks are killed), and offers declined for lack of disk space.

mod daemon_common;

use std::path::Path;

use daemon_common::*;
use sai_testkit::wait_for;
use serde_json::json;

/// First run: writes its shell's pid, then waits (at most 60 s) for `go`.
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

async fn step_pid(dir: &Path) -> i32 {
    let pid_file = dir.join("pid");
    wait_for("pid file", T, || async {
        std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
    })
    .await
    .unwrap()
}

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
    let server = start_server(&tmp.path().join("data"));
    std::fs::write(
        tmp.path().join("s.token"),
        server.builder_token("b1", &["linux"]).unwrap(),
    )
    .unwrap();
    let s = ServerRef {
        url: server.builder_url(),
        token_file: "s.token".into(),
    };
    let conf = write_builder_config(tmp.path(), "b1", &[(LINUX, 1, &[&s])]);
    let builder = BuilderProc::start(&conf);
    let why = || {
        format!(
            "builder log:\n{}\nserver log:\n{}",
            builder.log(),
            server.log()
        )
    };
    let (repo, hash) = make_repo(tmp.path());
    let sf = saifile(
        LINUX,
        &waiting_build(tmp.path()),
        json!({ "default": { "cmake": "" } }),
    );
    let ev = push(&server, "proj", &repo, &hash, &sf).await;
    let task = get(&server, &format!("/api/events/{ev}")).await["tasks"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    log_contains(&server, &task, "run 1 started", &why).await;
    let pid = step_pid(tmp.path()).await;

    let user = server.user_token("alice").unwrap();
    let r = reqwest::Client::new()
        .post(server.url(&format!("/api/tasks/{task}/cancel")))
        .bearer_auth(&user)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", why());
    gone(pid, &why).await;
    builder.wait_log("cancelled by the server").await;
    let t = get(&server, &format!("/api/tasks/{task}")).await;
    assert_eq!(t["state"], "cancelled", "{t}");

    // The slot is free again: the next push (a new commit) runs.
    let hash2 = new_commit(&repo, "next\n");
    let sf2 = saifile(
        LINUX,
        "echo next one",
        json!({ "default": { "cmake": "" } }),
    );
    let ev2 = push(&server, "proj", &repo, &hash2, &sf2).await;
    assert_ne!(ev2, ev);
    let e2 = event_done(&server, &ev2, &why).await;
    assert_eq!(e2["tasks"][0]["state"], "success", "{e2}\n{}", why());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_crash_kills_the_tasks_of_its_link_which_rerun_after_its_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let addr = free_addr();
    let mut server = start_server_at(&data, addr);
    std::fs::write(
        tmp.path().join("s.token"),
        server.builder_token("b1", &["linux"]).unwrap(),
    )
    .unwrap();
    let s = ServerRef {
        url: server.builder_url(),
        token_file: "s.token".into(),
    };
    let conf = write_builder_config(tmp.path(), "b1", &[(LINUX, 1, &[&s])]);
    let builder = BuilderProc::start(&conf);
    let (repo, hash) = make_repo(tmp.path());
    let sf = saifile(
        LINUX,
        &waiting_build(tmp.path()),
        json!({ "default": { "cmake": "" } }),
    );
    let ev = push(&server, "proj", &repo, &hash, &sf).await;
    let task = get(&server, &format!("/api/events/{ev}")).await["tasks"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    {
        let why = || {
            format!(
                "builder log:\n{}\nserver log:\n{}",
                builder.log(),
                server.log()
            )
        };
        log_contains(&server, &task, "run 1 started", &why).await;
    }
    let pid = step_pid(tmp.path()).await;

    server.guard.kill();
    let why = || format!("builder log:\n{}", builder.log());
    gone(pid, &why).await;
    builder.wait_log("link lost").await;

    let server = start_server_at(&data, addr);
    let why = || {
        format!(
            "builder log:\n{}\nserver log:\n{}",
            builder.log(),
            server.log()
        )
    };
    let e = event_done(&server, &ev, &why).await;
    assert_eq!(e["tasks"][0]["state"], "success", "{e}\n{}", why());
    let log = raw_log(&server, &task).await;
    assert!(log.contains("run 2 finished"), "{log}");
    assert!(!log.contains("run 1 finished"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn offers_are_declined_without_enough_free_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start_server(&tmp.path().join("data"));
    std::fs::write(
        tmp.path().join("s.token"),
        server.builder_token("b1", &["linux"]).unwrap(),
    )
    .unwrap();
    let s = ServerRef {
        url: server.builder_url(),
        token_file: "s.token".into(),
    };
    let conf = write_builder_config_with(tmp.path(), "b1", &[(LINUX, 1, &[&s])], |c| {
        c["min_free_disk_bytes"] = json!(u64::MAX / 2);
    });
    let builder = BuilderProc::start(&conf);
    let why = || {
        format!(
            "builder log:\n{}\nserver log:\n{}",
            builder.log(),
            server.log()
        )
    };
    let (repo, hash) = make_repo(tmp.path());
    let sf = saifile(LINUX, "echo never", json!({ "default": { "cmake": "" } }));
    let ev = push(&server, "proj", &repo, &hash, &sf).await;
    let task = get(&server, &format!("/api/events/{ev}")).await["tasks"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let t = task_until(
        &server,
        &task,
        "offer declined",
        |t| {
            t["reason"]
                .as_str()
                .is_some_and(|r| r.contains("declined by b1"))
        },
        &why,
    )
    .await;
    assert_eq!(t["state"], "waiting", "{t}");
    assert!(
        t["reason"].as_str().unwrap().contains("bytes free under"),
        "{t}"
    );
    assert!(builder.log().contains("offer rejected"));
}
