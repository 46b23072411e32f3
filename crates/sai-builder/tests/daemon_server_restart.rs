//! Graceful server restart: a task running while sai-server restarts
//! (SIGTERM, or SIGKILL) keeps running on its builder, is claimed back by
//! the builder from the restarted server, finishes and is reported once,
//! never runs twice, and its stored log has every byte once, in order. A
//! builder that does not come back within the restart grace loses the task
//! to the queue without an infrastructure failure being counted.

mod daemon_common;

use std::path::Path;

use daemon_common::*;
use sai_testkit::TestServer;
use serde_json::Value;

const LINES: u32 = 60;

/// Appends a line to `dir/runs` (outside the job directory) then prints
/// `line 1` .. `line 60`, one every 0.1 s.
fn counted_build(dir: &Path) -> String {
    let runs = dir.join("runs").display().to_string();
    format!(
        "echo ran >> {runs}; i=1; while [ $i -le {LINES} ]; do echo \"line $i\"; i=$((i+1)); sleep 0.1; done"
    )
}

fn start_at(data: &Path, addr: std::net::SocketAddr, grace_secs: u64) -> TestServer {
    let mut c = server_config(data);
    c.listen = addr.to_string();
    c.restart_grace_secs = grace_secs;
    TestServer::start(&server_bin(), &c, &[]).unwrap()
}

fn runs(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("runs"))
        .unwrap_or_default()
        .lines()
        .count()
}

/// The numbered lines of the log are 1..=LINES, each once, in order.
fn assert_log_whole(log: &str, why: &dyn Fn() -> String) {
    let numbered: Vec<&str> = log.lines().filter(|l| l.starts_with("line ")).collect();
    let want: Vec<String> = (1..=LINES).map(|i| format!("line {i}")).collect();
    assert_eq!(numbered, want, "log:\n{log}\n{}", why());
    let mut lines: Vec<&str> = log.lines().collect();
    let n = lines.len();
    lines.sort();
    lines.dedup();
    assert_eq!(lines.len(), n, "no line twice:\n{log}");
}

/// Push the counted build and wait until its step printed a few lines.
async fn running_task(server: &TestServer, dir: &Path, b: &BuilderProc) -> (String, String) {
    let (repo, hash) = make_repo(dir);
    let ev = push(
        server,
        "proj",
        &repo,
        &hash,
        &linux_saifile(&counted_build(dir)),
    )
    .await;
    let task = first_task(server, &ev).await;
    let why = || logs(b, server);
    log_contains(server, &task, "line 5\n", &why).await;
    (ev, task)
}

async fn restart_mid_step(kill: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let data = tmp.path().join("data");
    let mut s1 = start_at(&data, addr, 120);
    let conf = one_server_config(&s1, tmp.path(), 1);
    let b = BuilderProc::start(&conf);
    let (ev, task) = running_task(&s1, tmp.path(), &b).await;

    if kill {
        s1.guard.kill();
    } else {
        let st = s1.guard.stop().expect("exit status");
        assert!(st.success(), "{st:?}\n{}", s1.log());
    }
    let s2 = start_at(&data, addr, 120);
    let why = || logs(&b, &s2);
    let e = event_done(&s2, &ev, &why).await;
    let t: &Value = &e["tasks"][0];
    assert_eq!(t["state"], "success", "{e}\n{}", why());
    let t = s2.get_json(&format!("/api/tasks/{task}")).await;
    assert_eq!(t["attempt"], 1, "never re-run: {t}\n{}", why());
    assert_eq!(t["infra_failures"], 0, "{t}");
    assert_eq!(runs(tmp.path()), 1, "the step ran once\n{}", why());
    assert_log_whole(&raw_log(&s2, &task).await, &why);
    assert!(
        b.log().contains("claimed back") || b.log().contains("took the task back"),
        "{}",
        b.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_running_across_a_sigterm_restart_finishes_once_with_its_whole_log() {
    restart_mid_step(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_running_across_a_killed_server_finishes_once_with_its_whole_log() {
    restart_mid_step(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_builder_not_back_within_the_grace_loses_the_task_to_the_queue_without_counting() {
    let tmp = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let data = tmp.path().join("data");
    let mut s1 = start_at(&data, addr, 3);
    let conf = one_server_config(&s1, tmp.path(), 1);
    let mut b1 = BuilderProc::start(&conf);
    let (ev, task) = running_task(&s1, tmp.path(), &b1).await;
    // The builder dies with the server down: nobody claims the task.
    s1.guard.stop().expect("exit status");
    b1.guard.kill();

    let s2 = start_at(&data, addr, 3);
    let t = s2.get_json(&format!("/api/tasks/{task}")).await;
    assert_eq!(t["state"], "running", "kept for its builder: {t}");
    let why = || format!("server log:\n{}", s2.log());
    let t = task_in_state(&s2, &task, "waiting", &why).await;
    let reason = t["reason"].as_str().unwrap_or("");
    assert!(reason.contains("did not claim it back within 3 s"), "{t}");
    assert_eq!(t["infra_failures"], 0, "{t}");

    let b2 = BuilderProc::start(&conf);
    let why2 = || logs(&b2, &s2);
    let e = event_done(&s2, &ev, &why2).await;
    assert_eq!(e["tasks"][0]["state"], "success", "{e}\n{}", why2());
    assert_eq!(runs(tmp.path()), 2, "run again from the start");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_claim_for_a_task_requeued_meanwhile_is_refused_and_the_builder_kills_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let addr = free_addr();
    let data = dir.join("data");
    let mut s1 = start_at(&data, addr, 1);
    let conf = one_server_config(&s1, dir, 1);
    let b = BuilderProc::start(&conf);
    let (runs_f, pid_f) = (dir.join("runs"), dir.join("pid"));
    // The first run waits long; later runs pass.
    let build = format!(
        "echo ran >> {r}; if [ $(wc -l < {r}) = 1 ]; then echo $$ > {p}; exec 3<{p}; echo first; sleep 120; fi; echo done",
        r = runs_f.display(),
        p = pid_f.display()
    );
    let (ev, task) = push_new_repo(&s1, dir, &linux_saifile(&build)).await;
    let why = || logs(&b, &s1);
    log_contains(&s1, &task, "first\n", &why).await;
    let pid = step_pid(dir).await;

    // The builder cannot come back (its token file is spoiled) until the
    // restarted server has given up on it.
    let token = std::fs::read_to_string(dir.join("s.token")).unwrap();
    std::fs::write(dir.join("s.token"), "v4.public.spoiled\n").unwrap();
    s1.guard.kill();
    let s2 = start_at(&data, addr, 1);
    let why = || logs(&b, &s2);
    task_in_state(&s2, &task, "waiting", &why).await;
    assert!(!process_gone(pid), "still running on the builder meanwhile");
    std::fs::write(dir.join("s.token"), token).unwrap();

    b.wait_log("refused the task back").await;
    sai_testkit::wait_for("first run killed", T, || async {
        process_gone(pid).then_some(())
    })
    .await
    .unwrap();
    let e = event_done(&s2, &ev, &why).await;
    assert_eq!(e["tasks"][0]["state"], "success", "{e}\n{}", why());
    assert_eq!(runs(dir), 2, "run again after the refused claim");
}
