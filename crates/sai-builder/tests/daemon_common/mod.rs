//! Shared setup of the daemon tests: the real `sai-server` and
//! `sai-builder` binaries, a real git repository (`sai_testkit::git`), hook
//! pushes, API polling, and the usual one-server / one-builder arrangement.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use sai_core::config::server::ServerConfig;
use sai_testkit::git::GitRepo;
use sai_testkit::hook::{HookRequest, Push};
use sai_testkit::{ProcessGuard, TestServer, wait_for};
use serde_json::{Value, json};

pub const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
pub const LINUX: &str = "linux-debian-12/x86_64-amd/gcc";
pub const ESP32: &str = "freertos-espidf/xl6-esp32/gcc";
/// Generous deadline for anything event-driven.
pub const T: Duration = Duration::from_secs(90);

/// The `sai-server` binary next to this test's target dir (built by
/// `cargo test --workspace` / `cargo build -p sai-server`), or the one
/// `SAI_TEST_SERVER_BIN` names (the x86_64 server that builders built for
/// another architecture talk to under qemu-user, scripts/ci/stages/20-cross.sh).
pub fn server_bin() -> PathBuf {
    let p = std::env::var_os("SAI_TEST_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| sai_testkit::bin_path("sai-server"));
    assert!(
        p.exists(),
        "{} is missing: run `cargo build -p sai-server` (or `cargo test --workspace`) first",
        p.display()
    );
    p
}

pub fn server_config(data: &Path) -> ServerConfig {
    let mut c = sai_testkit::test_config(data, KEY);
    c.builder_ping_interval_ms = 1000;
    c.builder_dead_timeout_ms = 15_000;
    c
}

pub fn start_server(data: &Path) -> TestServer {
    TestServer::start(&server_bin(), &server_config(data), &[]).unwrap()
}

pub fn start_server_at(data: &Path, addr: SocketAddr) -> TestServer {
    let mut c = server_config(data);
    c.listen = addr.to_string();
    TestServer::start(&server_bin(), &c, &[]).unwrap()
}

/// A loopback address with a port that was free a moment ago.
pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Mint a builder token with the server binary, without a running server:
/// the key is created in (or read from) `data/token.key`.
pub fn mint_builder_token(data: &Path, name: &str, platforms: &str) -> String {
    std::fs::create_dir_all(data).unwrap();
    let stdout = sai_testkit::run_ok(
        "sai-server token builder",
        Command::new(server_bin())
            .arg("token")
            .arg("--data")
            .arg(data)
            .args([
                "builder",
                "--name",
                name,
                "--platforms",
                platforms,
                "--ttl",
                "1h",
            ]),
    );
    stdout.trim().to_string()
}

/// A repository `dir/repo` with one commit of a README; returns its path
/// and the commit hash.
pub fn make_repo(dir: &Path) -> (PathBuf, String) {
    let repo = GitRepo::init(dir.join("repo"));
    repo.write("README", "the readme of the test project\n");
    let hash = repo.commit("first");
    (repo.path().to_path_buf(), hash)
}

/// Commit a new README to `repo`; returns the new hash.
pub fn new_commit(repo: &Path, readme: &str) -> String {
    let repo = GitRepo::open(repo);
    repo.write("README", readme);
    repo.commit(readme)
}

/// A saifile with one platform whose build is `build` (one step per line)
/// and the given configurations (name -> configuration object).
pub fn saifile(platform: &str, build: &str, configurations: Value) -> Vec<u8> {
    serde_json::to_vec_pretty(&json!({
        "schema": "sai-1",
        "platforms": { platform: { "build": build } },
        "configurations": configurations,
    }))
    .unwrap()
}

/// A saifile with one task on [`LINUX`] (configuration `default`) whose
/// build is `build`.
pub fn linux_saifile(build: &str) -> Vec<u8> {
    saifile(LINUX, build, json!({ "default": { "cmake": "" } }))
}

/// Push `saifile` for commit `hash` of the repository at `repo`; returns the event id.
pub async fn push(
    server: &TestServer,
    project: &str,
    repo: &Path,
    hash: &str,
    saifile: &[u8],
) -> String {
    let fetch_url = repo.display().to_string();
    push_with(
        &reqwest::Client::new(),
        server,
        project,
        &fetch_url,
        hash,
        saifile,
    )
    .await
}

/// [`push`] to project `proj`; returns the event id and the id of its
/// first task.
pub async fn push_task(
    server: &TestServer,
    repo: &Path,
    hash: &str,
    saifile: &[u8],
) -> (String, String) {
    let ev = push(server, "proj", repo, hash, saifile).await;
    let task = first_task(server, &ev).await;
    (ev, task)
}

/// [`push_task`] for the first commit of a new [`make_repo`] under `dir`.
pub async fn push_new_repo(server: &TestServer, dir: &Path, saifile: &[u8]) -> (String, String) {
    let (repo, hash) = make_repo(dir);
    push_task(server, &repo, &hash, saifile).await
}

/// Push `saifile` for commit `hash` fetched from `fetch_url`, with client
/// `c`; returns the event id.
pub async fn push_with(
    c: &reqwest::Client,
    server: &TestServer,
    project: &str,
    fetch_url: &str,
    hash: &str,
    saifile: &[u8],
) -> String {
    let p = Push {
        project: project.into(),
        fetch_url: fetch_url.into(),
        git_ref: "refs/heads/main".into(),
        hash: hash.into(),
        saifile: saifile.to_vec(),
    };
    let r = HookRequest::like_sai_sh(&p, KEY)
        .send_with(c, &server.url("/sai/update-hook"))
        .await
        .unwrap();
    let st = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(st, 200, "{v}\n{}", server.log());
    v["event_id"].as_str().unwrap().to_string()
}

pub async fn raw_log(server: &TestServer, task: &str) -> String {
    String::from_utf8_lossy(&server.raw_log(task).await).into_owned()
}

fn terminal(state: &Value) -> bool {
    matches!(state.as_str(), Some("success" | "failed" | "cancelled"))
}

/// Wait until every task of the event is in a terminal state; returns the event.
/// Commit a new README `readme` to `repo`, push it with one [`LINUX`] task
/// whose build is `build`, and wait until that task succeeded; the event id
/// and the event.
pub async fn push_new_commit_to_success(
    server: &TestServer,
    repo: &Path,
    readme: &str,
    build: &str,
    why: &dyn Fn() -> String,
) -> (String, Value) {
    let hash = new_commit(repo, readme);
    let ev = push(server, "proj", repo, &hash, &linux_saifile(build)).await;
    let e = event_done(server, &ev, why).await;
    assert_eq!(e["tasks"][0]["state"], "success", "{e}\n{}", why());
    (ev, e)
}

/// Push a [`LINUX`] task whose build is `build`, of a new [`make_repo`]
/// under `dir`, and wait until it ended; returns the event and the task's
/// raw log.
pub async fn run_build(
    server: &TestServer,
    dir: &Path,
    build: &str,
    why: &dyn Fn() -> String,
) -> (Value, String) {
    let (repo, hash) = make_repo(dir);
    let ev = push(server, "proj", &repo, &hash, &linux_saifile(build)).await;
    let e = event_done(server, &ev, why).await;
    let log = raw_log(server, e["tasks"][0]["id"].as_str().unwrap()).await;
    (e, log)
}

pub async fn event_done(server: &TestServer, ev: &str, why: &dyn Fn() -> String) -> Value {
    wait_until(&format!("event {ev} done"), why, || async {
        let e = server.get_json(&format!("/api/events/{ev}")).await;
        let tasks = e["tasks"].as_array()?;
        (!tasks.is_empty() && tasks.iter().all(|t| terminal(&t["state"]))).then_some(e)
    })
    .await
}

/// [`wait_for`] `cond` for at most [`T`]; on a time-out, panics with the
/// error and `why()`.
pub async fn wait_until<V, Fut>(
    what: &str,
    why: &dyn Fn() -> String,
    cond: impl FnMut() -> Fut,
) -> V
where
    Fut: std::future::Future<Output = Option<V>>,
{
    wait_for(what, T, cond)
        .await
        .unwrap_or_else(|err| panic!("{err}\n{}", why()))
}

/// Wait until `cond` holds for the task's JSON; returns it.
pub async fn task_until(
    server: &TestServer,
    task: &str,
    what: &str,
    cond: impl Fn(&Value) -> bool,
    why: &dyn Fn() -> String,
) -> Value {
    wait_until(what, why, || async {
        let t = server.get_json(&format!("/api/tasks/{task}")).await;
        cond(&t).then_some(t)
    })
    .await
}

/// Wait until the task is in `state` (`"running"`, `"success"`...); returns
/// its JSON.
pub async fn task_in_state(
    server: &TestServer,
    task: &str,
    state: &str,
    why: &dyn Fn() -> String,
) -> Value {
    let what = format!("task {task} to be {state}");
    task_until(server, task, &what, |t| t["state"] == state, why).await
}

/// Cancel `task` as operator `alice` through the API; asserts the server
/// took it (200).
pub async fn cancel_task(server: &TestServer, task: &str, why: &dyn Fn() -> String) {
    let user = server.user_token("alice").unwrap();
    let r = reqwest::Client::new()
        .post(server.url(&format!("/api/tasks/{task}/cancel")))
        .bearer_auth(&user)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", why());
}

/// Wait until the task's raw log contains `needle`.
pub async fn log_contains(server: &TestServer, task: &str, needle: &str, why: &dyn Fn() -> String) {
    let r = wait_for(&format!("{needle:?} in the log of {task}"), T, || async {
        raw_log(server, task).await.contains(needle).then_some(())
    })
    .await;
    if let Err(err) = r {
        panic!(
            "{err}\nlog so far:\n{}\n{}",
            raw_log(server, task).await,
            why()
        );
    }
}

/// Wait until the server lists builder `name` online; returns its entry.
pub async fn builder_online(server: &TestServer, name: &str, why: &dyn Fn() -> String) -> Value {
    wait_until(&format!("builder {name} online"), why, || async {
        let bs = server.get_json("/api/builders").await;
        bs.as_array()?
            .iter()
            .find(|b| b["name"] == name && b["online"] == true)
            .cloned()
    })
    .await
}

/// A builder token for `host` and `platforms` from `server`, written to
/// `dir/file` (with a trailing newline, as editors leave it); the entry
/// names the file relative to the config's folder (`dir`).
pub fn server_ref(
    server: &TestServer,
    dir: &Path,
    file: &str,
    host: &str,
    platforms: &[&str],
) -> ServerRef {
    let token = server.builder_token(host, platforms).unwrap();
    std::fs::write(dir.join(file), format!("{token}\n")).unwrap();
    ServerRef {
        url: server.builder_url(),
        token_file: file.into(),
    }
}

/// The usual arrangement: builder `b1` with `instances` of [`LINUX`], taking
/// work from `server` only (token file `s.token`); returns the config path.
pub fn one_server_config(server: &TestServer, dir: &Path, instances: u32) -> PathBuf {
    one_server_config_with(server, dir, instances, |_| {})
}

/// A server with its data in `dir/data` and a builder (config in `dir`)
/// offering `instances` instances of [`LINUX`] to it.
pub fn start_server_and_builder(dir: &Path, instances: u32) -> (TestServer, BuilderProc) {
    start_server_and_builder_with(dir, instances, |_| {})
}

/// [`start_server_and_builder`], once the server lists the builder online.
pub async fn start_server_and_online_builder(
    dir: &Path,
    instances: u32,
) -> (TestServer, BuilderProc) {
    let (server, builder) = start_server_and_builder(dir, instances);
    builder_online(&server, "b1", &|| logs(&builder, &server)).await;
    (server, builder)
}

/// [`start_server_and_builder`] with a last edit of the builder's config
/// JSON.
pub fn start_server_and_builder_with(
    dir: &Path,
    instances: u32,
    edit: impl FnOnce(&mut Value),
) -> (TestServer, BuilderProc) {
    let server = start_server(&dir.join("data"));
    // The token file is named relative to the config's folder.
    let conf = one_server_config_with(&server, dir, instances, edit);
    let builder = BuilderProc::start(&conf);
    (server, builder)
}

/// [`one_server_config`] with a last edit of the config JSON.
pub fn one_server_config_with(
    server: &TestServer,
    dir: &Path,
    instances: u32,
    edit: impl FnOnce(&mut Value),
) -> PathBuf {
    let s = server_ref(server, dir, "s.token", "b1", &["linux"]);
    write_builder_config_with(dir, "b1", &[(LINUX, instances, &[&s])], edit)
}

/// Both logs, for assertion messages.
pub fn logs(builder: &BuilderProc, server: &TestServer) -> String {
    format!(
        "builder log:\n{}\nserver log:\n{}",
        builder.log(),
        server.log()
    )
}

/// The builder's and two servers' logs, for assertion messages.
pub fn logs_ab(builder: &BuilderProc, a: &TestServer, b: &TestServer) -> String {
    format!(
        "builder log:\n{}\nserver A log:\n{}\nserver B log:\n{}",
        builder.log(),
        a.log(),
        b.log()
    )
}

/// The id of the first task of event `ev`.
pub async fn first_task(server: &TestServer, ev: &str) -> String {
    server.get_json(&format!("/api/events/{ev}")).await["tasks"][0]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A build whose first run writes its shell's pid to `dir/pid` (holding it
/// open, for [`step_pid`]) and waits (at most 60 s) for a `dir/go` file;
/// later runs pass straight through. Runs are counted in `dir/count`.
pub fn waiting_build(dir: &Path) -> String {
    let (cnt, go, pid) = (
        dir.join("count").display().to_string(),
        dir.join("go").display().to_string(),
        dir.join("pid").display().to_string(),
    );
    format!(
        "n=$(cat {cnt} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {cnt}; echo \"run $n started\"; \
         if [ $n = 1 ]; then echo $$ > {pid}; exec 3<{pid}; i=0; while [ ! -e {go} ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; fi; \
         echo \"run $n finished\""
    )
}

/// Push a [`waiting_build`] of a new [`make_repo`] under `dir` to `server`;
/// returns the repository, the event id and its task id.
pub async fn push_waiting_build(server: &TestServer, dir: &Path) -> (PathBuf, String, String) {
    let (repo, hash) = make_repo(dir);
    let sf = saifile(
        LINUX,
        &waiting_build(dir),
        json!({ "default": { "cmake": "" } }),
    );
    let ev = push(server, "proj", &repo, &hash, &sf).await;
    let task = first_task(server, &ev).await;
    (repo, ev, task)
}

/// Wait until the task is back to `waiting` (e.g. handed back by a
/// stopping builder); returns its JSON.
pub async fn task_waiting_again(server: &TestServer, task: &str) -> Value {
    let why = || format!("server log:\n{}", server.log());
    task_in_state(server, task, "waiting", &why).await
}

/// The host pid of the shell of [`waiting_build`] (with task isolation its
/// `$$` is its pid namespace's).
pub async fn step_pid(dir: &Path) -> i32 {
    let pid_file = dir.join("pid");
    wait_for("pid file", T, || async { host_pid(&pid_file) })
        .await
        .unwrap()
}

/// The host pid of the live process that wrote its own pid (as it sees
/// it: in a pid namespace, not the host's) to `path` and holds `path` open.
pub fn host_pid(path: &Path) -> Option<i32> {
    let written: i32 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
    let Ok(procs) = std::fs::read_dir("/proc") else {
        // No /proc (not Linux): no pid namespaces either.
        return Some(written);
    };
    procs.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let status = std::fs::read_to_string(e.path().join("status")).ok()?;
        let ns_pid: i32 = status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))?
            .split_whitespace()
            .last()?
            .parse()
            .ok()?;
        if ns_pid != written || status.contains("\nState:\tZ") {
            return None;
        }
        let holds = std::fs::read_dir(e.path().join("fd"))
            .ok()?
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l == path));
        holds.then_some(pid)
    })
}

