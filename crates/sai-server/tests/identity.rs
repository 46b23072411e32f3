//! Builder identity over real websockets: a token's platforms are exactly
//! what it may offer, one connection per builder name (the newer replaces
//! the older), and a task held by a silent builder comes back at its
//! deadline.

mod common;

use std::time::Duration;

use common::*;
use sai_core::protocol::{CLOSE_POLICY, CLOSE_REPLACED, PROTOCOL_VERSION, ServerMessage};
use sai_testkit::FakeBuilder;
use sai_testkit::hook::{Push, TestPush};

const EVIL: &[u8] = br#"{
  "schema": "sai-1",
  "platforms": {
    "lnx-ab/x86_64/gcc-evil": { "build": "cat secrets" },
    "lnx-a/x86_64/gcc": { "build": "make" }
  },
  "configurations": { "default": { "cmake": "" } }
}
"#;

/// Hello with `offers` on a token for `grants`: the close code and reason
/// when refused, `None` when welcomed.
async fn hello(
    s: &sai_testkit::TestServer,
    grants: &[&str],
    offers: &[(&str, u32)],
) -> Option<(u16, String)> {
    let token = s.builder_token("b1", grants).unwrap();
    let mut b = FakeBuilder::connect(&s.builder_url(), Some(&token))
        .await
        .unwrap()
        .unwrap();
    b.hello(PROTOCOL_VERSION, "b1", offers).await.unwrap();
    match b.next(T).await {
        Ok(ServerMessage::Welcome { .. }) => None,
        Ok(m) => panic!("unexpected {m:?}"),
        Err(_) => b.closed.clone(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_allows_exactly_its_platforms() {
    let env = start(|_| {});
    let s = &env.server;
    push_ok(s, &Push::new("demo", EVIL)).await;
    let full = "lnx-a/x86_64/gcc";
    for evil in [
        "lnx-ab/x86_64/gcc-evil",
        "lnx-ab/x86_64/gcc",
        "lnx-a/x86_64/gcc-evil",
    ] {
        let (code, reason) = hello(s, &[full], &[(evil, 1)])
            .await
            .unwrap_or_else(|| panic!("{evil} was welcomed on a token for {full}"));
        assert_eq!(code, CLOSE_POLICY);
        assert!(
            reason.contains(evil) && reason.contains("not allowed by the builder token"),
            "{reason}"
        );
    }
    // The exact platform, and a family grant at '-' boundaries, are fine.
    assert_eq!(hello(s, &[full], &[(full, 1)]).await, None);
    assert_eq!(hello(s, &["lnx-a"], &[("lnx-a/x86_64/gcc", 1)]).await, None);
    assert!(
        hello(s, &["lnx-a"], &[("lnx-ab/x86_64/gcc-evil", 1)])
            .await
            .is_some()
    );
    // The evil task was never offered to anyone.
    let (_, evs) = get(s, "/api/projects/demo/events").await;
    let ev = evs[0]["id"].as_str().unwrap().to_string();
    for t in tasks_of(s, &ev).await {
        if t["platform"] == "lnx-ab/x86_64/gcc-evil" {
            assert_eq!(t["state"], "waiting", "{t}");
            assert_eq!(t["attempt"], 0, "{t}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_newer_connection_of_a_builder_replaces_the_older_without_counting() {
    // The older fake builder is not read while the newer connects: it must
    // not look dead (closed 1001) on a busy host before it is replaced.
    let env = start(|c| c.builder_dead_timeout_ms = 30_000);
    let s = &env.server;
    let (mut old, o) = host1_running(s, &Push::new("demo", SMALL)).await;
    task_state(s, &o.task_id, "running").await;
    sai_testkit::wait_for("accepted", T, || async {
        (task(s, &o.task_id).await["attempt"] == 1).then_some(())
    })
    .await
    .unwrap();

    let mut new = host1(s, 1).await;
    let (code, reason) = old.closed_by_server(T).await.unwrap();
    assert_eq!(code, CLOSE_REPLACED);
    assert!(
        reason.contains("replaced by a newer connection"),
        "{reason}"
    );
    // The task comes back to the newer connection as the same attempt.
    let again = new.offer(T).await.unwrap();
    assert_eq!(again.task_id, o.task_id);
    assert_eq!(again.attempt, 1, "the replaced try is not counted");
    let t = task(s, &o.task_id).await;
    assert_eq!(t["infra_failures"], 0, "{t}");
    let (_, builders) = get(s, "/api/builders").await;
    let online: Vec<_> = builders
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["online"] == true)
        .collect();
    assert_eq!(online.len(), 1, "{builders}");
    // The newer connection runs it to the end.
    new.run_task(&again, b"ok\n", sai_core::protocol::TaskResult::Success)
        .await
        .unwrap();
    let t = task_state(s, &o.task_id, "success").await;
    assert_eq!(t["attempt"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_held_by_a_silent_builder_comes_back_at_its_deadline() {
    let env = start(|c| c.task_deadline_secs = 2);
    let s = &env.server;
    push_ok(s, &Push::new("demo", SMALL)).await;
    let mut b = fake_builder(s, "silent", &["linux"], &[(LINUX, 1)]).await;
    let o = accept_next(&mut b).await;
    // The builder stays connected (answers pings while we poll) but never
    // reports on the task.
    let cancel = tokio::time::timeout(T, async {
        loop {
            match b.poll(Duration::from_millis(200)).await.unwrap() {
                Some(ServerMessage::Cancel { task_id, reason }) => break (task_id, reason),
                _ => continue,
            }
        }
    })
    .await
    .expect("a cancel at the deadline");
    assert_eq!(cancel.0, o.task_id);
    assert!(cancel.1.contains("task deadline of 2 s"), "{}", cancel.1);
    let t = task(s, &o.task_id).await;
    assert_eq!(t["infra_failures"], 1, "{t}");
    assert!(
        t["reason"]
            .as_str()
            .unwrap()
            .contains("builder silent gave no result within the task deadline of 2 s"),
        "{t}"
    );
    // Another builder gets it.
    let mut other = fake_builder(s, "other", &["linux"], &[(LINUX, 1)]).await;
    assert_eq!(other.offer(T).await.unwrap().task_id, o.task_id);
}
