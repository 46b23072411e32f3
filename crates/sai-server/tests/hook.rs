//! Hook intake against the real server process.

mod common;

use common::*;
use sai_testkit::hook::{HookRequest, Push, TestPush, signature};

#[tokio::test(flavor = "multi_thread")]
async fn sai_sh_request_is_accepted_and_bad_requests_store_nothing() {
    let env = start(|_| {});
    let s = &env.server;
    let url = s.url("/sai/update-hook");

    // Tampered body: signature of the original file, one byte changed.
    let p = Push::new("demo", SMALL);
    let good = HookRequest::like_sai_sh(&p, KEY);
    let mut tampered = good.clone();
    let i = tampered.body.iter().position(|&b| b == b'{').unwrap() + 3;
    tampered.body[i] ^= 0x20;
    let r = tampered.send(&url).await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("signature"), "{v}");

    // Wrong key.
    let r = HookRequest::like_sai_sh(&p, "not-the-key")
        .send(&url)
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);

    // Missing header.
    let mut missing = good.clone();
    missing.authorization = None;
    let r = missing.send(&url).await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.json::<serde_json::Value>().await.unwrap()["error"].is_string());

    // Unknown algorithm.
    let mut md5 = good.clone();
    md5.authorization = Some("sai md5=00112233".into());
    assert_eq!(md5.send(&url).await.unwrap().status().as_u16(), 401);

    assert_eq!(event_count(s).await, 0);
    assert!(event_folders(s).is_empty(), "{:?}", event_folders(s));

    // The genuine request.
    let r = good.send(&url).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    let id = v["event_id"].as_str().unwrap().to_string();
    assert_eq!(v["tasks"], 4);
    let ev = event(s, &id).await;
    assert_eq!(ev["ref"], "refs/heads/main");
    assert_eq!(ev["hash"], p.hash.as_str());
    assert_eq!(ev["tasks"].as_array().unwrap().len(), 4);
    assert_eq!(ev["state"], "waiting");
    for t in ev["tasks"].as_array().unwrap() {
        assert_eq!(t["state"], "waiting");
        assert!(
            t["detail"]
                .as_str()
                .unwrap()
                .starts_with("no builder offers "),
            "{t}"
        );
        assert!(t["builder"].is_null() && t["exit_code"].is_null());
    }

    // Replay: idempotent.
    let r = good.send(&url).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["duplicate"], true);
    assert_eq!(v["event_id"], id.as_str());
    assert_eq!(event_count(s).await, 1);
    assert_eq!(event_folders(s).len(), 1);

    // Same content on the original-less path and as plain JSON with trailing junk.
    let mut p2 = Push::new("demo", SMALL);
    p2.git_ref = "refs/tags/v1.0".into();
    let mut req = HookRequest::json(&p2, KEY);
    req.body.extend_from_slice(b"trailing junk \x00\xff");
    req.authorization = Some(signature(KEY, &req.body));
    let r = req.send(&s.url("/update-hook")).await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    assert_eq!(event_count(s).await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_notifications_are_refused_with_json_errors() {
    let env = start(|c| c.max_body_bytes = 200_000);
    let s = &env.server;

    let send_json = |body: Vec<u8>| {
        let url = s.url("/update-hook");
        async move {
            let req = HookRequest {
                authorization: Some(signature(KEY, &body)),
                content_type: "application/json".into(),
                body,
            };
            let r = req.send(&url).await.unwrap();
            let st = r.status().as_u16();
            (st, r.json::<serde_json::Value>().await.unwrap())
        }
    };
    let base = |saifile: &str| {
        serde_json::json!({
            "schema": "com-warmcat-sai-notification", "action": "repo-update",
            "repository": {"name": "demo", "fetchurl": "https://x.invalid/demo"},
            "ref": "refs/heads/main", "hash": "0123456789abcdef0123456789abcdef01234567",
            "nonce": sai_testkit::hook::random_hex(16),
            "saifile": saifile,
        })
    };
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);

    let mut v = base(&b64(SMALL));
    v["schema"] = "other".into();
    let (st, e) = send_json(serde_json::to_vec(&v).unwrap()).await;
    assert_eq!(st, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("schema"));

    let mut v = base(&b64(SMALL));
    v["action"] = "delete".into();
    assert_eq!(send_json(serde_json::to_vec(&v).unwrap()).await.0, 400);

    let (st, e) = send_json(serde_json::to_vec(&base("!!!not base64!!!")).unwrap()).await;
    assert_eq!(st, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("base64"));

    let big = "A".repeat(70_000);
    let (st, _) = send_json(serde_json::to_vec(&base(&big)).unwrap()).await;
    assert_eq!(st, 413);

    let (st, _) = send_json(vec![b' '; 300_000]).await;
    assert_eq!(st, 413);

    let broken = b"{\n  \"schema\": \"sai-1\",\n  \"platforms\": {\n    \"linux\": { \"build\": \"x\" }\n  },\n  \"configurations\": { \"a\": ]\n}\n";
    let (st, e) = send_json(serde_json::to_vec(&base(&b64(broken))).unwrap()).await;
    assert_eq!(st, 422, "{e}");
    let detail = e["detail"].as_str().unwrap();
    assert!(detail.contains(".sai.json:6:"), "{detail}");

    let mut v = base(&b64(SMALL));
    v["ref"] = "refs/heads/_private".into();
    let (st, e) = send_json(serde_json::to_vec(&v).unwrap()).await;
    assert_eq!(st, 200);
    assert!(e["ignored"].is_string(), "{e}");

    assert_eq!(event_count(s).await, 0);
    assert!(event_folders(s).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn projects_and_per_project_keys() {
    let env = start(|c| {
        c.projects = vec![sai_core::config::server::ProjectConfig {
            name: "special".into(),
            notification_key: Some("special-key".into()),
            ..Default::default()
        }];
    });
    let s = &env.server;
    let url = s.url("/update-hook");
    let r = HookRequest::like_sai_sh(&Push::new("other", SMALL), KEY)
        .send(&url)
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let p = Push::new("special", SMALL);
    let r = HookRequest::like_sai_sh(&p, KEY).send(&url).await.unwrap();
    assert_eq!(
        r.status().as_u16(),
        403,
        "global key must not sign a project with its own key"
    );
    let r = HookRequest::like_sai_sh(&p, "special-key")
        .send(&url)
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (_, projects) = get(s, "/api/projects").await;
    assert_eq!(projects[0]["name"], "special");
}
