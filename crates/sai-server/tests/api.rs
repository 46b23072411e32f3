//! Operations API: listing, deletion, retention, the OpenAPI document.

mod common;

use common::*;
use reqwest::Method;
use sai_testkit::hook::{Push, TestPush};
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
    let ids = sai_testkit::field_of_each(&evs, "id");
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

    assert_eq!(
        post_auth(s, Method::DELETE, &format!("/api/events/{e1}"), None)
            .await
            .0,
        401
    );
    let (st, v) = as_ops(s, Method::DELETE, &format!("/api/events/{e1}")).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(get(s, &format!("/api/events/{e1}")).await.0, 404);
    wait_for("event folder removed", T, || async {
        (!event_folders(s).contains(&e1)).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(event_folders(s), vec![e2.clone()]);

    let (st, v) = as_ops(s, Method::POST, &format!("/api/events/{e2}/rebuild")).await;
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
async fn a_seen_commit_is_built_again_as_a_new_event_that_names_the_old_one() {
    let env = start(|_| {});
    let s = &env.server;
    let p = Push::new("demo", SMALL);
    let old = push_ok(s, &p).await;
    // Pushing the commit again is a duplicate, not a new event.
    let (_, dup) = push(s, &p).await;
    assert_eq!(dup["duplicate"], true, "{dup}");
    assert_eq!(dup["event_id"], old.as_str());

    let path = format!("/api/events/{old}/again");
    assert_eq!(post_auth(s, Method::POST, &path, None).await.0, 401);
    let (st, new) = as_ops(s, Method::POST, &path).await;
    assert_eq!(st, 200, "{new}");
    let new_id = new["id"].as_str().unwrap().to_string();
    assert_ne!(new_id, old);
    assert_eq!(new["rebuild_of"], old.as_str());
    assert_eq!(new["hash"], p.hash.as_str());
    assert_eq!(new["ref"], p.git_ref.as_str());
    assert_eq!(new["state"], "waiting");
    let old_ev = event(s, &old).await;
    let (old_tasks, new_tasks) = (
        old_ev["tasks"].as_array().unwrap(),
        new["tasks"].as_array().unwrap(),
    );
    assert_eq!(old_tasks.len(), new_tasks.len());
    for (a, b) in old_tasks.iter().zip(new_tasks) {
        assert_eq!(
            (&a["configuration"], &a["platform"]),
            (&b["configuration"], &b["platform"])
        );
        assert_ne!(a["id"], b["id"]);
        assert_eq!(b["event_id"], new_id.as_str());
    }
    assert!(old_ev.get("rebuild_of").is_none(), "{old_ev}");
    let (_, evs) = get(s, "/api/projects/demo/events").await;
    let ids = sai_testkit::field_of_each(&evs, "id");
    assert_eq!(
        ids,
        [new_id.as_str(), old.as_str()],
        "both kept, newest first"
    );
    // A later push of the same commit names the newest event of it.
    let (_, dup) = push(s, &p).await;
    assert_eq!(dup["event_id"], new_id.as_str(), "{dup}");
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_keeps_the_newest_finished_events_and_never_active_ones() {
    let env = start(|c| c.retention.keep_events_per_project = Some(2));
    let s = &env.server;
    let e1 = push_ok(s, &Push::new("demo", SMALL)).await;
    for t in event(s, &e1).await["tasks"].as_array().unwrap() {
        let path = format!("/api/tasks/{}/cancel", t["id"].as_str().unwrap());
        assert_eq!(as_ops(s, Method::POST, &path).await.0, 200);
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
        "nonce": sai_testkit::hook::random_hex(16),
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
    // A project with private events only is not shown at all.
    assert_eq!(get(s, "/api/projects/secret/events").await.0, 404);
    let (st, e) = as_ops(s, Method::GET, &format!("/api/events/{id}")).await;
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

/// Validate `answer` against the schema `name` of the served document.
fn conforms(doc: &serde_json::Value, name: &str, answer: &serde_json::Value) {
    let mut schema = doc.clone();
    schema["$ref"] = serde_json::json!(format!("#/components/schemas/{name}"));
    let v = jsonschema::validator_for(&schema).expect("the served schemas compile");
    let errors: Vec<String> = v.iter_errors(answer).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "answer disagrees with the served {name} schema: {errors:?}\n{answer}"
    );
}

/// The served OpenAPI document is generated from `sai_core::api`; every
/// answer must conform to it and deserialise into those types (which refuse
/// unknown fields), so a field added to a handler but not to the types, or
/// the other way round, fails here.
#[tokio::test(flavor = "multi_thread")]
async fn the_served_openapi_document_and_the_answers_agree() {
    use sai_core::api;
    use sai_core::protocol::TaskResult;

    let env = start(|_| {});
    let s = &env.server;
    let (_, doc) = get(s, "/api/openapi.json").await;
    for name in [
        "Task",
        "Event",
        "Project",
        "Log",
        "Builder",
        "Error",
        "HookReply",
    ] {
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "{name} missing"
        );
    }
    let (_, hook) = push(s, &Push::new("demo", SMALL)).await;
    conforms(&doc, "HookReply", &hook);
    let ev = hook["event_id"].as_str().unwrap().to_string();
    let mut b = host1(s, 1).await;
    let o = b.offer(T).await.unwrap();
    b.artifact(&o.task_id, "out.bin", b"bytes").await.unwrap();
    b.run_task(&o, b"hello\n", TaskResult::Success)
        .await
        .unwrap();
    wait_for("task ended", T, || async {
        (task(s, &o.task_id).await["state"] == "success").then_some(())
    })
    .await
    .unwrap();

    let (_, e) = get(s, &format!("/api/events/{ev}")).await;
    conforms(&doc, "Event", &e);
    let e: api::Event = serde_json::from_value(e).unwrap();
    assert!(
        e.tasks.unwrap().iter().any(|t| t.detail.is_some()),
        "a waiting task says why"
    );
    let (_, t) = get(s, &format!("/api/tasks/{}", o.task_id)).await;
    conforms(&doc, "Task", &t);
    let t: api::Task = serde_json::from_value(t).unwrap();
    assert_eq!(t.artifacts.unwrap()[0].name, "out.bin");
    assert_eq!(t.instance.as_deref(), Some(LINUX));
    let (_, l) = get(s, &format!("/api/tasks/{}/log", o.task_id)).await;
    conforms(&doc, "Log", &l);
    let l: api::Log = serde_json::from_value(l).unwrap();
    assert!(l.complete);
    let (_, p) = get(s, "/api/projects").await;
    for p in p.as_array().unwrap() {
        conforms(&doc, "Project", p);
    }
    let _: Vec<api::Project> = serde_json::from_value(p).unwrap();
    let (_, bs) = get(s, "/api/builders").await;
    for b in bs.as_array().unwrap() {
        conforms(&doc, "Builder", b);
    }
    let _: Vec<api::Builder> = serde_json::from_value(bs).unwrap();
    let (_, err) = get(s, "/api/tasks/nope").await;
    conforms(&doc, "Error", &err);
    let _: api::Error = serde_json::from_value(err).unwrap();
}
