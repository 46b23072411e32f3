//! Dev-only helpers for Sai's integration tests.
//!
//! * [`ProcessGuard`]: a child process that gets SIGTERM, then SIGKILL after
//!   a grace period, when dropped.
//! * [`TestServer`]: the real `sai-server` binary on `127.0.0.1:0` with a
//!   temporary (or given) data dir; reads the bound address from its
//!   `sai-server listening on http://...` line.
//! * [`hook`]: notification bodies, HMAC headers and curl-style multipart
//!   framing, as the original `hooks/sai.sh` sends them.
//! * [`FakeBuilder`]: a builder speaking the real protocol over a real
//!   websocket, with credit-based flow control.
//! * [`wait_for`]: poll a condition until a deadline (no fixed sleeps).
//! * [`web::TestWeb`]: the real `sai-web` binary on port 0.
//! * [`browser`]: headless Chromium through chromedriver (WebDriver).
//! * [`git`]: real git repositories ([`git::GitRepo`]) for fetch/checkout
//!   fixtures.
//! * [`tls`]: a private CA and server certificates made with `rcgen`.
//! * [`openmetrics`]: a strict parser of `/metrics` text expositions.
//! * [`recorder`]: an HTTP server recording requests (forges, webhooks).
//! * [`text`]: line numbers and line starts of a log's bytes.
//! * [`sqlite`]: reading a store's sqlite files directly.

pub mod browser;
pub mod builder;
pub mod fixtures;
pub mod git;
pub mod hook;
pub mod https_git;
pub mod notify_socket;
pub mod openmetrics;
pub mod proc_status;
pub mod recorder;
pub mod sqlite;
pub mod text;
pub mod tls;
pub mod web;

pub use builder::FakeBuilder;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sai_core::config::server::ServerConfig;

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped.
pub struct ProcessGuard {
    child: Option<Child>,
    grace: Duration,
}

impl ProcessGuard {
    /// Guard `child`; on drop it gets `grace` to exit after SIGTERM.
    pub fn new(child: Child, grace: Duration) -> ProcessGuard {
        ProcessGuard {
            child: Some(child),
            grace,
        }
    }

    /// Process id.
    pub fn id(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGTERM, wait up to the grace period, then SIGKILL. Returns the exit status.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + self.grace;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().ok()
    }

    /// SIGKILL now (a crash), and reap.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = child.kill();
        child.wait().ok()
    }

    /// Wait for the process to exit by itself, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                self.child = None;
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Poll `cond` every 20 ms until it returns `Some` or `timeout` passes.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut cond: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Append everything read from `from` to `sink` until end of file or an
/// error, on a thread of its own (a pty's output, a socket's bytes).
pub fn copy_in_background(
    mut from: impl std::io::Read + Send + 'static,
    sink: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
}

/// Send `request` and read its body as text, whatever the status; panics
/// when sending or reading fails, as a test should.
pub async fn body_text(request: reqwest::RequestBuilder) -> String {
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("request failed: {e}"));
    response
        .text()
        .await
        .unwrap_or_else(|e| panic!("reading the body: {e}"))
}

/// The string `key` of every object in a JSON list (an API answer), in
/// order; panics on anything else, as a test should.
pub fn field_of_each<'a>(list: &'a serde_json::Value, key: &str) -> Vec<&'a str> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|o| {
            o[key]
                .as_str()
                .unwrap_or_else(|| panic!("no string {key:?} in {o}"))
        })
        .collect()
}

/// Run `cmd` with `input` on its stdin; its status and captured output.
pub fn output_with_stdin(cmd: &mut Command, input: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input)
        .expect("writing stdin");
    child.wait_with_output().expect("waiting for the child")
}

/// Run `cmd` to its end; panics naming `what`, the exit status, stdout and
/// stderr unless it succeeded. Returns its stdout.
pub fn run_ok(what: impl std::fmt::Display, cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what}: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Path of a workspace binary from an integration test: `env!("CARGO_BIN_EXE_sai-server")`.
/// Falls back to `target/debug/<name>` next to the test executable.
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(|p| p.parent()).expect("target dir");
    dir.join(name)
}

/// A running `sai-server`.
pub struct TestServer {
    /// The process.
    pub guard: ProcessGuard,
    /// Bound address.
    pub addr: SocketAddr,
    /// Data dir.
    pub data_dir: PathBuf,
    /// Config file used.
    pub config_path: PathBuf,
    /// Server's stderr log file.
    pub log_path: PathBuf,
    bin: PathBuf,
    /// Whether it serves TLS (it said `listening on https://`).
    pub tls: bool,
}

/// Config for a test server: loopback, port 0, the given data dir and key.
pub fn test_config(data_dir: &Path, notification_key: &str) -> ServerConfig {
    ServerConfig {
        schema: Some("sai-server".into()),
        listen: "127.0.0.1:0".into(),
        data_dir: data_dir.display().to_string(),
        notification_key: Some(notification_key.into()),
        ..ServerConfig::default()
    }
}

/// `<dir>/<stem of config>.<ns since the epoch>.log`: a fresh log file name
/// for each start of a daemon.
fn timestamped_log(dir: &Path, config_path: &Path) -> PathBuf {
    let stem = config_path
        .file_stem()
        .and_then(|n| n.to_str())
        .unwrap_or("daemon");
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    dir.join(format!("{stem}.{ns}.log"))
}

