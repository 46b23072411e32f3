//! The builder protocol with a protocol-level fake builder over a real
//! websocket: authentication, platform matching, logs with flow control,
//! artifacts, completion, requeue, the infrastructure attempt limit,
//! capacity reports and hand-backs.

mod common;

use std::time::Duration;

use common::*;
use sai_core::protocol::{
    BuilderMessage, CLOSE_POLICY, CLOSE_UNSUPPORTED_VERSION, FrameHeader, FrameKind,
    PROTOCOL_VERSION, PlatformCapacity, ServerMessage, TaskResult, encode_frame,
};
use sai_testkit::hook::{Push, TestPush};
use sai_testkit::{FakeBuilder, wait_for};
use sha2::Digest;

#[tokio::test(flavor = "multi_thread")]
async fn fake_builder_gets_its_platforms_only_streams_logs_and_completes() {
    let env = start(|c| {
        c.log_window_bytes = 65536;
        // The fake builder answers pings only while the test reads from it;
        // the many API calls below must not make it look dead on a busy host.
        c.builder_dead_timeout_ms = 30_000;
    });
    let s = &env.server;
    let ev = push_ok(s, &Push::new("demo", SMALL)).await;
    let token = s.builder_token("host1", &["linux-debian"]).unwrap();
    let mut b = FakeBuilder::start(&s.builder_url(), &token, "host1", &[(LINUX, 1)])
        .await
        .unwrap();

    let o1 = b.offer(T).await.unwrap();
    assert_eq!(o1.platform, LINUX);
    assert_eq!(o1.offer_platform, LINUX);
    assert_eq!(o1.event_id, ev);
    assert_eq!(o1.project, "demo");
    assert_eq!(o1.git_ref, "refs/heads/main");
    assert_eq!(
        o1.steps,
        vec!["echo one".to_string(), "echo two".to_string()]
    );
    assert_eq!(o1.attempt, 1);
    let t1 = task(s, &o1.task_id).await;
    assert_eq!(t1["state"], "running");
    assert_eq!(t1["builder"], "host1");
    // The other linux task waits behind the one busy instance, and says so.
    let e = event(s, &ev).await;
    let other = e["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["platform"] == LINUX && t["id"] != o1.task_id.as_str())
        .unwrap();
    assert_eq!(other["state"], "waiting");
    assert_eq!(
        other["detail"],
        format!("the only instance of {LINUX} is busy")
    );

    // 300 KiB of log against a 64 KiB window: needs credit returned 4+ times.
    let log: Vec<u8> = (0..300 * 1024)
        .map(|i| b"0123456789abcdef\n"[i % 17])
        .collect();
    b.run_task(&o1, &log, TaskResult::Success).await.unwrap();
    assert!(
        b.credit_received >= 200 * 1024,
        "credit flowed back: {}",
        b.credit_received
    );

    let o2 = b.offer(T).await.unwrap();
    assert_eq!(o2.platform, LINUX);
    assert_ne!(o2.task_id, o1.task_id);
    b.log(&o2.task_id, 2, b"compile error\n").await.unwrap();
    b.finish(
        &o2.task_id,
        TaskResult::Failed {
            exit_code: 2,
            step: 1,
        },
    )
    .await
    .unwrap();

    let t1 = task_state(s, &o1.task_id, "success").await;
    assert_eq!(t1["exit_code"], 0);
    assert_eq!(t1["builder"], "host1");
    assert_eq!(t1["log_bytes"], log.len());
    let t2 = task_state(s, &o2.task_id, "failed").await;
    assert_eq!(t2["exit_code"], 2);
    // The protocol's 0-based step 1 is the second step: 2, as the log says.
    assert_eq!(t2["failed_step"], 2);

    // Logs: raw bytes, and channel-tagged records by offset.
    let raw = s.raw_log(&o1.task_id).await;
    assert_eq!(&raw[..], &log[..]);
    let (_, l) = get(s, &format!("/api/tasks/{}/log?offset=100000", o1.task_id)).await;
    assert_eq!(l["offset"], 100000);
    assert_eq!(l["next_offset"], log.len());
    assert_eq!(l["complete"], true);
    let first = &l["records"][0];
    assert_eq!(first["offset"], 100000);
    assert_eq!(first["channel"], 1);
    let (_, l2) = get(s, &format!("/api/tasks/{}/log", o2.task_id)).await;
    assert_eq!(l2["records"][0]["channel"], 2);
    assert_eq!(l2["records"][0]["text"], "compile error\n");

    // Nothing else for this builder: the rest is esp32.
    assert!(b.poll(Duration::from_millis(500)).await.unwrap().is_none());
    let e = event(s, &ev).await;
    assert_eq!(e["state"], "running-with-failures");
    for t in e["tasks"].as_array().unwrap() {
        if t["platform"] == ESP32 {
            assert_eq!(t["state"], "waiting");
            assert_eq!(t["detail"], format!("no builder offers {ESP32}"));
        }
    }
    let (_, builders) = get(s, "/api/builders").await;
    assert_eq!(builders[0]["name"], "host1");
    assert_eq!(builders[0]["online"], true);

    // Operator cancels the rest: the event ends, mixed results included.
    let user = s.user_token("alice").unwrap();
    for t in e["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["platform"] == ESP32)
    {
        let path = format!("/api/tasks/{}/cancel", t["id"].as_str().unwrap());
        let (st, _) = post_auth(s, reqwest::Method::POST, &path, None).await;
        assert_eq!(st, 401);
        let (st, _) = post_auth(s, reqwest::Method::POST, &path, Some(&token)).await;
        assert_eq!(st, 401, "a builder token is not a user token");
        let (st, v) = post_auth(s, reqwest::Method::POST, &path, Some(&user)).await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["state"], "cancelled");
    }
    assert_eq!(event(s, &ev).await["state"], "failed");

    // Rebuild the failed task: it is offered again, with its log cleared.
    let (st, v) = post_auth(
        s,
        reqwest::Method::POST,
        &format!("/api/tasks/{}/rebuild", o2.task_id),
        Some(&user),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let o3 = b.offer(T).await.unwrap();
    assert_eq!(o3.task_id, o2.task_id);
    assert_eq!(
        get(s, &format!("/api/tasks/{}", o2.task_id)).await.1["log_bytes"],
        0
    );
    b.run_task(&o3, b"ok now\n", TaskResult::Success)
        .await
        .unwrap();
    task_state(s, &o2.task_id, "success").await;
    wait_for("event cancelled", T, || async {
        (event(s, &ev).await["state"] == "cancelled").then_some(())
    })
    .await
    .unwrap();
}

/// The HTTP refusal of a builder connection with `token`.
async fn refused(url: &str, token: Option<&str>) -> sai_testkit::builder::Refused {
    FakeBuilder::connect(url, token)
        .await
        .unwrap()
        .err()
        .expect("refused")
}

/// The close code and reason a builder connection with `token` gets after
/// saying hello in protocol `version` as `name`, offering one `platform`.
async fn closed_after_hello(
    url: &str,
    token: &str,
    version: u32,
    name: &str,
    platform: &str,
) -> (u16, String) {
    let mut b = FakeBuilder::connect(url, Some(token))
        .await
        .unwrap()
        .ok()
        .unwrap();
    b.hello(version, name, &[(platform, 1)]).await.unwrap();
    b.closed_by_server(T).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn unauthenticated_and_mismatched_builders_are_refused() {
    let env = start(|c| c.revoked_builders = vec!["evil".into()]);
    let s = &env.server;
    let ev = push_ok(s, &Push::new("demo", SMALL)).await;
    let url = s.builder_url();

    let r = refused(&url, None).await;
    assert_eq!(r.status, 401);
    let r = refused(&url, Some("v4.public.garbage")).await;
    assert_eq!(r.status, 401);
    let user = s.user_token("host1").unwrap();
    let r = refused(&url, Some(&user)).await;
    assert_eq!(r.status, 401);
    let revoked = s.builder_token("evil", &["linux"]).unwrap();
    let r = refused(&url, Some(&revoked)).await;
    assert_eq!(r.status, 401);
    assert!(r.body.contains("revoked"), "{}", r.body);

    let token = s.builder_token("host1", &["linux"]).unwrap();
    // A name not matching the token; a platform not covered by it.
    for (name, platform, says) in [("host2", LINUX, "token"), ("host1", ESP32, ESP32)] {
        let (code, reason) =
            closed_after_hello(&url, &token, PROTOCOL_VERSION, name, platform).await;
        assert_eq!(code, CLOSE_POLICY);
        assert!(reason.contains(says), "{reason}");
    }
    // Unknown protocol versions: a newer one, and version 1 (before
    // `capacity` and `handed_back`).
    for v in [PROTOCOL_VERSION + 1, 1] {
        let (code, reason) = closed_after_hello(&url, &token, v, "host1", LINUX).await;
        assert_eq!(code, CLOSE_UNSUPPORTED_VERSION);
        assert!(
            reason.contains(&format!("version {v};"))
                && reason.contains(&format!("speaks {PROTOCOL_VERSION}")),
            "{reason}"
        );
    }

    // None of them was offered anything.
    assert!(
        tasks_of(s, &ev)
            .await
            .iter()
            .all(|t| t["state"] == "waiting" && t["attempt"] == 0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn disconnect_mid_task_requeues_and_the_attempt_limit_fails_as_infrastructure() {
    let env = start(|c| c.max_infra_attempts = 2);
    let s = &env.server;
    // Attempt 1: the builder drops the TCP connection mid-task.
    let (mut b, o) = host1_running(s, &Push::new("demo", SMALL)).await;
    b.log(&o.task_id, 1, b"half a build\n").await.unwrap();
    b.drop_connection();
    let t = task_state(s, &o.task_id, "waiting").await;
    assert_eq!(t["infra_failures"], 1);
    assert!(
        t["reason"].as_str().unwrap().contains("infrastructure"),
        "{t}"
    );

    // Attempt 2: the builder stops answering pings; the server notices.
    let mut b = host1(s, 1).await;
    let o2 = b.offer(T).await.unwrap();
    assert_eq!(o2.task_id, o.task_id, "the requeued task goes first");
    assert_eq!(o2.attempt, 2);
    b.accept(&o2.task_id).await.unwrap();
    // Not reading: pongs are never sent.
    let t = task_state(s, &o.task_id, "failed").await;
    let reason = t["reason"].as_str().unwrap();
    assert!(
        reason.contains("infrastructure failure, not a build failure"),
        "{reason}"
    );
    assert_eq!(t["infra_failures"], 2);
    assert!(t["exit_code"].is_null());
    drop(b);

    // A fresh builder gets the other linux task, never the failed one.
    let mut b = host1(s, 1).await;
    let o3 = b.offer(T).await.unwrap();
    assert_ne!(o3.task_id, o.task_id);
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_about_other_connections_tasks_are_refused() {
    let env = start(|_| {});
    let s = &env.server;
    push_ok(s, &Push::new("demo", SMALL)).await;
    let mut a = fake_builder(s, "a", &["linux"], &[(LINUX, 1)]).await;
    let mut b = fake_builder(s, "b", &["freertos"], &[(ESP32, 1)]).await;
    let oa = a.offer(T).await.unwrap();
    let ob = b.offer(T).await.unwrap();
    assert_eq!(ob.platform, ESP32);

    b.finish(&oa.task_id, TaskResult::Success).await.unwrap();
    match b.next(T).await.unwrap() {
        ServerMessage::Error { task_id, message } => {
            assert_eq!(task_id.as_deref(), Some(oa.task_id.as_str()));
            assert!(message.contains("not assigned"), "{message}");
        }
        m => panic!("expected an error, got {m:?}"),
    }
    b.log(&oa.task_id, 1, b"injected").await.unwrap();
    assert!(matches!(
        b.next(T).await.unwrap(),
        ServerMessage::Error { .. }
    ));
    let t = task(s, &oa.task_id).await;
    assert_eq!(t["state"], "running");
    assert_eq!(t["builder"], "a");
    assert_eq!(t["log_bytes"], 0);

    // Artifacts keep their relative path; a name that climbs out of the
    // tree or is absolute is refused, not rewritten, and the task it was
    // meant for does not end as a success without it.
    b.send(&BuilderMessage::Accept {
        task_id: ob.task_id.clone(),
    })
    .await
    .unwrap();
    for bad in ["../../evil.bin", "/etc/passwd", "out/../../x", "a b.bin"] {
        b.send(&BuilderMessage::ArtifactBegin {
            task_id: ob.task_id.clone(),
            name: bad.into(),
            size: 1,
            sha256: "0".repeat(64),
            test_report: false,
        })
        .await
        .unwrap();
        match b.next(T).await.unwrap() {
            ServerMessage::Error { message, .. } => {
                assert!(message.contains("artifact refused"), "{bad}: {message}")
            }
            m => panic!("{bad}: expected an error, got {m:?}"),
        }
    }
    b.finish(&ob.task_id, TaskResult::Success).await.unwrap();
    let t = task_state(s, &ob.task_id, "waiting").await;
    assert_eq!(t["infra_failures"], 1, "{t}");
    assert!(
        t["reason"].as_str().unwrap().contains("did not arrive"),
        "{t}"
    );
    a.send(&BuilderMessage::Accept {
        task_id: oa.task_id.clone(),
    })
    .await
    .unwrap();
    let blob: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();
    a.artifact(&oa.task_id, "out/deep/result.bin", &blob)
        .await
        .unwrap();
    a.artifact(&oa.task_id, "result.bin", b"top level\n")
        .await
        .unwrap();
    a.run_task(&oa, b"", TaskResult::Success).await.unwrap();
    let t = task_state(s, &oa.task_id, "success").await;
    let arts = t["artifacts"].as_array().unwrap();
    let names: Vec<&str> = arts.iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 2, "{t}");
    assert!(names.contains(&"out/deep/result.bin"), "{t}");
    assert!(names.contains(&"result.bin"), "{t}");
    let deep = arts
        .iter()
        .find(|a| a["name"] == "out/deep/result.bin")
        .unwrap();
    assert_eq!(deep["size"], blob.len());
    let sha = hex::encode(sha2::Sha256::digest(&blob));
    assert_eq!(deep["sha256"], sha.as_str());
    let resp = reqwest::get(s.url(&format!(
        "/api/tasks/{}/artifacts/out/deep/result.bin",
        oa.task_id
    )))
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-disposition"],
        "attachment; filename=\"result.bin\""
    );
    assert_eq!(resp.headers()["x-sai-sha256"], sha.as_str());
    assert_eq!(&resp.bytes().await.unwrap()[..], &blob[..]);
    let top = reqwest::get(s.url(&format!("/api/tasks/{}/artifacts/result.bin", oa.task_id)))
        .await
        .unwrap();
    assert_eq!(&top.bytes().await.unwrap()[..], b"top level\n");
    // The flattened form and other paths are not found.
    for path in ["out_deep_result.bin", "deep/result.bin", "out/deep"] {
        let st = reqwest::get(s.url(&format!("/api/tasks/{}/artifacts/{path}", oa.task_id)))
            .await
            .unwrap()
            .status();
        assert_eq!(st, 404, "{path}");
    }
    // A path that climbs, sent as is (HTTP clients would remove the `..`).
    let addr = s
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let status_line = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        let id = oa.task_id;
        write!(
            c,
            "GET /api/tasks/{id}/artifacts/out/deep/../../result.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        answer.lines().next().unwrap_or_default().to_string()
    })
    .await
    .unwrap();
    assert!(status_line.contains(" 404 "), "{status_line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn exceeding_the_credit_window_closes_the_connection() {
    // Credit only comes back on a flush; with a one-minute flush interval
    // and a one-frame window, the second frame is always over the limit.
    let env = start(|c| {
        c.log_window_bytes = 65536;
        c.log_flush_ms = 60_000;
    });
    let s = &env.server;
    push_ok(s, &Push::new("demo", SMALL)).await;
    let mut b = fake_builder(s, "b", &["freertos"], &[(ESP32, 1)]).await;
    let ob = b.offer(T).await.unwrap();
    let frame = encode_frame(
        &FrameHeader {
            kind: FrameKind::Log,
            channel: 1,
            timestamp_us: 0,
            task_id: ob.task_id.clone(),
        },
        &vec![b'x'; 65536],
    );
    b.raw_binary(frame.clone()).await.unwrap();
    let _ = b.raw_binary(frame).await;
    let (code, reason) = b.closed_by_server(T).await.unwrap();
    assert_eq!(code, CLOSE_POLICY, "{reason}");
    assert!(reason.contains("credit"), "{reason}");
    // The builder's task went back to waiting.
    let t = task_state(s, &ob.task_id, "waiting").await;
    assert_eq!(t["infra_failures"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn rejected_offers_go_elsewhere_and_bad_artifacts_are_discarded() {
    let env = start(|_| {});
    let s = &env.server;
    push_ok(s, &Push::new("demo", SMALL)).await;
    let mut a = host1(s, 1).await;
    let o = a.offer(T).await.unwrap();
    a.reject(&o.task_id, "disk full").await.unwrap();
    // The same connection gets the other linux task, not the rejected one.
    let o2 = a.offer(T).await.unwrap();
    assert_ne!(o2.task_id, o.task_id);
    let t = task(s, &o.task_id).await;
    assert_eq!(t["state"], "waiting");
    assert_eq!(t["attempt"], 0, "a reject is not an attempt");
    assert!(t["reason"].as_str().unwrap().contains("disk full"));
    // A second builder takes the rejected task.
    let mut b = fake_builder(s, "host2", &["linux"], &[(LINUX, 1)]).await;
    assert_eq!(b.offer(T).await.unwrap().task_id, o.task_id);

    // An artifact whose bytes do not match its announced sha256 is refused.
    a.send(&BuilderMessage::Accept {
        task_id: o2.task_id.clone(),
    })
    .await
    .unwrap();
    a.send(&BuilderMessage::ArtifactBegin {
        task_id: o2.task_id.clone(),
        name: "x.bin".into(),
        size: 3,
        sha256: "00".repeat(32),
        test_report: false,
    })
    .await
    .unwrap();
    let frame = encode_frame(
        &FrameHeader {
            kind: FrameKind::Artifact,
            channel: 0,
            timestamp_us: 0,
            task_id: o2.task_id.clone(),
        },
        b"abc",
    );
    a.raw_binary(frame).await.unwrap();
    a.send(&BuilderMessage::ArtifactEnd {
        task_id: o2.task_id.clone(),
    })
    .await
    .unwrap();
    match a.next(T).await.unwrap() {
        ServerMessage::Error { message, .. } => assert!(message.contains("discarded"), "{message}"),
        m => panic!("expected an error, got {m:?}"),
    }
    // The task reports success, but its artifact did not arrive: it says
    // so and does not end `success`.
    a.finish(&o2.task_id, TaskResult::Success).await.unwrap();
    let t = task_state(s, &o2.task_id, "waiting").await;
    assert_eq!(t["artifacts"].as_array().unwrap().len(), 0);
    assert_eq!(t["infra_failures"], 1);
    let reason = t["reason"].as_str().unwrap();
    assert!(
        reason.contains("1 artifact(s) did not arrive") && reason.contains("x.bin"),
        "{reason}"
    );
    let log = String::from_utf8(s.raw_log(&o2.task_id).await).unwrap();
    assert!(log.contains("artifact x.bin discarded"), "{log}");
}

/// One linux task only.
const ONE_LINUX: &[u8] = br#"{
  "schema": "sai-1",
  "platforms": { "linux-debian-12/x86_64-amd/gcc": { "build": "echo one" } },
  "configurations": { "default": { "cmake": "" } }
}
"#;

fn connections_of(s: &sai_testkit::TestServer) -> usize {
    s.log().matches("builder connected").count()
}

/// A capacity report of `b`: `free` linux instances.
async fn linux_free(b: &mut FakeBuilder, free: u32) {
    b.send(&BuilderMessage::Capacity {
        platforms: vec![PlatformCapacity {
            name: LINUX.into(),
            free,
        }],
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn capacity_report_brings_declined_offers_back_on_the_same_connection() {
    let env = start(|_| {});
    let s = &env.server;
    push_ok(s, &Push::new("demo", ONE_LINUX)).await;
    let mut b = host1(s, 1).await;
    let o = b.offer(T).await.unwrap();
    b.reject(&o.task_id, "all 1 instances of platform linux are busy")
        .await
        .unwrap();
    let t = task_state(s, &o.task_id, "waiting").await;
    assert!(t["reason"].as_str().unwrap().contains("busy"), "{t}");
    // Not offered again by itself.
    assert!(b.poll(Duration::from_millis(500)).await.unwrap().is_none());
    // Still no room: nothing happens.
    linux_free(&mut b, 0).await;
    assert!(b.poll(Duration::from_millis(500)).await.unwrap().is_none());
    // Room again: the declined task comes back on the same connection.
    linux_free(&mut b, 1).await;
    let o2 = b.offer(T).await.unwrap();
    assert_eq!(o2.task_id, o.task_id);
    assert_eq!(o2.attempt, 1);
    b.run_task(&o2, b"built\n", TaskResult::Success)
        .await
        .unwrap();
    task_state(s, &o.task_id, "success").await;
    // One connection all along: no reconnect was needed.
    assert_eq!(connections_of(s), 1, "{}", s.log());
    let (_, bs) = get(s, "/api/builders").await;
    let host1: Vec<_> = bs
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["name"] == "host1" && b["online"] == true)
        .collect();
    assert_eq!(host1.len(), 1, "{bs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn handed_back_tasks_are_requeued_without_counting_an_attempt() {
    let env = start(|c| c.max_infra_attempts = 3);
    let s = &env.server;
    push_ok(s, &Push::new("demo", ONE_LINUX)).await;
    let mut id: Option<String> = None;
    // Four builders in a row go away mid-task by operator request.
    for n in 1..=4 {
        let mut b = host1(s, 1).await;
        let o = b.offer(T).await.unwrap();
        assert_eq!(o.attempt, 1, "hand-back {n} counted an attempt");
        assert!(id.as_ref().is_none_or(|i| *i == o.task_id));
        id = Some(o.task_id.clone());
        b.accept(&o.task_id).await.unwrap();
        b.log(&o.task_id, 1, format!("run {n}\n").as_bytes())
            .await
            .unwrap();
        b.finish(
            &o.task_id,
            TaskResult::HandedBack {
                reason: "sai-builder on host1 shut down during the task".into(),
            },
        )
        .await
        .unwrap();
        let t = task_state(s, &o.task_id, "waiting").await;
        assert_eq!(t["infra_failures"], 0, "{t}");
        assert_eq!(t["attempt"], 0, "{t}");
        assert!(t["reason"].as_str().unwrap().contains("handed back"), "{t}");
        // The going-away connection is not offered it again.
        assert!(b.poll(Duration::from_millis(200)).await.unwrap().is_none());
        b.close().await;
    }
    let id = id.unwrap();
    let mut b = host1(s, 1).await;
    let o = b.offer(T).await.unwrap();
    assert_eq!(o.task_id, id);
    b.run_task(&o, b"built\n", TaskResult::Success)
        .await
        .unwrap();
    let t = task_state(s, &id, "success").await;
    assert_eq!(t["infra_failures"], 0, "{t}");
    // Each hand-back left a Sai notice (channel 3) saying why.
    let (_, l) = get(s, &format!("/api/tasks/{id}/log")).await;
    let notices: Vec<&serde_json::Value> = l["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["channel"] == 3)
        .collect();
    assert_eq!(notices.len(), 4, "{l}");
    for r in notices {
        let text = r["text"].as_str().unwrap();
        assert!(text.contains("handed back by builder host1"), "{text}");
        assert!(text.contains("shut down"), "{text}");
    }
}
