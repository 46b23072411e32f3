//! `cargo bench -p sai-server --bench server`: spawns the real server (release
//! build) on loopback and prints a table.
//!
//! 1. Hook POST to task offered on an idle connected builder (p50/p95).
//! 2. Server RSS and open descriptors idle, after 250 events, after a
//!    100 MB log.
//! 3. A 100 MB log (1,000,000 lines of 100 bytes): bytes its event folder
//!    takes on disk, and latency of reading its last 256 KB.
//! 4. Completions per second for the 548 tasks of the libwebsockets
//!    2021-08-17 push over 30 fake platforms x 4 instances.
//! 5. 200 sequential pushes of one trivial task each over 4 builders:
//!    builds per second from the first POST to the last completion.
//!
//! Issue 10's goals are printed beside the rows they apply to.
//! `SAI_BENCH_QUICK=1`: a smoke run with fewer pushes and a 10 MB log.
//! `SAI_BENCH_ONLY=log`: only the log rows (3), each file of the log's
//! event folder listed, for quick before/after runs of the log store.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod support;

use sai_core::protocol::TaskResult;
use sai_testkit::FakeBuilder;
use sai_testkit::hook::{HookRequest, Push, TestPush};
use support::{KEY, listing_only, pct, rss_anon_file, rss_fds, start_server};

const T: Duration = Duration::from_secs(120);
const ONE_TASK: &[u8] =
    br#"{"schema":"sai-1","platforms":{"linux-debian-12/x86_64-amd/gcc":{"build":"true"}},"configurations":{"default":{"cmake":""}}}"#;

/// Bytes of every file under `dir`.
fn du(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(m) = e.metadata() else { continue };
        total += if m.is_dir() { du(&e.path()) } else { m.len() };
    }
    total
}

/// Settle, then sample RSS, descriptors, and RSS as anonymous and
/// file-backed: what an idle server keeps. `SAI_BENCH_IDLE_HOOK`, when
/// set, is run as `<hook> <server pid> <label>` after each sample (to look
/// into the idle server, e.g. its `/proc/<pid>/smaps` or the allocator's
/// statistics through gdb).
async fn idle_sample(pid: u32, label: &str) -> (u64, usize, (u64, u64)) {
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (rss, fds) = rss_fds(pid);
    let sample = (rss, fds, rss_anon_file(pid));
    if let Some(hook) = std::env::var_os("SAI_BENCH_IDLE_HOOK") {
        let _ = std::process::Command::new(hook)
            .arg(pid.to_string())
            .arg(label)
            .status();
    }
    sample
}

fn quick() -> bool {
    std::env::var_os("SAI_BENCH_QUICK").is_some_and(|v| v != "0")
}

fn only_log() -> bool {
    std::env::var_os("SAI_BENCH_ONLY").is_some_and(|v| v == "log")
}

/// What an event database holds: pages, free pages, and its log rows'
/// compressed bytes (read after the measurements).
fn db_summary(path: &std::path::Path) -> rusqlite::Result<String> {
    let c =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let q = |sql: &str| c.query_row(sql, [], |r| r.get::<_, i64>(0));
    Ok(format!(
        "event database: {} pages of {} bytes, {} free; log rows: {} ({} sealed), {} compressed bytes, {} raw",
        q("PRAGMA page_count")?,
        q("PRAGMA page_size")?,
        q("PRAGMA freelist_count")?,
        q("SELECT COUNT(*) FROM log_blocks")?,
        q("SELECT COUNT(*) FROM log_blocks WHERE sealed = 1")?,
        q("SELECT COALESCE(SUM(length(data)), 0) FROM log_blocks")?,
        q("SELECT COALESCE(SUM(raw_len), 0) FROM log_blocks")?,
    ))
}

/// Each file under `dir` with its size, for the table's notes.
fn files_of(dir: &std::path::Path) -> String {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(m) = e.metadata() else { continue };
        let name = e.file_name().to_string_lossy().into_owned();
        if m.is_dir() {
            out.push(format!("{name}/ {}", du(&e.path())));
        } else {
            out.push(format!("{name} {}", m.len()));
        }
    }
    out.sort();
    out.join(", ")
}

/// `lines` lines of exactly 100 bytes, like a verbose build.
fn build_log(lines: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(lines as usize * 100);
    for i in 0..lines {
        let line = format!(
            "[{:>6}.{:03}] CC src/module{:03}/file{:05}.c -> build/obj/file{:05}.o (-O2 -g -Wall)",
            i / 1000,
            i % 1000,
            i % 97,
            i,
            i
        );
        out.extend_from_slice(format!("{line:<99}\n").as_bytes());
    }
    out
}

