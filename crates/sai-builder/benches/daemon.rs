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
//! 4. Trivial tasks, each of a new commit (so the builder fetches and checks
//!    out every time): hook POST -> first step running (the step prints
//!    bash's `$EPOCHREALTIME` first thing), and the builder's CPU per task:
//!    its own user+system time plus that of the children it reaped (step
//!    shells, `git-upload-pack`), from `/proc/<pid>/stat`.
//! 5. In process, before anything else runs: fetch of a new commit into a
//!    warm mirror plus its checkout into a fresh job dir, with the library
//!    linked into this bench (wall time and CPU, children included).
//!
//! `SAI_BENCH_BUILDER=<path>` measures another `sai-builder` binary (e.g.
//! main's, or the deployed static build from `scripts/build-static.sh`)
//! with the same bench, `SAI_BENCH_SERVER=<path>` another `sai-server`;
//! `SAI_BENCH_QUICK=1` runs few samples and skips the 100 MB step (a smoke
//! test); `SAI_BENCH_TASKS=<n>` runs n trivial tasks (e.g. with `QUICK`, to
//! profile the per-task path alone); `SAI_BENCH_TLS=1` connects the builder over TLS (`wss://`, as a
//! deployed builder does; a CA made for the run).

mod rig;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};
use rig::{BIG, LINE, Rig, T, pct};
use sai_builder::git_mirror::Mirror;
use sai_testkit::git::GitRepo;
use sai_testkit::proc_status::kib;

const LATENCY_RUNS: usize = 20;
/// Trivial tasks of new commits run through the daemon.
const TASK_RUNS: usize = 60;
/// In-process fetch + checkout samples.
const GIT_RUNS: usize = 60;
/// Linux reports `/proc/<pid>/stat` times in USER_HZ ticks, 100 a second.
const TICK_MS: f64 = 10.0;

fn quick() -> bool {
    std::env::var_os("SAI_BENCH_QUICK").is_some()
}

/// (own user+system, reaped children's user+system) of a process, in ticks.
fn cpu_ticks(pid: &str) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name's closing parenthesis start at field 3.
    let rest = &stat[stat.rfind(')').map_or(stat.len(), |i| i + 1)..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    if f.len() < 4 {
        return (0, 0);
    }
    (f[0] + f[1], f[2] + f[3])
}

/// `RssAnon` and `RssFile` of a process (heap, stacks and relocated data
/// against mapped pages of the binary and libraries), in KiB.
fn rss_split_kib(pid: u32) -> (u64, u64) {
    let field = |name| kib(pid, name).unwrap_or(0);
    (field("RssAnon"), field("RssFile"))
}

/// Where a process's resident pages are, from `/proc/<pid>/smaps`, in KiB.
#[derive(Default)]
struct RssParts {
    /// Clean pages of the executable file (code, read-only data).
    binary_file: u64,
    /// Private pages of the executable's mappings (relocated or written
    /// data, `.bss`).
    binary_anon: u64,
    /// Pages of other files: shared libraries, the dynamic loader.
    libraries: u64,
    /// `[heap]`: glibc's main malloc arena.
    heap: u64,
    /// Other anonymous memory: further malloc arenas, thread stacks, the
    /// main stack, mmap'd buffers.
    other_anon: u64,
    /// Threads of the process.
    threads: u64,
}

