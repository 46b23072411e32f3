//! Builders that come and go (issues 11.1, 11.2 and 9.2), through the real
//! server and websockets: restarts never fail or charge waiting tasks, a
//! link that says it is shutting down gets no offers, and a fleet of
//! builders coming and going over an unrunnable backlog keeps the API
//! answering and leaves no connection behind.

mod common;

use std::time::{Duration, Instant};

use common::*;
use sai_core::protocol::BuilderMessage;
use sai_testkit::FakeBuilder;
use sai_testkit::hook::{Push, TestPush};

const TWO_LINUX: &[u8] = br#"{
  "schema": "sai-1",
  "platforms": {"linux-debian-12/x86_64-amd/gcc": {"build": "true"}},
  "configurations": {"a": {"cmake": ""}, "b": {"cmake": ""}}
}"#;

async fn waiting_and_uncharged(s: &sai_testkit::TestServer, ev: &str) {
    for t in tasks_of(s, ev).await {
        assert_eq!(t["state"], "waiting", "{t}");
        assert_eq!(t["attempt"], 0, "{t}");
        assert_eq!(t["infra_failures"], 0, "{t}");
    }
}

/// A server with two waiting linux tasks; its event id and a builder token.
async fn two_waiting() -> (Env, String, String) {
    let env = start(|c| c.max_infra_attempts = 3);
    let ev = push_ok(&env.server, &Push::new("demo", TWO_LINUX)).await;
    let token = env.server.builder_token("host1", &["linux"]).unwrap();
    (env, ev, token)
}

#[tokio::test(flavor = "multi_thread")]
async fn restarting_a_builder_five_times_while_tasks_wait_fails_and_charges_none() {
    let (env, ev, token) = two_waiting().await;
    let s = &env.server;
    for _ in 0..5 {
        let mut b = FakeBuilder::start(&s.builder_url(), &token, "host1", &[(LINUX, 1)])
            .await
            .unwrap();
        // Offered while it goes away; it never accepts.
        b.offer(T).await.unwrap();
        b.drop_connection();
        no_builder_online(s).await;
        waiting_and_uncharged(s, &ev).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_builder_that_said_it_is_shutting_down_gets_no_offers_and_charges_nothing() {
    let (env, ev, token) = two_waiting().await;
    let s = &env.server;
    let mut b = FakeBuilder::start(&s.builder_url(), &token, "host1", &[(LINUX, 2)])
        .await
        .unwrap();
    let o = b.offer(T).await.unwrap();
    let second = b.offer(T).await.unwrap();
    b.accept(&o.task_id).await.unwrap();
    b.send(&BuilderMessage::ShuttingDown).await.unwrap();
    b.reject(&second.task_id, "shutting down").await.unwrap();
    // Declined, and nothing else is offered to a link that is going away.
    assert!(b.poll(Duration::from_millis(500)).await.unwrap().is_none());
    // The link ends before the running task's hand-back arrives.
    b.drop_connection();
    let t = task_state(s, &o.task_id, "waiting").await;
    waiting_and_uncharged(s, &ev).await;
    assert!(
        t["reason"].as_str().unwrap().contains("shutting down"),
        "{t}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_over_an_unrunnable_backlog_keeps_the_api_answering_and_leaves_nothing_open() {
    let env = start(|c| c.max_saifile_base64 = 1 << 20);
    let s = &env.server;
    // 548 tasks over 30 platforms that none of the builders offer.
    push_ok(s, &Push::new("lws", &lws_saifile())).await;
    // One name per builder: a second connection of a name replaces the
    // first. Tokens are minted before any builder connects.
    let tokens: Vec<(String, String)> = (0..100)
        .map(|i| {
            let name = format!("fleet-{i}");
            let token = s.builder_token(&name, &["other"]).unwrap();
            (name, token)
        })
        .collect();
    let mut fleet = Vec::new();
    for (name, token) in &tokens {
        fleet.push(
            FakeBuilder::start(&s.builder_url(), token, name, &[("other/x/y", 4)])
                .await
                .unwrap(),
        );
    }
    let started = Instant::now();
    let (st, bs) = get(s, "/api/builders").await;
    assert_eq!(st, 200);
    let online = bs
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["online"] == true)
        .count();
    assert_eq!(online, 100);
    let (st, _) = get(s, "/api/projects").await;
    assert_eq!(st, 200);
    // A generous bound for a loaded 2-core CI machine; the old scheduler
    // rescanned the backlog per connection and took seconds here.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    for b in fleet {
        b.drop_connection();
    }
    no_builder_online(s).await;
    // A runnable push is still offered at once.
    let mut b = fake_builder(s, "host1", &["linux"], &[(LINUX, 1)]).await;
    let ev = push_ok(s, &Push::new("demo", TWO_LINUX)).await;
    assert_eq!(b.offer(T).await.unwrap().event_id, ev);
}