/// One server entry of a builder config: URL and token file.
pub struct ServerRef {
    pub url: String,
    pub token_file: String,
}

/// Write a builder config under `dir` (home [`builder_home`], host `host`);
/// `platforms` lists (name, instances, servers).
pub fn write_builder_config(
    dir: &Path,
    host: &str,
    platforms: &[(&str, u32, &[&ServerRef])],
) -> PathBuf {
    write_builder_config_with(dir, host, platforms, |_| {})
}

/// The home of the builder whose config [`write_builder_config`] wrote
/// under `dir`.
pub fn builder_home(dir: &Path) -> PathBuf {
    dir.join("home")
}

/// [`write_builder_config`] with a last edit of the JSON.
pub fn write_builder_config_with(
    dir: &Path,
    host: &str,
    platforms: &[(&str, u32, &[&ServerRef])],
    edit: impl FnOnce(&mut Value),
) -> PathBuf {
    let home = builder_home(dir);
    std::fs::create_dir_all(&home).unwrap();
    let plats: Vec<Value> = platforms
        .iter()
        .map(|(name, instances, servers)| {
            json!({
                "name": name,
                "instances": instances,
                "servers": servers.iter().map(|s| json!({"url": s.url, "token_file": s.token_file})).collect::<Vec<_>>(),
            })
        })
        .collect();
    let mut conf = json!({
        "schema": "sai-builder",
        "home": home.display().to_string(),
        "host": host,
        "platforms": plats,
        "min_free_disk_bytes": 1024 * 1024,
        "step_timeout_secs": 300,
    });
    edit(&mut conf);
    let path = dir.join("builder.conf");
    let text = format!(
        "# sai-builder test config\n{}\n",
        serde_json::to_string_pretty(&conf).unwrap()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A command running the `sai-builder` binary: directly, or through the
/// emulator `SAI_TEST_RUNNER` names (e.g. `qemu-s390x`) when the tests were
/// built for another architecture and the host has no binfmt handler.
pub fn builder_command() -> Command {
    match std::env::var_os("SAI_TEST_RUNNER") {
        Some(runner) => {
            let mut c = Command::new(runner);
            c.arg(env!("CARGO_BIN_EXE_sai-builder"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_sai-builder")),
    }
}

/// A running `sai-builder` with its stderr in a file.
pub struct BuilderProc {
    pub guard: ProcessGuard,
    pub log_path: PathBuf,
}

impl BuilderProc {
    pub fn start(config: &Path) -> BuilderProc {
        BuilderProc::start_with_env(config, &[])
    }

    /// [`BuilderProc::start`] with extra environment variables.
    pub fn start_with_env(config: &Path, env: &[(&str, &str)]) -> BuilderProc {
        let dir = config.parent().unwrap();
        let n = std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .map(|e| e.file_name().to_string_lossy().starts_with("builder."))
                    .unwrap_or(false)
            })
            .count();
        let log_path = dir.join(format!("builder.{n}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = builder_command()
            .arg("-c")
            .arg(config)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info,sai_builder=debug".into()),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        BuilderProc {
            guard: ProcessGuard::new(child, Duration::from_secs(30)),
            log_path,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Wait until the builder's log contains `needle`.
    pub async fn wait_log(&self, needle: &str) {
        let r = wait_for(&format!("{needle:?} in the builder log"), T, || async {
            self.log().contains(needle).then_some(())
        })
        .await;
        if let Err(e) = r {
            panic!("{e}\nbuilder log:\n{}", self.log());
        }
    }
}

/// Whether process `pid` is gone (or a zombie nobody reaped yet).
pub fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
    }
}
