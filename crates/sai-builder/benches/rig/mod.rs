//! The set-up both builder benches measure on: the real (release)
//! `sai-server` on loopback, optionally terminating TLS with a certificate
//! of a private CA, one real `sai-builder` connected to it offering
//! [`LINUX`], and a one-commit git repository to push.

// Each bench uses a part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sai_core::config::server::{ServerConfig, ServerTlsConfig};
use sai_testkit::git::GitRepo;
use sai_testkit::hook::{HookRequest, Push};
use sai_testkit::tls::{TestCa, Validity};
use sai_testkit::{ProcessGuard, TestServer};
use serde_json::{Value, json};

pub const KEY: &str = "bench-key";
pub const LINUX: &str = "linux-debian-12/x86_64-amd/gcc";
/// How long any one wait may take.
pub const T: Duration = Duration::from_secs(300);
/// Bytes of the big step's log.
pub const BIG: u64 = 100_000_000;
/// The big step prints this line (plus newline) until it has printed [`BIG`] bytes.
pub const LINE: &str = "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmn";

/// The `p` quantile of sorted durations.
pub fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// The `sai-server` the builder talks to: `SAI_BENCH_SERVER` when set
/// (e.g. the deployed static build), else the release one next to the
/// bench, which must have been built.
pub fn server_bin() -> Result<PathBuf> {
    let server_bin = std::env::var_os("SAI_BENCH_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| sai_testkit::bin_path("sai-server"));
    if !server_bin.exists() {
        bail!(
            "{} is missing: run `cargo build --release -p sai-server` first",
            server_bin.display()
        );
    }
    Ok(server_bin)
}

/// The `sai-builder` binary measured: `SAI_BENCH_BUILDER` when set (to
/// compare another build of it, e.g. main's, with the same bench), else the
/// one built with this bench.
pub fn builder_bin() -> PathBuf {
    std::env::var_os("SAI_BENCH_BUILDER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_sai-builder")))
}

/// A server with one connected builder and a repository to push.
pub struct Rig {
    pub server: TestServer,
    /// The server's config.
    pub cfg: ServerConfig,
    /// A client that trusts the server's CA.
    pub client: reqwest::Client,
    /// The builder's pid.
    pub builder_pid: u32,
    _builder: ProcessGuard,
    pub repo: GitRepo,
    /// The commit pushed.
    pub hash: String,
}

impl Rig {
    /// Start everything under `dir`; with `tls` the server serves HTTPS and
    /// `wss://` and the builder trusts its CA.
    pub async fn start(dir: &Path, tls: bool) -> Result<Rig> {
        std::fs::create_dir_all(dir)?;
        let ca = TestCa::new("bench CA")?;
        let ca_file = ca.write(dir, "ca.pem")?;
        let (chain, key) = ca
            .server_cert(&["127.0.0.1"], Validity::Current)?
            .write(dir, "server")?;
        let mut cfg = sai_testkit::test_config(&dir.join("data"), KEY);
        if tls {
            cfg.tls = Some(ServerTlsConfig {
                certificate_chain_file: chain.display().to_string(),
                private_key_file: key.display().to_string(),
            });
        }
        let server = TestServer::start(&server_bin()?, &cfg, &[])?;
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca.cert_pem.as_bytes())?)
            .build()?;
        let token = server.builder_token("bench", &["linux"])?;
        let home = dir.join("home");
        std::fs::create_dir_all(&home)?;
        let mut entry = json!({ "url": server.builder_url(), "token": token });
        if tls {
            entry["ca_file"] = json!(ca_file.display().to_string());
        }
        let conf = dir.join("builder.conf");
        std::fs::write(
            &conf,
            serde_json::to_vec_pretty(&json!({
                "schema": "sai-builder",
                "home": home.display().to_string(),
                "host": "bench",
                "log_limit_bytes": 4 * BIG,
                "min_free_disk_bytes": 0,
                "platforms": [{ "name": LINUX, "servers": [entry] }],
            }))?,
        )?;
        let child = Command::new(builder_bin())
            .arg("-c")
            .arg(&conf)
            .env("RUST_LOG", "warn")
            // As deployed (the systemd units and images set neither): with
            // RUST_BACKTRACE set, every anyhow error captures a backtrace,
            // which reads all of the binary's unwind tables into memory.
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("builder.log"))?)
            .spawn()?;
        let builder_pid = child.id();
        let builder = ProcessGuard::new(child, Duration::from_secs(20));
        let repo = GitRepo::init(dir.join("repo"));
        repo.write("README", "bench\n");
        let hash = repo.commit("bench");
        let rig = Rig {
            server,
            cfg,
            client,
            builder_pid,
            _builder: builder,
            repo,
            hash,
        };
        rig.wait_online().await?;
        Ok(rig)
    }

    /// GET `path` of the server as JSON.
    pub async fn get(&self, path: &str) -> Result<Value> {
        Ok(self
            .client
            .get(self.server.url(path))
            .send()
            .await?
            .json()
            .await?)
    }

    async fn wait_online(&self) -> Result<()> {
        let deadline = Instant::now() + T;
        while !self
            .get("/api/builders")
            .await?
            .as_array()
            .is_some_and(|a| a.iter().any(|b| b["online"] == true))
        {
            if Instant::now() > deadline {
                bail!("builder never came online:\n{}", self.server.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Push the commit as `project` with one task on [`LINUX`] whose build
    /// step is `build`; its task id.
    pub async fn push(&self, project: &str, build: &str) -> Result<String> {
        Ok(self.push_commit(project, build, &self.hash).await?.1)
    }

    /// Commit a change to the repository (a file `n`); the new commit's hash.
    pub fn new_commit(&self, n: usize) -> String {
        self.repo.write(format!("f{n}"), format!("{n}\n"));
        self.repo.commit(&format!("change {n}"))
    }

    /// Push commit `hash` as `project` with one task on [`LINUX`] whose
    /// build step is `build`; (event id, task id).
    pub async fn push_commit(
        &self,
        project: &str,
        build: &str,
        hash: &str,
    ) -> Result<(String, String)> {
        let saifile = serde_json::to_vec(&json!({
            "schema": "sai-1",
            "platforms": { LINUX: { "build": build } },
            "configurations": { "default": { "cmake": "" } },
        }))?;
        let p = Push {
            project: project.into(),
            fetch_url: self.repo.path().display().to_string(),
            git_ref: "refs/heads/main".into(),
            hash: hash.to_string(),
            saifile,
        };
        let v: Value = HookRequest::like_sai_sh(&p, KEY)
            .send_with(&self.client, &self.server.url("/sai/update-hook"))
            .await?
            .json()
            .await?;
        let ev = v["event_id"].as_str().context("event id")?;
        let e = self.get(&format!("/api/events/{ev}")).await?;
        let task = e["tasks"][0]["id"].as_str().context("task id")?;
        Ok((ev.to_string(), task.to_string()))
    }

    /// Wait until event `ev` has ended; its state.
    pub async fn wait_event_end(&self, ev: &str) -> Result<String> {
        let deadline = Instant::now() + T;
        loop {
            let e = self.get(&format!("/api/events/{ev}")).await?;
            let state = e["state"].as_str().unwrap_or_default().to_string();
            if matches!(state.as_str(), "success" | "failed" | "cancelled") {
                return Ok(state);
            }
            if Instant::now() > deadline {
                bail!("event {ev} still {state} after {T:?}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}
