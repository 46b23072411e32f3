//! A captured hook notification replayed after its event was deleted or
//! removed by retention creates nothing (issue 9 item 8): the nonce is
//! remembered, and a timestamp outside the window is refused.

mod common;

use common::*;
use reqwest::Method;
use sai_core::notification::Notification;
use sai_testkit::hook::{HookRequest, Push, TestPush, curl_multipart, signature, unix_now};
use sai_testkit::wait_for;

/// The request `hooks/sai-notify` sends for `p`, made at `timestamp`.
fn captured(p: &Push, timestamp: Option<i64>) -> HookRequest {
    let mut nonce = [0u8; 16];
    rand::fill(&mut nonce[..]);
    let mut n = Notification::new(
        &p.project,
        &p.fetch_url,
        &p.git_ref,
        &p.hash,
        &p.saifile,
        nonce,
    );
    n.timestamp = timestamp;
    let file = n.file_bytes();
    let (ct, body) = curl_multipart("sai-notification.json", &file);
    HookRequest {
        authorization: Some(signature(KEY, &file)),
        content_type: ct,
        body,
    }
}

async fn send(s: &sai_testkit::TestServer, r: &HookRequest) -> (u16, serde_json::Value) {
    let r = r.send(&s.url("/update-hook")).await.unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_after_deletion_creates_no_event() {
    let env = start(|_| {});
    let s = &env.server;
    // With a timestamp (sai-notify, `sai notify`) and without (the original hook).
    for timestamp in [Some(unix_now()), None] {
        let req = captured(&Push::new("demo", SMALL), timestamp);
        let (st, v) = send(s, &req).await;
        assert_eq!(st, 200, "{v}");
        let id = v["event_id"].as_str().unwrap().to_string();
        // While the event exists a replay is the idempotent duplicate.
        let (st, v) = send(s, &req).await;
        assert_eq!(
            (st, &v["duplicate"]),
            (200, &serde_json::json!(true)),
            "{v}"
        );

        let (st, _) = as_ops(s, Method::DELETE, &format!("/api/events/{id}")).await;
        assert_eq!(st, 200);
        let (st, v) = send(s, &req).await;
        assert_eq!(st, 409, "replay after deletion: {v}");
        assert!(v["error"].as_str().unwrap().contains("replayed"), "{v}");
        assert_eq!(event_count(s).await, 0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_after_retention_creates_no_event() {
    let env = start(|c| c.retention.keep_events_per_project = Some(1));
    let s = &env.server;
    let first = captured(&Push::new("demo", SMALL), Some(unix_now()));
    let (st, v) = send(s, &first).await;
    assert_eq!(st, 200, "{v}");
    let id = v["event_id"].as_str().unwrap().to_string();
    for t in tasks_of(s, &id).await {
        let tid = t["id"].as_str().unwrap();
        let (st, v) = as_ops(s, Method::POST, &format!("/api/tasks/{tid}/cancel")).await;
        assert_eq!(st, 200, "{v}");
    }
    push_ok(s, &Push::new("demo", SMALL)).await;
    wait_for("retention removed the first event", T, || async {
        (get(s, &format!("/api/events/{id}")).await.0 == 404).then_some(())
    })
    .await
    .unwrap();
    let (st, v) = send(s, &first).await;
    assert_eq!(st, 409, "replay after retention: {v}");
    assert_eq!(event_count(s).await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timestamp_outside_the_window_is_refused_with_the_numbers() {
    let env = start(|c| c.limits.hook_window_secs = 60);
    let s = &env.server;
    let (st, v) = send(
        s,
        &captured(&Push::new("demo", SMALL), Some(unix_now() - 3600)),
    )
    .await;
    assert_eq!(st, 403, "{v}");
    let msg = v["error"].as_str().unwrap();
    assert!(msg.contains("60 s window"), "{msg}");
    let (st, v) = send(
        s,
        &captured(&Push::new("demo", SMALL), Some(unix_now() + 3600)),
    )
    .await;
    assert_eq!(st, 403, "{v}");
    assert_eq!(event_count(s).await, 0);
    assert!(event_folders(s).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_may_require_timestamps() {
    let env = start(|c| c.limits.hook_require_timestamp = true);
    let s = &env.server;
    let (st, v) = send(s, &captured(&Push::new("demo", SMALL), None)).await;
    assert_eq!(st, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("timestamp"), "{v}");
    let (st, v) = send(s, &captured(&Push::new("demo", SMALL), Some(unix_now()))).await;
    assert_eq!(st, 200, "{v}");
}
