//! Shared helpers of the sai-server integration tests: the real binary, a
//! temp data dir, loopback HTTP.
// Each test binary uses a part of this module.
#![allow(dead_code, unused_imports)]

use std::path::PathBuf;
use std::time::Duration;

use sai_core::config::server::ServerConfig;
use sai_testkit::TestServer;
use sai_testkit::hook::{HookRequest, Push, TestPush};
use serde_json::Value;

pub use sai_testkit::fixtures::{ESP32, KEY, LINUX, SMALL, lws_saifile};

pub const T: Duration = Duration::from_secs(30);

/// A saifile with one task, on [`LINUX`], whose build is `true`.
pub const ONE_TASK: &[u8] = br#"{"schema":"sai-1","platforms":{"linux-debian-12/x86_64-amd/gcc":{"build":"true"}},"configurations":{"default":{"cmake":""}}}"#;

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sai-server"))
}

pub struct Env {
    pub tmp: tempfile::TempDir,
    pub server: TestServer,
    /// The config the server was started with, to start it again.
    pub config: ServerConfig,
}

pub fn config_in(data: PathBuf) -> ServerConfig {
    let mut c = sai_testkit::test_config(&data, KEY);
    c.builder_ping_interval_ms = 300;
    c.builder_dead_timeout_ms = 1500;
    c
}

pub fn start(edit: impl FnOnce(&mut ServerConfig)) -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = config_in(tmp.path().join("data"));
    edit(&mut c);
    let server = TestServer::start(&bin(), &c, &[]).unwrap();
    Env {
        tmp,
        server,
        config: c,
    }
}

/// For tests whose fake builder reads (and so answers pings) only when the
/// test asks it to: keep it connected however slow the machine is.
pub fn patient_builders(c: &mut ServerConfig) {
    c.builder_ping_interval_ms = 10_000;
    c.builder_dead_timeout_ms = 120_000;
}

pub async fn get(server: &TestServer, path: &str) -> (u16, Value) {
    let r = reqwest::get(server.url(path)).await.unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

pub async fn post_auth(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
) -> (u16, Value) {
    let mut rb = reqwest::Client::new().request(method, server.url(path));
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    let r = rb.send().await.unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

/// Push with the hook's exact framing; returns status and body.
/// `method path` as the operator user `ops`.
pub async fn as_ops(server: &TestServer, method: reqwest::Method, path: &str) -> (u16, Value) {
    let user = server.user_token("ops").unwrap();
    post_auth(server, method, path, Some(&user)).await
}

pub async fn push(server: &TestServer, p: &Push) -> (u16, Value) {
    let r = HookRequest::like_sai_sh(p, KEY)
        .send(&server.url("/sai/update-hook"))
        .await
        .unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

/// Push and return the new event id.
pub async fn push_ok(server: &TestServer, p: &Push) -> String {
    let (st, v) = push(server, p).await;
    assert_eq!(st, 200, "{v}\n{}", server.log());
    v["event_id"].as_str().unwrap().to_string()
}

pub async fn event(server: &TestServer, id: &str) -> Value {
    let (st, v) = get(server, &format!("/api/events/{id}")).await;
    assert_eq!(st, 200, "{v}");
    v
}

pub async fn task(server: &TestServer, id: &str) -> Value {
    let (st, v) = get(server, &format!("/api/tasks/{id}")).await;
    assert_eq!(st, 200, "{v}");
    v
}

/// Number of event rows (through the API, every project).
pub async fn event_count(server: &TestServer) -> usize {
    let (_, projects) = get(server, "/api/projects").await;
    let mut n = 0;
    for p in projects.as_array().unwrap() {
        let (_, evs) = get(
            server,
            &format!(
                "/api/projects/{}/events?limit=1000",
                p["name"].as_str().unwrap()
            ),
        )
        .await;
        n += evs.as_array().unwrap().len();
    }
    n
}

/// Entries in the data dir's events folder.
pub fn event_folders(server: &TestServer) -> Vec<String> {
    std::fs::read_dir(server.data_dir.join("events"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The tasks of an event.
pub async fn tasks_of(server: &TestServer, event_id: &str) -> Vec<Value> {
    event(server, event_id).await["tasks"]
        .as_array()
        .unwrap()
        .clone()
}

/// Wait until task `id` is in state `want`; its JSON then. On a timeout
/// the panic shows the task as it last was and the server's log.
pub async fn task_state(server: &TestServer, id: &str, want: &'static str) -> Value {
    let id = id.to_string();
    let waited = sai_testkit::wait_for(&format!("task {id} {want}"), T, || {
        let id = id.clone();
        async move {
            let t = task(server, &id).await;
            (t["state"] == want).then_some(t)
        }
    })
    .await;
    match waited {
        Ok(t) => t,
        Err(e) => panic!(
            "{e}\nthe task now: {}\nserver log:\n{}",
            task(server, &id).await,
            server.log()
        ),
    }
}

/// Wait until no builder is connected.
pub async fn no_builder_online(server: &TestServer) {
    sai_testkit::wait_for("every builder gone", T, || async {
        let (_, bs) = get(server, "/api/builders").await;
        bs.as_array()
            .unwrap()
            .iter()
            .all(|b| b["online"] == false)
            .then_some(())
    })
    .await
    .unwrap();
}

/// A fake builder named `host1` (token for `linux`) offering `instances`
/// of [`LINUX`].
pub async fn host1(server: &TestServer, instances: u32) -> sai_testkit::FakeBuilder {
    fake_builder(server, "host1", &["linux"], &[(LINUX, instances)]).await
}

/// A fake builder `name` whose token allows `allowed` platforms, offering
/// `offers` (platform, instances).
pub async fn fake_builder(
    server: &TestServer,
    name: &str,
    allowed: &[&str],
    offers: &[(&str, u32)],
) -> sai_testkit::FakeBuilder {
    let token = server.builder_token(name, allowed).unwrap();
    sai_testkit::FakeBuilder::start(&server.builder_url(), &token, name, offers)
        .await
        .unwrap()
}

/// Push `p` and let [`host1`] (one instance) accept the first task offered.
pub async fn host1_running(
    server: &TestServer,
    p: &Push,
) -> (sai_testkit::FakeBuilder, sai_core::protocol::TaskOffer) {
    push_ok(server, p).await;
    let mut b = host1(server, 1).await;
    let o = accept_next(&mut b).await;
    (b, o)
}

/// Push one task ([`ONE_TASK`]) to project `project` and let `b` run it to
/// success with `log`; returns the task's id.
pub async fn push_and_run(
    server: &TestServer,
    b: &mut sai_testkit::FakeBuilder,
    project: &str,
    log: &[u8],
) -> String {
    push_ok(server, &Push::new(project, ONE_TASK)).await;
    let o = b.offer(T).await.unwrap();
    b.run_task(&o, log, sai_core::protocol::TaskResult::Success)
        .await
        .unwrap();
    o.task_id
}

/// The builder's next offer, accepted.
pub async fn accept_next(b: &mut sai_testkit::FakeBuilder) -> sai_core::protocol::TaskOffer {
    let o = b.offer(T).await.unwrap();
    b.accept(&o.task_id).await.unwrap();
    o
}
