//! `cargo bench -p sai-server --bench fleet`: the release `sai-server` on
//! loopback with 1,000 connected fake builders and a 40,000-task backlog
//! that none of them can run, then one runnable push (issue 9's benchmark).
//! Prints a table:
//!
//! * time for 1,000 builders to connect, and to reconnect after all of them
//!   dropped their connections at once;
//! * `/api/projects` and `/api/builders` latency p50/p99 while the fleet is
//!   connected;
//! * push of a runnable 1-task saifile -> offer on an idle builder;
//! * server CPU time (user+system, from `/proc/<pid>/stat`) spent per phase;
//! * server RSS and open descriptors per phase, including after every
//!   builder left (sockets released).
//!
//! Goals from the issue: reconnects under 1 s, API p99 under 100 ms, memory
//! flat. `SAI_BENCH_QUICK=1`: a smoke run with 100 builders.

use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;

use sai_server::auth::{TokenKeys, TokenKind};
use sai_testkit::hook::{HookRequest, Push, TestPush};
use sai_testkit::{FakeBuilder, TestServer};
use support::{KEY, cpu_ms, listing_only, pct, rss_fds, start_server};

const T: Duration = Duration::from_secs(300);
const FULL_FLEET: usize = 1000;
const FLEET: &str = "linux-fleet/x86_64-amd/gcc";
const RUN: &str = "linux-run/x86_64-amd/gcc";

/// RSS (KiB), open descriptors and CPU time (user+system, ms) of a process.
fn sample(pid: u32) -> (u64, usize, u64) {
    let (rss, fds) = rss_fds(pid);
    (rss, fds, cpu_ms(pid))
}

/// 200 platforms x 200 configurations = 40,000 tasks no fleet builder offers.
/// A wall-clock time and the server CPU spent meanwhile (ms), for a row.
fn with_server_cpu(wall: Duration, cpu_ms: u64) -> String {
    format!(
        "{:.2} s (server CPU {:.2} s)",
        wall.as_secs_f64(),
        cpu_ms as f64 / 1e3
    )
}

fn backlog() -> Vec<u8> {
    let ps: Vec<String> = (0..200)
        .map(|i| format!("\"none-{i}/x86_64-amd/gcc\":{{\"build\":\"make\"}}"))
        .collect();
    let cs: Vec<String> = (0..200).map(|i| format!("\"c{i}\":{{}}")).collect();
    format!(
        "{{\"schema\":\"sai-1\",\"platforms\":{{{}}},\"configurations\":{{{}}}}}",
        ps.join(","),
        cs.join(",")
    )
    .into_bytes()
}

/// Connect every builder (at most 100 handshakes at once); the builders and
/// the wall time until the last was welcomed.
async fn connect_all(url: &str, tokens: &[String]) -> anyhow::Result<(Vec<FakeBuilder>, Duration)> {
    let gate = Arc::new(tokio::sync::Semaphore::new(100));
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for (i, tok) in tokens.iter().enumerate() {
        let (url, tok, gate) = (url.to_string(), tok.clone(), gate.clone());
        handles.push(tokio::spawn(async move {
            let _p = gate.acquire().await?;
            FakeBuilder::start(&url, &tok, &format!("fleet{i}"), &[(FLEET, 1)]).await
        }));
    }
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await??);
    }
    Ok((out, t0.elapsed()))
}

