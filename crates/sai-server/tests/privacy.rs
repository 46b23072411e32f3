//! Private events stay private: anonymous callers of `/api/projects` and
//! `/api/builders` see no private project, no running private task and no
//! builder address; signed-in callers see everything (issue 9 item 7).

mod common;

use common::*;
use reqwest::Method;
use sai_testkit::hook::{HookRequest, Push, TestPush};

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_callers_see_no_private_project_task_or_builder_address() {
    let env = start(patient_builders);
    let s = &env.server;
    let mut secret = Push::new("secret", SMALL);
    secret.fetch_url = "https://git.example.invalid/hidden-fetch-url".into();
    let r = HookRequest::private_like_sai_sh(&secret, KEY)
        .send(&s.url("/update-hook"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut b = fake_builder(s, "host1", &["linux-debian"], &[(LINUX, 1)]).await;
    let offer = b.offer(T).await.unwrap();
    assert_eq!(offer.project, "secret");
    b.accept(&offer.task_id).await.unwrap();
    push_ok(s, &Push::new("open", SMALL)).await;
    let user = s.user_token("ops").unwrap();
    sai_testkit::wait_for("the private task listed as running", T, || async {
        let (_, bs) = post_auth(s, Method::GET, "/api/builders", Some(&user)).await;
        bs.to_string().contains(&offer.task_id).then_some(())
    })
    .await
    .unwrap();

    let anon_projects = s.get_text("/api/projects").await;
    let projects: serde_json::Value = serde_json::from_str(&anon_projects).unwrap();
    let names = sai_testkit::field_of_each(&projects, "name");
    assert_eq!(names, ["open"], "{anon_projects}");
    assert!(
        !anon_projects.contains("hidden-fetch-url"),
        "{anon_projects}"
    );
    assert_eq!(projects[0]["event_count"], 1);
    assert_eq!(get(s, "/api/projects/secret/events").await.0, 404);

    let anon_builders = s.get_text("/api/builders").await;
    assert!(anon_builders.contains("host1"), "{anon_builders}");
    assert!(
        !anon_builders.contains(&offer.task_id),
        "a private running task is listed: {anon_builders}"
    );
    assert!(
        !anon_builders.contains("127.0.0.1"),
        "a builder address is shown: {anon_builders}"
    );

    // Signed in (a user token, or sai-web acting for a user): everything.
    let (_, projects) = post_auth(s, Method::GET, "/api/projects", Some(&user)).await;
    assert_eq!(projects.as_array().unwrap().len(), 2, "{projects}");
    let (_, bs) = post_auth(s, Method::GET, "/api/builders", Some(&user)).await;
    let text = bs.to_string();
    assert!(text.contains(&offer.task_id), "{text}");
    assert!(text.contains("127.0.0.1"), "{text}");
    let service = s.service_token("sai-web").unwrap();
    let p = sai_testkit::body_text(
        reqwest::Client::new()
            .get(s.url("/api/projects"))
            .bearer_auth(&service)
            .header("x-sai-on-behalf-of", "alice"),
    )
    .await;
    assert!(p.contains("hidden-fetch-url"), "{p}");
    let (st, evs) = post_auth(s, Method::GET, "/api/projects/secret/events", Some(&user)).await;
    assert_eq!(st, 200);
    assert_eq!(evs.as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_project_with_public_and_private_events_shows_only_the_public_ones() {
    let env = start(|_| {});
    let s = &env.server;
    let mut private = Push::new("mixed", SMALL);
    private.fetch_url = "https://git.example.invalid/private-url".into();
    HookRequest::private_like_sai_sh(&private, KEY)
        .send(&s.url("/update-hook"))
        .await
        .unwrap();
    push_ok(s, &Push::new("mixed", SMALL)).await;
    let (_, projects) = get(s, "/api/projects").await;
    assert_eq!(projects[0]["name"], "mixed");
    assert_eq!(projects[0]["event_count"], 1, "{projects}");
    assert_eq!(
        projects[0]["fetch_url"], "https://git.example.invalid/mixed",
        "{projects}"
    );
    let user = s.user_token("ops").unwrap();
    let (_, projects) = post_auth(s, Method::GET, "/api/projects", Some(&user)).await;
    assert_eq!(projects[0]["event_count"], 2, "{projects}");
}
