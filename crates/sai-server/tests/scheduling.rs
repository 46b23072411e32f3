//! Scheduling order and the dispatch grace.

mod common;

use common::*;
use reqwest::Method;
use sai_core::protocol::TaskResult;
use sai_testkit::hook::{Push, TestPush};
use sai_testkit::wait_for;

#[tokio::test(flavor = "multi_thread")]
async fn configurations_that_failed_on_the_previous_push_of_the_ref_go_first() {
    let env = start(|_| {});
    let s = &env.server;
    let user = s.user_token("ops").unwrap();
    let mut b = host1(s, 1).await;

    let e1 = push_ok(s, &Push::new("demo", SMALL)).await;
    let first = b.offer(T).await.unwrap();
    b.run_task(&first, b"", TaskResult::Success).await.unwrap();
    let second = b.offer(T).await.unwrap();
    b.fail_task(&second, b"", 1).await.unwrap();
    for t in event(s, &e1).await["tasks"].as_array().unwrap() {
        if t["platform"] == ESP32 {
            let path = format!("/api/tasks/{}/cancel", t["id"].as_str().unwrap());
            assert_eq!(post_auth(s, Method::POST, &path, Some(&user)).await.0, 200);
        }
    }
    wait_for("e1 failed", T, || async {
        (event(s, &e1).await["state"] == "failed").then_some(())
    })
    .await
    .unwrap();

    // Same ref again: the configuration that failed comes before saifile order.
    let e2 = push_ok(s, &Push::new("demo", SMALL)).await;
    let o = b.offer(T).await.unwrap();
    assert_eq!(o.event_id, e2);
    assert_eq!(o.configuration, second.configuration);
    assert_eq!(task(s, &o.task_id).await["priority"], true);
    b.run_task(&o, b"", TaskResult::Success).await.unwrap();
    let o = b.offer(T).await.unwrap();
    assert_eq!(o.configuration, first.configuration);
    assert_eq!(task(s, &o.task_id).await["priority"], false);

    // Another ref has no history: saifile order.
    b.run_task(&o, b"", TaskResult::Success).await.unwrap();
    let mut p = Push::new("demo", SMALL);
    p.git_ref = "refs/heads/other".into();
    push_ok(s, &p).await;
    let o = b.offer(T).await.unwrap();
    assert_eq!(o.configuration, first.configuration);
}

#[tokio::test(flavor = "multi_thread")]
async fn dispatch_grace_delays_offers_of_a_new_push() {
    let env = start(|c| c.dispatch_grace_ms = 3000);
    let s = &env.server;
    let mut b = host1(s, 1).await;
    let ev = push_ok(s, &Push::new("demo", SMALL)).await;
    // Idle builder connected, yet nothing is offered during the grace.
    assert!(
        tasks_of(s, &ev)
            .await
            .iter()
            .all(|t| t["state"] == "waiting")
    );
    let o = b.offer(T).await.unwrap();
    assert_eq!(o.event_id, ev);
}