async fn api_latency(s: &TestServer, path: &str, n: usize) -> anyhow::Result<Vec<Duration>> {
    let client = reqwest::Client::new();
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        let r = client.get(s.url(path)).send().await?;
        anyhow::ensure!(r.status().is_success(), "{path}: {}", r.status());
        r.bytes().await?;
        lat.push(t0.elapsed());
    }
    lat.sort();
    Ok(lat)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    if listing_only() {
        return Ok(());
    }
    let quick = std::env::var_os("SAI_BENCH_QUICK").is_some_and(|v| v != "0");
    let builders = if quick { 100 } else { FULL_FLEET };
    let tmp = tempfile::tempdir()?;
    let s = start_server(tmp.path(), |cfg| cfg.limits.max_tasks_per_push = 50_000)?;
    let pid = s.guard.id();
    let url = s.url("/sai/update-hook");
    let mut rows: Vec<(String, String)> = Vec::new();
    let mem = |what: &str, rows: &mut Vec<(String, String)>| {
        let (rss, fds, cpu) = sample(pid);
        rows.push((
            format!("server RSS / open fds / CPU so far, {what}"),
            format!(
                "{:.1} MiB / {fds} / {:.2} s",
                rss as f64 / 1024.0,
                cpu as f64 / 1e3
            ),
        ));
    };
    mem("idle at start", &mut rows);

    let t0 = Instant::now();
    let r = HookRequest::like_sai_sh(&Push::new("backlog", &backlog()), KEY)
        .send(&url)
        .await?;
    let v: serde_json::Value = r.json().await?;
    anyhow::ensure!(v["tasks"] == 40_000, "{v}");
    rows.push((
        "40,000-task push accepted".into(),
        format!("{:.2} s", t0.elapsed().as_secs_f64()),
    ));
    mem("with the backlog", &mut rows);
    let rss_backlog = rss_fds(pid).0;

    let keys = TokenKeys::load_or_create(&s.data_dir.join("token.key"))?;
    let hour = Duration::from_secs(3600);
    let tokens: Vec<String> = (0..builders)
        .map(|i| {
            keys.mint(
                TokenKind::Builder,
                &format!("fleet{i}"),
                &[FLEET.to_string()],
                hour,
            )
        })
        .collect::<Result<_, _>>()?;
    let cpu_before = sample(pid).2;
    let (fleet, connected) = connect_all(&s.builder_url(), &tokens).await?;
    let cpu_connect = sample(pid).2 - cpu_before;
    rows.push((
        format!("{builders} builders connect (100 handshakes at a time)"),
        with_server_cpu(connected, cpu_connect),
    ));
    mem(&format!("{builders} builders + backlog"), &mut rows);
    rows.push((
        "server RSS per connected builder".into(),
        format!(
            "{:.1} KiB",
            rss_fds(pid).0.saturating_sub(rss_backlog) as f64 / builders as f64
        ),
    ));

    for path in ["/api/projects", "/api/builders"] {
        let lat = api_latency(&s, path, 200).await?;
        rows.push((
            format!("GET {path}, p50 / p99 (200 calls, fleet connected)"),
            format!(
                "{:.2} / {:.2} ms",
                pct(&lat, 0.5).as_secs_f64() * 1e3,
                pct(&lat, 0.99).as_secs_f64() * 1e3
            ),
        ));
    }

    // Every builder drops its connection at once, then all reconnect.
    let cpu_before = sample(pid).2;
    for b in fleet {
        b.drop_connection();
    }
    let (fleet, reconnected) = connect_all(&s.builder_url(), &tokens).await?;
    let cpu_reconnect = sample(pid).2 - cpu_before;
    rows.push((
        format!("{builders} builders drop and reconnect"),
        with_server_cpu(reconnected, cpu_reconnect),
    ));

    // A runnable push: offered to the one builder that can run it.
    let run_tok = keys.mint(TokenKind::Builder, "runner", &[RUN.to_string()], hour)?;
    let mut runner = FakeBuilder::start(&s.builder_url(), &run_tok, "runner", &[(RUN, 1)]).await?;
    let one = format!(
        "{{\"schema\":\"sai-1\",\"platforms\":{{\"{RUN}\":{{\"build\":\"true\"}}}},\"configurations\":{{\"default\":{{}}}}}}"
    );
    let cpu_before = sample(pid).2;
    let mut offers = Vec::new();
    for _ in 0..20 {
        let req = HookRequest::like_sai_sh(&Push::new("runnable", one.as_bytes()), KEY);
        let t0 = Instant::now();
        let (resp, offer) = tokio::join!(req.send(&url), runner.offer(T));
        let offer = offer?;
        offers.push(t0.elapsed());
        anyhow::ensure!(resp?.status().is_success());
        runner
            .run_task(&offer, b"ok\n", sai_core::protocol::TaskResult::Success)
            .await?;
    }
    offers.sort();
    let cpu_dispatch = sample(pid).2 - cpu_before;
    rows.push((
        "runnable push -> offer, p50 / p99 (20 pushes, fleet + backlog)".into(),
        format!(
            "{:.2} / {:.2} ms (server CPU {:.2} s for all 20)",
            pct(&offers, 0.5).as_secs_f64() * 1e3,
            pct(&offers, 0.99).as_secs_f64() * 1e3,
            cpu_dispatch as f64 / 1e3
        ),
    ));
    mem("after the runnable pushes", &mut rows);

    runner.close().await;
    for b in fleet {
        b.close().await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    mem("3 s after every builder left", &mut rows);

    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!();
    println!("sai-server fleet benchmark ({cores} cores, loopback, real sqlite)");
    println!("| measurement | value |");
    println!("|---|---|");
    for (k, v) in rows {
        println!("| {k} | {v} |");
    }
    Ok(())
}