/// Start `<bin> -c <config_path> run` with stderr to `log_path`, `RUST_LOG`
/// (default `info`) and `env`, and wait up to 60 s for its line
/// `<name> listening on http(s)://<addr>` on stdout: the guard, whether it
/// serves TLS, and the address.
pub(crate) fn spawn_listening(
    name: &str,
    bin: &Path,
    config_path: &Path,
    log_path: &Path,
    env: &[(&str, &str)],
) -> Result<(ProcessGuard, bool, SocketAddr)> {
    let log = std::fs::File::create(log_path)?;
    let mut cmd = Command::new(bin);
    cmd.arg("-c")
        .arg(config_path)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or("info".into()),
        );
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("spawning {}", bin.display()))?;
    let stdout = child.stdout.take().context("stdout")?;
    let guard = ProcessGuard::new(child, Duration::from_secs(10));
    let (tx, rx) = std::sync::mpsc::channel();
    let http = format!("{name} listening on http://");
    let https = format!("{name} listening on https://");
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        while r.read_line(&mut line).is_ok_and(|n| n > 0) {
            let l = line.trim();
            if let Some(a) = l.strip_prefix(&http) {
                let _ = tx.send((false, a.to_string()));
            } else if let Some(a) = l.strip_prefix(&https) {
                let _ = tx.send((true, a.to_string()));
            }
            line.clear();
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok((tls, a)) => Ok((guard, tls, a.parse().context("parsing listening address")?)),
        Err(_) => {
            let log = std::fs::read_to_string(log_path).unwrap_or_default();
            bail!("{name} did not report listening; its log:\n{log}");
        }
    }
}

impl TestServer {
    /// Start `bin` with `config` (written as JSON next to the data dir), with
    /// extra environment variables; wait up to 60 s for its listening line.
    pub fn start(bin: &Path, config: &ServerConfig, env: &[(&str, &str)]) -> Result<TestServer> {
        let data_dir = PathBuf::from(&config.data_dir);
        std::fs::create_dir_all(&data_dir)?;
        let parent = data_dir.parent().unwrap_or(Path::new("/tmp")).to_path_buf();
        let config_path = parent.join(format!(
            "{}.conf",
            data_dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("server")
        ));
        std::fs::write(&config_path, serde_json::to_vec_pretty(config)?)?;
        let log_path = timestamped_log(&parent, &config_path);
        let (guard, tls, addr) = spawn_listening("sai-server", bin, &config_path, &log_path, env)?;
        Ok(TestServer {
            guard,
            addr,
            data_dir,
            config_path,
            log_path,
            bin: bin.to_path_buf(),
            tls,
        })
    }

    /// `http://addr<path>` (`https://` when the server terminates TLS).
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// `ws://addr/builder` (`wss://` when the server terminates TLS).
    pub fn builder_url(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}/builder", self.addr)
    }

    /// `GET path` without credentials: the body of the answer, whatever
    /// its status (a plain-HTTP server; panics when the request fails).
    pub async fn get_bytes(&self, path: &str) -> Vec<u8> {
        let url = self.url(path);
        let resp = reqwest::get(&url)
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let body = resp
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        body.to_vec()
    }

    /// `GET path` without credentials, which must succeed (2xx): its JSON.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let r = reqwest::get(self.url(path)).await.unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.unwrap()
    }

    /// [`TestServer::get_bytes`] as text (invalid UTF-8 replaced).
    pub async fn get_text(&self, path: &str) -> String {
        String::from_utf8_lossy(&self.get_bytes(path).await).into_owned()
    }

    /// The raw log of task `id` as stored so far (`?format=raw`).
    pub async fn raw_log(&self, id: &str) -> Vec<u8> {
        self.get_bytes(&format!("/api/tasks/{id}/log?format=raw"))
            .await
    }

    /// Every record of task `id`'s log, read through the paged JSON log API
    /// `page_bytes` at a time; checks that each page makes progress and that
    /// the last one says the log is complete.
    pub async fn log_records(&self, id: &str, page_bytes: usize) -> Vec<serde_json::Value> {
        let mut records = Vec::new();
        let mut offset = 0u64;
        loop {
            let page = self
                .get_json(&format!(
                    "/api/tasks/{id}/log?offset={offset}&max={page_bytes}"
                ))
                .await;
            records.extend(page["records"].as_array().unwrap().iter().cloned());
            let next = page["next_offset"].as_u64().unwrap();
            if next >= page["total"].as_u64().unwrap() {
                assert_eq!(page["complete"], true, "{page}");
                return records;
            }
            assert!(next > offset, "no progress at {offset}: {page}");
            offset = next;
        }
    }

    /// The server's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn token(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.config_path)
            .arg("token")
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!(
                "sai-server token failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?.trim().to_string())
    }

    /// Mint a builder token with `sai-server token builder`.
    pub fn builder_token(&self, name: &str, platforms: &[&str]) -> Result<String> {
        self.token(&[
            "builder",
            "--name",
            name,
            "--platforms",
            &platforms.join(","),
            "--ttl",
            "1h",
        ])
    }

    /// Mint a user token with `sai-server token user`.
    pub fn user_token(&self, name: &str) -> Result<String> {
        self.token(&["user", "--name", name, "--ttl", "1h"])
    }

    /// Mint a service token (for sai-web) with `sai-server token service`.
    pub fn service_token(&self, name: &str) -> Result<String> {
        self.token(&["service", "--name", name, "--ttl", "1h"])
    }
}

/// Serve one accepted connection (`io`: TCP, or TLS over it) with `svc`
/// over HTTP/1.1 until the client is done; how it ends is of no interest
/// to a test's helper server.
async fn serve_http1<I, S>(io: I, svc: S)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let io = hyper_util::rt::TokioIo::new(io);
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, svc)
        .await;
}
