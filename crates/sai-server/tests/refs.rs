//! Refs git forbids are refused naming the rule, and an event is one
//! commit on one ref (issue 9 item 9, b and c).

mod common;

use common::*;
use sai_testkit::hook::{Push, TestPush};

#[tokio::test(flavor = "multi_thread")]
async fn refs_git_forbids_are_refused_with_the_rule() {
    let env = start(|_| {});
    let s = &env.server;
    for (git_ref, rule) in [
        ("refs/heads/a:b", "contains ':'"),
        ("refs/heads/a~1", "contains '~'"),
        ("refs/heads/end.lock", "ending with \".lock\""),
        ("refs/heads/a@{1}", "contains \"@{\""),
        ("refs/heads/", "empty component"),
    ] {
        let mut p = Push::new("demo", SMALL);
        p.git_ref = git_ref.into();
        let (st, v) = push(s, &p).await;
        assert_eq!(st, 400, "{git_ref}: {v}");
        let msg = v["error"].as_str().unwrap();
        assert!(msg.contains(rule), "{git_ref}: {msg}");
    }
    assert_eq!(event_count(s).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_commit_on_a_second_ref_is_a_new_event() {
    let env = start(|_| {});
    let s = &env.server;
    let main = Push::new("demo", SMALL);
    let mut release = main.clone();
    release.git_ref = "refs/heads/release".into();
    let e1 = push_ok(s, &main).await;
    let (st, v) = push(s, &release).await;
    assert_eq!(st, 200, "{v}");
    assert!(
        v["duplicate"].is_null(),
        "a second ref is not a duplicate: {v}"
    );
    let e2 = v["event_id"].as_str().unwrap();
    assert_ne!(e1, e2);
    assert_eq!(event(s, e2).await["ref"], "refs/heads/release");
    // The same commit on the same ref again is still the duplicate.
    let (st, v) = push(s, &main).await;
    assert_eq!(st, 200);
    assert_eq!(v["duplicate"], true, "{v}");
    assert_eq!(v["event_id"], e1.as_str());
    assert_eq!(event_count(s).await, 2);
}
