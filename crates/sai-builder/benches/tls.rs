//! `cargo bench -p sai-builder --bench tls`: what TLS costs. The real
//! `sai-builder` against the real `sai-server` (build it first with
//! `cargo build --release -p sai-server`) on loopback, once with plain
//! HTTP/`ws://` and once with the server terminating TLS (certificate of a
//! private CA made with rcgen; the builder and the bench's client trust that
//! CA). Prints a table:
//!
//! 1. Hook to task offered: from sending the hook POST until the task
//!    leaves `waiting` (the builder accepted the offer), polled every 1 ms;
//!    n = 20, p50 and p95.
//! 2. A step printing 100 MB: from the hook POST until the task is
//!    `success` (every byte framed, flow-controlled and stored).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sai_core::config::server::ServerTlsConfig;
use sai_testkit::git::GitRepo;
use sai_testkit::hook::{HookRequest, Push};
use sai_testkit::tls::{TestCa, Validity};
use sai_testkit::{ProcessGuard, TestServer};
use serde_json::{Value, json};

const KEY: &str = "bench-key";
const LINUX: &str = "linux-debian-12/x86_64-amd/gcc";
const T: Duration = Duration::from_secs(300);
const BIG: u64 = 100_000_000;
const RUNS: usize = 20;

struct Mode {
    name: &'static str,
    tls: bool,
}

struct Measured {
    offered: Vec<Duration>,
    big: Duration,
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn get(c: &reqwest::Client, server: &TestServer, path: &str) -> Result<Value> {
    Ok(c.get(server.url(path)).send().await?.json().await?)
}

async fn push(
    c: &reqwest::Client,
    server: &TestServer,
    project: &str,
    repo: &Path,
    hash: &str,
    build: &str,
) -> Result<String> {
    let saifile = serde_json::to_vec(&json!({
        "schema": "sai-1",
        "platforms": { LINUX: { "build": build } },
        "configurations": { "default": { "cmake": "" } },
    }))?;
    let p = Push {
        project: project.into(),
        fetch_url: repo.display().to_string(),
        git_ref: "refs/heads/main".into(),
        hash: hash.into(),
        saifile,
    };
    let v: Value = HookRequest::like_sai_sh(&p, KEY)
        .send_with(c, &server.url("/sai/update-hook"))
        .await?
        .json()
        .await?;
    let ev = v["event_id"].as_str().context("event id")?;
    let e = get(c, server, &format!("/api/events/{ev}")).await?;
    Ok(e["tasks"][0]["id"].as_str().context("task id")?.to_string())
}

/// Poll the task every `poll` until `done` holds for its state.
async fn wait_state(
    c: &reqwest::Client,
    server: &TestServer,
    task: &str,
    poll: Duration,
    done: impl Fn(&str) -> bool,
) -> Result<()> {
    let deadline = Instant::now() + T;
    loop {
        let t = get(c, server, &format!("/api/tasks/{task}")).await?;
        if done(t["state"].as_str().unwrap_or("")) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("task {task} stuck in {}:\n{}", t["state"], server.log());
        }
        tokio::time::sleep(poll).await;
    }
}

async fn measure(mode: &Mode, dir: &Path, server_bin: &Path) -> Result<Measured> {
    std::fs::create_dir_all(dir)?;
    let ca = TestCa::new("bench CA")?;
    let ca_file = ca.write(dir, "ca.pem")?;
    let (chain, key) = ca
        .server_cert(&["127.0.0.1"], Validity::Current)?
        .write(dir, "server")?;
    let mut cfg = sai_testkit::test_config(&dir.join("data"), KEY);
    if mode.tls {
        cfg.tls = Some(ServerTlsConfig {
            certificate_chain_file: chain.display().to_string(),
            private_key_file: key.display().to_string(),
        });
    }
    let server = TestServer::start(server_bin, &cfg, &[])?;
    let c = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.cert_pem.as_bytes())?)
        .build()?;
    let token = server.builder_token("bench", &["linux"])?;
    let home = dir.join("home");
    std::fs::create_dir_all(&home)?;
    let mut entry = json!({ "url": server.builder_url(), "token": token });
    if mode.tls {
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
    let child = Command::new(env!("CARGO_BIN_EXE_sai-builder"))
        .arg("-c")
        .arg(&conf)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("builder.log"))?)
        .spawn()?;
    let _guard = ProcessGuard::new(child, Duration::from_secs(20));
    let deadline = Instant::now() + T;
    while !get(&c, &server, "/api/builders")
        .await?
        .as_array()
        .is_some_and(|a| a.iter().any(|b| b["online"] == true))
    {
        if Instant::now() > deadline {
            bail!("builder never came online");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let repo = GitRepo::init(dir.join("repo"));
    repo.write("README", "bench\n");
    let hash = repo.commit("bench");
    let terminal = |s: &str| matches!(s, "success" | "failed" | "cancelled");
    // Warm the mirror.
    let warm = push(&c, &server, "warm", repo.path(), &hash, "true").await?;
    wait_state(&c, &server, &warm, Duration::from_millis(5), terminal).await?;

    let mut offered = Vec::new();
    for i in 0..RUNS {
        let started = Instant::now();
        let task = push(&c, &server, &format!("p{i}"), repo.path(), &hash, "true").await?;
        wait_state(&c, &server, &task, Duration::from_millis(1), |s| {
            s != "waiting"
        })
        .await?;
        offered.push(started.elapsed());
        wait_state(&c, &server, &task, Duration::from_millis(5), terminal).await?;
    }
    offered.sort();

    let line = "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmn";
    let started = Instant::now();
    let big = push(
        &c,
        &server,
        "big",
        repo.path(),
        &hash,
        &format!("yes {line} | head -c {BIG}"),
    )
    .await?;
    wait_state(&c, &server, &big, Duration::from_millis(5), terminal).await?;
    let big_elapsed = started.elapsed();
    let t = get(&c, &server, &format!("/api/tasks/{big}")).await?;
    if t["state"] != "success" {
        bail!("{}: the 100 MB task ended {t}", mode.name);
    }
    Ok(Measured {
        offered,
        big: big_elapsed,
    })
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let server_bin = sai_testkit::bin_path("sai-server");
    if !server_bin.exists() {
        bail!(
            "{} is missing: run `cargo build --release -p sai-server` first",
            server_bin.display()
        );
    }
    let tmp = tempfile::tempdir()?;
    let modes = [
        Mode {
            name: "plain (http, ws://)",
            tls: false,
        },
        Mode {
            name: "TLS (https, wss://)",
            tls: true,
        },
    ];
    let mut rows = Vec::new();
    for m in &modes {
        let r = measure(
            m,
            &tmp.path().join(if m.tls { "tls" } else { "plain" }),
            &server_bin,
        )
        .await?;
        rows.push((m.name, r));
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!(
        "TLS cost ({cores} cores, {build} build, loopback, rustls/ring, one builder, one instance)"
    );
    println!(
        "| transport | hook -> task offered p50 / p95 (n={RUNS}) | 100 MB step, hook to stored |"
    );
    println!("|---|---|---|");
    for (name, r) in &rows {
        println!(
            "| {name} | {:.1} / {:.1} ms | {:.2} s ({:.0} MB/s) |",
            pct(&r.offered, 0.5).as_secs_f64() * 1e3,
            pct(&r.offered, 0.95).as_secs_f64() * 1e3,
            r.big.as_secs_f64(),
            BIG as f64 / 1e6 / r.big.as_secs_f64()
        );
    }
    Ok(())
}
