//! `cargo bench -p sai-builder --bench daemon`: the real `sai-builder`
//! (release) against the real `sai-server` (release: build it first with
//! `cargo build --release -p sai-server`) on loopback; prints a table.
//!
//! 1. Builder RSS when idle (connected, nothing running).
//! 2. A step printing 100 MB: builder peak RSS while streaming it, and the
//!    end-to-end throughput (push to last byte stored on the server).
//! 3. Last byte of a step to that byte readable from the server's log API
//!    (the step prints `MARK=<its own wall-clock time in ns>`; the
//!    bench polls `/api/tasks/<id>/log?format=raw` from the last offset).

mod rig;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};
use rig::{BIG, LINE, Rig, T, pct};

const LATENCY_RUNS: usize = 20;

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// `VmRSS` and `VmHWM` of a process, in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Follow a task's raw log from offset 0 until `MARK=<ns>` appears (the
/// scripts spell it `MA""RK=` so the step notice echoing the script does
/// not match); returns
/// the marker's time, when it was seen, and the log length at that point.
async fn follow_marker(rig: &Rig, task: &str, poll: Duration) -> Result<(u128, u128, u64)> {
    let deadline = Instant::now() + T;
    let mut offset: u64 = 0;
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let r = rig
            .client
            .get(rig.server.url(&format!(
                "/api/tasks/{task}/log?format=raw&offset={offset}&max={}",
                16 << 20
            )))
            .send()
            .await?;
        let next: u64 = r
            .headers()
            .get("x-sai-next-offset")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(offset);
        let body = r.bytes().await?;
        let seen = now_ns();
        if !body.is_empty() {
            tail.extend_from_slice(&body);
            offset = next;
            let text = String::from_utf8_lossy(&tail);
            if let Some(i) = text.find("MARK=") {
                let rest = &text[i + 5..];
                if let Some(end) = rest.find('\n') {
                    let mark: u128 = rest[..end].trim().parse()?;
                    return Ok((mark, seen, offset));
                }
            }
            // Keep a short tail in case the marker is split across reads.
            let keep = tail.len().saturating_sub(64);
            tail.drain(..keep);
        }
        if Instant::now() > deadline {
            bail!("no marker in the log of {task} within {T:?}");
        }
        tokio::time::sleep(poll).await;
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let rig = Rig::start(tmp.path(), false).await?;
    let pid = rig.builder_pid;

    // A first task warms the mirror and the job dir code paths.
    let warm = rig.push("warm", "echo \"MA\"\"RK=$(date +%s%N)\"").await?;
    follow_marker(&rig, &warm, Duration::from_millis(5)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (idle_rss, _) = rss_kib(pid);

    // Latency: marker written -> readable from the server.
    let mut lat = Vec::new();
    for i in 0..LATENCY_RUNS {
        let task = rig
            .push(
                &format!("lat{i}"),
                "echo started; sleep 0.3; echo \"MA\"\"RK=$(date +%s%N)\"",
            )
            .await?;
        let (mark, seen, _) = follow_marker(&rig, &task, Duration::from_millis(1)).await?;
        lat.push(Duration::from_nanos(
            u64::try_from(seen.saturating_sub(mark)).unwrap_or(u64::MAX),
        ));
    }
    lat.sort();

    // 100 MB of log from one step.
    let sampler_stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = sampler_stop.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid).0);
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        })
    };
    let started = Instant::now();
    let big = rig
        .push(
            "big",
            &format!("yes {LINE} | head -c {BIG}; echo \"MA\"\"RK=$(date +%s%N)\""),
        )
        .await?;
    let (mark, seen, stored) = follow_marker(&rig, &big, Duration::from_millis(5)).await?;
    let big_elapsed = started.elapsed();
    sampler_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sampled_peak = sampler.join().unwrap_or(0);
    let (_, hwm) = rss_kib(pid);
    let big_lat = Duration::from_nanos(u64::try_from(seen.saturating_sub(mark)).unwrap_or(0));

    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "sai-builder daemon benchmark (release, loopback, server log_flush_ms {}, log_window {} B)",
        rig.cfg.log_flush_ms, rig.cfg.log_window_bytes
    );
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| builder RSS idle (connected, after one task) | {:.1} MiB |",
        mib(idle_rss)
    );
    println!(
        "| builder RSS peak while streaming 100 MB (sampled / VmHWM) | {:.1} MiB / {:.1} MiB |",
        mib(sampled_peak),
        mib(hwm)
    );
    println!(
        "| 100 MB step: push to last byte stored | {:.2} s ({:.1} MB/s, {} bytes stored) |",
        big_elapsed.as_secs_f64(),
        stored as f64 / 1e6 / big_elapsed.as_secs_f64(),
        stored
    );
    println!(
        "| last byte to durable on server, after 100 MB | {:.1} ms |",
        big_lat.as_secs_f64() * 1e3
    );
    println!(
        "| last byte to durable on server, small step (n={LATENCY_RUNS}) p50 / p95 / max | {:.1} / {:.1} / {:.1} ms |",
        pct(&lat, 0.5).as_secs_f64() * 1e3,
        pct(&lat, 0.95).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    Ok(())
}
