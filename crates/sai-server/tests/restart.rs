//! Restart durability: what the server acknowledged survives a crash
//! (SIGKILL) and a clean stop (SIGTERM).

mod common;

use common::*;
use sai_core::protocol::TaskResult;
use sai_testkit::hook::{Push, TestPush};
use sai_testkit::{TestServer, wait_for};

#[tokio::test(flavor = "multi_thread")]
async fn restart_keeps_every_acknowledged_event_task_and_log() {
    // Requeued at once (the graceful claim-back is tested with the real
    // builder in sai-builder/tests/daemon_server_restart.rs).
    let env = start(|c| c.restart_grace_secs = 0);
    let (cfg, mut s) = (env.config, env.server);
    let ev = push_ok(&s, &Push::new("demo", SMALL)).await;
    let ev2 = push_ok(&s, &Push::new("other", SMALL)).await;
    let mut b = host1(&s, 1).await;

    // One finished task with a log.
    let o1 = b.offer(T).await.unwrap();
    let log1: Vec<u8> = (0..100_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    b.run_task(&o1, &log1, TaskResult::Success).await.unwrap();
    // One running task whose log the server acknowledged (credit returned).
    let o2 = accept_next(&mut b).await;
    b.log(&o2.task_id, 2, b"still building\n").await.unwrap();
    b.acknowledged(T).await.unwrap();
    let before_kill = event(&s, &ev).await;

    // Crash.
    s.guard.kill();
    drop(b);
    let mut s = TestServer::start(&bin(), &cfg, &[]).unwrap();
    let after = event(&s, &ev).await;
    assert_eq!(after["tasks"].as_array().unwrap().len(), 4);
    assert_eq!(after["hash"], before_kill["hash"]);
    assert_eq!(event(&s, &ev2).await["tasks"].as_array().unwrap().len(), 4);
    let t1 = task(&s, &o1.task_id).await;
    assert_eq!(t1["state"], "success");
    let raw = s.raw_log(&o1.task_id).await;
    assert_eq!(&raw[..], &log1[..]);
    let t2 = task(&s, &o2.task_id).await;
    assert_eq!(
        t2["state"], "waiting",
        "running tasks are requeued after a restart: {t2}"
    );
    let (_, l2) = get(&s, &format!("/api/tasks/{}/log", o2.task_id)).await;
    assert_eq!(l2["records"][0]["text"], "still building\n");

    // The requeued task is offered again and appends to its log.
    let mut b = host1(&s, 1).await;
    let o2b = b.offer(T).await.unwrap();
    assert_eq!(o2b.task_id, o2.task_id);
    b.run_task(&o2b, b"done\n", TaskResult::Success)
        .await
        .unwrap();
    wait_for("task done", T, || async {
        (task(&s, &o2.task_id).await["state"] == "success").then_some(())
    })
    .await
    .unwrap();

    // Clean stop: exit status 0, and everything is still there.
    let st = s.guard.stop().unwrap();
    assert!(st.success(), "{st:?}\n{}", s.log());
    drop(b);
    let s = TestServer::start(&bin(), &cfg, &[]).unwrap();
    let raw = s.raw_log(&o2.task_id).await;
    // The re-run's log follows the first attempt's, after Sai's separator.
    assert_eq!(
        String::from_utf8_lossy(&raw),
        "still building\n\nsai-server: ---- attempt 2 starts here on builder host1; \
         the log above is from earlier attempts ----\ndone\n"
    );
    assert_eq!(event_count(&s).await, 2);
}
