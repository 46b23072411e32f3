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
//!
//! For a smoke run, `SAI_TLS_BENCH_RUNS` and `SAI_TLS_BENCH_BYTES` make
//! both smaller (the table says the sizes used).

mod rig;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use rig::{BIG, LINE, Rig, T, pct};

const RUNS: usize = 20;

/// `name` from the environment, or `default`.
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn runs() -> usize {
    env_or("SAI_TLS_BENCH_RUNS", RUNS).max(1)
}

fn big() -> u64 {
    env_or("SAI_TLS_BENCH_BYTES", BIG).clamp(1, BIG)
}

struct Mode {
    name: &'static str,
    tls: bool,
}

struct Measured {
    offered: Vec<Duration>,
    big: Duration,
}

/// Poll the task every `poll` until `done` holds for its state.
async fn wait_state(
    rig: &Rig,
    task: &str,
    poll: Duration,
    done: impl Fn(&str) -> bool,
) -> Result<()> {
    let deadline = Instant::now() + T;
    loop {
        let t = rig.get(&format!("/api/tasks/{task}")).await?;
        if done(t["state"].as_str().unwrap_or("")) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("task {task} stuck in {}:\n{}", t["state"], rig.server.log());
        }
        tokio::time::sleep(poll).await;
    }
}

async fn measure(mode: &Mode, dir: &Path) -> Result<Measured> {
    let rig = Rig::start(dir, mode.tls).await?;
    let terminal = |s: &str| matches!(s, "success" | "failed" | "cancelled");
    // Warm the mirror.
    let warm = rig.push("warm", "true").await?;
    wait_state(&rig, &warm, Duration::from_millis(5), terminal).await?;

    let mut offered = Vec::new();
    for i in 0..runs() {
        let started = Instant::now();
        let task = rig.push(&format!("p{i}"), "true").await?;
        wait_state(&rig, &task, Duration::from_millis(1), |s| s != "waiting").await?;
        offered.push(started.elapsed());
        wait_state(&rig, &task, Duration::from_millis(5), terminal).await?;
    }
    offered.sort();

    let started = Instant::now();
    let big = rig
        .push("big", &format!("yes {LINE} | head -c {}", big()))
        .await?;
    wait_state(&rig, &big, Duration::from_millis(5), terminal).await?;
    let big_elapsed = started.elapsed();
    let t = rig.get(&format!("/api/tasks/{big}")).await?;
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
    rig::server_bin()?;
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
        let r = measure(m, &tmp.path().join(if m.tls { "tls" } else { "plain" })).await?;
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
        "| transport | hook -> task offered p50 / p95 (n={}) | {} MB step, hook to stored |",
        runs(),
        big() / 1_000_000
    );
    println!("|---|---|---|");
    for (name, r) in &rows {
        println!(
            "| {name} | {:.1} / {:.1} ms | {:.2} s ({:.0} MB/s) |",
            pct(&r.offered, 0.5).as_secs_f64() * 1e3,
            pct(&r.offered, 0.95).as_secs_f64() * 1e3,
            r.big.as_secs_f64(),
            big() as f64 / 1e6 / r.big.as_secs_f64()
        );
    }
    Ok(())
}
