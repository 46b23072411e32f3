//! Logs compressed at rest, read back through the API of the real server,
//! and the bounded cache of open event databases.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use sai_core::config::server::ServerConfig;
use sai_core::protocol::{BuilderMessage, TaskResult};
use sai_testkit::hook::{Push, TestPush};
use sai_testkit::sqlite::count;
use sai_testkit::text::{line_of, start_of_line};
use sai_testkit::{TestServer, field_of_each, wait_for};

/// Records of 32 lines (~1.6 KB) on alternating channels: the expected
/// bytes and (channel, record).
fn lines(from: usize, n: usize) -> (Vec<u8>, Vec<(u8, Vec<u8>)>) {
    let mut all = Vec::new();
    let mut recs = Vec::new();
    for i in from..from + n {
        let ch = if i % 5 == 0 { 2 } else { 1 };
        let mut rec = Vec::new();
        for l in 0..32 {
            rec.extend_from_slice(
                format!(
                    "{i:07}.{l:02} ch{ch} compiling module {} with flags -O{}\n",
                    (i + l) % 37,
                    i % 3
                )
                .as_bytes(),
            );
        }
        all.extend_from_slice(&rec);
        recs.push((ch, rec));
    }
    (all, recs)
}

async fn raw(s: &TestServer, task: &str, range: Option<&str>) -> (u16, Option<String>, Vec<u8>) {
    let mut req = reqwest::Client::new().get(s.url(&format!("/api/tasks/{task}/log/raw")));
    if let Some(r) = range {
        req = req.header("range", r);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let cr = resp
        .headers()
        .get("content-range")
        .map(|v| v.to_str().unwrap().to_string());
    (status, cr, resp.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread")]
async fn compressed_log_reads_back_byte_identical_across_blocks_channels_and_kill_9() {
    // The task is requeued at once after the restart, not kept for its
    // builder to claim back.
    let env = start(|c| c.restart_grace_secs = 0);
    let (cfg, mut s) = (env.config, env.server);
    let (mut b, o) = host1_running(&s, &Push::new("logs", ONE_TASK)).await;
    let id = o.task_id.clone();
    // ~6.7 MB: a sealed block (4 MiB raw) and pieces of the open one.
    let (mut all, mut recs) = lines(0, 4000);
    send_logs(&mut b, &id, &recs).await;
    b.acknowledged(T).await.unwrap();

    // Crash with the last block still open, then come back.
    s.guard.kill();
    drop(b);
    let mut s = TestServer::start(&bin(), &cfg, &[]).unwrap();
    let (st, _, body) = raw(&s, &id, None).await;
    assert_eq!(st, 200);
    assert_eq!(body, all, "whole log after kill -9");

    // The requeued task appends to the same log, into the reopened block.
    let mut b = host1(&s, 1).await;
    let o2 = b.offer(T).await.unwrap();
    assert_eq!(o2.task_id, id);
    let (more, more_recs) = lines(4000, 1500);
    b.send(&BuilderMessage::Accept {
        task_id: id.clone(),
    })
    .await
    .unwrap();
    for (ch, line) in &more_recs {
        b.log(&id, *ch, line).await.unwrap();
    }
    b.finish(&id, TaskResult::Success).await.unwrap();
    // The re-run starts with Sai's separator notice (channel 3).
    let notice = b"\nsai-server: ---- attempt 2 starts here on builder host1; \
        the log above is from earlier attempts ----\n"
        .to_vec();
    all.extend_from_slice(&notice);
    recs.push((3, notice));
    all.extend_from_slice(&more);
    recs.extend(more_recs);
    wait_for("task done with its whole log", T, || async {
        let t = task(&s, &id).await;
        (t["state"] == "success" && t["log_bytes"] == all.len()).then_some(())
    })
    .await
    .unwrap();

    let stored = task(&s, &id).await["log_stored_bytes"].as_u64().unwrap();
    assert!(stored > 0 && stored * 4 < all.len() as u64, "{stored}");
    let (st, _, body) = raw(&s, &id, None).await;
    assert_eq!((st, body.len()), (200, all.len()));
    assert_eq!(body, all);
    // Ranges starting and ending mid-block (blocks are 4 MiB raw) and
    // mid-record, one across the first block's end, a suffix range (the
    // tail) and an open-ended one.
    let n = all.len();
    for (range, a, b_incl) in [
        ("bytes=4000001-4500000".to_string(), 4_000_001, 4_500_000),
        (
            format!("bytes={}-{}", 65_537, 65_537 + 200_000),
            65_537,
            65_537 + 200_000,
        ),
        ("bytes=3-5".to_string(), 3, 5),
        ("bytes=-262144".to_string(), n - 262_144, n - 1),
        (format!("bytes={}-", n - 10), n - 10, n - 1),
        (format!("bytes={}-{}", n - 10, n + 50), n - 10, n - 1),
    ] {
        let (st, cr, body) = raw(&s, &id, Some(&range)).await;
        assert_eq!(st, 206, "{range}");
        assert_eq!(
            cr.as_deref(),
            Some(format!("bytes {a}-{b_incl}/{n}").as_str())
        );
        assert!(body == all[a..=b_incl], "{range}: bytes differ");
    }
    let (st, cr, _) = raw(&s, &id, Some(&format!("bytes={n}-"))).await;
    assert_eq!((st, cr), (416, Some(format!("bytes */{n}"))));

    // Records keep their channel and boundaries, from mid-record on.
    let mut off = 0usize;
    let mut got = Vec::new();
    loop {
        let (st, page) = get(&s, &format!("/api/tasks/{id}/log?offset={off}&max=100000")).await;
        assert_eq!(st, 200);
        for r in page["records"].as_array().unwrap() {
            got.push((
                r["channel"].as_u64().unwrap() as u8,
                r["offset"].as_u64().unwrap(),
            ));
        }
        off = page["next_offset"].as_u64().unwrap() as usize;
        if off >= n {
            break;
        }
    }
    let mut want = Vec::new();
    let mut o = 0;
    for (ch, line) in &recs {
        want.push((*ch, o as u64));
        o += line.len();
    }
    assert_eq!(got, want);
    let (_, mid) = get(&s, &format!("/api/tasks/{id}/log?offset=200003&max=10")).await;
    assert_eq!(mid["records"][0]["offset"], 200_003);
    let text = mid["records"][0]["text"].as_str().unwrap();
    assert!(all[200_003..].starts_with(text.as_bytes()));

    // Once the task is done its event database is checkpointed: the WAL
    // is cut back and the folder holds the log compressed.
    let ev_dir = the_event_dir(&cfg);
    let wal = ev_dir.join("event.sqlite3-wal");
    wait_for("event WAL truncated after the task ended", T, || async {
        (std::fs::metadata(&wal).map_or(0, |m| m.len()) == 0).then_some(())
    })
    .await
    .unwrap();
    let folder = std::fs::metadata(ev_dir.join("event.sqlite3"))
        .unwrap()
        .len();
    assert!((folder as usize) * 10 < n, "{folder} bytes for {n}");
    let st = s.guard.stop().unwrap();
    assert!(st.success());
    let db = rusqlite::Connection::open(ev_dir.join("event.sqlite3")).unwrap();
    let (blocks, pieces, stored): (i64, i64, i64) = db
        .query_row(
            "SELECT COUNT(*), COUNT(*) - SUM(sealed), SUM(length(data)) FROM log_blocks",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert!(blocks >= 2, "{blocks} blocks");
    assert_eq!(pieces, 0, "the finished task's last block is sealed");
    assert!((stored as usize) * 10 < n, "{stored} bytes stored for {n}");
}

/// The folder of the one event in the server's data dir.
fn the_event_dir(cfg: &ServerConfig) -> std::path::PathBuf {
    std::fs::read_dir(cfg.data_dir.clone() + "/events")
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
}

/// Event databases the server process has open now (not counting one
/// being written by a push, under `<id>.tmp/`). One database may have two
/// descriptors: its checkpoints run on a connection of their own.
fn open_event_dbs(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|p| p.ends_with("event.sqlite3") && !p.to_string_lossy().contains(".tmp/"))
        .collect::<std::collections::HashSet<_>>()
        .len()
}

#[tokio::test(flavor = "multi_thread")]
async fn event_db_cache_stays_bounded_under_concurrent_api_readers_and_log_writers() {
    const CACHE: usize = 3;
    const READERS: usize = 4;
    let env = start(|c| c.event_db_cache = CACHE);
    let s = &env.server;
    let pid = s.guard.id();
    let mut b = host1(s, 1).await;
    let mut tasks = Vec::new();
    for i in 0..10 {
        let log = format!("log of task {i}\n");
        tasks.push(push_and_run(s, &mut b, &format!("p{i}"), log.as_bytes()).await);
    }
    wait_for("ten events done", T, || async {
        let t = task(s, tasks.last().unwrap()).await;
        (t["state"] == "success").then_some(())
    })
    .await
    .unwrap();
    // Ten events were opened; once idle only the bound stays open.
    wait_for("idle after 10 events", T, || async {
        (open_event_dbs(pid) <= CACHE).then_some(())
    })
    .await
    .unwrap();

    // Readers over every event while a builder writes logs of new events.
    let stop = Arc::new(AtomicBool::new(false));
    let max_open = Arc::new(AtomicUsize::new(0));
    let reads = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (stop, max_open) = (stop.clone(), max_open.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                max_open.fetch_max(open_event_dbs(pid), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let readers: Vec<_> = (0..READERS)
        .map(|r| {
            let (stop, reads, tasks) = (stop.clone(), reads.clone(), tasks.clone());
            let base = s.url("");
            tokio::spawn(async move {
                let c = reqwest::Client::new();
                let mut i = r;
                while !stop.load(Ordering::SeqCst) {
                    let t = &tasks[i % tasks.len()];
                    let v: serde_json::Value = c
                        .get(format!("{base}/api/tasks/{t}/log"))
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    assert!(
                        v["records"][0]["text"]
                            .as_str()
                            .unwrap()
                            .starts_with("log of task")
                    );
                    reads.fetch_add(1, Ordering::SeqCst);
                    i += 3;
                }
            })
        })
        .collect();
    for i in 0..5 {
        let log: Vec<u8> = (0..2000)
            .flat_map(|j| format!("line {j}\n").into_bytes())
            .collect();
        push_and_run(s, &mut b, &format!("w{i}"), &log).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for r in readers {
        r.await.unwrap();
    }
    sampler.await.unwrap();
    let max = max_open.load(Ordering::SeqCst);
    // Kept idle ones, one per reader in flight, the event being built, the
    // previous one, whose log the writer holds until a flush interval
    // passes without records, and one the log-sync thread holds until its
    // WAL is synced (within CHECKPOINT_EVERY). Unbounded, all 15 would stay
    // open.
    assert!(
        max <= CACHE + READERS + 3,
        "{max} event databases open at once"
    );
    assert!(reads.load(Ordering::SeqCst) > 20, "readers ran");
    wait_for("back to the bound when idle", T, || async {
        (open_event_dbs(pid) <= CACHE).then_some(())
    })
    .await
    .unwrap();

    // Deleting an event still removes its folder, cached or not.
    let before = event_folders(s).len();
    let ev = task(s, &tasks[0]).await["event_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (st, v) = as_ops(s, reqwest::Method::DELETE, &format!("/api/events/{ev}")).await;
    assert_eq!(st, 200, "{v}");
    wait_for("folder removed", T, || async {
        (event_folders(s).len() == before - 1).then_some(())
    })
    .await
    .unwrap();
    b.close().await;
}

async fn completeness(s: &TestServer, task: &str, range: Option<&str>) -> String {
    let mut req = reqwest::Client::new().get(s.url(&format!("/api/tasks/{task}/log/raw")));
    if let Some(r) = range {
        req = req.header("range", r);
    }
    let resp = req.send().await.unwrap();
    resp.headers()
        .get("x-sai-log-complete")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("no x-sai-log-complete in {:?}", resp.headers()))
}

#[tokio::test(flavor = "multi_thread")]
async fn raw_log_says_whether_it_is_complete_or_still_growing() {
    let env = start(|_| {});
    let s = &env.server;
    let (mut b, o) = host1_running(s, &Push::new("logs", ONE_TASK)).await;
    let id = o.task_id.clone();
    b.log(&id, 1, b"first line\n").await.unwrap();
    b.acknowledged(T).await.unwrap();
    // Running: whatever is read, more may come.
    assert_eq!(completeness(s, &id, None).await, "growing");
    assert_eq!(completeness(s, &id, Some("bytes=-5")).await, "growing");

    b.log(&id, 1, b"last line\n").await.unwrap();
    b.finish(&id, TaskResult::Success).await.unwrap();
    task_state(s, &id, "success").await;
    assert_eq!(completeness(s, &id, None).await, "complete");
    assert_eq!(completeness(s, &id, Some("bytes=-5")).await, "complete");
    // A range stopping short of the end of a finished log is not all of it.
    assert_eq!(completeness(s, &id, Some("bytes=0-3")).await, "growing");
    // The paged form says the same in its header.
    let resp = reqwest::get(s.url(&format!("/api/tasks/{id}/log?format=raw&max=4")))
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-sai-log-complete"], "growing");
    let resp = reqwest::get(s.url(&format!("/api/tasks/{id}/log?format=raw")))
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-sai-log-complete"], "complete");
}

/// Every line-number answer of the log API for `all`, the stored log.
async fn assert_line_numbers(s: &TestServer, id: &str, all: &[u8], when: &str) {
    let n = all.len();
    let newlines = line_of(all, n) as u64;
    let block = 4 << 20;
    for off in [
        0,
        1,
        65_537,
        block - 1,
        block,
        block + 1,
        n - 100_000,
        n - 25,
        n,
    ] {
        let (st, page) = get(s, &format!("/api/tasks/{id}/log?offset={off}&max=10")).await;
        assert_eq!(st, 200);
        assert_eq!(
            (page["first_line"].as_u64(), page["offset"].as_u64()),
            (Some(line_of(all, off) as u64), Some(off as u64)),
            "{when}: line of byte {off}"
        );
        assert_eq!(page["newlines"].as_u64(), Some(newlines), "{when}");
        assert_eq!(
            page["lines"].as_u64(),
            Some(newlines + 1),
            "{when}: unterminated last line"
        );
        assert_eq!(page["total"].as_u64(), Some(n as u64));
    }
    let last = newlines as usize;
    for line in [
        0,
        1,
        40_000,
        127_999,
        128_000,
        last - 2000,
        last - 1,
        last,
        last + 7,
    ] {
        let (st, page) = get(s, &format!("/api/tasks/{id}/log?line={line}&max=100")).await;
        assert_eq!(st, 200);
        let start = start_of_line(all, line);
        assert_eq!(
            (page["offset"].as_u64(), page["first_line"].as_u64()),
            (Some(start as u64), Some((line as u64).min(newlines))),
            "{when}: start of line {line}"
        );
        let text = field_of_each(&page["records"], "text").concat();
        assert!(
            all[start..].starts_with(text.as_bytes()),
            "{when}: text of line {line}"
        );
        assert_eq!(text.is_empty(), start == n, "{when}: line {line}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn line_numbers_of_a_multi_block_log_are_exact_across_channels_and_a_restart() {
    // The killed server's running task goes straight back to the queue.
    let env = start(|c| c.restart_grace_secs = 0);
    let (cfg, mut s) = (env.config, env.server);
    let (mut b, o) = host1_running(&s, &Push::new("lines", ONE_TASK)).await;
    let id = o.task_id;
    // ~6.7 MB on channels 1 and 2: a sealed block and pieces of the next.
    let (mut all, recs) = lines(0, 4000);
    send_logs(&mut b, &id, &recs).await;
    b.acknowledged(T).await.unwrap();
    s.guard.kill();
    drop(b);

    // Written across a server restart: the requeued task appends to the
    // reopened block, ending with an unterminated line on stderr.
    let mut s = TestServer::start(&bin(), &cfg, &[]).unwrap();
    let mut b = host1(&s, 1).await;
    assert_eq!(accept_next(&mut b).await.task_id, id);
    let (more, more_recs) = lines(4000, 2000);
    send_logs(&mut b, &id, &more_recs).await;
    b.log(&id, 2, b"the last line has no newline")
        .await
        .unwrap();
    b.finish(&id, TaskResult::Success).await.unwrap();
    all.extend_from_slice(
        b"\nsai-server: ---- attempt 2 starts here on builder host1; \
        the log above is from earlier attempts ----\n",
    );
    all.extend_from_slice(&more);
    all.extend_from_slice(b"the last line has no newline");
    wait_for("task done with its whole log", T, || async {
        let t = task(&s, &id).await;
        (t["state"] == "success" && t["log_bytes"] == all.len()).then_some(())
    })
    .await
    .unwrap();
    let body = raw(&s, &id, None).await.2;
    assert!(body == all, "the stored log is what was sent");
    assert_line_numbers(&s, &id, &all, "new store").await;

    // A store written before line counts were kept: the first reader
    // counts its rows once and stores the counts.
    assert!(s.guard.stop().unwrap().success());
    let ev_dir = the_event_dir(&cfg);
    let db_path = ev_dir.join("event.sqlite3");
    let db = rusqlite::Connection::open(&db_path).unwrap();
    let rows = db
        .execute(
            "UPDATE log_blocks SET newlines = NULL, ends_line = NULL",
            [],
        )
        .unwrap();
    assert!(rows >= 2, "{rows} rows");
    drop(db);
    let s = TestServer::start(&bin(), &cfg, &[]).unwrap();
    assert_line_numbers(&s, &id, &all, "old store").await;
    let db = rusqlite::Connection::open(&db_path).unwrap();
    let unknown = count(
        &db,
        "SELECT COUNT(*) FROM log_blocks WHERE newlines IS NULL",
    );
    assert_eq!(unknown, 0, "counted once and remembered");
}

/// Send log records `(channel, bytes)` of a task as a builder does.
async fn send_logs(b: &mut sai_testkit::FakeBuilder, id: &str, recs: &[(u8, Vec<u8>)]) {
    for (ch, rec) in recs {
        b.log(id, *ch, rec).await.unwrap();
    }
}
