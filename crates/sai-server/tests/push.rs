//! A real-world push: the libwebsockets saifile of 2021-08-17, its 548
//! tasks in one transaction, and a crash between the event database and the
//! event row.

mod common;

use common::*;
use sai_testkit::TestServer;
use sai_testkit::hook::{HookRequest, Push};

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
        // The event folder was written and renamed before the abort.
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