fn lws() -> Vec<u8> {
    let base = std::env::var("SAI_TESTDATA").unwrap_or_else(|_| "/work/shared/testdata".into());
    std::fs::read(PathBuf::from(base).join("saifiles/libwebsockets/20210817-e49a5f3698.sai.json"))
        .expect("libwebsockets saifile")
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    if listing_only() {
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let s = start_server(tmp.path(), |cfg| cfg.max_saifile_base64 = 65536)?;
    let url = s.url("/sai/update-hook");
    let pid = s.guard.id();
    let idle = if only_log() {
        Default::default()
    } else {
        idle_sample(pid, "start").await
    };

    // 1. Hook to offer latency (250 events).
    let token = s.builder_token("lat", &["linux"])?;
    let mut b = FakeBuilder::start(
        &s.builder_url(),
        &token,
        "lat",
        &[("linux-debian-12/x86_64-amd/gcc", 1)],
    )
    .await?;
    let n = if only_log() {
        0
    } else if quick() {
        40
    } else {
        250
    };
    let mut lat = Vec::with_capacity(n);
    // One client, like a hook's keep-alive: building one per request loads
    // the system's root certificates each time, which is not the server's.
    let client = reqwest::Client::new();
    for i in 0..n {
        let req = HookRequest::like_sai_sh(&Push::new("latency", ONE_TASK), KEY);
        let t0 = Instant::now();
        let (resp, offer) = tokio::join!(req.send_with(&client, &url), b.offer(T));
        let offer = offer?;
        let dt = t0.elapsed();
        anyhow::ensure!(resp?.status().is_success());
        if i >= 10 {
            lat.push(dt);
        }
        b.run_task(&offer, b"ok\n", TaskResult::Success).await?;
    }
    lat.sort();
    let after_events = if only_log() {
        Default::default()
    } else {
        idle_sample(pid, "events").await
    };

    // 3. One 100 MB log.
    let log = build_log(if quick() { 100_000 } else { 1_000_000 });
    let log_len = log.len() as i64;
    let req = HookRequest::like_sai_sh(&Push::new("biglog", ONE_TASK), KEY);
    let (resp, offer) = tokio::join!(req.send(&url), b.offer(T));
    let offer = offer?;
    let v: serde_json::Value = resp?.json().await?;
    let big_ev = v["event_id"].as_str().unwrap_or_default().to_string();
    let t0 = Instant::now();
    b.run_task(&offer, &log, TaskResult::Success).await?;
    let task_url = s.url(&format!("/api/tasks/{}", offer.task_id));
    sai_testkit::wait_for("100 MB log stored", T, || {
        let u = task_url.clone();
        async move {
            let t: serde_json::Value = reqwest::get(u).await.ok()?.json().await.ok()?;
            (t["state"] == "success" && t["log_bytes"] == log_len).then_some(())
        }
    })
    .await?;
    let log_done = t0.elapsed();
    drop(log);
    let log_disk_at_end = du(&s.data_dir.join("events").join(&big_ev));
    // The finished task's database is checkpointed within a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let log_disk = du(&s.data_dir.join("events").join(&big_ev));
    let log_files = files_of(&s.data_dir.join("events").join(&big_ev));
    let client = reqwest::Client::new();
    let tail_url = s.url(&format!(
        "/api/tasks/{}/log?format=raw&offset={}&max={}",
        offer.task_id,
        log_len - 262_144,
        262_144
    ));
    let mut tail = Vec::new();
    for _ in 0..50 {
        let t0 = Instant::now();
        let body = client.get(&tail_url).send().await?.bytes().await?;
        tail.push(t0.elapsed());
        anyhow::ensure!(body.len() == 262_144, "tail read {} bytes", body.len());
    }
    tail.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let log_mb = log_len as f64 / 1e6;
    let log_rows: Vec<(String, String, &str)> = vec![
        (
            format!("{log_mb:.0} MB log (100 B lines): sent -> stored"),
            format!("{:.2} s", log_done.as_secs_f64()),
            "",
        ),
        (
            format!("{log_mb:.0} MB log: event folder on disk at task end / 1.5 s later"),
            format!(
                "{:.3} / {:.3} MB",
                log_disk_at_end as f64 / 1e6,
                log_disk as f64 / 1e6
            ),
            "<= 3 MB (100 MB log)",
        ),
        (
            format!("{log_mb:.0} MB log: last 256 KB raw read, p50 / p95 (50 reads)"),
            format!(
                "{:.2} / {:.2} ms",
                ms(pct(&tail, 0.5)),
                ms(pct(&tail, 0.95))
            ),
            "<= 20 ms",
        ),
    ];
    if only_log() {
        print_table(&log_rows);
        println!();
        println!("event folder 1.5 s after the task (bytes): {log_files}");
        let db = s
            .data_dir
            .join("events")
            .join(&big_ev)
            .join("event.sqlite3");
        println!("{}", db_summary(&db).unwrap_or_else(|e| e.to_string()));
        return Ok(());
    }
    let after_log = idle_sample(pid, "log").await;
    b.close().await;

    // 4. 548 tasks over 30 platforms x 4 instances.
    let saifile = lws();
    let parsed = sai_core::saifile::parse("lws", &saifile).map_err(|e| anyhow::anyhow!("{e}"))?;
    let platforms: Vec<String> = parsed.platform_names().map(str::to_string).collect();
    let done = Arc::new(AtomicUsize::new(0));
    let total = 548usize;
    let mut handles = Vec::new();
    let ready = Arc::new(tokio::sync::Barrier::new(platforms.len() + 1));
    for (i, p) in platforms.iter().enumerate() {
        // One name per connection: a second connection with a builder's
        // name replaces the first.
        let name = format!("farm-{i}");
        let token = s.builder_token(&name, &[p.as_str()])?;
        let (url, p, done, ready) = (s.builder_url(), p.clone(), done.clone(), ready.clone());
        handles.push(tokio::spawn(async move {
            let mut b = FakeBuilder::start(&url, &token, &name, &[(p.as_str(), 4)]).await?;
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
    let resp = req.send_with(&client, &url).await?;
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

    // 5. 200 sequential pushes of one trivial task each over 4 builders.
    let seq_done = Arc::new(AtomicUsize::new(0));
    let n_seq = if quick() { 50 } else { 200 };
    let mut handles = Vec::new();
    for i in 0..4 {
        // One name per connection: a second connection with a builder's
        // name replaces the first.
        let name = format!("seq-{i}");
        let token = s.builder_token(&name, &["linux"])?;
        let (url, done) = (s.builder_url(), seq_done.clone());
        let mut b = FakeBuilder::start(
            &url,
            &token,
            &name,
            &[("linux-debian-12/x86_64-amd/gcc", 1)],
        )
        .await?;
        handles.push(tokio::spawn(async move {
            while done.load(Ordering::SeqCst) < n_seq {
                let Some(m) = b.poll(Duration::from_millis(50)).await? else {
                    continue;
                };
                if let sai_core::protocol::ServerMessage::Offer { task } = m {
                    b.run_task(&task, b"ok\n", TaskResult::Success).await?;
                    done.fetch_add(1, Ordering::SeqCst);
                }
            }
            b.close().await;
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = reqwest::Client::new();
    let t0 = Instant::now();
    for _ in 0..n_seq {
        let req = HookRequest::like_sai_sh(&Push::new("sequential", ONE_TASK), KEY);
        anyhow::ensure!(req.send_with(&client, &url).await?.status().is_success());
    }
    let pushed = t0.elapsed();
    for h in handles {
        h.await??;
    }
    let seq_all = t0.elapsed();

    let mib = |kib: u64| kib as f64 / 1024.0;
    let mut rows: Vec<(String, String, &str)> = vec![
        (
            format!(
                "hook POST -> offer on idle builder, p50 ({} pushes)",
                lat.len()
            ),
            format!("{:.2} ms", ms(pct(&lat, 0.5))),
            "<= 5 ms",
        ),
        (
            "hook POST -> offer on idle builder, p95".into(),
            format!("{:.2} ms", ms(pct(&lat, 0.95))),
            "",
        ),
        (
            "libwebsockets 2021-08-17 push accepted (548 tasks, one transaction)".into(),
            format!("{:.1} ms", ms(accepted)),
            "",
        ),
        (
            "548 tasks completed over 30 platforms x 4 instances".into(),
            format!("{:.2} s", all.as_secs_f64()),
            "",
        ),
        (
            "completions per second".into(),
            format!("{:.0}", total as f64 / all.as_secs_f64()),
            "",
        ),
        ("final event state".into(), e["state"].to_string(), ""),
        (
            format!("{n_seq} sequential 1-task pushes over 4 builders: pushes / builds per second"),
            format!(
                "{:.0} / {:.0}",
                n_seq as f64 / pushed.as_secs_f64(),
                n_seq as f64 / seq_all.as_secs_f64()
            ),
            ">= 100 builds/s",
        ),
        (
            "server RSS (anonymous + file-backed) / open fds, idle at start".into(),
            format!(
                "{:.1} MiB ({:.1} + {:.1}) / {}",
                mib(idle.0),
                mib(idle.2.0),
                mib(idle.2.1),
                idle.1
            ),
            "",
        ),
        (
            format!("server RSS (anonymous + file-backed) / open fds, idle after {n} events"),
            format!(
                "{:.1} MiB ({:.1} + {:.1}) / {}",
                mib(after_events.0),
                mib(after_events.2.0),
                mib(after_events.2.1),
                after_events.1
            ),
            "<= 15 MiB, fds bounded",
        ),
        (
            format!(
                "server RSS (anonymous + file-backed) / open fds, idle after a {log_mb:.0} MB log"
            ),
            format!(
                "{:.1} MiB ({:.1} + {:.1}) / {}",
                mib(after_log.0),
                mib(after_log.2.0),
                mib(after_log.2.1),
                after_log.1
            ),
            "<= 15 MiB, fds bounded",
        ),
    ];
    rows.extend(log_rows);
    print_table(&rows);
    Ok(())
}

fn print_table(rows: &[(String, String, &str)]) {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!();
    println!(
        "sai-server benchmark ({cores} cores, release build, loopback, real sqlite{}{})",
        if quick() {
            ", QUICK smoke parameters"
        } else {
            ""
        },
        if only_log() { ", log rows only" } else { "" }
    );
    println!("| measurement | value | goal (issue 10) |");
    println!("|---|---|---|");
    for (k, v, goal) in rows {
        println!("| {k} | {v} | {goal} |");
    }
}
