//! The live change feed on `/api/changes`: typed changes with sequence
//! numbers, resume after a reconnect, service tokens only.

mod common;

use common::*;
use futures_util::StreamExt;
use sai_core::protocol::TaskResult;
use sai_testkit::hook::{Push, TestPush};
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn subscribe(
    s: &sai_testkit::TestServer,
    token: &str,
    after: Option<u64>,
) -> Result<Ws, u16> {
    let url = match after {
        Some(a) => format!("ws://{}/api/changes?after={a}", s.addr),
        None => format!("ws://{}/api/changes", s.addr),
    };
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

async fn next(ws: &mut Ws) -> Value {
    let m = tokio::time::timeout(T, ws.next())
        .await
        .expect("a message in time");
    serde_json::from_str(m.unwrap().unwrap().to_text().unwrap()).unwrap()
}

/// Items until one matches `want`; returns all seen.
async fn until(ws: &mut Ws, want: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let v = next(ws).await;
        let done = want(&v);
        seen.push(v);
        if done {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_arrive_typed_and_a_reconnecting_subscriber_misses_nothing() {
    let env = start(|c| c.builder_dead_timeout_ms = 60_000);
    let s = &env.server;
    let service = s.service_token("sai-web").unwrap();
    assert_eq!(
        subscribe(s, &s.user_token("u").unwrap(), None).await.err(),
        Some(401)
    );
    assert_eq!(subscribe(s, "v4.public.nope", None).await.err(), Some(401));

    let mut ws = subscribe(s, &service, Some(0)).await.unwrap();
    let hello = next(&mut ws).await;
    assert_eq!(hello["t"], "hello");
    let epoch = hello["epoch"].as_str().unwrap().to_string();
    let ev = push_ok(s, &Push::new("demo", SMALL)).await;
    let created = until(&mut ws, |v| v["change"]["kind"] == "event_created").await;
    let last = created.last().unwrap();
    assert_eq!(last["change"]["event"], ev.as_str());
    assert_eq!(last["change"]["project"], "demo");
    let mut seq = last["seq"].as_u64().unwrap();

    let mut b = fake_builder(s, "b1", &["linux-debian"], &[(LINUX, 1)]).await;
    let seen = until(&mut ws, |v| v["change"]["kind"] == "builder_changed").await;
    assert_eq!(seen.last().unwrap()["change"]["online"], true);
    let o = b.offer(T).await.unwrap();
    b.run_task(&o, b"hello\n", TaskResult::Success)
        .await
        .unwrap();
    let seen = until(&mut ws, |v| {
        v["change"]["kind"] == "task_changed" && v["change"]["state"] == "success"
    })
    .await;
    assert!(seen.iter().any(|v| v["change"]
        == serde_json::json!({"kind": "log_appended", "task": o.task_id, "offset": 0, "len": 6})));
    for v in &seen {
        let n = v["seq"].as_u64().unwrap();
        assert!(n > seq, "sequence numbers increase: {n} after {seq}");
        seq = n;
    }
    drop(ws);

    // Changes while away are delivered after reconnecting with the last seq.
    let o2 = b.offer(T).await.unwrap();
    b.fail_task(&o2, b"", 1).await.unwrap();
    let mut ws = subscribe(s, &service, Some(seq)).await.unwrap();
    assert_eq!(next(&mut ws).await["epoch"], epoch.as_str());
    let seen = until(&mut ws, |v| {
        v["change"]["task"] == o2.task_id.as_str() && v["change"]["state"] == "failed"
    })
    .await;
    assert_eq!(seen[0]["seq"].as_u64().unwrap(), seq + 1, "nothing skipped");
}

#[tokio::test(flavor = "multi_thread")]
async fn event_states_deletion_and_a_departing_builder_are_announced() {
    let env = start(|c| c.builder_dead_timeout_ms = 60_000);
    let s = &env.server;
    let service = s.service_token("sai-web").unwrap();
    let mut ws = subscribe(s, &service, None).await.unwrap();
    assert_eq!(next(&mut ws).await["t"], "hello");
    let ev = push_ok(s, &Push::new("demo", SMALL)).await;

    let mut b = fake_builder(s, "b1", &["linux-debian"], &[(LINUX, 1)]).await;
    let o = b.offer(T).await.unwrap();
    b.run_task(&o, b"hi\n", TaskResult::Success).await.unwrap();
    let seen = until(&mut ws, |v| {
        v["change"]["kind"] == "event_changed" && v["change"]["event"] == ev.as_str()
    })
    .await;
    let state = seen.last().unwrap()["change"]["state"].clone();
    assert!(
        ["running", "running-with-failures"].contains(&state.as_str().unwrap()),
        "a started event is running: {state}"
    );

    b.close().await;
    let seen = until(&mut ws, |v| v["change"]["kind"] == "builder_changed").await;
    assert_eq!(
        seen.last().unwrap()["change"],
        serde_json::json!({"kind": "builder_changed", "builder": "b1", "online": false})
    );

    let (st, _) = as_ops(s, reqwest::Method::DELETE, &format!("/api/events/{ev}")).await;
    assert_eq!(st, 200);
    let seen = until(&mut ws, |v| {
        v["change"]["kind"] == "event_changed" && v["change"]["state"] == "deleted"
    })
    .await;
    assert_eq!(seen.last().unwrap()["change"]["event"], ev.as_str());
}
