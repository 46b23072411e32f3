//! A re-run's log is kept apart from the killed attempt's log by a notice,
//! and the task shows its attempt (issue 9 item 9a).

mod common;

use common::*;
use sai_core::protocol::TaskResult;
use sai_testkit::hook::{Push, TestPush};

#[tokio::test(flavor = "multi_thread")]
async fn a_rerun_log_starts_with_a_notice_after_the_killed_attempts_log() {
    let env = start(|c| c.max_infra_attempts = 3);
    let s = &env.server;
    let (mut b, o) = host1_running(s, &Push::new("demo", SMALL)).await;
    b.log(&o.task_id, 1, b"first attempt, killed\n")
        .await
        .unwrap();
    sai_testkit::wait_for("first attempt's log stored", T, || async {
        (s.raw_log(&o.task_id).await == b"first attempt, killed\n").then_some(())
    })
    .await
    .unwrap();
    b.drop_connection();
    task_state(s, &o.task_id, "waiting").await;

    let mut b = host1(s, 1).await;
    let o2 = b.offer(T).await.unwrap();
    assert_eq!((o2.task_id.as_str(), o2.attempt), (o.task_id.as_str(), 2));
    b.run_task(&o2, b"second attempt\n", TaskResult::Success)
        .await
        .unwrap();
    let t = task_state(s, &o.task_id, "success").await;
    assert_eq!(t["attempt"], 2, "{t}");
    let log = String::from_utf8(s.raw_log(&o.task_id).await).unwrap();
    let first = log
        .find("first attempt, killed")
        .expect("first attempt kept");
    let notice = log
        .find("---- attempt 2 starts here")
        .unwrap_or_else(|| panic!("no attempt notice in {log:?}"));
    let second = log.find("second attempt\n").expect("second attempt");
    assert!(first < notice && notice < second, "{log:?}");
}
