//! Memory that returns to idle (issue 10): an idle server closes the event
//! databases nobody uses (each holds a page cache, a parsed schema and
//! prepared statements, and descriptors), and they open again for reads
//! and writes when asked for.

mod common;

use common::*;
use reqwest::Method;
use sai_core::protocol::TaskResult;
use sai_testkit::{TestServer, wait_for};

/// Event databases the server process has open (by their descriptors).
fn open_event_dbs(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|p| p.ends_with("event.sqlite3"))
        .collect::<std::collections::HashSet<_>>()
        .len()
}

/// `n` numbered lines of a build log.
fn log_of(tag: &str, n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| format!("{tag} line {i:07}: cc -c src/file{}.c\n", i % 101).into_bytes())
        .collect()
}

async fn raw_log(s: &TestServer, task: &str) -> Vec<u8> {
    let resp = reqwest::get(s.url(&format!("/api/tasks/{task}/log/raw")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_event_databases_are_closed_and_open_again_for_reads_and_writes() {
    let env = start(|c| {
        // The cache's bound is far above the events here: what closes them
        // is that nobody uses them.
        c.event_db_cache = 16;
        // Nobody answers pings while the test waits: keep the builder.
        c.builder_ping_interval_ms = 600_000;
        c.builder_dead_timeout_ms = 1_200_000;
    });
    let s = &env.server;
    let pid = s.guard.id();
    let mut b = host1(s, 1).await;
    let mut done = Vec::new();
    for i in 0..3 {
        // The last log spans more than one 4 MiB block.
        let log = log_of(&format!("ev{i}"), if i == 2 { 120_000 } else { 500 });
        let task = push_and_run(s, &mut b, &format!("idle{i}"), &log).await;
        done.push((task, log));
    }
    for (t, log) in &done {
        wait_for("task stored", T, || async {
            let v = task(s, t).await;
            (v["state"] == "success" && v["log_bytes"] == log.len()).then_some(())
        })
        .await
        .unwrap();
    }
    assert!(done[2].1.len() > 4 << 20);

    wait_for("every event database closed once idle", T, || async {
        (open_event_dbs(pid) == 0).then_some(())
    })
    .await
    .unwrap();

    // Reads open them again and find every byte.
    for (t, log) in &done {
        assert!(raw_log(s, t).await == *log, "log of {t} read back");
    }
    // Writes too: a rebuild of the first task runs again, through its
    // reopened database, and replaces its log.
    let user = s.user_token("ops").unwrap();
    let (first, _) = &done[0];
    let (st, v) = post_auth(
        s,
        Method::POST,
        &format!("/api/tasks/{first}/rebuild"),
        Some(&user),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let o = b.offer(T).await.unwrap();
    assert_eq!(&o.task_id, first);
    let again = log_of("rebuilt", 300);
    b.run_task(&o, &again, TaskResult::Success).await.unwrap();
    wait_for("rebuilt task stored", T, || async {
        let v = task(s, first).await;
        (v["state"] == "success" && v["log_bytes"] == again.len()).then_some(())
    })
    .await
    .unwrap();
    assert!(raw_log(s, first).await == again);
    assert_eq!(task(s, first).await["state"], "success");

    wait_for("closed again once idle", T, || async {
        (open_event_dbs(pid) == 0).then_some(())
    })
    .await
    .unwrap();
    b.close().await;
}