fn rss_parts(pid: u32, exe: &std::path::Path) -> RssParts {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let exe = exe.display().to_string();
    let mut parts = RssParts::default();
    let kib = |line: &str, name: &str| -> Option<u64> {
        line.strip_prefix(name)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    // The mapping's name (empty for anonymous memory) and its Rss so far.
    let mut name = String::new();
    let mut rss = 0;
    let add = |name: &str, rss: u64, anon: u64, parts: &mut RssParts| {
        if name == exe {
            parts.binary_file += rss - anon;
            parts.binary_anon += anon;
        } else if name == "[heap]" {
            parts.heap += rss;
        } else if name.starts_with('/') {
            parts.libraries += rss - anon;
            parts.other_anon += anon;
        } else {
            parts.other_anon += anon;
        }
    };
    for line in smaps.lines() {
        let header = line.split_whitespace().next().is_some_and(|f| {
            f.contains('-') && f.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        });
        if header {
            name = line.split_whitespace().nth(5).unwrap_or("").to_string();
        } else if let Some(v) = kib(line, "Rss:") {
            rss = v;
        } else if let Some(anon) = kib(line, "Anonymous:") {
            add(&name, rss, anon, &mut parts);
        }
    }
    parts.threads = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    parts
}

/// A table row of the median and 95th percentile of `sorted`, in ms.
fn p50_p95_row(measure: &str, sorted: &[Duration]) {
    println!(
        "| {measure}, p50 / p95 | {:.2} / {:.2} ms |",
        ms(pct(sorted, 0.5)),
        ms(pct(sorted, 0.95))
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Section 5: (fetch times, fetch + checkout times, CPU ms per sample).
fn git_phase(dir: &std::path::Path, runs: usize) -> Result<(Vec<Duration>, Vec<Duration>, f64)> {
    let origin = GitRepo::init(dir.join("origin"));
    for k in 0..20 {
        origin.write(format!("src/file{k}.c"), format!("int f{k}(void);\n"));
    }
    origin.write_executable("build.sh", "#!/bin/sh\necho built\n");
    let first = origin.commit("first");
    let home = dir.join("home");
    let url = origin.path().display().to_string();
    let mirror = Mirror::open(&home, &url)?;
    mirror.ensure_commit("refs/heads/main", &first)?;
    mirror.checkout(&first, &home.join("jobs/WARM0000/src"))?;
    let (mut fetch, mut both, mut cpu) = (Vec::new(), Vec::new(), 0u64);
    for i in 0..runs {
        origin.write(
            format!("src/file{}.c", i % 20),
            format!("int g{i}(void);\n"),
        );
        let hash = origin.commit(&format!("change {i}"));
        let (own0, kids0) = cpu_ticks("self");
        let started = Instant::now();
        let mirror = Mirror::open(&home, &url)?;
        mirror.ensure_commit("refs/heads/main", &hash)?;
        fetch.push(started.elapsed());
        mirror.checkout(&hash, &home.join(format!("jobs/J{i:07}/src")))?;
        both.push(started.elapsed());
        let (own1, kids1) = cpu_ticks("self");
        cpu += (own1 + kids1) - (own0 + kids0);
    }
    fetch.sort();
    both.sort();
    Ok((fetch, both, cpu as f64 * TICK_MS / runs as f64))
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// `VmRSS` and `VmHWM` of a process, in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let field = |name| kib(pid, name).unwrap_or(0);
    (field("VmRSS"), field("VmHWM"))
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
    let quick = quick();
    let tmp = tempfile::tempdir()?;
    let git_runs = if quick { 5 } else { GIT_RUNS };
    // Built unoptimised (to measure other builder binaries without a
    // release build of the bench), the in-process rows would time the
    // bench's own debug code: left out.
    let in_process = !cfg!(debug_assertions);
    let (fetch, checkout, git_cpu) = if in_process {
        let dir = tmp.path().join("git");
        tokio::task::block_in_place(|| git_phase(&dir, git_runs))?
    } else {
        (Vec::new(), Vec::new(), 0.0)
    };

    let tls = std::env::var_os("SAI_BENCH_TLS").is_some();
    let rig = Rig::start(tmp.path(), tls).await?;
    let pid = rig.builder_pid;

    // A first task warms the mirror and the job dir code paths.
    let warm = rig.push("warm", "echo \"MA\"\"RK=$(date +%s%N)\"").await?;
    follow_marker(&rig, &warm, Duration::from_millis(5)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (idle_rss, _) = rss_kib(pid);

    // Trivial tasks of new commits: hook -> first step, CPU per task.
    let task_runs = std::env::var("SAI_BENCH_TASKS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(if quick { 5 } else { TASK_RUNS });
    let pid_text = pid.to_string();
    let step = "echo \"MA\"\"RK=${EPOCHREALTIME/./}000\"";
    let mut hook_to_step = Vec::new();
    let (own0, kids0) = cpu_ticks(&pid_text);
    let tasks_started = Instant::now();
    for i in 0..task_runs {
        let hash = tokio::task::block_in_place(|| rig.new_commit(i));
        let posted = now_ns();
        let (ev, task) = rig.push_commit("trivial", step, &hash).await?;
        let (mark, _, _) = follow_marker(&rig, &task, Duration::from_millis(1)).await?;
        let state = rig.wait_event_end(&ev).await?;
        if state != "success" {
            bail!("trivial task {task} ended {state}");
        }
        hook_to_step.push(Duration::from_nanos(
            u64::try_from(mark.saturating_sub(posted)).unwrap_or(u64::MAX),
        ));
    }
    let tasks_wall = tasks_started.elapsed();
    let (own1, kids1) = cpu_ticks(&pid_text);
    hook_to_step.sort();
    let per_task = |ticks: u64| ticks as f64 * TICK_MS / task_runs as f64;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (idle_rss_after, _) = rss_kib(pid);
    let (anon_after, file_after) = rss_split_kib(pid);
    let parts = rss_parts(pid, &std::fs::canonicalize(rig::builder_bin())?);

    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "sai-builder per-task benchmark ({}; loopback{}; load average {})",
        rig::builder_bin().display(),
        if tls { ", TLS" } else { "" },
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("| measure | value |");
    println!("|---|---|");
    if in_process {
        p50_p95_row(
            &format!("fetch + checkout of a new commit, warm mirror, in process (n={git_runs})"),
            &checkout,
        );
        p50_p95_row("of which the fetch", &fetch);
        println!("| CPU per fetch + checkout (children included) | {git_cpu:.2} ms |");
    }
    p50_p95_row(
        &format!("hook POST -> first step running, new commit each (n={task_runs})"),
        &hook_to_step,
    );
    println!(
        "| builder CPU per trivial task, own + reaped children = total | {:.2} + {:.2} = {:.2} ms |",
        per_task(own1 - own0),
        per_task(kids1 - kids0),
        per_task((own1 + kids1) - (own0 + kids0))
    );
    println!(
        "| trivial tasks, push to end, one at a time | {:.1} tasks/s |",
        task_runs as f64 / tasks_wall.as_secs_f64()
    );
    println!(
        "| builder RSS idle: after one task / after the trivial tasks | {:.1} / {:.1} MiB |",
        mib(idle_rss),
        mib(idle_rss_after)
    );
    println!(
        "| of which, after the trivial tasks: anonymous / file-backed | {:.1} / {:.1} MiB |",
        mib(anon_after),
        mib(file_after),
    );
    println!(
        "| by mapping: binary's file pages / binary's private pages / libraries / [heap] / other anonymous (arenas, stacks); threads | {:.1} / {:.1} / {:.1} / {:.1} / {:.1} MiB; {} |",
        mib(parts.binary_file),
        mib(parts.binary_anon),
        mib(parts.libraries),
        mib(parts.heap),
        mib(parts.other_anon),
        parts.threads
    );
    println!();
    if quick {
        return Ok(());
    }

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
