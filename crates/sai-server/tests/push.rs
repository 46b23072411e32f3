//! A real-world push: the libwebsockets saifile of 2021-08-17, its 548
//! tasks in one transaction, and a crash between the event database and the
//! event row.

mod common;

use common::*;
use sai_testkit::TestServer;
use sai_testkit::hook::{HookRequest, Push, TestPush};

#[tokio::test(flavor = "multi_thread")]
async fn libwebsockets_20210817_push_creates_548_distinct_tasks() {
    let env = start(|_| {});
    let s = &env.server;
    let p = Push::new("libwebsockets", &lws_saifile());
    let id = push_ok(s, &p).await;
    let ev = event(s, &id).await;
    let tasks = ev["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 548);
    assert_eq!(ev["task_count"], 548);
    let distinct: std::collections::HashSet<(String, String)> = tasks
        .iter()
        .map(|t| {
            (
                t["configuration"].as_str().unwrap().into(),
                t["platform"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(distinct.len(), 548);
    let platforms: std::collections::HashSet<&str> = tasks
        .iter()
        .map(|t| t["platform"].as_str().unwrap())
        .collect();
    assert_eq!(platforms.len(), 30);
}

#[cfg(debug_assertions)]
#[tokio::test(flavor = "multi_thread")]
async fn crash_between_event_db_and_event_row_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config_in(tmp.path().join("data"));
    let p = Push::new("libwebsockets", &lws_saifile());
    {
        let mut s = TestServer::start(
            &bin(),
            &cfg,
            &[("SAI_SERVER_FAULT", "abort-after-event-db")],
        )
        .unwrap();
        let r = HookRequest::like_sai_sh(&p, KEY)
            .send(&s.url("/sai/update-hook"))
            .await;
        assert!(
            r.is_err(),
            "the connection must die with the process: {r:?}"
        );
        let st = s.guard.wait_exit(T).expect("server aborted");
        assert!(!st.success());
        // The event folder was written (in place, not yet named by any
        // event row) before the abort.
        assert_eq!(event_folders(&s).len(), 1, "{:?}", event_folders(&s));
    }
    let s = TestServer::start(&bin(), &cfg, &[]).unwrap();
    assert!(
        event_folders(&s).is_empty(),
        "orphan left: {:?}",
        event_folders(&s)
    );
    assert_eq!(event_count(&s).await, 0);
    let (_, projects) = get(&s, "/api/projects").await;
    assert_eq!(projects.as_array().unwrap().len(), 0);
    let id = push_ok(&s, &p).await;
    assert_eq!(event(&s, &id).await["tasks"].as_array().unwrap().len(), 548);
    assert_eq!(event_folders(&s), vec![id]);
}

/// A saifile of `n` tasks (one configuration per task).
fn n_tasks(n: usize) -> Vec<u8> {
    let configs: Vec<String> = (0..n)
        .map(|i| format!(r#""c{i}":{{"cmake":""}}"#))
        .collect();
    format!(
        r#"{{"schema":"sai-1","platforms":{{"linux-debian-12/x86_64-amd/gcc":{{"build":"true"}}}},"configurations":{{{}}}}}"#,
        configs.join(",")
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_concurrent_pushes_keeps_every_acknowledged_push_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config_in(tmp.path().join("data"));
    let mut s = TestServer::start(&bin(), &cfg, &[]).unwrap();
    let url = s.url("/sai/update-hook");
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    // Eight clients pushing 20-task events back to back (group commits).
    let mut clients = Vec::new();
    for c in 0..8 {
        let (url, acked) = (url.clone(), acked.clone());
        clients.push(tokio::spawn(async move {
            for _ in 0..1000 {
                let p = Push::new(&format!("p{c}"), &n_tasks(20));
                let Ok(r) = HookRequest::like_sai_sh(&p, KEY).send(&url).await else {
                    return;
                };
                if r.status().as_u16() != 200 {
                    return;
                }
                let Ok(v) = r.json::<serde_json::Value>().await else {
                    return;
                };
                acked
                    .lock()
                    .unwrap()
                    .push(v["event_id"].as_str().unwrap().to_string());
            }
        }));
    }
    sai_testkit::wait_for("some pushes acknowledged", T, || async {
        (acked.lock().unwrap().len() >= 24).then_some(())
    })
    .await
    .unwrap();
    s.guard.kill();
    for c in clients {
        c.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    let s = TestServer::start(&bin(), &cfg, &[]).unwrap();
    for id in &acked {
        let ev = event(&s, id).await;
        assert_eq!(ev["task_count"], 20, "{id}");
        assert_eq!(ev["tasks"].as_array().unwrap().len(), 20, "{id}");
    }
    // No half event: every row has its folder with all its tasks, every
    // folder its row.
    let rows = event_count(&s).await;
    assert!(rows >= acked.len());
    let mut folders = event_folders(&s);
    folders.sort();
    assert_eq!(folders.len(), rows, "{folders:?}");
    for id in &folders {
        assert_eq!(tasks_of(&s, id).await.len(), 20, "{id}");
    }
}
