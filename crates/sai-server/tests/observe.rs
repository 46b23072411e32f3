//! What the outside sees of a push: `/metrics` (parsed strictly, counters
//! moving as a push runs), commit statuses on Forgejo/Gitea, GitHub and
//! GitLab exactly as their APIs document them, the completion webhook, and
//! retries while the forge is down without holding up the scheduler.

mod common;

use std::time::Duration;

use common::*;
use sai_core::config::server::{CommitStatusConfig, Forge, ProjectConfig, WebhookConfig};
use sai_core::protocol::TaskResult;
use sai_testkit::hook::{Push, TestPush};
use sai_testkit::openmetrics::{self, Exposition};
use sai_testkit::recorder::{Recorded, Recorder};
use sai_testkit::{FakeBuilder, TestServer, wait_for};
use serde_json::Value;

/// One platform, one configuration: one task per push.
const ONE: &[u8] = br#"{
  "schema": "sai-1",
  "platforms": { "linux-debian-12/x86_64-amd/gcc": { "build": "make" } },
  "configurations": { "default": { "cmake": "" } }
}"#;

const METRICS_TOKEN: &str = "scrape-me";

async fn scrape(s: &TestServer, token: Option<&str>) -> (u16, String) {
    let mut rb = reqwest::Client::new().get(s.url("/metrics"));
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    let r = rb.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn metrics(s: &TestServer) -> Exposition {
    let (st, text) = scrape(s, Some(METRICS_TOKEN)).await;
    assert_eq!(st, 200, "{text}");
    openmetrics::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_parse_strictly_and_move_as_a_push_runs() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("metrics.token"),
        format!("{METRICS_TOKEN}\n"),
    )
    .unwrap();
    let mut c = config_in(tmp.path().join("data"));
    c.metrics_token_file = Some(tmp.path().join("metrics.token").display().to_string());
    let server = TestServer::start(&bin(), &c, &[]).unwrap();
    let s = &server;

    // The token is required, and a wrong one is refused.
    assert_eq!(scrape(s, None).await.0, 401);
    assert_eq!(scrape(s, Some("nope")).await.0, 401);
    let m0 = metrics(s).await;
    assert_eq!(m0.value("sai_server_builders_connected", &[]), Some(0.0));
    assert_eq!(m0.sum("sai_server_hooks_total", &[]), 0.0);
    for state in ["waiting", "running", "success", "failed", "cancelled"] {
        assert_eq!(m0.value("sai_server_tasks", &[("state", state)]), Some(0.0));
    }

    // A push of 4 tasks (2 linux, 2 esp32) and a refused hook.
    let ev = push_ok(s, &Push::new("demo", SMALL)).await;
    let bad = sai_testkit::hook::HookRequest::like_sai_sh(&Push::new("demo", SMALL), "wrong-key")
        .send(&s.url("/sai/update-hook"))
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 403);
    let m1 = metrics(s).await;
    m1.assert_values(&[
        (
            "sai_server_hooks_total",
            &[("result", "accepted")],
            Some(1.0),
        ),
        (
            "sai_server_hooks_total",
            &[("result", "refused")],
            Some(1.0),
        ),
        ("sai_server_queue_depth", &[("platform", LINUX)], Some(2.0)),
        ("sai_server_queue_depth", &[("platform", ESP32)], Some(2.0)),
        ("sai_server_tasks", &[("state", "waiting")], Some(4.0)),
    ]);
    assert!(
        m1.value("sai_server_oldest_waiting_seconds", &[("platform", ESP32)])
            .unwrap()
            >= 0.0
    );

    // A builder runs both linux tasks: one passes, one fails, with logs.
    let mut b = fake_builder(s, "host1", &["linux-debian"], &[(LINUX, 2)]).await;
    let o1 = b.offer(T).await.unwrap();
    let o2 = b.offer(T).await.unwrap();
    let m2 = metrics(s).await;
    m2.assert_values(&[
        ("sai_server_builders_connected", &[], Some(1.0)),
        (
            "sai_server_instances",
            &[("platform", LINUX), ("state", "busy")],
            Some(2.0),
        ),
        (
            "sai_server_instances",
            &[("platform", LINUX), ("state", "free")],
            Some(0.0),
        ),
        ("sai_server_tasks", &[("state", "running")], Some(2.0)),
        ("sai_server_queue_depth", &[("platform", LINUX)], None),
    ]);
    b.run_task(&o1, &[b'x'; 5000], TaskResult::Success)
        .await
        .unwrap();
    b.run_task(
        &o2,
        b"boom\n",
        TaskResult::Failed {
            exit_code: 2,
            step: 0,
        },
    )
    .await
    .unwrap();
    task_state(s, &o2.task_id, "failed").await;

    let m3 = wait_for("metrics after the tasks", T, || async {
        let m = metrics(s).await;
        (m.value("sai_server_tasks_ended_total", &[("result", "failed")]) == Some(1.0)
            && m.value("sai_server_log_bytes_received_total", &[]) >= Some(5005.0))
        .then_some(m)
    })
    .await
    .unwrap();
    m3.assert_values(&[
        (
            "sai_server_tasks_ended_total",
            &[("result", "success")],
            Some(1.0),
        ),
        (
            "sai_server_task_duration_seconds_count",
            &[("result", "success")],
            Some(1.0),
        ),
        (
            "sai_server_task_duration_seconds_bucket",
            &[("result", "failed"), ("le", "+Inf")],
            Some(1.0),
        ),
        ("sai_server_log_bytes_received_total", &[], Some(5005.0)),
        (
            "sai_server_instances",
            &[("platform", LINUX), ("state", "free")],
            Some(2.0),
        ),
        ("sai_server_tasks", &[("state", "failed")], Some(1.0)),
    ]);
    // The store figures come from a background count.
    let m4 = wait_for("store figures", T, || async {
        let m = metrics(s).await;
        (m.value("sai_server_events", &[("state", "running-with-failures")]) == Some(1.0))
            .then_some(m)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", s.log()));
    assert!(m4.value("sai_server_store_bytes", &[]).unwrap() > 10_000.0);
    assert_eq!(event(s, &ev).await["state"], "running-with-failures");
}

/// A project reporting to `forge` at the recorder under `prefix`.
fn project(name: &str, forge: Forge, url: String, repo: &str, token_file: &str) -> ProjectConfig {
    ProjectConfig {
        name: name.into(),
        commit_status: Some(CommitStatusConfig {
            forge,
            url,
            repository: repo.into(),
            token_file: token_file.into(),
            context: "sai/ci".into(),
        }),
        ..ProjectConfig::default()
    }
}

/// Wait until `rec` has received `n` requests whose path starts with `prefix`.
async fn received(rec: &Recorder, prefix: &str, n: usize, s: &TestServer) -> Vec<Recorded> {
    wait_for(
        &format!("{n} requests under {prefix}"),
        Duration::from_secs(90),
        || async {
            let r: Vec<Recorded> = rec
                .requests()
                .into_iter()
                .filter(|r| r.path.starts_with(prefix))
                .collect();
            (r.len() >= n).then_some(r)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{:?}\n{}", rec.requests(), s.log()))
}

async fn run_one(b: &mut FakeBuilder, result: TaskResult) -> String {
    let o = b.offer(T).await.unwrap();
    b.run_task(&o, b"", result).await.unwrap();
    o.event_id
}

#[tokio::test(flavor = "multi_thread")]
async fn commit_status_reaches_each_forge_as_documented_then_the_webhook() {
    let rec = Recorder::start().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("forge.token"), "s3cret-token\n").unwrap();
    std::fs::write(tmp.path().join("hook.secret"), "hmac-key\n").unwrap();
    let token_file = tmp.path().join("forge.token").display().to_string();
    let mut c = config_in(tmp.path().join("data"));
    c.web_url = Some("https://ci.example.org/".into());
    let mut fj = project(
        "fj",
        Forge::Forgejo,
        format!("{}/fj", rec.url()),
        "owner/fj",
        &token_file,
    );
    fj.webhook = Some(WebhookConfig {
        url: format!("{}/hook", rec.url()),
        secret_file: Some(tmp.path().join("hook.secret").display().to_string()),
    });
    c.projects = vec![
        fj,
        project(
            "gh",
            Forge::Github,
            format!("{}/gh", rec.url()),
            "owner/gh",
            &token_file,
        ),
        project(
            "gl",
            Forge::Gitlab,
            format!("{}/gl", rec.url()),
            "group/gl",
            &token_file,
        ),
    ];
    let server = TestServer::start(&bin(), &c, &[]).unwrap();
    let s = &server;
    let mut b = fake_builder(s, "host1", &["linux-debian"], &[(LINUX, 1)]).await;

    // (project, prefix, result, final forge state)
    let cases = [
        ("fj", "/fj", TaskResult::Success, "success"),
        (
            "gh",
            "/gh",
            TaskResult::Failed {
                exit_code: 1,
                step: 0,
            },
            "failure",
        ),
        (
            "gl",
            "/gl",
            TaskResult::Failed {
                exit_code: 1,
                step: 0,
            },
            "failed",
        ),
    ];
    for (name, prefix, result, last) in cases {
        let p = Push::new(name, ONE);
        let ev = push_ok(s, &p).await;
        let pending = received(&rec, prefix, 1, s).await;
        let got = run_one(&mut b, result).await;
        assert_eq!(got, ev);
        let both = received(&rec, prefix, 2, s).await;
        assert_eq!(
            both.len(),
            2,
            "pending then the end, nothing else: {both:?}"
        );
        let link = format!("https://ci.example.org/e/{ev}");
        for (r, state) in [(&pending[0], "pending"), (&both[1], last)] {
            assert_eq!(r.method, "POST");
            assert_eq!(r.header("content-type"), Some("application/json"));
            let body = r.json();
            assert_eq!(body["state"], state, "{body}");
            assert_eq!(body["target_url"], link, "{body}");
            assert!(
                body["description"].as_str().unwrap().starts_with("Sai: "),
                "{body}"
            );
            match name {
                "fj" => {
                    assert_eq!(
                        r.path,
                        format!("/fj/api/v1/repos/owner/fj/statuses/{}", p.hash)
                    );
                    assert_eq!(r.header("authorization"), Some("token s3cret-token"));
                    assert_eq!(body["context"], "sai/ci");
                    assert_eq!(
                        keys(&body),
                        ["context", "description", "state", "target_url"]
                    );
                }
                "gh" => {
                    assert_eq!(r.path, format!("/gh/repos/owner/gh/statuses/{}", p.hash));
                    assert_eq!(r.header("authorization"), Some("Bearer s3cret-token"));
                    assert_eq!(r.header("accept"), Some("application/vnd.github+json"));
                    assert_eq!(r.header("x-github-api-version"), Some("2022-11-28"));
                    assert!(r.header("user-agent").unwrap().starts_with("sai-server"));
                    assert_eq!(body["context"], "sai/ci");
                    assert_eq!(
                        keys(&body),
                        ["context", "description", "state", "target_url"]
                    );
                }
                _ => {
                    assert_eq!(
                        r.path,
                        format!("/gl/api/v4/projects/group%2Fgl/statuses/{}", p.hash)
                    );
                    assert_eq!(r.header("private-token"), Some("s3cret-token"));
                    assert_eq!(r.header("authorization"), None);
                    assert_eq!(body["name"], "sai/ci");
                    assert_eq!(body["ref"], "main");
                    assert_eq!(
                        keys(&body),
                        ["description", "name", "ref", "state", "target_url"]
                    );
                }
            }
        }
        // The last attempt shows in the event.
        let e = wait_for("delivery recorded", T, || async {
            let e = event(s, &ev).await;
            (e["commit_status"]["state"] == last).then_some(e)
        })
        .await
        .unwrap();
        let d = &e["commit_status"];
        assert_eq!(d["delivered"], true, "{e}");
        assert_eq!(d["attempts"], 1, "{e}");
        assert_eq!(d["http_status"], 201, "{e}");
    }

    // The webhook of the forgejo project: once, at the end, signed.
    let hooks = received(&rec, "/hook", 1, s).await;
    assert_eq!(hooks.len(), 1);
    let h = &hooks[0];
    assert_eq!(h.method, "POST");
    let body = h.json();
    assert_eq!(body["state"], "success");
    assert_eq!(body["event"]["project"], "fj");
    assert!(
        body["url"]
            .as_str()
            .unwrap()
            .starts_with("https://ci.example.org/e/")
    );
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"hmac-key").unwrap();
    mac.update(&h.body);
    assert_eq!(
        h.header("x-sai-signature"),
        Some(format!("sha256={}", hex::encode(mac.finalize().into_bytes())).as_str())
    );
    let m = s.get_text("/metrics").await;
    let m = openmetrics::parse(&m).unwrap();
    assert_eq!(
        m.value(
            "sai_server_forge_deliveries_total",
            &[("kind", "commit_status"), ("outcome", "delivered")]
        ),
        Some(6.0)
    );
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forge_that_is_down_gets_retries_and_the_scheduler_goes_on() {
    // A port nobody listens on until the forge "comes back".
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("forge.token"), "tok").unwrap();
    let mut c = config_in(tmp.path().join("data"));
    c.projects = vec![project(
        "down",
        Forge::Gitea,
        format!("http://{addr}"),
        "o/down",
        &tmp.path().join("forge.token").display().to_string(),
    )];
    let server = TestServer::start(&bin(), &c, &[]).unwrap();
    let s = &server;
    let mut b = fake_builder(s, "host1", &["linux-debian"], &[(LINUX, 1)]).await;

    let first = Push::new("down", ONE);
    let ev1 = push_ok(s, &first).await;
    assert_eq!(run_one(&mut b, TaskResult::Success).await, ev1);
    // Retried, failing, while the scheduler runs another push to the end.
    let e = wait_for("failed attempts recorded", T, || async {
        let e = event(s, &ev1).await;
        (e["commit_status"]["attempts"].as_u64() >= Some(2)).then_some(e)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", s.log()));
    let d = &e["commit_status"];
    assert_eq!(d["delivered"], false, "{e}");
    assert!(d["error"].as_str().is_some(), "{e}");
    assert!(d["next_attempt"].as_i64().is_some(), "{e}");
    let ev2 = push_ok(s, &Push::new("down", ONE)).await;
    assert_eq!(run_one(&mut b, TaskResult::Success).await, ev2);
    let t2 = tasks_of(s, &ev2).await;
    task_state(s, t2[0]["id"].as_str().unwrap(), "success").await;

    // The forge comes back: the latest state of each event arrives.
    let rec = Recorder::start_at(addr).await.unwrap();
    let got = received(&rec, "/api/v1/repos/o/down/statuses/", 2, s).await;
    let mut final_states: Vec<(String, String)> = got
        .iter()
        .map(|r| {
            (
                r.path.clone(),
                r.json()["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    final_states.sort();
    assert!(
        final_states.contains(&(
            format!("/api/v1/repos/o/down/statuses/{}", first.hash),
            "success".into()
        )),
        "{final_states:?}"
    );
    let e = wait_for(
        "delivered after the outage",
        Duration::from_secs(90),
        || async {
            let e = event(s, &ev1).await;
            (e["commit_status"]["delivered"] == true).then_some(e)
        },
    )
    .await
    .unwrap();
    assert_eq!(e["commit_status"]["state"], "success", "{e}");
}
