//! What one push may cost (issue 9 item 4): pushes over the caps are
//! refused with 422 and the numbers, and listings come in bounded pages.

mod common;

use common::*;
use sai_testkit::hook::{Push, TestPush};

/// A saifile of `platforms` x `configurations` tasks.
fn matrix(platforms: usize, configurations: usize) -> Vec<u8> {
    let ps: Vec<String> = (0..platforms)
        .map(|i| format!("\"linux-p{i}/x86_64-amd/gcc\":{{\"build\":\"make\"}}"))
        .collect();
    let cs: Vec<String> = (0..configurations)
        .map(|i| format!("\"c{i}\":{{\"cmake\":\"\"}}"))
        .collect();
    format!(
        "{{\"schema\":\"sai-1\",\"platforms\":{{{}}},\"configurations\":{{{}}}}}",
        ps.join(","),
        cs.join(",")
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread")]
async fn pushes_over_the_default_caps_are_refused_with_the_numbers() {
    let env = start(|_| {});
    let s = &env.server;
    // 101 x 100 = 10,100 tasks from a few kilobytes.
    let (st, v) = push(s, &Push::new("demo", &matrix(101, 100))).await;
    assert_eq!(st, 422, "{v}");
    let msg = v["error"].as_str().unwrap();
    assert!(msg.contains("10100 tasks, limit 10000"), "{msg}");

    // `${cmake}` amplification: 300 copies of a 1,000-byte value in one step.
    let cmake = "x".repeat(1000);
    let step = "${cmake} ".repeat(300);
    let amplified = format!(
        "{{\"schema\":\"sai-1\",\"platforms\":{{\"linux-a/x86_64-amd/gcc\":{{\"build\":\"{step}\"}}}},\
         \"configurations\":{{\"big\":{{\"cmake\":\"{cmake}\"}}}}}}"
    );
    let (st, v) = push(s, &Push::new("demo", amplified.as_bytes())).await;
    assert_eq!(st, 422, "{v}");
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.contains("step 0 is 300300 bytes after expansion, limit 262144"),
        "{msg}"
    );
    assert_eq!(event_count(s).await, 0);
    assert!(event_folders(s).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn caps_are_configurable() {
    let env = start(|c| {
        c.limits.max_tasks_per_push = 4;
        c.limits.max_expanded_bytes = 100;
    });
    let s = &env.server;
    push_ok(s, &Push::new("demo", SMALL)).await;
    let (st, v) = push(s, &Push::new("demo", &matrix(5, 1))).await;
    assert_eq!(st, 422, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("5 tasks, limit 4"),
        "{v}"
    );
    let long = br#"{"schema":"sai-1","platforms":{"linux-a/x86_64-amd/gcc":{"build":"echo 0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"}},"configurations":{"c":{}}}"#;
    let (st, v) = push(s, &Push::new("demo", long)).await;
    assert_eq!(st, 422, "{v}");
    assert!(v["error"].as_str().unwrap().contains("105 bytes"), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_with_many_tasks_is_read_in_bounded_pages() {
    let env = start(|_| {});
    let s = &env.server;
    // 1,500 tasks: more than one default page (1,000).
    let id = push_ok(s, &Push::new("demo", &matrix(30, 50))).await;
    let e = event(s, &id).await;
    let first = e["tasks"].as_array().unwrap();
    assert_eq!(first.len(), 1000, "one page by default");
    assert_eq!(e["task_count"], 1500);
    assert_eq!(e["task_states"]["waiting"], 1500, "counts cover every task");
    let cursor = e["next_cursor"].as_str().expect("a next page").to_string();
    let (st, e2) = get(s, &format!("/api/events/{id}?cursor={cursor}")).await;
    assert_eq!(st, 200);
    let second = e2["tasks"].as_array().unwrap();
    assert_eq!(second.len(), 500);
    assert!(e2["next_cursor"].is_null());
    let mut ids: Vec<&str> = first
        .iter()
        .chain(second)
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 1500, "pages neither overlap nor skip");
    // A larger limit is clamped to the cap.
    let (_, e3) = get(s, &format!("/api/events/{id}?limit=100000")).await;
    assert_eq!(e3["tasks"].as_array().unwrap().len(), 1000);
    let (st, _) = get(s, &format!("/api/events/{id}?cursor=nope")).await;
    assert_eq!(st, 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_projects_events_are_paged_with_a_cursor() {
    let env = start(|_| {});
    let s = &env.server;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(push_ok(s, &Push::new("demo", SMALL)).await);
    }
    let r = reqwest::get(s.url("/api/projects/demo/events?limit=2"))
        .await
        .unwrap();
    let cursor = r.headers()["x-sai-next-cursor"]
        .to_str()
        .unwrap()
        .to_string();
    let page: serde_json::Value = r.json().await.unwrap();
    assert_eq!(page[0]["id"], ids[2].as_str());
    assert_eq!(page[1]["id"], ids[1].as_str());
    let r = reqwest::get(s.url(&format!(
        "/api/projects/demo/events?limit=2&cursor={cursor}"
    )))
    .await
    .unwrap();
    assert!(r.headers().get("x-sai-next-cursor").is_none());
    let page: serde_json::Value = r.json().await.unwrap();
    assert_eq!(page.as_array().unwrap().len(), 1);
    assert_eq!(page[0]["id"], ids[0].as_str());
}
