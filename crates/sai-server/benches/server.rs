//! `cargo bench -p sai-server --bench server`: spawns the real server (release
//! build) on loopback and prints a table.
//!
//! 1. Hook POST to task offered on an idle connected builder (p50/p95).
//! 2. Completions per second for the 548 tasks of the libwebsockets
//!    2021-08-17 push over 30 fake platforms x 4 instances.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sai_core::protocol::TaskResult;
use sai_testkit::hook::{HookRequest, Push};
use sai_testkit::{FakeBuilder, TestServer};

const KEY: &str = "bench-key";
const T: Duration = Duration::from_secs(120);
const ONE_TASK: &[u8] =
    br#"{"schema":"sai-1","platforms":{"linux-debian-12/x86_64-amd/gcc":{"build":"true"}},"configurations":{"default":{"cmake":""}}}"#;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn lws() -> Vec<u8> {
    let base = std::env::var("SAI_TESTDATA").unwrap_or_else(|_| "/work/shared/testdata".into());
    std::fs::read(PathBuf::from(base).join("saifiles/libwebsockets/20210817-e49a5f3698.sai.json"))
        .expect("libwebsockets saifile")
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let mut cfg = sai_testkit::test_config(&tmp.path().join("data"), KEY);
    cfg.max_saifile_base64 = 65536;
    let s = TestServer::start(&PathBuf::from(env!("CARGO_BIN_EXE_sai-server")), &cfg, &[])?;
    let url = s.url("/sai/update-hook");

    // 1. Hook to offer latency.
    let token = s.builder_token("lat", &["linux"])?;
    let mut b = FakeBuilder::start(
        &s.builder_url(),
        &token,
        "lat",
        &[("linux-debian-12/x86_64-amd/gcc", 1)],
    )
    .await?;
    let n = 200;
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let req = HookRequest::like_sai_sh(&Push::new("latency", ONE_TASK), KEY);
        let t0 = Instant::now();
        let (resp, offer) = tokio::join!(req.send(&url), b.offer(T));
        let offer = offer?;
        let dt = t0.elapsed();
        anyhow::ensure!(resp?.status().is_success());
        if i >= 10 {
            lat.push(dt);
        }
        b.run_task(&offer, b"ok\n", TaskResult::Success).await?;
    }
    b.close().await;
    lat.sort();

    // 2. 548 tasks over 30 platforms x 4 instances.
    let saifile = lws();
    let parsed = sai_core::saifile::parse("lws", &saifile).map_err(|e| anyhow::anyhow!("{e}"))?;
    let platforms: Vec<String> = parsed.platform_names().map(str::to_string).collect();
    let refs: Vec<&str> = platforms.iter().map(String::as_str).collect();
    let token = s.builder_token("farm", &refs)?;
    let done = Arc::new(AtomicUsize::new(0));
    let total = 548usize;
    let mut handles = Vec::new();
    let ready = Arc::new(tokio::sync::Barrier::new(platforms.len() + 1));
    for p in &platforms {
        let (url, token, p, done, ready) = (
            s.builder_url(),
            token.clone(),
            p.clone(),
            done.clone(),
            ready.clone(),
        );
        handles.push(tokio::spawn(async move {
            let mut b = FakeBuilder::start(&url, &token, "farm", &[(p.as_str(), 4)]).await?;
            ready.wait().await;
            loop {
                if done.load(Ordering::SeqCst) >= total {
                    break;
                }
                let Some(m) = b.poll(Duration::from_millis(200)).await? else {
                    continue;
                };
                if let sai_core::protocol::ServerMessage::Offer { task } = m {
                    b.run_task(&task, b"building...\nok\n", TaskResult::Success)
                        .await?;
                    done.fetch_add(1, Ordering::SeqCst);
                }
            }
            b.close().await;
            anyhow::Ok(())
        }));
    }
    ready.wait().await;
    let req = HookRequest::like_sai_sh(&Push::new("libwebsockets", &saifile), KEY);
    let t0 = Instant::now();
    let resp = req.send(&url).await?;
    let accepted = t0.elapsed();
    let v: serde_json::Value = resp.json().await?;
    anyhow::ensure!(v["tasks"] == total, "{v}");
    let ev = v["event_id"].as_str().unwrap_or_default().to_string();
    for h in handles {
        h.await??;
    }
    // Done when the server has recorded every completion: the event is terminal.
    let e = sai_testkit::wait_for("event success", T, || {
        let u = s.url(&format!("/api/events/{ev}"));
        async move {
            let e: serde_json::Value = reqwest::get(u).await.ok()?.json().await.ok()?;
            (e["state"] == "success").then_some(e)
        }
    })
    .await;
    let e = match e {
        Ok(e) => e,
        Err(err) => {
            let e: serde_json::Value = reqwest::get(s.url(&format!("/api/events/{ev}")))
                .await?
                .json()
                .await?;
            eprintln!("task states: {}; server log: {}", e["task_states"], s.log());
            return Err(err);
        }
    };
    let all = t0.elapsed();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);

    println!();
    println!("sai-server benchmark ({cores} cores, release build, loopback, real sqlite)");
    println!("| measurement | value |");
    println!("|---|---|");
    println!(
        "| hook POST -> offer on idle builder, p50 ({} pushes) | {:.2} ms |",
        lat.len(),
        pct(&lat, 0.5).as_secs_f64() * 1e3
    );
    println!(
        "| hook POST -> offer on idle builder, p95 | {:.2} ms |",
        pct(&lat, 0.95).as_secs_f64() * 1e3
    );
    println!(
        "| libwebsockets 2021-08-17 push accepted (548 tasks, one transaction) | {:.1} ms |",
        accepted.as_secs_f64() * 1e3
    );
    println!(
        "| 548 tasks completed over 30 platforms x 4 instances | {:.2} s |",
        all.as_secs_f64()
    );
    println!(
        "| completions per second | {:.0} |",
        total as f64 / all.as_secs_f64()
    );
    println!("| final event state | {} |", e["state"]);
    Ok(())
}
