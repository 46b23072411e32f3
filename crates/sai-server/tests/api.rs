//! Operations API: listing, deletion, retention, the OpenAPI document.

mod common;

use common::*;
use reqwest::Method;
use sai_testkit::hook::Push;
use sai_testkit::wait_for;

#[tokio::test(flavor = "multi_thread")]
async fn listing_deleting_and_openapi() {
    let env = start(|_| {});
    let s = &env.server;
    let e1 = push_ok(s, &Push::new("demo", SMALL)).await;
    let e2 = push_ok(s, &Push::new("demo", SMALL)).await;

    let (st, projects) = get(s, "/api/projects").await;
    assert_eq!(st, 200);
    assert_eq!(projects[0]["name"], "demo");
    assert_eq!(projects[0]["event_count"], 2);
    let (_, evs) = get(s, "/api/projects/demo/events").await;
    let ids: Vec<&str> = evs
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![e2.as_str(), e1.as_str()], "newest first");
    assert_eq!(evs[0]["state"], "waiting");
    assert_eq!(get(s, "/api/projects/nope/events").await.0, 404);

    for bad in [
        "/api/events/..%2F..%2Fetc",
        "/api/events/abc",
        "/api/tasks/0123",
        "/api/tasks/x/log",
    ] {
        let (st, v) = get(s, bad).await;
        assert_eq!(st, 404, "{bad}: {v}");
        assert!(v["error"].is_string());
    }
    let lower = e1.to_lowercase();
    assert_eq!(get(s, &format!("/api/events/{lower}")).await.0, 404);

    let user = s.user_token("ops").unwrap();
    assert_eq!(
        post_auth(s, Method::DELETE, &format!("/api/events/{e1}"), None)
            .await
            .0,
        401
    );
    let (st, v) = post_auth(s, Method::DELETE, &format!("/api/events/{e1}"), Some(&user)).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(get(s, &format!("/api/events/{e1}")).await.0, 404);
    wait_for("event folder removed", T, || async {
        (!event_folders(s).contains(&e1)).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(event_folders(s), vec![e2.clone()]);

    let (st, v) = post_auth(
        s,
        Method::POST,
        &format!("/api/events/{e2}/rebuild"),
        Some(&user),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["state"], "waiting");

    let (st, doc) = get(s, "/api/openapi.json").await;
    assert_eq!(st, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for p in [
        "/api/projects",
        "/api/projects/{project}/events",
        "/api/events/{id}",
        "/api/tasks/{id}",
        "/api/tasks/{id}/log",
        "/api/builders",
        "/api/tasks/{id}/rebuild",
        "/api/tasks/{id}/cancel",
        "/api/events/{id}/rebuild",
        "/update-hook",
    ] {
        assert!(
            doc["paths"][p].is_object(),
            "{p} missing from the OpenAPI document"
        );
    }
    assert!(doc["paths"]["/api/events/{id}"]["delete"].is_object());
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_keeps_the_newest_finished_events_and_never_active_ones() {
    let env = start(|c| c.retention.keep_events_per_project = Some(2));
    let s = &env.server;
    let user = s.user_token("ops").unwrap();
    let e1 = push_ok(s, &Push::new("demo", SMALL)).await;
    for t in event(s, &e1).await["tasks"].as_array().unwrap() {
        let path = format!("/api/tasks/{}/cancel", t["id"].as_str().unwrap());
        assert_eq!(post_auth(s, Method::POST, &path, Some(&user)).await.0, 200);
    }
    assert_eq!(event(s, &e1).await["state"], "cancelled");
    let e2 = push_ok(s, &Push::new("demo", SMALL)).await;
    let e3 = push_ok(s, &Push::new("demo", SMALL)).await;
    // e1 is the third newest and finished: deleted.
    wait_for("e1 deleted", T, || async {
        (get(s, &format!("/api/events/{e1}")).await.0 == 404 && !event_folders(s).contains(&e1))
            .then_some(())
    })
    .await
    .unwrap();
    // e2 becomes third newest but is still waiting: kept.
    let e4 = push_ok(s, &Push::new("demo", SMALL)).await;
    let other = push_ok(s, &Push::new("other", SMALL)).await;
    for id in [&e2, &e3, &e4, &other] {
        assert_eq!(get(s, &format!("/api/events/{id}")).await.0, 200);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn private_events_need_a_user_token() {
    use base64::Engine;
    let env = start(|_| {});
    let s = &env.server;
    let v = serde_json::json!({
        "schema": "com-warmcat-sai-notification", "action": "repo-update",
        "repository": {"name": "secret", "fetchurl": "https://x.invalid/secret"},
        "ref": "refs/heads/main", "hash": "0123456789abcdef0123456789abcdef01234567",
        "saifile": base64::engine::general_purpose::STANDARD.encode(SMALL), "sec": 1,
    });
    let mut body = serde_json::to_vec(&v).unwrap();
    body.push(b'\n');
    let req = sai_testkit::hook::HookRequest {
        authorization: Some(sai_testkit::hook::signature(KEY, &body)),
        content_type: "application/json".into(),
        body,
    };
    let r = req.send(&s.url("/update-hook")).await.unwrap();
    let id = r.json::<serde_json::Value>().await.unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(get(s, &format!("/api/events/{id}")).await.0, 404);
    assert_eq!(
        get(s, "/api/projects/secret/events")
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let user = s.user_token("ops").unwrap();
    let (st, e) = post_auth(s, Method::GET, &format!("/api/events/{id}"), Some(&user)).await;
    assert_eq!(st, 200);
    assert_eq!(e["sec"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_token_acts_only_for_a_named_user_and_is_no_user_token() {
    let env = start(|c| c.revoked_users = vec!["mallory".into()]);
    let s = &env.server;
    let ev = push_ok(s, &Push::new("demo", SMALL)).await;
    let service = s.service_token("sai-web").unwrap();
    let user = s.user_token("ops").unwrap();
    let client = reqwest::Client::new();
    let rebuild = |token: &str, on_behalf: Option<&str>| {
        let mut rb = client
            .post(s.url(&format!("/api/events/{ev}/rebuild")))
            .bearer_auth(token.to_string());
        if let Some(u) = on_behalf {
            rb = rb.header("x-sai-on-behalf-of", u);
        }
        rb.send()
    };
    // Without a user to act for, a service token is not a user token.
    assert_eq!(rebuild(&service, None).await.unwrap().status(), 401);
    // A user token cannot pretend to be a service.
    assert_eq!(rebuild(&user, Some("alice")).await.unwrap().status(), 401);
    assert_eq!(
        rebuild(&service, Some("mallory")).await.unwrap().status(),
        401
    );
    assert_eq!(rebuild(&service, Some("a b")).await.unwrap().status(), 401);
    let ok = rebuild(&service, Some("alice")).await.unwrap();
    assert_eq!(ok.status(), 200);
    let v: serde_json::Value = ok.json().await.unwrap();
    assert_eq!(v["tasks"][0]["reason"], "rebuild requested by alice");
}
